//! `[[service]]` entries, from the file as written to [`Service`]s: every field parsed and
//! checked against the networks, the containers, the host and the other services; ids
//! given (the ones the kernel holds kept). Every problem is reported, each naming its
//! service, field and, for a backend, its entry.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    time::Duration,
};

use netbpf_common::{
    maps::{MAX_BACKENDS, MAX_SERVICES},
    service::{MAX_SERVICE_BACKENDS, Scheduler},
};

use super::{
    duration::parse_duration,
    file::{BackendDef, DefinitionsFile, HealthDef, ServiceDef},
    model::{Container, HealthCheck, HealthKind, Network, Service, ServiceBackend},
    ports::Proto,
    validate::{Checker, Previous, check_name, parse_addr, place},
};

/// A service's identity in the kernel (the `NB_SERVICES` key): VIP, port, protocol.
pub type ServiceAddr = (Ipv4Addr, u16, Proto);

/// What the kernel holds of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousService {
    pub id: u32,
    pub scheduler: u8,
    /// The size of its Maglev table (0 for other schedulers): kept while it fits.
    pub maglev_size: u32,
    /// The members of its Maglev table (address, port, weight), see
    /// [`crate::plan::services`].
    pub roster: Vec<(Ipv4Addr, u16, u16)>,
}

/// What the kernel holds of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreviousBackend {
    pub id: u32,
    /// The weight in effect (0 while drained or taken out by a health check).
    pub weight: u16,
}

/// ipvsadm's default scheduler.
pub const DEFAULT_SCHEDULER: Scheduler = Scheduler::Wlc;
/// Health-check defaults (HAProxy's rise and fall; a probe every 2 seconds).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_EXPECT: u16 = 200;
/// Most consecutive probes `rise` or `fall` may ask for.
const MAX_RISE_FALL: i64 = 1000;

/// Validates every `[[service]]` of `file` and gives them ids.
pub(super) fn services(
    check: &mut Checker,
    file: &DefinitionsFile,
    networks: &[Network],
    containers: &[Container],
    previous: &Previous,
) -> Vec<Service> {
    let defined: HashSet<&str> = file.container.iter().map(|c| c.name.as_str()).collect();
    let ctx = Context {
        networks,
        containers,
        defined: &defined,
        previous,
    };
    let mut names = HashSet::new();
    let mut addrs: HashMap<ServiceAddr, String> = HashMap::new();
    let mut out = Vec::new();
    for (index, def) in file.service.iter().enumerate() {
        let place = place("service", index, &def.name);
        let mut ok = check_name(check, &place, &def.name);
        if !def.name.is_empty() && !names.insert(def.name.as_str()) {
            check.problem(&place, Some("name"), "defined twice");
            ok = false;
        }
        let Some(service) = service(check, &place, def, &ctx) else {
            continue;
        };
        let key = (service.vip, service.port, service.proto);
        if let Some(other) = addrs.get(&key) {
            check.problem(
                &place,
                Some("vip"),
                format!("{} is also service {other:?}", service.label()),
            );
            continue;
        }
        addrs.insert(key, def.name.clone());
        if ok {
            out.push(service);
        }
    }
    if out.len() >= MAX_SERVICES as usize {
        check.problem(
            "[[service]]",
            None,
            format!("{} services: at most {} fit", out.len(), MAX_SERVICES - 1),
        );
        return Vec::new();
    }
    let backends: usize = out.iter().map(|s| s.backends.len()).sum();
    if backends >= MAX_BACKENDS as usize {
        check.problem(
            "[[service]]",
            Some("backends"),
            format!(
                "{backends} backends over all services: at most {} fit",
                MAX_BACKENDS - 1
            ),
        );
        return Vec::new();
    }
    assign_ids(&mut out, previous);
    out
}

struct Context<'a> {
    networks: &'a [Network],
    containers: &'a [Container],
    /// Every container name the file defines (resolved or not).
    defined: &'a HashSet<&'a str>,
    previous: &'a Previous,
}

