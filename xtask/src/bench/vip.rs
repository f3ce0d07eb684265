//! The `vip` scenarios: a container to a virtual IP, and an outside client to an external
//! one, with every end-to-end figure (latency, new connections, keep-alive requests,
//! throughput, UDP packets). The baseline is kube-proxy's iptables mode on the bridge lab;
//! netbpf is the same containers with the services in its definitions file, its uplink at
//! tc and at XDP. One service per tool port (HTTP 80, sockperf, iperf3 TCP and UDP), each
//! with one backend (the server container): iperf3 and sockperf open more than one
//! connection per test and need them on one server. The services scenario measures the
//! spread over three backends and the scaling with the number of services.

use std::{
    fmt::Write as _,
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
};

use anyhow::Context as _;
use netbpf_common::stats::{Hook, Outcome};
use netbpf_tests::{TempDir, lab::Lab, netns::Netns, unique_prefix};

use super::{
    BENCH_PREFIX, E2eTargets, Ends, Measured, Scenario, Timing, check_counters, e2e_metrics, labs,
    measure_e2e, measure_rounds, progress, tools, tx_offload,
};
use tools::{Client, HTTP_PORT, IPERF_PORT, SOCKPERF_PORT};

pub const ID: &str = "vip";

pub const CONTAINER: Scenario = Scenario {
    id: ID,
    title: "Container to a VIP",
    about: "A client container reaches services at a virtual IP (HTTP on 80, sockperf, iperf3 \
            over TCP and UDP), each with one backend: the server container. `iptables` is \
            kube-proxy's iptables mode on a Linux bridge with br_netfilter (KUBE-SERVICES \
            matching the cluster IP and port -> KUBE-SVC -> KUBE-SEP DNAT; the server's replies \
            bridged to the client and reverse-translated by conntrack); `netbpf` is the same \
            containers wired by netbpf with the services in its definitions file (scheduler \
            `random`, as kube-proxy's).",
    targets: &["iptables", "netbpf"],
    baseline: "iptables",
    contenders: &["netbpf"],
    floor: None,
};

pub const OUTSIDE: Scenario = Scenario {
    id: ID,
    title: "Outside to an external VIP",
    about: "A client namespace behind the host's uplink reaches the same services at an \
            external address routed to the host. `iptables` is kube-proxy's rules for an \
            external IP with `externalTrafficPolicy: Local` (KUBE-SERVICES -> KUBE-EXT -> \
            KUBE-SVL -> KUBE-SEP DNAT, no masquerade: the server sees the client, as with \
            netbpf), routed by the host; `netbpf-tc` and `netbpf-xdp` are netbpf's service \
            with `external = true`, its uplink program at tc or at XDP. The client sends with \
            tx checksum offload off on every target, as in the north-south scenario.",
    targets: &["iptables", "netbpf-tc", "netbpf-xdp"],
    baseline: "iptables",
    contenders: &["netbpf-tc", "netbpf-xdp"],
    floor: None,
};

/// netbpf's VIP, and kube-proxy's cluster IP (the same address).
const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
/// kube-proxy's external IP (a service's external IPs are other addresses than its
/// cluster IP).
const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const SUBNET: &str = "198.18.10.0/24";
/// The services: (name, protocol, port).
const SERVICES: [(&str, &str, u16); 4] = [
    ("http", "tcp", HTTP_PORT),
    ("sockperf", "tcp", SOCKPERF_PORT),
    ("iperf", "tcp", IPERF_PORT),
    ("iperf-udp", "udp", IPERF_PORT),
];

