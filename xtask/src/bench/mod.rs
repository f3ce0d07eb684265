//! `cargo xtask bench`: netbpf against the kernel-native path it replaces, measured in the
//! same run on identical namespaces, the two alternating round by round (A B A B ...) so
//! that a noisy machine hurts both alike. Reports medians, min-max and the per-round ratio
//! netbpf/baseline, in target/bench/report.md and results.json.

mod labs;
mod tools;

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, bail};
use netbpf_tests::{TempDir, netns, unique_prefix};
use serde_json::{Value, json};

use crate::{
    cmd::{self, step},
    setup,
};

const BENCH_PREFIX: &str = "nbbench";

pub struct Options {
    pub quick: bool,
    pub only: Option<String>,
}

/// The target whose ratio decides: Docker's data path, which netbpf replaces.
const BASELINE: &str = "docker";
/// Also reported: the bare bridge, the floor of any bridge-based path.
const FLOOR: &str = "bridge";
const NETBPF: &str = "netbpf";
const TARGETS: [&str; 3] = [FLOOR, BASELINE, NETBPF];

/// One figure measured on every target, round by round.
struct Metric {
    scenario: &'static str,
    name: &'static str,
    unit: &'static str,
    /// Whether a higher figure is better (rates) or lower (latency).
    higher_is_better: bool,
    /// The ratio netbpf/baseline the design promises, and in which direction.
    target: Option<f64>,
    values: BTreeMap<&'static str, Vec<f64>>,
}

impl Metric {
    fn new(
        scenario: &'static str,
        name: &'static str,
        unit: &'static str,
        higher_is_better: bool,
        target: Option<f64>,
    ) -> Self {
        Metric {
            scenario,
            name,
            unit,
            higher_is_better,
            target,
            values: BTreeMap::new(),
        }
    }

    fn of(&self, target: &str) -> &[f64] {
        self.values.get(target).map_or(&[], Vec::as_slice)
    }

    /// netbpf / `against`, round by round.
    fn ratios(&self, against: &str) -> Vec<f64> {
        self.of(NETBPF)
            .iter()
            .zip(self.of(against))
            .map(|(n, b)| n / b)
            .collect()
    }