/// One service, checked; `None` if anything about it is wrong (reported).
fn service(check: &mut Checker, place: &str, def: &ServiceDef, ctx: &Context) -> Option<Service> {
    let before = check.count();
    let vip =
        parse_addr(check, place, "vip", &def.vip).filter(|vip| check_vip(check, place, *vip, ctx));
    let port = port(check, place, "port", def.port);
    let proto = match def.protocol.as_deref() {
        None | Some("tcp") => Some(Proto::Tcp),
        Some("udp") => Some(Proto::Udp),
        Some(other) => {
            check.problem(
                place,
                Some("protocol"),
                format!("{other:?} is neither tcp nor udp"),
            );
            None
        }
    };
    let scheduler = match def.scheduler.as_deref() {
        None => Some(DEFAULT_SCHEDULER),
        Some(name) => {
            let found = Scheduler::ALL.iter().copied().find(|s| s.name() == name);
            if found.is_none() {
                let names: Vec<&str> = Scheduler::ALL.iter().map(|s| s.name()).collect();
                check.problem(
                    place,
                    Some("scheduler"),
                    format!("{name:?} is none of {}", names.join(", ")),
                );
            }
            found
        }
    };
    let persistence_secs = match &def.persistence {
        None => 0,
        Some(text) => match parse_duration(text) {
            Ok(d) if d < Duration::from_secs(1) => {
                check.problem(place, Some("persistence"), "must be at least 1s");
                0
            }
            Ok(d) => match u32::try_from(d.as_millis().div_ceil(1000)) {
                Ok(secs) => secs,
                Err(_) => {
                    check.problem(place, Some("persistence"), format!("{text:?} is too long"));
                    0
                }
            },
            Err(why) => {
                check.problem(place, Some("persistence"), why);
                0
            }
        },
    };
    let persistence_mask = match &def.persistence_netmask {
        None => Ipv4Addr::BROADCAST,
        Some(text) => {
            let mask = parse_addr(check, place, "persistence_netmask", text);
            if let Some(mask) = mask {
                let bits = u32::from(mask);
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    check.problem(
                        place,
                        Some("persistence_netmask"),
                        format!("{mask} is not a netmask (its ones must be contiguous, e.g. 255.255.255.0)"),
                    );
                }
            }
            if def.persistence.is_none() {
                check.problem(
                    place,
                    Some("persistence_netmask"),
                    "has no effect without persistence",
                );
            }
            mask.unwrap_or(Ipv4Addr::BROADCAST)
        }
    };
    let health = def.health.as_ref().and_then(|h| health(check, place, h));
    if def.backends.len() > MAX_SERVICE_BACKENDS as usize {
        check.problem(
            place,
            Some("backends"),
            format!(
                "{} backends: a service has at most {MAX_SERVICE_BACKENDS}",
                def.backends.len()
            ),
        );
    }
    let mut backends: Vec<ServiceBackend> = Vec::new();
    let mut seen: HashMap<(Ipv4Addr, u16), usize> = HashMap::new();
    for (j, b) in def.backends.iter().enumerate() {
        let Some(backend) = backend(check, place, j, b, port.unwrap_or(0), ctx) else {
            continue;
        };
        if let Some(first) = seen.insert((backend.addr, backend.port), j) {
            check.problem(
                place,
                Some("backends"),
                format!(
                    "entry #{}: {}:{} is also entry #{}",
                    j + 1,
                    backend.addr,
                    backend.port,
                    first + 1
                ),
            );
            continue;
        }
        backends.push(backend);
    }
    if check.count() != before {
        return None;
    }
    Some(Service {
        id: 0,
        name: def.name.clone(),
        vip: vip?,
        port: port?,
        proto: proto?,
        scheduler: scheduler?,
        persistence_secs,
        persistence_mask,
        external: def.external.unwrap_or(false),
        health: match &def.health {
            Some(_) => Some(health?),
            None => None,
        },
        backends,
    })
}

/// A VIP must be a unicast address of its own: not a container's subnet (the network's
/// own traffic would be taken), not the host's (its ports are the host's).
fn check_vip(check: &mut Checker, place: &str, vip: Ipv4Addr, ctx: &Context) -> bool {
    let first = vip.octets()[0];
    if vip.is_unspecified()
        || vip.is_broadcast()
        || vip.is_loopback()
        || vip.is_multicast()
        || first == 0
        || first >= 240
    {
        check.problem(
            place,
            Some("vip"),
            format!("{vip} is not a unicast address a service can take"),
        );
        return false;
    }
    if let Some(net) = ctx.networks.iter().find(|n| n.contains(vip)) {
        let what = if vip == net.gateway {
            "the gateway of"
        } else {
            "inside"
        };
        check.problem(
            place,
            Some("vip"),
            format!(
                "{vip} is {what} network {:?} ({}): a VIP must be outside every container subnet",
                net.name,
                net.cidr()
            ),
        );
        return false;
    }
    if let Some(addresses) = &ctx.previous.host_addresses
        && addresses.contains(&vip)
    {
        check.problem(
            place,
            Some("vip"),
            format!("{vip} is an address of the host (publish a port for that)"),
        );
        return false;
    }
    true
}

