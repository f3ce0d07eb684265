//! `cargo xtask bench`: netbpf against the kernel-native path it replaces, measured in the
//! same run on identical namespaces, the targets of a scenario alternating round by round
//! (A B C A B C ...) so that a noisy machine hurts all alike. Reports medians, min-max and
//! the per-round ratio netbpf/baseline, in target/bench/report.md and results.json.
//!
//! Scenarios (`--only NAME`):
//! - `east-west`: container to container, on a bare bridge, on Docker's path, and netbpf;
//! - `north-south`: an outside client to a published port, Docker's DNAT against netbpf's
//!   uplink program at tc and at XDP;
//! - `hairpin`: a container to another's port published on the host's address, Docker's
//!   hairpin NAT against netbpf;
//! - `host-localhost`: a host process to 127.0.0.1:PORT, docker-proxy-like userspace
//!   proxies against netbpf's socket programs;
//! - `vip`: a container, and an outside client, to a VIP: kube-proxy's iptables rules
//!   against netbpf (its uplink at tc and at XDP);
//!
//! each of those with TCP latency p50/p99 (sockperf), new connections/s and keep-alive
//! requests/s (wrk to nginx), single-stream throughput (iperf3) and UDP packets/s at <0.1%
//! loss (iperf3 -u and a short rate search); then
//! - `services`: a container to a VIP at 1, 100, 1,000 and 10,000 services, kube-proxy's
//!   iptables rules against netbpf's services, and the time to apply and change them;
//! - `ports`: outside to a published port at 1, 1,000 and 5,000 ports, Docker's rules against
//!   netbpf, and the time to publish them and to change one;
//! - `prog-cost`: per-packet cost of the programs' paths under BPF_PROG_TEST_RUN (and of
//!   new flows at 1 to 10,000 ports and services, and of the monitor's event path);
//! - `resources`: the agent's memory idle and with 10,000 services, its idle CPU time, the
//!   maps' memory;
//! - `inspect`: how long `netbpf show` takes with 10,000 services and 100,000 flows;
//! - `docker`: through a real Docker Engine, its bridge driver against netbpf's driver
//!   (when docker.io is installed; left out of `--quick` unless asked for by name).
//!
//! Progress lines name the scenario, round and target with the time since the start; the
//! report (target/bench/report.md, results.json, SVG charts) sets every target of issues
//! 3 to 7 beside its measured value.

mod charts;
mod docker;
mod inspect;
mod labs;
mod ports;
mod proxy;
mod report;
mod resources;
mod services;
mod tools;
mod vip;

use std::{
    collections::BTreeMap,
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
};

use anyhow::{Context as _, bail};
use netbpf_common::stats::{Hook, Outcome};
use netbpf_tests::{
    TempDir,
    cgroup::{Cgroup, cgroup2_root},
    lab::{HOST_UPLINK_IP, Lab, OUTSIDE_IF},
    netns, unique_prefix,
};

pub use proxy::serve as serve_proxy;
use tools::{Client, HTTP_PORT, IPERF_PORT, SOCKPERF_PORT};

use crate::{
    cmd::{self, step},
    setup,
};

/// The latency figures (p50 with issue 3's and 4's target, p99), measured with `how`.
fn latency_metrics(how: &'static str) -> [Metric; 2] {
    [
        Metric::new(
            "TCP request/response latency p50",
            how,
            "µs",
            false,
            Some(0.8),
        ),
        Metric::new("TCP request/response latency p99", how, "µs", false, None),
    ]
}

const BENCH_PREFIX: &str = "nbbench";

/// What `--only` accepts, in the order a full run measures them.
pub const SCENARIOS: [&str; 11] = [
    "east-west",
    "north-south",
    "hairpin",
    "host-localhost",
    vip::ID,
    "services",
    "ports",
    "prog-cost",
    resources::ID,
    inspect::ID,
    docker::DOCKER.id,
];

pub struct Options {
    pub quick: bool,
    pub only: Option<String>,
}

/// Who is measured in a scenario, and against what.
pub struct Scenario {
    /// The `--only` name.
    pub id: &'static str,
    pub title: &'static str,
    /// What the targets are, for the report.
    pub about: &'static str,
    /// Every target, in the order of the report's columns and of each round.
    pub targets: &'static [&'static str],
    /// The kernel-native path netbpf replaces: the ratios that decide are against it.
    pub baseline: &'static str,
    /// netbpf's variants, each compared with the baseline.
    pub contenders: &'static [&'static str],
    /// Also reported: the floor of any path like the baseline, each contender against it.
    pub floor: Option<&'static str>,
}

