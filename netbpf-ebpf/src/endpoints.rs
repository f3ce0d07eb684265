//! The container maps: interface -> sender, address -> endpoint. User space writes them;
//! the programs only read. (NB_NETWORKS is user space's record of the networks; the
//! datapath finds what it needs of a network in the interface entry.)

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use netbpf_common::{
    maps::{MAX_ENDPOINTS, MAX_NETWORKS, MAX_PORTS},
    net::{EndpointInfo, IFACE_SLOTS, IfaceInfo, NO_PEER_SLOTS, NetworkInfo, PEER_SLOTS, PeerInfo},
    ports::{PortKey, PortTarget},
};

#[map]
static NB_IFACES: Array<IfaceInfo> = Array::with_max_entries(IFACE_SLOTS, 0);

#[map]
static NB_IFACES_BIG: HashMap<u32, IfaceInfo> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map]
static NB_ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map]
static NB_PEERS: Array<PeerInfo> = Array::with_max_entries(PEER_SLOTS, 0);

/// Published ports: where a host address (0: any) and port lead.
#[map]
static NB_PORTS: HashMap<PortKey, PortTarget> = HashMap::with_max_entries(MAX_PORTS, 0);

#[map]
static NB_NETWORKS: HashMap<u32, NetworkInfo> = HashMap::with_max_entries(MAX_NETWORKS, 0);

/// The container behind a host-side veth: an array index for the usual small ifindex, a
/// hash lookup beyond.
#[inline(always)]
pub fn iface(ifindex: u32) -> Option<&'static IfaceInfo> {
    let info = if ifindex < IFACE_SLOTS {
        NB_IFACES.get(ifindex)
    } else {
        // SAFETY: map values stay valid for the program's run (RCU).
        unsafe { NB_IFACES_BIG.get(&ifindex) }
    }?;
    (info.addr != 0).then_some(info)
}

#[inline(always)]
pub fn endpoint(addr: u32) -> Option<&'static EndpointInfo> {
    // SAFETY: as above.
    unsafe { NB_ENDPOINTS.get(&addr) }
}

/// What a same-subnet destination may be, found by index in the sender's network range.
pub enum Peer {
    /// The container at that address.
    Found(&'static PeerInfo),
    /// Nobody has that address.
    Nobody,
    /// The network has no range: ask [`endpoint`].
    NoRange,
}

/// The container at `dst` in the sender's own subnet (`dst & own.mask == own.subnet`).
#[inline(always)]
pub fn peer_in_subnet(own: &IfaceInfo, dst: u32) -> Peer {
    if own.peer_base == NO_PEER_SLOTS {
        return Peer::NoRange;
    }
    let host = u32::from_be(dst & !own.mask);
    match NB_PEERS.get(own.peer_base.wrapping_add(host)) {
        Some(peer) if peer.ifindex != 0 => Peer::Found(peer),
        _ => Peer::Nobody,
    }
}

/// Where a published port leads: the entry for the destination address, or for every
/// host address.
#[inline(always)]
pub fn published(addr: u32, port: u16, proto: u8) -> Option<&'static PortTarget> {
    let exact = PortKey {
        addr,
        port,
        proto,
        pad: 0,
    };
    let any = PortKey {
        addr: 0,
        port,
        proto,
        pad: 0,
    };
    // SAFETY: map values stay valid for the program's run (RCU).
    unsafe { NB_PORTS.get(&exact).or_else(|| NB_PORTS.get(&any)) }
}