fn port(check: &mut Checker, place: &str, field: &str, value: i64) -> Option<u16> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Some(p),
        _ => {
            check.problem(
                place,
                Some(field),
                format!("{value} is not a port (1-65535)"),
            );
            None
        }
    }
}

fn health(check: &mut Checker, place: &str, def: &HealthDef) -> Option<HealthCheck> {
    let before = check.count();
    let duration = |check: &mut Checker, field: &str, text: &Option<String>, default| match text {
        None => Some(default),
        Some(text) => match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                check.problem(place, Some(field), "must be longer than 0");
                None
            }
            Ok(d) => Some(d),
            Err(why) => {
                check.problem(place, Some(field), why);
                None
            }
        },
    };
    let interval = duration(check, "health.interval", &def.interval, DEFAULT_INTERVAL);
    let timeout = duration(
        check,
        "health.timeout",
        &def.timeout,
        interval.unwrap_or(DEFAULT_INTERVAL).min(DEFAULT_TIMEOUT),
    );
    if let (Some(interval), Some(timeout)) = (interval, timeout)
        && timeout > interval
    {
        check.problem(
            place,
            Some("health.timeout"),
            format!(
                "{} is longer than the interval ({}): a probe must end before the next",
                show(timeout),
                show(interval)
            ),
        );
    }
    let count = |check: &mut Checker, field: &str, value: Option<i64>, default: u32| match value {
        None => Some(default),
        Some(n) if (1..=MAX_RISE_FALL).contains(&n) => u32::try_from(n).ok(),
        Some(n) => {
            check.problem(
                place,
                Some(field),
                format!("{n} is not a number of probes (1-{MAX_RISE_FALL})"),
            );
            None
        }
    };
    let rise = count(check, "health.rise", def.rise, DEFAULT_RISE);
    let fall = count(check, "health.fall", def.fall, DEFAULT_FALL);
    let kind = match def.kind.as_str() {
        "tcp" => {
            for (field, given) in [
                ("health.path", def.path.is_some()),
                ("health.expect", def.expect.is_some()),
            ] {
                if given {
                    check.problem(place, Some(field), "only for kind = \"http\"");
                }
            }
            Some(HealthKind::Tcp)
        }
        "http" => {
            let path = match &def.path {
                None => {
                    check.problem(
                        place,
                        Some("health.path"),
                        "missing: an http check needs the path to GET (e.g. \"/healthz\")",
                    );
                    None
                }
                Some(p)
                    if !p.starts_with('/')
                        || p.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    check.problem(
                        place,
                        Some("health.path"),
                        format!("{p:?} is not a path (it starts with '/', without spaces)"),
                    );
                    None
                }
                Some(p) => Some(p.clone()),
            };
            let expect = match def.expect {
                None => Some(DEFAULT_EXPECT),
                Some(n) if (100..=599).contains(&n) => u16::try_from(n).ok(),
                Some(n) => {
                    check.problem(
                        place,
                        Some("health.expect"),
                        format!("{n} is not an HTTP status (100-599)"),
                    );
                    None
                }
            };
            match (path, expect) {
                (Some(path), Some(expect)) => Some(HealthKind::Http { path, expect }),
                _ => None,
            }
        }
        other => {
            check.problem(
                place,
                Some("health.kind"),
                format!("{other:?} is neither tcp nor http"),
            );
            None
        }
    };
    if check.count() != before {
        return None;
    }
    Some(HealthCheck {
        kind: kind?,
        interval: interval?,
        timeout: timeout?,
        rise: rise?,
        fall: fall?,
    })
}

