//! `netbpf show`: what the pinned maps hold, one view per subcommand, each as a human table
//! (the default), a JSON array (`-o json`, keys documented in docs/cli.md) or, where a list
//! of names makes sense, names only (`-q`). Reads only; works with or without an agent.

use std::io::{self, Write as _};

use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use super::{
    Output,
    table::{Align, Table},
};
use crate::{
    Error, Result, inspect,
    inspect::{
        ConntrackRow, ContainerRow, NetworkRow, PortRow, ServiceRow,
        conntrack::{Endpoint, Filter},
        drops::DropRow,
        services::{BackendView, RATE_INTERVAL, Rate, ServiceRate},
    },
    kernel::{pins::PinDir, stats::StatRow},
};

#[derive(Debug, Subcommand)]
pub enum ShowWhat {
    /// Networks: subnet, gateway, policy, how many containers.
    Networks {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Names only, one per line.
        #[arg(short, long, conflicts_with = "output")]
        quiet: bool,
    },
    /// Wired containers: network, address, MAC, host-side interface.
    Containers {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Names only, one per line.
        #[arg(short, long, conflicts_with = "output")]
        quiet: bool,
    },
    /// Published ports, as `docker port` lists them.
    Ports {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Virtual services and their backends, as `ipvsadm -Ln` shows them.
    Services {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Connections scheduled, packets and bytes, per service and backend
        /// (`ipvsadm -Ln --stats --exact`).
        #[arg(long, conflicts_with = "rate")]
        stats: bool,
        /// Connections, packets and bytes per second, from two reads of the counters one
        /// second apart (`ipvsadm -Ln --rate`).
        #[arg(long)]
        rate: bool,
        /// Names only, one per line.
        #[arg(short, long, conflicts_with_all = ["output", "stats", "rate"])]
        quiet: bool,
    },
    /// Backends, one row each: service, weight in effect, state, connections, traffic.
    Backends {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Backend ids only, one per line.
        #[arg(short, long, conflicts_with = "output")]
        quiet: bool,
    },
    /// Translated flows, one row per direction, read without refreshing them.
    Conntrack {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Only rows whose source is ADDR (and PORT).
        #[arg(long, value_name = "ADDR[:PORT]")]
        src: Option<Endpoint>,
        /// Only rows whose destination is ADDR (and PORT).
        #[arg(long, value_name = "ADDR[:PORT]")]
        dst: Option<Endpoint>,
        /// Only the flows of this service (both directions).
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// Only this protocol.
        #[arg(long, value_enum, value_name = "PROTO")]
        proto: Option<ProtoArg>,
    },
    /// Packets and bytes per hook and outcome.
    Stats {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Also list counters that are zero in the table (JSON always lists every one).
        #[arg(long)]
        all: bool,
    },
    /// Dropped packets per reason, summed over the hooks, with what each reason means.
    Drops {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Also list reasons with no drops in the table (JSON always lists every one).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtoArg {
    Tcp,
    Udp,
    Icmp,
}

impl ProtoArg {
    fn number(self) -> u8 {
        match self {
            ProtoArg::Tcp => 6,
            ProtoArg::Udp => 17,
            ProtoArg::Icmp => 1,
        }
    }
}

/// Runs one view.
pub fn run(what: ShowWhat, pins: &PinDir) -> Result<()> {
    let text = match what {
        ShowWhat::Networks { output, quiet } => {
            let rows = inspect::networks(pins)?;
            if quiet {
                names(rows.iter().map(|r| r.name.clone()))
            } else {
                view(output, &rows, networks_table)?
            }
        }
        ShowWhat::Containers { output, quiet } => {
            let rows = inspect::containers(pins)?;
            if quiet {
                names(rows.iter().map(|r| r.name.clone()))
            } else {
                view(output, &rows, containers_table)?
            }
        }
        ShowWhat::Ports { output } => view(output, &inspect::ports(pins)?, ports_table)?,
        ShowWhat::Services {
            output,
            stats,
            rate,
            quiet,
        } => {
            if rate {
                let rows = inspect::services::rates(pins, RATE_INTERVAL)?;
                view(output, &rows, services_rate_table)?
            } else {
                let rows = inspect::services(pins)?;
                if quiet {
                    names(rows.iter().map(service_name))
                } else if stats {
                    view(output, &rows, services_stats_table)?
                } else {
                    view(output, &rows, services_table)?
                }
            }
        }
        ShowWhat::Backends { output, quiet } => {
            let rows = inspect::services::backends(pins)?;
            if quiet {
                names(rows.iter().map(|r| r.id.to_string()))
            } else {
                view(output, &rows, backends_table)?
            }
        }
        ShowWhat::Conntrack {
            output,
            src,
            dst,
            service,
            proto,
        } => {
            let service = match service {
                Some(name) => Some(inspect::services::find(pins, &name)?.ok_or_else(|| {
                    let known = inspect::services::names(pins).unwrap_or_default();
                    Error::BadArgument {
                        what: "--service".to_owned(),
                        message: format!(
                            "no service named {name:?} here (services: {})",
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    }
                })?),
                None => None,
            };
            let filter = Filter {
                src,
                dst,
                proto: proto.map(ProtoArg::number),
                service,
            };
            view(output, &inspect::conntrack(pins, &filter)?, conntrack_table)?
        }
        ShowWhat::Stats { output, all } => {
            let mut rows = crate::kernel::stats::read_pinned(pins)?;
            // The table hides zero counters unless asked; JSON always has every one.
            if output == Output::Table && !all {
                rows.retain(|r| r.packets > 0);
            }
            view(output, &rows, stats_table)?
        }
        ShowWhat::Drops { output, all } => {
            let mut rows = inspect::drops::drops(&crate::kernel::stats::read_pinned(pins)?);
            if output == Output::Table && !all {
                rows.retain(|r| r.packets > 0);
            }
            view(output, &rows, drops_table)?
        }
    };
    emit(&text)
}

/// A view as a table or as a JSON array (pretty-printed, one key per line).
fn view<T: Serialize>(output: Output, rows: &[T], table: fn(&[T]) -> String) -> Result<Vec<u8>> {
    match output {
        Output::Table => Ok(table(rows).into_bytes()),
        Output::Json => {
            let mut out = serde_json::to_vec_pretty(rows)
                .map_err(|e| Error::io("writing JSON", io::Error::other(e)))?;
            out.push(b'\n');
            Ok(out)
        }
    }
}

fn names(names: impl Iterator<Item = String>) -> Vec<u8> {
    let mut out = String::new();
    for n in names {
        out.push_str(&n);
        out.push('\n');
    }
    out.into_bytes()
}

/// Writes the view to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &[u8]) -> Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(text).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("writing to stdout", e)),
        _ => Ok(()),
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// A service's name, or its VIP, port and protocol if it has none.
fn service_name(s: &ServiceRow) -> String {
    if s.name.is_empty() {
        format!("{}:{}/{}", s.vip, s.port, s.protocol)
    } else {
        s.name.clone()
    }
}

pub fn networks_table(rows: &[NetworkRow]) -> String {
    use Align::{Left, Right};
    let mut t = Table::new(&[
        ("NAME", Left),
        ("ID", Right),
        ("SUBNET", Left),
        ("GATEWAY", Left),
        ("ICC", Left),
        ("INTERNAL", Left),
        ("MASQUERADE", Left),
        ("CONTAINERS", Right),
    ]);
    for r in rows {
        t.row(vec![
            r.name.clone(),
            r.id.to_string(),
            r.subnet.clone(),
            r.gateway.clone(),
            yes_no(r.icc),
            yes_no(r.internal),
            yes_no(r.masquerade),
            r.containers.to_string(),
        ]);
    }
    t.render()
}

pub fn containers_table(rows: &[ContainerRow]) -> String {
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("NETWORK", Align::Left),
        ("IP", Align::Left),
        ("MAC", Align::Left),
        ("HOST_IFACE", Align::Left),
    ]);
    for r in rows {
        t.row(vec![
            r.name.clone(),
            r.network.clone(),
            r.ip.clone(),
            r.mac.clone(),
            r.host_interface.clone(),
        ]);
    }
    t.render()
}

/// `docker port`'s content (`80/tcp -> 0.0.0.0:8080`) as a table.
pub fn ports_table(rows: &[PortRow]) -> String {
    let mut t = Table::new(&[
        ("CONTAINER", Align::Left),
        ("PORT", Align::Left),
        ("HOST", Align::Left),
    ]);
    for r in rows {
        t.row(vec![
            r.container.clone(),
            format!("{}/{}", r.container_port, r.proto),
            format!("{}:{}", r.host_ip, r.host_port),
        ]);
    }
    t.render()
}

pub fn conntrack_table(rows: &[ConntrackRow]) -> String {
    use Align::{Left, Right};
    let mut t = Table::new(&[
        ("PROTO", Left),
        ("SOURCE", Left),
        ("DESTINATION", Left),
        ("KIND", Left),
        ("TRANSLATED", Left),
        ("STATE", Left),
        ("PACKETS", Right),
        ("IDLE", Right),
    ]);
    for r in rows {
        t.row(vec![
            r.proto.clone(),
            r.src.clone(),
            r.dst.clone(),
            r.kind.clone(),
            r.translated.clone(),
            r.tcp_state.clone(),
            r.packets.to_string(),
            format!("{}s", r.idle_seconds),
        ]);
    }
    t.render()
}

pub fn backends_table(rows: &[BackendView]) -> String {
    use Align::{Left, Right};
    let mut t = Table::new(&[
        ("ID", Right),
        ("SERVICE", Left),
        ("FRONTEND", Left),
        ("BACKEND", Left),
        ("CONTAINER", Left),
        ("WEIGHT", Right),
        ("STATE", Left),
        ("ACTIVE", Right),
        ("INACTIVE", Right),
        ("CONNS", Right),
        ("INPKTS", Right),
        ("OUTPKTS", Right),
        ("INBYTES", Right),
        ("OUTBYTES", Right),
    ]);
    for r in rows {
        t.row(vec![
            r.id.to_string(),
            r.service.clone(),
            format!("{}:{}/{}", r.vip, r.vip_port, r.protocol),
            format!("{}:{}", r.address, r.port),
            r.container.clone().unwrap_or_else(|| "-".to_owned()),
            r.weight.to_string(),
            r.state.to_owned(),
            r.active.to_string(),
            r.inactive.to_string(),
            r.opened.to_string(),
            r.in_packets.to_string(),
            r.out_packets.to_string(),
            r.in_bytes.to_string(),
            r.out_bytes.to_string(),
        ]);
    }
    t.render()
}

pub fn stats_table(rows: &[StatRow]) -> String {
    use Align::{Left, Right};
    let mut t = Table::new(&[
        ("HOOK", Left),
        ("OUTCOME", Left),
        ("PACKETS", Right),
        ("BYTES", Right),
    ]);
    for r in rows {
        t.row(vec![
            r.hook.to_owned(),
            r.outcome.to_owned(),
            r.packets.to_string(),
            r.bytes.to_string(),
        ]);
    }
    t.render()
}

pub fn drops_table(rows: &[DropRow]) -> String {
    use Align::{Left, Right};
    let mut t = Table::new(&[
        ("REASON", Left),
        ("PACKETS", Right),
        ("BYTES", Right),
        ("MEANING", Left),
    ]);
    for r in rows {
        t.row(vec![
            r.reason.to_owned(),
            r.packets.to_string(),
            r.bytes.to_string(),
            r.meaning.to_owned(),
        ]);
    }
    t.render()
}

/// `ipvsadm -Ln`'s shape: a service line (`TCP  198.18.200.10:80 mh persistent 300 mask
/// 255.255.255.0`), then its backends (`  -> 198.18.10.2:8080  Masq  3  0  0`).
pub fn services_table(rows: &[ServiceRow]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
    );
    for s in rows {
        out.push_str(&service_line(&s.protocol, &s.vip, s.port));
        let _ = write!(out, " {}", s.scheduler);
        if s.persistence_secs > 0 {
            let _ = write!(out, " persistent {}", s.persistence_secs);
            if s.persistence_netmask != "255.255.255.255" {
                let _ = write!(out, " mask {}", s.persistence_netmask);
            }
        }
        out.push('\n');
        for b in &s.backends {
            let _ = writeln!(
                out,
                "  -> {:<28} {:<7} {:<6} {:<10} {}",
                format!("{}:{}", b.address, b.port),
                "Masq",
                b.weight,
                b.active,
                b.inactive
            );
        }
    }
    out
}

/// A service (its line's label) and its figures: first its own, then each backend's.
type Figures = (String, Vec<(String, [String; 5])>);

/// Five figures per service and per backend under ipvsadm's two-line header.
fn five_columns(headers: [&str; 5], rows: &[Figures]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n",
        "Prot LocalAddress:Port", headers[0], headers[1], headers[2], headers[3], headers[4]
    );
    let line = |out: &mut String, label: &str, c: &[String; 5]| {
        let _ = writeln!(
            out,
            "{label:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
            c[0], c[1], c[2], c[3], c[4]
        );
    };
    for (service, backends) in rows {
        let mut lines = backends.iter();
        // The first entry is the service's own line.
        if let Some((_, c)) = lines.next() {
            line(&mut out, service, c);
        }
        for (label, c) in lines {
            line(&mut out, &format!("  -> {label}"), c);
        }
    }
    out
}

