//! Human tables and JSON for the CLI's output.

use std::{fmt::Write as _, path::Path};

use serde::Serialize;

use crate::{
    agent::reconcile::Report,
    config::{Model, model::format_mac},
    inspect::{ConntrackRow, ContainerRow, NetworkRow, PortRow, ServiceRow},
    kernel::{
        datapath::{Attached, Removed},
        stats::StatRow,
    },
    plan::Plan,
};

pub fn json<T: Serialize>(rows: &[T]) -> String {
    // Serializing plain structs of strings and integers cannot fail.
    serde_json::to_string_pretty(rows).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

pub fn stats_table(rows: &[StatRow]) -> String {
    let mut out = format!(
        "{:<15} {:<20} {:>12} {:>14}\n",
        "HOOK", "OUTCOME", "PACKETS", "BYTES"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<15} {:<20} {:>12} {:>14}",
            r.hook, r.outcome, r.packets, r.bytes
        );
    }
    out
}

pub fn networks_table(rows: &[NetworkRow]) -> String {
    let mut out = format!(
        "{:<16} {:>4} {:<18} {:<15} {:<5} {:<8} {:<10} {:>10}\n",
        "NAME", "ID", "SUBNET", "GATEWAY", "ICC", "INTERNAL", "MASQUERADE", "CONTAINERS"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<16} {:>4} {:<18} {:<15} {:<5} {:<8} {:<10} {:>10}",
            r.name, r.id, r.subnet, r.gateway, r.icc, r.internal, r.masquerade, r.containers
        );
    }
    out
}

pub fn containers_table(rows: &[ContainerRow]) -> String {
    let mut out = format!(
        "{:<20} {:<16} {:<15} {:<17} {:<15} {:>7}\n",
        "NAME", "NETWORK", "IP", "MAC", "HOST IFACE", "IFINDEX"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<20} {:<16} {:<15} {:<17} {:<15} {:>7}",
            r.name, r.network, r.ip, r.mac, r.host_interface, r.ifindex
        );
    }
    out
}

/// Like `docker port`: `web1  80/tcp -> 0.0.0.0:8080`.
pub fn ports_table(rows: &[PortRow]) -> String {
    let mut out = String::new();
    for r in rows {
        let port = format!("{}/{}", r.container_port, r.proto);
        let _ = writeln!(
            out,
            "{:<20} {port:<10} -> {}:{}",
            r.container, r.host_ip, r.host_port
        );
    }
    out
}

pub fn conntrack_table(rows: &[ConntrackRow]) -> String {
    let mut out = format!(
        "{:<5} {:<21} {:<21} {:<17} {:<21} {:<12} {:>8} {:>6}\n",
        "PROTO", "SOURCE", "DESTINATION", "KIND", "TRANSLATED", "STATE", "PACKETS", "IDLE"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<5} {:<21} {:<21} {:<17} {:<21} {:<12} {:>8} {:>5}s",
            r.proto, r.src, r.dst, r.kind, r.translated, r.tcp_state, r.packets, r.idle_seconds
        );
    }
    out
}