/// A duration as the file writes it.
fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn backend(
    check: &mut Checker,
    place: &str,
    index: usize,
    def: &BackendDef,
    service_port: u16,
    ctx: &Context,
) -> Option<ServiceBackend> {
    let entry = format!("entry #{}", index + 1);
    let problem = |check: &mut Checker, why: String| {
        check.problem(place, Some("backends"), format!("{entry}: {why}"));
    };
    let before = check.count();
    let (addr, container) = match (&def.container, &def.address) {
        (Some(_), Some(_)) => {
            problem(
                check,
                "give either container or address, not both".to_owned(),
            );
            (None, None)
        }
        (None, None) => {
            problem(
                check,
                "missing: give container = NAME or address = IP".to_owned(),
            );
            (None, None)
        }
        (Some(name), None) => {
            let resolved = ctx.containers.iter().find(|c| &c.name == name);
            match resolved {
                _ if !ctx.defined.contains(name.as_str()) => {
                    problem(check, format!("no container named {name:?}"));
                    (None, None)
                }
                Some(c) => match &c.attachment {
                    Some(a) => (Some(a.ip), Some(name.clone())),
                    None => {
                        problem(
                            check,
                            format!("container {name:?} is on network \"none\": it has no address"),
                        );
                        (None, None)
                    }
                },
                // Defined but not resolved: its own problem is reported.
                None => (None, None),
            }
        }
        (None, Some(text)) => match text.parse::<Ipv4Addr>() {
            Err(_) => {
                problem(check, format!("address {text:?} is not an IPv4 address"));
                (None, None)
            }
            Ok(addr) => {
                let net = ctx.networks.iter().find(|n| n.contains(addr));
                match net {
                    None => {
                        problem(
                            check,
                            format!("address {addr} is not inside any network's subnet"),
                        );
                        (None, None)
                    }
                    Some(n) if addr == n.subnet || addr == n.broadcast() || addr == n.gateway => {
                        problem(
                            check,
                            format!(
                                "address {addr} is not a host address for a container of network {:?} ({})",
                                n.name,
                                n.cidr()
                            ),
                        );
                        (None, None)
                    }
                    Some(_) => (Some(addr), None),
                }
            }
        },
    };
    let port = match def.port {
        None => Some(service_port),
        Some(p) => match u16::try_from(p) {
            Ok(p) if p != 0 => Some(p),
            _ => {
                problem(check, format!("port {p} is not a port (1-65535)"));
                None
            }
        },
    };
    let weight = match def.weight {
        None => Some(1),
        Some(w) => match u16::try_from(w) {
            Ok(w) => Some(w),
            Err(_) => {
                problem(check, format!("weight {w} is out of range 0-65535"));
                None
            }
        },
    };
    if check.count() != before {
        return None;
    }
    Some(ServiceBackend {
        id: 0,
        addr: addr?,
        port: port?,
        weight: weight?,
        container,
    })
}

/// Service ids by VIP, port and protocol, backend ids by service, address and port: the
/// ones the kernel holds are kept; new ones are taken above the highest in use (so an
/// id freed a moment ago, whose flows may linger in conntrack, is not handed out at
/// once), wrapping around to the lowest free.
fn assign_ids(services: &mut [Service], previous: &Previous) {
    let mut ids = Ids::new(
        previous.services.values().map(|p| p.id).max().unwrap_or(0),
        MAX_SERVICES,
    );
    for s in services.iter_mut() {
        if let Some(p) = previous.services.get(&(s.vip, s.port, s.proto))
            && ids.keep(p.id)
        {
            s.id = p.id;
        }
    }
    for s in services.iter_mut().filter(|s| s.id == 0) {
        s.id = ids.take();
    }

    let mut ids = Ids::new(
        previous.backends.values().map(|p| p.id).max().unwrap_or(0),
        MAX_BACKENDS,
    );
    for s in services.iter_mut() {
        let key = (s.vip, s.port, s.proto);
        for b in &mut s.backends {
            if let Some(p) = previous.backends.get(&(key, b.addr, b.port))
                && ids.keep(p.id)
            {
                b.id = p.id;
            }
        }
    }
    for s in services.iter_mut() {
        for b in s.backends.iter_mut().filter(|b| b.id == 0) {
            b.id = ids.take();
        }
    }
}

/// Ids from 1 to `limit - 1`: the ones kept first, then new ones from above the highest
/// in use before, wrapping around to the lowest free (the caller has checked that there
/// are enough).
struct Ids {
    used: BTreeSet<u32>,
    next: u32,
    limit: u32,
}

impl Ids {
    fn new(high: u32, limit: u32) -> Ids {
        Ids {
            used: BTreeSet::new(),
            next: high.saturating_add(1),
            limit,
        }
    }

    /// Keeps an id held before; false if another took it already.
    fn keep(&mut self, id: u32) -> bool {
        self.used.insert(id)
    }

