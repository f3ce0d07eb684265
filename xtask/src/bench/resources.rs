//! The `resources` scenario: what netbpf costs the host when it is not moving packets.
//!
//! - The agent's resident memory: `netbpf agent` in a bench namespace, idle with one
//!   container, then started again over a definitions file with 10,000 services of three
//!   backends each; VmRSS from /proc/PID/status once the agent has applied its file and
//!   settled (issue 7: at most 30 MiB idle, 64 MiB with 10,000 services).
//! - Its CPU time while idle: utime + stime from /proc/PID/stat over a fixed window after
//!   it settled (near zero: no busy polling).
//! - The memory of every map at its default size: `bpftool map show pinned` of each map the
//!   agent pinned, its `bytes_memlock` (the kernel's charge for the map, as fdinfo's
//!   memlock), against issue 7's 256 MiB for all of them together.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use netbpf_common::pin_paths::NETNS_PIN_ROOT;
use netbpf_tests::{TempDir, lab::Lab, process::Background, unique_prefix};
use serde_json::{Value, json};

use super::{BENCH_PREFIX, progress};
use crate::cmd;

pub const ID: &str = "resources";
const SERVICES: usize = 10_000;
/// Live flows in conntrack for the third sample.
const FLOWS: u32 = 100_000;
/// Targets (issue 7).
const IDLE_RSS_MIB: f64 = 30.0;
const LOADED_RSS_MIB: f64 = 64.0;
const MAPS_MIB: f64 = 256.0;

/// A field of /proc/PID/status in kB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
}

pub fn parse_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/PID/stat without a command")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("field {n} of /proc/PID/stat"))
    };
    Ok(field(14)? + field(15)?)
}

