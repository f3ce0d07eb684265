//! The decision over constructed map contents: one test per path of the programs.

use std::{
    cell::Cell,
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4},
};

use netbpf_common::{
    conntrack::{
        CT_HAIRPIN_REPLY, CT_MASQ_OUT, CT_MASQ_REPLY, CT_PUBLISHED_IN, CT_PUBLISHED_REPLY,
        CT_SERVICE, CT_SERVICE_REPLY, CT_SERVICE_REPLY_OUT, CtEntry, CtKey, HostConfig,
        MASQ_REPLY_CHECK_TICKS, TCP_CLOSING, TCP_ESTABLISHED,
    },
    net::{
        EndpointInfo, IFACE_NAT_TARGET, IfaceInfo, NET_ICC, NET_INTERNAL, NET_MASQUERADE,
        NetworkInfo, PeerInfo, name_bytes,
    },
    ports::{PortKey, PortTarget},
    service::{
        Affinity, AffinityKey, Backend, BackendConns, SVC_EXTERNAL, Scheduler, Service, ServiceKey,
        flow_hash,
    },
    stats::{Hook, Outcome},
};

use super::{
    Explanation, Maps, Origin, Packet, Protocol, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
    decide::explain, parse_endpoint, parse_tcp_flags,
};
use crate::{Result, kernel::maps::addr_key};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("address")
}

fn k(s: &str) -> u32 {
    addr_key(ip(s))
}

fn be(port: u16) -> u16 {
    port.to_be()
}

/// Map contents, as the datapath would find them. Counts every lookup, so a test can
/// check that an unrelated map was never read.
#[derive(Default)]
struct Snap {
    ifaces: HashMap<u32, IfaceInfo>,
    peers: HashMap<u32, PeerInfo>,
    endpoints: HashMap<u32, EndpointInfo>,
    networks: HashMap<u32, NetworkInfo>,
    ports: HashMap<PortKey, PortTarget>,
    local: Vec<u32>,
    config: Option<HostConfig>,
    services: HashMap<ServiceKey, Service>,
    tables: HashMap<u32, u32>,
    backends: HashMap<u32, Backend>,
    conns: HashMap<u32, BackendConns>,
    gc: HashMap<u32, u64>,
    rr: HashMap<u32, u64>,
    affinity: HashMap<AffinityKey, Affinity>,
    ct: HashMap<CtKey, CtEntry>,
    ct_lookups: Cell<usize>,
}

impl Maps for Snap {
    fn iface(&self, ifindex: u32) -> Result<Option<IfaceInfo>> {
        Ok(self.ifaces.get(&ifindex).copied())
    }
    fn peer(&self, slot: u32) -> Result<Option<PeerInfo>> {
        // An array: every slot in range exists, empty ones zeroed.
        Ok(Some(self.peers.get(&slot).copied().unwrap_or_default()))
    }
    fn endpoint(&self, addr: u32) -> Result<Option<EndpointInfo>> {
        Ok(self.endpoints.get(&addr).copied())
    }
    fn network(&self, id: u32) -> Result<Option<NetworkInfo>> {
        Ok(self.networks.get(&id).copied())
    }
    fn port(&self, key: &PortKey) -> Result<Option<PortTarget>> {
        Ok(self.ports.get(key).copied())
    }
    fn is_local(&self, addr: u32) -> Result<bool> {
        Ok(self.local.contains(&addr))
    }
    fn host_config(&self) -> Result<Option<HostConfig>> {
        Ok(Some(self.config.unwrap_or_default()))
    }
    fn service(&self, key: &ServiceKey) -> Result<Option<Service>> {
        Ok(self.services.get(key).copied())
    }
    fn service_name(&self, _svc: &Service) -> Result<Option<String>> {
        Ok(Some("web".to_owned()))
    }
    fn table(&self, index: u32) -> Result<Option<u32>> {
        Ok(Some(self.tables.get(&index).copied().unwrap_or(0)))
    }
    fn backend(&self, id: u32) -> Result<Option<Backend>> {
        Ok(Some(self.backends.get(&id).copied().unwrap_or_default()))
    }
    fn conns(&self, id: u32) -> Result<Option<BackendConns>> {
        Ok(Some(self.conns.get(&id).copied().unwrap_or_default()))
    }
    fn expired(&self, id: u32) -> Result<Option<u64>> {
        Ok(Some(self.gc.get(&id).copied().unwrap_or(0)))
    }
    fn rr_position(&self, service_id: u32) -> Result<Option<u64>> {
        Ok(Some(self.rr.get(&service_id).copied().unwrap_or(0)))
    }
    fn affinity(&self, key: &AffinityKey) -> Result<Option<Affinity>> {
        Ok(self.affinity.get(key).copied())
    }
    fn conntrack(&self, key: &CtKey) -> Result<Option<CtEntry>> {
        self.ct_lookups.set(self.ct_lookups.get() + 1);
        Ok(self.ct.get(key).copied())
    }
    fn ifname(&self, ifindex: u32) -> Option<String> {
        Some(format!("if{ifindex}"))
    }
}

