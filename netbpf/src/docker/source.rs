//! The driver's state as definitions: Docker's networks and joined endpoints become
//! `[[network]]` and `[[container]]` entries (their veths handed over to Docker), the
//! containers' `netbpf.service*` labels `[[service]]` entries, all after the file's own.
//! The same validation, planner and reconciler as the file's take it from there.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
};

use super::state::State;
use crate::config::{
    Problem,
    file::{BackendDef, ContainerDef, DefinitionsFile, NetworkDef, ServiceDef},
};

/// `netbpf.service=NAME:PORT[/tcp|/udp]`: the container is a backend of service NAME, on
/// its port PORT.
pub const LABEL_SERVICE: &str = "netbpf.service";
/// `netbpf.service.vip=ADDR[:PORT]`: the service's virtual address (and port, by default
/// the backends').
pub const LABEL_VIP: &str = "netbpf.service.vip";
/// `netbpf.service.scheduler=rr|wrr|lc|wlc|sh|dh|mh|random`.
pub const LABEL_SCHEDULER: &str = "netbpf.service.scheduler";
/// `netbpf.service.weight=N`: this backend's weight.
pub const LABEL_WEIGHT: &str = "netbpf.service.weight";
/// `netbpf.service.external=true`: also reachable from outside through the uplink.
pub const LABEL_EXTERNAL: &str = "netbpf.service.external";
/// `netbpf.service.persistence=300s`.
pub const LABEL_PERSISTENCE: &str = "netbpf.service.persistence";

const SERVICE_LABELS: [&str; 6] = [
    LABEL_SERVICE,
    LABEL_VIP,
    LABEL_SCHEDULER,
    LABEL_WEIGHT,
    LABEL_EXTERNAL,
    LABEL_PERSISTENCE,
];

/// Whether a label is netbpf's to read (the driver keeps only these).
pub fn is_netbpf_label(key: &str) -> bool {
    key == "netbpf" || key.starts_with("netbpf.")
}

/// The definitions the state stands for, appended to the file's. Problems of the labels
/// are reported here; everything else is validation's.
pub fn definitions(state: &State, file: DefinitionsFile) -> Result<DefinitionsFile, Vec<Problem>> {
    let mut out = file;
    let mut networks: Vec<_> = state.networks.values().collect();
    networks.sort_by_key(|n| n.seq);
    for n in networks {
        out.network.push(NetworkDef {
            name: n.name.clone(),
            subnet: format!("{}/{}", n.subnet, n.prefix_len),
            gateway: Some(n.gateway.to_string()),
            icc: Some(n.icc),
            internal: Some(n.internal),
            masquerade: Some(n.masquerade),
        });
    }
    for (_, ep, joined) in state.joined() {
        let Some(net) = state.networks.get(&ep.network) else {
            continue;
        };
        out.container.push(ContainerDef {
            name: joined.name.clone(),
            netns: Some(joined.sandbox.clone()),
            pid: None,
            network: net.name.clone(),
            ip: Some(ep.ip.to_string()),
            mac: Some(ep.mac.clone()),
            ifname: Some(joined.ifname.clone()),
            ports: if joined.published {
                ep.ports.clone()
            } else {
                Vec::new()
            },
            publish_all: false,
            expose: Vec::new(),
            handover: true,
        });
    }
    let services = services(state)?;
    out.service.extend(services);
    Ok(out)
}

/// One container's service labels, parsed.
#[derive(Clone, Debug)]
struct Labelled {
    container: String,
    service: String,
    port: u16,
    proto: &'static str,
    vip: Option<(Ipv4Addr, Option<u16>)>,
    scheduler: Option<String>,
    weight: Option<i64>,
    external: Option<bool>,
    persistence: Option<String>,
}

fn place(container: &str) -> String {
    format!("container {container:?}")
}

fn problem(container: &str, label: &str, message: impl Into<String>) -> Problem {
    Problem {
        place: place(container),
        field: Some(format!("label {label}")),
        message: message.into(),
    }
}

