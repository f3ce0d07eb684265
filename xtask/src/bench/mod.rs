//! `cargo xtask bench`: netbpf against the kernel-native path it replaces, measured in the
//! same run on identical namespaces, the targets of a scenario alternating round by round
//! (A B C A B C ...) so that a noisy machine hurts all alike. Reports medians, min-max and
//! the per-round ratio netbpf/baseline, in target/bench/report.md and results.json.
//!
//! Scenarios (`--only NAME`):
//! - `east-west`: container to container, on a bare bridge, on Docker's path, and netbpf;
//! - `north-south`: an outside client to a published port, Docker's DNAT against netbpf's
//!   uplink program at tc and at XDP;
//! - `host-localhost`: a host process to 127.0.0.1:PORT, a docker-proxy-like userspace
//!   proxy against netbpf's socket programs;
//! - `services`: a container to a VIP at 1, 1,000 and 10,000 services, kube-proxy's
//!   iptables rules against netbpf's services, and the time to apply and change them;
//! - `prog-cost`: per-packet cost of the programs' paths under BPF_PROG_TEST_RUN;
//! - `inspect`: how long `netbpf show` takes with 10,000 services and 100,000 flows;
//! - `docker`: through a real Docker Engine, its bridge driver against netbpf's driver
//!   (when docker.io is installed).

mod docker;
mod inspect;
mod labs;
mod proxy;
mod report;
mod services;
mod tools;

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
use serde_json::Value;

pub use proxy::serve as serve_proxy;
use tools::{Client, HTTP_PORT, IPERF_PORT, SOCKPERF_PORT};

use crate::{
    cmd::{self, step},
    setup,
};

const BENCH_PREFIX: &str = "nbbench";

