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
    file::{ContainerDef, DefinitionsFile, NetworkDef},
    model::{Attachment, Container, Model, Network, mac_from_ip, mask},
};

/// What the kernel already holds, so a reload keeps ids and addresses stable.
#[derive(Clone, Debug, Default)]
pub struct Previous {
    pub network_ids: HashMap<String, u32>,
    pub addresses: HashMap<String, Ipv4Addr>,
}

/// Longest network or container name (map name fields hold 31 bytes and a NUL).
const MAX_NAME: usize = 31;
/// Longest interface name the kernel takes.
const MAX_IFNAME: usize = 15;

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, place: &str, field: Option<&str>, message: impl Into<String>) {
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
    if !check.problems.is_empty() {
        return Err(check.problems);
    }
    Ok(Model {
        uplink: file.host.uplink.clone(),
        pin_dir: file.host.pin_dir.clone(),
        networks,
        containers,
    })
}

fn place(kind: &str, index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("{kind} #{}", index + 1)
    } else {
        format!("{kind} {name:?}")
    }
}

fn check_name(check: &mut Checker, place: &str, name: &str) -> bool {
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

fn parse_addr(check: &mut Checker, place: &str, field: &str, text: &str) -> Option<Ipv4Addr> {
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
    if !Path::new(&path.0).exists() {
        check.problem(
            place,
            Some(path.1),
            format!("network namespace {} does not exist", path.0.display()),
        );
        return None;
    }
    Some(path.0)
}

struct Pending<'a> {
    index: usize,
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
                index,
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
    let mut ifaces: HashMap<(PathBuf, String), String> = HashMap::new();
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
                if let Some(other) =
                    ifaces.insert((p.netns.clone(), p.ifname.clone()), p.def.name.clone())
                {
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
                })
            }
            _ => None,
        };
        let _ = p.index;
        out.push(Container {
            name: p.def.name.clone(),
            netns: p.netns,
            attachment,
        });
    }
    out
}

/// Whether `addr` was allocated before to another container that is still defined
/// elsewhere: not handed out again in the same reload.
fn previous_of_other(previous: &Previous, name: &str, addr: Ipv4Addr) -> bool {
    previous
        .addresses
        .iter()
        .any(|(other, a)| other != name && *a == addr)
}
