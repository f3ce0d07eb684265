//! The kernel programs under BPF_PROG_TEST_RUN: crafted packets in; exact verdicts, output
//! bytes and counter deltas out.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4};

use netbpf_common::stats::{Hook, Outcome};
use netbpf_tests::{
    packet::{self, ETH_HLEN, ETH_P_IPV4, Fixture, Mac, verdict},
    require_root,
};
use support::fixture::{load, run};

const HOST: Mac = Mac([0x02, 0, 0xc6, 0x12, 0, 0x01]);
const CLIENT: Mac = Mac([0x02, 0, 0xc6, 0x12, 0, 0x02]);

fn client() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 40000)
}

fn server() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 53)
}

fn udp_frame() -> Vec<u8> {
    packet::udp4_frame(HOST, CLIENT, client(), server(), b"netbpf fixture")
}

/// A valid UDP frame with one header byte changed.
fn udp_frame_with(offset: usize, value: u8) -> Vec<u8> {
    let mut frame = udp_frame();
    frame[offset] = value;
    frame
}

/// The same packet decisions apply at tc and at XDP; only the verdict values differ.
fn uplink_fixtures(hook: Hook) -> Vec<Fixture> {
    let (pass, drop) = match hook {
        Hook::FromUplink => (verdict::TC_ACT_OK, verdict::TC_ACT_SHOT),
        Hook::XdpUplink => (verdict::XDP_PASS, verdict::XDP_DROP),
        other => unreachable!("{} fixtures are elsewhere", other.name()),
    };
    let fixture = |name, input, outcome| Fixture {
        name,
        hook,
        input,
        verdict: if outcome == Outcome::Pass { pass } else { drop },
        output: None,
        outcome,
    };
    let mut truncated = udp_frame();
    truncated.truncate(ETH_HLEN + 10);
    let total_len_at = ETH_HLEN + 2;
    let mut fixtures = vec![
        fixture("udp passes", udp_frame(), Outcome::Pass),
        fixture(
            "tcp syn passes",
            packet::tcp4_frame(
                HOST,
                CLIENT,
                client(),
                server(),
                packet::tcp_flags::SYN,
                b"",
            ),
            Outcome::Pass,
        ),
        fixture(
            "arp passes",
            packet::arp_request(CLIENT, *client().ip(), *server().ip()),
            Outcome::Pass,
        ),
        fixture(
            "ipv6 passes untouched",
            packet::ethernet(HOST, CLIENT, 0x86dd, &[0x60; 40]),
            Outcome::Pass,
        ),
        fixture(
            "ipv4 version 6",
            udp_frame_with(ETH_HLEN, 0x65),
            Outcome::DropMalformed,
        ),
        fixture(
            "ipv4 header length 16",
            udp_frame_with(ETH_HLEN, 0x44),
            Outcome::DropMalformed,
        ),
        fixture(
            "total length beyond the frame",
            udp_frame_with(total_len_at + 1, 0xff),
            Outcome::DropMalformed,
        ),
        fixture(
            "total length below the header",
            {
                let mut f = udp_frame_with(total_len_at, 0);
                f[total_len_at + 1] = 19;
                f
            },
            Outcome::DropMalformed,
        ),
    ];
    // The kernel refuses (EINVAL) an skb test run whose IPv4 header is cut short, so the
    // truncated case runs through XDP only; both hooks share the check.
    if hook == Hook::XdpUplink {
        fixtures.push(fixture(
            "truncated ipv4 header",
            truncated,
            Outcome::DropMalformed,
        ));
    }
    fixtures
}

fn run_all(hook: Hook) {
    let ebpf = load();
    let failures: Vec<String> = uplink_fixtures(hook)
        .iter()
        .filter_map(|f| {
            run(&ebpf, f)
                .err()
                .map(|e| format!("{} / {}:\n{e}", hook.name(), f.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "fixtures failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn tc_program_fixtures() {
    require_root!();
    run_all(Hook::FromUplink);
}

#[test]
fn xdp_program_fixtures() {
    require_root!();
    run_all(Hook::XdpUplink);
}

/// The fixture list itself: every outcome is exercised, and IPv4 frames are well formed
/// except where a fixture means them not to be.
#[test]
fn fixtures_cover_every_outcome() {
    for hook in [Hook::FromUplink, Hook::XdpUplink] {
        let fixtures = uplink_fixtures(hook);
        for outcome in [Outcome::Pass, Outcome::DropMalformed] {
            assert!(
                fixtures.iter().any(|f| f.outcome == outcome),
                "{outcome:?} not covered"
            );
        }
    }
    assert_eq!(
        u16::from_be_bytes([udp_frame()[12], udp_frame()[13]]),
        ETH_P_IPV4
    );
}
