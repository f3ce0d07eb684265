//! Virtual services under BPF_PROG_TEST_RUN: the datapath's half of scheduling (reading
//! the tables user space computes), translation both ways with exact bytes, connection
//! counts, persistence, resets when no backend can take a connection, and VIPs reached
//! from outside through the uplink (tc and XDP).

mod support;

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};
use netbpf_common::{
    conntrack::{CT_SERVICE, CT_SERVICE_REPLY, CT_SERVICE_REPLY_OUT, CtEntry, CtKey},
    net::IFACE_NAT_TARGET,
    service::{
        Backend, BackendConns, BackendTraffic, SVC_EXTERNAL, Scheduler, Service, ServiceKey,
        flow_hash,
    },
    stats::{Hook, Outcome},
};
use netbpf_tests::{
    packet::{self, Fixture, IPPROTO_TCP, IPPROTO_UDP, Mac, tcp_flags, verdict},
    require_root,
};
use support::{
    fixture::{both_checksum_ways, load, run, run_without_bytes},
    world::*,
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT_MAC: Mac = Mac([2, 0, 0, 0, 0, 0xc1]);
const UPLINK_MAC: Mac = Mac([2, 0, 0, 0, 0, 0xd1]);
const XDP_REDIRECT: u32 = 4;
const XDP_TX: u32 = 3;

/// The service maps, taken from the object before the container maps.
struct ServiceMaps {
    services: HashMap<MapData, ServiceKey, Service>,
    tables: Array<MapData, u32>,
    backends: Array<MapData, Backend>,
    conns: Array<MapData, BackendConns>,
    traffic: Array<MapData, BackendTraffic>,
}

impl ServiceMaps {
    fn take(ebpf: &mut Ebpf) -> Self {
        let mut take = |name: &str| ebpf.take_map(name).expect(name);
        ServiceMaps {
            services: HashMap::try_from(take("NB_SERVICES")).expect("hash"),
            tables: Array::try_from(take("NB_TABLES")).expect("array"),
            backends: Array::try_from(take("NB_BACKENDS")).expect("array"),
            conns: Array::try_from(take("NB_BE_CONNS")).expect("array"),
            traffic: Array::try_from(take("NB_BE_TRAFFIC")).expect("array"),
        }
    }

    /// A backend (id) on port 8080 of a fixture container.
    fn backend(&mut self, id: u32, addr: Ipv4Addr, weight: u16, service_id: u32) {
        let b = Backend {
            addr: key(addr),
            port: 8080u16.to_be(),
            weight,
            service_id,
        };
        self.backends.set(id, &b, 0).expect("backend");
    }

    /// A service at `vip`:`port`: its backend list then its scheduling table, at `table`.
    #[allow(clippy::too_many_arguments, reason = "the whole frontend")]
    fn service(
        &mut self,
        id: u32,
        vip: Ipv4Addr,
        proto: u8,
        scheduler: Scheduler,
        flags: u8,
        table: u32,
        list: &[u32],
        schedule: &[u32],
        persistence_secs: u32,
    ) {
        for (i, backend) in list.iter().chain(schedule).enumerate() {
            self.tables
                .set(table + i as u32, backend, 0)
                .expect("table entry");
        }
        let frontend = Service {
            id,
            scheduler: scheduler as u8,
            flags,
            count: list.len() as u16,
            table,
            table_len: schedule.len() as u32,
            persistence_secs,
            persistence_mask: u32::MAX,
        };
        let k = ServiceKey {
            vip: key(vip),
            port: 80u16.to_be(),
            proto,
            pad: 0,
        };
        self.services.insert(&k, &frontend, 0).expect("service");
    }

    fn opened(&self, id: u32) -> (u64, u64) {
        let c = self.conns.get(&id, 0).expect("conns");
        (c.opened, c.closed)
    }
}

fn syn(src_mac: Mac, dst_mac: Mac, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    packet::tcp4_frame(
        dst_mac,
        src_mac,
        sock(src.0, src.1),
        sock(dst.0, dst.1),
        tcp_flags::SYN,
        b"",
    )
}

fn translated(name: &'static str, hook: Hook, input: Vec<u8>, output: Vec<u8>) -> Fixture {
    Fixture {
        name,
        hook,
        input,
        verdict: if hook == Hook::XdpUplink {
            XDP_REDIRECT
        } else {
            verdict::TC_ACT_REDIRECT
        },
        output: Some(output),
        outcome: Outcome::Service,
    }
}

/// The ICMP port unreachable a refused datagram (an Ethernet frame) gets: back to its
/// sender from the address it was sent to, quoting its IPv4 header and 8 bytes.
fn unreachable(frame: &[u8]) -> Vec<u8> {
    let ip = &frame[14..];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let mut out = packet::icmp_error_frame(
        Mac(frame[6..12].try_into().expect("MAC")),
        Mac(frame[0..6].try_into().expect("MAC")),
        dst,
        src,
        3,
        3,
        0,
        &ip[..28],
    );
    // An IP identification of 0 (the packet builder's is 1).
    out[18..20].copy_from_slice(&[0, 0]);
    out[24..26].copy_from_slice(&[0, 0]);
    let sum = packet::checksum(&out[14..34]);
    out[24..26].copy_from_slice(&sum.to_be_bytes());
    out
}

fn conntrack(ebpf: &Ebpf) -> Vec<(CtKey, CtEntry)> {
    let ct: HashMap<_, CtKey, CtEntry> =
        HashMap::try_from(ebpf.map("NB_CT").expect("NB_CT")).expect("hash");
    ct.iter().map(|e| e.expect("entry")).collect()
}

/// Round robin over three backends in three networks: each SYN takes the next, exact
/// bytes into the backend; the reply leaves from the VIP; connection counts follow opens
/// and closes; removing a flow's backend resets that flow.
#[test]
fn round_robin_translates_both_ways_and_counts_connections() {
    require_root!();
    for (how, ebpf) in both_checksum_ways() {
        eprintln!("-- {how}");
        round_robin_translates_both_ways_and_counts_connections_with(ebpf);
    }
}

fn round_robin_translates_both_ways_and_counts_connections_with(mut ebpf: Ebpf) {
    let mut svc = ServiceMaps::take(&mut ebpf);
    let mut maps = fill_maps(&mut ebpf);
    for (id, addr) in [(1, WEB2), (2, DB), (3, DB2)] {
        svc.backend(id, addr, 1, 1);
    }
    svc.service(
        1,
        VIP,
        IPPROTO_TCP,
        Scheduler::Rr,
        0,
        0,
        &[1, 2, 3],
        &[1, 2, 3],
        0,
    );
    own(&mut maps, Some(WEB1));

    let expected = [
        (WEB2, WEB2_MAC),
        (DB, DB_MAC),
        (DB2, DB2_MAC),
        (WEB2, WEB2_MAC),
    ];
    for (i, (backend, mac)) in expected.into_iter().enumerate() {
        let port = 40000 + i as u16;
        let f = translated(
            "SYN to the VIP goes to the next backend",
            Hook::FromContainer,
            syn(WEB1_MAC, HOST_MAC, (WEB1, port), (VIP, 80)),
            syn(HOST_MAC, mac, (WEB1, port), (backend, 8080)),
        );
        run(&ebpf, &f).unwrap_or_else(|e| panic!("SYN {i} -> {backend}:\n{e}"));
    }
    assert_eq!(
        [svc.opened(1), svc.opened(2), svc.opened(3)],
        [(2, 0), (1, 0), (1, 0)]
    );
    let first = conntrack(&ebpf)
        .into_iter()
        .filter(|(k, _)| k.sport == 40000u16.to_be() || k.dport == 40000u16.to_be())
        .map(|(k, e)| (e.kind, e.backend_id, Ipv4Addr::from(k.saddr.to_ne_bytes())))
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(
        first,
        [(CT_SERVICE, 1, WEB1), (CT_SERVICE_REPLY, 1, WEB2)]
            .into_iter()
            .collect()
    );

    // web2's reply leaves from the VIP, into web1.
    own_with_flags(&mut maps, Some(WEB2), IFACE_NAT_TARGET);
    let synack = |src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), dst_mac: Mac, src_mac: Mac| {
        packet::tcp4_frame(
            dst_mac,
            src_mac,
            sock(src.0, src.1),
            sock(dst.0, dst.1),
            tcp_flags::SYN | tcp_flags::ACK,
            b"",
        )
    };
    let reply = Fixture {
        name: "web2's SYN-ACK leaves from the VIP",
        hook: Hook::FromContainer,
        input: synack((WEB2, 8080), (WEB1, 40000), HOST_MAC, WEB2_MAC),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(synack((VIP, 80), (WEB1, 40000), WEB1_MAC, HOST_MAC)),
        outcome: Outcome::ServiceReply,
    };
    run(&ebpf, &reply).unwrap_or_else(|e| panic!("{}:\n{e}", reply.name));
    let traffic = svc.traffic.get(&1, 0).expect("traffic");
    let frame = reply.input.len() as u64;
    assert_eq!(
        traffic,
        BackendTraffic {
            in_packets: 2,
            in_bytes: 2 * frame,
            out_packets: 1,
            out_bytes: frame,
        },
        "web2's two SYNs in, its SYN-ACK out (frames of one size)"
    );

    // An ICMP error web2 sends about the client's packet (fragmentation needed) goes back
    // into web1 from the VIP, quoting the VIP.
    let frag_needed = |src: Ipv4Addr, quoted_dst: (Ipv4Addr, u16), macs: (Mac, Mac)| {
        let syn = packet::tcp(
            sock(WEB1, 40000),
            sock(quoted_dst.0, quoted_dst.1),
            1,
            0,
            tcp_flags::SYN,
            b"",
        );
        let quoted = packet::ipv4(WEB1, quoted_dst.0, IPPROTO_TCP, &syn);
        packet::icmp_error_frame(macs.0, macs.1, src, WEB1, 3, 4, 1400, &quoted)
    };
    let error = Fixture {
        name: "web2's fragmentation needed reaches web1 from the VIP",
        hook: Hook::FromContainer,
        input: frag_needed(WEB2, (WEB2, 8080), (HOST_MAC, WEB2_MAC)),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(frag_needed(VIP, (VIP, 80), (WEB1_MAC, HOST_MAC))),
        outcome: Outcome::IcmpError,
    };
    run(&ebpf, &error).unwrap_or_else(|e| panic!("{}:\n{e}", error.name));

    // The other way: web1's port unreachable about the reply (which came from the VIP)
    // goes into web2, quoting web2's own address and port.
    own(&mut maps, Some(WEB1));
    let reply_refused = |dst: Ipv4Addr, quoted_src: (Ipv4Addr, u16), macs: (Mac, Mac)| {
        let synack = packet::tcp(
            sock(quoted_src.0, quoted_src.1),
            sock(WEB1, 40000),
            1,
            2,
            tcp_flags::SYN | tcp_flags::ACK,
            b"",
        );
        let quoted = packet::ipv4(quoted_src.0, WEB1, IPPROTO_TCP, &synack);
        packet::icmp_error_frame(macs.0, macs.1, WEB1, dst, 3, 3, 0, &quoted)
    };
    let error = Fixture {
        name: "web1's port unreachable about the reply reaches web2 quoting web2",
        hook: Hook::FromContainer,
        input: reply_refused(VIP, (VIP, 80), (HOST_MAC, WEB1_MAC)),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(reply_refused(WEB2, (WEB2, 8080), (WEB2_MAC, HOST_MAC))),
        outcome: Outcome::IcmpError,
    };
    run(&ebpf, &error).unwrap_or_else(|e| panic!("{}:\n{e}", error.name));

    // The client closes: the backend has one connection fewer.
    own(&mut maps, Some(WEB1));
    let fin = |port: u16, flags: u8| {
        packet::tcp4_frame(
            HOST_MAC,
            WEB1_MAC,
            sock(WEB1, port),
            sock(VIP, 80),
            flags,
            b"",
        )
    };
    let closing = Fixture {
        name: "web1's FIN",
        hook: Hook::FromContainer,
        input: fin(40000, tcp_flags::FIN | tcp_flags::ACK),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(packet::tcp4_frame(
            WEB2_MAC,
            HOST_MAC,
            sock(WEB1, 40000),
            sock(WEB2, 8080),
            tcp_flags::FIN | tcp_flags::ACK,
            b"",
        )),
        outcome: Outcome::Service,
    };
    run(&ebpf, &closing).unwrap_or_else(|e| panic!("{}:\n{e}", closing.name));
    assert_eq!(svc.opened(1), (2, 1));

    // db is removed: the next packet of its flow is answered with a reset from the VIP.
    svc.backends
        .set(2, &Backend::default(), 0)
        .expect("remove backend");
    let ack = packet::ethernet(
        HOST_MAC,
        WEB1_MAC,
        packet::ETH_P_IPV4,
        &packet::ipv4(
            WEB1,
            VIP,
            IPPROTO_TCP,
            &packet::tcp(
                sock(WEB1, 40001),
                sock(VIP, 80),
                1000,
                5000,
                tcp_flags::ACK | tcp_flags::PSH,
                b"data",
            ),
        ),
    );
    let mut rst = packet::ethernet(
        WEB1_MAC,
        HOST_MAC,
        packet::ETH_P_IPV4,
        &packet::ipv4(
            VIP,
            WEB1,
            IPPROTO_TCP,
            &packet::tcp_reset(sock(VIP, 80), sock(WEB1, 40001), 5000, 0, tcp_flags::RST),
        ),
    );
    // The frame keeps its length; the bytes past the reset are the old payload.
    rst.extend_from_slice(&ack[rst.len()..]);
    let reset = Fixture {
        name: "a packet of a removed backend's flow gets a reset",
        hook: Hook::FromContainer,
        input: ack,
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(rst),
        outcome: Outcome::ServiceReset,
    };
    run(&ebpf, &reset).unwrap_or_else(|e| panic!("{}:\n{e}", reset.name));
    assert!(
        !conntrack(&ebpf)
            .iter()
            .any(|(k, _)| k.sport == 40001u16.to_be() || k.dport == 40001u16.to_be()),
        "the reset flow is forgotten"
    );
}

