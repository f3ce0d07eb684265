//! The control loop: definitions -> model -> plan -> kernel ([`reconcile`]).

pub mod reconcile;
pub mod regions;
pub mod services;
pub mod watch;

use std::{path::Path, time::Duration};

use crate::{
    Result,
    config::{self, validate::Previous},
    config::{model::Timeouts, ports::Proto},
    kernel::{
        conntrack, ifaces,
        maps::{ContainerMaps, addr_key, addr_of},
        pins::PinDir,
        services::ServiceMaps,
    },
    plan,
};
use netbpf_common::net::name_str;

/// What the kernel already holds, for stable ids and addresses across reloads (empty when
/// nothing is pinned yet).
pub fn previous(pins: &PinDir) -> Previous {
    let mut prev = Previous {
        host_addresses: ifaces::host_addresses().ok(),
        port_range: ifaces::local_port_range().ok(),
        ..Previous::default()
    };
    let Ok(maps) = ContainerMaps::open_pinned(pins) else {
        return prev;
    };
    if let Ok(networks) = maps.networks() {
        prev.network_ids = networks
            .iter()
            .map(|(id, n)| (name_str(&n.name).to_owned(), *id))
            .collect();
        prev.peer_bases = networks
            .iter()
            .map(|(_, n)| {
                (
                    name_str(&n.name).to_owned(),
                    (n.peer_base, n.prefix_len as u8),
                )
            })
            .collect();
    }
    if let (Ok(ports), Ok(endpoints)) = (maps.ports(), maps.endpoints()) {
        for (key, target) in ports {
            let owner = endpoints
                .iter()
                .find(|(addr, _)| addr_key(*addr) == target.addr);
            if let (Some((_, ep)), Some(proto)) = (owner, Proto::from_number(key.proto)) {
                let name = name_str(&ep.name).to_owned();
                let host_ip = addr_of(key.addr);
                prev.published.insert(
                    (name, u16::from_be(target.port), proto, host_ip),
                    u16::from_be(key.port),
                );
            }
        }
    }
    if let Ok(endpoints) = maps.endpoints() {
        prev.addresses = endpoints
            .iter()
            .map(|(addr, ep)| (name_str(&ep.name).to_owned(), *addr))
            .collect();
    }
    if let Ok(service_maps) = ServiceMaps::open_pinned(pins)
        && let Ok(current) = services::Current::read(&service_maps)
    {
        current.fill_previous(&mut prev);
    }
    prev
}

/// One reconcile from a file: validate everything first, so an invalid file changes nothing.
pub fn apply(file: &Path, pins: &PinDir) -> Result<reconcile::Report> {
    apply_model(file, pins).map(|(report, _)| report)
}

fn apply_model(file: &Path, pins: &PinDir) -> Result<(reconcile::Report, Timeouts)> {
    let previous = previous(pins);
    let model = config::load(file, &previous)?;
    let report = reconcile::reconcile(pins, &plan::plan(&model, &previous))?;
    Ok((report, model.timeouts))
}

/// How often idle flows are looked for: half the shortest timeout, within 1 to 10 seconds.
fn gc_interval(t: &Timeouts) -> Duration {
    let shortest = [t.tcp_syn, t.tcp_established, t.tcp_closing, t.udp, t.icmp]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(10));
    (shortest / 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// `netbpf agent`: reconcile, then reload on SIGHUP or when the file changes, until
/// SIGTERM/SIGINT. The datapath stays in place when it exits. A reload that fails (an
/// invalid file, say) is logged and leaves the kernel as the last good one made it.
pub fn run(file: &Path, pins: &PinDir) -> Result<()> {
    let watch = watch::Watch::new(file)?;
    let (report, mut timeouts) = apply_model(file, pins)?;
    log(&format!("reconciled: {}", summary(&report)));
    loop {
        match watch.next(gc_interval(&timeouts))? {
            watch::Event::Tick => match conntrack::collect_garbage(pins, &timeouts) {
                Ok(0) => {}
                Ok(n) => log(&format!("removed {n} idle conntrack entries")),
                Err(e) => log(&format!("conntrack cleanup failed: {e}")),
            },
            watch::Event::Exit(signal) => {
                log(&format!("{signal}: exiting, the datapath stays in place"));
                return Ok(());
            }
            watch::Event::Reload => match apply_model(file, pins) {
                Ok((report, t)) => {
                    timeouts = t;
                    log(&format!("reconciled: {}", summary(&report)));
                }
                Err(e @ crate::Error::Invalid(_)) => {
                    log(&format!("reload refused, kernel state unchanged: {e}"))
                }
                Err(e) => log(&format!(
                    "reconcile failed (retried on the next change or SIGHUP): {e}"
                )),
            },
        }
    }
}

fn summary(r: &reconcile::Report) -> String {
    format!(
        "{} network(s), {} added, {} removed, {} unchanged, {} program swap(s), {} published port(s), {} service(s) ({} written, {} removed)",
        r.networks,
        r.added.len(),
        r.removed.len(),
        r.kept.len(),
        r.swapped,
        r.ports,
        r.services.services,
        r.services.written,
        r.services.removed
    )
}

fn log(message: &str) {
    eprintln!("netbpf agent: {message}");
}
