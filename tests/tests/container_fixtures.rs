//! `from_container` under BPF_PROG_TEST_RUN: every decision of the program, with the
//! endpoint and network maps filled as the reconciler would, exact verdicts, output bytes
//! and counters. The test run's device is loopback (ifindex 1): the "own" container sits
//! behind ifindex 1. The kernel refuses (EINVAL) a test run whose Ethernet or IPv4 header
//! is cut short; those cuts are sent over a real veth in `containers.rs`.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4};

use netbpf_common::{
    conntrack::{
        CT_HAIRPIN_REPLY, CT_SERVICE_REPLY, CtEntry, CtKey, HostConfig, MASQ_REPLY_CHECK_TICKS,
        TCP_CLOSING, TCP_ESTABLISHED,
    },
    net::IFACE_NAT_TARGET,
    ports::{PortKey, PortTarget},
    stats::{Hook, Outcome},
};
use netbpf_tests::{
    packet::{self, ETH_HLEN, ETH_P_IPV4, Fixture, IPPROTO_UDP, Mac, verdict},
    require_root,
};
use support::{
    fixture::{both_checksum_ways, load, run},
    world::*,
};

fn udp(src_mac: Mac, dst_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    packet::udp4_frame(
        dst_mac,
        src_mac,
        sock(src, 4000),
        sock(dst, 53),
        b"container fixture",
    )
}

fn fixture(name: &'static str, input: Vec<u8>, outcome: Outcome) -> Fixture {
    let verdict = match outcome {
        Outcome::Pass => verdict::TC_ACT_OK,
        Outcome::Forward | Outcome::ArpReply | Outcome::Published | Outcome::PublishedReply => {
            verdict::TC_ACT_REDIRECT
        }
        _ => verdict::TC_ACT_SHOT,
    };
    Fixture {
        name,
        hook: Hook::FromContainer,
        input,
        verdict,
        output: None,
        outcome,
    }
}

/// The reply the program must build from an ARP request for `target` (answered as `mac`).
fn arp_reply(asker_mac: Mac, asker: Ipv4Addr, target: Ipv4Addr, mac: Mac) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 2];
    arp.extend_from_slice(&mac.0);
    arp.extend_from_slice(&target.octets());
    arp.extend_from_slice(&asker_mac.0);
    arp.extend_from_slice(&asker.octets());
    packet::ethernet(asker_mac, mac, packet::ETH_P_ARP, &arp)
}

/// An IPv4 packet from web1 to web2 with a 4-byte options field (NOPs + EOL).
fn with_ip_options() -> Vec<u8> {
    let l4 = packet::udp(sock(WEB1, 4000), sock(WEB2, 53), b"opts");
    let total = (24 + l4.len()) as u16;
    let mut ip = vec![0x46, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, IPPROTO_UDP, 0, 0]);
    ip.extend_from_slice(&WEB1.octets());
    ip.extend_from_slice(&WEB2.octets());
    ip.extend_from_slice(&[1, 1, 1, 0]);
    let sum = packet::checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&l4);
    packet::ethernet(WEB2_MAC, WEB1_MAC, ETH_P_IPV4, &ip)
}

