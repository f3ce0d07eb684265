//! Virtual services (IPVS-style load balancing): a VIP, port and protocol spread over
//! backends by a scheduler. User space computes everything that needs thought (ids, the
//! weighted round-robin sequence, the Maglev lookup table); the datapath reads it and
//! keeps only per-flow state (conntrack), per-backend connection counts and persistence.
//!
//! - `NB_SERVICES`: [`ServiceKey`] -> [`Service`] (the frontend).
//! - `NB_TABLES`: one array of `u32` holding, per service, a region: the ids of its
//!   selectable backends (`Service::count`), then its scheduling table
//!   (`Service::table_len` backend ids: the weighted sequence, or the Maglev table). A changed service gets
//!   a new region, written before the frontend points at it, so no packet ever sees half
//!   a table; the old region is freed after. User space keeps a trailer of its own after
//!   the table (the region's hash, the service's name, the Maglev roster): nothing past
//!   `count + table_len` is the datapath's.
//! - `NB_BACKENDS`: backend id -> [`Backend`] (an array; id 0 is never used).
//! - `NB_BE_CONNS`: backend id -> [`BackendConns`], written by the datapath only.
//! - `NB_BE_GC`: backend id -> connections of that backend the agent expired (`u64`),
//!   written by the agent only: active = opened - closed - expired, no writer shared.
//! - `NB_BE_TRAFFIC`: backend id -> [`BackendTraffic`], written by the datapath only.
//! - `NB_AFFINITY`: [`AffinityKey`] -> [`Affinity`] (an LRU hash): persistence.
//! - `NB_SVC_RR`: service id -> the round-robin position (`u64`), datapath only.
//!
//! Addresses and ports as in [`crate::net`]: network byte order.

/// `Service::scheduler`: IPVS's schedulers.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// Round robin (the table is the backend list, each once).
    Rr = 0,
    /// Weighted round robin (the table is IPVS's interleaved weighted sequence).
    Wrr = 1,
    /// Least connections: fewest active connections.
    Lc = 2,
    /// Weighted least connections: fewest active connections per unit of weight.
    Wlc = 3,
    /// Source hashing: the client's address through the Maglev table.
    Sh = 4,
    /// Destination hashing: the destination address through the Maglev table.
    Dh = 5,
    /// Maglev hashing of the client's address.
    Mh = 6,
    /// Weighted random over the weighted sequence.
    Random = 7,
}

impl Scheduler {
    pub const ALL: [Scheduler; 8] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Sh,
        Scheduler::Dh,
        Scheduler::Mh,
        Scheduler::Random,
    ];

    /// The name ipvsadm uses.
    pub const fn name(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Sh => "sh",
            Scheduler::Dh => "dh",
            Scheduler::Mh => "mh",
            Scheduler::Random => "random",
        }
    }

    pub fn from_u8(v: u8) -> Option<Scheduler> {
        Self::ALL.get(usize::from(v)).copied()
    }

    /// Whether the table is a Maglev lookup table (hash schedulers) rather than a
    /// weighted sequence.
    pub const fn uses_maglev(self) -> bool {
        matches!(self, Scheduler::Sh | Scheduler::Dh | Scheduler::Mh)
    }
}

/// `Service::flags`: also reachable from outside through the uplink.
pub const SVC_EXTERNAL: u8 = 1 << 0;

/// Most backends one service may have (bounds the least-connection scan).
pub const MAX_SERVICE_BACKENDS: u32 = 256;

/// The hash the hashing schedulers (sh, dh, mh) put an address through before taking it
/// modulo the Maglev table's size (murmur3's finalizer: every input bit moves every
/// output bit). Shared so that user space can tell which slot a client lands on.
#[inline(always)]
pub const fn flow_hash(addr: u32) -> u32 {
    let mut h = addr;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// `NB_SERVICES` key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub vip: u32,
    pub port: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
    pub pad: u8,
}

/// `NB_SERVICES` value: the frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Stable id (never 0): the key of the service's round-robin position and affinity.
    pub id: u32,
    /// A [`Scheduler`] discriminant.
    pub scheduler: u8,
    /// `SVC_*` flags.
    pub flags: u8,
    /// Selectable backends (weight above 0, healthy): the start of the region. 0: the
    /// service rejects new connections.
    pub count: u16,
    /// Where the region starts in `NB_TABLES`.
    pub table: u32,
    /// Entries of the scheduling table after the backend list.
    pub table_len: u32,
    /// Persistence timeout in seconds (0: none).
    pub persistence_secs: u32,
    /// Persistence netmask applied to the client address (network byte order).
    pub persistence_mask: u32,
}

/// `NB_BACKENDS` value, by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// 0: no backend has this id (removed: its flows get a reset).
    pub addr: u32,
    pub port: u16,
    /// IPVS weight (0: drained: no new connections, existing ones continue).
    pub weight: u16,
    /// The service it belongs to.
    pub service_id: u32,
}

/// `NB_BE_CONNS` value: connection counts kept by the datapath.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendConns {
    /// New connections scheduled to the backend (ipvsadm's "Conns").
    pub opened: u64,
    /// Connections the datapath saw close (FIN or RST from the client).
    pub closed: u64,
}

/// `NB_BE_TRAFFIC` value: what went through a backend's flows (ipvsadm's `--stats`).
/// Frames are counted with their Ethernet header, as they arrive at the hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendTraffic {
    /// Client to backend.
    pub in_packets: u64,
    pub in_bytes: u64,
    /// Backend to client.
    pub out_packets: u64,
    pub out_bytes: u64,
}

/// `NB_AFFINITY` key: a client (masked) of a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub service_id: u32,
    pub client: u32,
}

/// `NB_AFFINITY` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Affinity {
    pub backend_id: u32,
    pub pad: u32,
    /// bpf_ktime_get_coarse_ns() of the client's last new connection.
    pub last_seen: u64,
}

const _: () = assert!(size_of::<ServiceKey>() == 8);
const _: () = assert!(size_of::<Service>() == 24);
const _: () = assert!(size_of::<Backend>() == 12);
const _: () = assert!(size_of::<BackendConns>() == 16);
const _: () = assert!(size_of::<BackendTraffic>() == 32);
const _: () = assert!(size_of::<AffinityKey>() == 8);
const _: () = assert!(size_of::<Affinity>() == 16);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY (all): repr(C), integers only, no padding (sizes asserted above).
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for BackendConns {}
    unsafe impl aya::Pod for BackendTraffic {}
    unsafe impl aya::Pod for AffinityKey {}
    unsafe impl aya::Pod for Affinity {}
}
