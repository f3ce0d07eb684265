//! The control loop: definitions -> model -> plan -> kernel ([`reconcile`]).

pub mod events;
pub mod health;
pub mod metrics;
pub mod reconcile;
pub mod regions;
pub mod services;
pub mod source;
pub mod watch;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    Result,
    config::{self, Model, validate::Previous},
    config::{model::Timeouts, ports::Proto},
    kernel::{
        conntrack, ifaces,
        maps::{ContainerMaps, addr_key, addr_of},
        pins::PinDir,
        services::ServiceMaps,
    },
    logging, plan,
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
/// Every backend counts as healthy (health checks run in the agent only).
pub fn apply(file: &Path, pins: &PinDir) -> Result<reconcile::Report> {
    let previous = previous(pins);
    let model = config::load(file, &previous)?;
    reconcile::reconcile(pins, &plan::plan(&model, &previous))
}

/// The agent's reconcile from its source: the health checks follow the new definitions, and
/// backends they hold down stay out of the selection. On the agent's first one
/// (`starting`), backends the kernel holds out stay out until they pass their checks;
/// later, a backend new to the checks starts up (as keepalived's real servers do).
fn apply_checked(
    source: &dyn source::Source,
    pins: &PinDir,
    checker: &mut health::Checker,
    starting: bool,
) -> Result<(reconcile::Report, Model)> {
    let previous = previous(pins);
    let model = source.load(&previous)?;
    let down = if starting {
        held_down(&model, &previous)
    } else {
        BTreeSet::new()
    };
    // Out of the tables: backends the checks hold down now, and those kept down from
    // before. The checks of new backends start only once the reconcile has wired them,
    // so none is probed (and failed) before its container exists.
    let out: BTreeSet<u32> = checker.down().union(&down).copied().collect();
    let mut plan = plan::plan(&model, &previous);
    plan.services = plan::services::plan(&model, &previous, &out);
    let report = reconcile::reconcile(pins, &plan);
    drop(plan);
    // Parsing a large definitions file peaks far above what the agent keeps (a 10,000-
    // service file: ~85 MB of parse tree); hand the freed heap back to the system rather
    // than keep it resident while idle.
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe { libc::malloc_trim(0) };
    let report = report?;
    checker.set_targets(health::targets(&model), &down);
    Ok((report, model))
}

/// Backends with a health check that the kernel holds at weight 0 although they are
/// defined above it: an agent before this one took them out (or they were drained), and
/// they stay out until their checks pass `rise` times.
fn held_down(model: &Model, previous: &Previous) -> BTreeSet<u32> {
    model
        .services
        .iter()
        .filter(|s| s.health.is_some())
        .flat_map(|s| {
            s.backends.iter().filter_map(move |b| {
                let before = previous
                    .backends
                    .get(&((s.vip, s.port, s.proto), b.addr, b.port))?;
                (b.weight > 0 && before.weight == 0).then_some(b.id)
            })
        })
        .collect()
}

/// A backend's health changed: the services' tables are planned again with the backends
/// now down, and only the services that changed are written.
fn health_changed(
    pins: &PinDir,
    model: &Model,
    checker: &health::Checker,
) -> Result<services::ServiceReport> {
    let mut maps = ServiceMaps::open_pinned(pins)?;
    let current = services::Current::read(&maps)?;
    let mut previous = Previous::default();
    current.fill_previous(&mut previous);
    let plan = plan::services::plan(model, &previous, &checker.down());
    services::reconcile(&mut maps, &current, &plan)
}

/// How often idle flows are looked for: half the shortest timeout, within 1 to 10 seconds.
fn gc_interval(t: &Timeouts) -> Duration {
    let shortest = [t.tcp_syn, t.tcp_established, t.tcp_closing, t.udp, t.icmp]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(10));
    (shortest / 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// `netbpf agent`: reconcile, then reload on SIGHUP or when the source changes, until
/// SIGTERM/SIGINT. The datapath stays in place when it exits. A reload that fails (an
/// invalid file, say) is logged and leaves the kernel as the last good one made it. With
/// `metrics`, serves Prometheus metrics there (bound first, in the namespace the agent
/// manages, so a bad address changes nothing).
pub fn run(source: &dyn source::Source, pins: &PinDir, metrics: Option<SocketAddr>) -> Result<()> {
    let watch = watch::Watch::new(source.file())?;
    let waker = watch.waker();
    let status = metrics::Status::new();
    let transitions = status.clone();
    let mut checker = health::Checker::new(
        move || waker.wake(),
        move |target: &health::Target, t: &health::Transition| {
            events::health_transition(&transitions, target, t)
        },
    );
    if let Some(addr) = metrics {
        let source = metrics::Source {
            pins: pins.clone(),
            status: status.clone(),
            health: checker.view(),
        };
        let bound = metrics::serve(addr, source)?;
        logging::info(
            "serving metrics",
            &[
                ("address", bound.to_string().into()),
                ("path", "/metrics".into()),
            ],
        );
    }
    let started = Instant::now();
    let first = apply_checked(source, pins, &mut checker, true);
    source.applied(first.as_ref().map(|(report, _)| report));
    let mut model = match first {
        Ok((report, model)) => {
            events::reconciled(&status, started.elapsed(), &report);
            model
        }
        Err(e) => {
            events::reconcile_failed(&status, started.elapsed(), &e, true);
            return Err(e);
        }
    };
    source.start(watch.reloader())?;
    loop {
        match watch.next(gc_interval(&model.timeouts))? {
            watch::Event::Tick => {
                match conntrack::clock(pins)
                    .and_then(|clock| conntrack::collect_garbage(pins, &model.timeouts, &clock))
                {
                    Ok(0) => {}
                    Ok(n) => events::conntrack_cleaned(&status, n),
                    Err(e) => logging::warn(
                        "conntrack cleanup failed",
                        &[("error", e.to_string().into())],
                    ),
                }
                source.tick();
            }
            watch::Event::Exit(signal) => {
                logging::info(
                    "exiting, the datapath stays in place",
                    &[("signal", signal.into())],
                );
                source.stop();
                return Ok(());
            }
            watch::Event::Wake => match health_changed(pins, &model, &checker) {
                Ok(r) => logging::info(
                    "services rewritten after a health change",
                    &[
                        ("services_written", r.written.into()),
                        ("backends_out", checker.down().len().into()),
                    ],
                ),
                Err(e) => logging::error(
                    "writing the services after a health change failed, retried on the next change",
                    &[("error", e.to_string().into())],
                ),
            },
            watch::Event::Reload => {
                let started = Instant::now();
                let result = apply_checked(source, pins, &mut checker, false);
                source.applied(result.as_ref().map(|(report, _)| report));
                match result {
                    Ok((report, m)) => {
                        model = m;
                        events::reconciled(&status, started.elapsed(), &report);
                    }
                    Err(e) => events::reconcile_failed(&status, started.elapsed(), &e, false),
                }
            }
        }
    }
}