const EAST_WEST: Scenario = Scenario {
    id: "east-west",
    title: "Container to container",
    about: "Two containers of one network. `bridge` is a bare Linux bridge (the floor); \
            `docker` is Docker's path, the bridge with bridged frames through netfilter and \
            dockerd's iptables rules; `netbpf` is the same containers wired by netbpf. The \
            ratio that decides is netbpf/docker.",
    targets: &["bridge", "docker", "netbpf"],
    baseline: "docker",
    contenders: &["netbpf"],
    floor: Some("bridge"),
};

const NORTH_SOUTH: Scenario = Scenario {
    id: "north-south",
    title: "Outside to a published port",
    about: "A client namespace joined to the host namespace by a veth (the uplink) reaches a \
            container's ports published as Docker's `-p 8080:80` (and the tools' own ports) at \
            the host's uplink address. `docker` is Docker's path: the Linux bridge, \
            br_netfilter and dockerd's iptables rules for the published ports (nat DOCKER DNAT, \
            filter DOCKER ACCEPT, MASQUERADE); `netbpf-tc` translates in netbpf's tc program on \
            the uplink, `netbpf-xdp` in its XDP program there. The client sends with tx \
            checksum offload off on every target (XDP on a veth loses partial checksums, and a \
            physical NIC delivers complete ones): the same sender for all three. The last \
            figure gives docker and netbpf-tc the veth's default sender instead (checksum \
            offload and TSO on), which XDP on a veth cannot take.",
    targets: &["docker", "netbpf-tc", "netbpf-xdp"],
    baseline: "docker",
    contenders: &["netbpf-tc", "netbpf-xdp"],
    floor: None,
};

const HAIRPIN: Scenario = Scenario {
    id: "hairpin",
    title: "Container to host-IP:published port (hairpin)",
    about: "A client container reaches another container's ports published as `-p 8080:80` \
            (and the tools' ports, TCP and UDP) at the host's own address (its uplink's). \
            `docker` is Docker's kernel path for it (dockerd with `userland-proxy: false`): \
            the bridge in hairpin mode, br_netfilter, the DNAT rules taking traffic from the \
            bridge too, the server's replies bridged to the client and reverse-translated by \
            conntrack; `netbpf` is netbpf's hairpin in `from_container` (only the destination \
            translated, as Docker's: the server sees the client, and its replies are looked \
            up in conntrack on its flagged veth).",
    targets: &["docker", "netbpf"],
    baseline: "docker",
    contenders: &["netbpf"],
    floor: None,
};

const HOST_LOCALHOST: Scenario = Scenario {
    id: "host-localhost",
    title: "Host localhost to a published port",
    about: "A process of the host namespace (the tools' clients, in a cgroup of their own) \
            to 127.0.0.1:8080, published from a container's port 80 (and the tools' ports, TCP \
            and UDP). `proxy` is docker-proxy's way: a userspace proxy per published port on \
            127.0.0.1 in the host namespace, one thread per TCP connection and direction \
            copying bytes to the container, and for UDP a socket per client connected to the \
            container (Docker's bridge and iptables rules beneath); `netbpf` is netbpf's socket \
            programs on the client's cgroup, which connect a socket straight to the container \
            (connect4; sendmsg4/recvmsg4 for unconnected UDP).",
    targets: &["proxy", "netbpf"],
    baseline: "proxy",
    contenders: &["netbpf"],
    floor: None,
};

/// One figure measured on every target of a scenario, round by round.
pub struct Metric {
    pub name: &'static str,
    /// How the figure was measured: the tool and its settings.
    pub how: &'static str,
    pub unit: &'static str,
    /// Whether a higher figure is better (rates) or lower (latency).
    pub higher_is_better: bool,
    /// The ratio contender/baseline the design promises, and in which direction.
    pub target: Option<f64>,
    /// A bound on the contenders' own median (in `unit`), in the same direction.
    pub limit: Option<f64>,
    pub values: BTreeMap<&'static str, Vec<f64>>,
}