/// The kernel's jiffies at the explained packet.
const TICKS: u64 = 5_000_000;
const FRONT: u32 = 1;
const BACK: u32 = 2;
const CLIENT: &str = "198.18.10.2";
const CLIENT_IF: u32 = 10;
const OTHER: &str = "198.18.20.2";
const OTHER_IF: u32 = 20;
const VIP: &str = "198.18.200.10";
const UPLINK: &str = "198.18.0.1";
const UPLINK_IF: u32 = 2;
const OUTSIDE: &str = "198.18.0.2";
/// Backends b1..b3 at 198.18.10.3.. behind ifindex 11.., ids 1..3.
const BACKENDS: [(&str, u32); 3] = [
    ("198.18.10.3", 11),
    ("198.18.10.4", 12),
    ("198.18.10.5", 13),
];
const TABLE_AT: u32 = 100;

fn mac(last: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, last]
}

impl Snap {
    /// Two networks (front: icc, a peer range at 0; back: a range at 256), a client in
    /// each, three backends in front, the uplink's address local, a port range.
    fn lab() -> Snap {
        let mut s = Snap::default();
        s.add_network(FRONT, "front", "198.18.10.0", 24, NET_ICC, 0);
        s.add_network(BACK, "back", "198.18.20.0", 24, NET_ICC, 256);
        s.container("client", CLIENT, CLIENT_IF, FRONT);
        s.container("other", OTHER, OTHER_IF, BACK);
        for (i, (addr, ifindex)) in BACKENDS.iter().enumerate() {
            s.container(&format!("b{}", i + 1), addr, *ifindex, FRONT);
        }
        s.local.push(k(UPLINK));
        s.config = Some(HostConfig {
            masq_port_min: 32768,
            masq_port_max: 60999,
            ..HostConfig::default()
        });
        s
    }

    fn add_network(&mut self, id: u32, name: &str, subnet: &str, len: u32, flags: u32, base: u32) {
        self.networks.insert(
            id,
            NetworkInfo {
                subnet: k(subnet),
                gateway: addr_key(Ipv4Addr::from(u32::from(ip(subnet)) + 1)),
                prefix_len: len,
                flags,
                peer_base: base,
                name: name_bytes(name),
            },
        );
    }

    fn container(&mut self, name: &str, addr: &str, ifindex: u32, network: u32) {
        let n = self.networks[&network];
        let mask = (u32::MAX << (32 - n.prefix_len)).to_be();
        let last = ip(addr).octets()[3];
        self.ifaces.insert(
            ifindex,
            IfaceInfo {
                addr: k(addr),
                network_id: network,
                subnet: n.subnet,
                mask,
                gateway: n.gateway,
                net_flags: n.flags,
                mac: mac(last),
                host_mac: mac(0xee),
                peer_base: n.peer_base,
            },
        );
        self.peers.insert(
            n.peer_base + u32::from(last),
            PeerInfo {
                ifindex,
                network_id: network,
                mac: mac(last),
                pad: [0; 2],
            },
        );
        self.endpoints.insert(
            k(addr),
            EndpointInfo {
                mac: mac(last),
                host_mac: mac(0xee),
                ifindex,
                network_id: network,
                spec: 0,
                name: name_bytes(name),
            },
        );
    }

    fn set_flags(&mut self, ifindex: u32, flags: u32) {
        if let Some(i) = self.ifaces.get_mut(&ifindex) {
            i.net_flags = flags;
        }
    }

    /// A service at VIP:80/tcp over backends 1..=weights.len() with these weights, its
    /// table as given.
    fn add_service(&mut self, scheduler: Scheduler, weights: &[u16], table: &[u32]) -> Service {
        let ids: Vec<u32> = (1..=weights.len() as u32)
            .filter(|id| weights[*id as usize - 1] != 0)
            .collect();
        for (i, w) in weights.iter().enumerate() {
            let id = i as u32 + 1;
            self.backends.insert(
                id,
                Backend {
                    addr: k(BACKENDS[i].0),
                    port: be(8080),
                    weight: *w,
                    service_id: 1,
                },
            );
        }
        for (i, id) in ids.iter().chain(table).enumerate() {
            self.tables.insert(TABLE_AT + i as u32, *id);
        }
        let svc = Service {
            id: 1,
            scheduler: scheduler as u8,
            flags: 0,
            count: ids.len() as u16,
            table: TABLE_AT,
            table_len: table.len() as u32,
            persistence_secs: 0,
            persistence_mask: u32::MAX,
        };
        self.services.insert(
            ServiceKey {
                vip: k(VIP),
                port: be(80),
                proto: 6,
                pad: 0,
            },
            svc,
        );
        svc
    }

    fn update_service(&mut self, f: impl Fn(&mut Service)) {
        for svc in self.services.values_mut() {
            f(svc);
        }
    }

