//! Virtual services: a new flow to a VIP gets a backend from persistence or the service's
//! scheduler; the flow's conntrack entries then carry it (see `container` and `uplink`).
//! User space computes the tables; here they are only read. Connection counts are kept
//! with atomic adds (one writer per field: the datapath), so least-connection schedulers
//! see every CPU's flows.

use core::intrinsics::AtomicOrdering;

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_loop},
    macros::map,
    maps::{Array, HashMap, LruHashMap},
};
use netbpf_common::{
    conntrack::{CT_SERVICE, CtEntry, CtKey},
    maps::{MAX_AFFINITY, MAX_BACKENDS, MAX_SERVICES, MAX_TABLE_ENTRIES},
    service::{
        Affinity, AffinityKey, Backend, BackendConns, BackendTraffic, MAX_SERVICE_BACKENDS,
        Scheduler, Service, ServiceKey, flow_hash,
    },
};

use crate::{
    conntrack::{self, Created},
    endpoints,
    nat::{IPPROTO_TCP, L4, TCP_ACK, TCP_SYN},
};

#[map]
static NB_SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);

#[map]
static NB_TABLES: Array<u32> = Array::with_max_entries(MAX_TABLE_ENTRIES, 0);

#[map]
static NB_BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map]
static NB_BE_CONNS: Array<BackendConns> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map]
static NB_BE_GC: Array<u64> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map]
static NB_BE_TRAFFIC: Array<BackendTraffic> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map]
static NB_AFFINITY: LruHashMap<AffinityKey, Affinity> =
    LruHashMap::with_max_entries(MAX_AFFINITY, 0);

#[map]
static NB_SVC_RR: Array<u64> = Array::with_max_entries(MAX_SERVICES, 0);

/// The service at a destination, if any.
#[inline(always)]
pub fn lookup(vip: u32, port: u16, proto: u8) -> Option<&'static Service> {
    let key = ServiceKey {
        vip,
        port,
        proto,
        pad: 0,
    };
    // SAFETY: map values stay valid for the program's run (RCU).
    unsafe { NB_SERVICES.get(&key) }
}

/// What became of a new flow to a service.
pub enum NewFlow {
    /// Recorded both ways: the entry its packets follow.
    Open(CtEntry),
    /// No backend can take it (none selectable, or not a container here): refuse it.
    Refused,
    /// The conntrack table refused the entries.
    Failed,
}

/// A new flow (`key`, a packet `l4`) to a service: a TCP flow must start with a SYN; its
/// backend is chosen, and both directions are recorded. `reply` is the reply direction's
/// entry as the caller wants it (kind, where to send, MACs); the VIP and the backend are
/// filled in here.
#[inline(always)]
pub fn open_flow(key: &CtKey, l4: &L4, svc: &Service, reply: &CtEntry) -> NewFlow {
    if l4.proto == IPPROTO_TCP && l4.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return NewFlow::Refused;
    }
    let Some((id, backend)) = schedule(svc, key.saddr, key.daddr) else {
        return NewFlow::Refused;
    };
    let Some(ep) = endpoints::endpoint(backend.addr) else {
        return NewFlow::Refused;
    };
    let mut forward = conntrack::entry(CT_SERVICE, backend.addr, backend.port, ep.ifindex, l4);
    forward.dst_mac = ep.mac;
    forward.src_mac = ep.host_mac;
    forward.backend_id = id;
    let reply_key = CtKey {
        saddr: backend.addr,
        daddr: key.saddr,
        sport: backend.port,
        dport: l4.sport,
        proto: l4.proto,
        pad: [0; 3],
    };
    let mut reply = *reply;
    reply.nat_addr = key.daddr;
    reply.nat_port = l4.dport;
    reply.backend_id = id;
    match conntrack::create(key, &forward, &reply_key, &reply) {
        Some(Created::New(e)) => {
            opened(id);
            NewFlow::Open(e)
        }
        Some(Created::Existing(e)) => NewFlow::Open(e),
        None => NewFlow::Failed,
    }
}

