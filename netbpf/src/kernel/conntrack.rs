//! Expiring translated flows: the datapath creates and refreshes conntrack entries, the
//! agent removes the ones idle for longer than their timeout, both directions together.
//! A service flow the agent removes before the datapath saw it close is counted in
//! `NB_BE_GC`, so that a backend's active connections (opened - closed - expired) stay
//! right.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData};
use netbpf_common::{
    conntrack::{
        CT_HAIRPIN, CT_HAIRPIN_REPLY, CT_MASQ_OUT, CT_PUBLISHED_IN, CT_PUBLISHED_REPLY, CT_SERVICE,
        CT_SERVICE_REPLY, CT_SERVICE_REPLY_OUT, CtEntry, CtKey, HostConfig, TCP_CLOSING,
        TCP_ESTABLISHED, partner,
    },
    maps,
};

use super::{clock::Clock, pins::PinDir, services::ServiceMaps};
use crate::{Error, Result, config::model::Timeouts};

/// How long a flow in this entry's protocol and state may stay idle.
pub fn timeout(proto: u8, e: &CtEntry, t: &Timeouts) -> Duration {
    match proto {
        6 => match e.tcp_state {
            TCP_ESTABLISHED => t.tcp_established,
            TCP_CLOSING => t.tcp_closing,
            _ => t.tcp_syn,
        },
        17 => t.udp,
        _ => t.icmp,
    }
}

/// The pinned conntrack table, or `None` when nothing is pinned here.
pub fn open_table(pins: &PinDir) -> Result<Option<HashMap<MapData, CtKey, CtEntry>>> {
    let err = |source| Error::Map {
        map: maps::CT,
        source,
    };
    let path = pins.map(maps::CT);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).map_err(err)?;
    HashMap::try_from(Map::from_map_data(data).map_err(err)?)
        .map(Some)
        .map_err(err)
}

/// The clock of the conntrack table pinned here (its tick rate is in `NB_CONFIG`).
pub fn clock(pins: &PinDir) -> Result<Clock> {
    let path = pins.map(maps::CONFIG);
    let err = |source| Error::Map {
        map: maps::CONFIG,
        source,
    };
    let data = MapData::from_pin(&path).map_err(err)?;
    let config: aya::maps::Array<MapData, HostConfig> =
        aya::maps::Array::try_from(Map::from_map_data(data).map_err(err)?).map_err(err)?;
    Clock::now(config.get(&0, 0).map_err(err)?.jiffies_hz)
}

/// Removes the flows idle for longer than their timeout: a flow's idle time is the least
/// of its two directions'. Returns how many entries went.
pub fn collect_garbage(pins: &PinDir, timeouts: &Timeouts, clock: &Clock) -> Result<usize> {
    let Some(mut table) = open_table(pins)? else {
        return Ok(0);
    };
    // In bulk: one batch call per thousand entries, not two syscalls per entry.
    let entries: Vec<(CtKey, CtEntry)> = super::dump::hash_entries(&table, maps::CT)?;
    // Each direction's partner found by key: a pass over a full table (262,144 entries)
    // stays linear.
    let last_seen: StdHashMap<CtKey, u64> =
        entries.iter().map(|(k, e)| (*k, e.last_seen)).collect();
    let mut expired = Vec::new();
    for (key, e) in &entries {
        let other = partner(key, e);
        let last = last_seen
            .get(&other)
            .map_or(e.last_seen, |p| (*p).max(e.last_seen));
        // Either direction's state counts: a FIN seen one way closes the flow.
        let limit = timeout(key.proto, e, timeouts);
        if clock.since(last) > limit {
            expired.push((*key, *e));
        }
    }
    let mut removed = 0;
    let mut open_flows = OpenFlows::default();
    for (key, e) in expired {
        // An entry the datapath evicted or removed meanwhile is gone already.
        if table.remove(&key).is_ok() {
            removed += 1;
            open_flows.note(&e);
        }
    }
    open_flows.count(pins)?;
    Ok(removed)
}

/// Service flows removed while still open, per backend, to add to `NB_BE_GC`.
#[derive(Default)]
struct OpenFlows {
    by_backend: BTreeMap<u32, Vec<(u32, u16)>>,
}