fn parse_port(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Reads one container's `netbpf.*` labels; `None` if it has no service label.
fn labelled(
    container: &str,
    labels: &BTreeMap<String, String>,
    problems: &mut Vec<Problem>,
) -> Option<Labelled> {
    for key in labels.keys() {
        if is_netbpf_label(key) && !SERVICE_LABELS.contains(&key.as_str()) {
            problems.push(problem(
                container,
                key,
                format!("unknown label (netbpf reads {})", SERVICE_LABELS.join(", ")),
            ));
        }
    }
    let Some(text) = labels.get(LABEL_SERVICE) else {
        for key in SERVICE_LABELS.iter().skip(1) {
            if labels.contains_key(*key) {
                problems.push(problem(
                    container,
                    key,
                    format!("needs {LABEL_SERVICE}=NAME:PORT as well"),
                ));
            }
        }
        return None;
    };
    let before = problems.len();
    let (body, proto) = match text.split_once('/') {
        None => (text.as_str(), "tcp"),
        Some((body, "tcp")) => (body, "tcp"),
        Some((body, "udp")) => (body, "udp"),
        Some((body, other)) => {
            problems.push(problem(
                container,
                LABEL_SERVICE,
                format!("protocol {other:?} is neither tcp nor udp"),
            ));
            (body, "tcp")
        }
    };
    let (service, port) = match body.split_once(':').map(|(n, p)| (n, parse_port(p))) {
        Some((name, Some(port))) if !name.is_empty() => (name.to_owned(), port),
        _ => {
            problems.push(problem(
                container,
                LABEL_SERVICE,
                format!("{text:?} is not NAME:PORT[/tcp|/udp] (e.g. web:80)"),
            ));
            (String::new(), 0)
        }
    };
    let vip = labels.get(LABEL_VIP).and_then(|text| {
        let (addr, port) = match text.split_once(':') {
            Some((addr, port)) => (addr, Some(port)),
            None => (text.as_str(), None),
        };
        let addr = addr.parse::<Ipv4Addr>().ok();
        let port = port.map(parse_port);
        match (addr, port) {
            (Some(addr), None) => Some((addr, None)),
            (Some(addr), Some(Some(port))) => Some((addr, Some(port))),
            _ => {
                problems.push(problem(
                    container,
                    LABEL_VIP,
                    format!(
                        "{text:?} is not ADDRESS[:PORT] (e.g. 198.18.200.10 or 198.18.200.10:8080)"
                    ),
                ));
                None
            }
        }
    });
    let weight = labels
        .get(LABEL_WEIGHT)
        .and_then(|text| match text.parse::<i64>() {
            Ok(w) => Some(w),
            Err(_) => {
                problems.push(problem(
                    container,
                    LABEL_WEIGHT,
                    format!("{text:?} is not a number"),
                ));
                None
            }
        });
    let external = labels
        .get(LABEL_EXTERNAL)
        .and_then(|text| match text.as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => {
                problems.push(problem(
                    container,
                    LABEL_EXTERNAL,
                    format!("{text:?} is neither true nor false"),
                ));
                None
            }
        });
    (problems.len() == before).then(|| Labelled {
        container: container.to_owned(),
        service,
        port,
        proto,
        vip,
        scheduler: labels.get(LABEL_SCHEDULER).cloned(),
        weight,
        external,
        persistence: labels.get(LABEL_PERSISTENCE).cloned(),
    })
}

/// Every label that names a service setting must agree among the service's containers.
fn agree<T: Clone + PartialEq + std::fmt::Display>(
    members: &[Labelled],
    label: &str,
    get: impl Fn(&Labelled) -> Option<T>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut first: Option<(T, &str)> = None;
    for m in members {
        let Some(value) = get(m) else { continue };
        match &first {
            None => first = Some((value, &m.container)),
            Some((v, who)) if *v != value => problems.push(problem(
                &m.container,
                label,
                format!(
                    "{value} differs from {v}, given by container {who:?} of service {:?}",
                    m.service
                ),
            )),
            Some(_) => {}
        }
    }
    first.map(|(v, _)| v)
}