    fn uplink(&mut self) {
        if let Some(c) = &mut self.config {
            c.uplink_ifindex = UPLINK_IF;
            c.uplink_addr = k(UPLINK);
        }
    }
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Packet {
    Packet {
        proto: Protocol::Tcp,
        src: SocketAddrV4::new(ip(src), sport),
        dst: SocketAddrV4::new(ip(dst), dport),
        tcp_flags: flags,
    }
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Packet {
    Packet {
        proto: Protocol::Udp,
        src: SocketAddrV4::new(ip(src), sport),
        dst: SocketAddrV4::new(ip(dst), dport),
        tcp_flags: 0,
    }
}

fn from(name: &str, ifindex: u32) -> Origin {
    Origin::Container {
        name: name.to_owned(),
        ifindex,
    }
}

fn tc_uplink() -> Origin {
    Origin::Uplink {
        hook: Hook::FromUplink,
        ifindex: UPLINK_IF,
        then_tc: false,
    }
}

fn run(s: &Snap, p: &Packet, origin: &Origin) -> Explanation {
    explain(s, p, origin, 1_000_000_000_000, TICKS).expect("explains")
}

fn assert_outcome(e: &Explanation, outcome: Outcome) {
    assert_eq!(e.outcome, Some(outcome.name()), "{e:#?}");
    assert_eq!(e.drop, outcome.is_drop());
}

fn translation(e: &Explanation) -> (String, String) {
    let t = e.translation.as_ref().expect("translated");
    (
        t.src.clone().unwrap_or_default(),
        t.dst.clone().unwrap_or_default(),
    )
}

fn delivered_to(e: &Explanation) -> (&'static str, Option<u32>) {
    let d = e.delivery.as_ref().expect("delivered");
    (d.via, d.ifindex)
}

fn stages(e: &Explanation) -> Vec<&'static str> {
    e.steps.iter().map(|s| s.stage).collect()
}

#[test]
fn same_network_forward_by_peer_slot() {
    let s = Snap::lab();
    let e = run(
        &s,
        &tcp(CLIENT, 40000, BACKENDS[0].0, 80, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::Forward);
    assert_eq!(e.program, Some("from_container"));
    assert_eq!(delivered_to(&e), ("redirect_peer", Some(11)));
    assert_eq!(
        e.delivery.as_ref().and_then(|d| d.container.as_deref()),
        Some("b1")
    );
    assert_eq!(e.translation, None);
    assert_eq!(stages(&e), ["iface", "source", "source", "peer", "deliver"]);
    // The fast path comes before conntrack: no conntrack lookup at all.
    assert_eq!(s.ct_lookups.get(), 0);
    assert!(e.effects.is_empty());
}

#[test]
fn cross_network_icc_and_unknown_destinations() {
    let mut s = Snap::lab();
    let e = run(
        &s,
        &udp(CLIENT, 5000, OTHER, 53),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::DropCrossNetwork);
    assert_eq!(e.delivery, None);
    assert_eq!(e.steps.last().map(|s| s.stage), Some("deliver"));

    let e = run(
        &s,
        &udp(CLIENT, 5000, "198.18.10.77", 53),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::DropNoEndpoint);
    let e = run(
        &s,
        &udp(CLIENT, 5000, "198.18.10.255", 53),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::DropNotUnicast);

    s.set_flags(CLIENT_IF, 0);
    let e = run(
        &s,
        &udp(CLIENT, 5000, BACKENDS[1].0, 53),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::DropIcc);

    // A network without a peer range: the endpoint hash.
    s.set_flags(CLIENT_IF, NET_ICC);
    s.ifaces.get_mut(&CLIENT_IF).expect("client").peer_base = u32::MAX;
    let e = run(
        &s,
        &udp(CLIENT, 5000, BACKENDS[1].0, 53),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::Forward);
    assert_eq!(delivered_to(&e), ("redirect_peer", Some(12)));
}

#[test]
fn spoofed_and_unknown_senders() {
    let s = Snap::lab();
    let e = run(
        &s,
        &udp(BACKENDS[0].0, 5000, BACKENDS[1].0, 53),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::DropSpoofedIp);
    assert_eq!(e.steps.len(), 3, "{e:#?}");
    let e = run(&s, &udp(CLIENT, 5000, OTHER, 53), &from("gone", 99));
    assert_outcome(&e, Outcome::DropUnknownSource);

    // From outside, a host address as the source is forged.
    let e = run(&s, &tcp(UPLINK, 1000, UPLINK, 8080, TCP_SYN), &tc_uplink());
    assert_outcome(&e, Outcome::DropSpoofedIp);
    assert_eq!(e.program, Some("from_uplink"));
}

#[test]
fn round_robin_takes_the_next_turn() {
    let mut s = Snap::lab();
    s.add_service(Scheduler::Rr, &[1, 1, 1], &[1, 2, 3]);
    s.rr.insert(1, 4);
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::Service);
    let b = e.backend.as_ref().expect("backend");
    // Position 4: the datapath adds 1 and takes (5 - 1) mod 3 = 1: the second entry.
    assert_eq!((b.id, b.slot, b.chosen_by), (2, Some(1), "rr"));
    assert_eq!(b.container.as_deref(), Some("b2"));
    assert_eq!(
        translation(&e),
        (format!("{CLIENT}:40000"), format!("{}:8080", BACKENDS[1].0))
    );
    assert_eq!(delivered_to(&e), ("redirect_peer", Some(12)));
    assert!(
        e.effects.iter().any(|x| x == "NB_SVC_RR[1]: 4 -> 5"),
        "{e:#?}"
    );
    assert!(e.effects.iter().any(|x| x == "NB_BE_CONNS[2].opened + 1"));
    let svc = e.service.as_ref().expect("service");
    assert_eq!((svc.id, svc.scheduler.as_str(), svc.count), (1, "rr", 3));
}

#[test]
fn weighted_round_robin_reads_the_sequence() {
    let mut s = Snap::lab();
    // 3:1 interleaved: 1 1 2 1 (what plan::sched builds for weights 3 and 1).
    s.add_service(Scheduler::Wrr, &[3, 1], &[1, 1, 2, 1]);
    for (position, id) in [(0, 1), (1, 1), (2, 2), (3, 1), (6, 2)] {
        s.rr.insert(1, position);
        let e = run(
            &s,
            &tcp(CLIENT, 40000, VIP, 80, TCP_SYN),
            &from("client", CLIENT_IF),
        );
        let b = e.backend.as_ref().expect("backend");
        assert_eq!(
            (b.id, b.slot),
            (id, Some((position % 4) as u32)),
            "position {position}"
        );
        assert_eq!(b.chosen_by, "wrr");
    }
}

#[test]
fn maglev_hashes_the_client_to_a_slot() {
    let mut s = Snap::lab();
    let table: Vec<u32> = (0..7).map(|i| i % 3 + 1).collect();
    for scheduler in [Scheduler::Mh, Scheduler::Sh, Scheduler::Dh] {
        s.add_service(scheduler, &[1, 1, 1], &table);
        let e = run(
            &s,
            &tcp(CLIENT, 40000, VIP, 80, TCP_SYN),
            &from("client", CLIENT_IF),
        );
        let hashed = if scheduler == Scheduler::Dh {
            VIP
        } else {
            CLIENT
        };
        let slot = flow_hash(k(hashed)) % 7;
        let b = e.backend.as_ref().expect("backend");
        assert_eq!(b.slot, Some(slot), "{}", scheduler.name());
        assert_eq!(b.id, table[slot as usize]);
        assert_eq!(b.chosen_by, scheduler.name());
        // Hashing moves no state.
        assert!(!e.effects.iter().any(|x| x.starts_with("NB_SVC_RR")));
    }
}

#[test]
fn least_connections_counts_active_flows() {
    let mut s = Snap::lab();
    s.add_service(Scheduler::Lc, &[1, 1, 1], &[1, 2, 3]);
    s.conns.insert(
        1,
        BackendConns {
            opened: 5,
            closed: 1,
        },
    );
    s.conns.insert(
        2,
        BackendConns {
            opened: 3,
            closed: 0,
        },
    );
    s.gc.insert(2, 1);
    s.conns.insert(
        3,
        BackendConns {
            opened: 2,
            closed: 0,
        },
    );
    // Active: 4, 2, 2: a tie goes to the first.
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    let b = e.backend.as_ref().expect("backend");
    assert_eq!((b.id, b.active, b.chosen_by), (2, Some(2), "lc"));

    // wlc: 4/1, 2/1, 2/3: the third.
    s.add_service(Scheduler::Wlc, &[1, 1, 3], &[1, 2, 3]);
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    assert_eq!(e.backend.as_ref().map(|b| b.id), Some(3));
}

#[test]
fn random_lists_the_candidates() {
    let mut s = Snap::lab();
    s.add_service(Scheduler::Random, &[3, 1], &[1, 1, 2, 1]);
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::Service);
    assert_eq!(e.backend, None);
    let shares: Vec<(u32, Option<u32>)> = e
        .candidates
        .iter()
        .map(|c| (c.id, c.table_entries))
        .collect();
    assert_eq!(shares, [(1, Some(3)), (2, Some(1))]);
    assert_eq!(e.translation.as_ref().and_then(|t| t.dst.clone()), None);
}

