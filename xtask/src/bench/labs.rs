//! The targets a benchmark compares, built on identical namespaces: containers on a Linux
//! bridge (Docker's data path, with or without its iptables rules) and the same containers
//! wired by netbpf. Addresses from 198.18.0.0/15; everything goes when the lab drops.

use std::{fmt::Write as _, net::Ipv4Addr, path::Path, process::Command};

use anyhow::{Context as _, anyhow};
use netbpf_common::stats::{Hook, Outcome};
use netbpf_tests::{
    lab::{HOST_UPLINK_IF, Lab, veth_pair},
    netns::Netns,
    packet::Mac,
};

use super::tools::{HTTP_PORT, IPERF_PORT, SOCKPERF_PORT};
use crate::cmd;

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);
const SUBNET: &str = "198.18.10.0/24";
const GATEWAY: &str = "198.18.10.1";

/// The host port of the server's HTTP port, as Docker's `-p 8080:80`.
pub const PUBLISHED_HTTP: u16 = 8080;
/// What the server container publishes: (host port, container port).
pub const PUBLISHED: [(u16, u16); 3] = [
    (PUBLISHED_HTTP, HTTP_PORT),
    (SOCKPERF_PORT, SOCKPERF_PORT),
    (IPERF_PORT, IPERF_PORT),
];

/// What the server container publishes for UDP: iperf3's port (its UDP test's data; the
/// control connection is the TCP port of the same number).
pub const PUBLISHED_UDP: [(u16, u16); 1] = [(IPERF_PORT, IPERF_PORT)];

/// Two containers (client c0, server c1) on one network.
pub struct EastWest {
    pub lab: Lab,
}

impl EastWest {
    pub fn client(&self) -> &Netns {
        &self.lab.containers[0]
    }

    pub fn server(&self) -> &Netns {
        &self.lab.containers[1]
    }
}

/// One server container (c0) publishing [`PUBLISHED`] on the host; the lab's outside
/// namespace is the client from outside, its host namespace the host's own processes.
pub struct Published {
    pub lab: Lab,
}

impl Published {
    pub fn server(&self) -> &Netns {
        &self.lab.containers[0]
    }
}

/// The floor: a bridge in the host namespace, one veth per container, nothing else.
pub fn bridge(prefix: &str) -> anyhow::Result<EastWest> {
    let lab = bridged(prefix, &[CLIENT_IP, SERVER_IP])?;
    // No netfilter on bridged frames: the bare bridge.
    lab.host.sysctl("net.bridge.bridge-nf-call-iptables", "0")?;
    Ok(EastWest { lab })
}

/// Docker's data path: the same bridge with bridged frames passing netfilter
/// (br_netfilter, as Docker sets it) and the rules `dockerd` installs for a network
/// (filter FORWARD chains with isolation and conntrack, nat MASQUERADE).
pub fn docker(prefix: &str, dir: &Path) -> anyhow::Result<EastWest> {
    let lab = bridged(prefix, &[CLIENT_IP, SERVER_IP])?;
    docker_rules(&lab, dir, &[], false)?;
    Ok(EastWest { lab })
}

/// Docker's path for a container (c0, the client) reaching another's ports (c1, the
/// server) published on the host's address (hairpin), as dockerd sets it up with
/// `userland-proxy: false`: the DNAT rules of [`PUBLISHED`] also match traffic from the
/// bridge (no `! -i br0`, no `-i br0 -j RETURN`), the bridge's ports in hairpin mode, and
/// the backend's replies, bridged straight to the client, reverse-translated by conntrack
/// (br_netfilter).
pub fn docker_hairpin(prefix: &str, dir: &Path) -> anyhow::Result<EastWest> {
    let lab = bridged(prefix, &[CLIENT_IP, SERVER_IP])?;
    for port in ["vb0", "vb1"] {
        lab.host
            .exec("bridge", &["link", "set", "dev", port, "hairpin", "on"])?;
    }
    docker_rules(&lab, dir, &PUBLISHED, true)?;
    Ok(EastWest { lab })
}

