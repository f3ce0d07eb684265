//! Per-packet cost of `from_container`'s paths under BPF_PROG_TEST_RUN, beside an empty tc
//! program in the same run: `runs` rounds, each running every path `repeat` times, the
//! paths interleaved so that machine noise hits them alike. Prints JSON (ns per packet).
//! Run by `cargo xtask bench`; needs root.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context as _, bail};
use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use netbpf::kernel::{
    maps::{ContainerMaps, addr_key},
    object::{self, BENCH_EMPTY_TC},
};
use netbpf_common::net::{EndpointInfo, IfaceInfo, NET_ICC, NetworkInfo, PeerInfo, name_bytes};
use netbpf_tests::packet::{self, Mac};

const WEB1: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const WEB2: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);
const WEB1_MAC: Mac = Mac([0x02, 0x42, 198, 18, 10, 2]);
const WEB2_MAC: Mac = Mac([0x02, 0x42, 198, 18, 10, 3]);

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(Ok(5), |a| a.parse()).context("runs")?;
    let repeat: u32 = args
        .next()
        .map_or(Ok(1_000_000), |a| a.parse())
        .context("repeat")?;

    let mut ebpf = object::open(None)?;
    for name in ["from_container", BENCH_EMPTY_TC] {
        let prog: &mut SchedClassifier = ebpf.program_mut(name).context(name)?.try_into()?;
        prog.load()?;
    }
    // One network, web1 behind the test device (loopback, ifindex 1), web2 its peer.
    let mut maps = ContainerMaps::take_from(&mut ebpf)?;
    let network = NetworkInfo {
        subnet: addr_key(Ipv4Addr::new(198, 18, 10, 0)),
        gateway: addr_key(Ipv4Addr::new(198, 18, 10, 1)),
        prefix_len: 24,
        flags: NET_ICC,
        peer_base: 0,
        name: name_bytes("front"),
    };
    maps.networks.insert(&1, &network, 0)?;
    for (addr, mac, ifindex) in [(WEB1, WEB1_MAC, 1), (WEB2, WEB2_MAC, 2)] {
        let ep = EndpointInfo {
            mac: mac.0,
            host_mac: [2, 0, 0, 0, 0, 1],
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
        host_mac: [2, 0, 0, 0, 0, 1],
        peer_base: network.peer_base,
    };
    maps.set_iface(1, &own)?;

    let udp = packet::udp4_frame(
        WEB2_MAC,
        WEB1_MAC,
        SocketAddrV4::new(WEB1, 4000),
        SocketAddrV4::new(WEB2, 80),
        &[0; 64],
    );
    let spoofed = packet::udp4_frame(
        WEB2_MAC,
        Mac([2, 9, 9, 9, 9, 9]),
        SocketAddrV4::new(WEB1, 4000),
        SocketAddrV4::new(WEB2, 80),
        &[0; 64],
    );
    // No ARP path: the test run repeats on the packet it rewrote, so after the first
    // round an ARP request has become a reply.
    let to_gateway = packet::udp4_frame(
        Mac([2, 0, 0, 0, 0, 1]),
        WEB1_MAC,
        SocketAddrV4::new(WEB1, 4000),
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 10, 1), 80),
        &[0; 64],
    );
    let paths: [(&str, &str, &[u8], u32); 4] = [
        ("empty_tc", BENCH_EMPTY_TC, &udp, 0),
        ("forward", "from_container", &udp, 7),
        ("to_host", "from_container", &to_gateway, 0),
        ("drop_spoofed_mac", "from_container", &spoofed, 2),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for _ in 0..runs {
        for (i, (label, program, input, verdict)) in paths.iter().enumerate() {
            let prog: &SchedClassifier = ebpf.program(program).context(*program)?.try_into()?;
            let mut out = vec![0u8; input.len() + 64];
            let result = prog.test_run(TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                repeat,
                ..Default::default()
            })?;
            if result.return_value != *verdict {
                bail!(
                    "{label}: verdict {} instead of {verdict}",
                    result.return_value
                );
            }
            results[i].push(result.duration.as_nanos() as f64);
        }
    }
    let fields: Vec<String> = paths
        .iter()
        .zip(&results)
        .map(|((label, ..), ns)| format!("\"{label}\": {ns:?}"))
        .collect();
    println!(
        "{{\"runs\": {runs}, \"repeat\": {repeat}, \"ns_per_packet\": {{{}}}}}",
        fields.join(", ")
    );
    Ok(())
}