/// Each scheduler reads its table as IPVS means it: wrr follows the weighted sequence,
/// sh and mh index the Maglev table by the client's hash, lc and wlc take the backend
/// with the fewest active connections (per weight); persistence keeps a client on its
/// backend; weight 0 takes no new connections; no backend at all: reset (TCP) or drop.
#[test]
fn schedulers_persistence_and_refusals() {
    require_root!();
    let mut ebpf = load();
    let mut svc = ServiceMaps::take(&mut ebpf);
    let mut maps = fill_maps(&mut ebpf);
    own(&mut maps, Some(WEB1));
    let backends = [(1, WEB2), (2, DB), (3, DB2)];
    let chosen = |ebpf: &Ebpf, port: u16| -> u32 {
        conntrack(ebpf)
            .iter()
            .find(|(k, e)| e.kind == CT_SERVICE && k.sport == port.to_be())
            .map(|(_, e)| e.backend_id)
            .expect("flow recorded")
    };
    let mut port = 41000;
    let mut connect = |ebpf: &Ebpf, vip: Ipv4Addr| -> u32 {
        port += 1;
        let input = syn(WEB1_MAC, HOST_MAC, (WEB1, port), (vip, 80));
        let program = Fixture {
            name: "SYN to the VIP",
            hook: Hook::FromContainer,
            input,
            verdict: verdict::TC_ACT_REDIRECT,
            output: None,
            outcome: Outcome::Service,
        };
        // The bytes have their own test.
        run_without_bytes(ebpf, &program).unwrap_or_else(|e| panic!("SYN to {vip}:\n{e}"));
        chosen(ebpf, port)
    };

    // wrr, weights 3:1 (the sequence user space computes): 30/10 over 40.
    let wrr_vip = Ipv4Addr::new(198, 18, 200, 11);
    for (id, addr) in &backends[..2] {
        svc.backend(*id, *addr, 1, 1);
    }
    svc.service(
        1,
        wrr_vip,
        IPPROTO_TCP,
        Scheduler::Wrr,
        0,
        0,
        &[1, 2],
        &[1, 1, 2, 1],
        0,
    );
    let mut counts = [0; 3];
    for _ in 0..40 {
        counts[connect(&ebpf, wrr_vip) as usize - 1] += 1;
    }
    assert_eq!(counts, [30, 10, 0]);

    // mh: a Maglev table of 7; the client's hash picks the slot, every time.
    let mh_vip = Ipv4Addr::new(198, 18, 200, 12);
    for (id, addr) in backends {
        svc.backend(id + 10, addr, 1, 2);
    }
    let ring = [11, 12, 13, 11, 12, 13, 12];
    svc.service(
        2,
        mh_vip,
        IPPROTO_TCP,
        Scheduler::Mh,
        0,
        100,
        &[11, 12, 13],
        &ring,
        0,
    );
    let slot = flow_hash(key(WEB1)) % ring.len() as u32;
    for _ in 0..5 {
        assert_eq!(connect(&ebpf, mh_vip), ring[slot as usize]);
    }

    // lc: the fewest active connections; wlc: per weight.
    let lc_vip = Ipv4Addr::new(198, 18, 200, 13);
    for (id, addr) in backends {
        svc.backend(id + 20, addr, 1, 3);
    }
    svc.service(
        3,
        lc_vip,
        IPPROTO_TCP,
        Scheduler::Lc,
        0,
        200,
        &[21, 22, 23],
        &[],
        0,
    );
    for (id, opened) in [(21, 5), (22, 2), (23, 7)] {
        let c = BackendConns { opened, closed: 0 };
        svc.conns.set(id, &c, 0).expect("conns");
    }
    assert_eq!(connect(&ebpf, lc_vip), 22, "2 active < 5 < 7");
    assert_eq!(connect(&ebpf, lc_vip), 22, "3 active < 5 < 7");
    assert_eq!(svc.opened(22), (4, 0));
    let wlc_vip = Ipv4Addr::new(198, 18, 200, 14);
    svc.backend(31, WEB2, 4, 4);
    svc.backend(32, DB, 1, 4);
    svc.conns
        .set(
            31,
            &BackendConns {
                opened: 6,
                closed: 0,
            },
            0,
        )
        .expect("conns");
    svc.conns
        .set(
            32,
            &BackendConns {
                opened: 2,
                closed: 0,
            },
            0,
        )
        .expect("conns");
    svc.service(
        4,
        wlc_vip,
        IPPROTO_TCP,
        Scheduler::Wlc,
        0,
        300,
        &[31, 32],
        &[],
        0,
    );
    assert_eq!(connect(&ebpf, wlc_vip), 31, "6/4 < 2/1");

    // Persistence (rr over two): the client keeps its first backend.
    let sticky_vip = Ipv4Addr::new(198, 18, 200, 15);
    svc.backend(41, WEB2, 1, 5);
    svc.backend(42, DB, 1, 5);
    svc.service(
        5,
        sticky_vip,
        IPPROTO_TCP,
        Scheduler::Rr,
        0,
        400,
        &[41, 42],
        &[41, 42],
        300,
    );
    let first = connect(&ebpf, sticky_vip);
    for _ in 0..4 {
        assert_eq!(connect(&ebpf, sticky_vip), first, "persistent client");
    }
    // Its backend drained (weight 0): persistence gives way, the other one is taken.
    svc.backend(first, if first == 41 { WEB2 } else { DB }, 0, 5);
    let other = if first == 41 { 42 } else { 41 };
    svc.service(
        5,
        sticky_vip,
        IPPROTO_TCP,
        Scheduler::Rr,
        0,
        410,
        &[other],
        &[other],
        300,
    );
    assert_eq!(connect(&ebpf, sticky_vip), other);

    // No backend: a SYN gets a reset (RST|ACK, ack = seq + 1), UDP is dropped.
    let empty_vip = Ipv4Addr::new(198, 18, 200, 16);
    svc.service(
        6,
        empty_vip,
        IPPROTO_TCP,
        Scheduler::Rr,
        0,
        500,
        &[],
        &[],
        0,
    );
    svc.service(
        7,
        empty_vip,
        IPPROTO_UDP,
        Scheduler::Rr,
        0,
        500,
        &[],
        &[],
        0,
    );
    let refused_syn = syn(WEB1_MAC, HOST_MAC, (WEB1, 42000), (empty_vip, 80));
    let mut rst = packet::ethernet(
        WEB1_MAC,
        HOST_MAC,
        packet::ETH_P_IPV4,
        &packet::ipv4(
            empty_vip,
            WEB1,
            IPPROTO_TCP,
            &packet::tcp_reset(
                sock(empty_vip, 80),
                sock(WEB1, 42000),
                0,
                2,
                tcp_flags::RST | tcp_flags::ACK,
            ),
        ),
    );
    rst.extend_from_slice(&refused_syn[rst.len()..]);
    let udp_query = packet::udp4_frame(
        HOST_MAC,
        WEB1_MAC,
        sock(WEB1, 42001),
        sock(empty_vip, 80),
        b"anyone?",
    );
    let refusals = [
        Fixture {
            name: "SYN to a service without backends: reset",
            hook: Hook::FromContainer,
            input: refused_syn,
            verdict: verdict::TC_ACT_REDIRECT,
            output: Some(rst),
            outcome: Outcome::ServiceReset,
        },
        Fixture {
            name: "UDP to a service without backends: port unreachable",
            hook: Hook::FromContainer,
            input: udp_query.clone(),
            verdict: verdict::TC_ACT_REDIRECT,
            output: Some(unreachable(&udp_query)),
            outcome: Outcome::ServiceUnreachable,
        },
    ];
    for f in &refusals {
        run(&ebpf, f).unwrap_or_else(|e| panic!("{}:\n{e}", f.name));
    }
}

