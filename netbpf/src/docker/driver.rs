//! The remote network driver: Docker's calls change the driver's [`State`], which is
//! validated as definitions (with the file's, if any), saved, and applied by the agent's
//! loop, the one that applies the file. A call that changes what is wired answers once
//! the reconcile that includes it is done.
//!
//! How Docker's calls map onto netbpf:
//! - CreateNetwork: a network (Docker's IPAM chose subnet and gateway; `--internal`,
//!   `-o netbpf.icc=false`, `-o netbpf.masquerade=false`).
//! - CreateEndpoint: an address (Docker's) and a MAC (Docker's, or derived from the
//!   address as Docker's bridge does, answered back); nothing is wired yet.
//! - Join: the container, named as Docker names it and with its labels (from the Engine
//!   API), joins the model; the reconciler makes its veth in the host namespace and hands
//!   the container end to Docker, which moves it into the sandbox and addresses it.
//! - ProgramExternalConnectivity / RevokeExternalConnectivity: the container's `-p`/`-P`
//!   ports are published / withdrawn (Docker installs nothing for a remote driver).
//! - Leave: the container leaves the model (its veth goes); DeleteEndpoint forgets it.
//!
//! Docker forgets to call Leave and DeleteEndpoint when it dies: endpoints whose veth
//! vanished with their sandbox, or came back from it unannounced, are collected on start
//! and on the agent's tick, and an address Docker hands out again replaces whoever held it.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::Ipv4Addr,
    os::unix::{fs::FileTypeExt as _, net::UnixListener},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::Value;

use super::{
    Options,
    engine::Engine,
    http::{self, Request, Response},
    protocol::{self as proto, WantedPort},
    source,
    state::{EndpointState, Joined, NetworkState, State, now},
};
use crate::{
    Error, Result,
    agent::{self, reconcile::Report, source::Source, watch::Waker},
    config::{
        Invalid, Model, Problem,
        file::{self, DefinitionsFile},
        model::{format_mac, mac_from_ip, mask},
        ports::Proto,
        validate::{Previous, validate},
    },
    kernel::{ifaces, pins::PinDir},
    logging,
    plan::fnv1a,
};

/// How long a call waits for the agent's reconcile (one takes well under a second; this
/// bounds a wedged agent, within Docker's own patience of a minute or more).
const APPLY_TIMEOUT: Duration = Duration::from_secs(45);
/// A joined endpoint whose container end is still (or again) in the host namespace this
/// long after Join was left there by Docker: stale.
const HANDOVER_GRACE: u64 = 60;
/// An endpoint never joined is forgotten after this long (Docker died between the two).
const UNJOINED_TTL: u64 = 3600;
/// A network the Engine API does not know is forgotten only once it is this old (Docker
/// stores a network after the driver answered CreateNetwork).
const NETWORK_GRACE: u64 = 60;
/// Longest name in netbpf's model (maps hold 31 bytes and a NUL).
const MAX_NAME: usize = 31;

pub struct Driver {
    inner: Arc<Inner>,
}

struct Inner {
    file: Option<PathBuf>,
    pins: PinDir,
    engine: Option<Engine>,
    options: Options,
    state_path: PathBuf,
    state: Mutex<State>,
    /// One changing call at a time: each validates against the state the last one left.
    calls: Mutex<()>,
    progress: Mutex<Progress>,
    applied: Condvar,
    reload: OnceLock<Waker>,
    listener: Mutex<Option<UnixListener>>,
}

/// Reconciles asked for by calls, and the last one done.
#[derive(Debug, Default)]
struct Progress {
    /// Bumped by a call after it saved its state.
    requested: u64,
    /// `requested` when the loop last read the state.
    loading: u64,
    /// The `loading` of the last reconcile done, and its error, if it failed.
    applied: u64,
    error: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Docker's ids are 64 hex digits; messages and fallback names use the first 12, as
/// Docker's CLI does.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn parse_cidr(text: &str, what: &str) -> std::result::Result<(Ipv4Addr, u8), String> {
    let (addr, len) = text.split_once('/').unwrap_or((text, "32"));
    match (addr.parse::<Ipv4Addr>(), len.parse::<u8>()) {
        (Ok(addr), Ok(len)) if len <= 32 => Ok((addr, len)),
        _ => Err(format!("{what} {text:?} is not an IPv4 address/prefix")),
    }
}

fn parse_bool(key: &str, value: &str) -> std::result::Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("option {key}: {value:?} is neither true nor false")),
    }
}

/// A name for netbpf's model: `wanted` if it is a valid name nobody has, else cut short
/// and suffixed with `.suffix`, made of the characters names may have.
fn unique_name(wanted: &str, suffix: &str, taken: &HashSet<String>) -> String {
    let clean: String = wanted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !clean.is_empty() && clean.len() <= MAX_NAME && !taken.contains(&clean) {
        return clean;
    }
    let suffix: String = suffix.chars().take(MAX_NAME / 2).collect();
    let keep = MAX_NAME - suffix.len() - 1;
    let head: String = clean.chars().take(keep).collect();
    format!("{head}.{suffix}")
}