/// Docker's path for a container publishing [`PUBLISHED`] (`docker run -p 8080:80 ...`):
/// the bridge, br_netfilter and dockerd's rules, with the nat DOCKER chain's DNAT, the
/// filter DOCKER chain's ACCEPT and the hairpin MASQUERADE of every port.
pub fn docker_published(prefix: &str, dir: &Path) -> anyhow::Result<Published> {
    let lab = bridged(prefix, &[SERVER_IP])?;
    docker_rules(&lab, dir, &PUBLISHED, false)?;
    Ok(Published { lab })
}

fn docker_rules(
    lab: &Lab,
    dir: &Path,
    published: &[(u16, u16)],
    hairpin: bool,
) -> anyhow::Result<()> {
    lab.host.sysctl("net.bridge.bridge-nf-call-iptables", "1")?;
    lab.host.sysctl("net.ipv4.ip_forward", "1")?;
    let rules = dir.join("docker.rules");
    let udp: &[(u16, u16)] = if published.is_empty() {
        &[]
    } else {
        &PUBLISHED_UDP
    };
    std::fs::write(&rules, iptables_rules(published, udp, hairpin))
        .context("writing docker.rules")?;
    let rules = rules.display().to_string();
    // In the lab's host namespace, never the machine's.
    lab.host.exec("iptables-restore", &[&rules])?;
    Ok(())
}

/// What dockerd 20.10 installs for one bridge network (`br0`, 198.18.10.0/24) with the
/// server container publishing `tcp` and `udp` (host port, container port) on every host
/// address, as `iptables-save` shows it; with `hairpin` (`userland-proxy: false`) the DNAT
/// rules also take traffic from the bridge.
pub fn iptables_rules(tcp: &[(u16, u16)], udp: &[(u16, u16)], hairpin: bool) -> String {
    let server = SERVER_IP;
    let mut nat_postrouting = String::new();
    let mut nat_docker = String::new();
    let mut filter_docker = String::new();
    let from_outside = if hairpin { "" } else { "! -i br0 " };
    let ports = tcp
        .iter()
        .map(|p| ("tcp", p))
        .chain(udp.iter().map(|p| ("udp", p)));
    for (proto, (host, container)) in ports {
        let _ = writeln!(
            nat_postrouting,
            "-A POSTROUTING -s {server}/32 -d {server}/32 -p {proto} -m {proto} --dport {container} -j MASQUERADE"
        );
        let _ = writeln!(
            nat_docker,
            "-A DOCKER {from_outside}-p {proto} -m {proto} --dport {host} -j DNAT --to-destination {server}:{container}"
        );
        let _ = writeln!(
            filter_docker,
            "-A DOCKER -d {server}/32 ! -i br0 -o br0 -p {proto} -m {proto} --dport {container} -j ACCEPT"
        );
    }
    let bridge_return = if hairpin {
        "-A POSTROUTING -o br0 -m addrtype --src-type LOCAL -j MASQUERADE\n"
    } else {
        "-A DOCKER -i br0 -j RETURN\n"
    };
    format!(
        "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s {SUBNET} ! -o br0 -j MASQUERADE
{nat_postrouting}{bridge_return}{nat_docker}COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o br0 -j DOCKER
-A FORWARD -i br0 ! -o br0 -j ACCEPT
-A FORWARD -i br0 -o br0 -j ACCEPT
{filter_docker}-A DOCKER-ISOLATION-STAGE-1 -i br0 ! -o br0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o br0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"
    )
}