/// web1 -> web2 UDP with the fragment field set to `frag` (flags and offset).
fn fragment(frag: u16) -> Vec<u8> {
    let mut frame = udp(WEB1_MAC, WEB2_MAC, WEB1, WEB2);
    frame[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&frag.to_be_bytes());
    frame[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
    let sum = packet::checksum(&frame[ETH_HLEN..ETH_HLEN + 20]);
    frame[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&sum.to_be_bytes());
    frame
}

fn truncated(frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame[..len].to_vec()
}

/// (container behind the device, fixture).
fn fixtures() -> Vec<(Option<Ipv4Addr>, Fixture)> {
    let web1 = Some(WEB1);
    let arp_gw = packet::arp_request(WEB1_MAC, WEB1, FRONT_GW);
    let arp_peer = packet::arp_request(WEB1_MAC, WEB1, WEB2);
    let mut answered_gw = fixture("arp for the gateway", arp_gw.clone(), Outcome::ArpReply);
    answered_gw.output = Some(arp_reply(WEB1_MAC, WEB1, FRONT_GW, HOST_MAC));
    let mut answered_peer = fixture("arp for a peer", arp_peer.clone(), Outcome::ArpReply);
    answered_peer.output = Some(arp_reply(WEB1_MAC, WEB1, WEB2, WEB2_MAC));
    let mut arp_reply_from_container =
        arp_reply(Mac([2, 0, 0, 0, 0, 0xa1]), FRONT_GW, WEB1, WEB1_MAC);
    // As the container sends it to the host: from its MAC, to the host's.
    arp_reply_from_container[..6].copy_from_slice(&HOST_MAC.0);
    let mut arp_probe = packet::arp_request(WEB1_MAC, Ipv4Addr::UNSPECIFIED, WEB2);
    let probe_answer = arp_reply(WEB1_MAC, Ipv4Addr::UNSPECIFIED, WEB2, WEB2_MAC);
    let mut probe = fixture(
        "arp probe (sender 0.0.0.0) for a peer",
        arp_probe.clone(),
        Outcome::ArpReply,
    );
    probe.output = Some(probe_answer);
    arp_probe[21] = 3; // RARP request opcode
    let udp_frame = udp(WEB1_MAC, WEB2_MAC, WEB1, WEB2);
    vec![
        (
            web1,
            fixture(
                "udp to a peer is redirected unchanged",
                udp_frame.clone(),
                Outcome::Forward,
            ),
        ),
        (
            web1,
            fixture(
                "tcp syn to a peer",
                packet::tcp4_frame(
                    WEB2_MAC,
                    WEB1_MAC,
                    sock(WEB1, 4000),
                    sock(WEB2, 80),
                    packet::tcp_flags::SYN,
                    b"",
                ),
                Outcome::Forward,
            ),
        ),
        (
            web1,
            fixture(
                "ip options are forwarded",
                with_ip_options(),
                Outcome::Forward,
            ),
        ),
        (
            web1,
            fixture(
                "first fragment is forwarded",
                fragment(0x2000),
                Outcome::Forward,
            ),
        ),
        (
            web1,
            fixture(
                "later fragment is forwarded",
                fragment(0x0010),
                Outcome::Forward,
            ),
        ),
        (
            web1,
            fixture(
                "to the gateway goes to the host",
                udp(WEB1_MAC, HOST_MAC, WEB1, FRONT_GW),
                Outcome::Pass,
            ),
        ),
        (
            web1,
            fixture(
                "to the outside goes to the host",
                udp(WEB1_MAC, HOST_MAC, WEB1, OUTSIDE),
                Outcome::Pass,
            ),
        ),
        (
            web1,
            fixture(
                "to another network",
                udp(WEB1_MAC, HOST_MAC, WEB1, DB),
                Outcome::DropCrossNetwork,
            ),
        ),
        (
            web1,
            fixture(
                "to an address nobody has",
                udp(WEB1_MAC, HOST_MAC, WEB1, Ipv4Addr::new(198, 18, 10, 77)),
                Outcome::DropNoEndpoint,
            ),
        ),
        (
            web1,
            fixture(
                "subnet broadcast",
                udp(
                    WEB1_MAC,
                    Mac([0xff; 6]),
                    WEB1,
                    Ipv4Addr::new(198, 18, 10, 255),
                ),
                Outcome::DropNotUnicast,
            ),
        ),
        (
            web1,
            fixture(
                "limited broadcast",
                udp(WEB1_MAC, Mac([0xff; 6]), WEB1, Ipv4Addr::BROADCAST),
                Outcome::DropNotUnicast,
            ),
        ),
        (
            web1,
            fixture(
                "multicast",
                udp(
                    WEB1_MAC,
                    Mac([1, 0, 0x5e, 0, 0, 0xfb]),
                    WEB1,
                    Ipv4Addr::new(224, 0, 0, 251),
                ),
                Outcome::DropNotUnicast,
            ),
        ),
        (
            web1,
            fixture(
                "spoofed source mac",
                udp(Mac([2, 0x42, 1, 2, 3, 4]), WEB2_MAC, WEB1, WEB2),
                Outcome::DropSpoofedMac,
            ),
        ),
        (
            web1,
            fixture(
                "spoofed source ip",
                udp(WEB1_MAC, WEB2_MAC, Ipv4Addr::new(198, 18, 10, 9), WEB2),
                Outcome::DropSpoofedIp,
            ),
        ),
        (
            web1,
            fixture(
                "ipv6",
                packet::ethernet(WEB2_MAC, WEB1_MAC, 0x86dd, &[0x60; 48]),
                Outcome::DropUnsupportedL3,
            ),
        ),
        (
            web1,
            fixture(
                "vlan tag",
                packet::ethernet(WEB2_MAC, WEB1_MAC, 0x8100, &[0; 46]),
                Outcome::DropUnsupportedL3,
            ),
        ),
        (web1, answered_gw),
        (web1, answered_peer),
        (web1, probe),
        (
            web1,
            fixture(
                "arp for another network's container",
                packet::arp_request(WEB1_MAC, WEB1, DB),
                Outcome::DropArpUnanswered,
            ),
        ),
        (
            web1,
            fixture(
                "arp for an address nobody has",
                packet::arp_request(WEB1_MAC, WEB1, Ipv4Addr::new(198, 18, 10, 77)),
                Outcome::DropArpUnanswered,
            ),
        ),
        (
            web1,
            fixture(
                "arp for itself",
                packet::arp_request(WEB1_MAC, WEB1, WEB1),
                Outcome::DropArpUnanswered,
            ),
        ),
        (
            web1,
            fixture(
                "arp with a forged sender mac",
                {
                    let mut f = arp_gw.clone();
                    f[22..28].copy_from_slice(&[2, 0x42, 9, 9, 9, 9]);
                    f
                },
                Outcome::DropSpoofedMac,
            ),
        ),
        (
            web1,
            fixture(
                "arp with a forged sender ip",
                packet::arp_request(WEB1_MAC, WEB2, FRONT_GW),
                Outcome::DropSpoofedIp,
            ),
        ),
        (
            web1,
            fixture(
                "arp reply to the host passes",
                arp_reply_from_container,
                Outcome::Pass,
            ),
        ),
        (
            web1,
            fixture(
                "arp with an unknown opcode",
                arp_probe,
                Outcome::DropMalformed,
            ),
        ),
        (
            web1,
            fixture(
                "arp for ipv6 (wrong ptype)",
                {
                    let mut f = arp_gw.clone();
                    f[16..18].copy_from_slice(&[0x86, 0xdd]);
                    f
                },
                Outcome::DropMalformed,
            ),
        ),
        (
            web1,
            fixture(
                "arp cut after the opcode",
                truncated(arp_gw.clone(), ETH_HLEN + 8),
                Outcome::DropMalformed,
            ),
        ),
        (
            web1,
            fixture(
                "arp cut inside the target address",
                truncated(arp_gw, ETH_HLEN + 26),
                Outcome::DropMalformed,
            ),
        ),
        (
            web1,
            fixture(
                "ipv4 total length beyond the frame",
                {
                    let mut f = udp_frame.clone();
                    f[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&1400u16.to_be_bytes());
                    f
                },
                Outcome::DropMalformed,
            ),
        ),
        (
            web1,
            fixture(
                "ipv4 header length below 20",
                {
                    let mut f = udp_frame.clone();
                    f[ETH_HLEN] = 0x44;
                    f
                },
                Outcome::DropMalformed,
            ),
        ),
        (
            Some(DB),
            fixture(
                "peer found by hash (no peer range)",
                udp(DB_MAC, DB2_MAC, DB, DB2),
                Outcome::Forward,
            ),
        ),
        (Some(DB), {
            let mut f = fixture(
                "arp for a peer found by hash",
                packet::arp_request(DB_MAC, DB, DB2),
                Outcome::ArpReply,
            );
            f.output = Some(arp_reply(DB_MAC, DB, DB2, DB2_MAC));
            f
        }),
        (
            Some(DB),
            fixture(
                "no such peer (no peer range)",
                udp(DB_MAC, HOST_MAC, DB, Ipv4Addr::new(198, 18, 20, 77)),
                Outcome::DropNoEndpoint,
            ),
        ),
        (
            Some(DB),
            fixture(
                "arp for an address nobody has (no peer range)",
                packet::arp_request(DB_MAC, DB, Ipv4Addr::new(198, 18, 20, 4)),
                Outcome::DropArpUnanswered,
            ),
        ),
        (
            Some(DB),
            fixture(
                "to the front network through the gateway",
                udp(DB_MAC, HOST_MAC, DB, WEB1),
                Outcome::DropCrossNetwork,
            ),
        ),
        (
            Some(Q1),
            fixture(
                "icc off: peer of the same network",
                udp(Q1_MAC, Q2_MAC, Q1, Q2),
                Outcome::DropIcc,
            ),
        ),
        (
            Some(Q1),
            fixture(
                "icc off: the gateway is still reachable",
                udp(Q1_MAC, HOST_MAC, Q1, Ipv4Addr::new(198, 18, 30, 1)),
                Outcome::Pass,
            ),
        ),
        (
            Some(I1),
            fixture(
                "internal: nothing leaves",
                udp(I1_MAC, HOST_MAC, I1, OUTSIDE),
                Outcome::DropInternal,
            ),
        ),
        (
            Some(I1),
            fixture(
                "internal: the gateway is reachable",
                udp(I1_MAC, HOST_MAC, I1, Ipv4Addr::new(198, 18, 40, 1)),
                Outcome::Pass,
            ),
        ),
        (
            None,
            fixture(
                "from an interface with no container",
                udp(WEB1_MAC, WEB2_MAC, WEB1, WEB2),
                Outcome::DropUnknownSource,
            ),
        ),
    ]
}

#[test]
fn from_container_fixtures() {
    require_root!();
    let mut ebpf = load();
    let mut maps = fill_maps(&mut ebpf);
    let mut failures = Vec::new();
    for (owner, f) in fixtures() {
        own(&mut maps, owner);
        if let Err(e) = run(&ebpf, &f) {
            failures.push(format!("{}:\n{e}", f.name));
        }
    }
    assert!(
        failures.is_empty(),
        "fixtures failed:\n{}",
        failures.join("\n")
    );
}

/// A SYN from outside to a published port, translated by `from_uplink`, and the
/// container's SYN-ACK, translated back by `from_container` through the flow the first
/// recorded: exact bytes (the incremental checksum updates must equal checksums computed
/// afresh), verdicts, counters, and both conntrack entries.
#[test]
fn published_port_syn_and_reply_translate_exactly() {
    require_root!();
    for (how, ebpf) in both_checksum_ways() {
        eprintln!("-- {how}");
        published_port_syn_and_reply_translate_exactly_with(ebpf);
    }
}

fn published_port_syn_and_reply_translate_exactly_with(mut ebpf: aya::Ebpf) {
    let mut maps = fill_maps(&mut ebpf);
    let host = Ipv4Addr::new(198, 18, 0, 1);
    let client = Ipv4Addr::new(198, 18, 0, 2);
    let (client_mac, uplink_mac) = (Mac([2, 0, 0, 0, 0, 0xc1]), Mac([2, 0, 0, 0, 0, 0xd1]));
    maps.local.insert(&key(host), &1, 0).expect("local address");
    let port = PortKey {
        addr: 0,
        port: 8080u16.to_be(),
        proto: 6,
        pad: 0,
    };
    let target = PortTarget {
        addr: key(WEB1),
        port: 80u16.to_be(),
        pad: 0,
        network_id: 1,
    };
    maps.ports
        .insert(&port, &target, 0)
        .expect("published port");
    own(&mut maps, Some(WEB1));

    let (syn, synack) = (
        packet::tcp_flags::SYN,
        packet::tcp_flags::SYN | packet::tcp_flags::ACK,
    );
    let tcp = |dst_mac, src_mac, src, dst, flags| {
        packet::tcp4_frame(dst_mac, src_mac, src, dst, flags, b"")
    };
    let inbound = Fixture {
        name: "SYN to 0.0.0.0:8080 -> web1:80",
        hook: Hook::FromUplink,
        input: tcp(
            uplink_mac,
            client_mac,
            sock(client, 40000),
            sock(host, 8080),
            syn,
        ),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(tcp(
            WEB1_MAC,
            HOST_MAC,
            sock(client, 40000),
            sock(WEB1, 80),
            syn,
        )),
        outcome: Outcome::Published,
    };
    run(&ebpf, &inbound).unwrap_or_else(|e| panic!("{}:\n{e}", inbound.name));

    let ct: aya::maps::HashMap<_, CtKey, CtEntry> =
        aya::maps::HashMap::try_from(ebpf.map("NB_CT").expect("NB_CT")).expect("hash");
    let mut entries: Vec<(CtKey, CtEntry)> = ct.iter().map(|e| e.expect("entry")).collect();
    entries.sort_by_key(|(_, e)| e.kind);
    let summary: Vec<String> = entries
        .iter()
        .map(|(k, e)| {
            format!(
                "{}:{} -> {}:{} => {}:{} kind {} ifindex {}",
                Ipv4Addr::from(k.saddr.to_ne_bytes()),
                u16::from_be(k.sport),
                Ipv4Addr::from(k.daddr.to_ne_bytes()),
                u16::from_be(k.dport),
                Ipv4Addr::from(e.nat_addr.to_ne_bytes()),
                u16::from_be(e.nat_port),
                e.kind,
                e.ifindex
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "198.18.0.2:40000 -> 198.18.0.1:8080 => 198.18.10.2:80 kind 1 ifindex 100",
            "198.18.10.2:80 -> 198.18.0.2:40000 => 198.18.0.1:8080 kind 2 ifindex 1",
        ]
    );

    let reply = Fixture {
        name: "SYN-ACK web1:80 -> client, source restored to 198.18.0.1:8080",
        hook: Hook::FromContainer,
        input: tcp(
            HOST_MAC,
            WEB1_MAC,
            sock(WEB1, 80),
            sock(client, 40000),
            synack,
        ),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(tcp(
            HOST_MAC,
            WEB1_MAC,
            sock(host, 8080),
            sock(client, 40000),
            synack,
        )),
        outcome: Outcome::PublishedReply,
    };
    run(&ebpf, &reply).unwrap_or_else(|e| panic!("{}:\n{e}", reply.name));

    // Hairpin: web2 to the published port through the host address. Only the destination
    // changes (web1 sees web2 itself); web1's veth is flagged as a NAT target, so its
    // reply is looked up and goes back to web2 from 198.18.0.1:8080.
    let front_gw = Ipv4Addr::new(198, 18, 10, 1);
    maps.local
        .insert(&key(front_gw), &1, 0)
        .expect("gateway is local");
    let one_port = HostConfig {
        uplink_ifindex: 0,
        uplink_addr: 0,
        masq_port_min: 61000,
        masq_port_max: 61000,
        ..HostConfig::default()
    };
    maps.set_host_config(&one_port).expect("config");
    own(&mut maps, Some(WEB2));
    let hairpin = Fixture {
        name: "web2 SYN to 198.18.0.1:8080 -> web1:80, from web2 itself",
        hook: Hook::FromContainer,
        input: tcp(HOST_MAC, WEB2_MAC, sock(WEB2, 40001), sock(host, 8080), syn),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(tcp(
            WEB1_MAC,
            HOST_MAC,
            sock(WEB2, 40001),
            sock(WEB1, 80),
            syn,
        )),
        outcome: Outcome::Hairpin,
    };
    run(&ebpf, &hairpin).unwrap_or_else(|e| panic!("{}:\n{e}", hairpin.name));
    own_with_flags(&mut maps, Some(WEB1), IFACE_NAT_TARGET);
    let hairpin_reply = Fixture {
        name: "web1 SYN-ACK to web2 (same subnet) -> web2 from 198.18.0.1:8080",
        hook: Hook::FromContainer,
        input: tcp(
            HOST_MAC,
            WEB1_MAC,
            sock(WEB1, 80),
            sock(WEB2, 40001),
            synack,
        ),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(tcp(
            WEB2_MAC,
            HOST_MAC,
            sock(host, 8080),
            sock(WEB2, 40001),
            synack,
        )),
        outcome: Outcome::Hairpin,
    };
    run(&ebpf, &hairpin_reply).unwrap_or_else(|e| panic!("{}:\n{e}", hairpin_reply.name));

    // web1 to its own published port: it would see its own address on both ends, so the
    // source becomes its gateway and the one port of the range.
    let to_itself = Fixture {
        name: "web1 SYN to 198.18.0.1:8080 -> web1:80 from the gateway",
        hook: Hook::FromContainer,
        input: tcp(HOST_MAC, WEB1_MAC, sock(WEB1, 40002), sock(host, 8080), syn),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(tcp(
            WEB1_MAC,
            HOST_MAC,
            sock(front_gw, 61000),
            sock(WEB1, 80),
            syn,
        )),
        outcome: Outcome::Hairpin,
    };
    run(&ebpf, &to_itself).unwrap_or_else(|e| panic!("{}:\n{e}", to_itself.name));
    let to_itself_reply = Fixture {
        name: "web1 SYN-ACK to the gateway -> web1 from 198.18.0.1:8080",
        hook: Hook::FromContainer,
        input: tcp(
            HOST_MAC,
            WEB1_MAC,
            sock(WEB1, 80),
            sock(front_gw, 61000),
            synack,
        ),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(tcp(
            WEB1_MAC,
            HOST_MAC,
            sock(host, 8080),
            sock(WEB1, 40002),
            synack,
        )),
        outcome: Outcome::Hairpin,
    };
    run(&ebpf, &to_itself_reply).unwrap_or_else(|e| panic!("{}:\n{e}", to_itself_reply.name));

    // A retransmitted SYN follows the recorded flow.
    run(&ebpf, &inbound).unwrap_or_else(|e| panic!("retransmit:\n{e}"));
    let ct: aya::maps::HashMap<_, CtKey, CtEntry> =
        aya::maps::HashMap::try_from(ebpf.map("NB_CT").expect("NB_CT")).expect("hash");
    assert_eq!(
        ct.iter().count(),
        6,
        "three flows (published, two hairpins), no new entries for a known one"
    );
    hairpin_leftovers_and_clashes(&mut ebpf, &mut maps, host, synack);
}

/// Sets when a masqueraded flow last checked its reply entry.
fn set_reply_checked(ebpf: &mut aya::Ebpf, key: &CtKey, ticks: u32) {
    let mut ct: aya::maps::HashMap<_, CtKey, CtEntry> =
        aya::maps::HashMap::try_from(ebpf.map_mut("NB_CT").expect("NB_CT")).expect("hash");
    let e = ct.get(key, 0).expect("the flow");
    let e = CtEntry {
        reply_checked: ticks,
        ..e
    };
    ct.insert(key, &e, 0).expect("written");
}

fn jiffies() -> u64 {
    netbpf::kernel::clock::jiffies().expect("jiffies")
}

/// Makes a masqueraded flow's next packet check its reply entry (its last check as long
/// ago as the check's ticks, before its last packet).
fn make_reply_check_due(ebpf: &mut aya::Ebpf, key: &CtKey) {
    let last_seen = ct_entry(ebpf, key).expect("the flow").last_seen;
    set_reply_checked(
        ebpf,
        key,
        (last_seen as u32).wrapping_sub(MASQ_REPLY_CHECK_TICKS),
    );
}

/// Removes an entry from NB_CT, as an eviction would (no matter if it is there).
fn remove_entry(ebpf: &mut aya::Ebpf, key: &CtKey) {
    let mut ct: aya::maps::HashMap<_, CtKey, CtEntry> =
        aya::maps::HashMap::try_from(ebpf.map_mut("NB_CT").expect("NB_CT")).expect("hash");
    let _ = ct.remove(key);
}

/// A flow's entry at `key` in NB_CT, if any.
fn ct_entry(ebpf: &aya::Ebpf, key: &CtKey) -> Option<CtEntry> {
    let ct: aya::maps::HashMap<_, CtKey, CtEntry> =
        aya::maps::HashMap::try_from(ebpf.map("NB_CT").expect("NB_CT")).expect("hash");
    ct.get(key, 0).ok()
}

fn ct_key(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> CtKey {
    CtKey {
        saddr: key(src.0),
        daddr: key(dst.0),
        sport: src.1.to_be(),
        dport: dst.1.to_be(),
        proto: 6,
        pad: [0; 3],
    }
}

/// The hairpin flows' edge cases, after `published_port_syn_and_reply_translate_exactly`
/// left web2:40001 -> web1:80 (through `host`:8080) and web1's own flow through the
/// gateway's one port 61000 recorded, web1 flagged as a NAT target.
fn hairpin_leftovers_and_clashes(
    ebpf: &mut aya::Ebpf,
    maps: &mut netbpf::kernel::maps::ContainerMaps,
    host: Ipv4Addr,
    synack: u8,
) {
    let tcp = |dst_mac: Mac, src_mac: Mac, src, dst, flags| {
        packet::tcp4_frame(dst_mac, src_mac, src, dst, flags, b"")
    };
    let front_gw = Ipv4Addr::new(198, 18, 10, 1);
    let forward = ct_key((WEB2, 40001), (host, 8080));
    let reply = ct_key((WEB1, 80), (WEB2, 40001));
    let set = |ebpf: &mut aya::Ebpf, k: &CtKey, e: Option<CtEntry>| {
        let mut ct: aya::maps::HashMap<_, CtKey, CtEntry> =
            aya::maps::HashMap::try_from(ebpf.map_mut("NB_CT").expect("NB_CT")).expect("hash");
        match e {
            Some(e) => ct.insert(k, &e, 0).expect("insert"),
            None => ct.remove(k).expect("remove"),
        }
    };

    // The flow closed; web1 answers a later direct connection from the same client port:
    // its SYN-ACK meets the closed flow's reply entry, which must not translate it.
    let mut closed = ct_entry(ebpf, &reply).expect("hairpin reply entry");
    closed.tcp_state = TCP_CLOSING;
    set(ebpf, &reply, Some(closed));
    let direct = tcp(
        WEB2_MAC,
        WEB1_MAC,
        sock(WEB1, 80),
        sock(WEB2, 40001),
        synack,
    );
    let f = Fixture {
        name: "web1 SYN-ACK of a direct connection, a closed hairpin flow on its tuple",
        hook: Hook::FromContainer,
        input: direct,
        verdict: verdict::TC_ACT_REDIRECT,
        output: None,
        outcome: Outcome::Forward,
    };
    run(ebpf, &f).unwrap_or_else(|e| panic!("{}:\n{e}", f.name));
    assert!(
        ct_entry(ebpf, &reply).is_none(),
        "the closed flow is forgotten"
    );
    assert!(ct_entry(ebpf, &forward).is_none(), "both directions");

    // A leftover reply entry whose forward direction went (evicted): a new SYN on the
    // tuple replaces it and keeps the client's address.
    own(maps, Some(WEB2));
    let syn = packet::tcp_flags::SYN;
    let hairpin = |sport: u16, seen_from: (Ipv4Addr, u16)| Fixture {
        name: "web2 SYN to the published port",
        hook: Hook::FromContainer,
        input: tcp(HOST_MAC, WEB2_MAC, sock(WEB2, sport), sock(host, 8080), syn),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(tcp(
            WEB1_MAC,
            HOST_MAC,
            sock(seen_from.0, seen_from.1),
            sock(WEB1, 80),
            syn,
        )),
        outcome: Outcome::Hairpin,
    };
    let f = hairpin(40004, (WEB2, 40004));
    run(ebpf, &f).unwrap_or_else(|e| panic!("{}:\n{e}", f.name));
    set(ebpf, &ct_key((WEB2, 40004), (host, 8080)), None);
    run(ebpf, &f).unwrap_or_else(|e| panic!("leftover, {}:\n{e}", f.name));
    let renewed = ct_entry(ebpf, &ct_key((WEB1, 80), (WEB2, 40004))).expect("reply entry");
    assert_eq!(
        (renewed.kind, renewed.packets),
        (CT_HAIRPIN_REPLY, 0),
        "a fresh reply entry"
    );
    assert!(ct_entry(ebpf, &ct_key((WEB2, 40004), (host, 8080))).is_some());

    // A live flow of another way in (a VIP's, to the same backend port) holds the reply
    // tuple: the hairpin flow takes the gateway and a port (the range's one, freed first).
    set(ebpf, &ct_key((WEB1, 80), (front_gw, 61000)), None);
    let service_reply = CtEntry {
        kind: CT_SERVICE_REPLY,
        tcp_state: TCP_ESTABLISHED,
        ..CtEntry::default()
    };
    set(
        ebpf,
        &ct_key((WEB1, 80), (WEB2, 40005)),
        Some(service_reply),
    );
    let f = hairpin(40005, (front_gw, 61000));
    run(ebpf, &f).unwrap_or_else(|e| panic!("clash, {}:\n{e}", f.name));
    assert_eq!(
        ct_entry(ebpf, &ct_key((WEB1, 80), (WEB2, 40005))).map(|e| e.kind),
        Some(CT_SERVICE_REPLY),
        "the live flow keeps its entry"
    );
}

/// A container's outbound flow on a masquerading network leaves with the uplink's address
/// and the masquerade port (exact bytes); with the one port of the range taken toward that
/// destination, a second container's flow there is refused with its own reason.
#[test]
fn masquerade_translates_exactly_and_runs_out_of_ports() {
    require_root!();
    for (how, ebpf) in both_checksum_ways() {
        eprintln!("-- {how}");
        masquerade_translates_exactly_and_runs_out_of_ports_with(ebpf);
    }
}

fn masquerade_translates_exactly_and_runs_out_of_ports_with(mut ebpf: aya::Ebpf) {
    let mut maps = fill_maps(&mut ebpf);
    let uplink_addr = Ipv4Addr::new(198, 18, 0, 1);
    let config = HostConfig {
        uplink_ifindex: 1,
        uplink_addr: key(uplink_addr),
        masq_port_min: 61000,
        masq_port_max: 61000,
        ..HostConfig::default()
    };
    maps.set_host_config(&config).expect("config");
    let (syn, out_port) = (packet::tcp_flags::SYN, 61000);
    let tcp = |src_mac, src, dst| packet::tcp4_frame(HOST_MAC, src_mac, src, dst, syn, b"");

    own(&mut maps, Some(WEB1));
    let first = Fixture {
        name: "web1:5555 -> outside:443 leaves as 198.18.0.1:61000",
        hook: Hook::FromContainer,
        input: tcp(WEB1_MAC, sock(WEB1, 5555), sock(OUTSIDE, 443)),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(tcp(
            WEB1_MAC,
            sock(uplink_addr, out_port),
            sock(OUTSIDE, 443),
        )),
        outcome: Outcome::Masquerade,
    };
    run(&ebpf, &first).unwrap_or_else(|e| panic!("{}:\n{e}", first.name));

    // The LRU evicts the reply entry alone: the flow's next check of it claims its port
    // again (nobody took it), and the flow goes on.
    let reply_key = CtKey {
        saddr: key(OUTSIDE),
        daddr: key(uplink_addr),
        sport: 443u16.to_be(),
        dport: 61000u16.to_be(),
        proto: 6,
        pad: [0; 3],
    };
    let forward_key = ct_key((WEB1, 5555), (OUTSIDE, 443));
    // Checked a moment ago: the packet goes out, the entry stays missing until the check is
    // due. Conclusive when the run's own tick (the flow's last_seen) came within the
    // check's ticks of the one set: a few tries.
    let conclusive = (0..5).any(|_| {
        remove_entry(&mut ebpf, &reply_key);
        let checked = jiffies() as u32;
        set_reply_checked(&mut ebpf, &forward_key, checked);
        run(&ebpf, &first).unwrap_or_else(|e| panic!("just checked, {}:\n{e}", first.name));
        let seen = ct_entry(&ebpf, &forward_key).expect("the flow").last_seen as u32;
        let within = seen.wrapping_sub(checked) < MASQ_REPLY_CHECK_TICKS;
        if within {
            assert_eq!(
                ct_entry(&ebpf, &reply_key),
                None,
                "checked before it was due"
            );
        }
        within
    });
    assert!(
        conclusive,
        "no try ran within {MASQ_REPLY_CHECK_TICKS} ticks"
    );
    // Due: its reply entry is claimed again.
    make_reply_check_due(&mut ebpf, &forward_key);
    run(&ebpf, &first).unwrap_or_else(|e| panic!("after eviction, {}:\n{e}", first.name));
    let restored = ct_entry(&ebpf, &reply_key).expect("the reply entry is back");
    let flow = ct_entry(&ebpf, &forward_key).expect("the flow");
    assert_eq!(
        flow.reply_checked, flow.last_seen as u32,
        "the check is recorded at the packet's tick"
    );
    assert_eq!(
        (restored.nat_addr, u16::from_be(restored.nat_port)),
        (key(WEB1), 5555)
    );

    // Evicted, and another container's flow to the same destination took the port before
    // the check: the flow is given up (its entry removed), the other flow's left alone.
    let taken = CtEntry {
        nat_addr: key(WEB2),
        ..restored
    };
    {
        let mut ct: aya::maps::HashMap<_, CtKey, CtEntry> =
            aya::maps::HashMap::try_from(ebpf.map_mut("NB_CT").expect("NB_CT")).expect("hash");
        ct.insert(&reply_key, &taken, 0).expect("written");
    }
    make_reply_check_due(&mut ebpf, &forward_key);
    let given_up = Fixture {
        name: "web1's flow whose port web2's took",
        output: None,
        verdict: verdict::TC_ACT_SHOT,
        outcome: Outcome::DropNatFailed,
        ..first.clone()
    };
    run(&ebpf, &given_up).unwrap_or_else(|e| panic!("{}:\n{e}", given_up.name));
    assert_eq!(ct_entry(&ebpf, &forward_key), None, "the flow is given up");
    assert_eq!(
        ct_entry(&ebpf, &reply_key),
        Some(taken),
        "the other flow's is kept"
    );
    // The other flow gone, web1's SYN takes the port again.
    remove_entry(&mut ebpf, &reply_key);
    run(&ebpf, &first).unwrap_or_else(|e| panic!("anew, {}:\n{e}", first.name));

    own(&mut maps, Some(WEB2));
    let second = fixture(
        "web2:5555 -> outside:443 finds no free port",
        tcp(WEB2_MAC, sock(WEB2, 5555), sock(OUTSIDE, 443)),
        Outcome::DropNoNatPort,
    );
    run(&ebpf, &second).unwrap_or_else(|e| panic!("{}:\n{e}", second.name));

    // A later fragment has no ports to translate: it must not leave with web1's address.
    let mut later_fragment = udp(WEB1_MAC, HOST_MAC, WEB1, OUTSIDE);
    later_fragment[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&0x0010u16.to_be_bytes());
    later_fragment[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
    let sum = packet::checksum(&later_fragment[ETH_HLEN..ETH_HLEN + 20]);
    later_fragment[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&sum.to_be_bytes());
    own(&mut maps, Some(WEB1));
    let fragment = fixture(
        "a later fragment to the outside",
        later_fragment,
        Outcome::DropNotTranslatable,
    );
    run(&ebpf, &fragment).unwrap_or_else(|e| panic!("{}:\n{e}", fragment.name));

    // An ICMP echo takes the masquerade port as its identifier; its reply comes back.
    own(&mut maps, Some(WEB1));
    let echo = Fixture {
        name: "web1 echo id 0x1234 -> outside leaves as 198.18.0.1 id 61000",
        hook: Hook::FromContainer,
        input: packet::icmp4_frame(HOST_MAC, WEB1_MAC, WEB1, OUTSIDE, 8, 0x1234, 7),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(packet::icmp4_frame(
            HOST_MAC,
            WEB1_MAC,
            uplink_addr,
            OUTSIDE,
            8,
            out_port,
            7,
        )),
        outcome: Outcome::Masquerade,
    };
    run(&ebpf, &echo).unwrap_or_else(|e| panic!("{}:\n{e}", echo.name));
    let echo_reply = Fixture {
        name: "echo reply to 198.18.0.1 id 61000 -> web1 id 0x1234",
        hook: Hook::FromUplink,
        input: packet::icmp4_frame(
            Mac([2, 0, 0, 0, 0, 0xd1]),
            Mac([2, 0, 0, 0, 0, 0xc1]),
            OUTSIDE,
            uplink_addr,
            0,
            out_port,
            7,
        ),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(packet::icmp4_frame(
            WEB1_MAC, HOST_MAC, OUTSIDE, WEB1, 0, 0x1234, 7,
        )),
        outcome: Outcome::MasqueradeReply,
    };
    run(&ebpf, &echo_reply).unwrap_or_else(|e| panic!("{}:\n{e}", echo_reply.name));

    // An echo reply from web1 matching the flow of an echo request with identifier 0 (the
    // request's id is its source "port", the reply's its destination): the reply has no
    // source identifier to translate, and its type and code are never written over.
    {
        let mut ct: aya::maps::HashMap<_, CtKey, CtEntry> =
            aya::maps::HashMap::try_from(ebpf.map_mut("NB_CT").expect("NB_CT")).expect("hash");
        let request_flow = CtKey {
            proto: 1,
            ..ct_key((WEB1, 0), (OUTSIDE, 0))
        };
        let out = CtEntry {
            nat_addr: key(uplink_addr),
            nat_port: 61000u16.to_be(),
            kind: netbpf_common::conntrack::CT_MASQ_OUT,
            ifindex: 1,
            ..CtEntry::default()
        };
        ct.insert(&request_flow, &out, 0).expect("insert");
    }
    let reply_id_0 = fixture(
        "web1's echo reply id 0 on an echo request's flow: nothing to translate, dropped",
        packet::icmp4_frame(HOST_MAC, WEB1_MAC, WEB1, OUTSIDE, 0, 0, 7),
        Outcome::DropNatFailed,
    );
    run(&ebpf, &reply_id_0).unwrap_or_else(|e| panic!("{}:\n{e}", reply_id_0.name));

    // The reply to the first flow, arriving on the uplink, goes back into web1.
    let reply = Fixture {
        name: "outside:443 -> 198.18.0.1:61000 is delivered to web1:5555",
        hook: Hook::FromUplink,
        input: packet::tcp4_frame(
            Mac([2, 0, 0, 0, 0, 0xd1]),
            Mac([2, 0, 0, 0, 0, 0xc1]),
            sock(OUTSIDE, 443),
            sock(uplink_addr, out_port),
            syn | packet::tcp_flags::ACK,
            b"",
        ),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(packet::tcp4_frame(
            WEB1_MAC,
            HOST_MAC,
            sock(OUTSIDE, 443),
            sock(WEB1, 5555),
            syn | packet::tcp_flags::ACK,
            b"",
        )),
        outcome: Outcome::MasqueradeReply,
    };
    run(&ebpf, &reply).unwrap_or_else(|e| panic!("{}:\n{e}", reply.name));

    // The connection closes; a new SYN on the same tuple starts a new flow at once. The
    // old flow's reply entry goes with it: otherwise the one port would still be held and
    // the SYN refused (IPVS's port-reuse drop).
    let fin = Fixture {
        name: "web1:5555 -> outside:443 FIN",
        input: packet::tcp4_frame(
            HOST_MAC,
            WEB1_MAC,
            sock(WEB1, 5555),
            sock(OUTSIDE, 443),
            packet::tcp_flags::FIN | packet::tcp_flags::ACK,
            b"",
        ),
        output: Some(packet::tcp4_frame(
            HOST_MAC,
            WEB1_MAC,
            sock(uplink_addr, out_port),
            sock(OUTSIDE, 443),
            packet::tcp_flags::FIN | packet::tcp_flags::ACK,
            b"",
        )),
        ..first.clone()
    };
    run(&ebpf, &fin).unwrap_or_else(|e| panic!("{}:\n{e}", fin.name));
    run(&ebpf, &first).unwrap_or_else(|e| panic!("SYN reusing the closed tuple:\n{e}"));
    let ct: aya::maps::HashMap<_, CtKey, CtEntry> =
        aya::maps::HashMap::try_from(ebpf.map("NB_CT").expect("NB_CT")).expect("hash");
    let tcp_flows: Vec<(CtKey, CtEntry)> = ct
        .iter()
        .map(|e| e.expect("entry"))
        .filter(|(k, _)| k.proto == 6)
        .collect();
    assert_eq!(tcp_flows.len(), 2, "one TCP flow, both directions");
    assert!(
        tcp_flows
            .iter()
            .all(|(_, e)| e.tcp_state == netbpf_common::conntrack::TCP_SYN_SENT),
        "the new flow's entries, not the closed one's"
    );
}

/// The XDP uplink path rewrites by hand (RFC 1624): a SYN and a UDP datagram (with and
/// without a checksum) to published ports, exact bytes.
#[test]
fn xdp_uplink_translates_exactly() {
    require_root!();
    let mut ebpf = load();
    let mut maps = fill_maps(&mut ebpf);
    let host = Ipv4Addr::new(198, 18, 0, 1);
    let client = Ipv4Addr::new(198, 18, 0, 2);
    let (client_mac, uplink_mac) = (Mac([2, 0, 0, 0, 0, 0xc1]), Mac([2, 0, 0, 0, 0, 0xd1]));
    maps.local.insert(&key(host), &1, 0).expect("local address");
    for (port, to, proto) in [(8080u16, 80u16, 6u8), (5353, 53, 17)] {
        let published = PortKey {
            addr: 0,
            port: port.to_be(),
            proto,
            pad: 0,
        };
        let target = PortTarget {
            addr: key(WEB1),
            port: to.to_be(),
            pad: 0,
            network_id: 1,
        };
        maps.ports
            .insert(&published, &target, 0)
            .expect("published port");
    }
    let xdp_redirect = 4;
    let syn = packet::tcp_flags::SYN;
    let tcp = |dst_mac, src_mac, src, dst| packet::tcp4_frame(dst_mac, src_mac, src, dst, syn, b"");
    let udp = |dst_mac, src_mac, src, dst| packet::udp4_frame(dst_mac, src_mac, src, dst, b"query");
    let mut unchecked = udp(
        uplink_mac,
        client_mac,
        sock(client, 40002),
        sock(host, 5353),
    );
    unchecked[ETH_HLEN + 20 + 6..ETH_HLEN + 20 + 8].copy_from_slice(&[0, 0]);
    let mut unchecked_out = udp(WEB1_MAC, HOST_MAC, sock(client, 40002), sock(WEB1, 53));
    unchecked_out[ETH_HLEN + 20 + 6..ETH_HLEN + 20 + 8].copy_from_slice(&[0, 0]);
    for (name, input, output) in [
        (
            "SYN to 198.18.0.1:8080",
            tcp(
                uplink_mac,
                client_mac,
                sock(client, 40000),
                sock(host, 8080),
            ),
            tcp(WEB1_MAC, HOST_MAC, sock(client, 40000), sock(WEB1, 80)),
        ),
        (
            "UDP to 198.18.0.1:5353",
            udp(
                uplink_mac,
                client_mac,
                sock(client, 40001),
                sock(host, 5353),
            ),
            udp(WEB1_MAC, HOST_MAC, sock(client, 40001), sock(WEB1, 53)),
        ),
        (
            "UDP without a checksum keeps none",
            unchecked,
            unchecked_out,
        ),
    ] {
        let f = Fixture {
            name,
            hook: Hook::XdpUplink,
            input,
            verdict: xdp_redirect,
            output: Some(output),
            outcome: Outcome::Published,
        };
        run(&ebpf, &f).unwrap_or_else(|e| panic!("{name}:\n{e}"));
    }
}

/// ICMP errors about translated flows are translated back, quote and all, with every
/// checksum right (exact bytes against packets built afresh): a container's "port
/// unreachable" for a published UDP port leaves from the host's address and quotes the
/// published port; "fragmentation needed" for the published reply and "time exceeded" for
/// a masqueraded SYN come into the container quoting its own address and port, at tc and
/// at XDP. Errors about another container's flow, forged from a host address, or about no
/// known flow are not translated.
#[test]
fn icmp_errors_about_translated_flows_translate_exactly() {
    require_root!();
    let mut ebpf = load();
    let mut maps = fill_maps(&mut ebpf);
    let host = Ipv4Addr::new(198, 18, 0, 1);
    let client = Ipv4Addr::new(198, 18, 0, 2);
    let router = Ipv4Addr::new(198, 18, 0, 254);
    let (client_mac, uplink_mac) = (Mac([2, 0, 0, 0, 0, 0xc1]), Mac([2, 0, 0, 0, 0, 0xd1]));
    maps.local.insert(&key(host), &1, 0).expect("local address");
    let published = PortKey {
        addr: 0,
        port: 5353u16.to_be(),
        proto: IPPROTO_UDP,
        pad: 0,
    };
    let target = PortTarget {
        addr: key(WEB1),
        port: 53u16.to_be(),
        pad: 0,
        network_id: 1,
    };
    maps.ports
        .insert(&published, &target, 0)
        .expect("published port");
    let config = HostConfig {
        uplink_ifindex: 1,
        uplink_addr: key(host),
        masq_port_min: 61000,
        masq_port_max: 61000,
        ..HostConfig::default()
    };
    maps.set_host_config(&config).expect("config");
    own(&mut maps, Some(WEB1));
    let (unreachable, port_unreachable, frag_needed, time_exceeded) = (3, 3, 4, 11);
    let udp_packet = |src, dst, payload: &[u8]| {
        packet::ipv4(
            *SocketAddrV4::ip(&src),
            *SocketAddrV4::ip(&dst),
            IPPROTO_UDP,
            &packet::udp(src, dst, payload),
        )
    };
    let syn_packet = |src: SocketAddrV4, dst: SocketAddrV4| {
        packet::ipv4(
            *src.ip(),
            *dst.ip(),
            packet::IPPROTO_TCP,
            &packet::tcp(src, dst, 1, 0, packet::tcp_flags::SYN, b""),
        )
    };
    let error = |dst_mac, src_mac, src, dst, kind, code, rest, quoted: Vec<u8>| {
        packet::icmp_error_frame(dst_mac, src_mac, src, dst, kind, code, rest, &quoted)
    };
    let translated = |name, hook, input, output, verdict| Fixture {
        name,
        hook,
        input,
        verdict,
        output: Some(output),
        outcome: Outcome::IcmpError,
    };

    // The flows: a published UDP port, a masqueraded TCP connection.
    // A UDP query to 198.18.0.1:5353, delivered to web1:53 with its source kept.
    let query_to_web1 = |name, hook, (dst_mac, src_mac), from: SocketAddrV4, outcome| Fixture {
        name,
        hook,
        input: packet::udp4_frame(dst_mac, src_mac, from, sock(host, 5353), b"query"),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(packet::udp4_frame(
            WEB1_MAC,
            HOST_MAC,
            from,
            sock(WEB1, 53),
            b"query",
        )),
        outcome,
    };
    let query = query_to_web1(
        "UDP client:40001 -> 198.18.0.1:5353",
        Hook::FromUplink,
        (uplink_mac, client_mac),
        sock(client, 40001),
        Outcome::Published,
    );
    run(&ebpf, &query).unwrap_or_else(|e| panic!("{}:\n{e}", query.name));
    let syn = Fixture {
        name: "web1:5555 -> outside:443 leaves as 198.18.0.1:61000",
        hook: Hook::FromContainer,
        input: packet::tcp4_frame(
            HOST_MAC,
            WEB1_MAC,
            sock(WEB1, 5555),
            sock(OUTSIDE, 443),
            packet::tcp_flags::SYN,
            b"",
        ),
        verdict: verdict::TC_ACT_REDIRECT,
        output: Some(packet::tcp4_frame(
            HOST_MAC,
            WEB1_MAC,
            sock(host, 61000),
            sock(OUTSIDE, 443),
            packet::tcp_flags::SYN,
            b"",
        )),
        outcome: Outcome::Masquerade,
    };
    run(&ebpf, &syn).unwrap_or_else(|e| panic!("{}:\n{e}", syn.name));

    let mut fixtures = vec![translated(
        "web1's port unreachable leaves from 198.18.0.1 quoting 198.18.0.1:5353",
        Hook::FromContainer,
        error(
            HOST_MAC,
            WEB1_MAC,
            WEB1,
            client,
            unreachable,
            port_unreachable,
            0,
            udp_packet(sock(client, 40001), sock(WEB1, 53), b"query"),
        ),
        error(
            HOST_MAC,
            WEB1_MAC,
            host,
            client,
            unreachable,
            port_unreachable,
            0,
            udp_packet(sock(client, 40001), sock(host, 5353), b"query"),
        ),
        verdict::TC_ACT_REDIRECT,
    )];
    for (hook, verdict) in [
        (Hook::FromUplink, verdict::TC_ACT_REDIRECT),
        (Hook::XdpUplink, 4),
    ] {
        fixtures.push(translated(
            "fragmentation needed for the published reply reaches web1 quoting web1:53",
            hook,
            error(
                uplink_mac,
                client_mac,
                router,
                host,
                unreachable,
                frag_needed,
                1400,
                udp_packet(sock(host, 5353), sock(client, 40001), b"answer"),
            ),
            error(
                WEB1_MAC,
                HOST_MAC,
                router,
                WEB1,
                unreachable,
                frag_needed,
                1400,
                udp_packet(sock(WEB1, 53), sock(client, 40001), b"answer"),
            ),
            verdict,
        ));
        fixtures.push(translated(
            "time exceeded for the masqueraded SYN reaches web1 quoting web1:5555",
            hook,
            error(
                uplink_mac,
                client_mac,
                router,
                host,
                time_exceeded,
                0,
                0,
                syn_packet(sock(host, 61000), sock(OUTSIDE, 443)),
            ),
            error(
                WEB1_MAC,
                HOST_MAC,
                router,
                WEB1,
                time_exceeded,
                0,
                0,
                syn_packet(sock(WEB1, 5555), sock(OUTSIDE, 443)),
            ),
            verdict,
        ));
    }
    for f in &fixtures {
        run(&ebpf, f).unwrap_or_else(|e| panic!("{}:\n{e}", f.name));
    }

    // Not translated: web2 quoting web1's flow (and nothing leaves its masquerading
    // network untranslated), an error forged with the host's address, an unknown flow.
    own(&mut maps, Some(WEB2));
    let about_web1 = error(
        HOST_MAC,
        WEB2_MAC,
        WEB2,
        client,
        unreachable,
        port_unreachable,
        0,
        udp_packet(sock(client, 40001), sock(WEB1, 53), b"query"),
    );
    let forged = error(
        uplink_mac,
        client_mac,
        host,
        host,
        unreachable,
        frag_needed,
        1400,
        udp_packet(sock(host, 5353), sock(client, 40001), b"answer"),
    );
    let unknown = error(
        uplink_mac,
        client_mac,
        router,
        host,
        unreachable,
        port_unreachable,
        0,
        udp_packet(sock(host, 5353), sock(client, 40009), b"answer"),
    );
    let untouched = [
        fixture(
            "web2 quoting web1's flow",
            about_web1,
            Outcome::DropNotTranslatable,
        ),
        Fixture {
            hook: Hook::FromUplink,
            ..fixture(
                "an error forged from 198.18.0.1",
                forged,
                Outcome::DropSpoofedIp,
            )
        },
        Fixture {
            hook: Hook::FromUplink,
            ..fixture("an error about no known flow", unknown, Outcome::Pass)
        },
    ];
    for f in &untouched {
        run(&ebpf, f).unwrap_or_else(|e| panic!("{}:\n{e}", f.name));
    }

    let port_unreachable_frame = |(dst_mac, src_mac): (Mac, Mac), src, dst, quoted| {
        error(
            dst_mac,
            src_mac,
            src,
            dst,
            unreachable,
            port_unreachable,
            0,
            quoted,
        )
    };
    // A hairpin flow (web2 -> 198.18.0.1:5353 -> web1:53, the source kept): web1's port
    // unreachable goes back into web2 from 198.18.0.1, quoting 198.18.0.1:5353.
    own(&mut maps, Some(WEB2));
    let hairpin = query_to_web1(
        "UDP web2:40002 -> 198.18.0.1:5353 -> web1:53",
        Hook::FromContainer,
        (HOST_MAC, WEB2_MAC),
        sock(WEB2, 40002),
        Outcome::Hairpin,
    );
    run(&ebpf, &hairpin).unwrap_or_else(|e| panic!("{}:\n{e}", hairpin.name));
    own_with_flags(&mut maps, Some(WEB1), IFACE_NAT_TARGET);
    let refused = translated(
        "web1's port unreachable to web2 comes from 198.18.0.1 quoting 198.18.0.1:5353",
        Hook::FromContainer,
        port_unreachable_frame(
            (WEB2_MAC, WEB1_MAC),
            WEB1,
            WEB2,
            udp_packet(sock(WEB2, 40002), sock(WEB1, 53), b"query"),
        ),
        port_unreachable_frame(
            (WEB2_MAC, HOST_MAC),
            host,
            WEB2,
            udp_packet(sock(WEB2, 40002), sock(host, 5353), b"query"),
        ),
        verdict::TC_ACT_REDIRECT,
    );
    run(&ebpf, &refused).unwrap_or_else(|e| panic!("{}:\n{e}", refused.name));
    // The other way: web2's port unreachable about web1's answer (which came from
    // 198.18.0.1:5353) goes into web1 quoting web1:53.
    own(&mut maps, Some(WEB2));
    let answer_refused = translated(
        "web2's port unreachable about the answer reaches web1 quoting web1:53",
        Hook::FromContainer,
        port_unreachable_frame(
            (HOST_MAC, WEB2_MAC),
            WEB2,
            host,
            udp_packet(sock(host, 5353), sock(WEB2, 40002), b"answer"),
        ),
        port_unreachable_frame(
            (WEB1_MAC, HOST_MAC),
            WEB2,
            WEB1,
            udp_packet(sock(WEB1, 53), sock(WEB2, 40002), b"answer"),
        ),
        verdict::TC_ACT_REDIRECT,
    );
    run(&ebpf, &answer_refused).unwrap_or_else(|e| panic!("{}:\n{e}", answer_refused.name));
}

/// Every outcome `from_container` can give has a fixture. Not here: `published` (the
/// uplink's), `published_reply` (needs a recorded flow: see
/// `published_port_syn_and_reply_translate_exactly`), and a failed translation (the kernel
/// refusing a write, which no crafted packet causes).
#[test]
fn fixtures_cover_every_container_outcome() {
    let fixtures = fixtures();
    // The translation outcomes have tests of their own above, with recorded flows.
    let skipped = [
        Outcome::Published,
        Outcome::PublishedReply,
        Outcome::Masquerade,
        Outcome::MasqueradeReply,
        Outcome::Hairpin,
        Outcome::DropNoNatPort,
        Outcome::DropNotTranslatable,
        Outcome::DropNatFailed,
        Outcome::IcmpError,
        // Services: service_fixtures.rs.
        Outcome::Service,
        Outcome::ServiceReply,
        Outcome::ServiceReset,
        Outcome::DropNoBackend,
        Outcome::ServiceUnreachable,
    ];
    for outcome in Outcome::ALL.into_iter().filter(|o| !skipped.contains(o)) {
        assert!(
            fixtures.iter().any(|(_, f)| f.outcome == outcome),
            "{outcome:?} not covered"
        );
    }
}