/// netbpf's port specs for Docker's bindings. A range of host ports asks for one free
/// port of it: the first one `taken` does not hold.
fn port_specs(
    wanted: &[WantedPort],
    taken: &BTreeSet<(u16, Proto)>,
) -> std::result::Result<Vec<String>, String> {
    let mut chosen: BTreeSet<(u16, Proto)> = BTreeSet::new();
    let mut out = Vec::new();
    for w in wanted {
        let ip = w.host_ip.map(|ip| format!("{ip}:"));
        let spec = match w.host_ports {
            None => match ip {
                Some(ip) => format!("{ip}:{}/{}", w.container_port, w.proto),
                None => format!("{}/{}", w.container_port, w.proto),
            },
            Some((first, last)) => {
                let port = if first == last {
                    first
                } else {
                    (first..=last)
                        .find(|p| !taken.contains(&(*p, w.proto)) && !chosen.contains(&(*p, w.proto)))
                        .ok_or_else(|| {
                            format!(
                                "port {}/{}: every host port of {first}-{last} is published already",
                                w.container_port, w.proto
                            )
                        })?
                };
                chosen.insert((port, w.proto));
                format!(
                    "{}{port}:{}/{}",
                    ip.unwrap_or_default(),
                    w.container_port,
                    w.proto
                )
            }
        };
        out.push(spec);
    }
    Ok(out)
}

/// A container as the Engine API knows it.
#[derive(Debug, Default)]
struct Identity {
    id: Option<String>,
    name: Option<String>,
    labels: BTreeMap<String, String>,
}

/// An empty JSON object, Docker's "done".
#[derive(Serialize)]
struct Empty {}

impl Driver {
    /// Reads the saved state (a missing file is an empty one), binds the plugin socket
    /// (a stale socket file there is replaced) and writes the `.spec` file if asked. Serving
    /// starts with [`Source::start`].
    pub fn new(file: Option<&Path>, pins: &PinDir, options: Options) -> Result<Driver> {
        let state_path = options.state_dir.join("docker.json");
        let state = State::load(&state_path)?;
        let socket = &options.socket;
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        match std::fs::symlink_metadata(socket) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(socket)
                .map_err(|e| Error::io(format!("removing stale {}", socket.display()), e))?,
            Ok(_) => {
                return Err(Error::io(
                    format!("plugin socket {}", socket.display()),
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "exists and is not a socket",
                    ),
                ));
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(socket)
            .map_err(|e| Error::io(format!("listening on {}", socket.display()), e))?;
        if let Some(spec) = &options.spec {
            if let Some(dir) = spec.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            }
            std::fs::write(spec, format!("unix://{}\n", socket.display()))
                .map_err(|e| Error::io(format!("writing {}", spec.display()), e))?;
        }
        let engine = options.api.as_deref().map(Engine::new);
        let inner = Inner {
            file: file.map(Path::to_owned),
            pins: pins.clone(),
            engine,
            options,
            state_path,
            state: Mutex::new(state),
            calls: Mutex::new(()),
            progress: Mutex::new(Progress::default()),
            applied: Condvar::new(),
            reload: OnceLock::new(),
            listener: Mutex::new(Some(listener)),
        };
        // Before the first reconcile: endpoints Docker forgot while nobody was listening.
        inner.collect_garbage();
        Ok(Driver {
            inner: Arc::new(inner),
        })
    }
}

impl Source for Driver {
    fn file(&self) -> Option<&Path> {
        self.inner.file.as_deref()
    }

    fn load(&self, previous: &Previous) -> Result<Model> {
        let inner = &self.inner;
        {
            let mut p = lock(&inner.progress);
            p.loading = p.requested;
        }
        let state = live(&lock(&inner.state));
        let file = inner.read_file()?;
        let label = match &inner.file {
            Some(f) => format!("{} and Docker's networks", f.display()),
            None => "Docker's networks".to_owned(),
        };
        let invalid = |problems| {
            Error::Invalid(Invalid {
                file: label.clone(),
                problems,
            })
        };
        let defs = source::definitions(&state, file).map_err(invalid)?;
        validate(&defs, previous).map_err(invalid)
    }

    fn applied(&self, outcome: std::result::Result<&Report, &Error>) {
        let inner = &self.inner;
        let mut p = lock(&inner.progress);
        p.applied = p.loading;
        p.error = outcome.err().map(ToString::to_string);
        inner.applied.notify_all();
    }

    fn start(&self, reload: Waker) -> Result<()> {
        let inner = &self.inner;
        let _ = inner.reload.set(reload);
        let Some(listener) = lock(&inner.listener).take() else {
            return Ok(());
        };
        let handler = Arc::clone(inner);
        http::serve(listener, Arc::new(move |r: &Request| handler.handle(r)))
            .map_err(|e| Error::io("starting the plugin server", e))?;
        logging::info(
            "serving Docker's remote network driver protocol",
            &[
                ("socket", inner.options.socket.display().to_string().into()),
                ("state", inner.state_path.display().to_string().into()),
            ],
        );
        Ok(())
    }

    fn tick(&self) {
        if self.inner.collect_garbage()
            && let Some(w) = self.inner.reload.get()
        {
            w.wake();
        }
    }

    fn stop(&self) {
        let _ = std::fs::remove_file(&self.inner.options.socket);
        if let Some(spec) = &self.inner.options.spec {
            let _ = std::fs::remove_file(spec);
        }
    }
}

