//! Services and backends as `show services` and `show backends` list them: read once from
//! the pinned maps (frontends, their regions' trailers for the names, backends, the
//! backends' counts in three batch reads, and the conntrack table for closing flows).
//! `--rate` reads the counts twice, [`RATE_INTERVAL`] apart.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use netbpf_common::{
    conntrack::{CT_SERVICE, TCP_CLOSING},
    maps,
    net::name_str,
    service::{Backend, SVC_EXTERNAL, Scheduler, Service, ServiceKey},
};
use serde::Serialize;

use super::{BackendRow, ServiceRow};
use crate::{
    Result,
    agent::services::Current,
    config::ports::Proto,
    kernel::{
        conntrack, dump,
        maps::{ContainerMaps, addr_key, addr_of},
        pins::PinDir,
        services::{BackendCounts, ServiceMaps},
    },
};

/// How far apart `show services --rate` reads the counters.
pub const RATE_INTERVAL: Duration = Duration::from_secs(1);

/// One backend, as `show backends` lists it. Field names are the stable JSON keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendView {
    /// The backend's id (`NB_BACKENDS` index), stable across reloads.
    pub id: u32,
    /// The service's name.
    pub service: String,
    pub vip: String,
    pub vip_port: u16,
    /// tcp | udp
    pub protocol: String,
    pub address: String,
    pub port: u16,
    /// The weight in effect: 0 while drained or taken out by a health check.
    pub weight: u16,
    /// up: takes new connections (weight above 0); out: takes none (drained in the file,
    /// or taken out by a failing health check: the agent logs which).
    pub state: &'static str,
    pub active: u64,
    pub inactive: u64,
    pub opened: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    /// The container at its address, if one is wired here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// Per-second rates over [`RATE_INTERVAL`], as `ipvsadm -Ln --rate` shows them.
/// Field names are the stable JSON keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rate {
    /// New connections per second.
    pub cps: f64,
    pub in_pps: f64,
    pub out_pps: f64,
    /// Bytes per second.
    pub in_bps: f64,
    pub out_bps: f64,
}

/// One service's rates. Field names are the stable JSON keys.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceRate {
    pub name: String,
    pub vip: String,
    pub port: u16,
    pub protocol: String,
    /// How far apart the two reads were, in milliseconds.
    pub interval_ms: u64,
    /// The sums over its backends.
    #[serde(flatten)]
    pub rate: Rate,
    pub backends: Vec<BackendRate>,
}

/// One backend's rates. Field names are the stable JSON keys.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendRate {
    pub address: String,
    pub port: u16,
    #[serde(flatten)]
    pub rate: Rate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// A service: its frontend, name and backends (ids), in `show services` order.
struct Svc {
    key: ServiceKey,
    frontend: Service,
    name: String,
    backends: Vec<(u32, Backend)>,
}

/// Everything the views need, read once.
struct Snapshot {
    services: Vec<Svc>,
    counts: Vec<BackendCounts>,
    /// Flows closing but still tracked, per backend id.
    closing: HashMap<u32, u64>,
    /// Container names by address (map key).
    containers: HashMap<u32, String>,
}

impl Snapshot {
    fn read(pins: &PinDir, with_closing: bool) -> Result<Snapshot> {
        let maps = ServiceMaps::open_pinned(pins)?;
        let current = Current::read(&maps)?;
        let upto = current.backends.keys().next_back().map_or(0, |id| id + 1);
        let counts = maps.counts_upto(upto)?;
        let containers = ContainerMaps::open_pinned(pins)?
            .endpoints()?
            .into_iter()
            .map(|(addr, ep)| (addr_key(addr), name_str(&ep.name).to_owned()))
            .collect();
        let mut closing = HashMap::new();
        if with_closing && let Some(table) = conntrack::open_table(pins)? {
            for (_, e) in dump::hash_entries(&table, maps::CT)? {
                if e.kind == CT_SERVICE && e.tcp_state == TCP_CLOSING {
                    *closing.entry(e.backend_id).or_default() += 1;
                }
            }
        }
        let mut by_service: HashMap<u32, Vec<(u32, Backend)>> = HashMap::new();
        for (id, b) in &current.backends {
            by_service.entry(b.service_id).or_default().push((*id, *b));
        }
        let mut services: Vec<Svc> = current
            .frontends
            .iter()
            .map(|(key, (frontend, region))| {
                let mut backends = by_service.remove(&frontend.id).unwrap_or_default();
                backends.sort_by_key(|(_, b)| (addr_of(b.addr), u16::from_be(b.port)));
                Svc {
                    key: *key,
                    frontend: *frontend,
                    name: region
                        .as_ref()
                        .map(|(t, _)| t.name.clone())
                        .unwrap_or_default(),
                    backends,
                }
            })
            .collect();
        services.sort_by_key(|s| (addr_of(s.key.vip), u16::from_be(s.key.port), s.key.proto));
        Ok(Snapshot {
            services,
            counts,
            closing,
            containers,
        })
    }

    fn counts(&self, id: u32) -> BackendCounts {
        self.counts.get(id as usize).copied().unwrap_or_default()
    }

    fn backend_row(&self, id: u32, b: &Backend) -> BackendRow {
        let c = self.counts(id);
        BackendRow {
            address: addr_of(b.addr).to_string(),
            port: u16::from_be(b.port),
            weight: b.weight,
            active: c
                .conns
                .opened
                .saturating_sub(c.conns.closed)
                .saturating_sub(c.expired),
            inactive: self.closing.get(&id).copied().unwrap_or(0),
            opened: c.conns.opened,
            in_packets: c.traffic.in_packets,
            out_packets: c.traffic.out_packets,
            in_bytes: c.traffic.in_bytes,
            out_bytes: c.traffic.out_bytes,
            container: self.containers.get(&b.addr).cloned(),
        }
    }
}

