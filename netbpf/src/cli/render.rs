//! What `check`, `apply`, `attach` and `down` print (`show`'s views are in `show.rs`).

use std::{fmt::Write as _, path::Path};

use crate::{
    agent::reconcile::Report,
    config::{Model, model::format_mac},
    kernel::datapath::{Attached, Removed},
    plan::Plan,
};

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