/// kube-proxy's rules for [`SERVICES`] at [`VIP`] (cluster IP) and [`EXTERNAL_IP`], one
/// endpoint each (the server).
pub fn kube_rules() -> String {
    let server = labs::SERVER_IP;
    let mut decls = String::new();
    let mut services = String::new();
    let mut chains = String::new();
    for (name, proto, port) in SERVICES {
        let id = name.to_uppercase().replace('-', "");
        let (svc, ext, svl, sep) = (
            format!("KUBE-SVC-{id}"),
            format!("KUBE-EXT-{id}"),
            format!("KUBE-SVL-{id}"),
            format!("KUBE-SEP-{id}"),
        );
        for chain in [&svc, &ext, &svl, &sep] {
            let _ = writeln!(decls, ":{chain} - [0:0]");
        }
        let m = format!("-p {proto} -m {proto} --dport {port}");
        let _ = writeln!(
            services,
            "-A KUBE-SERVICES -d {VIP}/32 {m} -m comment --comment \"default/{name} cluster IP\" -j {svc}\n\
             -A KUBE-SERVICES -d {EXTERNAL_IP}/32 {m} -m comment --comment \"default/{name} external IP\" -j {ext}"
        );
        let _ = writeln!(
            chains,
            "-A {svc} ! -s {SUBNET} -d {VIP}/32 {m} -j KUBE-MARK-MASQ\n\
             -A {svc} -m comment --comment \"default/{name} -> {server}:{port}\" -j {sep}\n\
             -A {ext} -s {SUBNET} -m comment --comment \"pod traffic for default/{name} external destinations\" -j {svc}\n\
             -A {ext} -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ\n\
             -A {ext} -m addrtype --src-type LOCAL -j {svc}\n\
             -A {ext} -j {svl}\n\
             -A {svl} -m comment --comment \"default/{name} -> {server}:{port}\" -j {sep}\n\
             -A {sep} -s {server}/32 -j KUBE-MARK-MASQ\n\
             -A {sep} -p {proto} -m {proto} -j DNAT --to-destination {server}:{port}"
        );
    }
    format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :KUBE-FORWARD - [0:0]\n\
         -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
         -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
         -A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
         -A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         COMMIT\n\
         *nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n\
         :KUBE-POSTROUTING - [0:0]\n{decls}\
         -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -j MASQUERADE --random-fully\n\
         {services}{chains}COMMIT\n"
    )
}

/// netbpf's services for [`SERVICES`] at [`VIP`], reachable from outside.
pub fn netbpf_services() -> String {
    let mut text = String::new();
    for (name, proto, port) in SERVICES {
        let _ = write!(
            text,
            "[[service]]\nname = \"{name}\"\nvip = \"{VIP}\"\nport = {port}\nprotocol = \"{proto}\"\n\
             scheduler = \"random\"\nexternal = true\n\
             backends = [{{ container = \"server\", port = {port} }}]\n\n"
        );
    }
    text
}

/// One target's lab: client c0, server c1, the outside routing the VIPs to the host.
struct VipLab {
    lab: Lab,
    /// Where the outside client sends (the external address).
    external: Ipv4Addr,
}

impl VipLab {
    fn client(&self) -> &Netns {
        &self.lab.containers[0]
    }

    fn server(&self) -> &Netns {
        &self.lab.containers[1]
    }

    /// The servers reached at `ip` on their own ports.
    fn ends(&self, ip: Ipv4Addr) -> Ends<'_> {
        Ends {
            server: self.server(),
            listen: SocketAddrV4::new(labs::SERVER_IP, SOCKPERF_PORT),
            sockperf: SocketAddrV4::new(ip, SOCKPERF_PORT),
            http: SocketAddrV4::new(ip, HTTP_PORT),
            iperf: SocketAddrV4::new(ip, IPERF_PORT),
        }
    }
}

fn route_vips(lab: &Lab) -> anyhow::Result<()> {
    lab.outside.ip(&[
        "route",
        "add",
        "198.19.0.0/16",
        "via",
        &netbpf_tests::lab::HOST_UPLINK_IP.to_string(),
    ])?;
    Ok(())
}

fn kube_lab(dir: &Path) -> anyhow::Result<VipLab> {
    let lab = labs::bridged(BENCH_PREFIX, &[labs::CLIENT_IP, labs::SERVER_IP])?;
    lab.host.sysctl("net.bridge.bridge-nf-call-iptables", "1")?;
    lab.host.sysctl("net.ipv4.ip_forward", "1")?;
    let rules = dir.join("kube.rules");
    fs::write(&rules, kube_rules()).context("writing kube.rules")?;
    // In the lab's host namespace, never the machine's.
    lab.host
        .exec("iptables-restore", &[&rules.display().to_string()])?;
    route_vips(&lab)?;
    Ok(VipLab {
        lab,
        external: EXTERNAL_IP,
    })
}

