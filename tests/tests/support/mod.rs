//! Shared by the integration tests: driving the `netbpf` binary and looking at what the
//! kernel holds.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod fixture;

use std::{
    ffi::CString,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use aya::programs::{
    SchedClassifier, TcAttachType,
    links::{FdLink, PinnedLink},
};
use netbpf_common::stats::{Hook, Outcome};
use netbpf_tests::{netbpf_bin, netns::Netns, process::wait_for};
use serde_json::Value;

/// Runs `netbpf --netns NS ARGS...` and returns its output, whatever the exit status.
pub fn netbpf(ns: &Netns, args: &[&str]) -> Output {
    Command::new(netbpf_bin())
        .args(["--netns", ns.name()])
        .args(args)
        .output()
        .expect("netbpf runs")
}

/// Runs netbpf and insists on success, showing its stderr otherwise.
pub fn netbpf_ok(ns: &Netns, args: &[&str]) -> String {
    let out = netbpf(ns, args);
    assert!(
        out.status.success(),
        "netbpf {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The counters as `netbpf show stats -o json` prints them, read by a separate process.
pub fn stats(ns: &Netns) -> Vec<Value> {
    let json = netbpf_ok(ns, &["show", "stats", "-o", "json"]);
    serde_json::from_str(&json).expect("stats JSON parses")
}

/// (packets, bytes) of one counter in `stats` output.
pub fn counter(rows: &[Value], hook: Hook, outcome: Outcome) -> (u64, u64) {
    let row = rows
        .iter()
        .find(|r| r["hook"] == hook.name() && r["outcome"] == outcome.name())
        .unwrap_or_else(|| panic!("no row for {} / {}", hook.name(), outcome.name()));
    (
        row["packets"].as_u64().expect("packets is a number"),
        row["bytes"].as_u64().expect("bytes is a number"),
    )
}

/// Names of the programs attached at tcx ingress of `iface` in `ns`.
pub fn tcx_ingress_programs(ns: &Netns, iface: &str) -> Vec<String> {
    let iface = CString::new(iface).expect("interface name");
    ns.run(|| {
        let (_, programs) =
            SchedClassifier::query_tcx(iface.as_c_str(), TcAttachType::Ingress).expect("query tcx");
        programs
            .iter()
            .map(|p| p.name_as_str().unwrap_or("?").to_owned())
            .collect()
    })
}

/// Whether an XDP program is attached to `iface` in `ns` (as `ip link` reports it).
pub fn xdp_attached(ns: &Netns, iface: &str) -> bool {
    let out = ns
        .exec("ip", &["-d", "link", "show", iface])
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until the counter of (hook, outcome) shows `packets`, then returns all rows; panics
/// with the last rows if it never does.
pub fn wait_for_count(ns: &Netns, hook: Hook, outcome: Outcome, packets: u64) -> Vec<Value> {
    let mut last = Vec::new();
    wait_for(Duration::from_secs(5), || {
        last = stats(ns);
        (counter(&last, hook, outcome).0 == packets).then(|| last.clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "{}/{} never reached {packets}: {last:?}",
            hook.name(),
            outcome.name()
        )
    })
}

/// (link id, program id) of a pinned link.
pub fn link_ids(pin: &Path) -> (u32, u32) {
    let link = FdLink::from(PinnedLink::from_pin(pin).expect("pinned link"));
    let info = link.info().expect("link info");
    (info.id(), info.program_id())
}