fn protocol(proto: u8) -> String {
    Proto::from_number(proto).map_or_else(|| proto.to_string(), |p| p.to_string())
}

/// Every service with its backends and their connection counts, ordered by VIP, port and
/// protocol.
pub fn services(pins: &PinDir) -> Result<Vec<ServiceRow>> {
    let snap = Snapshot::read(pins, true)?;
    Ok(snap
        .services
        .iter()
        .map(|s| ServiceRow {
            name: s.name.clone(),
            vip: addr_of(s.key.vip).to_string(),
            port: u16::from_be(s.key.port),
            protocol: protocol(s.key.proto),
            scheduler: Scheduler::from_u8(s.frontend.scheduler).map_or_else(
                || format!("#{}", s.frontend.scheduler),
                |sched| sched.name().to_owned(),
            ),
            persistence_secs: s.frontend.persistence_secs,
            persistence_netmask: addr_of(s.frontend.persistence_mask).to_string(),
            external: s.frontend.flags & SVC_EXTERNAL != 0,
            backends: s
                .backends
                .iter()
                .map(|(id, b)| snap.backend_row(*id, b))
                .collect(),
        })
        .collect())
}

/// Every backend, one row each, in `show services` order.
pub fn backends(pins: &PinDir) -> Result<Vec<BackendView>> {
    let snap = Snapshot::read(pins, true)?;
    let mut rows = Vec::new();
    for s in &snap.services {
        for (id, b) in &s.backends {
            let r = snap.backend_row(*id, b);
            rows.push(BackendView {
                id: *id,
                service: s.name.clone(),
                vip: addr_of(s.key.vip).to_string(),
                vip_port: u16::from_be(s.key.port),
                protocol: protocol(s.key.proto),
                address: r.address,
                port: r.port,
                weight: r.weight,
                state: if r.weight > 0 { "up" } else { "out" },
                active: r.active,
                inactive: r.inactive,
                opened: r.opened,
                in_packets: r.in_packets,
                out_packets: r.out_packets,
                in_bytes: r.in_bytes,
                out_bytes: r.out_bytes,
                container: r.container,
            });
        }
    }
    Ok(rows)
}

/// Per-second rates of every service and backend: the counters read twice, `interval`
/// apart (the views use [`RATE_INTERVAL`]). A backend whose id changed hands in between
/// shows 0.
pub fn rates(pins: &PinDir, interval: Duration) -> Result<Vec<ServiceRate>> {
    let before = Snapshot::read(pins, false)?;
    let start = Instant::now();
    std::thread::sleep(interval);
    let maps = ServiceMaps::open_pinned(pins)?;
    let upto = u32::try_from(before.counts.len()).unwrap_or(u32::MAX);
    let after = maps.counts_upto(upto)?;
    let now = maps.backends()?;
    let secs = start.elapsed().as_secs_f64().max(f64::EPSILON);
    let rate = |id: u32, b: &Backend| -> Rate {
        let (Some(new), true) = (
            after.get(id as usize),
            now.get(&id)
                .is_some_and(|n| (n.addr, n.port) == (b.addr, b.port)),
        ) else {
            return Rate::default();
        };
        let old = before.counts(id);
        let per_sec = |n: u64, o: u64| n.saturating_sub(o) as f64 / secs;
        Rate {
            cps: per_sec(new.conns.opened, old.conns.opened),
            in_pps: per_sec(new.traffic.in_packets, old.traffic.in_packets),
            out_pps: per_sec(new.traffic.out_packets, old.traffic.out_packets),
            in_bps: per_sec(new.traffic.in_bytes, old.traffic.in_bytes),
            out_bps: per_sec(new.traffic.out_bytes, old.traffic.out_bytes),
        }
    };
    Ok(before
        .services
        .iter()
        .map(|s| {
            let backends: Vec<BackendRate> = s
                .backends
                .iter()
                .map(|(id, b)| BackendRate {
                    address: addr_of(b.addr).to_string(),
                    port: u16::from_be(b.port),
                    rate: rate(*id, b),
                    container: before.containers.get(&b.addr).cloned(),
                })
                .collect();
            let total = backends.iter().fold(Rate::default(), |t, b| Rate {
                cps: t.cps + b.rate.cps,
                in_pps: t.in_pps + b.rate.in_pps,
                out_pps: t.out_pps + b.rate.out_pps,
                in_bps: t.in_bps + b.rate.in_bps,
                out_bps: t.out_bps + b.rate.out_bps,
            });
            ServiceRate {
                name: s.name.clone(),
                vip: addr_of(s.key.vip).to_string(),
                port: u16::from_be(s.key.port),
                protocol: protocol(s.key.proto),
                interval_ms: (secs * 1000.0).round() as u64,
                rate: total,
                backends,
            }
        })
        .collect())
}

/// The frontend key of the service named `name`, if there is one.
pub fn find(pins: &PinDir, name: &str) -> Result<Option<ServiceKey>> {
    let maps = ServiceMaps::open_pinned(pins)?;
    for (key, svc) in maps.frontends()? {
        if maps.region(&svc)?.is_some_and(|(t, _)| t.name == name) {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

/// Every service's name (for messages).
pub fn names(pins: &PinDir) -> Result<Vec<String>> {
    let maps = ServiceMaps::open_pinned(pins)?;
    let mut names = Vec::new();
    for (_, svc) in maps.frontends()? {
        if let Some((t, _)) = maps.region(&svc)? {
            names.push(t.name);
        }
    }
    names.sort();
    Ok(names)
}