fn netbpf_lab(netbpf_bin: &Path, dir: &Path, mode: &str) -> anyhow::Result<VipLab> {
    let lab = Lab::new(BENCH_PREFIX, 2).context("netbpf lab")?;
    let definitions = format!(
        "[host]\n{}\n[[network]]\nname = \"front\"\nsubnet = \"{SUBNET}\"\n\n{}\n{}\n{}",
        labs::uplink(mode),
        labs::container("client", &lab.containers[0], labs::CLIENT_IP, ""),
        labs::container("server", &lab.containers[1], labs::SERVER_IP, ""),
        netbpf_services()
    );
    labs::apply(netbpf_bin, &lab, dir, &definitions)?;
    route_vips(&lab)?;
    Ok(VipLab { lab, external: VIP })
}

/// Both scenarios: the labs, then container -> VIP round by round, then outside -> VIP.
pub fn run(netbpf_bin: &Path, timing: &Timing) -> anyhow::Result<Vec<Measured>> {
    progress("vip: building kube-proxy's iptables lab and netbpf's (uplink at tc, at XDP)");
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let dirs: Vec<_> = ["iptables", "netbpf-tc", "netbpf-xdp"]
        .iter()
        .map(|t| {
            let d = dir.path().join(t);
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            Ok(d)
        })
        .collect::<anyhow::Result<_>>()?;
    let labs = [
        kube_lab(&dirs[0])?,
        netbpf_lab(netbpf_bin, &dirs[1], "tc")?,
        netbpf_lab(netbpf_bin, &dirs[2], "xdp")?,
    ];
    let _servers = labs
        .iter()
        .zip(&dirs)
        .map(|(lab, d)| tools::start_servers(lab.server(), labs::SERVER_IP, d))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let from_containers = [&labs[0], &labs[1]];
    let container = measure_rounds(
        &CONTAINER,
        &from_containers,
        e2e_metrics(E2eTargets::default()),
        timing.rounds,
        |_, lab| {
            let client = Client::new(lab.client());
            measure_e2e(&client, &lab.ends(VIP), timing)
        },
    )?;

    for lab in &labs {
        tx_offload(&lab.lab.outside, false)?;
    }
    let outside = measure_rounds(
        &OUTSIDE,
        &labs,
        e2e_metrics(E2eTargets::default()),
        timing.rounds,
        |_, lab| {
            let client = Client::new(&lab.lab.outside);
            measure_e2e(&client, &lab.ends(lab.external), timing)
        },
    )?;

    let service = |hook| (hook, Outcome::Service);
    check_counters(
        netbpf_bin,
        "netbpf-tc",
        &labs[1].lab,
        &[
            service(Hook::FromContainer),
            service(Hook::FromUplink),
            (Hook::FromContainer, Outcome::ServiceReply),
        ],
        &[service(Hook::XdpUplink)],
    )?;
    check_counters(
        netbpf_bin,
        "netbpf-xdp",
        &labs[2].lab,
        &[service(Hook::XdpUplink)],
        &[service(Hook::FromUplink)],
    )?;
    Ok(vec![container, outside])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_rules_reach_each_service() {
        let rules = kube_rules();
        assert!(rules.contains(
            "-A KUBE-SERVICES -d 198.19.0.10/32 -p udp -m udp --dport 5201 -m comment \
             --comment \"default/iperf-udp cluster IP\" -j KUBE-SVC-IPERFUDP\n"
        ));
        assert!(rules.contains("-A KUBE-EXT-HTTP -j KUBE-SVL-HTTP\n"));
        assert!(
            rules.contains(
                "-A KUBE-SEP-HTTP -p tcp -m tcp -j DNAT --to-destination 198.18.10.3:80\n"
            )
        );
        for chain in ["KUBE-SVC-SOCKPERF", "KUBE-EXT-IPERF", "KUBE-SVL-IPERFUDP"] {
            assert_eq!(rules.matches(&format!(":{chain} - [0:0]")).count(), 1);
        }
        let services = netbpf_services();
        assert_eq!(services.matches("[[service]]").count(), 4);
        assert!(services.contains("port = 5201\nprotocol = \"udp\""));
    }
}
