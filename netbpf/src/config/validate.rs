//! From the file as written to the [`Model`]: every value parsed and checked against the
//! others, addresses allocated (keeping the ones allocated before), networks numbered.
//! Every problem is reported, each naming its entry and field.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use super::{
    Problem,
    duration::parse_duration,
    file::{ConntrackDef, ContainerDef, DefinitionsFile, Expose, NetworkDef},
    model::{
        Attachment, Container, Model, Network, Published, Timeouts, UplinkMode, mac_from_ip, mask,
    },
    ports::{Proto, parse_expose, parse_port_spec},
    services::{PreviousBackend, PreviousService, ServiceAddr},
};

/// What the kernel already holds, so a reload keeps ids and addresses stable.
#[derive(Clone, Debug, Default)]
pub struct Previous {
    pub network_ids: HashMap<String, u32>,
    pub addresses: HashMap<String, Ipv4Addr>,
    /// Each network's range of peer slots and the prefix length it was made for (by name).
    pub peer_bases: HashMap<String, (u32, u8)>,
    /// Host ports chosen before: (container, container port, protocol, host address).
    pub published: HashMap<(String, u16, Proto, Ipv4Addr), u16>,
    /// The host's addresses (`None`: not known, published addresses go unchecked).
    pub host_addresses: Option<Vec<Ipv4Addr>>,
    /// Where free host ports come from (the kernel's ip_local_port_range).
    pub port_range: Option<(u16, u16)>,
    /// The services the kernel holds, by VIP, port and protocol.
    pub services: HashMap<ServiceAddr, PreviousService>,
    /// Their backends, by service, address and port.
    pub backends: HashMap<(ServiceAddr, Ipv4Addr, u16), PreviousBackend>,
}

/// Linux's default ip_local_port_range.
const DEFAULT_PORT_RANGE: (u16, u16) = (32768, 60999);

/// Longest network or container name (map name fields hold 31 bytes and a NUL).
const MAX_NAME: usize = 31;
/// Longest interface name the kernel takes.
const MAX_IFNAME: usize = 15;

pub(super) struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    /// Problems found so far.
    pub(super) fn count(&self) -> usize {
        self.problems.len()
    }

    pub(super) fn problem(&mut self, place: &str, field: Option<&str>, message: impl Into<String>) {
        self.problems.push(Problem {
            place: place.to_owned(),
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }
}

pub fn validate(file: &DefinitionsFile, previous: &Previous) -> Result<Model, Vec<Problem>> {
    let mut check = Checker {
        problems: Vec::new(),
    };
    let networks = networks(&mut check, &file.network, previous);
    let containers = containers(&mut check, &file.container, &networks, previous);
    let services = super::services::services(&mut check, file, &networks, &containers, previous);
    if !check.problems.is_empty() {
        return Err(check.problems);
    }
    let timeouts = timeouts(&mut check, &file.host.conntrack);
    if !check.problems.is_empty() {
        return Err(check.problems);
    }
    if let Some(cgroup) = &file.host.cgroup
        && !cgroup.join("cgroup.procs").exists()
    {
        check.problem(
            "[host]",
            Some("cgroup"),
            format!("{} is not a cgroup (v2) directory", cgroup.display()),
        );
        return Err(check.problems);
    }
    let uplink_mode = match file.host.uplink_mode.as_deref() {
        None | Some("auto") => UplinkMode::Auto,
        Some("tc") => UplinkMode::Tc,
        Some("xdp") => UplinkMode::Xdp,
        Some(other) => {
            check.problem(
                "[host]",
                Some("uplink_mode"),
                format!("{other:?} is none of tc, xdp, auto"),
            );
            return Err(check.problems);
        }
    };
    Ok(Model {
        uplink_mode,
        cgroup: file.host.cgroup.clone(),
        timeouts,
        uplink: file.host.uplink.clone(),
        pin_dir: file.host.pin_dir.clone(),
        networks,
        containers,
        services,
    })
}

fn timeouts(check: &mut Checker, def: &ConntrackDef) -> Timeouts {
    let mut t = Timeouts::default();
    for (field, text, slot) in [
        ("tcp_syn", &def.tcp_syn, &mut t.tcp_syn),
        (
            "tcp_established",
            &def.tcp_established,
            &mut t.tcp_established,
        ),
        ("tcp_closing", &def.tcp_closing, &mut t.tcp_closing),
        ("udp", &def.udp, &mut t.udp),
        ("icmp", &def.icmp, &mut t.icmp),
    ] {
        if let Some(text) = text {
            match parse_duration(text) {
                Ok(d) if !d.is_zero() => *slot = d,
                Ok(_) => check.problem("[host.conntrack]", Some(field), "must be longer than 0"),
                Err(why) => check.problem("[host.conntrack]", Some(field), why),
            }
        }
    }
    t
}

pub(super) fn place(kind: &str, index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("{kind} #{}", index + 1)
    } else {
        format!("{kind} {name:?}")
    }
}