/// An external VIP from outside, at tc and at XDP: translated into the backend, the reply
/// leaves from the VIP through the uplink; a VIP not marked external is not answered from
/// outside; a SYN to an external VIP without backends is reset back out.
#[test]
fn external_services_from_the_uplink() {
    require_root!();
    for (how, ebpf) in both_checksum_ways() {
        eprintln!("-- {how}");
        external_services_from_the_uplink_with(ebpf);
    }
}

fn external_services_from_the_uplink_with(mut ebpf: Ebpf) {
    let mut svc = ServiceMaps::take(&mut ebpf);
    let mut maps = fill_maps(&mut ebpf);
    svc.backend(1, WEB2, 1, 1);
    svc.service(
        1,
        VIP,
        IPPROTO_TCP,
        Scheduler::Rr,
        SVC_EXTERNAL,
        0,
        &[1],
        &[1],
        0,
    );
    let internal_vip = Ipv4Addr::new(198, 18, 200, 20);
    svc.service(
        2,
        internal_vip,
        IPPROTO_TCP,
        Scheduler::Rr,
        0,
        0,
        &[1],
        &[1],
        0,
    );
    let empty_vip = Ipv4Addr::new(198, 18, 200, 21);
    svc.service(
        3,
        empty_vip,
        IPPROTO_TCP,
        Scheduler::Rr,
        SVC_EXTERNAL,
        10,
        &[],
        &[],
        0,
    );

    for (hook, port) in [(Hook::FromUplink, 50000), (Hook::XdpUplink, 50001)] {
        let inbound = translated(
            "SYN from outside to the external VIP",
            hook,
            syn(CLIENT_MAC, UPLINK_MAC, (CLIENT, port), (VIP, 80)),
            syn(HOST_MAC, WEB2_MAC, (CLIENT, port), (WEB2, 8080)),
        );
        run(&ebpf, &inbound).unwrap_or_else(|e| panic!("{hook:?}: {}:\n{e}", inbound.name));
        let reply = conntrack(&ebpf)
            .into_iter()
            .find(|(k, _)| k.dport == port.to_be())
            .expect("reply entry");
        assert_eq!(reply.1.kind, CT_SERVICE_REPLY_OUT);

        own_with_flags(&mut maps, Some(WEB2), IFACE_NAT_TARGET);
        let synack = |src: (Ipv4Addr, u16)| {
            packet::tcp4_frame(
                HOST_MAC,
                WEB2_MAC,
                sock(src.0, src.1),
                sock(CLIENT, port),
                tcp_flags::SYN | tcp_flags::ACK,
                b"",
            )
        };
        let out = Fixture {
            name: "the backend's reply leaves the uplink from the VIP",
            hook: Hook::FromContainer,
            input: synack((WEB2, 8080)),
            verdict: verdict::TC_ACT_REDIRECT,
            output: Some(synack((VIP, 80))),
            outcome: Outcome::ServiceReply,
        };
        run(&ebpf, &out).unwrap_or_else(|e| panic!("{hook:?}: {}:\n{e}", out.name));

        // The client's port unreachable about that reply (which came from the VIP) goes
        // into the backend, quoting the backend's own address and port.
        let reply_refused = |dst: Ipv4Addr, quoted_src: (Ipv4Addr, u16), macs: (Mac, Mac)| {
            let quoted = packet::ipv4(
                quoted_src.0,
                CLIENT,
                IPPROTO_TCP,
                &packet::tcp(
                    sock(quoted_src.0, quoted_src.1),
                    sock(CLIENT, port),
                    1,
                    2,
                    tcp_flags::SYN | tcp_flags::ACK,
                    b"",
                ),
            );
            packet::icmp_error_frame(macs.0, macs.1, CLIENT, dst, 3, 3, 0, &quoted)
        };
        let error = Fixture {
            name: "the client's port unreachable about the reply reaches the backend",
            outcome: Outcome::IcmpError,
            ..translated(
                "",
                hook,
                reply_refused(VIP, (VIP, 80), (UPLINK_MAC, CLIENT_MAC)),
                reply_refused(WEB2, (WEB2, 8080), (WEB2_MAC, HOST_MAC)),
            )
        };
        run(&ebpf, &error).unwrap_or_else(|e| panic!("{hook:?}: {}:\n{e}", error.name));
    }

    let not_external = Fixture {
        name: "a VIP not marked external is left to the host",
        hook: Hook::FromUplink,
        input: syn(CLIENT_MAC, UPLINK_MAC, (CLIENT, 50002), (internal_vip, 80)),
        verdict: verdict::TC_ACT_OK,
        output: None,
        outcome: Outcome::Pass,
    };
    run(&ebpf, &not_external).unwrap_or_else(|e| panic!("{}:\n{e}", not_external.name));

    for (hook, verdict) in [
        (Hook::FromUplink, verdict::TC_ACT_REDIRECT),
        (Hook::XdpUplink, XDP_TX),
    ] {
        let input = syn(CLIENT_MAC, UPLINK_MAC, (CLIENT, 50003), (empty_vip, 80));
        let mut rst = packet::ethernet(
            CLIENT_MAC,
            UPLINK_MAC,
            packet::ETH_P_IPV4,
            &packet::ipv4(
                empty_vip,
                CLIENT,
                IPPROTO_TCP,
                &packet::tcp_reset(
                    sock(empty_vip, 80),
                    sock(CLIENT, 50003),
                    0,
                    2,
                    tcp_flags::RST | tcp_flags::ACK,
                ),
            ),
        );
        rst.extend_from_slice(&input[rst.len()..]);
        let refused = Fixture {
            name: "SYN from outside to an external VIP without backends: reset",
            hook,
            input,
            verdict,
            output: Some(rst),
            outcome: Outcome::ServiceReset,
        };
        run(&ebpf, &refused).unwrap_or_else(|e| panic!("{hook:?}: {}:\n{e}", refused.name));
    }
    svc.service(
        4,
        empty_vip,
        IPPROTO_UDP,
        Scheduler::Rr,
        SVC_EXTERNAL,
        10,
        &[],
        &[],
        0,
    );
    for (hook, verdict) in [
        (Hook::FromUplink, verdict::TC_ACT_REDIRECT),
        (Hook::XdpUplink, XDP_TX),
    ] {
        let input = packet::udp4_frame(
            UPLINK_MAC,
            CLIENT_MAC,
            sock(CLIENT, 50004),
            sock(empty_vip, 80),
            b"a datagram long enough to hold the answer, and then some",
        );
        let refused = Fixture {
            name: "UDP from outside to an external VIP without backends: port unreachable",
            hook,
            output: Some(unreachable(&input)),
            input,
            verdict,
            outcome: Outcome::ServiceUnreachable,
        };
        run(&ebpf, &refused).unwrap_or_else(|e| panic!("{hook:?}: {}:\n{e}", refused.name));
    }
}