/// What `--only` accepts, in the order a full run measures them.
pub const SCENARIOS: [&str; 7] = [
    "east-west",
    "north-south",
    "host-localhost",
    "services",
    "prog-cost",
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

const HOST_LOCALHOST: Scenario = Scenario {
    id: "host-localhost",
    title: "Host localhost to a published port",
    about: "A process of the host namespace (wrk, in a cgroup of its own) to 127.0.0.1:8080, \
            published from a container's port 80. `proxy` is docker-proxy's way: a userspace TCP \
            proxy on 127.0.0.1:8080 in the host namespace, one thread per connection and \
            direction copying bytes to the container (Docker's bridge and iptables rules \
            beneath); `netbpf` is netbpf's socket programs on the client's cgroup, which \
            connect the socket straight to the container.",
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
    setup::run()?;
    if !cmd::is_root() {
        bail!("benchmarks build network namespaces and load BPF programs: run them as root");
    }
    netns::remove_stale(BENCH_PREFIX);
    remove_stale_cgroups();
    if std::thread::available_parallelism().map_or(0, |n| n.get()) < 2 {
        bail!("benchmarks need two CPUs: clients and servers run on CPUs of their own");
    }
    let (rounds, seconds) = if options.quick { (3, 1) } else { (5, 2) };
    let wants = |scenario: &str| options.only.as_deref().is_none_or(|only| only == scenario);

    step("build netbpf (release)");
    cmd::run(cmd::cargo().args(["build", "--quiet", "--release", "--package", "netbpf"]))?;
    let netbpf_bin = cmd::workspace_root().join("target/release/netbpf");

    let mut measured = Vec::new();
    if wants(EAST_WEST.id) {
        measured.push(east_west(&netbpf_bin, rounds, seconds)?);
    }
    if wants(NORTH_SOUTH.id) {
        measured.push(north_south(&netbpf_bin, rounds, seconds)?);
    }
    if wants(HOST_LOCALHOST.id) {
        measured.push(host_localhost(&netbpf_bin, rounds, seconds)?);
    }
    if wants(services::SERVICES.id) {
        measured.push(services::run(&netbpf_bin, options.quick, rounds, seconds)?);
    }
    let mut prog_cost = Value::Null;
    if wants("prog-cost") {
        step(
            "prog-cost: BPF_PROG_TEST_RUN, 5 runs of 1e6 repeats and of 2,000 new flows, beside \
             empty tc and XDP programs",
        );
        prog_cost = tools::prog_cost(5, 1_000_000, 2000)?;
    }
    let mut inspected = Value::Null;
    if wants(inspect::ID) {
        inspected = inspect::run(&netbpf_bin, rounds)?;
    }
    if wants(docker::DOCKER.id)
        && let Some(m) = docker::run(&netbpf_bin, rounds, seconds)?
    {
        measured.push(m);
    }
    report::write(&measured, &prog_cost, &inspected, rounds, seconds)
}

/// Measures every metric on every target of `scenario` (`labs` in the order of its
/// targets), round by round, the targets taking turns. `measure` returns one value per
/// metric, in order; NaN for a figure not measured on that target.
fn measure_rounds<L>(
    scenario: &'static Scenario,
    labs: &[L],
    mut metrics: Vec<Metric>,
    rounds: usize,
    mut measure: impl FnMut(&L) -> anyhow::Result<Vec<f64>>,
) -> anyhow::Result<Measured> {
    assert_eq!(labs.len(), scenario.targets.len(), "one lab per target");
    for round in 1..=rounds {
        for (target, lab) in scenario.targets.iter().zip(labs) {
            step(&format!(
                "{}: round {round}/{rounds}, {target}",
                scenario.id
            ));
            let values = measure(lab).with_context(|| format!("{}: {target}", scenario.id))?;
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

const SOCKPERF_HOW: &str = "sockperf TCP ping-pong, 64-byte messages, both ends busy-polling";
const CLOSE_HOW: &str = "wrk -t1 -c16 to nginx, `Connection: close`: one request per connection";
const KEEPALIVE_HOW: &str = "wrk -t1 -c16 to nginx, keep-alive connections";
const IPERF_HOW: &str = "iperf3, one TCP stream, the receiver's rate";

fn east_west(netbpf_bin: &Path, rounds: usize, seconds: u32) -> anyhow::Result<Measured> {
    step("east-west: building the bare bridge, Docker's bridge path and the netbpf lab");
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let dirs = target_dirs(&dir, &EAST_WEST)?;
    let labs = [
        labs::bridge(BENCH_PREFIX)?,
        labs::docker(BENCH_PREFIX, &dirs[1])?,
        labs::netbpf(BENCH_PREFIX, netbpf_bin, &dirs[2])?,
    ];
    let server = SocketAddrV4::new(labs::SERVER_IP, HTTP_PORT);
    let _servers = labs
        .iter()
        .zip(&dirs)
        .map(|(lab, d)| tools::start_servers(lab.server(), labs::SERVER_IP, d))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let [p50, p99] = latency_metrics(SOCKPERF_HOW);
    let metrics = vec![
        p50,
        p99,
        Metric::new(
            "new connections (HTTP)",
            CLOSE_HOW,
            "conn/s",
            true,
            Some(1.15),
        ),
        Metric::new(
            "single-stream TCP throughput",
            IPERF_HOW,
            "Gbit/s",
            true,
            Some(1.0),
        ),
    ];
    measure_rounds(&EAST_WEST, &labs, metrics, rounds, |lab| {
        let client = Client::new(lab.client());
        let sockperf = SocketAddrV4::new(labs::SERVER_IP, SOCKPERF_PORT);
        let (lat50, lat99) = tools::latency(&client, lab.server(), sockperf, sockperf, seconds)?;
        let rate = tools::http_rate(&client, server, false, seconds)?;
        let iperf = SocketAddrV4::new(labs::SERVER_IP, IPERF_PORT);
        let tput = tools::throughput(&client, iperf, seconds)?;
        Ok(vec![lat50, lat99, rate, tput])
    })
}

/// Where the outside client reaches a published container port.
fn published(container_port: u16) -> SocketAddrV4 {
    let host_port = labs::PUBLISHED
        .iter()
        .find(|(_, c)| *c == container_port)
        .map(|(h, _)| *h)
        .expect("a published port");
    SocketAddrV4::new(HOST_UPLINK_IP, host_port)
}

fn north_south(netbpf_bin: &Path, rounds: usize, seconds: u32) -> anyhow::Result<Measured> {
    step("north-south: building Docker's DNAT path and the netbpf labs (uplink at tc, at XDP)");
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
        tx_offload(lab, false)?;
    }
    let _servers = labs
        .iter()
        .zip(&dirs)
        .map(|((lab, _), d)| tools::start_servers(lab.server(), labs::SERVER_IP, d))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let [p50, p99] = latency_metrics(SOCKPERF_HOW);
    let metrics = vec![
        p50,
        p99,
        Metric::new(
            "new connections (HTTP)",
            CLOSE_HOW,
            "conn/s",
            true,
            Some(1.25),
        ),
        Metric::new(
            "single-stream TCP throughput",
            IPERF_HOW,
            "Gbit/s",
            true,
            Some(1.0),
        ),
        Metric::new(
            "single-stream TCP throughput, sender offloading (veth default)",
            "iperf3 as above, the client's tx checksum offload and TSO on: 64 KB GSO packets \
             (not measured at XDP, where TCP then fails)",
            "Gbit/s",
            true,
            None,
        ),
    ];
    let measured = measure_rounds(&NORTH_SOUTH, &labs, metrics, rounds, |(lab, offload)| {
        let client = Client::new(&lab.lab.outside);
        let listen = SocketAddrV4::new(labs::SERVER_IP, SOCKPERF_PORT);
        let (lat50, lat99) = tools::latency(
            &client,
            lab.server(),
            listen,
            published(SOCKPERF_PORT),
            seconds,
        )?;
        let rate = tools::http_rate(&client, published(HTTP_PORT), false, seconds)?;
        let tput = tools::throughput(&client, published(IPERF_PORT), seconds)?;
        let offloaded = if *offload {
            tx_offload(lab, true)?;
            let tput = tools::throughput(&client, published(IPERF_PORT), seconds);
            tx_offload(lab, false)?;
            tput?
        } else {
            f64::NAN
        };
        Ok(vec![lat50, lat99, rate, tput, offloaded])
    })?;
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

/// Turns the outside client's tx checksum offload (and with it TSO) on or off.
fn tx_offload(lab: &labs::Published, on: bool) -> anyhow::Result<()> {
    let state = if on { "on" } else { "off" };
    lab.lab
        .outside
        .exec("ethtool", &["-K", OUTSIDE_IF, "tx", state])
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

/// A host-localhost target: the lab, the cgroup its client runs in, and (for `proxy`) the
/// proxy.
struct LocalTarget {
    lab: labs::Published,
    cgroup: Cgroup,
    _proxy: Option<netbpf_tests::process::Background>,
}

fn host_localhost(netbpf_bin: &Path, rounds: usize, seconds: u32) -> anyhow::Result<Measured> {
    step("host-localhost: building Docker's path with a userspace proxy and the netbpf lab");
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let dirs = target_dirs(&dir, &HOST_LOCALHOST)?;
    let localhost = SocketAddrV4::new(Ipv4Addr::LOCALHOST, labs::PUBLISHED_HTTP);
    let container = SocketAddrV4::new(labs::SERVER_IP, HTTP_PORT);

    let proxy_cgroup = Cgroup::create(&unique_prefix(BENCH_PREFIX)).context("cgroup")?;
    let proxy_lab = labs::docker_published(BENCH_PREFIX, &dirs[0])?;
    let proxy = proxy::start(&proxy_lab.lab.host, localhost, container, &dirs[0])?;
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
            _proxy: Some(proxy),
        },
        LocalTarget {
            lab: netbpf_lab,
            cgroup: netbpf_cgroup,
            _proxy: None,
        },
    ];
    let _servers = labs
        .iter()
        .zip(&dirs)
        .map(|(t, d)| tools::start_servers(t.lab.server(), labs::SERVER_IP, d))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let metrics = vec![
        Metric::new(
            "HTTP requests (keep-alive)",
            KEEPALIVE_HOW,
            "req/s",
            true,
            Some(3.0),
        ),
        Metric::new("new connections (HTTP)", CLOSE_HOW, "conn/s", true, None),
    ];
    let measured = measure_rounds(&HOST_LOCALHOST, &labs, metrics, rounds, |t| {
        let client = Client::in_cgroup(&t.lab.lab.host, &t.cgroup);
        let keep_alive = tools::http_rate(&client, localhost, true, seconds)?;
        let close = tools::http_rate(&client, localhost, false, seconds)?;
        Ok(vec![keep_alive, close])
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
            &HOST_LOCALHOST,
            &services::SERVICES,
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
