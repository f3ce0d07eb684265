//! The two targets a benchmark compares, built on identical namespaces: containers on a
//! Linux bridge (Docker's data path without iptables) and the same containers wired by
//! netbpf. Addresses from 198.18.0.0/15; everything goes when the lab drops.

use std::{net::Ipv4Addr, path::Path, process::Command};

use anyhow::Context as _;
use netbpf_tests::{
    lab::{Lab, veth_pair},
    netns::Netns,
    packet::Mac,
};

use crate::cmd;

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);
const GATEWAY: &str = "198.18.10.1";

/// Two containers (client c0, server c1) on one network.
pub struct EastWest {
    pub name: &'static str,
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

/// The floor: a bridge in the host namespace, one veth per container, nothing else.
pub fn bridge(prefix: &str) -> anyhow::Result<EastWest> {
    let mut lab = bridged(prefix)?;
    // No netfilter on bridged frames: the bare bridge.
    lab.lab
        .host
        .sysctl("net.bridge.bridge-nf-call-iptables", "0")?;
    lab.name = "bridge";
    Ok(lab)
}

/// Docker's data path: the same bridge with bridged frames passing netfilter
/// (br_netfilter, as Docker sets it) and the rules `dockerd` installs for a network
/// (filter FORWARD chains with isolation and conntrack, nat MASQUERADE).
pub fn docker(prefix: &str, dir: &Path) -> anyhow::Result<EastWest> {
    let mut lab = bridged(prefix)?;
    lab.lab
        .host
        .sysctl("net.bridge.bridge-nf-call-iptables", "1")?;
    lab.lab.host.sysctl("net.ipv4.ip_forward", "1")?;
    let rules = dir.join("docker.rules");
    std::fs::write(&rules, DOCKER_RULES).context("writing docker.rules")?;
    let rules = rules.display().to_string();
    lab.lab.host.exec("iptables-restore", &[&rules])?;
    lab.name = "docker";
    Ok(lab)
}

/// What dockerd 20.10 installs for one bridge network (`br0`, 198.18.10.0/24), as
/// `iptables-save` shows it.
const DOCKER_RULES: &str = "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 198.18.10.0/24 ! -o br0 -j MASQUERADE
-A DOCKER -i br0 -j RETURN
COMMIT
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
-A DOCKER-ISOLATION-STAGE-1 -i br0 ! -o br0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o br0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
";

/// A bridge in the host namespace, one veth per container.
fn bridged(prefix: &str) -> anyhow::Result<EastWest> {
    let lab = Lab::new(prefix, 2).context("bridge lab")?;
    lab.host.ip(&["link", "add", "br0", "type", "bridge"])?;
    lab.host
        .ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", "br0"])?;
    lab.host.ip(&["link", "set", "br0", "up"])?;
    for (i, ip) in [CLIENT_IP, SERVER_IP].into_iter().enumerate() {
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
    Ok(EastWest {
        name: "bridge",
        lab,
    })
}

/// netbpf: the same two containers, wired by `netbpf apply`.
pub fn netbpf(prefix: &str, netbpf_bin: &Path, dir: &Path) -> anyhow::Result<EastWest> {
    let lab = Lab::new(prefix, 2).context("netbpf lab")?;
    let file = dir.join("netbpf.toml");
    let container = |name: &str, ns: &Netns, ip: Ipv4Addr| {
        format!(
            "[[container]]\nname = \"{name}\"\nnetns = \"{}\"\nnetwork = \"front\"\nip = \"{ip}\"\n",
            ns.path().display()
        )
    };
    std::fs::write(
        &file,
        format!(
            "[[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n{}\n{}",
            container("client", &lab.containers[0], CLIENT_IP),
            container("server", &lab.containers[1], SERVER_IP)
        ),
    )
    .context("writing definitions")?;
    cmd::output(
        Command::new(netbpf_bin)
            .args(["--netns", lab.host.name(), "apply", "-c"])
            .arg(&file),
    )?;
    Ok(EastWest {
        name: "netbpf",
        lab,
    })
}
