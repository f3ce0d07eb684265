//! The world the BPF_PROG_TEST_RUN fixtures run in: four networks, seven containers, maps
//! filled as the reconciler would, and the test device (loopback, ifindex 1) standing for
//! the host-side veth of whichever container `own` names.

use std::net::{Ipv4Addr, SocketAddrV4};

use aya::Ebpf;
use netbpf::kernel::maps::ContainerMaps;
use netbpf_common::net::{
    EndpointInfo, IfaceInfo, NET_ICC, NET_INTERNAL, NET_MASQUERADE, NO_PEER_SLOTS, NetworkInfo,
    PeerInfo, name_bytes,
};
use netbpf_tests::packet::Mac;

pub const OWN_IFINDEX: u32 = 1;
pub const HOST_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xa1]);
pub const WEB1_MAC: Mac = Mac([0x02, 0x42, 198, 18, 10, 2]);
pub const WEB2_MAC: Mac = Mac([0x02, 0x42, 198, 18, 10, 3]);
pub const DB_MAC: Mac = Mac([0x02, 0x42, 198, 18, 20, 2]);
pub const DB2_MAC: Mac = Mac([0x02, 0x42, 198, 18, 20, 3]);
pub const Q1_MAC: Mac = Mac([0x02, 0x42, 198, 18, 30, 2]);
pub const Q2_MAC: Mac = Mac([0x02, 0x42, 198, 18, 30, 3]);
pub const I1_MAC: Mac = Mac([0x02, 0x42, 198, 18, 40, 2]);

pub const WEB1: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
pub const WEB2: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);
pub const FRONT_GW: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
pub const DB: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
pub const DB2: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 3);
pub const Q1: Ipv4Addr = Ipv4Addr::new(198, 18, 30, 2);
pub const Q2: Ipv4Addr = Ipv4Addr::new(198, 18, 30, 3);
pub const I1: Ipv4Addr = Ipv4Addr::new(198, 18, 40, 2);
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 7);

pub fn key(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// (id, name, subnet, flags, peer range) of the fixture networks: front and back, quiet
/// (icc off), intern (internal). back and intern have no peer range: their neighbours are
/// found by hash, the path of networks too large for the peer array.
pub const NETWORKS: [(u32, &str, [u8; 4], u32, u32); 4] = [
    (1, "front", [198, 18, 10, 0], NET_ICC | NET_MASQUERADE, 0),
    (2, "back", [198, 18, 20, 0], NET_ICC, NO_PEER_SLOTS),
    (3, "quiet", [198, 18, 30, 0], 0, 256),
    (
        4,
        "intern",
        [198, 18, 40, 0],
        NET_ICC | NET_INTERNAL,
        NO_PEER_SLOTS,
    ),
];

/// (address, MAC, host-side ifindex, network id) of the fixture containers.
pub const ENDPOINTS: [(Ipv4Addr, Mac, u32, u32); 7] = [
    (WEB1, WEB1_MAC, 100, 1),
    (WEB2, WEB2_MAC, 101, 1),
    (DB, DB_MAC, 102, 2),
    (DB2, DB2_MAC, 106, 2),
    (Q1, Q1_MAC, 103, 3),
    (Q2, Q2_MAC, 104, 3),
    (I1, I1_MAC, 105, 4),
];

/// Fills the maps as the reconciler would for the fixture networks and containers.
pub fn fill_maps(ebpf: &mut Ebpf) -> ContainerMaps {
    let mut maps = ContainerMaps::take_from(ebpf).expect("maps");
    for (id, ..) in NETWORKS {
        maps.networks
            .insert(&id, &network(id), 0)
            .expect("insert network");
    }
    for (addr, mac, ifindex, network_id) in ENDPOINTS {
        let info = EndpointInfo {
            mac: mac.0,
            host_mac: HOST_MAC.0,
            ifindex,
            network_id,
            spec: 0,
            name: name_bytes("fixture"),
        };
        maps.endpoints
            .insert(&key(addr), &info, 0)
            .expect("insert endpoint");
        let peer = PeerInfo {
            ifindex,
            network_id,
            mac: mac.0,
            pad: [0; 2],
        };
        maps.set_peer(&network(network_id), addr, &peer)
            .expect("set peer");
    }
    maps
}

pub fn network(id: u32) -> NetworkInfo {
    let (_, name, subnet, flags, peer_base) = NETWORKS
        .iter()
        .find(|n| n.0 == id)
        .copied()
        .expect("known network");
    NetworkInfo {
        subnet: u32::from_ne_bytes(subnet),
        gateway: u32::from_ne_bytes([subnet[0], subnet[1], subnet[2], 1]),
        prefix_len: 24,
        flags,
        peer_base,
        name: name_bytes(name),
    }
}

/// Puts the container `own` behind the test device (or nobody, with `None`).
pub fn own(maps: &mut ContainerMaps, own: Option<Ipv4Addr>) {
    own_with_flags(maps, own, 0);
}

/// As [`own`], with interface flags beside the network's (e.g. a service backend's).
pub fn own_with_flags(maps: &mut ContainerMaps, own: Option<Ipv4Addr>, flags: u32) {
    let Some(addr) = own else {
        maps.clear_iface(OWN_IFINDEX).expect("clear iface");
        return;
    };
    let (_, mac, _, network_id) = ENDPOINTS
        .iter()
        .find(|e| e.0 == addr)
        .copied()
        .expect("known container");
    let net = network(network_id);
    let info = IfaceInfo {
        addr: key(addr),
        network_id,
        subnet: net.subnet,
        mask: u32::from_ne_bytes([255, 255, 255, 0]),
        gateway: net.gateway,
        net_flags: net.flags | flags,
        mac: mac.0,
        host_mac: HOST_MAC.0,
        peer_base: net.peer_base,
    };
    maps.set_iface(OWN_IFINDEX, &info).expect("set iface");
}

pub fn sock(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}