impl Metric {
    fn new(
        name: &'static str,
        how: &'static str,
        unit: &'static str,
        higher_is_better: bool,
        target: Option<f64>,
    ) -> Self {
        Metric {
            name,
            how,
            unit,
            higher_is_better,
            target,
            limit: None,
            values: BTreeMap::new(),
        }
    }

    /// The same with a bound on the contenders' own median.
    fn with_limit(self, limit: f64) -> Self {
        Metric {
            limit: Some(limit),
            ..self
        }
    }

    pub fn of(&self, target: &str) -> &[f64] {
        self.values.get(target).map_or(&[], Vec::as_slice)
    }

    /// `of` / `against`, round by round.
    pub fn ratios(&self, of: &str, against: &str) -> Vec<f64> {
        self.of(of)
            .iter()
            .zip(self.of(against))
            .map(|(n, b)| n / b)
            .collect()
    }

    /// Whether the median ratio `of`/`against` meets the promised target, and `of`'s
    /// median its limit (`None`: neither is promised).
    pub fn meets_target(&self, of: &str, against: &str) -> Option<bool> {
        let ratio = median(&self.ratios(of, against));
        let own = median(self.of(of));
        let within = |value: f64, bound: f64| {
            if self.higher_is_better {
                value >= bound
            } else {
                value <= bound
            }
        };
        match (self.target, self.limit) {
            (None, None) => None,
            (target, limit) => Some(
                target.is_none_or(|t| within(ratio, t)) && limit.is_none_or(|l| within(own, l)),
            ),
        }
    }
}

/// A figure computed from others, round by round (a target's rate at one service count
/// over its rate at another).
pub struct Derived {
    pub name: &'static str,
    pub how: &'static str,
    pub per_round: Vec<f64>,
    pub target: Option<f64>,
    pub higher_is_better: bool,
}

impl Derived {
    pub fn meets_target(&self) -> Option<bool> {
        let m = median(&self.per_round);
        self.target.map(|t| {
            if self.higher_is_better {
                m >= t
            } else {
                m <= t
            }
        })
    }
}

/// A scenario's figures.
pub struct Measured {
    pub scenario: &'static Scenario,
    pub metrics: Vec<Metric>,
    pub derived: Vec<Derived>,
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

pub fn run(options: Options) -> anyhow::Result<()> {
    if let Some(only) = &options.only
        && !SCENARIOS.contains(&only.as_str())
    {
        bail!(
            "unknown scenario {only:?} (known: {})",
            SCENARIOS.join(", ")
        );
    }
    started();
    setup::run()?;
    if !cmd::is_root() {
        bail!("benchmarks build network namespaces and load BPF programs: run them as root");
    }
    netns::remove_stale(BENCH_PREFIX);
    remove_stale_cgroups();
    if std::thread::available_parallelism().map_or(0, |n| n.get()) < 2 {
        bail!("benchmarks need two CPUs: clients and servers run on CPUs of their own");
    }
    let timing = Timing::new(options.quick);
    let wants = |scenario: &str| options.only.as_deref().is_none_or(|only| only == scenario);

    progress("build netbpf and the prog_cost example (release)");
    cmd::run(cmd::cargo().args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "netbpf",
        "--bin",
        "netbpf",
        "--example",
        "prog_cost",
    ]))?;
    let netbpf_bin = cmd::workspace_root().join("target/release/netbpf");

    let mut measured = Vec::new();
    let mut results = report::Extra::default();
    if wants(EAST_WEST.id) {
        measured.push(east_west(&netbpf_bin, &timing)?);
    }
    if wants(NORTH_SOUTH.id) {
        measured.push(north_south(&netbpf_bin, &timing)?);
    }
    if wants(HAIRPIN.id) {
        measured.push(hairpin(&netbpf_bin, &timing)?);
    }
    if wants(HOST_LOCALHOST.id) {
        measured.push(host_localhost(&netbpf_bin, &timing)?);
    }
    if wants(vip::ID) {
        measured.extend(vip::run(&netbpf_bin, &timing)?);
    }
    if wants(services::SERVICES.id) {
        measured.push(services::run(
            &netbpf_bin,
            options.quick,
            timing.scale_rounds,
            timing.wrk,
        )?);
    }
    if wants(ports::PORTS.id) {
        measured.push(ports::run(&netbpf_bin, options.quick, &timing)?);
    }
    if wants("prog-cost") {
        progress(
            "prog-cost: BPF_PROG_TEST_RUN, 5 runs of 1e6 repeats and of 2,000 single runs per \
             path, beside empty tc and XDP programs; then the same at 1 to 10,000 entries",
        );
        results.prog_cost = tools::prog_cost(5, 1_000_000, 2000)?;
    }
    if wants(resources::ID) {
        results.resources = resources::run(&netbpf_bin, options.quick)?;
    }
    if wants(inspect::ID) {
        results.inspect = inspect::run(&netbpf_bin, 3)?;
    }
    // A quick run of the whole suite leaves out the real Docker Engines (starting and
    // stopping two dockerds takes half a minute): `--quick --only docker` runs them.
    let docker_wanted = match options.only.as_deref() {
        Some(only) => only == docker::DOCKER.id,
        None => !options.quick,
    };
    if docker_wanted && let Some(m) = docker::run(&netbpf_bin, timing.rounds, timing.seconds)? {
        measured.push(m);
    }
    results.wall_seconds = elapsed();
    results.quick = options.quick;
    results.only = options.only.clone();
    report::write(&measured, &results, &timing)
}

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn started() {
    START.get_or_init(std::time::Instant::now);
}

