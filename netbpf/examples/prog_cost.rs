//! Per-packet cost of the datapath's paths under BPF_PROG_TEST_RUN, each beside an empty
//! program of its own type (tc or XDP) in the same run: `runs` rounds, each running every
//! path `repeat` times, the paths interleaved so that machine noise hits them alike.
//! Prints JSON (ns per packet). Run by `cargo xtask bench`; needs root.
//!
//! A test run repeats on the packet the previous repetition rewrote. For the translated
//! paths the conntrack table therefore also holds an entry for the translated tuple that
//! translates it back: the packet alternates between two tuples, every repetition a
//! conntrack hit with a rewrite. Before timing, every path is run once against the
//! entries the datapath itself would hold and must give its verdict, its exact output
//! bytes and its counter; during timing, every run must move the path's counter by
//! exactly `repeat` and leave the packet as it came in (an even `repeat`). A path that
//! falls back to another outcome fails the run, loudly.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context as _, bail, ensure};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{Program, SchedClassifier, TestRun as _, TestRunOptions, TestRunResult, Xdp},
};
use netbpf::kernel::{
    maps::{ContainerMaps, addr_key},
    object::{self, BENCH_EMPTY_TC, BENCH_EMPTY_XDP},
    stats,
};
use netbpf_common::{
    conntrack::{
        CT_MASQ_OUT, CT_MASQ_REPLY, CT_PUBLISHED_IN, CT_PUBLISHED_REPLY, CtEntry, CtKey,
        HostConfig, TCP_ESTABLISHED,
    },
    maps as map_names,
    net::{EndpointInfo, IfaceInfo, NET_ICC, NetworkInfo, PeerInfo, name_bytes},
    stats::{Counter, Hook, Outcome},
};
use netbpf_tests::packet::{self, Mac, tcp_flags, verdict};
use serde_json::json;

const WEB1: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const WEB2: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);
const WEB1_MAC: Mac = Mac([0x02, 0x42, 198, 18, 10, 2]);
const WEB2_MAC: Mac = Mac([0x02, 0x42, 198, 18, 10, 3]);
/// The host side of every container's veth.
const VETH_HOST_MAC: Mac = Mac([2, 0, 0, 0, 0, 1]);
/// The host's uplink (its address is also where ports are published and flows are
/// masqueraded to) and the outside client behind it.
const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const UPLINK_MAC: Mac = Mac([0x02, 0x00, 0xc6, 0x12, 0x00, 0x01]);
const UPLINK_IFINDEX: u32 = 3;
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const OUTSIDE_MAC: Mac = Mac([0x02, 0x00, 0xc6, 0x12, 0x00, 0x02]);
/// web1 sits behind the test run's device (loopback, ifindex 1), web2 behind ifindex 2.
const WEB1_IFINDEX: u32 = 1;
const WEB2_IFINDEX: u32 = 2;

const XDP_REDIRECT: u32 = 4;
/// Per-packet budgets above the empty program of the same type (ns).
const FORWARD_BUDGET: f64 = 40.0;
const TRANSLATED_BUDGET: f64 = 80.0;

fn sock(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}

/// An established TCP segment (ACK + PSH, 64 bytes of payload) between two addresses.
fn tcp(dst_mac: Mac, src_mac: Mac, src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    packet::tcp4_frame(
        dst_mac,
        src_mac,
        src,
        dst,
        tcp_flags::ACK | tcp_flags::PSH,
        &[0x5a; 64],
    )
}

fn ct_key(src: SocketAddrV4, dst: SocketAddrV4) -> CtKey {
    CtKey {
        saddr: addr_key(*src.ip()),
        daddr: addr_key(*dst.ip()),
        sport: src.port().to_be(),
        dport: dst.port().to_be(),
        proto: packet::IPPROTO_TCP,
        pad: [0; 3],
    }
}

/// An established flow's entry: rewrite to `to`, send through `ifindex`, with `macs`
/// (destination, source) for the kinds that deliver into a container.
fn ct_entry(kind: u8, to: SocketAddrV4, ifindex: u32, macs: (Mac, Mac)) -> CtEntry {
    CtEntry {
        nat_addr: addr_key(*to.ip()),
        nat_port: to.port().to_be(),
        kind,
        tcp_state: TCP_ESTABLISHED,
        ifindex,
        packets: 1,
        dst_mac: macs.0.0,
        src_mac: macs.1.0,
        ..CtEntry::default()
    }
}