/// A bridge in the host namespace, one veth per container (c0, c1, ... at `ips`).
pub fn bridged(prefix: &str, ips: &[Ipv4Addr]) -> anyhow::Result<Lab> {
    let lab = Lab::new(prefix, ips.len()).context("bridge lab")?;
    lab.host.ip(&["link", "add", "br0", "type", "bridge"])?;
    lab.host
        .ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", "br0"])?;
    lab.host.ip(&["link", "set", "br0", "up"])?;
    for (i, ip) in ips.iter().enumerate() {
        let ns = &lab.containers[i];
        let host_if = format!("vb{i}");
        let [_, _, c, d] = ip.octets();
        veth_pair(
            (&lab.host, &host_if, Mac([0x02, 0, 0, 0, 0, i as u8 + 1])),
            (ns, "eth0", Mac([0x02, 0x42, 198, 18, c, d])),
        )?;
        lab.host
            .ip(&["link", "set", &host_if, "master", "br0", "up"])?;
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "via", GATEWAY])?;
    }
    Ok(lab)
}

/// A container definition for netbpf.
pub fn container(name: &str, ns: &Netns, ip: Ipv4Addr, ports: &str) -> String {
    format!(
        "[[container]]\nname = \"{name}\"\nnetns = \"{}\"\nnetwork = \"front\"\nip = \"{ip}\"\n{ports}\n",
        ns.path().display()
    )
}

/// Writes the definitions and runs `netbpf --netns HOST apply` (the lab's host namespace).
pub fn apply(netbpf_bin: &Path, lab: &Lab, dir: &Path, definitions: &str) -> anyhow::Result<()> {
    let file = dir.join("netbpf.toml");
    std::fs::write(&file, definitions).context("writing definitions")?;
    cmd::output(
        Command::new(netbpf_bin)
            .args(["--netns", lab.host.name(), "apply", "-c"])
            .arg(&file),
    )?;
    Ok(())
}

/// netbpf: the same two containers, wired by `netbpf apply`.
pub fn netbpf(prefix: &str, netbpf_bin: &Path, dir: &Path) -> anyhow::Result<EastWest> {
    let lab = Lab::new(prefix, 2).context("netbpf lab")?;
    let definitions = format!(
        "[[network]]\nname = \"front\"\nsubnet = \"{SUBNET}\"\n\n{}\n{}",
        container("client", &lab.containers[0], CLIENT_IP, ""),
        container("server", &lab.containers[1], SERVER_IP, "")
    );
    apply(netbpf_bin, &lab, dir, &definitions)?;
    Ok(EastWest { lab })
}

/// The `[host]` lines of a netbpf lab whose uplink translates at `mode` (tc or xdp).
pub fn uplink(mode: &str) -> String {
    format!("uplink = \"{HOST_UPLINK_IF}\"\nuplink_mode = \"{mode}\"\n")
}

/// netbpf: the server container publishing [`PUBLISHED`], with `host` as the `[host]`
/// section's settings (the uplink and its mode, or the cgroup of the host's processes).
pub fn netbpf_published(
    prefix: &str,
    netbpf_bin: &Path,
    dir: &Path,
    host: &str,
) -> anyhow::Result<Published> {
    let lab = Lab::new(prefix, 1).context("netbpf lab")?;
    let definitions = format!(
        "[host]\n{host}\n[[network]]\nname = \"front\"\nsubnet = \"{SUBNET}\"\n\n{}",
        container("server", &lab.containers[0], SERVER_IP, &published_ports())
    );
    apply(netbpf_bin, &lab, dir, &definitions)?;
    Ok(Published { lab })
}

/// The `ports` line of the server container: [`PUBLISHED`] and [`PUBLISHED_UDP`].
fn published_ports() -> String {
    let ports: Vec<String> = PUBLISHED
        .iter()
        .map(|(h, c)| format!("\"{h}:{c}\""))
        .chain(
            PUBLISHED_UDP
                .iter()
                .map(|(h, c)| format!("\"{h}:{c}/udp\"")),
        )
        .collect();
    format!("ports = [{}]", ports.join(", "))
}