/// Seconds since the run started.
fn elapsed() -> f64 {
    START.get().map_or(0.0, |s| s.elapsed().as_secs_f64())
}

/// A progress line: the time since the run started, then what it is doing.
pub fn progress(what: &str) {
    let secs = elapsed() as u64;
    step(&format!("[{:02}:{:02}] {what}", secs / 60, secs % 60));
}

/// Measures every metric on every target of `scenario` (`labs` in the order of its
/// targets), round by round, the targets taking turns. `measure` returns one value per
/// metric, in order; NaN for a figure not measured on that target.
fn measure_rounds<L>(
    scenario: &'static Scenario,
    labs: &[L],
    mut metrics: Vec<Metric>,
    rounds: usize,
    mut measure: impl FnMut(usize, &L) -> anyhow::Result<Vec<f64>>,
) -> anyhow::Result<Measured> {
    assert_eq!(labs.len(), scenario.targets.len(), "one lab per target");
    for round in 1..=rounds {
        for (i, (target, lab)) in scenario.targets.iter().zip(labs).enumerate() {
            progress(&format!(
                "{}: round {round}/{rounds}, {target}",
                scenario.title
            ));
            let values =
                measure(i, lab).with_context(|| format!("{}: {target}", scenario.title))?;
            assert_eq!(values.len(), metrics.len(), "one value per metric");
            for (metric, value) in metrics.iter_mut().zip(values) {
                if !value.is_nan() {
                    metric.values.entry(target).or_default().push(value);
                }
            }
        }
    }
    Ok(Measured {
        scenario,
        metrics,
        derived: Vec::new(),
    })
}

const SOCKPERF_HOW: &str = "sockperf TCP ping-pong, 64-byte messages, both ends busy-polling";
const CLOSE_HOW: &str = "wrk -t1 -c16 to nginx, `Connection: close`: one request per connection";
const KEEPALIVE_HOW: &str = "wrk -t1 -c16 to nginx, keep-alive connections";
const IPERF_HOW: &str = "iperf3, one TCP stream, the receiver's rate";

/// The ratio targets of a scenario's end-to-end figures (contender/baseline), from the
/// issues.
#[derive(Default, Clone, Copy)]
struct E2eTargets {
    p50: Option<f64>,
    close: Option<f64>,
    keep_alive: Option<f64>,
    throughput: Option<f64>,
}

/// The end-to-end figures every path scenario measures, in this order (see
/// [`measure_e2e`]).
fn e2e_metrics(t: E2eTargets) -> Vec<Metric> {
    vec![
        Metric::new(
            "TCP request/response latency p50",
            SOCKPERF_HOW,
            "µs",
            false,
            t.p50,
        ),
        Metric::new(
            "TCP request/response latency p99",
            SOCKPERF_HOW,
            "µs",
            false,
            None,
        ),
        Metric::new("new connections (HTTP)", CLOSE_HOW, "conn/s", true, t.close),
        Metric::new(
            "HTTP requests (keep-alive)",
            KEEPALIVE_HOW,
            "req/s",
            true,
            t.keep_alive,
        ),
        Metric::new(
            "single-stream TCP throughput",
            IPERF_HOW,
            "Gbit/s",
            true,
            t.throughput,
        ),
        Metric::new(
            "UDP packets at < 0.1% loss",
            tools::UDP_HOW,
            "packets/s",
            true,
            None,
        ),
    ]
}