/// One measured path: a program, the packet it gets, what it must do with it.
struct Path {
    name: &'static str,
    what: &'static str,
    program: &'static str,
    /// The path of the empty program of the same type, measured beside it.
    empty: &'static str,
    input: Vec<u8>,
    verdict: u32,
    /// The output of one run against the datapath's own entries (`None`: the input).
    output: Option<Vec<u8>>,
    /// The counter every run must move (`None`: an empty program, which counts nothing).
    counter: Option<(Hook, Outcome)>,
    budget: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(Ok(5), |a| a.parse()).context("runs")?;
    let repeat: u32 = args
        .next()
        .map_or(Ok(1_000_000), |a| a.parse())
        .context("repeat")?;
    ensure!(
        repeat.is_multiple_of(2),
        "repeat must be even: translated packets alternate between two tuples"
    );

    let mut ebpf = object::open(None)?;
    for name in ["from_container", "from_uplink", BENCH_EMPTY_TC] {
        let prog: &mut SchedClassifier = ebpf.program_mut(name).context(name)?.try_into()?;
        prog.load()?;
    }
    for name in ["xdp_uplink", BENCH_EMPTY_XDP] {
        let prog: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
        prog.load()?;
    }
    let mut maps = ContainerMaps::take_from(&mut ebpf)?;
    fill_container_maps(&mut maps)?;
    // North-south: the uplink's address is the host's, flows masquerade to it.
    maps.local.insert(&addr_key(UPLINK), &1, 0)?;
    maps.set_host_config(&HostConfig {
        uplink_ifindex: UPLINK_IFINDEX,
        uplink_addr: addr_key(UPLINK),
        masq_port_min: 61000,
        masq_port_max: 65535,
        ..HostConfig::default()
    })?;

    let paths = paths();
    // The entries the datapath itself creates for these flows, and one run of each path
    // against them: verdict, exact bytes (incremental checksums equal fresh ones), counter.
    let mut ct: HashMap<MapData, CtKey, CtEntry> =
        HashMap::try_from(ebpf.take_map(map_names::CT).context("NB_CT")?)?;
    for (key, entry) in datapath_entries() {
        ct.insert(&key, &entry, 0)?;
    }
    for path in &paths {
        let (_, out) = run_checked(&ebpf, path, 1)?;
        let expected = path.output.as_ref().unwrap_or(&path.input);
        if &out != expected {
            bail!(
                "{}: output differs from the expected translation:\n{}",
                path.name,
                packet::byte_diff(expected, &out)
            );
        }
    }
    // Then the entries that translate every translated tuple back, so that each
    // repetition is a conntrack hit with a rewrite; two runs bring the packet back.
    for (key, entry) in alternating_entries() {
        ct.insert(&key, &entry, 0)?;
    }
    for path in &paths {
        let (_, out) = run_checked(&ebpf, path, 2)?;
        ensure!(
            out == path.input,
            "{}: two runs do not bring the packet back:\n{}",
            path.name,
            packet::byte_diff(&path.input, &out)
        );
    }

    let mut results: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for _ in 0..runs {
        for (path, ns) in paths.iter().zip(&mut results) {
            let (result, out) = run_checked(&ebpf, path, repeat)?;
            ensure!(
                out == path.input,
                "{}: after {repeat} runs the packet is not back where it started",
                path.name
            );
            ns.push(result.duration.as_nanos() as f64);
        }
    }
    let report: Vec<_> = paths
        .iter()
        .zip(&results)
        .map(|(p, ns)| {
            json!({
                "name": p.name, "what": p.what, "program": p.program, "empty": p.empty,
                "budget_above_empty": p.budget, "ns": ns,
            })
        })
        .collect();
    println!(
        "{}",
        json!({ "runs": runs, "repeat": repeat, "paths": report })
    );
    Ok(())
}

/// One network; web1 behind the test device, web2 its peer.
fn fill_container_maps(maps: &mut ContainerMaps) -> anyhow::Result<()> {
    let network = NetworkInfo {
        subnet: addr_key(Ipv4Addr::new(198, 18, 10, 0)),
        gateway: addr_key(Ipv4Addr::new(198, 18, 10, 1)),
        prefix_len: 24,
        flags: NET_ICC,
        peer_base: 0,
        name: name_bytes("front"),
    };
    maps.networks.insert(&1, &network, 0)?;
    for (addr, mac, ifindex) in [
        (WEB1, WEB1_MAC, WEB1_IFINDEX),
        (WEB2, WEB2_MAC, WEB2_IFINDEX),
    ] {
        let ep = EndpointInfo {
            mac: mac.0,
            host_mac: VETH_HOST_MAC.0,
            ifindex,
            network_id: 1,
            spec: 0,
            name: name_bytes("bench"),
        };
        maps.endpoints.insert(&addr_key(addr), &ep, 0)?;
        let peer = PeerInfo {
            ifindex,
            network_id: 1,
            mac: mac.0,
            pad: [0; 2],
        };
        maps.set_peer(&network, addr, &peer)?;
    }
    let own = IfaceInfo {
        addr: addr_key(WEB1),
        network_id: 1,
        subnet: network.subnet,
        mask: addr_key(Ipv4Addr::new(255, 255, 255, 0)),
        gateway: network.gateway,
        net_flags: network.flags,
        mac: WEB1_MAC.0,
        host_mac: VETH_HOST_MAC.0,
        peer_base: network.peer_base,
    };
    maps.set_iface(WEB1_IFINDEX, &own)?;
    Ok(())
}