    fn take(&mut self) -> u32 {
        for _ in 0..self.limit {
            if self.next == 0 || self.next >= self.limit {
                self.next = 1;
            }
            let id = self.next;
            self.next += 1;
            if self.used.insert(id) {
                return id;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{file::parse, validate::validate};

    /// Two networks, two containers (in this process's own namespace, which exists), and
    /// `services` after them.
    fn file(services: &str) -> String {
        format!(
            r#"
[[network]]
name = "front"
subnet = "198.18.10.0/24"

[[network]]
name = "back"
subnet = "198.18.20.0/24"

[[container]]
name = "web1"
netns = "/proc/self/ns/net"
network = "front"
ip = "198.18.10.2"
ifname = "eth1"

[[container]]
name = "solo"
netns = "/proc/self/ns/net"
network = "none"

{services}"#
        )
    }

    const WEB: &str = r#"
[[service]]
name = "web"
vip = "198.18.200.10"
port = 80
scheduler = "mh"
persistence = "300s"
persistence_netmask = "255.255.255.0"
external = true
health = { kind = "tcp", interval = "1s", timeout = "500ms", rise = 2, fall = 2 }
backends = [
  { container = "web1", port = 8080, weight = 3 },
  { address = "198.18.10.9", port = 8080, weight = 1 },
]
"#;

    fn host() -> Previous {
        Previous {
            host_addresses: Some(vec![Ipv4Addr::LOCALHOST, Ipv4Addr::new(198, 18, 0, 1)]),
            ..Default::default()
        }
    }

    fn problems(text: &str, previous: &Previous) -> Vec<String> {
        match parse(text) {
            Err(p) => vec![p.to_string()],
            Ok(f) => validate(&f, previous)
                .err()
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    fn model(text: &str, previous: &Previous) -> crate::config::Model {
        validate(&parse(text).expect("parses"), previous).expect("valid")
    }

    #[test]
    fn the_issue_example_resolves() {
        let m = model(&file(WEB), &host());
        let s = &m.services[0];
        assert_eq!(s.id, 1);
        assert_eq!(s.label(), "TCP 198.18.200.10:80");
        assert_eq!(s.scheduler, Scheduler::Mh);
        assert_eq!(s.persistence_secs, 300);
        assert_eq!(s.persistence_mask, Ipv4Addr::new(255, 255, 255, 0));
        assert!(s.external);
        let h = s.health.as_ref().expect("health");
        assert_eq!(h.kind, HealthKind::Tcp);
        assert_eq!(
            (h.interval, h.timeout, h.rise, h.fall),
            (Duration::from_secs(1), Duration::from_millis(500), 2, 2)
        );
        let b: Vec<_> = s
            .backends
            .iter()
            .map(|b| (b.id, b.addr, b.port, b.weight, b.container.as_deref()))
            .collect();
        assert_eq!(
            b,
            [
                (1, Ipv4Addr::new(198, 18, 10, 2), 8080, 3, Some("web1")),
                (2, Ipv4Addr::new(198, 18, 10, 9), 8080, 1, None),
            ]
        );
    }

    #[test]
    fn defaults_are_ipvsadms() {
        let m = model(
            &file(
                r#"
[[service]]
name = "dns"
vip = "198.18.200.53"
port = 53
protocol = "udp"
health = { kind = "http", path = "/healthz" }
backends = [{ container = "web1" }]
"#,
            ),
            &host(),
        );
        let s = &m.services[0];
        assert_eq!((s.proto, s.scheduler), (Proto::Udp, Scheduler::Wlc));
        assert_eq!((s.persistence_secs, s.external), (0, false));
        assert_eq!(s.persistence_mask, Ipv4Addr::BROADCAST);
        let b = &s.backends[0];
        assert_eq!((b.port, b.weight), (53, 1), "the service's port, weight 1");
        let h = s.health.as_ref().expect("health");
        assert_eq!(
            h.kind,
            HealthKind::Http {
                path: "/healthz".to_owned(),
                expect: 200
            }
        );
        assert_eq!(
            (h.interval, h.timeout, h.rise, h.fall),
            (
                DEFAULT_INTERVAL,
                DEFAULT_TIMEOUT,
                DEFAULT_RISE,
                DEFAULT_FALL
            )
        );
    }

    #[test]
    fn every_kind_of_bad_service_is_named() {
        let cases: Vec<(String, &str)> = vec![
            (
                file(&WEB.replace("external = true", "external = true\ncolour = 1")),
                "unknown field `colour`",
            ),
            (
                file(&WEB.replace("\"mh\"", "\"fifo\"")),
                "service \"web\": scheduler: \"fifo\" is none of rr, wrr, lc, wlc, sh, dh, mh, random",
            ),
            (
                file(&WEB.replace("198.18.200.10", "198.18.10.50")),
                "service \"web\": vip: 198.18.10.50 is inside network \"front\" (198.18.10.0/24)",
            ),
            (
                file(&WEB.replace("198.18.200.10", "198.18.20.1")),
                "vip: 198.18.20.1 is the gateway of network \"back\"",
            ),
            (
                file(&WEB.replace("198.18.200.10", "198.18.0.1")),
                "vip: 198.18.0.1 is an address of the host",
            ),
            (
                file(&WEB.replace("198.18.200.10", "127.0.0.9")),
                "vip: 127.0.0.9 is not a unicast address",
            ),
            (
                file(&WEB.replace("198.18.200.10", "198.18.200")),
                "vip: \"198.18.200\" is not an IPv4 address",
            ),
            (
                file(&WEB.replace("port = 80\n", "port = 0\n")),
                "service \"web\": port: 0 is not a port (1-65535)",
            ),
            (
                file(&WEB.replace("port = 80\n", "port = 80\nprotocol = \"sctp\"\n")),
                "protocol: \"sctp\" is neither tcp nor udp",
            ),
            (
                file(&WEB.replace("\"web1\"", "\"web9\"")),
                "service \"web\": backends: entry #1: no container named \"web9\"",
            ),
            (
                file(&WEB.replace("\"web1\"", "\"solo\"")),
                "entry #1: container \"solo\" is on network \"none\"",
            ),
            (
                file(&WEB.replace("198.18.10.9", "198.18.30.9")),
                "service \"web\": backends: entry #2: address 198.18.30.9 is not inside any network's subnet",
            ),
            (
                file(&WEB.replace("198.18.10.9", "198.18.10.1")),
                "entry #2: address 198.18.10.1 is not a host address",
            ),
            (
                file(&WEB.replace("198.18.10.9", "198.18.10.2")),
                "service \"web\": backends: entry #2: 198.18.10.2:8080 is also entry #1",
            ),
            (
                file(&WEB.replace("weight = 3", "weight = 65536")),
                "entry #1: weight 65536 is out of range 0-65535",
            ),
            (
                file(&WEB.replace("weight = 3", "weight = -1")),
                "entry #1: weight -1 is out of range 0-65535",
            ),
            (
                file(&WEB.replace("port = 8080, weight = 3", "port = 70000, weight = 3")),
                "entry #1: port 70000 is not a port",
            ),
            (
                file(&WEB.replace(
                    "container = \"web1\",",
                    "container = \"web1\", address = \"198.18.10.7\",",
                )),
                "entry #1: give either container or address, not both",
            ),
            (
                file(&WEB.replace("container = \"web1\",", "")),
                "entry #1: missing: give container = NAME or address = IP",
            ),
            (
                file(&WEB.replace("255.255.255.0", "255.0.255.0")),
                "persistence_netmask: 255.0.255.0 is not a netmask",
            ),
            (
                file(&WEB.replace("persistence = \"300s\"\n", "")),
                "persistence_netmask: has no effect without persistence",
            ),
            (
                file(&WEB.replace("\"300s\"", "\"300\"")),
                "persistence: \"300\" has no unit",
            ),
            (
                file(&WEB.replace("\"300s\"", "\"500ms\"")),
                "persistence: must be at least 1s",
            ),
            (
                file(&WEB.replace("rise = 2", "rise = 0")),
                "health.rise: 0 is not a number of probes",
            ),
            (
                file(&WEB.replace("fall = 2", "fall = 0")),
                "health.fall: 0 is not a number of probes",
            ),
            (
                file(&WEB.replace("\"500ms\"", "\"2s\"")),
                "health.timeout: 2s is longer than the interval (1s)",
            ),
            (
                file(&WEB.replace("interval = \"1s\"", "interval = \"0s\"")),
                "health.interval: must be longer than 0",
            ),
            (
                file(&WEB.replace("kind = \"tcp\"", "kind = \"http\"")),
                "health.path: missing: an http check needs the path",
            ),
            (
                file(&WEB.replace("kind = \"tcp\"", "kind = \"http\", path = \"healthz\"")),
                "health.path: \"healthz\" is not a path",
            ),
            (
                file(&WEB.replace(
                    "kind = \"tcp\"",
                    "kind = \"http\", path = \"/\", expect = 700",
                )),
                "health.expect: 700 is not an HTTP status",
            ),
            (
                file(&WEB.replace("kind = \"tcp\"", "kind = \"tcp\", path = \"/\"")),
                "health.path: only for kind = \"http\"",
            ),
            (
                file(&WEB.replace("kind = \"tcp\"", "kind = \"icmp\"")),
                "health.kind: \"icmp\" is neither tcp nor http",
            ),
            (
                file(&format!(
                    "{WEB}{}",
                    WEB.replace("198.18.200.10", "198.18.200.11")
                )),
                "service \"web\": name: defined twice",
            ),
            (
                file(&format!(
                    "{WEB}{}",
                    WEB.replace("name = \"web\"", "name = \"web2\"")
                )),
                "service \"web2\": vip: TCP 198.18.200.10:80 is also service \"web\"",
            ),
        ];
        for (text, expected) in cases {
            let found = problems(&text, &host());
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{expected:?} not in {found:?}"
            );
        }
        // Same VIP and port over UDP is another service.
        let udp = WEB
            .replace("name = \"web\"", "name = \"web-udp\"")
            .replace("port = 80\n", "port = 80\nprotocol = \"udp\"\n");
        assert_eq!(
            model(&file(&format!("{WEB}{udp}")), &host()).services.len(),
            2
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = file(
            &WEB.replace("\"mh\"", "\"fifo\"")
                .replace("198.18.10.9", "198.18.30.9")
                .replace("rise = 2", "rise = 0"),
        );
        let found = problems(&text, &host());
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn too_many_backends() {
        let backends: Vec<String> = (0..=MAX_SERVICE_BACKENDS)
            .map(|i| {
                format!(
                    "{{ address = \"198.18.20.{}\", port = {} }}",
                    2 + i % 200,
                    1000 + i
                )
            })
            .collect();
        let text = file(&format!(
            "[[service]]\nname = \"big\"\nvip = \"198.18.200.1\"\nport = 80\nbackends = [{}]\n",
            backends.join(", ")
        ));
        let found = problems(&text, &host());
        assert!(
            found
                .iter()
                .any(|p| p.contains("backends: 257 backends: a service has at most 256")),
            "{found:?}"
        );
    }

    #[test]
    fn ids_are_kept_across_reloads_and_new_ones_go_above() {
        let key = (Ipv4Addr::new(198, 18, 200, 10), 80, Proto::Tcp);
        let previous = Previous {
            services: [(
                key,
                PreviousService {
                    id: 7,
                    scheduler: Scheduler::Mh as u8,
                    maglev_size: 409,
                    roster: Vec::new(),
                },
            )]
            .into(),
            backends: [
                (
                    (key, Ipv4Addr::new(198, 18, 10, 9), 8080),
                    PreviousBackend { id: 40, weight: 1 },
                ),
                // A backend the file no longer has: its id is not handed out again yet.
                (
                    (key, Ipv4Addr::new(198, 18, 10, 77), 8080),
                    PreviousBackend { id: 41, weight: 1 },
                ),
            ]
            .into(),
            ..host()
        };
        let other = WEB
            .replace("name = \"web\"", "name = \"api\"")
            .replace("198.18.200.10", "198.18.200.20");
        let m = model(&file(&format!("{other}{WEB}")), &previous);
        let by_name = |n: &str| m.services.iter().find(|s| s.name == n).expect("service");
        assert_eq!(by_name("web").id, 7);
        assert_eq!(by_name("api").id, 8, "above the highest id in use");
        let ids = |n: &str| -> Vec<u32> { by_name(n).backends.iter().map(|b| b.id).collect() };
        assert_eq!(ids("web"), [44, 40]);
        assert_eq!(ids("api"), [42, 43]);
    }

    #[test]
    fn allocation_wraps_to_the_lowest_free_id() {
        let mut ids = Ids::new(4, 6);
        assert!(ids.keep(1) && ids.keep(3) && !ids.keep(3));
        assert_eq!(ids.take(), 5);
        assert_eq!(ids.take(), 2);
        assert_eq!(ids.take(), 4);
        assert_eq!(ids.take(), 0, "none left");
    }
}