/// `ipvsadm -Ln`'s shape: a service line (`TCP  198.18.200.10:80 mh persistent 300 mask
/// 255.255.255.0`), then its backends (`  -> 198.18.10.2:8080  Masq  3  0  0`).
pub fn services_table(rows: &[ServiceRow]) -> String {
    let mut out = String::from(
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
    );
    for s in rows {
        let _ = write!(out, "{}", service_line(s));
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

/// `ipvsadm -Ln --stats`'s shape (exact numbers, as with `--exact`).
pub fn services_stats_table(rows: &[ServiceRow]) -> String {
    let mut out = format!(
        "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n",
        "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
    );
    let line = |out: &mut String, label: String, c: [u64; 5]| {
        let _ = writeln!(
            out,
            "{label:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
            c[0], c[1], c[2], c[3], c[4]
        );
    };
    for s in rows {
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
        line(&mut out, service_line(s), total);
        for (b, c) in s.backends.iter().zip(per) {
            line(&mut out, format!("  -> {}:{}", b.address, b.port), c);
        }
    }
    out
}

/// `TCP  198.18.200.10:80`.
fn service_line(s: &ServiceRow) -> String {
    format!("{}  {}:{}", s.protocol.to_uppercase(), s.vip, s.port)
}

/// What `check` prints: the networks and containers a file resolves to.
pub fn plan_summary(model: &Model, plan: &Plan) -> String {
    let mut out = format!(
        "valid: {} network(s), {} container(s) ({} wired)\n",
        model.networks.len(),
        model.containers.len(),
        plan.containers.len()
    );
    for n in &model.networks {
        let _ = writeln!(
            out,
            "network {:<16} id {:<4} {} gateway {} icc={} internal={} masquerade={}",
            n.name,
            n.id,
            n.cidr(),
            n.gateway,
            n.icc,
            n.internal,
            n.masquerade
        );
    }
    for c in &model.containers {
        match &c.attachment {
            Some(a) => {
                for p in &a.ports {
                    let _ = writeln!(
                        out,
                        "port {:<20} {}/{} -> {}:{}",
                        c.name, p.container_port, p.proto, p.host_ip, p.host_port
                    );
                }
                let _ = writeln!(
                    out,
                    "container {:<20} {:<16} {:<15} {} {} in {}",
                    c.name,
                    a.network,
                    a.ip,
                    format_mac(&a.mac),
                    a.ifname,
                    c.netns.display()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "container {:<20} none (loopback only) in {}",
                    c.name,
                    c.netns.display()
                );
            }
        }
    }
    for s in &model.services {
        let _ = write!(
            out,
            "service {:<20} id {:<4} {} {}",
            s.name,
            s.id,
            s.label(),
            s.scheduler.name()
        );
        if s.persistence_secs > 0 {
            let _ = write!(
                out,
                " persistent {}s mask {}",
                s.persistence_secs, s.persistence_mask
            );
        }
        if s.external {
            out.push_str(" external");
        }
        if let Some(h) = &s.health {
            let _ = write!(
                out,
                " health {} every {:?} (timeout {:?}, rise {}, fall {})",
                h.kind.name(),
                h.interval,
                h.timeout,
                h.rise,
                h.fall
            );
        }
        out.push('\n');
        for b in &s.backends {
            let by = b
                .container
                .as_ref()
                .map(|c| format!(" (container {c})"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  -> backend id {:<6} {}:{} weight {}{by}",
                b.id, b.addr, b.port, b.weight
            );
        }
    }
    out
}

/// What `apply` changed.
pub fn report(report: &Report) -> String {
    let list = |names: &[String]| {
        if names.is_empty() {
            "-".to_owned()
        } else {
            names.join(" ")
        }
    };
    format!(
        "applied: {} network(s); added {} container(s): {}; removed {}: {}; unchanged {} ({} program swap(s)); {} published port(s); {} service(s) ({} written, {} removed), {} backend(s)\n",
        report.networks,
        report.added.len(),
        list(&report.added),
        report.removed.len(),
        list(&report.removed),
        report.kept.len(),
        report.swapped,
        report.ports,
        report.services.services,
        report.services.written,
        report.services.removed,
        report.services.backends
    )
}

pub fn attached(attached: &[Attached]) -> String {
    let mut out = String::new();
    for a in attached {
        let verb = if a.replaced {
            "replaced program in"
        } else {
            "attached"
        };
        let _ = writeln!(
            out,
            "{} on {}: {verb} {}",
            a.hook.name(),
            a.iface,
            a.link_pin.display()
        );
    }
    out
}

pub fn removed(pin_dir: &Path, removed: &Removed) -> String {
    format!(
        "removed {} link(s) and {} map(s) under {}\n",
        removed.links.len(),
        removed.maps.len(),
        pin_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<StatRow> {
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

    #[test]
    fn stats_table_layout() {
        assert_eq!(
            stats_table(&rows()),
            "HOOK            OUTCOME                   PACKETS          BYTES\n\
             from_uplink     pass                         1010         106980\n\
             xdp_uplink      drop_malformed                  5            530\n"
        );
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
                crate::inspect::BackendRow {
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
                crate::inspect::BackendRow {
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
    fn services_json_has_stable_keys() {
        let value: serde_json::Value =
            serde_json::from_str(&json(&service_rows())).expect("valid JSON");
        assert_eq!(
            value,
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
    fn stats_json_is_an_array_with_stable_keys() {
        let value: serde_json::Value =
            serde_json::from_str(&json(&rows()[..1])).expect("valid JSON");
        assert_eq!(
            value,
            serde_json::json!([{
                "hook": "from_uplink", "outcome": "pass", "drop": false,
                "packets": 1010, "bytes": 106980
            }])
        );
    }
}
