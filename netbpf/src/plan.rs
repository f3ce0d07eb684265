//! The planner: a pure function from the validated model to the kernel state it implies
//! (map entries and veths). The reconciler makes the kernel match it.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use netbpf_common::net::{NET_ICC, NET_INTERNAL, NET_MASQUERADE, NetworkInfo, name_bytes};

use crate::{
    config::{Model, model::format_mac},
    kernel::{ifaces::host_ifname, maps::addr_key},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub networks: BTreeMap<u32, NetworkInfo>,
    /// Containers with a network (the ones on "none" need nothing wired).
    pub containers: Vec<WiredContainer>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WiredContainer {
    pub name: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub host_ifname: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: [u8; 6],
    pub gateway: Ipv4Addr,
    pub network_id: u32,
    pub internal: bool,
    /// A hash of everything above: a container whose hash changed is wired again.
    pub spec: u32,
}

impl WiredContainer {
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

pub fn plan(model: &Model) -> Plan {
    let networks = model
        .networks
        .iter()
        .map(|n| {
            let flags = [
                (n.icc, NET_ICC),
                (n.internal, NET_INTERNAL),
                (n.masquerade, NET_MASQUERADE),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |acc, (_, bit)| acc | bit);
            let info = NetworkInfo {
                subnet: addr_key(n.subnet),
                gateway: addr_key(n.gateway),
                prefix_len: u32::from(n.prefix_len),
                flags,
                name: name_bytes(&n.name),
            };
            (n.id, info)
        })
        .collect();
    let containers = model
        .containers
        .iter()
        .filter_map(|c| {
            let a = c.attachment.as_ref()?;
            let net = model.networks.iter().find(|n| n.id == a.network_id)?;
            let mut wired = WiredContainer {
                name: c.name.clone(),
                netns: c.netns.clone(),
                ifname: a.ifname.clone(),
                host_ifname: host_ifname(&c.name),
                ip: a.ip,
                prefix_len: net.prefix_len,
                mac: a.mac,
                gateway: net.gateway,
                network_id: net.id,
                internal: net.internal,
                spec: 0,
            };
            wired.spec = fnv1a(format!("{wired:?}").as_bytes());
            Some(wired)
        })
        .collect();
    Plan {
        networks,
        containers,
    }
}

/// 32-bit FNV-1a: small, stable across builds and platforms (unlike std's hasher).
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}