// The flows of the translated paths (ports: published 8080 -> web1:80 for a client at
// OUTSIDE:40000; web1:40000 masqueraded as UPLINK:61000 toward OUTSIDE:9000 (its replies);
// web1:41000 masqueraded as UPLINK:62000 toward OUTSIDE:9001 (outbound)).
fn client() -> SocketAddrV4 {
    sock(OUTSIDE, 40000)
}
fn published() -> SocketAddrV4 {
    sock(UPLINK, 8080)
}
fn web1_http() -> SocketAddrV4 {
    sock(WEB1, 80)
}
fn masq_peer() -> SocketAddrV4 {
    sock(OUTSIDE, 9000)
}
fn masq_public() -> SocketAddrV4 {
    sock(UPLINK, 61000)
}
fn masq_private() -> SocketAddrV4 {
    sock(WEB1, 40000)
}
fn out_peer() -> SocketAddrV4 {
    sock(OUTSIDE, 9001)
}
fn out_public() -> SocketAddrV4 {
    sock(UPLINK, 62000)
}
fn out_private() -> SocketAddrV4 {
    sock(WEB1, 41000)
}
/// What a repeated from_container run rewrites the source to (see `alternating_entries`).
fn reply_alias() -> SocketAddrV4 {
    sock(WEB1, published().port())
}
fn out_alias() -> SocketAddrV4 {
    sock(WEB1, out_public().port())
}

