//! The container maps: interface -> container address, address -> endpoint, network id ->
//! network. User space writes them; the programs only read.

use aya_ebpf::{macros::map, maps::HashMap};
use netbpf_common::{
    maps::{MAX_ENDPOINTS, MAX_NETWORKS},
    net::{EndpointInfo, NetworkInfo},
};

#[map]
static NB_IFACES: HashMap<u32, u32> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map]
static NB_ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map]
static NB_NETWORKS: HashMap<u32, NetworkInfo> = HashMap::with_max_entries(MAX_NETWORKS, 0);

/// The address of the container behind a host-side veth.
#[inline(always)]
pub fn iface_addr(ifindex: u32) -> Option<u32> {
    // SAFETY: the value is copied out at once; user space may replace it concurrently,
    // which only makes this packet see the old or the new address.
    unsafe { NB_IFACES.get(&ifindex).copied() }
}

#[inline(always)]
pub fn endpoint(addr: u32) -> Option<&'static EndpointInfo> {
    // SAFETY: map values stay valid for the program's run (RCU).
    unsafe { NB_ENDPOINTS.get(&addr) }
}

#[inline(always)]
pub fn network(id: u32) -> Option<&'static NetworkInfo> {
    // SAFETY: as above.
    unsafe { NB_NETWORKS.get(&id) }
}