/// Whether the backend a flow was given is still there (a removed backend's flows are
/// reset, not left to time out in silence).
#[inline(always)]
pub fn backend_alive(id: u32, addr: u32, port: u16) -> bool {
    NB_BACKENDS
        .get(id)
        .is_some_and(|b| b.addr == addr && b.port == port)
}

/// A new flow's backend (its id and entry): the client's persistent backend if it has one
/// still selectable, else the scheduler's choice. `None`: nothing selectable.
#[inline(always)]
pub fn schedule(svc: &Service, saddr: u32, daddr: u32) -> Option<(u32, Backend)> {
    if svc.count == 0 {
        return None;
    }
    // Only persistence needs the clock (a helper call per new flow otherwise).
    let now = if svc.persistence_secs != 0 {
        // SAFETY: helper without preconditions.
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        0
    };
    let affinity_key = AffinityKey {
        service_id: svc.id,
        client: saddr & svc.persistence_mask,
    };
    if svc.persistence_secs != 0
        && let Some(id) = persistent(svc, &affinity_key, now)
        && let Some(backend) = selectable(svc, id)
    {
        return Some((id, backend));
    }
    let id = match Scheduler::from_u8(svc.scheduler)? {
        Scheduler::Rr | Scheduler::Wrr => {
            let position = NB_SVC_RR.get_ptr_mut(svc.id)?;
            // SAFETY: a pointer into the array's value, valid for this run. The add is
            // atomic; reading the result is not (see `add`): two CPUs scheduling at the
            // same instant may take the same turn. One at a time, a cycle is exact.
            let n = unsafe {
                add(position);
                core::ptr::read_volatile(position)
            };
            table_entry(
                svc,
                (n.wrapping_sub(1) % u64::from(svc.table_len.max(1))) as u32,
            )?
        }
        Scheduler::Random => {
            // SAFETY: helper without preconditions.
            let r = unsafe { bpf_get_prandom_u32() };
            table_entry(svc, r % svc.table_len.max(1))?
        }
        Scheduler::Sh | Scheduler::Mh => table_entry(svc, flow_hash(saddr) % svc.table_len.max(1))?,
        Scheduler::Dh => table_entry(svc, flow_hash(daddr) % svc.table_len.max(1))?,
        Scheduler::Lc => least_connections(svc, false)?,
        Scheduler::Wlc => least_connections(svc, true)?,
    };
    let backend = selectable(svc, id)?;
    if svc.persistence_secs != 0 {
        let affinity = Affinity {
            backend_id: id,
            pad: 0,
            last_seen: now,
        };
        let _ = NB_AFFINITY.insert(&affinity_key, &affinity, 0);
    }
    Some((id, backend))
}

/// The client's backend if its last new connection is recent enough (refreshed).
#[inline(always)]
fn persistent(svc: &Service, key: &AffinityKey, now: u64) -> Option<u32> {
    let entry = NB_AFFINITY.get_ptr_mut(key)?;
    // SAFETY: a pointer into the map's value, valid for this run.
    unsafe {
        if now.saturating_sub((*entry).last_seen) > u64::from(svc.persistence_secs) * 1_000_000_000
        {
            return None;
        }
        (*entry).last_seen = now;
        Some((*entry).backend_id)
    }
}

/// A backend of this service that may take new connections (weight above 0).
#[inline(always)]
fn selectable(svc: &Service, id: u32) -> Option<Backend> {
    let b = NB_BACKENDS.get(id)?;
    (b.addr != 0 && b.service_id == svc.id && b.weight != 0).then_some(*b)
}

/// Entry `i` of the service's scheduling table (after its backend list).
#[inline(always)]
fn table_entry(svc: &Service, i: u32) -> Option<u32> {
    NB_TABLES
        .get(svc.table.wrapping_add(u32::from(svc.count)).wrapping_add(i))
        .copied()
}

/// Connections a backend has open now.
#[inline(always)]
fn active(id: u32) -> u64 {
    let (opened, closed) = NB_BE_CONNS.get(id).map_or((0, 0), |c| (c.opened, c.closed));
    let expired = NB_BE_GC.get(id).copied().unwrap_or(0);
    opened.saturating_sub(closed).saturating_sub(expired)
}

