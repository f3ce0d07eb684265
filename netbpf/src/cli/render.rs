//! Human tables and JSON for the CLI's output.

use std::{fmt::Write as _, path::Path};

use serde::Serialize;

use crate::{
    agent::reconcile::Report,
    config::{Model, model::format_mac},
    inspect::{ConntrackRow, ContainerRow, NetworkRow, PortRow},
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