impl Inner {
    fn read_file(&self) -> Result<DefinitionsFile> {
        let Some(path) = &self.file else {
            return Ok(DefinitionsFile::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        file::parse(&text).map_err(|problem| {
            Error::Invalid(Invalid {
                file: path.display().to_string(),
                problems: vec![problem],
            })
        })
    }

    fn snapshot(&self) -> State {
        lock(&self.state).clone()
    }

    /// Checks a state as the loop will: merged with the file, validated.
    fn check(&self, state: &State) -> std::result::Result<Model, String> {
        let file = self.read_file().map_err(|e| e.to_string())?;
        let previous = agent::previous(&self.pins);
        let defs = source::definitions(&live(state), file).map_err(|p| render(&p))?;
        validate(&defs, &previous).map_err(|p| render(&p))
    }

    fn save(&self, next: State) -> std::result::Result<(), String> {
        next.save(&self.state_path).map_err(|e| e.to_string())?;
        *lock(&self.state) = next;
        Ok(())
    }

    /// Has the agent's loop apply the state saved last, and waits until it has.
    fn apply(&self) -> std::result::Result<(), String> {
        let Some(waker) = self.reload.get() else {
            return Err("the agent is not running its loop".to_owned());
        };
        let wanted = {
            let mut p = lock(&self.progress);
            p.requested += 1;
            p.requested
        };
        waker.wake();
        let deadline = Instant::now() + APPLY_TIMEOUT;
        let mut p = lock(&self.progress);
        while p.applied < wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the agent did not apply the change within {} s",
                    APPLY_TIMEOUT.as_secs()
                ));
            }
            p = self
                .applied
                .wait_timeout(p, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        match &p.error {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        }
    }

    /// Validates, saves and applies; a failure to apply is logged, not returned (the
    /// state is what Docker asked for, and the next reconcile tries again).
    fn commit(&self, call: &str, next: State) -> std::result::Result<(), String> {
        self.check(&next)?;
        self.save(next)?;
        if let Err(e) = self.apply() {
            logging::warn(
                "applying a Docker call failed",
                &[("call", call.into()), ("error", e.into())],
            );
        }
        Ok(())
    }

    fn handle(&self, request: &Request) -> Response {
        let json = |status: u16, body: Vec<u8>| Response {
            status,
            content_type: proto::CONTENT_TYPE,
            body,
        };
        if request.method != "POST" {
            return json(405, b"{\"Err\":\"POST only\"}".to_vec());
        }
        let call = request.path.trim_start_matches('/');
        let answer = match call {
            "Plugin.Activate" => to_json(&proto::ActivateResponse {
                implements: vec!["NetworkDriver"],
            }),
            "NetworkDriver.GetCapabilities" => to_json(&proto::CapabilitiesResponse {
                scope: "local",
                connectivity_scope: "local",
            }),
            "NetworkDriver.CreateNetwork" => self.call(call, request, Self::create_network),
            "NetworkDriver.DeleteNetwork" => self.call(call, request, Self::delete_network),
            "NetworkDriver.CreateEndpoint" => self.call(call, request, Self::create_endpoint),
            "NetworkDriver.DeleteEndpoint" => self.call(call, request, Self::delete_endpoint),
            "NetworkDriver.EndpointOperInfo" => self.call(call, request, Self::endpoint_info),
            "NetworkDriver.Join" => self.call(call, request, Self::join),
            "NetworkDriver.Leave" => self.call(call, request, Self::leave),
            "NetworkDriver.ProgramExternalConnectivity" => {
                self.call(call, request, Self::program_external)
            }
            "NetworkDriver.RevokeExternalConnectivity" => {
                self.call(call, request, Self::revoke_external)
            }
            // Node discovery (swarm) concerns global-scope drivers only.
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => to_json(&Empty {}),
            // What Go's mux answers, and what Docker takes for "not implemented".
            _ => {
                return Response {
                    status: 404,
                    content_type: "text/plain; charset=utf-8",
                    body: b"404 page not found\n".to_vec(),
                };
            }
        };
        json(200, answer)
    }