/// `ipvsadm -Ln --stats`'s shape (exact numbers, as with `--exact`).
pub fn services_stats_table(rows: &[ServiceRow]) -> String {
    let rows: Vec<Figures> = rows
        .iter()
        .map(|s| {
            let per: Vec<[u64; 5]> = s
                .backends
                .iter()
                .map(|b| {
                    [
                        b.opened,
                        b.in_packets,
                        b.out_packets,
                        b.in_bytes,
                        b.out_bytes,
                    ]
                })
                .collect();
            let total = per.iter().fold([0u64; 5], |mut t, c| {
                for (t, c) in t.iter_mut().zip(c) {
                    *t = t.saturating_add(*c);
                }
                t
            });
            let mut lines = vec![(String::new(), total.map(|n| n.to_string()))];
            lines.extend(s.backends.iter().zip(per).map(|(b, c)| {
                (
                    format!("{}:{}", b.address, b.port),
                    c.map(|n| n.to_string()),
                )
            }));
            (service_line(&s.protocol, &s.vip, s.port), lines)
        })
        .collect();
    five_columns(["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"], &rows)
}

/// `ipvsadm -Ln --rate`'s shape: per second, rounded.
pub fn services_rate_table(rows: &[ServiceRate]) -> String {
    let figures = |r: &Rate| {
        [r.cps, r.in_pps, r.out_pps, r.in_bps, r.out_bps].map(|v| format!("{}", v.round() as u64))
    };
    let rows: Vec<Figures> = rows
        .iter()
        .map(|s| {
            let mut lines = vec![(String::new(), figures(&s.rate))];
            lines.extend(
                s.backends
                    .iter()
                    .map(|b| (format!("{}:{}", b.address, b.port), figures(&b.rate))),
            );
            (service_line(&s.protocol, &s.vip, s.port), lines)
        })
        .collect();
    five_columns(["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"], &rows)
}