fn clock_ticks() -> f64 {
    cmd::output(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Starts `netbpf agent` over `file` in the lab's host namespace and waits until its maps
/// hold `services` services (and it has stayed quiet for a moment).
fn start_agent(
    netbpf_bin: &Path,
    lab: &Lab,
    file: &Path,
    services: usize,
    log: &Path,
) -> anyhow::Result<Background> {
    let mut agent = Command::new(netbpf_bin);
    agent
        .args(["agent", "--netns", lab.host.name(), "-c"])
        .arg(file)
        .stderr(fs::File::create(log).context("agent log")?);
    let agent = Background::spawn(agent)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cmd::output(Command::new(netbpf_bin).args([
            "--netns",
            lab.host.name(),
            "show",
            "services",
            "-o",
            "json",
        ]));
        if let Ok(out) = out
            && serde_json::from_str::<Vec<Value>>(&out).is_ok_and(|v| v.len() == services)
            && serde_json::from_str::<Vec<Value>>(
                &cmd::output(Command::new(netbpf_bin).args([
                    "--netns",
                    lab.host.name(),
                    "show",
                    "containers",
                    "-o",
                    "json",
                ]))
                .unwrap_or_default(),
            )
            .is_ok_and(|v| v.len() == 1)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the agent never applied its file ({services} services): see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Settled: whatever the first reconcile started (health checks, timers) is running.
    std::thread::sleep(Duration::from_secs(1));
    Ok(agent)
}

/// The agent's memory and its CPU time over `window`.
fn sample(agent: &Background, window: Duration) -> anyhow::Result<Value> {
    let pid = agent.pid();
    let rss = status_kib(pid, "VmRSS")? / 1024.0;
    let hwm = status_kib(pid, "VmHWM")? / 1024.0;
    let before = cpu_ticks(pid)?;
    std::thread::sleep(window);
    let after = cpu_ticks(pid)?;
    let cpu = (after - before) as f64 / clock_ticks();
    Ok(json!({
        "rss_mib": rss, "peak_rss_mib": hwm, "cpu_seconds": cpu,
        "window_seconds": window.as_secs_f64(),
        "cpu_percent": 100.0 * cpu / window.as_secs_f64(),
    }))
}

/// Every pinned map of the lab: name, type, max entries, bytes_memlock.
fn maps(lab: &Lab) -> anyhow::Result<Vec<Value>> {
    let dir = Path::new(NETNS_PIN_ROOT).join(lab.host.name()).join("maps");
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries
        .iter()
        .map(|path| {
            let out = cmd::output(
                Command::new("bpftool")
                    .args(["-j", "map", "show", "pinned"])
                    .arg(path),
            )?;
            let v: Value = serde_json::from_str(&out).context("bpftool JSON")?;
            Ok(json!({
                "name": v["name"], "type": v["type"], "max_entries": v["max_entries"],
                "key_size": v["bytes_key"], "value_size": v["bytes_value"],
                "bytes_memlock": v["bytes_memlock"],
            }))
        })
        .collect()
}

pub fn run(netbpf_bin: &Path, quick: bool) -> anyhow::Result<Value> {
    let window = Duration::from_secs(if quick { 2 } else { 10 });
    progress("resources: netbpf agent idle (one container) in a bench namespace");
    let lab = Lab::new(BENCH_PREFIX, 1).context("lab")?;
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let idle_file = dir
        .write("idle.toml", &super::inspect::definitions(&lab, 0, None))
        .context("definitions")?;
    let agent = start_agent(
        netbpf_bin,
        &lab,
        &idle_file,
        0,
        &dir.path().join("agent-idle.log"),
    )?;
    let idle = sample(&agent, window)?;
    let maps = maps(&lab)?;

    // The same agent with conntrack holding live flows: its garbage collection reads the
    // whole table every few seconds (half the shortest timeout).
    progress(&format!(
        "resources: the same agent with {FLOWS} live flows in conntrack"
    ));
    write_live_flows(&lab)?;
    let with_flows = sample(&agent, window)?;
    drop(agent);

    progress(&format!(
        "resources: netbpf agent started over {SERVICES} services"
    ));
    let loaded_file = dir
        .write(
            "loaded.toml",
            &super::inspect::definitions(&lab, SERVICES, None),
        )
        .context("definitions")?;
    let agent = start_agent(
        netbpf_bin,
        &lab,
        &loaded_file,
        SERVICES,
        &dir.path().join("agent-loaded.log"),
    )?;
    let loaded = sample(&agent, window)?;
    drop(agent);

    let total: f64 = maps
        .iter()
        .filter_map(|m| m["bytes_memlock"].as_f64())
        .sum::<f64>()
        / (1024.0 * 1024.0);
    Ok(json!({
        "idle": idle, "services": SERVICES, "with_services": loaded, "maps": maps,
        "flows": FLOWS, "with_flows": with_flows,
        "maps_total_mib": total,
        "targets": {"idle_rss_mib": IDLE_RSS_MIB, "loaded_rss_mib": LOADED_RSS_MIB,
                    "maps_total_mib": MAPS_MIB},
    }))
}

/// Fills the lab's conntrack table with [`FLOWS`] flows seen just now (the kernel's current
/// jiffies, as the datapath stamps them): live for UDP's two minutes.
fn write_live_flows(lab: &Lab) -> anyhow::Result<()> {
    let timer_list = fs::read_to_string("/proc/timer_list").context("reading /proc/timer_list")?;
    let now: u64 = timer_list
        .lines()
        .find_map(|l| l.trim().strip_prefix("jiffies:"))
        .and_then(|j| j.trim().parse().ok())
        .context("no jiffies in /proc/timer_list")?;
    super::inspect::write_flows(lab, FLOWS, now)
}

/// The scenario's section of report.md.
pub fn report(md: &mut String, r: &Value) {
    if r.is_null() {
        return;
    }
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let met = |ok: bool| if ok { "yes" } else { "NO" };
    let (idle, loaded, flows) = (&r["idle"], &r["with_services"], &r["with_flows"]);
    let cpu = |v: &Value| {
        format!(
            "{:.2} s in {:.0} s ({:.2}% of a CPU)",
            f(&v["cpu_seconds"]),
            f(&v["window_seconds"]),
            f(&v["cpu_percent"])
        )
    };
    let _ = write!(
        md,
        "\n## Resources (`--only {ID}`)\n\n`netbpf agent` in a bench namespace: first with one \
         container (idle), then started anew over a file with {} services of three backends \
         each; the first agent also with 100,000 live flows written into conntrack. Memory: VmRSS (and the peak, VmHWM) from /proc/PID/status once the agent's maps \
         hold the file and it has settled 1 s. CPU: utime + stime from /proc/PID/stat over a \
         {:.0} s window after that, nothing changing. Maps: `bpftool map show pinned` of every \
         map the agent pinned, its `bytes_memlock` (the memory the kernel charges for it), at \
         the default sizes.\n\n\
         | figure | measured | target | met |\n|---|---|---|---|\n",
        r["services"],
        f(&idle["window_seconds"]),
    );
    let total = f(&r["maps_total_mib"]);
    let rows = [
        (
            "agent resident memory, idle".to_owned(),
            format!(
                "{:.1} MiB (peak {:.1})",
                f(&idle["rss_mib"]),
                f(&idle["peak_rss_mib"])
            ),
            format!("<= {IDLE_RSS_MIB} MiB"),
            met(f(&idle["rss_mib"]) <= IDLE_RSS_MIB),
        ),
        (
            "agent resident memory, 10,000 services".to_owned(),
            format!(
                "{:.1} MiB (peak {:.1})",
                f(&loaded["rss_mib"]),
                f(&loaded["peak_rss_mib"])
            ),
            format!("<= {LOADED_RSS_MIB} MiB"),
            met(f(&loaded["rss_mib"]) <= LOADED_RSS_MIB),
        ),
        (
            "agent CPU time while idle".to_owned(),
            cpu(idle),
            "near zero (< 1% of a CPU)".to_owned(),
            met(f(&idle["cpu_percent"]) < 1.0),
        ),
        (
            "agent CPU time idle with 10,000 services".to_owned(),
            cpu(loaded),
            "near zero (< 1% of a CPU)".to_owned(),
            met(f(&loaded["cpu_percent"]) < 1.0),
        ),
        (
            format!(
                "agent CPU time with {},{:03} live flows in conntrack (its expiry pass every 5 s)",
                r["flows"].as_u64().unwrap_or(0) / 1000,
                r["flows"].as_u64().unwrap_or(0) % 1000
            ),
            cpu(flows),
            "-".to_owned(),
            "-",
        ),
        (
            "all maps together, default sizes".to_owned(),
            format!("{total:.1} MiB"),
            format!("<= {MAPS_MIB} MiB"),
            met(total <= MAPS_MIB),
        ),
    ];
    for (name, value, target, ok) in rows {
        let _ = writeln!(md, "| {name} | {value} | {target} | {ok} |");
    }
    let _ = write!(
        md,
        "\n| map | type | max entries | key + value bytes | memlock |\n|---|---|---|---|---|\n"
    );
    if let Some(maps) = r["maps"].as_array() {
        let mut maps: Vec<&Value> = maps.iter().collect();
        maps.sort_by(|a, b| f(&b["bytes_memlock"]).total_cmp(&f(&a["bytes_memlock"])));
        for m in maps {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} + {} | {:.2} MiB |",
                m["name"].as_str().unwrap_or("?"),
                m["type"].as_str().unwrap_or("?"),
                m["max_entries"],
                m["key_size"],
                m["value_size"],
                f(&m["bytes_memlock"]) / (1024.0 * 1024.0)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_past_the_command() {
        let stat = "1234 (netbpf (agent)) S 1 1234 1234 0 -1 4194560 500 0 0 0 17 4 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat).expect("parses"), 21);
    }
}
