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
//!
//! A new flow cannot be repeated that way: the first repetition records the flow, the
//! others find it. New flows to a VIP are therefore timed one test run each (repeat 1),
//! every run a SYN from a source port no flow has, beside the empty programs timed the
//! same way, the paths taking turns run by run; a round's figure is the median of its
//! runs. Every run must give its verdict and one of the exact frames its service's
//! backends allow; after each round, each service's backends must have opened exactly one
//! connection per run, the hook's counter must have risen by one per run, and conntrack
//! must hold exactly the two entries each new flow records (which are then removed, so
//! that every round starts from the same table).

use std::{
    collections::{BTreeMap, HashSet},
    net::{Ipv4Addr, SocketAddrV4},
};

use anyhow::{Context as _, bail, ensure};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{Program, SchedClassifier, TestRun as _, TestRunOptions, TestRunResult, Xdp},
};
use netbpf::{
    kernel::{
        maps::{ContainerMaps, addr_key},
        object::{self, BENCH_CT_INSERT, BENCH_EMPTY_TC, BENCH_EMPTY_XDP},
        stats,
    },
    plan::sched::{identity, maglev_size, maglev_table, wrr_sequence},
};
use netbpf_common::{
    conntrack::{
        CT_MASQ_OUT, CT_MASQ_REPLY, CT_PUBLISHED_IN, CT_PUBLISHED_REPLY, CT_SERVICE,
        CT_SERVICE_REPLY, CT_SERVICE_REPLY_OUT, CtEntry, CtKey, HostConfig, TCP_ESTABLISHED,
    },
    maps as map_names,
    monitor::{MON_DROPS, MonitorLease},
    net::{EndpointInfo, IfaceInfo, NET_ICC, NetworkInfo, PeerInfo, name_bytes},
    ports::{PortKey, PortTarget},
    service::{Backend, BackendConns, SVC_EXTERNAL, Scheduler, Service, ServiceKey},
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

const XDP_DROP: u32 = 1;
const XDP_REDIRECT: u32 = 4;
/// Per-packet budgets above the empty program of the same type (ns).
const FORWARD_BUDGET: f64 = 40.0;
const TRANSLATED_BUDGET: f64 = 80.0;
const NEW_FLOW_BUDGET: f64 = 150.0;

/// The services: one per scheduler at 198.19.0.<1 + its number>:80 for the containers,
/// and an external mh service for the outside; each over web2's ports 8080-8082, weighted
/// 3:2:1.
const SVC_PORT: u16 = 80;
const BACKEND_PORTS: [u16; 3] = [8080, 8081, 8082];
const BACKEND_WEIGHTS: [u16; 3] = [3, 2, 1];
const EXTERNAL_VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
/// Where the established VIP flows alternate to (see `alternating_entries`), and the
/// backend ids that let those aliases pass the backend check.
const ALIAS_VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 2, 1);
const ALIAS_BACKEND: u32 = 901;
const VIP_BACKEND: u32 = 902;
const EXTERNAL_VIP_BACKEND: u32 = 903;

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