/// lc: the backend with the fewest active connections; wlc: the fewest per unit of
/// weight. Ties go to the first in the list (IPVS does the same). The scan runs in
/// `bpf_loop` (Linux 5.17): its body is verified once, whatever the backend count.
#[inline(always)]
fn least_connections(svc: &Service, weighted: bool) -> Option<u32> {
    let mut scan = LeastScan {
        list: svc.table,
        weighted,
        best_id: 0,
        best_conns: 0,
        best_weight: 0,
    };
    let count = u32::from(svc.count).min(MAX_SERVICE_BACKENDS);
    // SAFETY: the callback has the signature bpf_loop expects and reads its context as
    // the `LeastScan` passed here, which outlives the call.
    unsafe {
        bpf_loop(count, least_step as *mut c_void, (&raw mut scan).cast(), 0);
    }
    (scan.best_id != 0).then_some(scan.best_id)
}

/// The state of a least-connection scan (`bpf_loop` context).
#[repr(C)]
struct LeastScan {
    list: u32,
    weighted: bool,
    best_id: u32,
    best_conns: u64,
    best_weight: u64,
}

/// One backend of a least-connection scan. Returns 0: go on.
extern "C" fn least_step(i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the context `least_connections` gave it.
    let scan = unsafe { &mut *ctx.cast::<LeastScan>() };
    let Some(&id) = NB_TABLES.get(scan.list.wrapping_add(i)) else {
        return 1;
    };
    let Some(b) = NB_BACKENDS.get(id) else {
        return 0;
    };
    if b.weight == 0 {
        return 0;
    }
    let weight = if scan.weighted {
        u64::from(b.weight)
    } else {
        1
    };
    let conns = active(id);
    // conns / weight < best_conns / best_weight, without division.
    if scan.best_id == 0 || conns * scan.best_weight < scan.best_conns * weight {
        scan.best_id = id;
        scan.best_conns = conns;
        scan.best_weight = weight;
    }
    0
}

/// A new connection to a backend.
#[inline(always)]
pub fn opened(id: u32) {
    if let Some(c) = NB_BE_CONNS.get_ptr_mut(id) {
        // SAFETY: a pointer into the array's value, valid for this run; atomic add.
        unsafe { add(&raw mut (*c).opened) };
    }
}

/// A frame of a backend's flow, client to backend (`inbound`) or back.
#[inline(always)]
pub fn traffic(id: u32, inbound: bool, bytes: u32) {
    if let Some(t) = NB_BE_TRAFFIC.get_ptr_mut(id) {
        // SAFETY: a pointer into the array's value, valid for this run; atomic adds.
        unsafe {
            if inbound {
                add_n(&raw mut (*t).in_packets, 1);
                add_n(&raw mut (*t).in_bytes, u64::from(bytes));
            } else {
                add_n(&raw mut (*t).out_packets, 1);
                add_n(&raw mut (*t).out_bytes, u64::from(bytes));
            }
        }
    }
}

/// A backend's connection closed (the client's FIN or RST).
#[inline(always)]
pub fn closed(id: u32) {
    if let Some(c) = NB_BE_CONNS.get_ptr_mut(id) {
        // SAFETY: as in [`opened`].
        unsafe { add(&raw mut (*c).closed) };
    }
}

/// Adds 1 atomically (BPF_ATOMIC add). Its result cannot be read in the same
/// instruction: the fetching form needs BPF ISA v3, whose 32-bit subregister code this
/// toolchain's linker does not generate correctly (registers assumed to survive helper
/// calls), so the object is built for the generic ISA.
///
/// # Safety
/// `counter` must point into a map value, valid for the program's run.
#[inline(always)]
unsafe fn add(counter: *mut u64) {
    // SAFETY: the caller's pointer is valid.
    unsafe { add_n(counter, 1) };
}

/// Adds `n` atomically (as [`add`]).
///
/// # Safety
/// As for [`add`].
#[inline(always)]
unsafe fn add_n(counter: *mut u64, n: u64) {
    // SAFETY: the caller's pointer is valid.
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}