pub(super) fn check_name(check: &mut Checker, place: &str, name: &str) -> bool {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name.len() > MAX_NAME || !ok_chars {
        check.problem(
            place,
            Some("name"),
            format!("{name:?} must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"),
        );
        return false;
    }
    true
}

pub(super) fn parse_addr(
    check: &mut Checker,
    place: &str,
    field: &str,
    text: &str,
) -> Option<Ipv4Addr> {
    match text.parse::<Ipv4Addr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            check.problem(
                place,
                Some(field),
                format!("{text:?} is not an IPv4 address"),
            );
            None
        }
    }
}

fn parse_subnet(check: &mut Checker, place: &str, text: &str) -> Option<(Ipv4Addr, u8)> {
    let bad = |check: &mut Checker, why: &str| {
        check.problem(place, Some("subnet"), format!("{text:?} {why}"));
        None
    };
    let Some((addr, len)) = text.split_once('/') else {
        return bad(
            check,
            "is not a CIDR (expected ADDRESS/PREFIX, e.g. 198.18.10.0/24)",
        );
    };
    let Ok(addr) = addr.parse::<Ipv4Addr>() else {
        return bad(check, "does not start with an IPv4 address");
    };
    let Ok(len) = len.parse::<u8>() else {
        return bad(check, "has no prefix length after '/'");
    };
    if !(1..=30).contains(&len) {
        return bad(
            check,
            "needs a prefix length from 1 to 30 (room for a gateway and a container)",
        );
    }
    let network = Ipv4Addr::from(u32::from(addr) & mask(len));
    // Loopback, "this network", multicast and the reserved class E never route as a LAN.
    for (reserved, reserved_len, what) in [
        ([0, 0, 0, 0], 8, "\"this network\""),
        ([127, 0, 0, 0], 8, "loopback"),
        ([224, 0, 0, 0], 3, "multicast and reserved"),
    ] {
        let shorter = len.min(reserved_len);
        if u32::from(addr) & mask(shorter) == u32::from(Ipv4Addr::from(reserved)) & mask(shorter) {
            return bad(
                check,
                &format!(
                    "overlaps {what} addresses ({}/{reserved_len})",
                    Ipv4Addr::from(reserved)
                ),
            );
        }
    }
    if network != addr {
        return bad(
            check,
            &format!("has host bits set (did you mean {network}/{len}?)"),
        );
    }
    Some((addr, len))
}

fn networks(check: &mut Checker, defs: &[NetworkDef], previous: &Previous) -> Vec<Network> {
    let mut out: Vec<Network> = Vec::new();
    let mut names = HashSet::new();
    for (i, def) in defs.iter().enumerate() {
        let place = place("network", i, &def.name);
        let mut ok = check_name(check, &place, &def.name);
        if def.name == "none" {
            check.problem(
                &place,
                Some("name"),
                "\"none\" is reserved (it means: no network)",
            );
            ok = false;
        }
        if !def.name.is_empty() && !names.insert(def.name.as_str()) {
            check.problem(&place, Some("name"), "defined twice");
            ok = false;
        }
        let Some((subnet, prefix_len)) = parse_subnet(check, &place, &def.subnet) else {
            continue;
        };
        let mut net = Network {
            id: 0,
            name: def.name.clone(),
            subnet,
            prefix_len,
            gateway: Ipv4Addr::from(u32::from(subnet) + 1),
            icc: def.icc.unwrap_or(true),
            internal: def.internal.unwrap_or(false),
            masquerade: def.masquerade.unwrap_or(true),
        };
        if let Some(text) = &def.gateway {
            let Some(gateway) = parse_addr(check, &place, "gateway", text) else {
                continue;
            };
            if !net.contains(gateway) || gateway == subnet || gateway == net.broadcast() {
                check.problem(
                    &place,
                    Some("gateway"),
                    format!("{gateway} is not a host address of {}", net.cidr()),
                );
                ok = false;
            }
            net.gateway = gateway;
        }
        for other in &out {
            let shorter = prefix_len.min(other.prefix_len);
            if u32::from(subnet) & mask(shorter) == u32::from(other.subnet) & mask(shorter) {
                check.problem(
                    &place,
                    Some("subnet"),
                    format!(
                        "{} overlaps network {:?} ({})",
                        net.cidr(),
                        other.name,
                        other.cidr()
                    ),
                );
                ok = false;
            }
        }
        if ok {
            out.push(net);
        }
    }
    // Ids: the one a network had before, else the lowest free (0 is never used).
    let mut used: BTreeSet<u32> = out
        .iter()
        .filter_map(|n| previous.network_ids.get(&n.name).copied())
        .collect();
    for net in &mut out {
        net.id = match previous.network_ids.get(&net.name) {
            Some(id) => *id,
            None => {
                let id = (1..).find(|id| !used.contains(id)).unwrap_or(u32::MAX);
                used.insert(id);
                id
            }
        };
    }
    out
}