fn paths() -> Vec<Path> {
    let udp = packet::udp4_frame(
        WEB2_MAC,
        WEB1_MAC,
        sock(WEB1, 4000),
        sock(WEB2, 80),
        &[0; 64],
    );
    let spoofed = packet::udp4_frame(
        WEB2_MAC,
        Mac([2, 9, 9, 9, 9, 9]),
        sock(WEB1, 4000),
        sock(WEB2, 80),
        &[0; 64],
    );
    // No ARP path: the test run repeats on the packet it rewrote, so after the first
    // round an ARP request has become a reply.
    let to_gateway = packet::udp4_frame(
        VETH_HOST_MAC,
        WEB1_MAC,
        sock(WEB1, 4000),
        sock(Ipv4Addr::new(198, 18, 10, 1), 80),
        &[0; 64],
    );
    let from_outside = |dst| tcp(UPLINK_MAC, OUTSIDE_MAC, client(), dst);
    let published_in = from_outside(published());
    let published_in_out = tcp(WEB1_MAC, VETH_HOST_MAC, client(), web1_http());
    let masq_reply = tcp(UPLINK_MAC, OUTSIDE_MAC, masq_peer(), masq_public());
    let masq_reply_out = tcp(WEB1_MAC, VETH_HOST_MAC, masq_peer(), masq_private());
    let from_web1 = |src, dst| tcp(VETH_HOST_MAC, WEB1_MAC, src, dst);

    let path = |name, what, program, input: &Vec<u8>, verdict, counter| Path {
        name,
        what,
        program,
        empty: "empty_tc",
        input: input.clone(),
        verdict,
        output: None,
        counter,
        budget: None,
    };
    let xdp = |p: Path| Path {
        empty: "empty_xdp",
        ..p
    };
    let translated = |p: Path, output: Vec<u8>| Path {
        output: Some(output),
        budget: Some(TRANSLATED_BUDGET),
        ..p
    };
    vec![
        path(
            "empty_tc",
            "empty tc program",
            BENCH_EMPTY_TC,
            &udp,
            verdict::TC_ACT_OK,
            None,
        ),
        xdp(path(
            "empty_xdp",
            "empty XDP program",
            BENCH_EMPTY_XDP,
            &udp,
            verdict::XDP_PASS,
            None,
        )),
        Path {
            budget: Some(FORWARD_BUDGET),
            ..path(
                "forward",
                "from_container: to a peer of the same network (bpf_redirect_peer)",
                "from_container",
                &udp,
                verdict::TC_ACT_REDIRECT,
                Some((Hook::FromContainer, Outcome::Forward)),
            )
        },
        path(
            "to_host",
            "from_container: to the gateway (handed to the stack)",
            "from_container",
            &to_gateway,
            verdict::TC_ACT_OK,
            Some((Hook::FromContainer, Outcome::Pass)),
        ),
        path(
            "drop_spoofed_mac",
            "from_container: spoofed source MAC (dropped)",
            "from_container",
            &spoofed,
            verdict::TC_ACT_SHOT,
            Some((Hook::FromContainer, Outcome::DropSpoofedMac)),
        ),
        translated(
            path(
                "published_in_tc",
                "from_uplink: outside -> published port, established (conntrack hit, DNAT, MACs, bpf_redirect_peer)",
                "from_uplink",
                &published_in,
                verdict::TC_ACT_REDIRECT,
                Some((Hook::FromUplink, Outcome::Published)),
            ),
            published_in_out.clone(),
        ),
        translated(
            xdp(path(
                "published_in_xdp",
                "xdp_uplink: the same packet in XDP (conntrack hit, DNAT, MACs, XDP_REDIRECT)",
                "xdp_uplink",
                &published_in,
                XDP_REDIRECT,
                Some((Hook::XdpUplink, Outcome::Published)),
            )),
            published_in_out,
        ),
        translated(
            path(
                "published_reply",
                "from_container: the published server's reply (conntrack hit, source restored, bpf_redirect_neigh)",
                "from_container",
                &from_web1(web1_http(), client()),
                verdict::TC_ACT_REDIRECT,
                Some((Hook::FromContainer, Outcome::PublishedReply)),
            ),
            from_web1(published(), client()),
        ),
        translated(
            path(
                "masquerade_out",
                "from_container: outbound masqueraded flow, established (conntrack hit, reply entry checked, SNAT, bpf_redirect_neigh)",
                "from_container",
                &from_web1(out_private(), out_peer()),
                verdict::TC_ACT_REDIRECT,
                Some((Hook::FromContainer, Outcome::Masquerade)),
            ),
            from_web1(out_public(), out_peer()),
        ),
        translated(
            path(
                "masquerade_reply_tc",
                "from_uplink: reply of a masqueraded flow (conntrack hit, DNAT, MACs, bpf_redirect_peer)",
                "from_uplink",
                &masq_reply,
                verdict::TC_ACT_REDIRECT,
                Some((Hook::FromUplink, Outcome::MasqueradeReply)),
            ),
            masq_reply_out.clone(),
        ),
        translated(
            xdp(path(
                "masquerade_reply_xdp",
                "xdp_uplink: the same packet in XDP (conntrack hit, DNAT, MACs, XDP_REDIRECT)",
                "xdp_uplink",
                &masq_reply,
                XDP_REDIRECT,
                Some((Hook::XdpUplink, Outcome::MasqueradeReply)),
            )),
            masq_reply_out,
        ),
    ]
}

/// The entries the datapath keeps for the flows of the translated paths, as
/// `from_uplink` and `from_container` create them.
fn datapath_entries() -> Vec<(CtKey, CtEntry)> {
    let into_web1 = (WEB1_MAC, VETH_HOST_MAC);
    let none = (Mac([0; 6]), Mac([0; 6]));
    vec![
        // Published port: in from outside, and the server's reply.
        (
            ct_key(client(), published()),
            ct_entry(CT_PUBLISHED_IN, web1_http(), WEB1_IFINDEX, into_web1),
        ),
        (
            ct_key(web1_http(), client()),
            ct_entry(CT_PUBLISHED_REPLY, published(), UPLINK_IFINDEX, none),
        ),
        // web1's masqueraded flow to OUTSIDE:9000: its replies.
        (
            ct_key(masq_peer(), masq_public()),
            ct_entry(CT_MASQ_REPLY, masq_private(), WEB1_IFINDEX, into_web1),
        ),
        (
            ct_key(masq_private(), masq_peer()),
            ct_entry(CT_MASQ_OUT, masq_public(), UPLINK_IFINDEX, none),
        ),
        // web1's masqueraded flow to OUTSIDE:9001: outbound, and its reply entry.
        (
            ct_key(out_private(), out_peer()),
            ct_entry(CT_MASQ_OUT, out_public(), UPLINK_IFINDEX, none),
        ),
        (
            ct_key(out_peer(), out_public()),
            ct_entry(CT_MASQ_REPLY, out_private(), WEB1_IFINDEX, into_web1),
        ),
    ]
}

