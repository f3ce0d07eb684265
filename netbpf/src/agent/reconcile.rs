//! Making the kernel match a [`Plan`], changing only what differs: networks first, then
//! containers that went away or changed are unwired, then new ones wired. Programs inside
//! links that stay are swapped for this binary's (BPF_LINK_UPDATE), without a gap.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
    path::Path,
};

use netbpf_common::{
    conntrack::HostConfig,
    net::{EndpointInfo, IFACE_NAT_TARGET, IfaceInfo, NetworkInfo, PeerInfo, name_bytes, name_str},
    ports::PortKey,
    stats::Hook,
};

use crate::{
    Error, Result,
    config::model::UplinkMode,
    kernel::{
        clock, conntrack,
        datapath::Loaded,
        ifaces::{self, OwnedVeth, VethSpec},
        maps::{ContainerMaps, addr_key, addr_of},
        pins::PinDir,
        services::ServiceMaps,
    },
    plan::{Plan, WiredContainer},
};

use super::services;

/// What one reconcile changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub networks: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    /// Links whose program was swapped in place.
    pub swapped: usize,
    /// Published ports in place.
    pub ports: usize,
    pub services: services::ServiceReport,
}

/// Source ports masqueraded flows take: above Linux's default ip_local_port_range, so
/// they never meet the host's own connections.
const MASQUERADE_PORTS: (u16, u16) = (61000, 65535);