fn parse_mac(check: &mut Checker, place: &str, text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split(':').collect();
    let bytes: Option<Vec<u8>> = parts
        .iter()
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    match bytes {
        Some(b) if parts.len() == 6 && parts.iter().all(|p| p.len() == 2) => {
            let mac = [b[0], b[1], b[2], b[3], b[4], b[5]];
            if mac[0] & 1 != 0 || mac == [0; 6] {
                check.problem(
                    place,
                    Some("mac"),
                    format!("{text} is not a unicast address"),
                );
                return None;
            }
            Some(mac)
        }
        _ => {
            check.problem(
                place,
                Some("mac"),
                format!("{text:?} is not a MAC (expected xx:xx:xx:xx:xx:xx)"),
            );
            None
        }
    }
}

/// The namespace a container definition names, checked to exist.
fn netns_of(check: &mut Checker, place: &str, def: &ContainerDef) -> Option<PathBuf> {
    if def.handover
        && let Some(path) = &def.netns
    {
        // Whoever takes the container end makes the namespace (maybe later).
        return Some(path.clone());
    }
    let path = match (&def.netns, def.pid) {
        (Some(_), Some(_)) => {
            check.problem(place, Some("netns"), "give either netns or pid, not both");
            return None;
        }
        (None, None) => {
            check.problem(
                place,
                Some("netns"),
                "missing: give netns = \"/run/netns/NAME\" or pid = N",
            );
            return None;
        }
        (Some(path), None) => (path.clone(), "netns"),
        (None, Some(pid)) => (PathBuf::from(format!("/proc/{pid}/ns/net")), "pid"),
    };
    match std::fs::metadata(&path.0) {
        Ok(_) if !is_nsfs(&path.0) => {
            check.problem(
                place,
                Some(path.1),
                format!("{} is not a namespace file (nsfs)", path.0.display()),
            );
            None
        }
        Ok(_) => Some(path.0),
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "does not exist".to_owned()
            } else {
                format!("cannot be opened ({e})")
            };
            check.problem(
                place,
                Some(path.1),
                format!("network namespace {} {why}", path.0.display()),
            );
            None
        }
    }
}

/// Whether `path` is a namespace file (what /run/netns/NAME and /proc/PID/ns/net are).
fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes only into the zeroed struct; the path is NUL-terminated.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut buf) } == 0) && buf.f_type == NSFS_MAGIC
}

/// The identity of a namespace: two paths to it (a /run/netns name, a /proc PID) compare
/// equal.
fn netns_identity(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).map_or((0, 0), |m| (m.dev(), m.ino()))
}

struct Pending<'a> {
    def: &'a ContainerDef,
    place: String,
    netns: PathBuf,
    network: Option<&'a Network>,
    ip: Option<Ipv4Addr>,
    mac: Option<[u8; 6]>,
    ifname: String,
}

