//! Container networks: which interface belongs to which container, where each container
//! address lives, and what each network allows. Addresses are IPv4 in network byte order,
//! held as the native `u32` of those four bytes (`u32::from_ne_bytes(octets)`), which is
//! how they sit in a packet.

/// `NetworkInfo::flags`: containers of this network may talk to each other.
pub const NET_ICC: u32 = 1 << 0;
/// `NetworkInfo::flags`: no traffic to or from outside the host.
pub const NET_INTERNAL: u32 = 1 << 1;
/// `NetworkInfo::flags`: outbound traffic is masqueraded (north-south).
pub const NET_MASQUERADE: u32 = 1 << 2;

/// `IfaceInfo::net_flags` (never a network's flag): translated flows lead to the container
/// (it is a backend of some service, or publishes ports), so its packets are looked up in
/// conntrack before the same-network fast path: a reply to a client of its own network
/// gets its translated source back (the VIP, the host's address and port).
pub const IFACE_NAT_TARGET: u32 = 1 << 16;

/// Length of the name fields (NUL-padded; user space only reads them).
pub const NAME_LEN: usize = 32;

/// `NB_NETWORKS` value, keyed by network id (`u32`, never 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    pub subnet: u32,
    pub gateway: u32,
    pub prefix_len: u32,
    pub flags: u32,
    /// First `NB_PEERS` slot of this network's range ([`NO_PEER_SLOTS`]: none).
    pub peer_base: u32,
    pub name: [u8; NAME_LEN],
}

/// Slots of the `NB_PEERS` array. A network whose subnet has at most this many addresses
/// gets a range of them, one slot per address, so that a same-subnet destination is found
/// by index instead of by hash.
pub const PEER_SLOTS: u32 = 1 << 17;
/// `peer_base` of a network without a range (too large, or no room left): its
/// destinations are looked up in `NB_ENDPOINTS`.
pub const NO_PEER_SLOTS: u32 = u32::MAX;

/// `NB_PEERS` value: a container, at slot `peer_base + host part of its address`.
/// `ifindex == 0` marks an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The host-side veth: `bpf_redirect_peer` to it delivers into the container.
    pub ifindex: u32,
    pub network_id: u32,
    pub mac: [u8; 6],
    pub pad: [u8; 2],
}

/// Everything `from_container` needs about the sender, found by the host-side veth's
/// ifindex in one lookup: `NB_IFACES` (an array, for ifindex below [`IFACE_SLOTS`]) or
/// `NB_IFACES_BIG` (a hash, above). `addr == 0` marks an empty array slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceInfo {
    /// The container's address.
    pub addr: u32,
    pub network_id: u32,
    /// The network's subnet, mask and gateway (network byte order) and `NET_*` flags.
    pub subnet: u32,
    pub mask: u32,
    pub gateway: u32,
    pub net_flags: u32,
    /// The container's MAC.
    pub mac: [u8; 6],
    /// The host-side veth's MAC: what ARP for the gateway answers.
    pub host_mac: [u8; 6],
    /// The network's `peer_base` (see [`NetworkInfo::peer_base`]).
    pub peer_base: u32,
}

/// Slots of the `NB_IFACES` array: ifindexes below this are found by index.
pub const IFACE_SLOTS: u32 = 65536;

/// `NB_ENDPOINTS` value, keyed by the container's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The container's MAC (its eth0).
    pub mac: [u8; 6],
    /// The host-side veth's MAC: what ARP for the gateway answers.
    pub host_mac: [u8; 6],
    /// The host-side veth: `bpf_redirect_peer` to it delivers into the container.
    pub ifindex: u32,
    pub network_id: u32,
    /// User space only: a hash of the definition this endpoint was wired from; a change
    /// means the container is wired again.
    pub spec: u32,
    pub name: [u8; NAME_LEN],
}

const _: () = assert!(size_of::<NetworkInfo>() == 52);
const _: () = assert!(size_of::<IfaceInfo>() == 40);
const _: () = assert!(size_of::<PeerInfo>() == 16);
const _: () = assert!(size_of::<EndpointInfo>() == 56);

#[cfg(feature = "user")]
// SAFETY: repr(C), only integers and byte arrays, no padding (sizes asserted above).
unsafe impl aya::Pod for NetworkInfo {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for EndpointInfo {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for IfaceInfo {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for PeerInfo {}

/// A name as stored in a map (truncated to NAME_LEN - 1 bytes, NUL-padded).
pub fn name_bytes(name: &str) -> [u8; NAME_LEN] {
    let mut out = [0u8; NAME_LEN];
    let bytes = name.as_bytes();
    let n = if bytes.len() < NAME_LEN {
        bytes.len()
    } else {
        NAME_LEN - 1
    };
    let mut i = 0;
    while i < n {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// The name stored by [`name_bytes`].
pub fn name_str(bytes: &[u8; NAME_LEN]) -> &str {
    let len = bytes.iter().position(|b| *b == 0).unwrap_or(NAME_LEN);
    core::str::from_utf8(&bytes[..len]).unwrap_or("?")
}