/// mh, end to end through `from_uplink`: 10,000 clients (distinct addresses) to an
/// external VIP over 10 backends. Taking one backend out moves exactly the clients it
/// had and at most 1% of the others; putting it back restores every client's backend.
#[test]
fn maglev_moves_only_the_removed_share() {
    use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
    use netbpf::plan::sched::{hash_table, identity, maglev_size};

    require_root!();
    let mut ebpf = load();
    let mut svc = ServiceMaps::take(&mut ebpf);
    let _maps = fill_maps(&mut ebpf);
    // Ten backends: two ports on each of five containers.
    let backends: Vec<(u32, Ipv4Addr, u16)> = [WEB1, WEB2, DB, DB2, Q1]
        .iter()
        .flat_map(|addr| [8080u16, 8081].map(|port| (*addr, port)))
        .enumerate()
        .map(|(i, (addr, port))| (i as u32 + 1, addr, port))
        .collect();
    for (id, addr, port) in &backends {
        let b = Backend {
            addr: key(*addr),
            port: port.to_be(),
            weight: 1,
            service_id: 1,
        };
        svc.backends.set(*id, &b, 0).expect("backend");
    }
    let roster: Vec<(u64, u16)> = backends
        .iter()
        .map(|(_, addr, port)| (identity(*addr, *port), 1))
        .collect();
    let m = maglev_size(roster.len(), None);
    // The service over the selectable backends (all but `out`), at its own region.
    let mut publish = |out: Option<usize>, table: u32| {
        let selectable: Vec<(u64, u16)> = roster
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, u16::from(Some(i) != out)))
            .collect();
        let ids: Vec<u32> = hash_table(&roster, &selectable, m)
            .into_iter()
            .map(|i| backends[i].0)
            .collect();
        let list: Vec<u32> = backends
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != out)
            .map(|(_, b)| b.0)
            .collect();
        svc.service(
            1,
            VIP,
            IPPROTO_TCP,
            Scheduler::Mh,
            SVC_EXTERNAL,
            table,
            &list,
            &ids,
            0,
        );
    };
    let program: &SchedClassifier = ebpf
        .program("from_uplink")
        .expect("program")
        .try_into()
        .expect("tc");
    // Where each client lands (new flows: a source port of the phase's own).
    let landings = |sport: u16| -> Vec<(Ipv4Addr, u16)> {
        (0..10_000u32)
            .map(|i| {
                let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i);
                let input = syn(CLIENT_MAC, UPLINK_MAC, (client, sport), (VIP, 80));
                let mut out = vec![0u8; input.len()];
                let result = program
                    .test_run(TestRunOptions {
                        data_in: Some(&input),
                        data_out: Some(&mut out),
                        ..Default::default()
                    })
                    .expect("test run");
                assert_eq!(result.return_value, verdict::TC_ACT_REDIRECT, "{client}");
                let ip = &out[14..34];
                (
                    Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
                    u16::from_be_bytes([out[36], out[37]]),
                )
            })
            .collect()
    };

    publish(None, 0);
    let before = landings(1000);
    let out = 3;
    let removed = (backends[out].1, backends[out].2);
    publish(Some(out), 2 * m);
    let during = landings(1001);
    let mut moved_others = 0;
    for (b, d) in before.iter().zip(&during) {
        if *b == removed {
            assert_ne!(*d, removed, "a client of the removed backend stayed on it");
        } else if b != d {
            moved_others += 1;
        }
    }
    let others = before.iter().filter(|b| **b != removed).count();
    assert!(
        moved_others * 100 <= others,
        "{moved_others} of {others} other clients moved"
    );
    let share = before.len() - others;
    assert!(
        (500..=1500).contains(&share),
        "the removed backend had {share} of 10,000 clients"
    );
    publish(None, 4 * m);
    assert_eq!(
        landings(1002),
        before,
        "putting it back restores every client"
    );
}