impl OpenFlows {
    /// One removed entry: the client's direction of a service flow the datapath did not
    /// see close (no FIN or RST: it counted no close for it).
    fn note(&mut self, e: &CtEntry) {
        if e.kind == CT_SERVICE && e.tcp_state != TCP_CLOSING && e.backend_id != 0 {
            self.by_backend
                .entry(e.backend_id)
                .or_default()
                .push((e.nat_addr, e.nat_port));
        }
    }

    /// Adds them to their backends' expired counts, each only if its backend id still
    /// names the backend the flow went to (an id given to another backend since started
    /// from zero).
    fn count(self, pins: &PinDir) -> Result<()> {
        if self.by_backend.is_empty() || !pins.map(maps::BE_GC).exists() {
            return Ok(());
        }
        let mut services = ServiceMaps::open_pinned(pins)?;
        for (id, flows) in self.by_backend {
            let b = services.backend(id)?;
            let n = flows
                .iter()
                .filter(|(addr, port)| b.addr == *addr && b.port == *port)
                .count();
            if n > 0 {
                services.add_expired(id, n as u64)?;
            }
        }
        Ok(())
    }
}

/// The container addresses a flow direction involves (the ones whose removal ends it).
pub fn containers_of(key: &CtKey, e: &CtEntry) -> [Option<u32>; 2] {
    match e.kind {
        CT_HAIRPIN | CT_HAIRPIN_REPLY => [Some(key.saddr), Some(e.nat_addr)],
        CT_PUBLISHED_REPLY | CT_MASQ_OUT => [Some(key.saddr), None],
        // The client (a container, or outside) and the backend.
        CT_SERVICE => [Some(key.saddr), Some(e.nat_addr)],
        CT_SERVICE_REPLY => [Some(key.saddr), Some(key.daddr)],
        CT_SERVICE_REPLY_OUT => [Some(key.saddr), None],
        _ => [Some(e.nat_addr), None],
    }
}

/// The published (address, port) a flow direction came in through, if it did.
pub fn published_via(key: &CtKey, e: &CtEntry) -> Option<(u32, u16)> {
    match e.kind {
        CT_PUBLISHED_IN | CT_HAIRPIN => Some((key.daddr, key.dport)),
        _ => None,
    }
}

