//! Shared by the integration tests: driving the `netbpf` binary and looking at what the
//! kernel holds.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod fixture;
pub mod world;

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

/// What one TCP exchange through [`tcp_echo`] showed.
pub struct Echo {
    /// The peer address the server saw.
    pub server_saw: std::net::SocketAddr,
    /// The client's own address, and the peer address it saw.
    pub client_local: std::net::SocketAddr,
    pub client_peer: std::net::SocketAddr,
    pub reply: [u8; 4],
}

/// One TCP exchange: `client` connects to `target` and sends `msg`; a server thread accepts
/// on `listener` (in whatever namespace it was bound) and echoes it.
pub fn tcp_echo(
    listener: &std::net::TcpListener,
    client: &Netns,
    target: std::net::SocketAddrV4,
    msg: &[u8; 4],
) -> Echo {
    use std::io::{Read as _, Write as _};

    let limit = Duration::from_secs(5);
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            let mut conn = netbpf_tests::process::accept_within(listener, limit).expect("accept");
            let peer = conn.peer_addr().expect("peer");
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).expect("server read");
            conn.write_all(&buf).expect("echo");
            peer
        });
        let (client_local, client_peer, reply) = client.run(|| {
            let mut conn =
                std::net::TcpStream::connect_timeout(&target.into(), limit).expect("connect");
            conn.set_read_timeout(Some(limit)).expect("timeout");
            conn.write_all(msg).expect("write");
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).expect("the echo comes back");
            (
                conn.local_addr().expect("local"),
                conn.peer_addr().expect("peer"),
                buf,
            )
        });
        Echo {
            server_saw: server.join().expect("server thread"),
            client_local,
            client_peer,
            reply,
        }
    })
}

/// Checks every TCP and UDP frame `capture` received (see
/// `Captured::transport_checksum_ok`): panics, naming `place`, on the first whose
/// transport checksum is wrong for its addresses, and unless at least `at_least` were
/// checked, all of them left to offload when the senders `offload`, none when they don't
/// (so that the path meant is the one checked).
pub fn assert_checksums(
    place: &str,
    capture: &netbpf_tests::capture::Capture,
    offload: bool,
    at_least: usize,
) {
    let frames = capture
        .received(Duration::from_secs(5))
        .expect("captured frames");
    let (mut checked, mut pending) = (0, 0);
    for c in &frames {
        let Some(ok) = c.transport_checksum_ok() else {
            continue;
        };
        checked += 1;
        pending += usize::from(c.checksum_pending);
        assert!(
            ok,
            "{place}: wrong transport checksum (left to offload: {}) in {:02x?}",
            c.checksum_pending, c.frame
        );
    }
    if offload {
        assert!(
            pending >= at_least,
            "{place}: {pending} of {checked} TCP/UDP frames left their checksum to offload, \
             {at_least} expected"
        );
    } else {
        assert!(
            checked >= at_least,
            "{place}: only {checked} TCP/UDP frames"
        );
        assert_eq!(pending, 0, "{place}: offload is off");
    }
}

/// Turns a namespace's transmit checksum offload on or off on `iface`.
pub fn tx_offload(ns: &Netns, iface: &str, on: bool) {
    ns.exec(
        "ethtool",
        &["-K", iface, "tx", if on { "on" } else { "off" }],
    )
    .expect("ethtool");
}