    fn meets_target(&self) -> Option<bool> {
        let ratio = median(&self.ratios(BASELINE));
        self.target.map(|t| {
            if self.higher_is_better {
                ratio >= t
            } else {
                ratio <= t
            }
        })
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

pub fn run(options: Options) -> anyhow::Result<()> {
    setup::run()?;
    if !cmd::is_root() {
        bail!("benchmarks build network namespaces and load BPF programs: run them as root");
    }
    netns::remove_stale(BENCH_PREFIX);
    let (rounds, seconds) = if options.quick { (3, 1) } else { (5, 2) };
    let wants = |scenario: &str| options.only.as_deref().is_none_or(|only| only == scenario);
    if let Some(only) = &options.only
        && !["east-west", "prog-cost"].contains(&only.as_str())
    {
        bail!("unknown scenario {only:?} (known: east-west, prog-cost)");
    }

    step("build netbpf (release)");
    cmd::run(cmd::cargo().args(["build", "--quiet", "--release", "--package", "netbpf"]))?;
    let netbpf_bin = cmd::workspace_root().join("target/release/netbpf");

    let mut metrics = Vec::new();
    let mut prog_cost = Value::Null;
    if wants("east-west") {
        metrics.extend(east_west(&netbpf_bin, rounds, seconds)?);
    }
    if wants("prog-cost") {
        step("prog-cost: BPF_PROG_TEST_RUN, 5 runs of 1e6 repeats, beside an empty tc program");
        prog_cost = tools::prog_cost(5, 1_000_000)?;
    }
    write_report(&metrics, &prog_cost, rounds, seconds)
}

fn east_west(netbpf_bin: &Path, rounds: usize, seconds: u32) -> anyhow::Result<Vec<Metric>> {
    step("east-west: building the bare bridge, Docker's bridge path and the netbpf lab");
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let dirs: Vec<_> = TARGETS.iter().map(|t| dir.path().join(t)).collect();
    for d in &dirs {
        fs::create_dir_all(d)?;
    }
    let labs = [
        labs::bridge(&unique_prefix(BENCH_PREFIX))?,
        labs::docker(&unique_prefix(BENCH_PREFIX), &dirs[1])?,
        labs::netbpf(&unique_prefix(BENCH_PREFIX), netbpf_bin, &dirs[2])?,
    ];
    let _servers = labs
        .iter()
        .zip(&dirs)
        .map(|(lab, d)| tools::start_servers(lab.server(), labs::SERVER_IP, d))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let scenario = "container-to-container";
    let mut p50 = Metric::new(
        scenario,
        "TCP request/response latency p50",
        "µs",
        false,
        Some(0.8),
    );
    let mut p99 = Metric::new(
        scenario,
        "TCP request/response latency p99",
        "µs",
        false,
        None,
    );
    let mut conns = Metric::new(
        scenario,
        "new connections (HTTP, Connection: close)",
        "conn/s",
        true,
        Some(1.15),
    );
    let mut gbps = Metric::new(
        scenario,
        "single-stream TCP throughput",
        "Gbit/s",
        true,
        Some(1.0),
    );
    for round in 1..=rounds {
        for lab in &labs {
            step(&format!("east-west: round {round}/{rounds}, {}", lab.name));
            let (lat50, lat99) =
                tools::latency(lab.client(), lab.server(), labs::SERVER_IP, seconds)?;
            let rate = tools::connection_rate(lab.client(), labs::SERVER_IP, seconds)?;
            let tput = tools::throughput(lab.client(), labs::SERVER_IP, seconds)?;
            for (metric, value) in [
                (&mut p50, lat50),
                (&mut p99, lat99),
                (&mut conns, rate),
                (&mut gbps, tput),
            ] {
                metric.values.entry(lab.name).or_default().push(value);
            }
        }
    }
    Ok(vec![p50, p99, conns, gbps])
}

fn write_report(
    metrics: &[Metric],
    prog_cost: &Value,
    rounds: usize,
    seconds: u32,
) -> anyhow::Result<()> {
    let out_dir = cmd::workspace_root().join("target/bench");
    fs::create_dir_all(&out_dir).context("creating target/bench")?;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = format!(
        "# netbpf benchmark\n\nKernel {}, {cpus} CPUs; {rounds} rounds of {seconds} s per figure, \
         the targets alternating. Ratio = netbpf / target, per round; its median decides.\n\n",
        kernel.trim()
    );
    if !metrics.is_empty() {
        md += "Targets: `bridge` is a bare Linux bridge (the floor); `docker` is Docker's path, the \
               bridge with bridged frames through netfilter and dockerd's iptables rules; \
               `netbpf` is the same containers wired by netbpf. The ratio that decides is \
               netbpf/docker.\n\n";
        md += "| scenario | figure | bridge | docker | netbpf | netbpf/docker (per round) | netbpf/bridge | target | met |\n|---|---|---|---|---|---|---|---|---|\n";
    }
    let mut json_metrics = Vec::new();
    for m in metrics {
        let cell = |t: &str| {
            let (lo, hi) = min_max(m.of(t));
            format!("{:.2} ({lo:.2}-{hi:.2})", median(m.of(t)))
        };
        let ratios = m.ratios(BASELINE);
        let target = m.target.map_or("-".to_owned(), |t| {
            format!("{} {t}", if m.higher_is_better { ">=" } else { "<=" })
        });
        let met = m
            .meets_target()
            .map_or("-", |ok| if ok { "yes" } else { "NO" });
        let _ = writeln!(
            md,
            "| {} | {} ({}) | {} | {} | {} | {:.3} ({}) | {:.3} | {target} | {met} |",
            m.scenario,
            m.name,
            m.unit,
            cell(FLOOR),
            cell(BASELINE),
            cell(NETBPF),
            median(&ratios),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            median(&m.ratios(FLOOR)),
        );
        json_metrics.push(json!({
            "scenario": m.scenario, "figure": m.name, "unit": m.unit,
            "values": m.values, "ratios_vs_docker": ratios,
            "ratio_median": median(&ratios), "ratio_median_vs_bridge": median(&m.ratios(FLOOR)),
            "target": m.target, "higher_is_better": m.higher_is_better, "met": m.meets_target(),
        }));
    }
    if let Some(paths) = prog_cost["ns_per_packet"].as_object() {
        let empty = median(&values(&paths["empty_tc"]));
        md += "\n## Per-packet cost (BPF_PROG_TEST_RUN, ns per packet, median of 5 runs of 1e6)\n\n| path | median | min-max | above empty tc |\n|---|---|---|---|\n";
        for (path, ns) in paths {
            let ns = values(ns);
            let (lo, hi) = min_max(&ns);
            let _ = writeln!(
                md,
                "| {path} | {:.0} | {lo:.0}-{hi:.0} | {:+.0} |",
                median(&ns),
                median(&ns) - empty
            );
        }
        let forward = median(&values(&paths["forward"]));
        let _ = writeln!(
            md,
            "\nForwarding path: {:+.0} ns above an empty tc program (target: at most +40).",
            forward - empty
        );
    }
    fs::write(out_dir.join("report.md"), &md).context("writing report.md")?;
    let results = json!({ "rounds": rounds, "seconds": seconds, "metrics": json_metrics, "prog_cost": prog_cost });
    fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )
    .context("writing results.json")?;
    println!("\n{md}");
    step(&format!("report: {}", out_dir.join("report.md").display()));
    Ok(())
}

fn values(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        let mut m = Metric::new("s", "latency", "µs", false, Some(0.8));
        m.values.insert(BASELINE, vec![10.0, 10.0, 10.0]);
        m.values.insert(NETBPF, vec![7.0, 9.0, 8.0]);
        assert_eq!(m.ratios(BASELINE), vec![0.7, 0.9, 0.8]);
        assert_eq!(m.meets_target(), Some(true));
        m.values.insert(NETBPF, vec![9.0, 9.0, 8.0]);
        assert_eq!(m.meets_target(), Some(false));
    }
}