/// Removes every flow (both directions) for which `gone` holds of either direction.
/// Returns how many entries went.
pub fn forget_flows(pins: &PinDir, gone: impl Fn(&CtKey, &CtEntry) -> bool) -> Result<usize> {
    let Some(mut table) = open_table(pins)? else {
        return Ok(0);
    };
    // Entry by entry, skipping what vanishes meanwhile: a reconcile (a Docker call among
    // them) must not fail on a flow the datapath or the expiry pass removed.
    let entries: StdHashMap<CtKey, CtEntry> = table.iter().filter_map(|e| e.ok()).collect();
    let doomed: Vec<CtKey> = entries
        .iter()
        .filter(|(k, e)| gone(k, e))
        .flat_map(|(k, e)| [*k, partner(k, e)])
        .collect();
    let mut removed = 0;
    let mut open_flows = OpenFlows::default();
    for key in &doomed {
        if table.remove(key).is_ok() {
            removed += 1;
            if let Some(e) = entries.get(key) {
                open_flows.note(e);
            }
        }
    }
    open_flows.count(pins)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use netbpf_common::conntrack::CT_MASQ_REPLY;

    use super::*;

    fn key(s: u32, d: u32, sp: u16, dp: u16) -> CtKey {
        CtKey {
            saddr: s,
            daddr: d,
            sport: sp,
            dport: dp,
            proto: 6,
            pad: [0; 3],
        }
    }

    fn entry(kind: u8, nat: (u32, u16), rev: (u32, u16)) -> CtEntry {
        CtEntry {
            kind,
            nat_addr: nat.0,
            nat_port: nat.1,
            rev_addr: rev.0,
            rev_port: rev.1,
            ..CtEntry::default()
        }
    }

    /// Each kind's partner is the key the datapath gave the flow's other direction, and the
    /// partner's partner is the entry itself.
    #[test]
    fn partners_mirror_each_other() {
        let (client, host, x, uplink, dest, gw, t) = (1, 2, 3, 4, 5, 6, 7);
        let pairs = [
            // Published: client -> host:hp becomes x:xp; reply x:xp -> client leaves as host:hp.
            (
                key(client, host, 40000, 8080),
                entry(CT_PUBLISHED_IN, (x, 80), (0, 0)),
                key(x, client, 80, 40000),
                entry(CT_PUBLISHED_REPLY, (host, 8080), (0, 0)),
            ),
            // Masquerade: x:ap -> dest:dp leaves as uplink:np; the reply dest -> uplink:np goes to x:ap.
            (
                key(x, dest, 5555, 443),
                entry(CT_MASQ_OUT, (uplink, 61000), (0, 0)),
                key(dest, uplink, 443, 61000),
                entry(CT_MASQ_REPLY, (x, 5555), (0, 0)),
            ),
            // Hairpin to its own port: x:ap -> host:hp becomes gw:np -> x:tp; the reply
            // x:tp -> gw:np becomes host:hp -> x:ap.
            (
                key(x, host, 40001, 8080),
                entry(CT_HAIRPIN, (x, 80), (gw, 61000)),
                key(x, gw, 80, 61000),
                entry(CT_HAIRPIN_REPLY, (x, 40001), (host, 8080)),
            ),
            // Hairpin to another container: x:ap -> host:hp becomes x:ap -> t:tp (the source
            // kept); the reply t:tp -> x:ap becomes host:hp -> x:ap.
            (
                key(x, host, 40002, 8080),
                entry(CT_HAIRPIN, (t, 80), (x, 40002)),
                key(t, x, 80, 40002),
                entry(CT_HAIRPIN_REPLY, (x, 40002), (host, 8080)),
            ),
        ];
        for (k1, e1, k2, e2) in pairs {
            assert_eq!(partner(&k1, &e1), k2, "{}", e1.kind);
            assert_eq!(partner(&k2, &e2), k1, "{}", e2.kind);
        }
    }

    /// A service flow ends with its client's container or its backend's, either way round.
    #[test]
    fn service_flows_involve_client_and_backend() {
        let (client, vip, backend) = (1, 2, 3);
        let forward = key(client, vip, 40000, 80);
        let e = entry(CT_SERVICE, (backend, 8080), (0, 0));
        assert_eq!(containers_of(&forward, &e), [Some(client), Some(backend)]);
        let reply = key(backend, client, 8080, 40000);
        let r = entry(CT_SERVICE_REPLY, (vip, 80), (0, 0));
        assert_eq!(containers_of(&reply, &r), [Some(backend), Some(client)]);
        assert_eq!(partner(&forward, &e), reply);
        assert_eq!(partner(&reply, &r), forward);
    }

    /// Only the client's direction of a service flow the datapath did not see close counts
    /// as expired (the datapath counted a close for the others, or nothing at all).
    #[test]
    fn open_service_flows_are_counted_once() {
        use netbpf_common::conntrack::{CT_SERVICE_REPLY, TCP_SYN_SENT};
        let flow = |kind, state, backend_id| CtEntry {
            kind,
            tcp_state: state,
            backend_id,
            nat_addr: 9,
            nat_port: 8080,
            ..CtEntry::default()
        };
        let mut open = OpenFlows::default();
        open.note(&flow(CT_SERVICE, TCP_ESTABLISHED, 3));
        open.note(&flow(CT_SERVICE, TCP_SYN_SENT, 3));
        open.note(&flow(CT_SERVICE, 0, 4)); // UDP
        open.note(&flow(CT_SERVICE, TCP_CLOSING, 3));
        open.note(&flow(CT_SERVICE_REPLY, TCP_ESTABLISHED, 3));
        open.note(&flow(CT_MASQ_REPLY, TCP_ESTABLISHED, 0));
        let counts: Vec<(u32, usize)> = open
            .by_backend
            .iter()
            .map(|(id, flows)| (*id, flows.len()))
            .collect();
        assert_eq!(counts, [(3, 2), (4, 1)]);
    }

    #[test]
    fn timeouts_follow_protocol_and_state() {
        let t = Timeouts::default();
        let e = |state| CtEntry {
            tcp_state: state,
            ..CtEntry::default()
        };
        assert_eq!(timeout(6, &e(TCP_ESTABLISHED), &t), t.tcp_established);
        assert_eq!(timeout(6, &e(TCP_CLOSING), &t), t.tcp_closing);
        assert_eq!(timeout(6, &e(1), &t), t.tcp_syn);
        assert_eq!(timeout(17, &e(0), &t), t.udp);
        assert_eq!(timeout(1, &e(0), &t), t.icmp);
    }
}
