//! Running fixtures through BPF_PROG_TEST_RUN and checking verdict, bytes and counters.

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
    programs::{CgroupSockAddr, SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};
use netbpf::kernel::{object, stats};
use netbpf_common::{
    maps,
    stats::{Counter, Hook},
};
use netbpf_tests::packet::{Fixture, byte_diff};

/// Loads every program with private maps (nothing pinned, nothing attached).
pub fn load() -> Ebpf {
    verified(object::open(None).expect("object loads"))
}

/// The two ways the tc programs keep a translated packet's checksums: by the checksum
/// state they read off the kernel's sk_buff (this kernel), and through the csum helpers
/// alone (a kernel without BTF). Translations must give the same bytes both ways.
pub fn both_checksum_ways() -> [(&'static str, Ebpf); 2] {
    [
        ("checksum state read directly", load()),
        (
            "csum helpers only",
            verified(object::open_with_csum_helpers().expect("object loads")),
        ),
    ]
}

/// Loads every program of `ebpf`.
fn verified(mut ebpf: Ebpf) -> Ebpf {
    for hook in Hook::ALL {
        let program = ebpf.program_mut(hook.name()).expect("program exists");
        match hook {
            Hook::FromUplink | Hook::FromContainer => {
                let p: &mut SchedClassifier = program.try_into().expect("tc program");
                p.load().expect("tc program verifies");
            }
            Hook::XdpUplink => {
                let p: &mut Xdp = program.try_into().expect("xdp program");
                p.load().expect("xdp program verifies");
            }
            // Socket programs: verified too, though BPF_PROG_TEST_RUN cannot run them.
            Hook::SockConnect4 | Hook::SockSendmsg4 | Hook::SockRecvmsg4 | Hook::SockPeername4 => {
                let p: &mut CgroupSockAddr = program.try_into().expect("socket program");
                p.load().expect("socket program verifies");
            }
        }
    }
    ebpf
}

pub fn counters(ebpf: &Ebpf) -> Vec<stats::StatRow> {
    let map = ebpf.map(maps::STATS).expect("stats map");
    let array: PerCpuArray<&MapData, Counter> = PerCpuArray::try_from(map).expect("per-CPU array");
    stats::read(&array).expect("stats read")
}

pub fn run(ebpf: &Ebpf, fixture: &Fixture) -> Result<(), String> {
    check(ebpf, fixture, true)
}

/// As [`run`], for a fixture whose output another check looks at: verdict and counters
/// only.
pub fn run_without_bytes(ebpf: &Ebpf, fixture: &Fixture) -> Result<(), String> {
    check(ebpf, fixture, false)
}

fn check(ebpf: &Ebpf, fixture: &Fixture, bytes: bool) -> Result<(), String> {
    let before = counters(ebpf);
    let program = ebpf.program(fixture.hook.name()).expect("program exists");
    let mut out = vec![0u8; fixture.input.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(&fixture.input),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let result = match fixture.hook {
        Hook::FromUplink | Hook::FromContainer => <&SchedClassifier>::try_from(program)
            .expect("tc")
            .test_run(opts),
        Hook::XdpUplink => <&Xdp>::try_from(program).expect("xdp").test_run(opts),
        other => panic!("{} cannot run under BPF_PROG_TEST_RUN", other.name()),
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
    if bytes && &out != expected_out {
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