#[test]
fn persistence_returns_to_a_live_affinity() {
    let mut s = Snap::lab();
    s.add_service(Scheduler::Rr, &[1, 1, 1], &[1, 2, 3]);
    s.update_service(|svc| {
        svc.persistence_secs = 300;
        svc.persistence_mask = (u32::MAX << 8).to_be();
    });
    let key = AffinityKey {
        service_id: 1,
        client: k("198.18.10.0"),
    };
    let now = 1_000_000_000_000u64;
    s.affinity.insert(
        key,
        Affinity {
            backend_id: 3,
            pad: 0,
            last_seen: now - 10_000_000_000,
        },
    );
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    let b = e.backend.as_ref().expect("backend");
    assert_eq!((b.id, b.chosen_by), (3, "persistence"));
    assert!(!e.effects.iter().any(|x| x.starts_with("NB_SVC_RR")));

    // Expired: the scheduler chooses, and the affinity would be replaced.
    s.affinity.insert(
        key,
        Affinity {
            backend_id: 3,
            pad: 0,
            last_seen: now - 301_000_000_000,
        },
    );
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    let b = e.backend.as_ref().expect("backend");
    assert_eq!((b.id, b.chosen_by), (1, "rr"));
    assert!(
        e.effects
            .iter()
            .any(|x| x.starts_with("NB_AFFINITY service #1 client 198.18.10.0: backend #1")),
        "{e:#?}"
    );
}