/// Entries keyed by each translated tuple that translate it back, so that repeated runs
/// alternate between two tuples, each a conntrack hit with a full rewrite.
///
/// On the uplink paths the way back is the exact reverse translation (address, port and
/// MACs). `from_container` checks the sender first: a packet whose source is already
/// translated would be dropped as spoofed on the next repetition. Its entries therefore
/// rewrite the source address to web1's own and move only the port, on both tuples: the
/// same lookups and the same checksum helper calls (which cost the same whatever the
/// values); the real rewrite is the one checked against exact bytes before timing.
fn alternating_entries() -> Vec<(CtKey, CtEntry)> {
    let back_out = (UPLINK_MAC, OUTSIDE_MAC);
    let none = (Mac([0; 6]), Mac([0; 6]));
    vec![
        // Uplink: the delivered packet translated back to what arrived.
        (
            ct_key(client(), web1_http()),
            ct_entry(CT_PUBLISHED_IN, published(), WEB1_IFINDEX, back_out),
        ),
        (
            ct_key(masq_peer(), masq_private()),
            ct_entry(CT_MASQ_REPLY, masq_public(), WEB1_IFINDEX, back_out),
        ),
        // from_container, published reply: web1:80 <-> web1:8080 toward the client.
        (
            ct_key(web1_http(), client()),
            ct_entry(CT_PUBLISHED_REPLY, reply_alias(), UPLINK_IFINDEX, none),
        ),
        (
            ct_key(reply_alias(), client()),
            ct_entry(CT_PUBLISHED_REPLY, web1_http(), UPLINK_IFINDEX, none),
        ),
        // from_container, masquerade: web1:41000 <-> web1:62000 toward OUTSIDE:9001, each
        // with the reply entry the outbound path checks for.
        (
            ct_key(out_private(), out_peer()),
            ct_entry(CT_MASQ_OUT, out_alias(), UPLINK_IFINDEX, none),
        ),
        (
            ct_key(out_alias(), out_peer()),
            ct_entry(CT_MASQ_OUT, out_private(), UPLINK_IFINDEX, none),
        ),
        (
            ct_key(out_peer(), out_alias()),
            ct_entry(
                CT_MASQ_REPLY,
                out_private(),
                WEB1_IFINDEX,
                (WEB1_MAC, VETH_HOST_MAC),
            ),
        ),
        (
            ct_key(out_peer(), out_private()),
            ct_entry(
                CT_MASQ_REPLY,
                out_alias(),
                WEB1_IFINDEX,
                (WEB1_MAC, VETH_HOST_MAC),
            ),
        ),
    ]
}

fn counter(ebpf: &Ebpf, which: Option<(Hook, Outcome)>) -> anyhow::Result<u64> {
    let Some((hook, outcome)) = which else {
        return Ok(0);
    };
    let map = ebpf.map(map_names::STATS).context("NB_STATS")?;
    let array: PerCpuArray<&MapData, Counter> = PerCpuArray::try_from(map)?;
    Ok(stats::find(&stats::read(&array)?, hook, outcome).packets)
}

/// Runs `path` `repeat` times; fails unless the verdict is the path's and its counter
/// rose by exactly `repeat` (every repetition took the path). Returns the result and
/// the packet as it came out.
fn run_checked(ebpf: &Ebpf, path: &Path, repeat: u32) -> anyhow::Result<(TestRunResult, Vec<u8>)> {
    let before = counter(ebpf, path.counter)?;
    let mut out = vec![0u8; path.input.len() + 64];
    let opts = TestRunOptions {
        data_in: Some(&path.input),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    };
    let result = match ebpf.program(path.program).context(path.program)? {
        Program::SchedClassifier(p) => p.test_run(opts),
        Program::Xdp(p) => p.test_run(opts),
        _ => bail!("{}: neither tc nor XDP", path.program),
    }
    .with_context(|| format!("{}: test run", path.name))?;
    if result.return_value != path.verdict {
        bail!(
            "{}: verdict {} instead of {}",
            path.name,
            result.return_value,
            path.verdict
        );
    }
    let after = counter(ebpf, path.counter)?;
    if let Some((hook, outcome)) = path.counter
        && after - before != u64::from(repeat)
    {
        bail!(
            "{}: {}/{} rose by {} in {repeat} runs: some took another path",
            path.name,
            hook.name(),
            outcome.name(),
            after - before
        );
    }
    out.truncate(result.data_size_out as usize);
    Ok((result, out))
}