pub fn reconcile(pins: &PinDir, plan: &Plan) -> Result<Report> {
    pins.prepare()?;
    let mut loaded = Loaded::open(pins)?;
    let mut maps = ContainerMaps::open_pinned(pins)?;
    let mut service_maps = ServiceMaps::open_pinned(pins)?;
    let services_held = services::Current::read(&service_maps)?;
    let mut report = Report::default();
    // Containers that translated flows lead to get IFACE_NAT_TARGET (their replies go
    // through conntrack, where the VIP or the host's address and port is restored): a
    // service's backends before any service leads to them, losing it only once no service
    // does; containers publishing ports (a hairpin flow keeps its client's address).
    let wanted_backends = plan.services.backend_addrs();
    let held_backends = services_held.backend_addrs();
    let publishers: BTreeSet<u32> = plan.ports.values().map(|t| t.addr).collect();
    let flagged = |c: &WiredContainer| {
        let addr = addr_key(c.ip);
        wanted_backends.contains(&addr)
            || held_backends.contains(&addr)
            || publishers.contains(&addr)
    };
    // The networks as the kernel has them: where removed containers' peer slots are.
    let old_networks: HashMap<u32, NetworkInfo> = maps.networks()?.into_iter().collect();

    let current: HashMap<String, (u32, EndpointInfo)> = maps
        .endpoints()?
        .into_iter()
        .map(|(addr, ep)| (name_str(&ep.name).to_owned(), (addr_key(addr), ep)))
        .collect();
    let veths: HashMap<String, OwnedVeth> = ifaces::owned_veths()?
        .into_iter()
        .map(|v| (v.container.clone(), v))
        .collect();
    let desired: HashMap<&str, &WiredContainer> = plan
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    // Whether a wired container stays as it is. A handed-over veth cannot be made again
    // (its container end is in a namespace only its new owner moves it into): whatever
    // else changed in how a netbpf describes it, it keeps its veth while it keeps its
    // address, and its entries are rewritten in place.
    let unchanged = |c: &WiredContainer, key: u32, ep: &EndpointInfo| {
        ep.spec == c.spec || (plan.handover.contains(&c.name) && key == addr_key(c.ip))
    };

    // Unwire what is gone or changed, including veths whose endpoint was lost.
    for (name, (key, ep)) in &current {
        let keep = desired
            .get(name.as_str())
            .is_some_and(|c| unchanged(c, *key, ep) && veths.contains_key(name));
        if !keep {
            if let Some(net) = old_networks.get(&ep.network_id) {
                maps.clear_peer(net, addr_of(*key))?;
            }
            unwire(pins, &mut maps, *key, ep.ifindex, veths.get(name))?;
            report.removed.push(name.clone());
        }
    }
    for (name, veth) in &veths {
        if !current.contains_key(name) {
            unwire_veth(pins, &mut maps, veth)?;
        }
    }

    // Networks before the endpoints that name them.
    for (id, info) in &plan.networks {
        maps.networks
            .insert(id, info, 0)
            .map_err(map_err("NB_NETWORKS"))?;
    }
    report.networks = plan.networks.len();

    let is_kept = |c: &WiredContainer| {
        current
            .get(&c.name)
            .is_some_and(|(key, ep)| unchanged(c, *key, ep))
            && veths.contains_key(&c.name)
    };
    // A kept container that starts publishing gets the flag before its ports are written
    // (the replies of the first hairpin flow to it must go through conntrack); the rest
    // of what the program reads about it is rewritten below, after its peer slots.
    for c in plan.containers.iter().filter(|c| is_kept(c)) {
        let ifindex = veths[&c.name].ifindex;
        if publishers.contains(&addr_key(c.ip))
            && let Some(mut info) = maps.iface(ifindex)?
            && info.net_flags & IFACE_NAT_TARGET == 0
        {
            info.net_flags |= IFACE_NAT_TARGET;
            maps.set_iface(ifindex, &info)?;
        }
    }

    // The north-south state before any container comes up, so that its first packets
    // are already translated as they should be.
    // Published ports: what is wanted, then what is not.
    for (key, target) in &plan.ports {
        maps.ports
            .insert(key, target, 0)
            .map_err(map_err("NB_PORTS"))?;
    }
    for (key, _) in maps.ports()? {
        if !plan.ports.contains_key(&key) {
            ignore_missing(maps.ports.remove(&key)).map_err(map_err("NB_PORTS"))?;
        }
    }
    report.ports = plan.ports.len();

    // The host's own addresses, where ports published on 0.0.0.0 answer: the networks'
    // gateways among them (also those whose first container is wired below), loopback
    // never (a port published on 127.0.0.1 is the host's processes' alone, and nothing
    // from a wire may reach 127/8).
    let mut local: Vec<u32> = ifaces::host_addresses()?
        .into_iter()
        .filter(|a| !a.is_loopback())
        .map(addr_key)
        .collect();
    local.extend(plan.networks.values().map(|n| n.gateway));
    local.sort_unstable();
    local.dedup();
    for addr in &local {
        maps.local
            .insert(addr, &1, 0)
            .map_err(map_err("NB_LOCAL"))?;
    }
    let stale: Vec<u32> = maps
        .local
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !local.contains(k))
        .collect();
    for addr in stale {
        ignore_missing(maps.local.remove(&addr)).map_err(map_err("NB_LOCAL"))?;
    }

    // The uplink: published ports arrive there, masqueraded flows leave with its address.
    // The port range serves hairpin flows too, with or without an uplink.
    // Conntrack timestamps are jiffies: their rate, measured once per pin directory.
    let jiffies_hz = match maps.host_config()?.jiffies_hz {
        0 => clock::measure_hz()?,
        hz => hz,
    };
    let mut config = HostConfig {
        masq_port_min: MASQUERADE_PORTS.0,
        masq_port_max: MASQUERADE_PORTS.1,
        jiffies_hz,
        netns_cookie: ifaces::netns_cookie()?,
        ..HostConfig::default()
    };
    if let Some(uplink) = &plan.uplink {
        let ifindex = ifaces::ifindex(uplink)?;
        let address = ifaces::addresses_of(uplink)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::io(
                    format!("uplink {uplink}"),
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "has no IPv4 address to masquerade with",
                    ),
                )
            })?;
        config.uplink_ifindex = ifindex;
        config.uplink_addr = addr_key(address);
        // One of the two uplink programs translates: the new one attaches before the
        // other one goes, so no packet finds neither.
        let xdp = match plan.uplink_mode {
            UplinkMode::Tc => false,
            UplinkMode::Xdp => true,
            UplinkMode::Auto => !ifaces::is_virtual(uplink)?,
        };
        let (hook, other) = if xdp {
            (Hook::XdpUplink, Hook::FromUplink)
        } else {
            (Hook::FromUplink, Hook::XdpUplink)
        };
        let attached = loaded.attach(pins, hook, ifindex, uplink)?;
        report.swapped += usize::from(attached.replaced);
        remove_pin(&pins.link(other, uplink))?;
    }
    maps.set_host_config(&config)?;

    // The host's processes: socket programs on their cgroup, acting on this namespace's
    // sockets only.
    if let Some(cgroup) = &plan.cgroup {
        let dir = std::fs::File::open(cgroup)
            .map_err(|e| Error::io(format!("opening cgroup {}", cgroup.display()), e))?;
        for hook in [
            Hook::SockConnect4,
            Hook::SockSendmsg4,
            Hook::SockRecvmsg4,
            Hook::SockPeername4,
        ] {
            let attached = loaded.attach_cgroup(pins, hook, &dir)?;
            report.swapped += usize::from(attached.replaced);
        }
    }

    let mut containers: Vec<&WiredContainer> = plan.containers.iter().collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    // Kept containers' peer slots before any sender's entry points at a (new) range.
    for c in containers.iter().filter(|c| is_kept(c)) {
        set_peer(&mut maps, plan, c, veths[&c.name].ifindex)?;
    }
    let mut failures = Vec::new();
    for c in containers {
        if is_kept(c) {
            let veth = &veths[&c.name];
            // The network's policy (icc) or range may have changed: rewrite what the
            // program reads, then swap in this binary's program.
            let (key, ep) = &current[&c.name];
            maps.set_iface(veth.ifindex, &iface_info(plan, c, ep.host_mac, flagged(c)))?;
            if ep.spec != c.spec {
                // Handed over and described anew: the same veth, the entry as planned.
                let endpoint = EndpointInfo {
                    mac: c.mac,
                    network_id: c.network_id,
                    spec: c.spec,
                    ..*ep
                };
                maps.endpoints
                    .insert(key, &endpoint, 0)
                    .map_err(map_err("NB_ENDPOINTS"))?;
            }
            let attached = loaded.attach(pins, Hook::FromContainer, veth.ifindex, &veth.ifname)?;
            report.swapped += usize::from(attached.replaced);
            report.kept.push(c.name.clone());
        } else {
            // One container that cannot be wired does not stop the others.
            match wire(pins, &mut loaded, &mut maps, plan, c, flagged(c)) {
                Ok(()) => report.added.push(c.name.clone()),
                Err(e) => failures.push(format!("container {:?}: {e}", c.name)),
            }
        }
    }

    // Services once their backends' containers are wired and flagged; then the flag goes
    // from containers no service leads to any more.
    match services::reconcile(&mut service_maps, &services_held, &plan.services) {
        Ok(r) => report.services = r,
        Err(e) => failures.push(format!("services: {e}")),
    }
    let endpoints: HashMap<u32, EndpointInfo> = maps
        .endpoints()?
        .into_iter()
        .map(|(addr, ep)| (addr_key(addr), ep))
        .collect();
    for c in &plan.containers {
        let addr = addr_key(c.ip);
        if held_backends.contains(&addr)
            && !wanted_backends.contains(&addr)
            && !publishers.contains(&addr)
            && let Some(ep) = endpoints.get(&addr)
        {
            maps.set_iface(ep.ifindex, &iface_info(plan, c, ep.host_mac, false))?;
        }
    }

    // Networks nobody defines any more, last (no endpoint names them now).
    for (id, _) in maps.networks()? {
        if !plan.networks.contains_key(&id) {
            maps.networks.remove(&id).map_err(map_err("NB_NETWORKS"))?;
        }
    }
    // Flows of containers that went (or were wired anew) and of ports no longer published.
    // Sets: every recorded flow is checked against them.
    let kept: BTreeSet<&String> = report.kept.iter().collect();
    let gone: BTreeSet<u32> = current
        .iter()
        .filter(|(name, _)| !kept.contains(name))
        .map(|(_, (key, _))| *key)
        .collect();
    let published = |addr: u32, port: u16, proto: u8| {
        [addr, 0].iter().any(|a| {
            plan.ports.contains_key(&PortKey {
                addr: *a,
                port,
                proto,
                pad: 0,
            })
        })
    };
    conntrack::forget_flows(pins, |k, e| {
        conntrack::containers_of(k, e)
            .iter()
            .flatten()
            .any(|a| gone.contains(a))
            || conntrack::published_via(k, e)
                .is_some_and(|(addr, port)| !published(addr, port, k.proto))
    })?;

    report.removed.sort();
    report.added.sort();
    if !failures.is_empty() {
        return Err(Error::Incomplete(failures.join("; ")));
    }
    Ok(report)
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |source| Error::Map { map, source }
}