#[test]
fn services_without_backends_refuse() {
    let mut s = Snap::lab();
    s.add_service(Scheduler::Rr, &[0], &[]);
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::ServiceReset);
    assert_eq!(delivered_to(&e), ("redirect", Some(CLIENT_IF)));
    assert_eq!(
        translation(&e),
        (format!("{VIP}:80"), format!("{CLIENT}:40000"))
    );
    // A reset is never answered.
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_RST),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::DropNoBackend);

    // With backends, a non-SYN of no recorded flow is refused too.
    s.add_service(Scheduler::Rr, &[1], &[1]);
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_ACK),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::ServiceReset);

    // UDP: port unreachable.
    let mut svc = s.services.values().next().copied().expect("service");
    svc.count = 0;
    s.services.insert(
        ServiceKey {
            vip: k(VIP),
            port: be(53),
            proto: 17,
            pad: 0,
        },
        svc,
    );
    let e = run(&s, &udp(CLIENT, 5000, VIP, 53), &from("client", CLIENT_IF));
    assert_outcome(&e, Outcome::ServiceUnreachable);
}

fn service_flow(s: &mut Snap, backend_id: u32, state: u8) -> CtKey {
    let key = CtKey {
        saddr: k(CLIENT),
        daddr: k(VIP),
        sport: be(40000),
        dport: be(80),
        proto: 6,
        pad: [0; 3],
    };
    let (addr, ifindex) = BACKENDS[backend_id as usize - 1];
    s.ct.insert(
        key,
        CtEntry {
            nat_addr: k(addr),
            nat_port: be(8080),
            kind: CT_SERVICE,
            tcp_state: state,
            ifindex,
            packets: 7,
            backend_id,
            ..CtEntry::default()
        },
    );
    s.ct.insert(
        CtKey {
            saddr: k(addr),
            daddr: k(CLIENT),
            sport: be(8080),
            dport: be(40000),
            proto: 6,
            pad: [0; 3],
        },
        CtEntry {
            nat_addr: k(VIP),
            nat_port: be(80),
            kind: CT_SERVICE_REPLY,
            tcp_state: state,
            ifindex: CLIENT_IF,
            backend_id,
            ..CtEntry::default()
        },
    );
    key
}

#[test]
fn recorded_service_flows_follow_their_entry() {
    let mut s = Snap::lab();
    s.add_service(Scheduler::Rr, &[1, 1], &[1, 2]);
    service_flow(&mut s, 2, TCP_ESTABLISHED);
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_ACK),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::Service);
    let b = e.backend.as_ref().expect("backend");
    assert_eq!((b.id, b.chosen_by), (2, "conntrack"));
    let ct = e.conntrack.as_ref().expect("conntrack");
    assert_eq!(
        (ct.kind, ct.tcp_state, ct.packets),
        ("service", "established", 7)
    );
    // No scheduling for a recorded flow.
    assert!(e.service.is_none());
    assert!(!e.effects.iter().any(|x| x.starts_with("NB_SVC_RR")));

    // The backend's reply: the VIP restored, into the client.
    s.set_flags(12, NET_ICC | IFACE_NAT_TARGET);
    let e = run(
        &s,
        &tcp(BACKENDS[1].0, 8080, CLIENT, 40000, TCP_SYN | TCP_ACK),
        &from("b2", 12),
    );
    assert_outcome(&e, Outcome::ServiceReply);
    assert_eq!(
        translation(&e),
        (format!("{VIP}:80"), format!("{CLIENT}:40000"))
    );
    assert_eq!(delivered_to(&e), ("redirect_peer", Some(CLIENT_IF)));

    // The backend removed: the flow is forgotten and reset.
    s.backends.remove(&2);
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_ACK),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::ServiceReset);
    assert!(
        e.effects.iter().any(|x| x.contains("removed")),
        "{:#?}",
        e.effects
    );

    // A FIN closes it: counted as closed for lc.
    s.backends.insert(
        2,
        Backend {
            addr: k(BACKENDS[1].0),
            port: be(8080),
            weight: 1,
            service_id: 1,
        },
    );
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_FIN | TCP_ACK),
        &from("client", CLIENT_IF),
    );
    assert!(
        e.effects
            .iter()
            .any(|x| x.contains("state -> closing (NB_BE_CONNS[2].closed + 1)")),
        "{:#?}",
        e.effects
    );
}

#[test]
fn a_syn_on_a_closing_flow_starts_anew() {
    let mut s = Snap::lab();
    s.add_service(Scheduler::Rr, &[1, 1], &[1, 2]);
    service_flow(&mut s, 2, TCP_CLOSING);
    s.rr.insert(1, 0);
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    // Forgotten, then scheduled anew: rr position 0 is backend 1 (the old flow's reply
    // entry is gone too, so creating the new one finds its reply key free).
    assert_outcome(&e, Outcome::Service);
    let b = e.backend.as_ref().expect("backend");
    assert_eq!((b.id, b.chosen_by), (1, "rr"));
    assert!(e.effects[0].starts_with("NB_CT: tcp 198.18.10.2:40000 -> 198.18.200.10:80"));
}