    /// Parses a call's body, runs it, and answers its result or `{"Err": ...}`.
    fn call<Q, A>(
        &self,
        call: &str,
        request: &Request,
        f: fn(&Self, Q) -> std::result::Result<A, String>,
    ) -> Vec<u8>
    where
        Q: for<'de> serde::Deserialize<'de>,
        A: Serialize,
    {
        let started = Instant::now();
        let result = match serde_json::from_slice::<Q>(&request.body) {
            Ok(q) => f(self, q),
            Err(e) => Err(format!("malformed {call} request: {e}")),
        };
        let took = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(answer) => {
                logging::debug("Docker call", &[("call", call.into()), ("ms", took.into())]);
                to_json(&answer)
            }
            Err(message) => {
                logging::warn(
                    "Docker call refused",
                    &[("call", call.into()), ("error", message.clone().into())],
                );
                to_json(&proto::ErrorResponse {
                    err: format!("netbpf: {message}"),
                })
            }
        }
    }

    fn create_network(
        &self,
        req: proto::CreateNetworkRequest,
    ) -> std::result::Result<Empty, String> {
        let _call = lock(&self.calls);
        let mut next = self.snapshot();
        if next.networks.contains_key(&req.network_id) {
            return Ok(Empty {});
        }
        let ipv6 = req.ipv6_data.as_ref().is_some_and(|d| !d.is_empty());
        if ipv6 || proto::flag(&req.options, proto::OPT_ENABLE_IPV6) {
            return Err("IPv6 is not supported yet: create the network without --ipv6".to_owned());
        }
        let pool = match req.ipv4_data.as_slice() {
            [one] => one,
            [] => return Err("Docker's IPAM gave no IPv4 subnet".to_owned()),
            many => {
                return Err(format!(
                    "{} IPv4 subnets: a netbpf network has exactly one",
                    many.len()
                ));
            }
        };
        let (subnet, prefix_len) = parse_cidr(&pool.pool, "subnet")?;
        let gateway = if pool.gateway.is_empty() {
            Ipv4Addr::from((u32::from(subnet) & mask(prefix_len)) + 1)
        } else {
            parse_cidr(&pool.gateway, "gateway")?.0
        };
        let (mut icc, mut masquerade) = (true, true);
        for (key, value) in proto::generic_options(&req.options)? {
            match key.as_str() {
                "netbpf.icc" => icc = parse_bool(&key, &value)?,
                "netbpf.masquerade" => masquerade = parse_bool(&key, &value)?,
                _ => {
                    return Err(format!(
                        "unknown option {key:?} (netbpf networks take netbpf.icc and netbpf.masquerade)"
                    ));
                }
            }
        }
        let seq = next.seq();
        next.networks.insert(
            req.network_id.clone(),
            NetworkState {
                seq,
                name: short(&req.network_id).to_owned(),
                named: false,
                subnet,
                prefix_len,
                gateway,
                internal: proto::flag(&req.options, proto::OPT_INTERNAL),
                icc,
                masquerade,
                created: now(),
            },
        );
        self.commit("CreateNetwork", next)?;
        Ok(Empty {})
    }

    fn delete_network(&self, req: proto::NetworkRequest) -> std::result::Result<Empty, String> {
        let _call = lock(&self.calls);
        let mut next = self.snapshot();
        if next.networks.remove(&req.network_id).is_none() {
            return Ok(Empty {});
        }
        next.endpoints.retain(|_, ep| ep.network != req.network_id);
        self.commit("DeleteNetwork", next)?;
        Ok(Empty {})
    }

    fn create_endpoint(
        &self,
        req: proto::CreateEndpointRequest,
    ) -> std::result::Result<proto::CreateEndpointResponse, String> {
        let _call = lock(&self.calls);
        let mut next = self.snapshot();
        let Some(net) = next.networks.get(&req.network_id) else {
            return Err(format!(
                "network {} is not one netbpf knows (made while netbpf was not running? remove it and create it again)",
                short(&req.network_id)
            ));
        };
        let iface = req.interface.unwrap_or_default();
        if !iface.address_ipv6.is_empty() {
            return Err("IPv6 addresses are not supported yet".to_owned());
        }
        if iface.address.is_empty() {
            return Err("no IPv4 address: Docker's IPAM gave none".to_owned());
        }
        let (ip, _) = parse_cidr(&iface.address, "address")?;
        let (mac, answer) = if iface.mac_address.is_empty() {
            let mac = format_mac(&mac_from_ip(ip));
            (mac.clone(), Some(mac))
        } else {
            (iface.mac_address.to_ascii_lowercase(), None)
        };
        let internal = net.internal;
        let wanted = proto::port_bindings(&req.options)?;
        // Docker's IPAM hands out an address only when it is free: whoever held it here is
        // an endpoint Docker forgot.
        let network = req.network_id.clone();
        next.endpoints
            .retain(|id, ep| *id == req.endpoint_id || !(ep.network == network && ep.ip == ip));
        let ports = if internal {
            Vec::new()
        } else {
            port_specs(&wanted, &self.ports_taken(&next, &req.endpoint_id))?
        };
        let seq = next.seq();
        next.endpoints.insert(
            req.endpoint_id.clone(),
            EndpointState {
                seq,
                network,
                ip,
                mac,
                created: now(),
                ports,
                join: None,
            },
        );
        // Not in the model until it joins: saved only, unless it replaced a joined one.
        let replaced_joined = lock(&self.state)
            .endpoints
            .values()
            .any(|ep| ep.join.is_some() && ep.ip == ip && ep.network == req.network_id);
        if replaced_joined {
            self.commit("CreateEndpoint", next)?;
        } else {
            self.save(next)?;
        }
        Ok(proto::CreateEndpointResponse {
            interface: answer.map(|mac_address| proto::EndpointInterface {
                mac_address,
                ..Default::default()
            }),
        })
    }

    /// Host ports held by other endpoints and by whatever the kernel publishes.
    fn ports_taken(&self, state: &State, except: &str) -> BTreeSet<(u16, Proto)> {
        let mut taken = BTreeSet::new();
        for (id, ep) in &state.endpoints {
            if id == except {
                continue;
            }
            for spec in &ep.ports {
                if let Ok(p) = crate::config::ports::parse_port_spec(spec)
                    && let Some((first, last)) = p.host_ports
                {
                    taken.extend((first..=last).map(|port| (port, p.proto)));
                }
            }
        }
        let previous = agent::previous(&self.pins);
        taken.extend(
            previous
                .published
                .iter()
                .map(|((_, _, proto, _), port)| (*port, *proto)),
        );
        taken
    }

    fn delete_endpoint(&self, req: proto::EndpointRequest) -> std::result::Result<Empty, String> {
        let _call = lock(&self.calls);
        let mut next = self.snapshot();
        let Some(ep) = next.endpoints.remove(&req.endpoint_id) else {
            return Ok(Empty {});
        };
        if ep.join.is_some() {
            self.commit("DeleteEndpoint", next)?;
        } else {
            self.save(next)?;
        }
        Ok(Empty {})
    }

    fn endpoint_info(
        &self,
        req: proto::EndpointRequest,
    ) -> std::result::Result<proto::EndpointInfoResponse, String> {
        let state = self.snapshot();
        let mut value = BTreeMap::new();
        if let Some(ep) = state.endpoints.get(&req.endpoint_id) {
            value.insert("netbpf.address".to_owned(), Value::from(ep.ip.to_string()));
            value.insert("netbpf.mac".to_owned(), Value::from(ep.mac.clone()));
            if let Some(j) = &ep.join {
                value.insert("netbpf.container".to_owned(), Value::from(j.name.clone()));
                value.insert(
                    "netbpf.veth".to_owned(),
                    Value::from(ifaces::host_ifname(&j.name)),
                );
            }
        }
        Ok(proto::EndpointInfoResponse { value })
    }

    fn join(&self, req: proto::JoinRequest) -> std::result::Result<proto::JoinResponse, String> {
        let _call = lock(&self.calls);
        let mut next = self.snapshot();
        let Some(ep) = next.endpoints.get(&req.endpoint_id) else {
            return Err(format!(
                "endpoint {} is not one netbpf knows",
                short(&req.endpoint_id)
            ));
        };
        let Some(net) = next.networks.get(&ep.network) else {
            return Err(format!(
                "network {} is not one netbpf knows",
                short(&ep.network)
            ));
        };
        let answer = |net: &NetworkState, joined: &Joined| proto::JoinResponse {
            interface_name: proto::InterfaceName {
                src_name: joined.ifname.clone(),
                dst_prefix: "eth".to_owned(),
            },
            gateway: if net.internal {
                String::new()
            } else {
                net.gateway.to_string()
            },
            disable_gateway_service: false,
        };
        if let Some(joined) = &ep.join
            && joined.sandbox == Path::new(&req.sandbox_key)
        {
            return Ok(answer(net, joined));
        }
        let network_id = ep.network.clone();

        let who = self.identify(&mut next, &network_id, &req.endpoint_id);
        let net = next
            .networks
            .get(&network_id)
            .ok_or_else(|| "the network went away".to_owned())?
            .clone();
        let name = self.model_name(&next, &who, &net.name, &req.endpoint_id)?;
        let joined = Joined {
            name: name.clone(),
            container_id: who.id,
            container_name: who.name,
            labels: who.labels,
            sandbox: PathBuf::from(&req.sandbox_key),
            ifname: format!("nbc{:08x}", fnv1a(req.endpoint_id.as_bytes())),
            at: now(),
            wired: false,
            published: false,
        };
        let response = answer(&net, &joined);
        let before = next.clone();
        if let Some(ep) = next.endpoints.get_mut(&req.endpoint_id) {
            ep.join = Some(joined.clone());
        }
        self.check(&next)?;
        self.save(next.clone())?;
        let applied = self.apply();
        // Wired means both ends exist: the reconciler removes a veth it could not wire.
        let wired = ifaces::ifindex(&joined.ifname).is_ok()
            && ifaces::ifindex(&ifaces::host_ifname(&name)).is_ok();
        if !wired {
            let why = applied
                .err()
                .unwrap_or_else(|| "the veth is not there".to_owned());
            self.save(before)?;
            let _ = self.apply();
            return Err(format!("wiring container {name:?}: {why}"));
        }
        if let Err(e) = applied {
            logging::warn(
                "reconcile after Join failed elsewhere",
                &[("container", name.clone().into()), ("error", e.into())],
            );
        }
        if let Some(j) = next
            .endpoints
            .get_mut(&req.endpoint_id)
            .and_then(|ep| ep.join.as_mut())
        {
            j.wired = true;
        }
        self.save(next)?;
        logging::info(
            "container joined",
            &[
                ("container", name.into()),
                ("network", net.name.into()),
                ("veth", joined.ifname.into()),
            ],
        );
        Ok(response)
    }

    /// What Docker calls the joining container (the endpoint is named after it) and its
    /// `netbpf.*` labels, from the Engine API; the network gets Docker's name on the way
    /// (see [`Inner::name_network`]). Whatever the API cannot tell stays unknown.
    fn identify(&self, state: &mut State, network_id: &str, endpoint_id: &str) -> Identity {
        let mut who = Identity::default();
        let Some(engine) = &self.engine else {
            return who;
        };
        match engine.network(network_id) {
            Ok(Some(info)) => {
                self.name_network(state, network_id, &info.name);
                who.name = info
                    .containers
                    .values()
                    .find(|c| c.endpoint_id == endpoint_id)
                    .map(|c| c.name.clone());
            }
            Ok(None) => {}
            Err(e) => logging::warn("no names from the Docker API", &[("error", e.into())]),
        }
        if let Some(name) = &who.name {
            match engine.container_named(name) {
                Ok(Some(c)) => {
                    who.id = Some(c.id);
                    who.labels = c
                        .labels
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(k, _)| source::is_netbpf_label(k))
                        .collect();
                }
                Ok(None) => {}
                Err(e) => logging::warn("no labels from the Docker API", &[("error", e.into())]),
            }
        }
        who
    }

    /// The container's name in netbpf's model: Docker's (or, unknown, `docker-` and the
    /// endpoint's short id), suffixed with the network's name when another container or
    /// endpoint has it already (a container on two networks), or with the endpoint's id.
    fn model_name(
        &self,
        state: &State,
        who: &Identity,
        network: &str,
        endpoint_id: &str,
    ) -> std::result::Result<String, String> {
        let mut taken: HashSet<String> = state
            .joined()
            .filter(|(id, _, _)| *id != endpoint_id)
            .map(|(_, _, j)| j.name.clone())
            .collect();
        let file = self.read_file().map_err(|e| e.to_string())?;
        taken.extend(file.container.into_iter().map(|c| c.name));
        let wanted = who
            .name
            .clone()
            .unwrap_or_else(|| format!("docker-{}", short(endpoint_id)));
        let name = unique_name(&wanted, network, &taken);
        if taken.contains(&name) {
            return Ok(unique_name(&wanted, short(endpoint_id), &taken));
        }
        Ok(name)
    }

    /// Gives a network Docker's name, unless it has one already or containers are wired
    /// under the one it has (a network's name is part of its identity in the kernel).
    fn name_network(&self, state: &mut State, id: &str, docker_name: &str) {
        let busy = state
            .endpoints
            .values()
            .any(|ep| ep.network == id && ep.join.as_ref().is_some_and(|j| j.wired));
        let Some(net) = state.networks.get(id) else {
            return;
        };
        if net.named || busy || docker_name.is_empty() {
            return;
        }
        let mut taken: HashSet<String> = state
            .networks
            .iter()
            .filter(|(other, _)| *other != id)
            .map(|(_, n)| n.name.clone())
            .collect();
        if let Ok(file) = self.read_file() {
            taken.extend(file.network.into_iter().map(|n| n.name));
        }
        taken.insert("none".to_owned());
        let name = unique_name(docker_name, short(id), &taken);
        if let Some(net) = state.networks.get_mut(id) {
            net.name = name;
            net.named = true;
        }
    }

    fn leave(&self, req: proto::EndpointRequest) -> std::result::Result<Empty, String> {
        let _call = lock(&self.calls);
        let mut next = self.snapshot();
        let Some(ep) = next.endpoints.get_mut(&req.endpoint_id) else {
            return Ok(Empty {});
        };
        let Some(joined) = ep.join.take() else {
            return Ok(Empty {});
        };
        self.commit("Leave", next)?;
        logging::info("container left", &[("container", joined.name.into())]);
        Ok(Empty {})
    }

    fn program_external(
        &self,
        req: proto::ExternalConnectivityRequest,
    ) -> std::result::Result<Empty, String> {
        let _call = lock(&self.calls);
        let mut next = self.snapshot();
        let internal = next
            .endpoints
            .get(&req.endpoint_id)
            .and_then(|ep| next.networks.get(&ep.network))
            .is_none_or(|n| n.internal);
        if internal {
            return Ok(Empty {});
        }
        let ports = if req.options.contains_key(proto::OPT_PORTMAP) {
            let wanted = proto::port_bindings(&req.options)?;
            Some(port_specs(
                &wanted,
                &self.ports_taken(&next, &req.endpoint_id),
            )?)
        } else {
            None
        };
        let Some(ep) = next.endpoints.get_mut(&req.endpoint_id) else {
            return Ok(Empty {});
        };
        if let Some(ports) = ports {
            ep.ports = ports;
        }
        let Some(joined) = ep.join.as_mut() else {
            return Ok(Empty {});
        };
        if joined.published {
            return Ok(Empty {});
        }
        joined.published = true;
        if ep.ports.is_empty() {
            self.save(next)?;
            return Ok(Empty {});
        }
        self.commit("ProgramExternalConnectivity", next)?;
        Ok(Empty {})
    }

    fn revoke_external(&self, req: proto::EndpointRequest) -> std::result::Result<Empty, String> {
        let _call = lock(&self.calls);
        let mut next = self.snapshot();
        let Some(ep) = next.endpoints.get_mut(&req.endpoint_id) else {
            return Ok(Empty {});
        };
        let Some(joined) = ep.join.as_mut() else {
            return Ok(Empty {});
        };
        if !joined.published {
            return Ok(Empty {});
        }
        joined.published = false;
        if ep.ports.is_empty() {
            self.save(next)?;
        } else {
            self.commit("RevokeExternalConnectivity", next)?;
        }
        Ok(Empty {})
    }

    /// Forgets what Docker forgot: joined endpoints whose veth is gone (their sandbox went
    /// with it) or whose container end sits in the host namespace long after Join (Docker
    /// took it back without a Leave), endpoints never joined for an hour, and networks
    /// the Engine API no longer knows. Gives networks Docker's names where it can. True
    /// if the model changed (the agent then reloads). Skipped while a call runs.
    fn collect_garbage(&self) -> bool {
        let Ok(_call) = self.calls.try_lock() else {
            return false;
        };
        let mut next = self.snapshot();
        let now = now();
        let mut reload = false;
        let mut stale = Vec::new();
        for (id, ep) in &mut next.endpoints {
            let Some(j) = ep.join.as_mut() else {
                if now.saturating_sub(ep.created) > UNJOINED_TTL {
                    stale.push((id.clone(), "never joined".to_owned(), false));
                }
                continue;
            };
            let host_there = ifaces::ifindex(&ifaces::host_ifname(&j.name)).is_ok();
            let end_here = ifaces::ifindex(&j.ifname).is_ok();
            if !j.wired && host_there {
                j.wired = true;
            }
            if j.wired && !host_there {
                stale.push((
                    id.clone(),
                    "its veth is gone with its sandbox".to_owned(),
                    true,
                ));
            } else if j.wired && end_here && now.saturating_sub(j.at) > HANDOVER_GRACE {
                stale.push((
                    id.clone(),
                    "Docker took its veth back without a Leave".to_owned(),
                    true,
                ));
            }
        }
        for (id, why, joined) in stale {
            if let Some(ep) = next.endpoints.remove(&id) {
                reload |= joined;
                let name = ep.join.map_or_else(|| short(&id).to_owned(), |j| j.name);
                logging::info(
                    "forgot a Docker endpoint",
                    &[("endpoint", name.into()), ("reason", why.into())],
                );
            }
        }
        if let Some(engine) = &self.engine {
            let ids: Vec<String> = next.networks.keys().cloned().collect();
            for id in ids {
                let in_use = next.endpoints.values().any(|ep| ep.network == id);
                let young = next
                    .networks
                    .get(&id)
                    .is_some_and(|n| now.saturating_sub(n.created) < NETWORK_GRACE);
                match engine.network(&id) {
                    Ok(None) if !in_use && !young => {
                        if let Some(net) = next.networks.remove(&id) {
                            reload = true;
                            logging::info(
                                "forgot a network Docker no longer has",
                                &[("network", net.name.into())],
                            );
                        }
                    }
                    Ok(Some(info)) => {
                        let was = next.networks.get(&id).map(|n| n.name.clone());
                        self.name_network(&mut next, &id, &info.name);
                        reload |= next.networks.get(&id).map(|n| n.name.clone()) != was;
                    }
                    Ok(None) => {}
                    // Docker is down or busy: nothing to learn now.
                    Err(_) => break,
                }
            }
        }
        if next != self.snapshot()
            && let Err(e) = self.save(next)
        {
            logging::warn(
                "saving the Docker driver's state failed",
                &[("error", e.into())],
            );
            return false;
        }
        reload
    }
}