/// What the program reads about a container's interface; `nat_target`: translated flows
/// lead to it (`IFACE_NAT_TARGET`).
fn iface_info(plan: &Plan, c: &WiredContainer, host_mac: [u8; 6], nat_target: bool) -> IfaceInfo {
    let net = plan.networks.get(&c.network_id);
    let target_flag = if nat_target { IFACE_NAT_TARGET } else { 0 };
    IfaceInfo {
        addr: addr_key(c.ip),
        network_id: c.network_id,
        subnet: net.map_or(0, |n| n.subnet),
        mask: addr_key(Ipv4Addr::from(crate::config::model::mask(c.prefix_len))),
        gateway: addr_key(c.gateway),
        net_flags: net.map_or(0, |n| n.flags) | target_flag,
        mac: c.mac,
        host_mac,
        peer_base: c.peer_base,
    }
}

/// Puts the container in its network's peer range, where same-subnet senders find it.
fn set_peer(maps: &mut ContainerMaps, plan: &Plan, c: &WiredContainer, ifindex: u32) -> Result<()> {
    let Some(net) = plan.networks.get(&c.network_id) else {
        return Ok(());
    };
    let peer = PeerInfo {
        ifindex,
        network_id: c.network_id,
        mac: c.mac,
        pad: [0; 2],
    };
    maps.set_peer(net, c.ip, &peer)
}