/// Where a client reaches a target's servers: the sockperf server listens on `listen`
/// in `server`; the client sends to `sockperf`, `http` (nginx) and `iperf` (iperf3, TCP
/// and UDP), the same addresses or where they are published or served.
struct Ends<'a> {
    server: &'a netns::Netns,
    listen: SocketAddrV4,
    sockperf: SocketAddrV4,
    http: SocketAddrV4,
    iperf: SocketAddrV4,
}

impl<'a> Ends<'a> {
    /// The servers' own addresses, reached directly.
    fn direct(server: &'a netns::Netns, ip: Ipv4Addr) -> Self {
        Ends {
            server,
            listen: SocketAddrV4::new(ip, SOCKPERF_PORT),
            sockperf: SocketAddrV4::new(ip, SOCKPERF_PORT),
            http: SocketAddrV4::new(ip, HTTP_PORT),
            iperf: SocketAddrV4::new(ip, IPERF_PORT),
        }
    }

    /// The servers of the container at [`labs::SERVER_IP`], reached at `ip` on the ports
    /// [`labs::PUBLISHED`] publishes.
    fn published(server: &'a netns::Netns, ip: Ipv4Addr) -> Self {
        let at = |port| SocketAddrV4::new(ip, published_port(port));
        Ends {
            server,
            listen: SocketAddrV4::new(labs::SERVER_IP, SOCKPERF_PORT),
            sockperf: at(SOCKPERF_PORT),
            http: at(HTTP_PORT),
            iperf: at(IPERF_PORT),
        }
    }
}

/// Measures the figures of [`e2e_metrics`] from `client` to `ends`, in order.
fn measure_e2e(client: &Client, ends: &Ends, timing: &Timing) -> anyhow::Result<Vec<f64>> {
    let during = || -> anyhow::Result<(f64, tools::UdpProbe)> {
        let close = tools::http_rate(client, ends.http, false, timing.wrk)
            .context("new connections (wrk)")?;
        let full = tools::udp_full_speed(client, ends.iperf, timing.udp_probe)
            .context("iperf3 -u at full speed")?;
        Ok((close, full))
    };
    let ((p50, p99), (close, full)) = if timing.overlap {
        tools::latency_overlapped(
            client,
            ends.server,
            ends.listen,
            ends.sockperf,
            timing.seconds,
            during,
        )
        .context("latency (sockperf)")?
    } else {
        let latency = tools::latency(
            client,
            ends.server,
            ends.listen,
            ends.sockperf,
            timing.seconds,
        )
        .context("latency (sockperf)")?;
        (latency, during()?)
    };
    let keep = tools::http_rate(client, ends.http, true, timing.wrk)
        .context("keep-alive requests (wrk)")?;
    let tput = tools::throughput(client, ends.iperf, timing.seconds).context("iperf3")?;
    let pps = tools::udp_rate(
        client,
        ends.iperf,
        timing.udp_probe,
        timing.udp_bisections,
        full,
    )
    .context("iperf3 -u")?;
    Ok(vec![p50, p99, close, keep, tput, pps])
}

/// How long each figure runs.
pub struct Timing {
    /// Rounds of the end-to-end scenarios.
    pub rounds: usize,
    /// Rounds of the scaling scenarios (services, ports).
    pub scale_rounds: usize,
    /// sockperf and iperf3 (whole seconds).
    pub seconds: u32,
    /// wrk (whole seconds: it takes no fraction).
    pub wrk: u32,
    /// One paced run of the UDP rate search.
    pub udp_probe: f64,
    /// Bisection steps of the UDP rate search.
    pub udp_bisections: u32,
    /// Whether the figures that fit run inside sockperf's idle start (see
    /// [`tools::latency_overlapped`]).
    pub overlap: bool,
}

impl Timing {
    pub fn new(quick: bool) -> Self {
        if quick {
            Timing {
                rounds: 1,
                scale_rounds: 2,
                seconds: 1,
                wrk: 1,
                udp_probe: 0.2,
                udp_bisections: 1,
                overlap: true,
            }
        } else {
            Timing {
                rounds: 5,
                scale_rounds: 5,
                seconds: 2,
                wrk: 2,
                udp_probe: 1.0,
                udp_bisections: 2,
                overlap: false,
            }
        }
    }
}

