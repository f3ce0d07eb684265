//! Map layouts and counter indices shared by netbpf's kernel programs and user space.
//!
//! This crate is the single source of truth for anything both sides read or write: every
//! type is `#[repr(C)]` without implicit padding, and every enum has a fixed discriminant.
#![no_std]

pub mod conntrack;
pub mod monitor;
pub mod net;
pub mod ports;
pub mod service;
pub mod stats;

/// Names of the maps in the kernel object (at most 15 bytes: the kernel's object name limit).
pub mod maps {
    /// Per-CPU packet and byte counters per hook and outcome; see [`crate::stats`].
    pub const STATS: &str = "NB_STATS";
    /// Network id -> [`crate::net::NetworkInfo`].
    pub const NETWORKS: &str = "NB_NETWORKS";
    /// Container address -> [`crate::net::EndpointInfo`].
    pub const ENDPOINTS: &str = "NB_ENDPOINTS";
    /// Host-side veth ifindex -> [`crate::net::IfaceInfo`] of the container behind it
    /// (an array indexed by ifindex, for ifindexes below `net::IFACE_SLOTS`)...
    pub const IFACES: &str = "NB_IFACES";
    /// ...and a hash for the ifindexes above.
    pub const IFACES_BIG: &str = "NB_IFACES_BIG";
    /// Per-network ranges of [`crate::net::PeerInfo`], indexed by address.
    pub const PEERS: &str = "NB_PEERS";

    /// Published ports: [`crate::ports::PortKey`] -> [`crate::ports::PortTarget`].
    pub const PORTS: &str = "NB_PORTS";

    /// Connection tracking of translated flows: [`crate::conntrack::CtKey`] ->
    /// [`crate::conntrack::CtEntry`] (an LRU hash).
    pub const CT: &str = "NB_CT";
    /// The host's own addresses (where a port published on 0.0.0.0 answers).
    pub const LOCAL: &str = "NB_LOCAL";
    /// One [`crate::conntrack::HostConfig`].
    pub const CONFIG: &str = "NB_CONFIG";
    /// Socket cookie -> [`crate::conntrack::SockNat`] (an LRU hash).
    pub const SOCK_NAT: &str = "NB_SOCK_NAT";

    /// Virtual services; see [`crate::service`] for each.
    pub const SERVICES: &str = "NB_SERVICES";
    pub const TABLES: &str = "NB_TABLES";
    pub const BACKENDS: &str = "NB_BACKENDS";
    pub const BE_CONNS: &str = "NB_BE_CONNS";
    pub const BE_GC: &str = "NB_BE_GC";
    pub const BE_TRAFFIC: &str = "NB_BE_TRAFFIC";
    pub const AFFINITY: &str = "NB_AFFINITY";
    pub const SVC_RR: &str = "NB_SVC_RR";

    /// `netbpf monitor`: the event ring buffer and the attached monitor's lease; see
    /// [`crate::monitor`].
    pub const MONITOR: &str = "NB_MONITOR";
    pub const MON_ON: &str = "NB_MON_ON";

    /// Every map the object defines.
    pub const ALL: &[&str] = &[
        AFFINITY, BACKENDS, BE_CONNS, BE_GC, BE_TRAFFIC, CONFIG, CT, ENDPOINTS, IFACES, IFACES_BIG,
        LOCAL, MONITOR, MON_ON, NETWORKS, PEERS, PORTS, SERVICES, SOCK_NAT, STATS, SVC_RR, TABLES,
    ];

    /// Capacities.
    pub const MAX_NETWORKS: u32 = 1024;
    pub const MAX_ENDPOINTS: u32 = 65536;
    pub const MAX_PORTS: u32 = 65536;
    pub const MAX_CT: u32 = 262144;
    pub const MAX_LOCAL: u32 = 1024;
    /// Services, and their ids (1..MAX_SERVICES).
    pub const MAX_SERVICES: u32 = 65536;
    /// Backend ids (1..MAX_BACKENDS), over all services.
    pub const MAX_BACKENDS: u32 = 65536;
    /// `NB_TABLES` entries: room for 10,000 services of 3 backends with Maglev tables,
    /// twice over (a rebuilt table is written beside the one in use).
    pub const MAX_TABLE_ENTRIES: u32 = 1 << 23;
    pub const MAX_AFFINITY: u32 = 65536;
}

/// What the loader fills in of the tc programs for the running kernel: the layout of the
/// kernel's own `struct sk_buff`, which `__sk_buff` does not show (see the kernel side's
/// `skb` module).
pub mod skb {
    /// The helper number the programs call for the kfunc `bpf_cast_to_kern_ctx`: no helper
    /// has it, and the loader turns each such call into the kfunc's. (Rust cannot declare
    /// a kfunc yet: it emits no BTF for extern functions.)
    pub const KERN_CTX_CALL: i32 = 0x4b43_5458;
    /// The read-only global holding the offset in `struct sk_buff` of the byte with
    /// `ip_summed`, plus one (0: unknown, the csum helpers decide).
    pub const CSUM_STATE_AT: &str = "CSUM_STATE_AT";
    /// The read-only global holding `ip_summed`'s bit position in that byte.
    pub const CSUM_STATE_SHIFT: &str = "CSUM_STATE_SHIFT";
}

/// Where netbpf pins its maps and links on bpffs (user space only; shared with the test
/// harness so its cleanup guards find what an instance left behind).
pub mod pin_paths {
    /// Where the kernel's bpf filesystem is conventionally mounted.
    pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
    /// Pin directory of the instance in the namespace netbpf runs in.
    pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/netbpf";
    /// Parent of the pin directories of instances started with `--netns NAME`
    /// (each at `NETNS_PIN_ROOT/NAME`).
    pub const NETNS_PIN_ROOT: &str = "/sys/fs/bpf/netbpf-ns";
}
