//! The container maps: interface -> sender, address -> endpoint. User space writes them;
//! the programs only read. (NB_NETWORKS is user space's record of the networks; the
//! datapath finds what it needs of a network in the interface entry.)

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use netbpf_common::{
    maps::{MAX_ENDPOINTS, MAX_NETWORKS},
    net::{EndpointInfo, IFACE_SLOTS, IfaceInfo, NetworkInfo},
};

#[map]
static NB_IFACES: Array<IfaceInfo> = Array::with_max_entries(IFACE_SLOTS, 0);

#[map]
static NB_IFACES_BIG: HashMap<u32, IfaceInfo> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map]
static NB_ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

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