#[test]
fn published_port_from_outside_at_tc_and_xdp() {
    let mut s = Snap::lab();
    s.uplink();
    s.ports.insert(
        PortKey {
            addr: 0,
            port: be(8080),
            proto: 6,
            pad: 0,
        },
        PortTarget {
            addr: k(BACKENDS[0].0),
            port: be(80),
            pad: 0,
            network_id: FRONT,
        },
    );
    let p = tcp(OUTSIDE, 50000, UPLINK, 8080, TCP_SYN);
    let e = run(&s, &p, &tc_uplink());
    assert_outcome(&e, Outcome::Published);
    assert_eq!(
        translation(&e),
        (format!("{OUTSIDE}:50000"), format!("{}:80", BACKENDS[0].0))
    );
    assert_eq!(delivered_to(&e), ("redirect_peer", Some(11)));
    assert!(e.effects.iter().any(|x| x.contains("published_reply")));

    let xdp = Origin::Uplink {
        hook: Hook::XdpUplink,
        ifindex: UPLINK_IF,
        then_tc: true,
    };
    let e = run(&s, &p, &xdp);
    assert_outcome(&e, Outcome::Published);
    assert_eq!(e.program, Some("xdp_uplink"));
    assert_eq!(delivered_to(&e), ("redirect", Some(11)));

    // Not a SYN and no flow: the host's. Not published: the host's.
    let e = run(
        &s,
        &tcp(OUTSIDE, 50000, UPLINK, 8080, TCP_ACK),
        &tc_uplink(),
    );
    assert_outcome(&e, Outcome::Pass);
    let e = run(&s, &tcp(OUTSIDE, 50000, UPLINK, 22, TCP_SYN), &tc_uplink());
    assert_outcome(&e, Outcome::Pass);

    // A recorded flow: its entry, whatever the flags.
    s.ct.insert(
        CtKey {
            saddr: k(OUTSIDE),
            daddr: k(UPLINK),
            sport: be(50000),
            dport: be(8080),
            proto: 6,
            pad: [0; 3],
        },
        CtEntry {
            nat_addr: k(BACKENDS[0].0),
            nat_port: be(80),
            kind: CT_PUBLISHED_IN,
            tcp_state: TCP_ESTABLISHED,
            ifindex: 11,
            ..CtEntry::default()
        },
    );
    let e = run(
        &s,
        &tcp(OUTSIDE, 50000, UPLINK, 8080, TCP_ACK),
        &tc_uplink(),
    );
    assert_outcome(&e, Outcome::Published);
    assert_eq!(e.conntrack.as_ref().map(|c| c.kind), Some("published"));

    // The container's reply leaves as the host's address.
    s.ct.insert(
        CtKey {
            saddr: k(BACKENDS[0].0),
            daddr: k(OUTSIDE),
            sport: be(80),
            dport: be(50000),
            proto: 6,
            pad: [0; 3],
        },
        CtEntry {
            nat_addr: k(UPLINK),
            nat_port: be(8080),
            kind: CT_PUBLISHED_REPLY,
            ifindex: UPLINK_IF,
            ..CtEntry::default()
        },
    );
    let e = run(
        &s,
        &tcp(BACKENDS[0].0, 80, OUTSIDE, 50000, TCP_SYN | TCP_ACK),
        &from("b1", 11),
    );
    assert_outcome(&e, Outcome::PublishedReply);
    assert_eq!(delivered_to(&e), ("redirect_neigh", Some(UPLINK_IF)));
    assert_eq!(
        translation(&e),
        (format!("{UPLINK}:8080"), format!("{OUTSIDE}:50000"))
    );
}

#[test]
fn external_services_from_outside() {
    let mut s = Snap::lab();
    s.uplink();
    s.add_service(Scheduler::Mh, &[1, 1, 1], &[1, 2, 3, 1, 2, 3, 1]);
    let p = tcp(OUTSIDE, 50000, VIP, 80, TCP_SYN);
    // Not external: not for outside.
    let e = run(&s, &p, &tc_uplink());
    assert_outcome(&e, Outcome::Pass);
    s.update_service(|svc| svc.flags = SVC_EXTERNAL);
    let e = run(&s, &p, &tc_uplink());
    assert_outcome(&e, Outcome::Service);
    let slot = flow_hash(k(OUTSIDE)) % 7;
    assert_eq!(e.backend.as_ref().and_then(|b| b.slot), Some(slot));
    assert!(e.effects.iter().any(|x| x.contains("service_reply_out")));
}