/// Wires one container: veth, map entries, program, then the links go up. The program is
/// attached before the container's end goes up, so its first packet is already handled.
fn wire(
    pins: &PinDir,
    loaded: &mut Loaded,
    maps: &mut ContainerMaps,
    plan: &Plan,
    c: &WiredContainer,
    nat_target: bool,
) -> Result<()> {
    let mac = c.mac_string();
    let spec = VethSpec {
        container: &c.name,
        host_ifname: &c.host_ifname,
        netns: &c.netns,
        ifname: &c.ifname,
        ip: c.ip,
        prefix_len: c.prefix_len,
        mac: &mac,
        gateway: c.gateway,
        internal: c.internal,
        handover: plan.handover.contains(&c.name),
    };
    let (ifindex, host_mac) = ifaces::create_veth(&spec)?;
    let result = (|| {
        // The sender entry and the program first: the container's first packet is
        // handled. Then the links go up. Peers find it (slot, endpoint) only once it is
        // up, and the endpoint, which marks the container as wired, comes last: a wiring
        // cut short is redone by the next reconcile.
        maps.set_iface(ifindex, &iface_info(plan, c, host_mac, nat_target))?;
        loaded.attach(pins, Hook::FromContainer, ifindex, &c.host_ifname)?;
        ifaces::bring_up(&spec)?;
        set_peer(maps, plan, c, ifindex)?;
        let endpoint = EndpointInfo {
            mac: c.mac,
            host_mac,
            ifindex,
            network_id: c.network_id,
            spec: c.spec,
            name: name_bytes(&c.name),
        };
        maps.endpoints
            .insert(&addr_key(c.ip), &endpoint, 0)
            .map_err(map_err("NB_ENDPOINTS"))
    })();
    if result.is_err() {
        // Leave nothing half-wired: the container is wired again on the next reconcile.
        let veth = OwnedVeth {
            ifname: c.host_ifname.clone(),
            ifindex,
            container: c.name.clone(),
        };
        if let Some(net) = plan.networks.get(&c.network_id) {
            let _ = maps.clear_peer(net, c.ip);
        }
        let _ = unwire(pins, maps, addr_key(c.ip), ifindex, Some(&veth));
    }
    result
}

/// Removes one container's wiring. Its entries go first: from then on its packets drop as
/// of unknown source and nobody reaches it. Then the veth, and the link's pin last, so the
/// program filters the container's traffic until its interface is gone.
fn unwire(
    pins: &PinDir,
    maps: &mut ContainerMaps,
    key: u32,
    ifindex: u32,
    veth: Option<&OwnedVeth>,
) -> Result<()> {
    maps.clear_iface(ifindex)?;
    ignore_missing(maps.endpoints.remove(&key)).map_err(map_err("NB_ENDPOINTS"))?;
    if let Some(veth) = veth {
        ifaces::delete_veth(&veth.ifname)?;
        remove_pin(&pins.link(Hook::FromContainer, &veth.ifname))?;
    }
    Ok(())
}

fn unwire_veth(pins: &PinDir, maps: &mut ContainerMaps, veth: &OwnedVeth) -> Result<()> {
    maps.clear_iface(veth.ifindex)?;
    ifaces::delete_veth(&veth.ifname)?;
    remove_pin(&pins.link(Hook::FromContainer, &veth.ifname))
}

fn remove_pin(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("unpinning {}", path.display()), e)),
    }
}

fn ignore_missing(
    result: std::result::Result<(), aya::maps::MapError>,
) -> std::result::Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

/// Removes every veth netbpf made here (for `down`).
pub fn remove_veths() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for veth in ifaces::owned_veths()? {
        ifaces::delete_veth(&veth.ifname)?;
        removed.push(veth.container);
    }
    Ok(removed)
}
