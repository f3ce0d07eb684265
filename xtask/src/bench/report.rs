//! target/bench/report.md (one table per scenario, then per-packet costs) and results.json.

use std::{fmt::Write as _, fs};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{
    Measured, Metric, median, min_max,
    tools::{CLIENT_CPU, SERVER_CPU},
};
use crate::cmd::{self, step};

pub fn write(
    measured: &[Measured],
    prog_cost: &Value,
    inspected: &Value,
    rounds: usize,
    seconds: u32,
) -> anyhow::Result<()> {
    let out_dir = cmd::workspace_root().join("target/bench");
    fs::create_dir_all(&out_dir).context("creating target/bench")?;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = format!(
        "# netbpf benchmark\n\nKernel {}, {cpus} CPUs.\n",
        kernel.trim()
    );
    if !measured.is_empty() {
        let _ = write!(
            md,
            "\nEnd to end: {rounds} rounds of {seconds} s per figure, the targets of a scenario \
             taking turns within each round. Servers run on CPU {SERVER_CPU}, client tools on CPU \
             {CLIENT_CPU} (a proxy and the kernel's work where the scheduler puts them). Cells: \
             median (min-max) over the rounds. Ratio = netbpf's figure / the baseline's in the \
             same round; the median of the per-round ratios decides.\n"
        );
    }
    let mut json_scenarios = Vec::new();
    for m in measured {
        json_scenarios.push(scenario_table(&mut md, m));
    }
    let json_cost = prog_cost_table(&mut md, prog_cost)?;
    if md.contains(" NO |") || md.contains(": NO") {
        md.push_str(
            "\nWhy a target marked NO is missed (profiles and reasoning): README.md, section \
             Benchmarks.\n",
        );
    }
    super::inspect::report(&mut md, inspected);
    fs::write(out_dir.join("report.md"), &md).context("writing report.md")?;
    let results = json!({
        "rounds": rounds, "seconds": seconds, "scenarios": json_scenarios, "prog_cost": json_cost,
        "inspect": inspected,
    });
    fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )
    .context("writing results.json")?;
    println!("\n{md}");
    step(&format!("report: {}", out_dir.join("report.md").display()));
    Ok(())
}

