//! The `inspect` scenario: how long the `netbpf show` views take on a large datapath, each
//! an absolute figure against the time issue 6 allows (no baseline to compare with).
//!
//! One lab: a container network with 10,000 services of three backends each (the backends
//! addresses of the network), then 100,000 published-port flows written straight into the
//! pinned conntrack table. Each figure is the wall time of one `netbpf show ...` process,
//! from its start to its exit with all of its output read through a pipe (what a user
//! piping into `jq` or a pager waits for), over several runs, the views taking turns.

use std::{
    fmt::Write as _,
    io::Read as _,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use netbpf_common::pin_paths::NETNS_PIN_ROOT;
use netbpf_tests::{
    TempDir,
    bpfmap::{FlowTarget, PinnedMap, published_flows},
    lab::{HOST_UPLINK_IP, Lab, OUTSIDE_IP},
    unique_prefix,
};
use serde_json::{Value, json};

use super::{BENCH_PREFIX, median, min_max, progress};
use crate::cmd;

pub const ID: &str = "inspect";
const SERVICES: usize = 10_000;
const FLOWS: u32 = 100_000;
/// The most a view may take (issue 6), in seconds.
const TARGET_SECS: f64 = 1.0;

/// One figure: a `netbpf show` command, how to check its output, and its target.
struct View {
    name: &'static str,
    args: &'static [&'static str],
    /// Lines (table) or JSON objects (`-o json`) the output must have.
    expect: usize,
    /// For JSON: the key every row has once (counted at a row's indentation).
    json_key: Option<&'static str>,
    target: Option<f64>,
}

/// A view's times.
struct Figure {
    view: View,
    seconds: Vec<f64>,
}

/// One container (web1, 198.18.10.2, in the lab's first namespace) and `services` services
/// of three backends each (addresses of its network no container holds), with
/// `scheduler` or the default.
pub fn definitions(lab: &Lab, services: usize, scheduler: Option<&str>) -> String {
    let mut text = format!(
        "[[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
         [[container]]\nname = \"web1\"\nnetns = \"{}\"\nnetwork = \"front\"\nip = \"198.18.10.2\"\n\n",
        lab.containers[0].path().display()
    );
    let scheduler = scheduler.map_or(String::new(), |s| format!("scheduler = \"{s}\"\n"));
    for i in 0..services {
        let _ = write!(
            text,
            "[[service]]\nname = \"svc-{i}\"\nvip = \"{}\"\nport = 80\n{scheduler}\
             backends = [{{ address = \"198.18.10.3\" }}, {{ address = \"198.18.10.4\" }}, \
             {{ address = \"198.18.10.5\" }}]\n\n",
            super::services::vip(i)
        );
    }
    text
}

/// Runs one view once: its wall time in seconds, after checking what it printed.
fn time_view(netbpf_bin: &Path, lab: &Lab, view: &View) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut child = Command::new(netbpf_bin)
        .args(["--netns", lab.host.name(), "show"])
        .args(view.args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting netbpf show {}", view.args.join(" ")))?;
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_end(&mut out)
            .context("reading netbpf's output")?;
    }
    let status = child.wait().context("waiting for netbpf")?;
    let took = started.elapsed().as_secs_f64();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        bail!(
            "netbpf show {} failed ({status}): {err}",
            view.args.join(" ")
        );
    }
    let text = String::from_utf8_lossy(&out);
    let got = match view.json_key {
        Some(key) => text.matches(&format!("\n    \"{key}\": ")).count(),
        None => text.lines().count(),
    };
    if got != view.expect {
        bail!(
            "netbpf show {}: {got} {} where {} were expected",
            view.args.join(" "),
            if view.json_key.is_some() {
                "rows"
            } else {
                "lines"
            },
            view.expect
        );
    }
    Ok(took)
}

/// Writes `count` flows into the lab's conntrack table, as the uplink program records
/// published-port flows (from outside to the host's port 20000 on, each to one container's
/// port 80), last seen at `last_seen` (jiffies).
pub fn write_flows(lab: &Lab, count: u32, last_seen: u64) -> anyhow::Result<()> {
    let target = FlowTarget {
        addr: Ipv4Addr::new(198, 18, 10, 2),
        port: 80,
        ifindex: 1,
        mac: [0x02, 0x42, 198, 18, 10, 2],
        gateway_mac: [0x02, 0, 0, 0, 0, 1],
    };
    let mut flows = published_flows(OUTSIDE_IP, HOST_UPLINK_IP, 20_000, 0..count, &target);
    for (_, e) in &mut flows {
        e.last_seen = last_seen;
    }
    let pin = Path::new(NETNS_PIN_ROOT)
        .join(lab.host.name())
        .join("maps/NB_CT");
    PinnedMap::open(&pin)
        .and_then(|ct| ct.update_batch(&flows, 4096))
        .with_context(|| format!("writing {count} flows into NB_CT"))
}