/// A service flow's entry: as [`ct_entry`], on backend `backend`.
fn svc_entry(kind: u8, to: SocketAddrV4, ifindex: u32, macs: (Mac, Mac), backend: u32) -> CtEntry {
    CtEntry {
        backend_id: backend,
        ..ct_entry(kind, to, ifindex, macs)
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
    let new_flows: usize = args
        .next()
        .map_or(Ok(2000), |a| a.parse())
        .context("new flows per round")?;
    ensure!(
        repeat.is_multiple_of(2),
        "repeat must be even: translated packets alternate between two tuples"
    );

    let mut ebpf = object::open(None)?;
    for name in [
        "from_container",
        "from_uplink",
        BENCH_EMPTY_TC,
        BENCH_CT_INSERT,
    ] {
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

    let mut svc_maps = ServiceMaps::take(&mut ebpf)?;
    fill_services(&mut svc_maps)?;
    let mut lease: Array<MapData, MonitorLease> =
        Array::try_from(ebpf.take_map(map_names::MON_ON).context("NB_MON_ON")?)?;
    let mut ring = RingBuf::try_from(ebpf.take_map(map_names::MONITOR).context("NB_MONITOR")?)?;

    let paths = paths();
    let flows = new_flows_paths();
    ensure!(
        new_flows * flows.len() <= usize::from(u16::MAX - FIRST_SPORT),
        "too many new flows per round: each needs a source port of its own"
    );
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

    let fixed: HashSet<CtKey> = datapath_entries()
        .into_iter()
        .chain(alternating_entries())
        .map(|(k, _)| k)
        .collect();

    // Profiling aid: `PROG_COST_PROFILE=<path>` runs only that path, `runs` times, so that
    // `perf record -a` sees nothing else (prints ns per packet of each run).
    if let Ok(only) = std::env::var("PROG_COST_PROFILE") {
        let path = paths
            .iter()
            .find(|p| p.name == only)
            .with_context(|| format!("no path named {only}"))?;
        for _ in 0..runs {
            let (result, _) = run_checked(&ebpf, path, repeat)?;
            println!("{}", result.duration.as_nanos());
        }
        if let Ok(secs) = std::env::var("PROG_COST_HOLD") {
            std::thread::sleep(std::time::Duration::from_secs(secs.parse()?));
        }
        return Ok(());
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut flow_results: Vec<Vec<f64>> = vec![Vec::new(); flows.len()];
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
        let medians = new_flow_round(&ebpf, &svc_maps, &mut ct, &fixed, &flows, new_flows)?;
        for (ns, median) in flow_results.iter_mut().zip(medians) {
            ns.push(median);
        }
    }
    // The monitor's event path: the same drop with no monitor and with a lease.
    let spoofed = paths
        .iter()
        .find(|p| p.name == "drop_spoofed_mac")
        .context("the spoofed-MAC drop path")?;
    let (mon_off, mon_on) = monitor_costs(&ebpf, spoofed, &mut lease, &mut ring, runs)?;
    // The new-flow paths at growing numbers of published ports and services.
    let scaled = scale_costs(
        &ebpf,
        &mut maps,
        &mut svc_maps,
        &mut ct,
        &fixed,
        runs,
        new_flows,
    )?;

    let mut report: Vec<_> = paths
        .iter()
        .zip(&results)
        .map(|(p, ns)| {
            json!({
                "name": p.name, "what": p.what, "program": p.program, "empty": p.empty,
                "budget_above_empty": p.budget, "ns": ns, "method": "repeat",
            })
        })
        .collect();
    report.extend(flows.iter().zip(&flow_results).map(|(f, ns)| {
        json!({
            "name": f.name, "what": f.what, "program": f.program, "empty": f.empty,
            "budget_above_empty": f.budget, "ns": ns, "method": "single",
        })
    }));
    for (name, what, ns) in [
        (
            "drop_monitor_off",
            "from_container: the spoofed-MAC drop, no monitor attached (NB_MON_ON empty: the \
             event path is one array lookup)",
            mon_off,
        ),
        (
            "drop_monitor_on",
            "from_container: the same drop with a monitor's lease (wants drops): every drop \
             writes its event into the NB_MONITOR ring buffer",
            mon_on,
        ),
    ] {
        report.push(json!({
            "name": name, "what": what, "program": "from_container", "empty": "empty_tc",
            "budget_above_empty": null, "ns": ns, "method": "monitor",
        }));
    }
    report.extend(scaled);
    println!(
        "{}",
        json!({
            "runs": runs, "repeat": repeat, "new_flows": new_flows, "paths": report,
            "monitor_repeat": MON_REPEAT, "monitor_runs": MON_RUNS,
        })
    );
    Ok(())
}

/// The monitor paths' runs: [`MON_RUNS`] test runs of [`MON_REPEAT`] repetitions per round,
/// the ring buffer (room for about 5,400 events) emptied after each, so that with a lease
/// every drop really writes its event.
const MON_REPEAT: u32 = 4000;
const MON_RUNS: usize = 250;

/// `path` (a drop) with NB_MON_ON empty and with a lease wanting drops, taking turns round
/// by round; a round's figure is the median of its runs (ns per packet). Every run with the
/// lease must have written exactly one event per repetition, and every run without none.
fn monitor_costs(
    ebpf: &Ebpf,
    path: &Path,
    lease: &mut Array<MapData, MonitorLease>,
    ring: &mut RingBuf<MapData>,
    runs: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let attached = MonitorLease {
        until: u64::MAX / 2,
        wants: MON_DROPS,
        pad: 0,
    };
    for _ in 0..runs {
        for (leased, out) in [(false, &mut off), (true, &mut on)] {
            let value = if leased {
                attached
            } else {
                MonitorLease::default()
            };
            lease.set(0, &value, 0)?;
            let mut ns = Vec::with_capacity(MON_RUNS);
            for _ in 0..MON_RUNS {
                let (result, _) = run_checked(ebpf, path, MON_REPEAT)?;
                ns.push(result.duration.as_nanos() as f64);
                let mut events = 0u32;
                while ring.next().is_some() {
                    events += 1;
                }
                let expected = if leased { MON_REPEAT } else { 0 };
                ensure!(
                    events == expected,
                    "{}: {events} monitor events in {MON_REPEAT} drops ({expected} expected)",
                    path.name
                );
            }
            out.push(median(&ns));
        }
    }
    lease.set(0, &MonitorLease::default(), 0)?;
    Ok((off, on))
}

/// The counts the scaling figures are taken at: (published ports, services).
const SCALE_COUNTS: [(usize, usize); 3] = [(1, 1), (1000, 1000), (5000, 10_000)];
const SCALE_FIRST_PORT: u16 = 20000;
/// Filler services: ids from here, their backends' ids from `SCALE_FIRST_BACKEND`, their
/// tables from `SCALE_FIRST_TABLE`, 16 words each.
const SCALE_FIRST_SERVICE: u32 = 100;
const SCALE_FIRST_BACKEND: u32 = 20_000;
const SCALE_FIRST_TABLE: u32 = 200_000;

fn scale_vip(i: usize) -> SocketAddrV4 {
    sock(
        Ipv4Addr::new(198, 19, 100 + (i / 250) as u8, 1 + (i % 250) as u8),
        SVC_PORT,
    )
}

fn scale_backends(i: usize) -> Vec<u32> {
    (0..BACKEND_PORTS.len())
        .map(|j| SCALE_FIRST_BACKEND + (i * BACKEND_PORTS.len() + j) as u32)
        .collect()
}

/// The new flows to a published port and to a VIP with more and more ports and services
/// in the maps (every port and service alike; the measured ones the last added), timed one
/// run at a time beside the empty tc program, `runs` rounds of `n` runs at each count.
fn scale_costs(
    ebpf: &Ebpf,
    maps: &mut ContainerMaps,
    svc_maps: &mut ServiceMaps,
    ct: &mut HashMap<MapData, CtKey, CtEntry>,
    fixed: &HashSet<CtKey>,
    runs: usize,
    n: usize,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let (mut ports, mut services) = (0usize, 0usize);
    let mut report = Vec::new();
    for (stage, (port_count, service_count)) in SCALE_COUNTS.into_iter().enumerate() {
        while ports < port_count {
            let key = PortKey {
                addr: 0,
                port: (SCALE_FIRST_PORT + ports as u16).to_be(),
                proto: packet::IPPROTO_TCP,
                pad: 0,
            };
            let target = PortTarget {
                addr: addr_key(WEB1),
                port: 80u16.to_be(),
                pad: 0,
                network_id: 1,
            };
            maps.ports.insert(&key, &target, 0)?;
            ports += 1;
        }
        while services < service_count {
            add_service_at(
                svc_maps,
                SCALE_FIRST_SERVICE + services as u32,
                scale_vip(services),
                Scheduler::Random,
                0,
                &scale_backends(services),
                SCALE_FIRST_TABLE + 16 * services as u32,
            )?;
            services += 1;
        }
        let port = SCALE_FIRST_PORT + (port_count - 1) as u16;
        let vip = scale_vip(service_count - 1);
        let empty = format!("empty_tc_single_{stage}");
        let flows = vec![
            NewFlowPath {
                name: empty.clone(),
                what: "empty tc program, timed one run at a time".to_owned(),
                program: BENCH_EMPTY_TC,
                empty: "",
                verdict: verdict::TC_ACT_OK,
                counter: None,
                backends: Vec::new(),
                ct_entries: 0,
                budget: None,
                frames: Box::new(|sport| {
                    let input = syn(UPLINK_MAC, OUTSIDE_MAC, sock(OUTSIDE, sport), published());
                    (input.clone(), vec![input])
                }),
            },
            NewFlowPath {
                name: format!("published_new_{port_count}"),
                what: format!(
                    "from_uplink: a new flow (SYN) from outside to the last of {port_count} \
                     published ports (NB_PORTS lookup, both directions recorded, DNAT, MACs, \
                     bpf_redirect_peer)"
                ),
                program: "from_uplink",
                empty: "",
                verdict: verdict::TC_ACT_REDIRECT,
                counter: Some((Hook::FromUplink, Outcome::Published)),
                backends: Vec::new(),
                ct_entries: 2,
                budget: None,
                frames: Box::new(move |sport| {
                    let client = sock(OUTSIDE, sport);
                    (
                        syn(UPLINK_MAC, OUTSIDE_MAC, client, sock(UPLINK, port)),
                        vec![syn(WEB1_MAC, VETH_HOST_MAC, client, web1_http())],
                    )
                }),
            },
            NewFlowPath {
                name: format!("vip_new_random_{service_count}"),
                what: format!(
                    "from_container: a new flow (SYN) to the last of {service_count} services \
                     (random over 3 backends)"
                ),
                program: "from_container",
                empty: "",
                verdict: verdict::TC_ACT_REDIRECT,
                counter: Some((Hook::FromContainer, Outcome::Service)),
                backends: scale_backends(service_count - 1),
                ct_entries: 2,
                budget: None,
                frames: Box::new(move |sport| {
                    to_vip(VETH_HOST_MAC, WEB1_MAC, sock(WEB1, sport), vip)
                }),
            },
        ];
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); flows.len()];
        for _ in 0..runs {
            let medians = new_flow_round(ebpf, svc_maps, ct, fixed, &flows, n)?;
            for (ns, m) in samples.iter_mut().zip(medians) {
                ns.push(m);
            }
        }
        for ((flow, ns), (series, count)) in flows.iter().zip(samples).zip([
            (None, None),
            (Some("published port, new flow"), Some(port_count)),
            (Some("VIP, new flow (random)"), Some(service_count)),
        ]) {
            report.push(json!({
                "name": flow.name, "what": flow.what, "program": flow.program,
                "empty": empty, "budget_above_empty": null, "ns": ns, "method": "scale",
                "series": series, "count": count,
            }));
        }
    }
    Ok(report)
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
/// web1's established flow to a VIP, and an outside client's to the external VIP.
fn vip_client() -> SocketAddrV4 {
    sock(WEB1, 45000)
}
fn client_ext() -> SocketAddrV4 {
    sock(OUTSIDE, 45001)
}
/// The VIP of the container services' `scheduler`.
fn vip_of(scheduler: Scheduler) -> SocketAddrV4 {
    sock(Ipv4Addr::new(198, 19, 0, 1 + scheduler as u8), SVC_PORT)
}
/// A service's `i`th backend (every service has the same three: web2's ports).
fn backend_addr(i: usize) -> SocketAddrV4 {
    sock(WEB2, BACKEND_PORTS[i])
}
/// Service `service`'s `i`th backend's id.
fn backend_id(service: u32, i: usize) -> u32 {
    service * 10 + i as u32
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
    // The ARP path is timed one run at a time (see `new_flows_paths`): a repeated run
    // would answer its own reply.
    let spoofed_ip = packet::udp4_frame(
        WEB2_MAC,
        WEB1_MAC,
        sock(Ipv4Addr::new(198, 18, 10, 77), 4000),
        sock(WEB2, 80),
        &[0; 64],
    );
    let no_endpoint = packet::udp4_frame(
        VETH_HOST_MAC,
        WEB1_MAC,
        sock(WEB1, 4000),
        sock(Ipv4Addr::new(198, 18, 10, 99), 80),
        &[0; 64],
    );
    let forged_host = packet::udp4_frame(
        UPLINK_MAC,
        OUTSIDE_MAC,
        sock(UPLINK, 4000),
        sock(UPLINK, 8080),
        &[0; 64],
    );
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
    let vip_from_outside = tcp(
        UPLINK_MAC,
        OUTSIDE_MAC,
        client_ext(),
        sock(EXTERNAL_VIP, SVC_PORT),
    );
    let vip_from_outside_out = tcp(WEB2_MAC, VETH_HOST_MAC, client_ext(), backend_addr(0));

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
        path(
            "drop_spoofed_ip",
            "from_container: spoofed source address (dropped)",
            "from_container",
            &spoofed_ip,
            verdict::TC_ACT_SHOT,
            Some((Hook::FromContainer, Outcome::DropSpoofedIp)),
        ),
        path(
            "drop_no_endpoint",
            "from_container: to an address of the network no container has (dropped)",
            "from_container",
            &no_endpoint,
            verdict::TC_ACT_SHOT,
            Some((Hook::FromContainer, Outcome::DropNoEndpoint)),
        ),
        path(
            "drop_uplink_tc",
            "from_uplink: a packet from outside forged with the host's address (dropped)",
            "from_uplink",
            &forged_host,
            verdict::TC_ACT_SHOT,
            Some((Hook::FromUplink, Outcome::DropSpoofedIp)),
        ),
        xdp(path(
            "drop_uplink_xdp",
            "xdp_uplink: the same packet in XDP (dropped)",
            "xdp_uplink",
            &forged_host,
            XDP_DROP,
            Some((Hook::XdpUplink, Outcome::DropSpoofedIp)),
        )),
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
                "from_container: outbound masqueraded flow, established (conntrack hit, SNAT, bpf_redirect_neigh; its reply entry checked once per 25 ticks, so at the first of a run's repeats)",
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
        translated(
            path(
                "vip_established",
                "from_container: to a VIP, established (conntrack hit, backend check, DNAT, MACs, backend traffic counted, bpf_redirect_peer)",
                "from_container",
                &from_web1(vip_client(), vip_of(Scheduler::Rr)),
                verdict::TC_ACT_REDIRECT,
                Some((Hook::FromContainer, Outcome::Service)),
            ),
            tcp(WEB2_MAC, VETH_HOST_MAC, vip_client(), backend_addr(0)),
        ),
        translated(
            path(
                "vip_established_uplink_tc",
                "from_uplink: outside -> an external VIP, established (conntrack hit, backend check, DNAT, MACs, backend traffic counted, bpf_redirect_peer)",
                "from_uplink",
                &vip_from_outside,
                verdict::TC_ACT_REDIRECT,
                Some((Hook::FromUplink, Outcome::Service)),
            ),
            vip_from_outside_out.clone(),
        ),
        translated(
            xdp(path(
                "vip_established_uplink_xdp",
                "xdp_uplink: the same packet in XDP (conntrack hit, backend check, DNAT, MACs, backend traffic counted, XDP_REDIRECT)",
                "xdp_uplink",
                &vip_from_outside,
                XDP_REDIRECT,
                Some((Hook::XdpUplink, Outcome::Service)),
            )),
            vip_from_outside_out,
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
        // web1's flow to the rr VIP, on its first backend, and the backend's replies.
        (
            ct_key(vip_client(), vip_of(Scheduler::Rr)),
            svc_entry(
                CT_SERVICE,
                backend_addr(0),
                WEB2_IFINDEX,
                (WEB2_MAC, VETH_HOST_MAC),
                backend_id(Scheduler::Rr as u32 + 1, 0),
            ),
        ),
        (
            ct_key(backend_addr(0), vip_client()),
            svc_entry(
                CT_SERVICE_REPLY,
                vip_of(Scheduler::Rr),
                WEB1_IFINDEX,
                into_web1,
                backend_id(Scheduler::Rr as u32 + 1, 0),
            ),
        ),
        // An outside client's flow to the external VIP, on its first backend, and back.
        (
            ct_key(client_ext(), sock(EXTERNAL_VIP, SVC_PORT)),
            svc_entry(
                CT_SERVICE,
                backend_addr(0),
                WEB2_IFINDEX,
                (WEB2_MAC, VETH_HOST_MAC),
                backend_id(EXTERNAL_SERVICE, 0),
            ),
        ),
        (
            ct_key(backend_addr(0), client_ext()),
            svc_entry(
                CT_SERVICE_REPLY_OUT,
                sock(EXTERNAL_VIP, SVC_PORT),
                UPLINK_IFINDEX,
                none,
                backend_id(EXTERNAL_SERVICE, 0),
            ),
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
/// same lookups and the same checksum arithmetic (which costs the same whatever the
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
        // from_container, VIP: web1:45000 toward the rr VIP <-> toward another VIP, each
        // a service flow whose backend (an alias backend id) is the other VIP; the MACs
        // stay web1's, which the sender check wants.
        (
            ct_key(vip_client(), vip_of(Scheduler::Rr)),
            svc_entry(
                CT_SERVICE,
                sock(ALIAS_VIP, SVC_PORT),
                WEB2_IFINDEX,
                (VETH_HOST_MAC, WEB1_MAC),
                ALIAS_BACKEND,
            ),
        ),
        (
            ct_key(vip_client(), sock(ALIAS_VIP, SVC_PORT)),
            svc_entry(
                CT_SERVICE,
                vip_of(Scheduler::Rr),
                WEB2_IFINDEX,
                (VETH_HOST_MAC, WEB1_MAC),
                VIP_BACKEND,
            ),
        ),
        // Uplink, VIP: the delivered packet translated back to what arrived.
        (
            ct_key(client_ext(), backend_addr(0)),
            svc_entry(
                CT_SERVICE,
                sock(EXTERNAL_VIP, SVC_PORT),
                WEB2_IFINDEX,
                back_out,
                EXTERNAL_VIP_BACKEND,
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

/// The external service's id (the container services' are their scheduler's number + 1).
const EXTERNAL_SERVICE: u32 = 9;
/// The first source port of the new flows (each run takes the next).
const FIRST_SPORT: u16 = 1024;

/// The service maps, taken from the object.
struct ServiceMaps {
    services: HashMap<MapData, ServiceKey, Service>,
    tables: Array<MapData, u32>,
    backends: Array<MapData, Backend>,
    conns: Array<MapData, BackendConns>,
}

impl ServiceMaps {
    fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).context(name.to_owned());
        Ok(ServiceMaps {
            services: HashMap::try_from(take(map_names::SERVICES)?)?,
            tables: Array::try_from(take(map_names::TABLES)?)?,
            backends: Array::try_from(take(map_names::BACKENDS)?)?,
            conns: Array::try_from(take(map_names::BE_CONNS)?)?,
        })
    }

    /// Connections the backends `ids` opened so far.
    fn opened(&self, ids: &[u32]) -> anyhow::Result<u64> {
        ids.iter().map(|id| Ok(self.conns.get(id, 0)?.opened)).sum()
    }
}

/// A service over web2's three ports as user space writes it: backends, then its region
/// (the backend list and the scheduler's table: the list for rr, IPVS's weighted sequence
/// for wrr and random, a Maglev table for the hashing schedulers, none for lc and wlc),
/// then the frontend.
fn add_service(
    maps: &mut ServiceMaps,
    id: u32,
    vip: SocketAddrV4,
    scheduler: Scheduler,
    flags: u8,
) -> anyhow::Result<()> {
    let ids: Vec<u32> = (0..BACKEND_PORTS.len())
        .map(|i| backend_id(id, i))
        .collect();
    // Regions far enough apart for any of these tables.
    add_service_at(maps, id, vip, scheduler, flags, &ids, id * 4096)
}

/// [`add_service`] with the backends' ids and the table's start given.
fn add_service_at(
    maps: &mut ServiceMaps,
    id: u32,
    vip: SocketAddrV4,
    scheduler: Scheduler,
    flags: u8,
    ids: &[u32],
    start: u32,
) -> anyhow::Result<()> {
    let ids = ids.to_vec();
    for (i, backend) in ids.iter().enumerate() {
        let b = Backend {
            addr: addr_key(WEB2),
            port: BACKEND_PORTS[i].to_be(),
            weight: BACKEND_WEIGHTS[i],
            service_id: id,
        };
        maps.backends.set(*backend, &b, 0)?;
    }
    let table: Vec<u32> = match scheduler {
        Scheduler::Rr => ids.clone(),
        Scheduler::Wrr | Scheduler::Random => wrr_sequence(&BACKEND_WEIGHTS)
            .into_iter()
            .map(|i| ids[i])
            .collect(),
        Scheduler::Lc | Scheduler::Wlc => Vec::new(),
        Scheduler::Sh | Scheduler::Dh | Scheduler::Mh => {
            let roster: Vec<(u64, u16)> = (0..ids.len())
                .map(|i| {
                    let b = backend_addr(i);
                    (identity(*b.ip(), b.port()), BACKEND_WEIGHTS[i])
                })
                .collect();
            maglev_table(&roster, maglev_size(roster.len(), None))
                .into_iter()
                .map(|i| ids[i])
                .collect()
        }
    };
    for (i, word) in ids.iter().chain(&table).enumerate() {
        maps.tables.set(start + i as u32, word, 0)?;
    }
    let frontend = Service {
        id,
        scheduler: scheduler as u8,
        flags,
        count: ids.len() as u16,
        table: start,
        table_len: table.len() as u32,
        persistence_secs: 0,
        persistence_mask: u32::MAX,
    };
    let key = ServiceKey {
        vip: addr_key(*vip.ip()),
        port: vip.port().to_be(),
        proto: packet::IPPROTO_TCP,
        pad: 0,
    };
    maps.services.insert(&key, &frontend, 0)?;
    Ok(())
}

/// One service per scheduler for the containers, the external one, and the alias
/// backends of the alternating VIP flows.
fn fill_services(maps: &mut ServiceMaps) -> anyhow::Result<()> {
    for scheduler in Scheduler::ALL {
        add_service(maps, scheduler as u32 + 1, vip_of(scheduler), scheduler, 0)?;
    }
    add_service(
        maps,
        EXTERNAL_SERVICE,
        sock(EXTERNAL_VIP, SVC_PORT),
        Scheduler::Mh,
        SVC_EXTERNAL,
    )?;
    for (id, at) in [
        (ALIAS_BACKEND, sock(ALIAS_VIP, SVC_PORT)),
        (VIP_BACKEND, vip_of(Scheduler::Rr)),
        (EXTERNAL_VIP_BACKEND, sock(EXTERNAL_VIP, SVC_PORT)),
    ] {
        let b = Backend {
            addr: addr_key(*at.ip()),
            port: at.port().to_be(),
            weight: 1,
            service_id: 0,
        };
        maps.backends.set(id, &b, 0)?;
    }
    Ok(())
}

/// A path timed one run at a time: a new flow to a VIP (every run a SYN from a source
/// port of its own), or an empty program timed the same way.
struct NewFlowPath {
    name: String,
    what: String,
    program: &'static str,
    empty: &'static str,
    verdict: u32,
    counter: Option<(Hook, Outcome)>,
    /// The backends that must open one connection per run (none: an empty program).
    backends: Vec<u32>,
    /// Conntrack entries each run records (a new flow: both directions).
    ct_entries: usize,
    budget: Option<f64>,
    /// The SYN from a source port, and every frame it may leave as.
    frames: Box<Frames>,
}

/// The SYN a source port sends, and the frames it may leave as.
type Frames = dyn Fn(u16) -> (Vec<u8>, Vec<Vec<u8>>);

/// The reply `from_container` builds from an ARP request for `target` (answered as `mac`).
fn arp_reply(asker_mac: Mac, asker: Ipv4Addr, target: Ipv4Addr, mac: Mac) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 2];
    arp.extend_from_slice(&mac.0);
    arp.extend_from_slice(&target.octets());
    arp.extend_from_slice(&asker_mac.0);
    arp.extend_from_slice(&asker.octets());
    packet::ethernet(asker_mac, mac, packet::ETH_P_ARP, &arp)
}

fn syn(dst_mac: Mac, src_mac: Mac, src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    packet::tcp4_frame(dst_mac, src_mac, src, dst, tcp_flags::SYN, &[])
}

/// A SYN to `vip` and what it may become: the same SYN to one of the backends, from
/// their gateway.
fn to_vip(
    dst_mac: Mac,
    src_mac: Mac,
    src: SocketAddrV4,
    vip: SocketAddrV4,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    let input = syn(dst_mac, src_mac, src, vip);
    let outputs = (0..BACKEND_PORTS.len())
        .map(|i| syn(WEB2_MAC, VETH_HOST_MAC, src, backend_addr(i)))
        .collect();
    (input, outputs)
}

/// A SYN from web1's `sport` to a VIP, for a program that leaves it as it came.
fn untouched_syn(sport: u16) -> (Vec<u8>, Vec<Vec<u8>>) {
    let input = syn(
        VETH_HOST_MAC,
        WEB1_MAC,
        sock(WEB1, sport),
        vip_of(Scheduler::Rr),
    );
    (input.clone(), vec![input])
}

fn new_flows_paths() -> Vec<NewFlowPath> {
    let empty = |name: &str, program, empty, verdict| NewFlowPath {
        name: name.to_owned(),
        what: format!(
            "empty {} program, timed one run at a time as the new flows are",
            if program == BENCH_EMPTY_TC {
                "tc"
            } else {
                "XDP"
            }
        ),
        program,
        empty,
        verdict,
        counter: None,
        backends: Vec::new(),
        ct_entries: 0,
        budget: None,
        frames: Box::new(untouched_syn),
    };
    let mut paths = vec![
        empty(
            "empty_tc_single",
            BENCH_EMPTY_TC,
            "empty_tc_single",
            verdict::TC_ACT_OK,
        ),
        empty(
            "empty_xdp_single",
            BENCH_EMPTY_XDP,
            "empty_xdp_single",
            verdict::XDP_PASS,
        ),
    ];
    // The established VIP path timed the same way: how much of a new flow's figure the
    // method itself adds (caches a single run finds cold), against the repeated figure.
    paths.push(NewFlowPath {
        name: "vip_established_single".to_owned(),
        what: "from_container: the established VIP path above, timed one run at a time as \
               the new flows are (the method's own share of their figures)"
            .to_owned(),
        program: "from_container",
        empty: "empty_tc_single",
        verdict: verdict::TC_ACT_REDIRECT,
        counter: Some((Hook::FromContainer, Outcome::Service)),
        backends: Vec::new(),
        ct_entries: 0,
        budget: None,
        frames: Box::new(|_| {
            // The first of its two tuples, every run (see `alternating_entries`).
            let input = tcp(VETH_HOST_MAC, WEB1_MAC, vip_client(), vip_of(Scheduler::Rr));
            let out = tcp(
                VETH_HOST_MAC,
                WEB1_MAC,
                vip_client(),
                sock(ALIAS_VIP, SVC_PORT),
            );
            (input, vec![out])
        }),
    });
    // The floor under every new flow: one conntrack insert and nothing else (a new flow
    // makes two, one per direction).
    paths.push(NewFlowPath {
        name: "ct_insert_floor".to_owned(),
        what: "bench_ct_insert: one conntrack insert of a new tuple and nothing else (no \
               parsing beyond the tuple, no lookup, no rewrite): the floor under a new flow, \
               which records two"
            .to_owned(),
        program: BENCH_CT_INSERT,
        empty: "empty_tc_single",
        verdict: verdict::TC_ACT_OK,
        counter: None,
        backends: Vec::new(),
        ct_entries: 1,
        budget: None,
        frames: Box::new(untouched_syn),
    });
    // An ARP request becomes its reply in the test run's buffer, so it cannot be repeated
    // either: timed one run at a time, every run checked against the exact reply.
    paths.push(NewFlowPath {
        name: "arp_reply".to_owned(),
        what: "from_container: an ARP request for the gateway answered in place (the reply \
               built in the frame, sent back out with bpf_redirect)"
            .to_owned(),
        program: "from_container",
        empty: "empty_tc_single",
        verdict: verdict::TC_ACT_REDIRECT,
        counter: Some((Hook::FromContainer, Outcome::ArpReply)),
        backends: Vec::new(),
        ct_entries: 0,
        budget: None,
        frames: Box::new(|_| {
            let gateway = Ipv4Addr::new(198, 18, 10, 1);
            let input = packet::arp_request(WEB1_MAC, WEB1, gateway);
            (
                input,
                vec![arp_reply(WEB1_MAC, WEB1, gateway, VETH_HOST_MAC)],
            )
        }),
    });
    for scheduler in Scheduler::ALL {
        let id = scheduler as u32 + 1;
        paths.push(NewFlowPath {
            name: format!("vip_new_{}", scheduler.name()),
            what: format!(
                "from_container: a new flow (SYN) to a VIP, {} over 3 backends (conntrack miss, \
                 service lookup, scheduling, both directions recorded, DNAT, MACs, \
                 bpf_redirect_peer)",
                scheduler.name()
            ),
            program: "from_container",
            empty: "empty_tc_single",
            verdict: verdict::TC_ACT_REDIRECT,
            counter: Some((Hook::FromContainer, Outcome::Service)),
            backends: (0..BACKEND_PORTS.len())
                .map(|i| backend_id(id, i))
                .collect(),
            ct_entries: 2,
            budget: Some(NEW_FLOW_BUDGET),
            frames: Box::new(move |sport| {
                to_vip(
                    VETH_HOST_MAC,
                    WEB1_MAC,
                    sock(WEB1, sport),
                    vip_of(scheduler),
                )
            }),
        });
    }
    for (name, program, empty, verdict, hook) in [
        (
            "vip_new_uplink_tc",
            "from_uplink",
            "empty_tc_single",
            verdict::TC_ACT_REDIRECT,
            Hook::FromUplink,
        ),
        (
            "vip_new_uplink_xdp",
            "xdp_uplink",
            "empty_xdp_single",
            XDP_REDIRECT,
            Hook::XdpUplink,
        ),
    ] {
        paths.push(NewFlowPath {
            name: name.to_owned(),
            what: format!(
                "{program}: a new flow from outside to an external VIP, mh over 3 backends \
                 (conntrack miss, service lookup, Maglev, both directions recorded, DNAT, MACs, \
                 redirect)"
            ),
            program,
            empty,
            verdict,
            counter: Some((hook, Outcome::Service)),
            backends: (0..BACKEND_PORTS.len())
                .map(|i| backend_id(EXTERNAL_SERVICE, i))
                .collect(),
            ct_entries: 2,
            budget: Some(NEW_FLOW_BUDGET),
            frames: Box::new(|sport| {
                to_vip(
                    UPLINK_MAC,
                    OUTSIDE_MAC,
                    sock(OUTSIDE, sport),
                    sock(EXTERNAL_VIP, SVC_PORT),
                )
            }),
        });
    }
    paths
}

/// One round of the new-flow paths: `n` runs of each, taking turns run by run, every run
/// from a source port no flow holds. Checks every run's verdict and frame, then the
/// round's connection counts, counters and conntrack entries; removes the round's flows.
/// Returns each path's median (ns).
fn new_flow_round(
    ebpf: &Ebpf,
    svc_maps: &ServiceMaps,
    ct: &mut HashMap<MapData, CtKey, CtEntry>,
    fixed: &HashSet<CtKey>,
    flows: &[NewFlowPath],
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut counters: BTreeMap<(u8, u8), (Hook, Outcome, u64)> = BTreeMap::new();
    for (hook, outcome) in flows.iter().filter_map(|f| f.counter) {
        let before = counter(ebpf, Some((hook, outcome)))?;
        counters.insert((hook as u8, outcome as u8), (hook, outcome, before));
    }
    let opened_before = flows
        .iter()
        .map(|f| svc_maps.opened(&f.backends))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(n); flows.len()];
    for i in 0..n {
        for (p, (flow, ns)) in flows.iter().zip(&mut samples).enumerate() {
            let sport = FIRST_SPORT + (p * n + i) as u16;
            let (input, allowed) = (flow.frames)(sport);
            let (result, out) = run_once(ebpf, flow.program, &input)?;
            ensure!(
                result.return_value == flow.verdict,
                "{}: verdict {} instead of {}",
                flow.name,
                result.return_value,
                flow.verdict
            );
            if !allowed.contains(&out) {
                bail!(
                    "{}: the frame is none of the backends' (against the first):\n{}",
                    flow.name,
                    packet::byte_diff(&allowed[0], &out)
                );
            }
            ns.push(result.duration.as_nanos() as f64);
        }
    }

    // Every run of a flow path was a new connection of its service (the uplink's tc and
    // XDP paths share one)...
    for (flow, before) in flows.iter().zip(opened_before) {
        let sharing = flows.iter().filter(|f| f.backends == flow.backends).count();
        let opened = svc_maps.opened(&flow.backends)? - before;
        ensure!(
            flow.backends.is_empty() || opened == (n * sharing) as u64,
            "{}: its service's backends opened {opened} connections in {} runs",
            flow.name,
            n * sharing
        );
    }
    // ...counted as a service packet by its hook...
    for (hook, outcome, before) in counters.values() {
        let expected = n as u64
            * flows
                .iter()
                .filter(|f| f.counter == Some((*hook, *outcome)))
                .count() as u64;
        let rose = counter(ebpf, Some((*hook, *outcome)))? - before;
        ensure!(
            rose == expected,
            "{}/{} rose by {rose} in {expected} new flows",
            hook.name(),
            outcome.name()
        );
    }
    // ...that recorded its two directions: removed, so that every round starts alike.
    let recorded: Vec<CtKey> = ct
        .keys()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|k| !fixed.contains(k))
        .collect();
    let expected_entries = n * flows.iter().map(|f| f.ct_entries).sum::<usize>();
    ensure!(
        recorded.len() == expected_entries,
        "{} conntrack entries after the round's new flows ({expected_entries} expected: two \
         each)",
        recorded.len()
    );
    for key in &recorded {
        ct.remove(key)?;
    }
    Ok(samples.iter().map(|ns| median(ns)).collect())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One test run of `program` on `input`: its result and the frame as it came out.
fn run_once(ebpf: &Ebpf, program: &str, input: &[u8]) -> anyhow::Result<(TestRunResult, Vec<u8>)> {
    let mut out = vec![0u8; input.len() + 64];
    let opts = TestRunOptions {
        data_in: Some(input),
        data_out: Some(&mut out),
        repeat: 1,
        ..Default::default()
    };
    let result = match ebpf.program(program).context(program.to_owned())? {
        Program::SchedClassifier(p) => p.test_run(opts),
        Program::Xdp(p) => p.test_run(opts),
        _ => bail!("{program}: neither tc nor XDP"),
    }
    .with_context(|| format!("{program}: test run"))?;
    out.truncate(result.data_size_out as usize);
    Ok((result, out))
}