fn east_west(netbpf_bin: &Path, timing: &Timing) -> anyhow::Result<Measured> {
    progress("east-west: building the bare bridge, Docker's bridge path and the netbpf lab");
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let dirs = target_dirs(&dir, &EAST_WEST)?;
    let labs = [
        labs::bridge(BENCH_PREFIX)?,
        labs::docker(BENCH_PREFIX, &dirs[1])?,
        labs::netbpf(BENCH_PREFIX, netbpf_bin, &dirs[2])?,
    ];
    let _servers = labs
        .iter()
        .zip(&dirs)
        .map(|(lab, d)| tools::start_servers(lab.server(), labs::SERVER_IP, d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let metrics = e2e_metrics(E2eTargets {
        p50: Some(0.8),
        close: Some(1.15),
        throughput: Some(1.0),
        ..E2eTargets::default()
    });
    let measured = measure_rounds(&EAST_WEST, &labs, metrics, timing.rounds, |_, lab| {
        let client = Client::new(lab.client());
        let ends = Ends::direct(lab.server(), labs::SERVER_IP);
        measure_e2e(&client, &ends, timing)
    })?;
    check_counters(
        netbpf_bin,
        "netbpf",
        &labs[2].lab,
        &[(Hook::FromContainer, Outcome::Forward)],
        &[],
    )?;
    Ok(measured)
}

/// The host port where the server's `container_port` is published.
fn published_port(container_port: u16) -> u16 {
    labs::PUBLISHED
        .iter()
        .find(|(_, c)| *c == container_port)
        .map(|(h, _)| *h)
        .expect("a published port")
}

/// Where the outside client reaches a published container port.
fn published(container_port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(HOST_UPLINK_IP, published_port(container_port))
}

fn north_south(netbpf_bin: &Path, timing: &Timing) -> anyhow::Result<Measured> {
    progress("north-south: building Docker's DNAT path and the netbpf labs (uplink at tc, at XDP)");
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let dirs = target_dirs(&dir, &NORTH_SOUTH)?;
    // Whether the target may also be measured with a sender that offloads checksums.
    let labs = [
        (labs::docker_published(BENCH_PREFIX, &dirs[0])?, true),
        (
            labs::netbpf_published(BENCH_PREFIX, netbpf_bin, &dirs[1], &labs::uplink("tc"))?,
            true,
        ),
        (
            labs::netbpf_published(BENCH_PREFIX, netbpf_bin, &dirs[2], &labs::uplink("xdp"))?,
            false,
        ),
    ];
    for (lab, _) in &labs {
        // Complete checksums from the sender: XDP on a veth needs them, and every target
        // gets the same sender.
        tx_offload(&lab.lab.outside, false)?;
    }
    let _servers = labs
        .iter()
        .zip(&dirs)
        .map(|((lab, _), d)| tools::start_servers(lab.server(), labs::SERVER_IP, d))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut metrics = e2e_metrics(E2eTargets {
        p50: Some(0.8),
        close: Some(1.25),
        throughput: Some(1.0),
        ..E2eTargets::default()
    });
    metrics.push(Metric::new(
        "single-stream TCP throughput, sender offloading (veth default)",
        "iperf3 as above, the client's tx checksum offload and TSO on: 64 KB GSO packets \
         (not measured at XDP, where TCP then fails)",
        "Gbit/s",
        true,
        None,
    ));
    let measured = measure_rounds(
        &NORTH_SOUTH,
        &labs,
        metrics,
        timing.rounds,
        |_, (lab, offload)| {
            let client = Client::new(&lab.lab.outside);
            let ends = Ends::published(lab.server(), HOST_UPLINK_IP);
            let mut values = measure_e2e(&client, &ends, timing)?;
            let offloaded = if *offload {
                tx_offload(&lab.lab.outside, true)?;
                let tput = tools::throughput(&client, published(IPERF_PORT), timing.seconds);
                tx_offload(&lab.lab.outside, false)?;
                tput?
            } else {
                f64::NAN
            };
            values.push(offloaded);
            Ok(values)
        },
    )?;
    // Each netbpf target's traffic took its own hook, and only that one.
    let (tc, xdp) = (
        (Hook::FromUplink, Outcome::Published),
        (Hook::XdpUplink, Outcome::Published),
    );
    let reply = (Hook::FromContainer, Outcome::PublishedReply);
    check_counters(
        netbpf_bin,
        "netbpf-tc",
        &labs[1].0.lab,
        &[tc, reply],
        &[xdp],
    )?;
    check_counters(
        netbpf_bin,
        "netbpf-xdp",
        &labs[2].0.lab,
        &[xdp, reply],
        &[tc],
    )?;
    Ok(measured)
}

/// Turns a client's tx checksum offload (and with it TSO) on or off.
fn tx_offload(ns: &netns::Netns, on: bool) -> anyhow::Result<()> {
    let state = if on { "on" } else { "off" };
    ns.exec("ethtool", &["-K", OUTSIDE_IF, "tx", state])
        .context("ethtool on the outside client")?;
    Ok(())
}

/// Checks what a netbpf target's programs counted (see [`labs::Counters::require`]) and
/// warns of any drops.
fn check_counters(
    netbpf_bin: &Path,
    target: &str,
    lab: &Lab,
    expected: &[(Hook, Outcome)],
    unexpected: &[(Hook, Outcome)],
) -> anyhow::Result<()> {
    let counters = labs::Counters::read(netbpf_bin, lab)?;
    counters
        .require(expected, unexpected)
        .with_context(|| format!("{target}'s counters"))?;
    let drops = counters.drops();
    if !drops.is_empty() {
        eprintln!("warning: {target} dropped packets: {}", drops.join(", "));
    }
    Ok(())
}

fn hairpin(netbpf_bin: &Path, timing: &Timing) -> anyhow::Result<Measured> {
    progress("hairpin: building Docker's hairpin NAT path and the netbpf lab");
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let dirs = target_dirs(&dir, &HAIRPIN)?;
    let labs = [
        labs::docker_hairpin(BENCH_PREFIX, &dirs[0])?,
        labs::netbpf_hairpin(BENCH_PREFIX, netbpf_bin, &dirs[1])?,
    ];
    let _servers = labs
        .iter()
        .zip(&dirs)
        .map(|(lab, d)| tools::start_servers(lab.server(), labs::SERVER_IP, d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let metrics = e2e_metrics(E2eTargets::default());
    let measured = measure_rounds(&HAIRPIN, &labs, metrics, timing.rounds, |_, lab| {
        let client = Client::new(lab.client());
        let ends = Ends::published(lab.server(), HOST_UPLINK_IP);
        measure_e2e(&client, &ends, timing)
    })?;
    check_counters(
        netbpf_bin,
        "netbpf",
        &labs[1].lab,
        &[(Hook::FromContainer, Outcome::Hairpin)],
        &[],
    )?;
    Ok(measured)
}

/// A host-localhost target: the lab, the cgroup its client runs in, and (for `proxy`) the
/// proxies.
struct LocalTarget {
    lab: labs::Published,
    cgroup: Cgroup,
    _proxies: Vec<netbpf_tests::process::Background>,
}

fn host_localhost(netbpf_bin: &Path, timing: &Timing) -> anyhow::Result<Measured> {
    progress("host-localhost: building Docker's path with userspace proxies and the netbpf lab");
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let dirs = target_dirs(&dir, &HOST_LOCALHOST)?;

    let proxy_cgroup = Cgroup::create(&unique_prefix(BENCH_PREFIX)).context("cgroup")?;
    let proxy_lab = labs::docker_published(BENCH_PREFIX, &dirs[0])?;
    // docker-proxy: one per published port (the iperf3 one also relays its UDP).
    let proxies = labs::PUBLISHED
        .iter()
        .map(|(host, container)| {
            let d = dirs[0].join(format!("proxy-{host}"));
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            proxy::start(
                &proxy_lab.lab.host,
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, *host),
                SocketAddrV4::new(labs::SERVER_IP, *container),
                &d,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let netbpf_cgroup = Cgroup::create(&unique_prefix(BENCH_PREFIX)).context("cgroup")?;
    let netbpf_lab = labs::netbpf_published(
        BENCH_PREFIX,
        netbpf_bin,
        &dirs[1],
        &format!("cgroup = \"{}\"\n", netbpf_cgroup.path().display()),
    )?;
    let labs = [
        LocalTarget {
            lab: proxy_lab,
            cgroup: proxy_cgroup,
            _proxies: proxies,
        },
        LocalTarget {
            lab: netbpf_lab,
            cgroup: netbpf_cgroup,
            _proxies: Vec::new(),
        },
    ];
    let _servers = labs
        .iter()
        .zip(&dirs)
        .map(|(t, d)| tools::start_servers(t.lab.server(), labs::SERVER_IP, d))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let metrics = e2e_metrics(E2eTargets {
        keep_alive: Some(3.0),
        ..E2eTargets::default()
    });
    let measured = measure_rounds(&HOST_LOCALHOST, &labs, metrics, timing.rounds, |_, t| {
        let client = Client::in_cgroup(&t.lab.lab.host, &t.cgroup);
        let ends = Ends::published(t.lab.server(), Ipv4Addr::LOCALHOST);
        measure_e2e(&client, &ends, timing)
    })?;
    // netbpf's connections went through its socket program.
    check_counters(
        netbpf_bin,
        "netbpf",
        &labs[1].lab.lab,
        &[(Hook::SockConnect4, Outcome::Published)],
        &[],
    )?;
    Ok(measured)
}

/// One directory per target, for its definitions, configuration files and logs.
fn target_dirs(dir: &TempDir, scenario: &Scenario) -> anyhow::Result<Vec<std::path::PathBuf>> {
    scenario
        .targets
        .iter()
        .map(|t| {
            let d = dir.path().join(t);
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            Ok(d)
        })
        .collect()
}

/// Removes the cgroups of bench runs that were killed before their guards dropped (named
/// `<prefix>-<pid>-<n>`, the process gone; empty, since their processes are too).
fn remove_stale_cgroups() {
    let Ok(root) = cgroup2_root() else { return };
    let Ok(entries) = fs::read_dir(&root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(BENCH_PREFIX)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists()
            && let Err(e) = fs::remove_dir(entry.path())
        {
            eprintln!("cleanup: removing cgroup {}: {e}", entry.path().display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        let mut m = Metric::new("latency", "how", "µs", false, Some(0.8));
        m.values.insert("docker", vec![10.0, 10.0, 10.0]);
        m.values.insert("netbpf", vec![7.0, 9.0, 8.0]);
        assert_eq!(m.ratios("netbpf", "docker"), vec![0.7, 0.9, 0.8]);
        assert_eq!(m.meets_target("netbpf", "docker"), Some(true));
        m.values.insert("netbpf", vec![9.0, 9.0, 8.0]);
        assert_eq!(m.meets_target("netbpf", "docker"), Some(false));
        // A bound on the contender's own figure, whatever the baseline's.
        let mut apply = Metric::new("apply", "how", "s", false, None).with_limit(2.0);
        apply.values.insert("iptables", vec![1.0, 1.0, 1.0]);
        apply.values.insert("netbpf", vec![1.5, 2.5, 1.9]);
        assert_eq!(apply.meets_target("netbpf", "iptables"), Some(true));
        apply.values.insert("netbpf", vec![2.1, 2.5, 1.9]);
        assert_eq!(apply.meets_target("netbpf", "iptables"), Some(false));
        assert_eq!(
            Metric::new("x", "how", "s", false, None).meets_target("netbpf", "iptables"),
            None
        );
    }

    #[test]
    fn scenarios_are_consistent() {
        for s in [
            &EAST_WEST,
            &NORTH_SOUTH,
            &HAIRPIN,
            &HOST_LOCALHOST,
            &vip::CONTAINER,
            &vip::OUTSIDE,
            &services::SERVICES,
            &ports::PORTS,
            &docker::DOCKER,
        ] {
            assert!(SCENARIOS.contains(&s.id), "{}", s.id);
            assert!(s.targets.contains(&s.baseline), "{}", s.id);
            for t in s.contenders.iter().chain(&s.floor) {
                assert!(s.targets.contains(t), "{}: {t}", s.id);
            }
        }
    }

    #[test]
    fn published_ports_are_found() {
        assert_eq!(
            published(HTTP_PORT),
            SocketAddrV4::new(HOST_UPLINK_IP, 8080)
        );
        assert_eq!(published(IPERF_PORT).port(), IPERF_PORT);
    }
}