/// Times every view `runs` times over a lab it builds; returns the figures as JSON.
pub fn run(netbpf_bin: &Path, runs: usize) -> anyhow::Result<Value> {
    progress(&format!(
        "inspect: a lab with {SERVICES} services, then {FLOWS} conntrack flows"
    ));
    let lab = Lab::new(BENCH_PREFIX, 1).context("lab")?;
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let file = dir
        .write("netbpf.toml", &definitions(&lab, SERVICES, Some("wlc")))
        .context("writing the definitions")?;
    cmd::output(
        Command::new(netbpf_bin)
            .args(["--netns", lab.host.name(), "apply", "-c"])
            .arg(&file),
    )?;

    // ipvsadm's two header lines, a line per service and per backend.
    let service_lines = 2 + SERVICES * 4;
    let mut figures = measure(
        netbpf_bin,
        &lab,
        runs,
        vec![
            View {
                name: "show services (10,000 services, 30,000 backends)",
                args: &["services"],
                expect: service_lines,
                json_key: None,
                target: Some(TARGET_SECS),
            },
            View {
                name: "show services -o json (10,000 services)",
                args: &["services", "-o", "json"],
                expect: SERVICES,
                json_key: Some("vip"),
                target: Some(TARGET_SECS),
            },
            View {
                name: "show backends (30,000 backends)",
                args: &["backends"],
                expect: 1 + SERVICES * 3,
                json_key: None,
                target: None,
            },
        ],
    )?;

    write_flows(&lab, FLOWS, 0)?;
    figures.extend(measure(
        netbpf_bin,
        &lab,
        runs,
        vec![
            View {
                name: "show conntrack -o json (100,000 flows)",
                args: &["conntrack", "-o", "json"],
                expect: FLOWS as usize,
                json_key: Some("proto"),
                target: Some(TARGET_SECS),
            },
            View {
                name: "show conntrack (100,000 flows)",
                args: &["conntrack"],
                expect: 1 + FLOWS as usize,
                json_key: None,
                target: None,
            },
            View {
                name: "show conntrack --src --dst (1 of 100,000 flows)",
                args: &[
                    "conntrack",
                    "--src",
                    "198.18.0.2:1024",
                    "--dst",
                    "198.18.0.1:20000",
                ],
                expect: 2,
                json_key: None,
                target: None,
            },
            View {
                name: "show services, 100,000 flows in conntrack",
                args: &["services"],
                expect: service_lines,
                json_key: None,
                target: None,
            },
        ],
    )?);

    Ok(json!({
        "runs": runs,
        "services": SERVICES,
        "flows": FLOWS,
        "figures": figures.iter().map(|f| {
            let med = median(&f.seconds);
            json!({
                "figure": f.view.name,
                "command": format!("netbpf show {}", f.view.args.join(" ")),
                "seconds": f.seconds,
                "median": med,
                "target_max_seconds": f.view.target,
                "met": f.view.target.map(|t| med <= t),
            })
        }).collect::<Vec<_>>(),
    }))
}

/// Times `views` `runs` times each, the views taking turns within a run.
fn measure(
    netbpf_bin: &Path,
    lab: &Lab,
    runs: usize,
    views: Vec<View>,
) -> anyhow::Result<Vec<Figure>> {
    let mut figures: Vec<Figure> = views
        .into_iter()
        .map(|view| Figure {
            view,
            seconds: Vec::new(),
        })
        .collect();
    for round in 1..=runs {
        for f in &mut figures {
            progress(&format!(
                "inspect: run {round}/{runs}, netbpf show {}",
                f.view.args.join(" ")
            ));
            f.seconds.push(time_view(netbpf_bin, lab, &f.view)?);
        }
    }
    Ok(figures)
}

/// The scenario's section of report.md.
pub fn report(md: &mut String, results: &Value) {
    let Some(figures) = results["figures"].as_array() else {
        return;
    };
    let _ = write!(
        md,
        "\n## `netbpf show` on a large datapath (`--only {ID}`)\n\n{} services of three \
         backends each, then {} published-port flows written into the pinned conntrack table. \
         Wall time of one `netbpf show` process, start to exit, its whole output read through a \
         pipe; median (min-max) of {} runs, the views taking turns.\n\n\
         | figure | command | seconds | target | met |\n|---|---|---|---|---|\n",
        thousands(results["services"].as_u64().unwrap_or(0)),
        thousands(results["flows"].as_u64().unwrap_or(0)),
        results["runs"]
    );
    for f in figures {
        let secs: Vec<f64> = f["seconds"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let (lo, hi) = min_max(&secs);
        let target = f["target_max_seconds"].as_f64();
        let _ = writeln!(
            md,
            "| {} | `{}` | {:.3} ({lo:.3}-{hi:.3}) | {} | {} |",
            f["figure"].as_str().unwrap_or("?"),
            f["command"].as_str().unwrap_or("?"),
            median(&secs),
            target.map_or("-".to_owned(), |t| format!("<= {t} s")),
            match f["met"].as_bool() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
        );
    }
}

/// `100000` as `100,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_every_figure_against_its_target() {
        let results = json!({
            "runs": 3, "services": 10000, "flows": 100000,
            "figures": [
                {"figure": "a", "command": "netbpf show services", "seconds": [0.2, 0.3, 0.25],
                 "median": 0.25, "target_max_seconds": 1.0, "met": true},
                {"figure": "b", "command": "netbpf show backends", "seconds": [1.5],
                 "median": 1.5, "target_max_seconds": null, "met": null},
            ]
        });
        let mut md = String::new();
        report(&mut md, &results);
        assert!(
            md.contains("| a | `netbpf show services` | 0.250 (0.200-0.300) | <= 1 s | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| b | `netbpf show backends` | 1.500 (1.500-1.500) | - | - |"),
            "{md}"
        );
        assert!(
            md.contains("10,000 services of three backends each, then 100,000"),
            "{md}"
        );
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
    }
}