fn containers(
    check: &mut Checker,
    defs: &[ContainerDef],
    networks: &[Network],
    previous: &Previous,
) -> Vec<Container> {
    let by_name: HashMap<&str, &Network> = networks.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut names = HashSet::new();
    let mut pending = Vec::new();
    for (index, def) in defs.iter().enumerate() {
        let place = place("container", index, &def.name);
        let mut ok = check_name(check, &place, &def.name);
        if !def.name.is_empty() && !names.insert(def.name.as_str()) {
            check.problem(&place, Some("name"), "defined twice");
            ok = false;
        }
        let netns = netns_of(check, &place, def);
        let network = match def.network.as_str() {
            "none" => None,
            name => match by_name.get(name) {
                Some(net) => Some(*net),
                None => {
                    check.problem(
                        &place,
                        Some("network"),
                        format!("no network named {name:?}"),
                    );
                    ok = false;
                    None
                }
            },
        };
        let ifname = def.ifname.clone().unwrap_or_else(|| "eth0".to_owned());
        let ifname_ok = !ifname.is_empty()
            && ifname.len() <= MAX_IFNAME
            && ifname != "lo"
            && !ifname.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
        if !ifname_ok {
            check.problem(&place, Some("ifname"), format!("{ifname:?} is not a usable interface name (1 to {MAX_IFNAME} characters, no '/', ':' or spaces, not lo)"));
            ok = false;
        }
        let mut ip = None;
        if let Some(text) = &def.ip {
            match (parse_addr(check, &place, "ip", text), network) {
                (Some(addr), Some(net)) => {
                    if !net.contains(addr) || addr == net.subnet || addr == net.broadcast() {
                        check.problem(
                            &place,
                            Some("ip"),
                            format!(
                                "{addr} is not a host address of network {:?} ({})",
                                net.name,
                                net.cidr()
                            ),
                        );
                        ok = false;
                    } else if addr == net.gateway {
                        check.problem(
                            &place,
                            Some("ip"),
                            format!("{addr} is the gateway of network {:?}", net.name),
                        );
                        ok = false;
                    } else {
                        ip = Some(addr);
                    }
                }
                (Some(_), None) if def.network == "none" => {
                    check.problem(
                        &place,
                        Some("ip"),
                        "a container on network \"none\" has no address",
                    );
                    ok = false;
                }
                _ => ok = false,
            }
        }
        let mac = match &def.mac {
            Some(text) => match parse_mac(check, &place, text) {
                Some(mac) => Some(mac),
                None => {
                    ok = false;
                    None
                }
            },
            None => None,
        };
        if let (true, Some(netns)) = (ok, netns) {
            pending.push(Pending {
                def,
                place,
                netns,
                network,
                ip,
                mac,
                ifname,
            });
        }
    }
    if !check.problems.is_empty() {
        return Vec::new();
    }

    // Explicit addresses first, then the ones allocated before, then the lowest free.
    let mut taken: HashMap<Ipv4Addr, String> = HashMap::new();
    for p in &pending {
        if let Some(ip) = p.ip
            && let Some(other) = taken.insert(ip, p.def.name.clone())
        {
            check.problem(
                &p.place,
                Some("ip"),
                format!("{ip} is also the address of container {other:?}"),
            );
        }
    }
    for p in pending.iter_mut().filter(|p| p.ip.is_none()) {
        let Some(net) = p.network else { continue };
        if let Some(prev) = previous.addresses.get(&p.def.name)
            && net.contains(*prev)
            && *prev != net.gateway
            && *prev != net.subnet
            && *prev != net.broadcast()
            && !taken.contains_key(prev)
        {
            p.ip = Some(*prev);
            taken.insert(*prev, p.def.name.clone());
        }
    }
    for p in pending.iter_mut().filter(|p| p.ip.is_none()) {
        let Some(net) = p.network else { continue };
        let first = u32::from(net.subnet) + 1;
        let last = u32::from(net.broadcast()) - 1;
        let free = (first..=last).map(Ipv4Addr::from).find(|a| {
            *a != net.gateway
                && !taken.contains_key(a)
                && !previous_of_other(previous, &p.def.name, *a)
        });
        match free {
            Some(addr) => {
                p.ip = Some(addr);
                taken.insert(addr, p.def.name.clone());
            }
            None => check.problem(
                &p.place,
                Some("ip"),
                format!(
                    "network {:?} ({}) has no free address left",
                    net.name,
                    net.cidr()
                ),
            ),
        }
    }

    let mut macs: HashMap<[u8; 6], String> = HashMap::new();
    let mut ifaces: HashMap<((u64, u64), String), String> = HashMap::new();
    let mut out = Vec::new();
    for p in pending {
        let attachment = match (p.network, p.ip) {
            (Some(net), Some(ip)) => {
                let mac = p.mac.unwrap_or_else(|| mac_from_ip(ip));
                if let Some(other) = macs.insert(mac, p.def.name.clone()) {
                    check.problem(
                        &p.place,
                        Some("mac"),
                        format!(
                            "{} is also the MAC of container {other:?}",
                            super::model::format_mac(&mac)
                        ),
                    );
                }
                if let Some(other) = ifaces.insert(
                    (netns_identity(&p.netns), p.ifname.clone()),
                    p.def.name.clone(),
                ) {
                    check.problem(
                        &p.place,
                        Some("ifname"),
                        format!(
                            "container {other:?} also puts {} into {}",
                            p.ifname,
                            p.netns.display()
                        ),
                    );
                }
                Some(Attachment {
                    network: net.name.clone(),
                    network_id: net.id,
                    ip,
                    mac,
                    ifname: p.ifname,
                    ports: Vec::new(),
                })
            }
            _ => None,
        };
        out.push(Container {
            name: p.def.name.clone(),
            netns: p.netns,
            attachment,
            handover: p.def.handover,
        });
    }
    publish(check, defs, networks, &mut out, previous);
    out
}

/// One port to publish, before its host port is known.
struct Wanted {
    container: usize,
    entry: String,
    host_ip: Ipv4Addr,
    host_port: Option<u16>,
    container_port: u16,
    proto: Proto,
}