/// Writes a scenario's table and returns its figures as JSON.
fn scenario_table(md: &mut String, measured: &Measured) -> Value {
    let s = measured.scenario;
    let _ = write!(
        md,
        "\n## {} (`--only {}`)\n\n{}\n\n| figure | measured with |",
        s.title, s.id, s.about
    );
    let mut columns = 2 + s.targets.len() + 2;
    for t in s.targets {
        let _ = write!(md, " {t} |");
    }
    for c in s.contenders {
        let _ = write!(md, " {c}/{} (per round) |", s.baseline);
        columns += 1;
    }
    if let Some(floor) = s.floor {
        for c in s.contenders {
            let _ = write!(md, " {c}/{floor} |");
            columns += 1;
        }
    }
    md.push_str(" target | met |\n|");
    md.push_str(&"---|".repeat(columns));
    md.push('\n');

    let mut figures = Vec::new();
    for m in &measured.metrics {
        let cell = |t: &str| {
            if m.of(t).is_empty() {
                return "-".to_owned();
            }
            let (lo, hi) = min_max(m.of(t));
            format!("{:.2} ({lo:.2}-{hi:.2})", median(m.of(t)))
        };
        let _ = write!(md, "| {} ({}) | {} |", m.name, m.unit, m.how);
        for t in s.targets {
            let _ = write!(md, " {} |", cell(t));
        }
        let mut ratios = serde_json::Map::new();
        for c in s.contenders {
            let per_round = m.ratios(c, s.baseline);
            if per_round.is_empty() {
                md.push_str(" - |");
            } else {
                let _ = write!(
                    md,
                    " {:.3} ({}) |",
                    median(&per_round),
                    per_round
                        .iter()
                        .map(|r| format!("{r:.2}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            let vs_floor = s.floor.map(|f| median(&m.ratios(c, f)));
            ratios.insert(
                (*c).to_owned(),
                json!({
                    "per_round": per_round, "median": median(&per_round),
                    "met": m.meets_target(c, s.baseline), "median_vs_floor": vs_floor,
                }),
            );
        }
        if let Some(floor) = s.floor {
            for c in s.contenders {
                match m.ratios(c, floor).as_slice() {
                    [] => md.push_str(" - |"),
                    ratios => {
                        let _ = write!(md, " {:.3} |", median(ratios));
                    }
                }
            }
        }
        let _ = writeln!(md, " {} | {} |", target_text(m, s), met_text(m, s));
        figures.push(json!({
            "figure": m.name, "how": m.how, "unit": m.unit, "values": m.values,
            "target": m.target, "limit": m.limit, "higher_is_better": m.higher_is_better,
            "ratios_vs_baseline": ratios,
        }));
    }
    let mut derived = Vec::new();
    if !measured.derived.is_empty() {
        md.push_str(
            "\n| derived figure | from | median (per round) | target | met |\n|---|---|---|---|---|\n",
        );
    }
    for d in &measured.derived {
        let per_round: Vec<String> = d.per_round.iter().map(|r| format!("{r:.2}")).collect();
        let dir = if d.higher_is_better { ">=" } else { "<=" };
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} ({}) | {} | {} |",
            d.name,
            d.how,
            median(&d.per_round),
            per_round.join(" "),
            d.target.map_or("-".to_owned(), |t| format!("{dir} {t}")),
            match d.meets_target() {
                None => "-",
                Some(true) => "yes",
                Some(false) => "NO",
            }
        );
        derived.push(json!({
            "figure": d.name, "how": d.how, "per_round": d.per_round,
            "median": median(&d.per_round), "target": d.target,
            "higher_is_better": d.higher_is_better, "met": d.meets_target(),
        }));
    }
    json!({
        "scenario": s.id, "targets": s.targets, "baseline": s.baseline,
        "floor": s.floor, "figures": figures, "derived": derived,
    })
}

fn target_text(m: &Metric, s: &super::Scenario) -> String {
    let dir = if m.higher_is_better { ">=" } else { "<=" };
    let ratio = m.target.map(|t| format!("{dir} {t}"));
    let limit = m
        .limit
        .map(|l| format!("{} {dir} {l} {}", s.contenders.join(", "), m.unit));
    match (ratio, limit) {
        (None, None) => "-".to_owned(),
        (Some(r), None) => r,
        (None, Some(l)) => l,
        (Some(r), Some(l)) => format!("{r}; {l}"),
    }
}

/// "yes"/"NO" per contender (just the word when the scenario has one).
fn met_text(m: &Metric, s: &super::Scenario) -> String {
    if m.target.is_none() && m.limit.is_none() {
        return "-".to_owned();
    }
    let word = |c: &str| match m.meets_target(c, s.baseline) {
        Some(true) => "yes",
        _ => "NO",
    };
    match s.contenders {
        [only] => word(only).to_owned(),
        many => many
            .iter()
            .map(|c| format!("{c}: {}", word(c)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Writes the per-packet cost tables (the prog_cost example's JSON: paths repeated on one
/// packet, then paths timed one run at a time) and returns the figures with their distance
/// from the empty program.
fn prog_cost_table(md: &mut String, prog_cost: &Value) -> anyhow::Result<Value> {
    let Some(paths) = prog_cost["paths"].as_array() else {
        return Ok(Value::Null);
    };
    let ns_of = |name: &str| -> anyhow::Result<Vec<f64>> {
        let path = paths
            .iter()
            .find(|p| p["name"] == name)
            .with_context(|| format!("prog_cost output has no path {name}"))?;
        Ok(values(&path["ns"]))
    };
    const HEADER: &str =
        "| path | what it does | ns | above empty | budget | met |\n|---|---|---|---|---|---|\n";
    let _ = write!(
        md,
        "\n## Per-packet cost (`--only prog-cost`)\n\nBPF_PROG_TEST_RUN of one packet per path, {} \
         repeats, median (min-max) of {} runs, ns per packet; each path beside an empty program \
         of its type (tc or XDP) in the same run, the paths interleaved. Every run is checked: \
         the path's verdict, its counter rising by exactly the repeat count, and (translated \
         paths) the exact bytes of one run against the datapath's own conntrack entries. A test \
         run repeats on the packet it rewrote, so for the translated paths the conntrack table \
         also holds the way back: the packet alternates between two tuples, each repeat a \
         conntrack hit with a rewrite. On `from_container` the way back cannot change the \
         source address (the sender check would drop it), so those repeats rewrite the \
         address to itself and move the port (a VIP flow: to another VIP, its MACs kept): the \
         same lookups and checksum helper calls.\n\n{HEADER}",
        prog_cost["repeat"], prog_cost["runs"],
    );
    let (repeated, single): (Vec<&Value>, Vec<&Value>) =
        paths.iter().partition(|p| p["method"] != "single");
    let mut rows = Vec::new();
    for p in repeated {
        rows.push(cost_row(md, p, &ns_of)?);
    }
    if !single.is_empty() {
        let _ = write!(
            md,
            "\nA new flow cannot be repeated (the first repetition records it, the rest find it), \
             so these paths are timed one test run at a time: {} runs per round, each a SYN from \
             a source port no flow holds, the paths taking turns run by run, beside the empty \
             programs timed the same way (`empty_tc_single`, `empty_xdp_single`: they carry the \
             test run's own fixed cost); a round's figure is the median of its runs, the cell \
             the median (min-max) of the {} rounds. A single run finds caches colder than a \
             repeated one: `vip_established_single` is the established VIP path timed this \
             way, to set beside `vip_established` above. Every run is checked (its verdict, its \
             frame exactly one of those its service's backends give), and every round: the \
             service's backends opened one connection per run, the hook counted one service \
             packet per run, and conntrack gained exactly the two entries of each new flow \
             (removed after the round, so that every round starts from the same table).\n\n\
             {HEADER}",
            prog_cost["new_flows"], prog_cost["runs"],
        );
        for p in single {
            rows.push(cost_row(md, p, &ns_of)?);
        }
    }
    Ok(json!({
        "runs": prog_cost["runs"], "repeat": prog_cost["repeat"],
        "new_flows": prog_cost["new_flows"], "paths": rows,
    }))
}

/// Writes one row of a per-packet cost table; returns the path with its median and its
/// distance from the empty program.
fn cost_row(
    md: &mut String,
    p: &Value,
    ns_of: &dyn Fn(&str) -> anyhow::Result<Vec<f64>>,
) -> anyhow::Result<Value> {
    let name = p["name"].as_str().unwrap_or("?");
    let empty = p["empty"].as_str().unwrap_or("?");
    let ns = values(&p["ns"]);
    let (lo, hi) = min_max(&ns);
    let above = median(&ns) - median(&ns_of(empty)?);
    let budget = p["budget_above_empty"].as_f64();
    let above_cell = if name == empty {
        "-".to_owned()
    } else {
        format!("{above:+.0} ({empty})")
    };
    let _ = writeln!(
        md,
        "| {name} | {} | {:.0} ({lo:.0}-{hi:.0}) | {above_cell} | {} | {} |",
        p["what"].as_str().unwrap_or(""),
        median(&ns),
        budget.map_or("-".to_owned(), |b| format!("<= {b:+.0}")),
        budget.map_or("-", |b| if above <= b { "yes" } else { "NO" }),
    );
    let mut row = p.clone();
    row["median"] = json!(median(&ns));
    row["above_empty"] = json!(above);
    Ok(row)
}

fn values(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}