/// Services from the labels of joined containers (a container on several networks is a
/// backend once, through the endpoint it joined first).
fn services(state: &State) -> Result<Vec<ServiceDef>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut seen = HashMap::new();
    let mut by_service: BTreeMap<String, Vec<Labelled>> = BTreeMap::new();
    for (_, _, joined) in state.joined() {
        let who = joined
            .container_id
            .clone()
            .unwrap_or_else(|| joined.name.clone());
        if seen.insert(who, ()).is_some() {
            continue;
        }
        if let Some(l) = labelled(&joined.name, &joined.labels, &mut problems) {
            by_service.entry(l.service.clone()).or_default().push(l);
        }
    }
    let mut out = Vec::new();
    for (name, members) in &by_service {
        let vip = agree(members, LABEL_VIP, |m| m.vip.map(|(a, _)| a), &mut problems);
        let vip_port = agree(
            members,
            LABEL_VIP,
            |m| m.vip.and_then(|(_, p)| p),
            &mut problems,
        );
        let proto = agree(members, LABEL_SERVICE, |m| Some(m.proto), &mut problems);
        let scheduler = agree(
            members,
            LABEL_SCHEDULER,
            |m| m.scheduler.clone(),
            &mut problems,
        );
        let external = agree(members, LABEL_EXTERNAL, |m| m.external, &mut problems);
        let persistence = agree(
            members,
            LABEL_PERSISTENCE,
            |m| m.persistence.clone(),
            &mut problems,
        );
        let Some(vip) = vip else {
            problems.push(problem(
                &members[0].container,
                LABEL_VIP,
                format!(
                    "service {name:?} needs {LABEL_VIP}=ADDRESS[:PORT] on one of its containers"
                ),
            ));
            continue;
        };
        out.push(ServiceDef {
            name: name.clone(),
            vip: vip.to_string(),
            port: i64::from(vip_port.unwrap_or(members[0].port)),
            protocol: proto.map(str::to_owned),
            scheduler,
            persistence,
            persistence_netmask: None,
            external,
            health: None,
            backends: members
                .iter()
                .map(|m| BackendDef {
                    container: Some(m.container.clone()),
                    address: None,
                    port: Some(i64::from(m.port)),
                    weight: m.weight,
                })
                .collect(),
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{
        config::validate::{Previous, validate},
        docker::state::{EndpointState, Joined, NetworkState},
    };

    fn state() -> State {
        let mut s = State::default();
        s.networks.insert(
            "n1".into(),
            NetworkState {
                seq: 1,
                name: "front".into(),
                named: true,
                subnet: Ipv4Addr::new(198, 18, 50, 0),
                prefix_len: 24,
                gateway: Ipv4Addr::new(198, 18, 50, 1),
                internal: false,
                icc: true,
                masquerade: true,
                created: 0,
            },
        );
        for (i, name) in ["web1", "web2", "web3"].iter().enumerate() {
            let ip = Ipv4Addr::new(198, 18, 50, 2 + i as u8);
            s.endpoints.insert(
                format!("e{i}"),
                EndpointState {
                    seq: 2 + i as u64,
                    network: "n1".into(),
                    ip,
                    mac: crate::config::model::format_mac(&crate::config::model::mac_from_ip(ip)),
                    created: 0,
                    ports: vec!["8080:80/tcp".into()],
                    join: Some(Joined {
                        name: (*name).into(),
                        container_id: Some(format!("c{i}")),
                        container_name: Some((*name).into()),
                        labels: BTreeMap::new(),
                        sandbox: PathBuf::from(format!("/run/docker/netns/{i}")),
                        ifname: format!("nbc{i}"),
                        at: 0,
                        wired: true,
                        published: i == 0,
                    }),
                },
            );
        }
        s
    }

    fn label(s: &mut State, ep: &str, key: &str, value: &str) {
        let joined = s
            .endpoints
            .get_mut(ep)
            .and_then(|e| e.join.as_mut())
            .expect("joined endpoint");
        joined.labels.insert(key.into(), value.into());
    }

    #[test]
    fn joined_endpoints_become_handed_over_containers() {
        let defs = definitions(&state(), DefinitionsFile::default()).expect("no labels");
        assert_eq!(defs.network.len(), 1);
        assert_eq!(defs.container.len(), 3);
        let web1 = &defs.container[0];
        assert!(web1.handover);
        assert_eq!(web1.ports, ["8080:80/tcp"], "published");
        assert!(defs.container[1].ports.is_empty(), "not published yet");
        let model = validate(&defs, &Previous::default()).expect("valid");
        assert!(model.containers.iter().all(|c| c.handover));
        assert_eq!(
            model.containers[0].netns,
            PathBuf::from("/run/docker/netns/0"),
            "the sandbox need not exist"
        );
        assert_eq!(
            model.containers[0]
                .attachment
                .as_ref()
                .map(|a| a.ports.len()),
            Some(1)
        );
    }

    #[test]
    fn labels_make_a_service_over_their_containers() {
        let mut s = state();
        for ep in ["e0", "e1", "e2"] {
            label(&mut s, ep, LABEL_SERVICE, "web:80");
        }
        label(&mut s, "e1", LABEL_VIP, "198.18.200.10");
        label(&mut s, "e2", LABEL_SCHEDULER, "rr");
        let defs = definitions(&s, DefinitionsFile::default()).expect("valid labels");
        assert_eq!(defs.service.len(), 1);
        let web = &defs.service[0];
        assert_eq!((web.vip.as_str(), web.port), ("198.18.200.10", 80));
        assert_eq!(web.scheduler.as_deref(), Some("rr"));
        let backends: Vec<_> = web
            .backends
            .iter()
            .map(|b| b.container.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(backends, ["web1", "web2", "web3"]);
        let model = validate(&defs, &Previous::default()).expect("valid");
        assert_eq!(model.services[0].backends.len(), 3);
    }

    #[test]
    fn label_problems_name_container_and_label() {
        let mut s = state();
        label(&mut s, "e0", LABEL_SERVICE, "web:80");
        label(&mut s, "e0", LABEL_VIP, "198.18.200.10");
        label(&mut s, "e1", LABEL_SERVICE, "web:80");
        label(&mut s, "e1", LABEL_VIP, "198.18.200.11");
        label(&mut s, "e2", LABEL_SERVICE, "web");
        label(&mut s, "e2", "netbpf.servise", "x");
        let problems = definitions(&s, DefinitionsFile::default()).expect_err("invalid");
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "container \"web3\": label netbpf.servise: unknown label (netbpf reads netbpf.service, netbpf.service.vip, netbpf.service.scheduler, netbpf.service.weight, netbpf.service.external, netbpf.service.persistence)",
                "container \"web3\": label netbpf.service: \"web\" is not NAME:PORT[/tcp|/udp] (e.g. web:80)",
                "container \"web2\": label netbpf.service.vip: 198.18.200.11 differs from 198.18.200.10, given by container \"web1\" of service \"web\"",
            ]
        );
    }

    #[test]
    fn a_service_without_a_vip_says_where_to_put_one() {
        let mut s = state();
        label(&mut s, "e0", LABEL_SERVICE, "dns:53/udp");
        let problems = definitions(&s, DefinitionsFile::default()).expect_err("no VIP");
        assert_eq!(
            problems[0].to_string(),
            "container \"web1\": label netbpf.service.vip: service \"dns\" needs netbpf.service.vip=ADDRESS[:PORT] on one of its containers"
        );
    }
}