/// Resolves `ports`, `publish_all` and `expose`: parsed, checked against the host's
/// addresses and every other publication, free host ports chosen (the ones chosen before
/// kept).
fn publish(
    check: &mut Checker,
    defs: &[ContainerDef],
    networks: &[Network],
    containers: &mut [Container],
    previous: &Previous,
) {
    let mut wanted = Vec::new();
    let defs: HashMap<&str, &ContainerDef> = defs.iter().map(|d| (d.name.as_str(), d)).collect();
    for (i, c) in containers.iter().enumerate() {
        let Some(def) = defs.get(c.name.as_str()) else {
            continue;
        };
        let place = format!("container {:?}", c.name);
        let publishes = !def.ports.is_empty() || def.publish_all;
        let network = c
            .attachment
            .as_ref()
            .and_then(|a| networks.iter().find(|n| n.id == a.network_id));
        match network {
            None if publishes => {
                check.problem(
                    &place,
                    Some("ports"),
                    "a container on network \"none\" cannot publish ports",
                );
                continue;
            }
            Some(net) if publishes && net.internal => {
                check.problem(
                    &place,
                    Some("ports"),
                    format!(
                        "network {:?} is internal: its containers cannot publish ports",
                        net.name
                    ),
                );
                continue;
            }
            _ => {}
        }
        for entry in &def.ports {
            match parse_port_spec(entry) {
                Err(why) => check.problem(&place, Some("ports"), format!("entry {entry:?}: {why}")),
                Ok(spec) => {
                    let host_ip = spec.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                    if let Some(addresses) = &previous.host_addresses
                        && !host_ip.is_unspecified()
                        && !addresses.contains(&host_ip)
                    {
                        check.problem(
                            &place,
                            Some("ports"),
                            format!("entry {entry:?}: {host_ip} is not an address of the host"),
                        );
                        continue;
                    }
                    for (host_port, container_port) in spec.pairs() {
                        wanted.push(Wanted {
                            container: i,
                            entry: entry.clone(),
                            host_ip,
                            host_port,
                            container_port,
                            proto: spec.proto,
                        });
                    }
                }
            }
        }
        if def.publish_all {
            for expose in &def.expose {
                let text = match expose {
                    Expose::Port(p) => p.to_string(),
                    Expose::Text(t) => t.clone(),
                };
                match parse_expose(&text) {
                    Err(why) => {
                        check.problem(&place, Some("expose"), format!("entry {text:?}: {why}"))
                    }
                    Ok(((first, last), proto)) => {
                        for container_port in first..=last {
                            let entry = format!("-P {container_port}/{proto}");
                            wanted.push(Wanted {
                                container: i,
                                entry,
                                host_ip: Ipv4Addr::UNSPECIFIED,
                                host_port: None,
                                container_port,
                                proto,
                            });
                        }
                    }
                }
            }
        }
    }

    // Explicit host ports first: a conflict between two of them is an error.
    let mut taken = TakenPorts::default();
    for w in wanted.iter().filter(|w| w.host_port.is_some()) {
        let port = w.host_port.unwrap_or_default();
        if let Some((ip, other, other_entry)) = taken.holder(w.host_ip, port, w.proto) {
            check.problem(
                &format!("container {:?}", containers[w.container].name),
                Some("ports"),
                format!(
                    "entry {:?}: host port {port}/{} on {} is already published on {ip} by container {:?} ({other_entry:?})",
                    w.entry, w.proto, w.host_ip, containers[*other].name
                ),
            );
            continue;
        }
        taken.take(w, port);
    }
    // Then free ports: the one chosen before if still free, else the lowest free.
    let (low, high) = previous.port_range.unwrap_or(DEFAULT_PORT_RANGE);
    // Ports chosen before go back to their owners first, so that a new publication can
    // never take one of them.
    let mut ports: Vec<Option<u16>> = wanted.iter().map(|w| w.host_port).collect();
    for (w, port) in wanted
        .iter()
        .zip(ports.iter_mut())
        .filter(|(w, _)| w.host_port.is_none())
    {
        let key = (
            containers[w.container].name.clone(),
            w.container_port,
            w.proto,
            w.host_ip,
        );
        if let Some(before) = previous.published.get(&key).copied()
            && (low..=high).contains(&before)
            && taken.holder(w.host_ip, before, w.proto).is_none()
        {
            taken.take(w, before);
            *port = Some(before);
        }
    }
    let mut chosen: Vec<(usize, Published)> = Vec::new();
    for (w, port) in wanted.iter().zip(ports) {
        let port = port.or_else(|| {
            let free = taken.lowest_free(w.host_ip, w.proto, low, high);
            match free {
                Some(p) => taken.take(w, p),
                None => check.problem(
                    &format!("container {:?}", containers[w.container].name),
                    Some("ports"),
                    format!(
                        "entry {:?}: no free host port left in {low}-{high}",
                        w.entry
                    ),
                ),
            }
            free
        });
        if let Some(host_port) = port {
            chosen.push((
                w.container,
                Published {
                    host_ip: w.host_ip,
                    host_port,
                    container_port: w.container_port,
                    proto: w.proto,
                },
            ));
        }
    }
    for (i, published) in chosen {
        if let Some(a) = containers[i].attachment.as_mut() {
            a.ports.push(published);
        }
    }
}

