//! The kernel programs under BPF_PROG_TEST_RUN: crafted packets in; exact verdicts, output
//! bytes and counter deltas out.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};
use netbpf::kernel::{object, stats};
use netbpf_common::{
    maps,
    stats::{Counter, Hook, Outcome},
};
use netbpf_tests::{
    packet::{self, ETH_HLEN, ETH_P_IPV4, Fixture, Mac, byte_diff, verdict},
    require_root,
};

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
fn fixtures_for(hook: Hook) -> Vec<Fixture> {
    let (pass, drop) = match hook {
        Hook::FromUplink => (verdict::TC_ACT_OK, verdict::TC_ACT_SHOT),
        Hook::XdpUplink => (verdict::XDP_PASS, verdict::XDP_DROP),
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

/// Loads every program with private maps (nothing pinned, nothing attached).
fn load() -> Ebpf {
    let mut ebpf = object::open(None).expect("object loads");
    for hook in Hook::ALL {
        let program = ebpf.program_mut(hook.name()).expect("program exists");
        match hook {
            Hook::FromUplink => {
                let p: &mut SchedClassifier = program.try_into().expect("tc program");
                p.load().expect("tc program verifies");
            }
            Hook::XdpUplink => {
                let p: &mut Xdp = program.try_into().expect("xdp program");
                p.load().expect("xdp program verifies");
            }
        }
    }
    ebpf
}

fn counters(ebpf: &Ebpf) -> Vec<stats::StatRow> {
    let map = ebpf.map(maps::STATS).expect("stats map");
    let array: PerCpuArray<&MapData, Counter> = PerCpuArray::try_from(map).expect("per-CPU array");
    stats::read(&array).expect("stats read")
}

fn run(ebpf: &Ebpf, fixture: &Fixture) -> Result<(), String> {
    let before = counters(ebpf);
    let program = ebpf.program(fixture.hook.name()).expect("program exists");
    let mut out = vec![0u8; fixture.input.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(&fixture.input),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let result = match fixture.hook {
        Hook::FromUplink => <&SchedClassifier>::try_from(program)
            .expect("tc")
            .test_run(opts),
        Hook::XdpUplink => <&Xdp>::try_from(program).expect("xdp").test_run(opts),
    }
    .map_err(|e| format!("test_run: {e}: {:?}", std::error::Error::source(&e)))?;

    let mut problems = String::new();
    if result.return_value != fixture.verdict {
        problems += &format!(
            "verdict: expected {}, got {}\n",
            fixture.verdict, result.return_value
        );
    }
    out.truncate(result.data_size_out as usize);
    let expected_out = fixture.output.as_ref().unwrap_or(&fixture.input);
    if &out != expected_out {
        problems += &format!("output bytes differ:\n{}", byte_diff(expected_out, &out));
    }
    let after = counters(ebpf);
    for (b, a) in before.iter().zip(&after) {
        let expected = if a.hook == fixture.hook.name() && a.outcome == fixture.outcome.name() {
            (1, fixture.input.len() as u64)
        } else {
            (0, 0)
        };
        let delta = (a.packets - b.packets, a.bytes - b.bytes);
        if delta != expected {
            problems += &format!(
                "counter {}/{}: expected +{expected:?} (packets, bytes), got +{delta:?}\n",
                a.hook, a.outcome
            );
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn run_all(hook: Hook) {
    let ebpf = load();
    let failures: Vec<String> = fixtures_for(hook)
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
    for hook in Hook::ALL {
        let fixtures = fixtures_for(hook);
        for outcome in Outcome::ALL {
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