/// netbpf: a client container (c0) and the server container (c1) publishing [`PUBLISHED`]
/// on the host, its uplink at tc (its address the host's, reached from the client:
/// hairpin).
pub fn netbpf_hairpin(prefix: &str, netbpf_bin: &Path, dir: &Path) -> anyhow::Result<EastWest> {
    let lab = Lab::new(prefix, 2).context("netbpf lab")?;
    let definitions = format!(
        "[host]\n{}\n[[network]]\nname = \"front\"\nsubnet = \"{SUBNET}\"\n\n{}\n{}",
        uplink("tc"),
        container("client", &lab.containers[0], CLIENT_IP, ""),
        container("server", &lab.containers[1], SERVER_IP, &published_ports())
    );
    apply(netbpf_bin, &lab, dir, &definitions)?;
    Ok(EastWest { lab })
}

/// What netbpf's programs counted in a lab, as `netbpf show stats -o json` reads them.
pub struct Counters(Vec<serde_json::Value>);

impl Counters {
    pub fn read(netbpf_bin: &Path, lab: &Lab) -> anyhow::Result<Counters> {
        let out = cmd::output(Command::new(netbpf_bin).args([
            "--netns",
            lab.host.name(),
            "show",
            "stats",
            "-o",
            "json",
        ]))?;
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&out).with_context(|| format!("netbpf show stats: {out}"))?;
        Ok(Counters(rows))
    }

    pub fn packets(&self, hook: Hook, outcome: Outcome) -> u64 {
        self.0
            .iter()
            .find(|r| r["hook"] == hook.name() && r["outcome"] == outcome.name())
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or(0)
    }

    /// "hook/outcome: packets" of every drop counter that is not zero.
    pub fn drops(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|r| r["drop"] == true && r["packets"].as_u64().is_some_and(|p| p > 0))
            .map(|r| format!("{}/{}: {}", r["hook"], r["outcome"], r["packets"]))
            .collect()
    }

    /// Fails unless every one of `expected` counted packets and none of `unexpected` did:
    /// a target whose traffic silently took another path measures nothing.
    pub fn require(
        &self,
        expected: &[(Hook, Outcome)],
        unexpected: &[(Hook, Outcome)],
    ) -> anyhow::Result<()> {
        for (hook, outcome) in expected {
            if self.packets(*hook, *outcome) == 0 {
                return Err(anyhow!(
                    "{}/{} counted nothing: the traffic did not take that path",
                    hook.name(),
                    outcome.name()
                ));
            }
        }
        for (hook, outcome) in unexpected {
            let n = self.packets(*hook, *outcome);
            if n > 0 {
                return Err(anyhow!(
                    "{}/{} counted {n} packets: some traffic took that path",
                    hook.name(),
                    outcome.name()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_rules_publish_each_port() {
        let plain = iptables_rules(&[], &[], false);
        assert!(!plain.contains("DNAT"));
        assert!(plain.contains("-A POSTROUTING -s 198.18.10.0/24 ! -o br0 -j MASQUERADE\n-A DOCKER -i br0 -j RETURN\nCOMMIT"));
        let published = iptables_rules(&[(8080, 80)], &[(5201, 5201)], false);
        for rule in [
            "-A DOCKER ! -i br0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.18.10.3:80\n",
            "-A DOCKER -d 198.18.10.3/32 ! -i br0 -o br0 -p tcp -m tcp --dport 80 -j ACCEPT\n",
            "-A POSTROUTING -s 198.18.10.3/32 -d 198.18.10.3/32 -p tcp -m tcp --dport 80 -j MASQUERADE\n",
        ] {
            assert!(published.contains(rule), "{rule}");
        }
        assert!(published.contains(
            "-A DOCKER ! -i br0 -p udp -m udp --dport 5201 -j DNAT --to-destination 198.18.10.3:5201\n"
        ));
        let hairpin = iptables_rules(&[(8080, 80)], &[], true);
        assert!(hairpin.contains(
            "-A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.18.10.3:80\n"
        ));
        assert!(!hairpin.contains("-A DOCKER -i br0 -j RETURN"));
    }
}