#[test]
fn hairpin_gateway_masquerade_and_internal() {
    let mut s = Snap::lab();
    s.uplink();
    s.ports.insert(
        PortKey {
            addr: 0,
            port: be(8080),
            proto: 6,
            pad: 0,
        },
        PortTarget {
            addr: k(BACKENDS[0].0),
            port: be(80),
            pad: 0,
            network_id: FRONT,
        },
    );
    let e = run(
        &s,
        &tcp(CLIENT, 40000, UPLINK, 8080, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::Hairpin);
    // Only the destination changes: the server sees the client.
    assert_eq!(
        translation(&e),
        (format!("{CLIENT}:40000"), format!("{}:80", BACKENDS[0].0))
    );
    assert_eq!(delivered_to(&e), ("redirect_peer", Some(11)));

    // The server's reply (its veth flagged): the host's address and port restored.
    s.set_flags(BACKENDS[0].1, NET_ICC | IFACE_NAT_TARGET);
    s.ct.insert(
        CtKey {
            saddr: k(BACKENDS[0].0),
            daddr: k(CLIENT),
            sport: be(80),
            dport: be(40000),
            proto: 6,
            pad: [0; 3],
        },
        CtEntry {
            nat_addr: k(CLIENT),
            nat_port: be(40000),
            rev_addr: k(UPLINK),
            rev_port: be(8080),
            kind: CT_HAIRPIN_REPLY,
            tcp_state: TCP_ESTABLISHED,
            ifindex: CLIENT_IF,
            ..CtEntry::default()
        },
    );
    let e = run(
        &s,
        &tcp(BACKENDS[0].0, 80, CLIENT, 40000, TCP_SYN | TCP_ACK),
        &from("b1", BACKENDS[0].1),
    );
    assert_outcome(&e, Outcome::Hairpin);
    assert_eq!(
        translation(&e),
        (format!("{UPLINK}:8080"), format!("{CLIENT}:40000"))
    );
    assert_eq!(delivered_to(&e), ("redirect_peer", Some(CLIENT_IF)));

    // The server to its own published port: its source becomes the gateway and a port.
    let e = run(
        &s,
        &tcp(BACKENDS[0].0, 41000, UPLINK, 8080, TCP_SYN),
        &from("b1", BACKENDS[0].1),
    );
    assert_outcome(&e, Outcome::Hairpin);
    assert_eq!(
        translation(&e),
        ("198.18.10.1:*".to_owned(), format!("{}:80", BACKENDS[0].0))
    );

    // The gateway itself, a port nobody published: the host's.
    let e = run(
        &s,
        &tcp(CLIENT, 40000, "198.18.10.1", 22, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::Pass);

    // Outside, without masquerade: routed by the host; with it: translated.
    let e = run(
        &s,
        &udp(CLIENT, 5000, "198.18.1.9", 53),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::Pass);
    s.set_flags(CLIENT_IF, NET_ICC | NET_MASQUERADE);
    let e = run(
        &s,
        &udp(CLIENT, 5000, "198.18.1.9", 53),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::Masquerade);
    assert_eq!(
        translation(&e),
        (format!("{UPLINK}:*"), "198.18.1.9:53".to_owned())
    );
    assert_eq!(delivered_to(&e), ("redirect_neigh", Some(UPLINK_IF)));

    // An established masqueraded flow without its reply entry (evicted), checked a
    // moment ago: not checked again yet.
    let key = CtKey {
        saddr: k(CLIENT),
        daddr: k("198.18.1.9"),
        sport: be(5000),
        dport: be(53),
        proto: 17,
        pad: [0; 3],
    };
    let out = CtEntry {
        nat_addr: k(UPLINK),
        nat_port: be(40001),
        kind: CT_MASQ_OUT,
        ifindex: UPLINK_IF,
        reply_checked: TICKS as u32 - 3,
        ..CtEntry::default()
    };
    s.ct.insert(key, out);
    let packet = udp(CLIENT, 5000, "198.18.1.9", 53);
    let e = run(&s, &packet, &from("client", CLIENT_IF));
    assert_outcome(&e, Outcome::Masquerade);
    assert_eq!(translation(&e).0, format!("{UPLINK}:40001"));
    assert!(
        e.steps
            .iter()
            .any(|x| x.detail.contains("checked 3 ticks ago")),
        "{:?}",
        e.steps
    );
    assert!(!e.effects.iter().any(|x| x.contains("recorded again")));
    // Due for its check: the reply entry is recorded again.
    s.ct.insert(
        key,
        CtEntry {
            reply_checked: TICKS as u32 - MASQ_REPLY_CHECK_TICKS,
            ..out
        },
    );
    let e = run(&s, &packet, &from("client", CLIENT_IF));
    assert_outcome(&e, Outcome::Masquerade);
    assert!(e.effects.iter().any(|x| x.contains("recorded again")));
    // Due, and another container's flow to the same destination took the port: given up.
    let reply_key = CtKey {
        saddr: k("198.18.1.9"),
        daddr: k(UPLINK),
        sport: be(53),
        dport: be(40001),
        proto: 17,
        pad: [0; 3],
    };
    s.ct.insert(
        reply_key,
        CtEntry {
            nat_addr: k(OTHER),
            nat_port: be(5000),
            kind: CT_MASQ_REPLY,
            ..CtEntry::default()
        },
    );
    let e = run(&s, &packet, &from("client", CLIENT_IF));
    assert_outcome(&e, Outcome::DropNatFailed);
    assert!(
        e.steps
            .iter()
            .any(|x| x.detail.contains("another flow took"))
    );
    // Its own reply entry there: on its way.
    s.ct.insert(
        reply_key,
        CtEntry {
            nat_addr: k(CLIENT),
            nat_port: be(5000),
            kind: CT_MASQ_REPLY,
            ..CtEntry::default()
        },
    );
    let e = run(&s, &packet, &from("client", CLIENT_IF));
    assert_outcome(&e, Outcome::Masquerade);
    assert!(e.effects.iter().any(|x| x.contains("checked now")));

    // Internal: nothing leaves but to the gateway, a published port (hairpin) included.
    s.set_flags(CLIENT_IF, NET_ICC | NET_INTERNAL);
    s.ct.clear();
    let e = run(
        &s,
        &udp(CLIENT, 5000, "198.18.1.9", 53),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::DropInternal);
    let e = run(
        &s,
        &tcp(CLIENT, 40000, UPLINK, 8080, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::DropInternal);
    assert!(!stages(&e).contains(&"published"), "{e:#?}");
    let e = run(
        &s,
        &tcp(CLIENT, 40000, "198.18.10.1", 8080, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    assert_outcome(&e, Outcome::Pass);
}

#[test]
fn service_reply_out_of_the_uplink() {
    let mut s = Snap::lab();
    s.set_flags(11, NET_ICC | IFACE_NAT_TARGET);
    s.ct.insert(
        CtKey {
            saddr: k(BACKENDS[0].0),
            daddr: k(OUTSIDE),
            sport: be(8080),
            dport: be(50000),
            proto: 6,
            pad: [0; 3],
        },
        CtEntry {
            nat_addr: k(VIP),
            nat_port: be(80),
            kind: CT_SERVICE_REPLY_OUT,
            ifindex: UPLINK_IF,
            backend_id: 1,
            ..CtEntry::default()
        },
    );
    let e = run(
        &s,
        &tcp(BACKENDS[0].0, 8080, OUTSIDE, 50000, TCP_ACK),
        &from("b1", 11),
    );
    assert_outcome(&e, Outcome::ServiceReply);
    assert_eq!(delivered_to(&e), ("redirect_neigh", Some(UPLINK_IF)));
}

#[test]
fn icmp_echo_requests_forward_and_masquerade() {
    let mut s = Snap::lab();
    s.uplink();
    let echo = |dst: &str| Packet {
        proto: Protocol::Icmp,
        src: SocketAddrV4::new(ip(CLIENT), 77),
        dst: SocketAddrV4::new(ip(dst), 0),
        tcp_flags: 0,
    };
    let e = run(&s, &echo(BACKENDS[2].0), &from("client", CLIENT_IF));
    assert_outcome(&e, Outcome::Forward);
    assert_eq!(e.packet.tcp_flags, None);
    s.set_flags(CLIENT_IF, NET_ICC | NET_MASQUERADE);
    let e = run(&s, &echo("198.18.1.9"), &from("client", CLIENT_IF));
    assert_outcome(&e, Outcome::Masquerade);
    // The echo identifier is the flow's "port": it is what masquerade replaces.
    assert_eq!(
        translation(&e),
        (format!("{UPLINK}:*"), "198.18.1.9:0".to_owned())
    );
    assert!(
        e.steps
            .iter()
            .any(|s| s.detail.contains("icmp 198.18.10.2:77 -> 198.18.1.9:0")),
        "{e:#?}"
    );
}

#[test]
fn no_uplink_program_means_netbpf_never_sees_it() {
    let s = Snap::lab();
    let e = run(&s, &tcp(OUTSIDE, 1, UPLINK, 2, TCP_SYN), &Origin::NoUplink);
    assert_eq!((e.program, e.outcome), (None, None));
    assert_eq!(e.delivery.as_ref().map(|d| d.via), Some("stack"));
}

#[test]
fn arguments_parse() {
    assert_eq!(
        parse_endpoint("198.18.10.2:80"),
        Ok((ip("198.18.10.2"), Some(80)))
    );
    assert_eq!(parse_endpoint("198.18.10.2"), Ok((ip("198.18.10.2"), None)));
    assert!(parse_endpoint("198.18.10:80").is_err());
    assert!(parse_endpoint("198.18.10.2:70000").is_err());
    assert_eq!(parse_tcp_flags("syn"), Ok(TCP_SYN));
    assert_eq!(parse_tcp_flags("SYN,ack"), Ok(TCP_SYN | TCP_ACK));
    assert_eq!(parse_tcp_flags("none"), Ok(0));
    assert!(parse_tcp_flags("push").is_err());
}

#[test]
fn the_json_keys_are_stable() {
    let mut s = Snap::lab();
    s.add_service(Scheduler::Rr, &[1], &[1]);
    let e = run(
        &s,
        &tcp(CLIENT, 40000, VIP, 80, TCP_SYN),
        &from("client", CLIENT_IF),
    );
    let v: serde_json::Value = serde_json::from_str(&super::json(&e)).expect("JSON");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "packet",
        "from",
        "program",
        "interface",
        "steps",
        "outcome",
        "meaning",
        "drop",
        "conntrack",
        "service",
        "backend",
        "candidates",
        "translation",
        "delivery",
        "effects",
    ];
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(v["backend"]["chosen_by"], "rr");
    assert_eq!(v["delivery"]["via"], "redirect_peer");
    assert_eq!(v["packet"]["tcp_flags"], "syn");
    let text = super::text::render(&e);
    assert!(text.contains("verdict: service:"), "{text}");
    assert!(
        text.contains("backend:     #1 198.18.10.3:8080 (b1)"),
        "{text}"
    );
}