/// `TCP  198.18.200.10:80`.
fn service_line(protocol: &str, vip: &str, port: u16) -> String {
    format!("{}  {vip}:{port}", protocol.to_uppercase())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{
        cli::{Args, Command},
        inspect::{BackendRow, services::BackendRate},
    };

    fn stat_rows() -> Vec<StatRow> {
        vec![
            StatRow {
                hook: "from_uplink",
                outcome: "pass",
                drop: false,
                packets: 1010,
                bytes: 106_980,
            },
            StatRow {
                hook: "xdp_uplink",
                outcome: "drop_malformed",
                drop: true,
                packets: 5,
                bytes: 530,
            },
        ]
    }

    fn json_of<T: Serialize>(rows: &[T]) -> serde_json::Value {
        let bytes = view(Output::Json, rows, |_| String::new()).expect("JSON");
        serde_json::from_slice(&bytes).expect("valid JSON")
    }

    #[test]
    fn stats_table_layout() {
        assert_eq!(
            stats_table(&stat_rows()),
            "HOOK         OUTCOME         PACKETS   BYTES\n\
             from_uplink  pass               1010  106980\n\
             xdp_uplink   drop_malformed        5     530\n"
        );
    }

    #[test]
    fn stats_json_is_an_array_with_stable_keys() {
        assert_eq!(
            json_of(&stat_rows()[..1]),
            serde_json::json!([{
                "hook": "from_uplink", "outcome": "pass", "drop": false,
                "packets": 1010, "bytes": 106980
            }])
        );
        assert_eq!(json_of::<StatRow>(&[]), serde_json::json!([]));
    }

    fn service_rows() -> Vec<ServiceRow> {
        vec![ServiceRow {
            name: "web".to_owned(),
            vip: "198.18.200.10".to_owned(),
            port: 80,
            protocol: "tcp".to_owned(),
            scheduler: "mh".to_owned(),
            persistence_secs: 300,
            persistence_netmask: "255.255.255.0".to_owned(),
            external: true,
            backends: vec![
                BackendRow {
                    address: "198.18.10.2".to_owned(),
                    port: 8080,
                    weight: 3,
                    active: 12,
                    inactive: 1,
                    opened: 30,
                    in_packets: 300,
                    out_packets: 250,
                    in_bytes: 24000,
                    out_bytes: 1_234_567,
                    container: Some("web1".to_owned()),
                },
                BackendRow {
                    address: "198.18.10.9".to_owned(),
                    port: 8080,
                    weight: 0,
                    active: 0,
                    inactive: 0,
                    opened: 10,
                    in_packets: 100,
                    out_packets: 50,
                    in_bytes: 8000,
                    out_bytes: 4000,
                    container: None,
                },
            ],
        }]
    }

    #[test]
    fn services_table_is_ipvsadms() {
        assert_eq!(
            services_table(&service_rows()),
            "Prot LocalAddress:Port Scheduler Flags\n\
             \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  198.18.200.10:80 mh persistent 300 mask 255.255.255.0\n\
             \x20 -> 198.18.10.2:8080             Masq    3      12         1\n\
             \x20 -> 198.18.10.9:8080             Masq    0      0          0\n"
        );
        let mut plain = service_rows();
        plain[0].persistence_secs = 0;
        plain[0].backends.clear();
        assert!(services_table(&plain).ends_with("\nTCP  198.18.200.10:80 mh\n"));
        assert_eq!(
            services_stats_table(&service_rows()),
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
             \x20 -> RemoteAddress:Port\n\
             TCP  198.18.200.10:80                   40      400      300    32000  1238567\n\
             \x20 -> 198.18.10.2:8080                   30      300      250    24000  1234567\n\
             \x20 -> 198.18.10.9:8080                   10      100       50     8000     4000\n"
        );
    }

    #[test]
    fn rates_in_ipvsadms_shape() {
        let rate = |cps| Rate {
            cps,
            in_pps: 10.4,
            out_pps: 9.6,
            in_bps: 1500.0,
            out_bps: 0.0,
        };
        let rows = vec![ServiceRate {
            name: "web".to_owned(),
            vip: "198.18.200.10".to_owned(),
            port: 80,
            protocol: "tcp".to_owned(),
            interval_ms: 1000,
            rate: rate(2.0),
            backends: vec![BackendRate {
                address: "198.18.10.2".to_owned(),
                port: 8080,
                rate: rate(2.0),
                container: Some("web1".to_owned()),
            }],
        }];
        assert_eq!(
            services_rate_table(&rows),
            "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n\
             \x20 -> RemoteAddress:Port\n\
             TCP  198.18.200.10:80                    2       10       10     1500        0\n\
             \x20 -> 198.18.10.2:8080                    2       10       10     1500        0\n"
        );
        assert_eq!(
            json_of(&rows),
            serde_json::json!([{
                "name": "web", "vip": "198.18.200.10", "port": 80, "protocol": "tcp",
                "interval_ms": 1000, "cps": 2.0, "in_pps": 10.4, "out_pps": 9.6,
                "in_bps": 1500.0, "out_bps": 0.0,
                "backends": [{"address": "198.18.10.2", "port": 8080, "cps": 2.0,
                    "in_pps": 10.4, "out_pps": 9.6, "in_bps": 1500.0, "out_bps": 0.0,
                    "container": "web1"}]
            }])
        );
    }

    #[test]
    fn services_json_has_stable_keys() {
        assert_eq!(
            json_of(&service_rows()),
            serde_json::json!([{
                "name": "web", "vip": "198.18.200.10", "port": 80, "protocol": "tcp",
                "scheduler": "mh", "persistence_secs": 300,
                "persistence_netmask": "255.255.255.0", "external": true,
                "backends": [
                    {"address": "198.18.10.2", "port": 8080, "weight": 3, "active": 12,
                     "inactive": 1, "opened": 30, "in_packets": 300, "out_packets": 250,
                     "in_bytes": 24000, "out_bytes": 1234567, "container": "web1"},
                    {"address": "198.18.10.9", "port": 8080, "weight": 0, "active": 0,
                     "inactive": 0, "opened": 10, "in_packets": 100, "out_packets": 50,
                     "in_bytes": 8000, "out_bytes": 4000}
                ]
            }])
        );
    }

    #[test]
    fn drops_table_has_meanings() {
        let rows = vec![DropRow {
            reason: "drop_spoofed_ip",
            packets: 2,
            bytes: 84,
            meaning: "source IPv4 address is not the container's own",
        }];
        assert_eq!(
            drops_table(&rows),
            "REASON           PACKETS  BYTES  MEANING\n\
             drop_spoofed_ip        2     84  source IPv4 address is not the container's own\n"
        );
    }

    #[test]
    fn nameless_services_are_listed_by_address() {
        let mut rows = service_rows();
        assert_eq!(service_name(&rows[0]), "web");
        rows[0].name.clear();
        assert_eq!(service_name(&rows[0]), "198.18.200.10:80/tcp");
        assert_eq!(
            names(["a".to_owned(), "b".to_owned()].into_iter()),
            b"a\nb\n"
        );
    }

    fn parse(args: &[&str]) -> Result<ShowWhat, clap::Error> {
        Args::try_parse_from(["netbpf", "show"].iter().chain(args)).map(|a| match a.command {
            Command::Show { what } => what,
            other => panic!("not show: {other:?}"),
        })
    }

    #[test]
    fn conntrack_filters_parse() {
        let what = parse(&[
            "conntrack",
            "--src",
            "198.18.0.2",
            "--dst",
            "198.18.0.1:8080",
            "--proto",
            "udp",
            "--service",
            "web",
        ])
        .expect("parses");
        let ShowWhat::Conntrack {
            src,
            dst,
            service,
            proto,
            ..
        } = what
        else {
            panic!("conntrack");
        };
        assert_eq!(src.map(|s| s.to_string()).as_deref(), Some("198.18.0.2"));
        assert_eq!(
            dst.map(|s| s.to_string()).as_deref(),
            Some("198.18.0.1:8080")
        );
        assert_eq!(service.as_deref(), Some("web"));
        assert_eq!(proto, Some(ProtoArg::Udp));
        let bad = parse(&["conntrack", "--src", "198.18.0.2:http"]).expect_err("bad port");
        assert_eq!(bad.exit_code(), 2);
        assert!(bad.to_string().contains("not a port"), "{bad}");
    }

    #[test]
    fn quiet_excludes_other_formats() {
        assert!(parse(&["networks", "-q"]).is_ok());
        assert!(parse(&["backends", "-q"]).is_ok());
        assert!(parse(&["services", "-q", "-o", "json"]).is_err());
        assert!(parse(&["services", "-q", "--stats"]).is_err());
        assert!(parse(&["services", "--stats", "--rate"]).is_err());
        assert!(parse(&["containers", "-q", "-o", "table"]).is_err());
        assert!(parse(&["ports", "-q"]).is_err(), "ports have no names");
    }
}