/// A host port's holder: the address it is published on, the container's index and its
/// `ports` entry.
type Holder = (Ipv4Addr, usize, String);

/// Host ports given out so far, by port and protocol.
#[derive(Default)]
struct TakenPorts {
    by_port: HashMap<(u16, Proto), Vec<Holder>>,
    /// Per address and protocol, below which no port is free: ports are only ever taken
    /// here, so each search goes on where the last one stopped.
    searched: HashMap<(Ipv4Addr, Proto), u16>,
}

impl TakenPorts {
    /// Who holds `port`/`proto` on an address overlapping `ip` (the same, or either one
    /// 0.0.0.0).
    fn holder(&self, ip: Ipv4Addr, port: u16, proto: Proto) -> Option<&Holder> {
        self.by_port
            .get(&(port, proto))?
            .iter()
            .find(|(held, ..)| *held == ip || held.is_unspecified() || ip.is_unspecified())
    }

    /// The lowest port of `low..=high` free on `ip` for `proto`.
    fn lowest_free(&mut self, ip: Ipv4Addr, proto: Proto, low: u16, high: u16) -> Option<u16> {
        let from = self
            .searched
            .get(&(ip, proto))
            .map_or(low, |s| (*s).max(low));
        let free = (from..=high).find(|p| self.holder(ip, *p, proto).is_none())?;
        self.searched.insert((ip, proto), free);
        Some(free)
    }

    fn take(&mut self, w: &Wanted, port: u16) {
        self.by_port.entry((port, w.proto)).or_default().push((
            w.host_ip,
            w.container,
            w.entry.clone(),
        ));
    }
}