/// The state without the endpoints whose veth vanished with their sandbox (the garbage
/// collector forgets them for good on its next round): their containers are not wired
/// again.
fn live(state: &State) -> State {
    let mut live = state.clone();
    live.endpoints.retain(|_, ep| {
        ep.join
            .as_ref()
            .is_none_or(|j| !j.wired || ifaces::ifindex(&ifaces::host_ifname(&j.name)).is_ok())
    });
    live
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_when_free_and_suffixed_when_not() {
        let taken: HashSet<String> = ["web1".to_owned()].into();
        assert_eq!(unique_name("web2", "front", &taken), "web2");
        assert_eq!(unique_name("web1", "front", &taken), "web1.front");
        let long = "a-very-long-container-name-from-compose-1";
        let name = unique_name(long, "0123456789ab", &taken);
        assert_eq!(name, "a-very-long-contai.0123456789ab");
        assert!(name.len() <= MAX_NAME, "{name}");
        assert_eq!(unique_name("we/ird", "x", &taken), "we_ird");
    }

    #[test]
    fn host_port_ranges_take_a_free_port() {
        let wanted = [
            WantedPort {
                host_ip: None,
                host_ports: Some((8000, 8002)),
                container_port: 80,
                proto: Proto::Tcp,
            },
            WantedPort {
                host_ip: None,
                host_ports: Some((8000, 8002)),
                container_port: 81,
                proto: Proto::Tcp,
            },
            WantedPort {
                host_ip: Some(Ipv4Addr::new(198, 18, 0, 1)),
                host_ports: None,
                container_port: 53,
                proto: Proto::Udp,
            },
            WantedPort {
                host_ip: None,
                host_ports: Some((9000, 9000)),
                container_port: 90,
                proto: Proto::Tcp,
            },
        ];
        let taken = [(8000, Proto::Tcp)].into();
        assert_eq!(
            port_specs(&wanted, &taken).expect("room left"),
            [
                "8001:80/tcp",
                "8002:81/tcp",
                "198.18.0.1::53/udp",
                "9000:90/tcp"
            ]
        );
        let taken = [(8000, Proto::Tcp), (8001, Proto::Tcp), (8002, Proto::Tcp)].into();
        assert_eq!(
            port_specs(&wanted[..1], &taken).expect_err("full"),
            "port 80/tcp: every host port of 8000-8002 is published already"
        );
    }

    /// A driver with everything under a temporary directory, its loop not running (calls
    /// that change the kernel save their state and log that nothing applied it).
    fn driver(tag: &str) -> (Driver, PathBuf) {
        let dir = std::env::temp_dir().join(format!("netbpf-driver-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = Options {
            socket: dir.join("plugins/netbpf.sock"),
            spec: Some(dir.join("spec/netbpf.spec")),
            api: None,
            state_dir: dir.join("state"),
        };
        let driver = Driver::new(None, &PinDir::new(dir.join("pins")), options).expect("driver");
        (driver, dir)
    }

    fn call(driver: &Driver, path: &str, body: &str) -> (u16, String) {
        let response = driver.inner.handle(&Request {
            method: "POST".into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
            close: false,
        });
        (
            response.status,
            String::from_utf8(response.body).expect("UTF-8"),
        )
    }

    #[test]
    fn handshake_and_unknown_calls_answer_as_docker_expects() {
        let (driver, dir) = driver("handshake");
        assert_eq!(
            std::fs::read_to_string(dir.join("spec/netbpf.spec")).expect("spec written"),
            format!("unix://{}\n", dir.join("plugins/netbpf.sock").display())
        );
        assert_eq!(
            call(&driver, "/Plugin.Activate", ""),
            (200, r#"{"Implements":["NetworkDriver"]}"#.to_owned())
        );
        assert_eq!(
            call(&driver, "/NetworkDriver.GetCapabilities", ""),
            (
                200,
                r#"{"Scope":"local","ConnectivityScope":"local"}"#.to_owned()
            )
        );
        assert_eq!(
            call(&driver, "/NetworkDriver.AllocateNetwork", "{}"),
            (404, "404 page not found\n".to_owned())
        );
        assert_eq!(
            call(&driver, "/NetworkDriver.DiscoverNew", "{}"),
            (200, "{}".to_owned())
        );
        let (status, body) = call(&driver, "/NetworkDriver.CreateNetwork", "{nope");
        assert_eq!(status, 200);
        assert!(
            body.starts_with(r#"{"Err":"netbpf: malformed NetworkDriver.CreateNetwork request"#),
            "{body}"
        );
        driver.stop();
        assert!(!dir.join("plugins/netbpf.sock").exists());
        assert!(!dir.join("spec/netbpf.spec").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn networks_and_endpoints_are_checked_and_saved() {
        let (driver, dir) = driver("calls");
        let network = |id: &str, options: &str, ipv6: &str| {
            format!(
                r#"{{"NetworkID":"{id}","Options":{{{options}}},"IPv4Data":[{{"AddressSpace":"LocalDefault","Gateway":"198.18.50.1/24","Pool":"198.18.50.0/24"}}],"IPv6Data":[{ipv6}]}}"#
            )
        };
        let err = |body: &str| {
            serde_json::from_str::<Value>(body).expect("JSON")["Err"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        let (_, body) = call(
            &driver,
            "/NetworkDriver.CreateNetwork",
            &network(
                "n1",
                r#""com.docker.network.generic":{"netbpf.icc":"maybe"}"#,
                "",
            ),
        );
        assert_eq!(
            err(&body),
            "netbpf: option netbpf.icc: \"maybe\" is neither true nor false"
        );
        let (_, body) = call(
            &driver,
            "/NetworkDriver.CreateNetwork",
            &network("n1", r#""com.docker.network.generic":{"color":"red"}"#, ""),
        );
        assert_eq!(
            err(&body),
            "netbpf: unknown option \"color\" (netbpf networks take netbpf.icc and netbpf.masquerade)"
        );
        let (_, body) = call(
            &driver,
            "/NetworkDriver.CreateNetwork",
            &network("n1", "", r#"{"Pool":"fd00::/64"}"#),
        );
        assert!(err(&body).contains("IPv6 is not supported yet"), "{body}");
        let (_, body) = call(
            &driver,
            "/NetworkDriver.CreateNetwork",
            &network(
                "n1",
                r#""com.docker.network.generic":{"netbpf.icc":"false"},"com.docker.network.internal":true"#,
                "",
            ),
        );
        assert_eq!(body, "{}");
        let saved = State::load(&dir.join("state/docker.json")).expect("saved");
        let net = &saved.networks["n1"];
        assert_eq!((net.icc, net.internal, net.masquerade), (false, true, true));
        assert_eq!(net.gateway, Ipv4Addr::new(198, 18, 50, 1));

        let endpoint = |network: &str, id: &str, mac: &str| {
            format!(
                r#"{{"NetworkID":"{network}","EndpointID":"{id}","Interface":{{"Address":"198.18.50.2/24","AddressIPv6":"","MacAddress":"{mac}"}},"Options":{{}}}}"#
            )
        };
        let (_, body) = call(
            &driver,
            "/NetworkDriver.CreateEndpoint",
            &endpoint("n9", "e1", ""),
        );
        assert!(
            err(&body).contains("network n9 is not one netbpf knows"),
            "{body}"
        );
        // The MAC Docker left empty is answered; an address is never echoed.
        let (_, body) = call(
            &driver,
            "/NetworkDriver.CreateEndpoint",
            &endpoint("n1", "e1", ""),
        );
        assert_eq!(body, r#"{"Interface":{"MacAddress":"02:42:c6:12:32:02"}}"#);
        // The same address again: the first holder was forgotten by Docker.
        let (_, body) = call(
            &driver,
            "/NetworkDriver.CreateEndpoint",
            &endpoint("n1", "e2", "02:42:00:00:00:09"),
        );
        assert_eq!(body, "{}");
        let saved = State::load(&dir.join("state/docker.json")).expect("saved");
        assert_eq!(saved.endpoints.keys().collect::<Vec<_>>(), ["e2"]);
        assert_eq!(saved.endpoints["e2"].mac, "02:42:00:00:00:09");
        let (_, body) = call(
            &driver,
            "/NetworkDriver.DeleteEndpoint",
            r#"{"NetworkID":"n1","EndpointID":"nope"}"#,
        );
        assert_eq!(body, "{}", "deleting what is not there is done");
        driver.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn options_are_checked() {
        assert_eq!(parse_bool("netbpf.icc", "false"), Ok(false));
        assert_eq!(
            parse_bool("netbpf.icc", "maybe"),
            Err("option netbpf.icc: \"maybe\" is neither true nor false".to_owned())
        );
        assert_eq!(
            parse_cidr("198.18.50.1/24", "gateway"),
            Ok((Ipv4Addr::new(198, 18, 50, 1), 24))
        );
        assert!(parse_cidr("fe80::1/64", "gateway").is_err());
    }
}
