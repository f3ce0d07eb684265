//! The planner: a pure function from the validated model to the kernel state it implies
//! (map entries and veths). The reconciler makes the kernel match it.

pub mod sched;
pub mod services;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
};

use netbpf_common::{
    net::{
        NET_ICC, NET_INTERNAL, NET_MASQUERADE, NO_PEER_SLOTS, NetworkInfo, PEER_SLOTS, name_bytes,
    },
    ports::{PortKey, PortTarget},
};

use crate::{
    config::{Model, model::format_mac, validate::Previous},
    kernel::{ifaces::host_ifname, maps::addr_key},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub networks: BTreeMap<u32, NetworkInfo>,
    /// Published ports, for the north-south translation.
    pub ports: BTreeMap<PortKey, PortTarget>,
    /// The host's interface toward the outside, where `from_uplink` runs.
    pub uplink: Option<String>,
    pub uplink_mode: crate::config::model::UplinkMode,
    /// The cgroup of the host's processes, where the socket programs run.
    pub cgroup: Option<PathBuf>,
    /// Containers with a network (the ones on "none" need nothing wired).
    pub containers: Vec<WiredContainer>,
    /// Virtual services, every backend selectable (the agent's health checks replan them).
    pub services: services::ServicePlan,
    /// Containers whose veth is made in the host namespace and its container end handed
    /// over (to Docker, which moves and configures it), by name. Not part of a container's
    /// `spec`: how a veth is made does not change what it is.
    pub handover: BTreeSet<String>,
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
    /// The network's range of peer slots. Not part of `spec`: a range that changes is
    /// rewritten in place, without wiring the container again.
    pub peer_base: u32,
    /// A hash of everything that needs the container wired again when it changes (all of
    /// the above but `peer_base`).
    pub spec: u32,
}

impl WiredContainer {
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

pub fn plan(model: &Model, previous: &Previous) -> Plan {
    let bases = peer_ranges(model, previous);
    let networks: BTreeMap<u32, NetworkInfo> = model
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
                peer_base: bases.get(&n.id).copied().unwrap_or(NO_PEER_SLOTS),
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
                peer_base: NO_PEER_SLOTS,
                spec: 0,
            };
            wired.spec = fnv1a(format!("{wired:?}").as_bytes());
            wired.peer_base = networks.get(&net.id).map_or(NO_PEER_SLOTS, |n| n.peer_base);
            Some(wired)
        })
        .collect();
    let ports = model
        .containers
        .iter()
        .filter_map(|c| c.attachment.as_ref())
        .flat_map(|a| {
            a.ports.iter().map(move |p| {
                let key = PortKey {
                    addr: addr_key(p.host_ip),
                    port: p.host_port.to_be(),
                    proto: p.proto.number(),
                    pad: 0,
                };
                let target = PortTarget {
                    addr: addr_key(a.ip),
                    port: p.container_port.to_be(),
                    pad: 0,
                    network_id: a.network_id,
                };
                (key, target)
            })
        })
        .collect();
    Plan {
        networks,
        ports,
        uplink: model.uplink.clone(),
        uplink_mode: model.uplink_mode,
        cgroup: model.cgroup.clone(),
        containers,
        services: services::plan(model, previous, &BTreeSet::new()),
        handover: model
            .containers
            .iter()
            .filter(|c| c.handover)
            .map(|c| c.name.clone())
            .collect(),
    }
}

/// Gives each network a range of `NB_PEERS` slots, one per address of its subnet. A
/// network whose subnet did not change keeps the range it had (so its containers' slots
/// never move); the others get the first free range (aligned to its size). Networks
/// larger than the array, or beyond its room, get none (their destinations are found by
/// hash).
fn peer_ranges(model: &Model, previous: &Previous) -> BTreeMap<u32, u32> {
    let size = |prefix_len: u8| 1u64 << (32 - u32::from(prefix_len));
    let mut taken: Vec<(u64, u64)> = Vec::new();
    let overlaps = |taken: &[(u64, u64)], start: u64, len: u64| {
        start + len > u64::from(PEER_SLOTS)
            || taken.iter().any(|(s, l)| start < s + l && *s < start + len)
    };
    let mut bases = BTreeMap::new();
    let mut networks: Vec<_> = model.networks.iter().collect();
    networks.sort_by_key(|n| n.id);
    for net in &networks {
        let len = size(net.prefix_len);
        if let Some(&(base, prefix_len)) = previous.peer_bases.get(&net.name)
            && base != NO_PEER_SLOTS
            && prefix_len == net.prefix_len
            && !overlaps(&taken, u64::from(base), len)
        {
            taken.push((u64::from(base), len));
            bases.insert(net.id, base);
        }
    }
    for net in networks {
        if bases.contains_key(&net.id) {
            continue;
        }
        let len = size(net.prefix_len);
        let free = (0..u64::from(PEER_SLOTS))
            .step_by(len.min(u64::from(PEER_SLOTS)) as usize)
            .find(|start| !overlaps(&taken, *start, len));
        if let Some(start) = free {
            taken.push((start, len));
            bases.insert(net.id, start as u32);
        }
    }
    bases
}

/// 32-bit FNV-1a: small, stable across builds and platforms (unlike std's hasher).
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::config::model::Network;

    fn network(id: u32, name: &str, subnet: [u8; 4], prefix_len: u8) -> Network {
        Network {
            id,
            name: name.to_owned(),
            subnet: Ipv4Addr::from(subnet),
            prefix_len,
            gateway: Ipv4Addr::from(u32::from(Ipv4Addr::from(subnet)) + 1),
            icc: true,
            internal: false,
            masquerade: true,
        }
    }

    fn model(networks: Vec<Network>) -> Model {
        Model {
            uplink: None,
            pin_dir: None,
            timeouts: Default::default(),
            cgroup: None,
            uplink_mode: Default::default(),
            networks,
            containers: Vec::new(),
            services: Vec::new(),
        }
    }

    #[test]
    fn peer_ranges_are_disjoint_aligned_and_stable() {
        let m = model(vec![
            network(1, "a", [198, 18, 10, 0], 24),
            network(2, "b", [198, 18, 0, 0], 20),
            network(3, "huge", [10, 0, 0, 0], 8),
        ]);
        let bases = peer_ranges(&m, &Previous::default());
        assert_eq!(bases.get(&1), Some(&0));
        assert_eq!(bases.get(&2), Some(&4096));
        assert_eq!(bases.get(&3), None, "a /8 does not fit");

        // A reload keeps where each network was, even if the order changed.
        let previous = Previous {
            peer_bases: [("b".to_owned(), (4096, 20)), ("a".to_owned(), (0, 24))].into(),
            ..Default::default()
        };
        let m2 = model(vec![
            network(5, "c", [198, 19, 0, 0], 24),
            network(2, "b", [198, 18, 0, 0], 20),
            network(1, "a", [198, 18, 10, 0], 24),
        ]);
        let bases = peer_ranges(&m2, &previous);
        assert_eq!((bases[&1], bases[&2]), (0, 4096));
        assert_eq!(bases[&5], 256, "the first free range of its size");

        // A network that grows gets a new range; the others stay where they were.
        let m3 = model(vec![
            network(1, "a", [198, 18, 10, 0], 23),
            network(2, "b", [198, 18, 0, 0], 20),
        ]);
        let bases = peer_ranges(&m3, &previous);
        assert_eq!(bases[&2], 4096);
        assert_eq!(bases[&1], 0, "first free aligned range of 512 slots");
    }
}