/// Whether `addr` was allocated before to another container that is still defined
/// elsewhere: not handed out again in the same reload.
fn previous_of_other(previous: &Previous, name: &str, addr: Ipv4Addr) -> bool {
    previous
        .addresses
        .iter()
        .any(|(other, a)| other != name && *a == addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::parse;

    /// A file with two networks and containers in this process's own namespace (which
    /// exists, so the netns check passes without root).
    fn file(extra: &str) -> String {
        format!(
            r#"
[[network]]
name = "front"
subnet = "198.18.10.0/24"

[[network]]
name = "back"
subnet = "198.18.20.0/24"
gateway = "198.18.20.254"
icc = false

[[container]]
name = "web1"
netns = "/proc/self/ns/net"
network = "front"
ifname = "eth1"
{extra}"#
        )
    }

    /// `pid = 1` in a test file means this process (PID 1 may be out of reach here).
    fn own_pid(text: &str) -> String {
        text.replace("pid = 1", &format!("pid = {}", std::process::id()))
    }

    fn problems(text: &str) -> Vec<String> {
        let text = own_pid(text);
        let parsed = parse(&text).map_err(|p| vec![p.to_string()]);
        match parsed {
            Err(p) => p,
            Ok(f) => validate(&f, &Previous::default())
                .err()
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    fn model(text: &str, previous: &Previous) -> Model {
        validate(&parse(&own_pid(text)).expect("parses"), previous).expect("valid")
    }

    #[test]
    fn resolves_defaults_addresses_and_macs() {
        let m = model(
            &file(
                "\n[[container]]\nname = \"web2\"\npid = 1\nnetwork = \"front\"\nip = \"198.18.10.2\"\n",
            ),
            &Previous::default(),
        );
        assert_eq!(m.networks[0].gateway, Ipv4Addr::new(198, 18, 10, 1));
        assert_eq!(m.networks[1].gateway, Ipv4Addr::new(198, 18, 20, 254));
        assert!(!m.networks[1].icc && m.networks[0].icc && m.networks[0].masquerade);
        assert_eq!((m.networks[0].id, m.networks[1].id), (1, 2));
        let web1 = m.containers[0].attachment.as_ref().expect("wired");
        // .2 is taken explicitly by web2, so web1 gets .3.
        assert_eq!(web1.ip, Ipv4Addr::new(198, 18, 10, 3));
        assert_eq!(web1.mac, [0x02, 0x42, 198, 18, 10, 3]);
        assert_eq!(web1.ifname, "eth1");
        assert_eq!(
            m.containers[1].netns,
            PathBuf::from(format!("/proc/{}/ns/net", std::process::id()))
        );
    }

    #[test]
    fn allocations_and_ids_stay_stable_across_reloads() {
        let previous = Previous {
            network_ids: [("back".to_owned(), 7)].into(),
            addresses: [("web1".to_owned(), Ipv4Addr::new(198, 18, 10, 40))].into(),
            ..Default::default()
        };
        let m = model(&file(""), &previous);
        assert_eq!((m.networks[0].id, m.networks[1].id), (1, 7));
        assert_eq!(
            m.containers[0].attachment.as_ref().expect("wired").ip,
            Ipv4Addr::new(198, 18, 10, 40)
        );
    }

    #[test]
    fn network_none_is_loopback_only() {
        let m = model(
            &file("\n[[container]]\nname = \"solo\"\npid = 1\nnetwork = \"none\"\n"),
            &Previous::default(),
        );
        assert_eq!(m.containers[1].attachment, None);
    }

    #[test]
    fn every_kind_of_bad_input_is_named() {
        let cases = [
            (file("colour = \"red\"\n"), "unknown field `colour`"),
            (
                file("").replace("198.18.20.0/24", "198.18.20.0"),
                "network \"back\": subnet: \"198.18.20.0\" is not a CIDR",
            ),
            (
                file("").replace("198.18.20.0/24", "198.18.20.0/31"),
                "prefix length from 1 to 30",
            ),
            (
                file("").replace("198.18.20.0/24", "127.1.0.0/16"),
                "overlaps loopback addresses (127.0.0.0/8)",
            ),
            (
                file("").replace("198.18.20.0/24", "239.1.0.0/16"),
                "overlaps multicast and reserved addresses",
            ),
            (
                file("").replace("/proc/self/ns/net", "/etc/hostname"),
                "/etc/hostname is not a namespace file",
            ),
            (
                file("").replace("198.18.20.0/24", "198.18.10.0/23"),
                "network \"back\": subnet: 198.18.10.0/23 overlaps network \"front\"",
            ),
            (
                file("").replace("198.18.20.254", "198.18.21.1"),
                "gateway: 198.18.21.1 is not a host address of 198.18.20.0/24",
            ),
            (
                file("ip = \"198.18.20.5\""),
                "container \"web1\": ip: 198.18.20.5 is not a host address of network \"front\"",
            ),
            (
                file("ip = \"198.18.10.1\""),
                "ip: 198.18.10.1 is the gateway of network \"front\"",
            ),
            (file("ip = \"198.18.10.255\""), "is not a host address"),
            (
                file("mac = \"01:00:5e:00:00:01\""),
                "mac: 01:00:5e:00:00:01 is not a unicast address",
            ),
            (file("mac = \"02:42:zz:00:00:01\""), "is not a MAC"),
            (
                file("").replace("name = \"web1\"", "name = \"web 1\""),
                "must be 1 to 31 letters",
            ),
            (
                file("").replace("name = \"back\"", "name = \"front\""),
                "network \"front\": name: defined twice",
            ),
            (
                file("").replace(
                    "network = \"front\"\nifname",
                    "network = \"middle\"\nifname",
                ),
                "network: no network named \"middle\"",
            ),
            (
                file("").replace("/proc/self/ns/net", "/run/netns/netbpf-no-such-namespace"),
                "netns: network namespace /run/netns/netbpf-no-such-namespace does not exist",
            ),
            (file("pid = 1"), "give either netns or pid, not both"),
            (
                file("").replace("ifname = \"eth1\"", "ifname = \"a-very-long-ifname\""),
                "ifname: \"a-very-long-ifname\" is not a usable interface name",
            ),
            (
                file("\n[[container]]\nname = \"web1\"\npid = 1\nnetwork = \"front\"\n"),
                "container \"web1\": name: defined twice",
            ),
            (
                file(
                    "ip = \"198.18.10.9\"\n\n[[container]]\nname = \"web2\"\npid = 1\nnetwork = \"front\"\nip = \"198.18.10.9\"\n",
                ),
                "container \"web2\": ip: 198.18.10.9 is also the address of container \"web1\"",
            ),
            (
                file(
                    "mac = \"02:00:00:00:00:01\"\n\n[[container]]\nname = \"web2\"\npid = 1\nnetwork = \"front\"\nmac = \"02:00:00:00:00:01\"\n",
                ),
                "container \"web2\": mac: 02:00:00:00:00:01 is also the MAC of container \"web1\"",
            ),
            (
                file(
                    // The same namespace by another path.
                    "\n[[container]]\nname = \"web2\"\npid = 1\nnetwork = \"front\"\nifname = \"eth1\"\n",
                ),
                "ifname: container \"web1\" also puts eth1 into",
            ),
        ];
        for (text, expected) in cases {
            let found = problems(&text);
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{expected:?} not in {found:?}"
            );
        }
    }

    fn with_ports(ports: &str) -> String {
        file(&format!("ports = [{ports}]\n"))
    }

    #[test]
    fn ports_resolve_with_free_host_ports_kept_across_reloads() {
        let host = Previous {
            host_addresses: Some(vec![Ipv4Addr::LOCALHOST, Ipv4Addr::new(198, 18, 0, 1)]),
            port_range: Some((40000, 40010)),
            ..Default::default()
        };
        let m = model(
            &with_ports("\"8080:80\", \"127.0.0.1::53/udp\", \"90\""),
            &host,
        );
        let ports = &m.containers[0].attachment.as_ref().expect("wired").ports;
        let summary: Vec<String> = ports
            .iter()
            .map(|p| {
                format!(
                    "{}:{}->{}/{}",
                    p.host_ip, p.host_port, p.container_port, p.proto
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "0.0.0.0:8080->80/tcp",
                "127.0.0.1:40000->53/udp",
                "0.0.0.0:40000->90/tcp"
            ]
        );

        // web1's free port stays 40000 although a container listed before it now wants one.
        let previous = Previous {
            published: [(
                ("web1".to_owned(), 90, Proto::Tcp, Ipv4Addr::UNSPECIFIED),
                40000,
            )]
            .into(),
            ..host.clone()
        };
        let text = with_ports("\"90\"").replace(
            "[[container]]\nname = \"web1\"",
            "[[container]]\nname = \"web0\"\npid = 1\nnetwork = \"front\"\nports = [\"91\"]\n\n[[container]]\nname = \"web1\"",
        );
        let m = model(&text, &previous);
        let port_of = |name: &str| {
            let c = m
                .containers
                .iter()
                .find(|c| c.name == name)
                .expect("container");
            c.attachment.as_ref().expect("wired").ports[0].host_port
        };
        assert_eq!((port_of("web0"), port_of("web1")), (40001, 40000));
    }

    #[test]
    fn publish_all_exposes_every_port() {
        let m = model(
            &file("publish_all = true\nexpose = [80, \"53-54/udp\"]\n"),
            &Previous::default(),
        );
        let ports = &m.containers[0].attachment.as_ref().expect("wired").ports;
        let summary: Vec<String> = ports
            .iter()
            .map(|p| format!("{}/{}:{}", p.container_port, p.proto, p.host_port))
            .collect();
        assert_eq!(summary, ["80/tcp:32768", "53/udp:32768", "54/udp:32769"]);
    }

    #[test]
    fn bad_ports_are_named() {
        let host = Previous {
            host_addresses: Some(vec![Ipv4Addr::LOCALHOST]),
            ..Default::default()
        };
        let second = "\n[[container]]\nname = \"web2\"\npid = 1\nnetwork = \"front\"\nports = [\"0.0.0.0:8080:81\"]\n";
        let cases = [
            (
                with_ports("\"8080:80/sctp\""),
                "container \"web1\": ports: entry \"8080:80/sctp\": protocol \"sctp\" is neither tcp nor udp",
            ),
            (with_ports("\"9000-9002:80\""), "range length mismatch"),
            (
                with_ports("\"198.18.0.9:80:80\""),
                "198.18.0.9 is not an address of the host",
            ),
            (
                with_ports("\"127.0.0.1:8080:80\"") + second,
                "container \"web2\": ports: entry \"0.0.0.0:8080:81\": host port 8080/tcp on 0.0.0.0 is already published on 127.0.0.1 by container \"web1\"",
            ),
            (
                file("")
                    .replace("icc = false", "icc = false\ninternal = true")
                    .replace(
                        "network = \"front\"",
                        "network = \"back\"\nports = [\"80\"]",
                    ),
                "network \"back\" is internal: its containers cannot publish ports",
            ),
            (
                file("").replace(
                    "network = \"front\"",
                    "network = \"none\"\nports = [\"80\"]",
                ),
                "on network \"none\" cannot publish ports",
            ),
            (
                file("publish_all = true\nexpose = [\"x\"]\n"),
                "expose: entry \"x\"",
            ),
        ];
        for (text, expected) in cases {
            let text = own_pid(&text);
            let found: Vec<String> = match parse(&text) {
                Err(p) => vec![p.to_string()],
                Ok(f) => validate(&f, &host)
                    .err()
                    .unwrap_or_default()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            };
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{expected:?} not in {found:?}"
            );
        }
        // Same port, different protocols or different host addresses: no conflict.
        let m = model(&with_ports("\"127.0.0.1:8080:80\", \"8080:80/udp\""), &host);
        assert_eq!(
            m.containers[0]
                .attachment
                .as_ref()
                .expect("wired")
                .ports
                .len(),
            2
        );
    }

    #[test]
    fn a_full_subnet_is_an_error() {
        let text = "[[network]]\nname = \"tiny\"\nsubnet = \"198.18.30.0/30\"\n\
                    [[container]]\nname = \"a\"\npid = 1\nnetwork = \"tiny\"\n\
                    [[container]]\nname = \"b\"\npid = 1\nnetwork = \"tiny\"\nifname = \"eth1\"\n";
        let found = problems(text);
        assert!(
            found.iter().any(|p| p.contains("has no free address left")),
            "{found:?}"
        );
    }
}
