//! The `ports` scenario: an outside client opening connections to a published port with
//! 1, 1,000 and 5,000 ports published, Docker's iptables rules (three per port: nat DOCKER
//! DNAT, filter DOCKER ACCEPT, nat POSTROUTING MASQUERADE) against netbpf's `NB_PORTS`;
//! the port measured is the last one published (the last DNAT rule of the DOCKER chain).
//! Also the time to publish the whole set (netbpf apply against iptables-restore) and to
//! change one port with the set in place (netbpf apply against the iptables commands
//! dockerd runs: its three rules deleted and added again).
//!
//! One server container publishes every port; the last published port leads to nginx's
//! port 80, the others to ports nothing listens on (each port its own rules, as with
//! many containers).

use std::{
    fs,
    net::SocketAddrV4,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::Context as _;
use netbpf_common::stats::{Hook, Outcome};
use netbpf_tests::{
    TempDir,
    lab::{HOST_UPLINK_IP, OUTSIDE_IP},
    unique_prefix,
};

use super::{
    BENCH_PREFIX, Derived, Measured, Metric, Scenario, Timing, check_counters, labs, progress,
    tools,
};
use crate::cmd;

pub const PORTS: Scenario = Scenario {
    id: "ports",
    title: "Outside to a published port, 1 to 5,000 ports published",
    about: "An outside client opens connections to the last of 1, 1,000 or 5,000 ports \
            published by one container (host ports 20000 on; the last leads to nginx on port \
            80, the others to ports of their own). `iptables` is Docker's path with dockerd's \
            three rules per port (nat DOCKER DNAT, filter DOCKER ACCEPT, nat POSTROUTING \
            MASQUERADE) on the bridge lab with br_netfilter, written by iptables-restore; \
            `netbpf` publishes the same ports in its definitions file, the uplink program at \
            tc. Each count has a lab of its own per target, every round measuring every count.",
    targets: &["iptables", "netbpf"],
    baseline: "iptables",
    contenders: &["netbpf"],
    floor: None,
};

pub const COUNTS: [usize; 3] = [1, 1000, 5000];
const MOST: usize = COUNTS[2];
const FIRST_HOST_PORT: u16 = 20000;
/// Where the changed port moves to and back.
const MOVED_HOST_PORT: u16 = 30000;

/// The published ports of a count: (host port, container port); the last leads to nginx.
/// `moved`: the first port's host port moved to [`MOVED_HOST_PORT`].
fn ports(count: usize, moved: bool) -> Vec<(u16, u16)> {
    (0..count)
        .map(|i| {
            let host = if moved && i == 0 {
                MOVED_HOST_PORT
            } else {
                FIRST_HOST_PORT + i as u16
            };
            let container = if i + 1 == count {
                tools::HTTP_PORT
            } else {
                10000 + i as u16
            };
            (host, container)
        })
        .collect()
}

fn label(count: usize) -> String {
    match count {
        1 => "1 port".to_owned(),
        n if n >= 1000 => format!("{},{:03} ports", n / 1000, n % 1000),
        n => format!("{n} ports"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Iptables,
    Netbpf,
}

struct Target {
    kind: Kind,
    count: usize,
    lab: netbpf_tests::lab::Lab,
    dir: PathBuf,
}

impl Target {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Iptables => "iptables",
            Kind::Netbpf => "netbpf",
        }
    }

    fn server(&self) -> &netbpf_tests::netns::Netns {
        &self.lab.containers[0]
    }

    /// netbpf's definitions: the server container with `ports` (none: no `ports` line).
    fn definitions(&self, ports: &[(u16, u16)]) -> String {
        let line = if ports.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = ports.iter().map(|(h, c)| format!("\"{h}:{c}\"")).collect();
            format!("ports = [{}]", list.join(", "))
        };
        format!(
            "[host]\n{}\n[[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n{}",
            labs::uplink("tc"),
            labs::container("server", self.server(), labs::SERVER_IP, &line)
        )
    }

    fn netbpf_apply(&self, netbpf_bin: &Path, text: &str) -> anyhow::Result<f64> {
        let path = self.dir.join("netbpf.toml");
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let started = Instant::now();
        cmd::output(
            Command::new(netbpf_bin)
                .args(["--netns", self.lab.host.name(), "apply", "-c"])
                .arg(&path),
        )?;
        Ok(started.elapsed().as_secs_f64())
    }

    fn iptables_restore(&self, text: &str) -> anyhow::Result<f64> {
        let path = self.dir.join("docker.rules");
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let started = Instant::now();
        // In the lab's host namespace, never the machine's.
        self.lab
            .host
            .exec("iptables-restore", &[&path.display().to_string()])?;
        Ok(started.elapsed().as_secs_f64())
    }

    /// Publishes the whole set (from none); returns the time it took.
    fn publish_all(&self, netbpf_bin: &Path) -> anyhow::Result<f64> {
        match self.kind {
            Kind::Iptables => {
                self.iptables_restore(&labs::iptables_rules(&[], &[], false))?;
                self.iptables_restore(&labs::iptables_rules(&ports(self.count, false), &[], false))
            }
            Kind::Netbpf => {
                self.netbpf_apply(netbpf_bin, &self.definitions(&[]))?;
                self.netbpf_apply(netbpf_bin, &self.definitions(&ports(self.count, false)))
            }
        }
    }

    /// Moves the first port's host port (`moved`) or back; returns the time it took.
    fn change_one(&self, netbpf_bin: &Path, moved: bool) -> anyhow::Result<f64> {
        match self.kind {
            Kind::Netbpf => {
                self.netbpf_apply(netbpf_bin, &self.definitions(&ports(self.count, moved)))
            }
            Kind::Iptables => {
                let (from, to) = (ports(self.count, !moved)[0], ports(self.count, moved)[0]);
                let started = Instant::now();
                for (op, (host, container)) in [("-D", from), ("-A", to)] {
                    for rule in docker_rules(host, container) {
                        let mut args = vec!["-w"];
                        args.extend(rule.iter().map(|a| match *a {
                            "OP" => op,
                            other => other,
                        }));
                        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        self.lab.host.exec("iptables", &args)?;
                    }
                }
                Ok(started.elapsed().as_secs_f64())
            }
        }
    }
}

/// dockerd's three rules for one published TCP port, as `iptables` arguments (`OP` where
/// -A or -D goes).
fn docker_rules(host: u16, container: u16) -> Vec<Vec<&'static str>> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let server = leak(format!("{}/32", labs::SERVER_IP));
    let to = leak(format!("{}:{container}", labs::SERVER_IP));
    let (host, container) = (leak(host.to_string()), leak(container.to_string()));
    vec![
        vec![
            "-t",
            "nat",
            "OP",
            "DOCKER",
            "!",
            "-i",
            "br0",
            "-p",
            "tcp",
            "-m",
            "tcp",
            "--dport",
            host,
            "-j",
            "DNAT",
            "--to-destination",
            to,
        ],
        vec![
            "-t", "filter", "OP", "DOCKER", "-d", server, "!", "-i", "br0", "-o", "br0", "-p",
            "tcp", "-m", "tcp", "--dport", container, "-j", "ACCEPT",
        ],
        vec![
            "-t",
            "nat",
            "OP",
            "POSTROUTING",
            "-s",
            server,
            "-d",
            server,
            "-p",
            "tcp",
            "-m",
            "tcp",
            "--dport",
            container,
            "-j",
            "MASQUERADE",
        ],
    ]
}

fn build(kind: Kind, count: usize, dir: &Path) -> anyhow::Result<Target> {
    let dir = dir.join(format!(
        "{}-{count}",
        if kind == Kind::Iptables {
            "iptables"
        } else {
            "netbpf"
        }
    ));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lab = match kind {
        Kind::Iptables => {
            let lab = labs::bridged(BENCH_PREFIX, &[labs::SERVER_IP])?;
            lab.host.sysctl("net.bridge.bridge-nf-call-iptables", "1")?;
            lab.host.sysctl("net.ipv4.ip_forward", "1")?;
            lab
        }
        Kind::Netbpf => netbpf_tests::lab::Lab::new(BENCH_PREFIX, 1).context("netbpf lab")?,
    };
    Ok(Target {
        kind,
        count,
        lab,
        dir,
    })
}

pub fn run(netbpf_bin: &Path, quick: bool, timing: &Timing) -> anyhow::Result<Measured> {
    progress("ports: building Docker's iptables labs and netbpf's, at 1, 1,000 and 5,000 ports");
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let mut targets = Vec::new();
    for count in COUNTS {
        for kind in [Kind::Iptables, Kind::Netbpf] {
            targets.push(build(kind, count, dir.path())?);
        }
    }
    let samples = if quick { 1 } else { timing.scale_rounds };
    let mut apply = Metric::new(
        "publish 5,000 ports",
        "wall time of `netbpf apply -c FILE` of the file with the 5,000 ports, the container \
         applied before without them / of `iptables-restore` of dockerd's rules for them \
         (15,000 rules) into the tables with none; the targets taking turns, one sample each \
         per round (the first publication only in a quick run)",
        "s",
        false,
        None,
    );
    let mut change = Metric::new(
        "change one published port, 5,000 in place",
        "wall time of `netbpf apply -c FILE` with the first port's host port moved / of the six \
         `iptables -w` commands dockerd runs for it (its DNAT, ACCEPT and MASQUERADE rules \
         deleted, then added for the new mapping); there and back each round, both timed",
        "s",
        false,
        None,
    );
    for t in &targets {
        progress(&format!(
            "ports: publishing {} on {}",
            label(t.count),
            t.name()
        ));
        let took = t.publish_all(netbpf_bin)?;
        if t.count == MOST {
            apply.values.entry(t.name()).or_default().push(took);
        }
    }
    let _servers = targets
        .iter()
        .map(|t| tools::start_web(t.server(), labs::SERVER_IP, &t.dir))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let most: Vec<&Target> = targets.iter().filter(|t| t.count == MOST).collect();
    for round in 1..=samples {
        for t in &most {
            progress(&format!(
                "ports: round {round}/{samples}, {}: publishing 5,000 ports, changing one",
                t.name()
            ));
            if round > 1 {
                let took = t.publish_all(netbpf_bin)?;
                apply.values.entry(t.name()).or_default().push(took);
            }
            for moved in [true, false] {
                let took = t.change_one(netbpf_bin, moved)?;
                change.values.entry(t.name()).or_default().push(took);
            }
        }
    }

    let mut metrics: Vec<Metric> = COUNTS
        .iter()
        .map(|count| {
            Metric::new(
                super::services::leak(format!(
                    "new connections (HTTP) to a published port, {}",
                    label(*count)
                )),
                "wrk -t1 -c16 from outside to the last port published, `Connection: close`",
                "conn/s",
                true,
                None,
            )
        })
        .collect();
    let mut flow_cost = tools::syn_cost_metrics(
        COUNTS
            .iter()
            .map(|c| format!("to a published port, {}", label(*c))),
    );
    let rounds = timing.scale_rounds;
    for round in 1..=rounds {
        for k in 0..COUNTS.len() {
            let n = (k + round - 1) % COUNTS.len();
            for t in targets.iter().filter(|t| t.count == COUNTS[n]) {
                progress(&format!(
                    "ports: round {round}/{rounds}, {}, {}",
                    label(t.count),
                    t.name()
                ));
                let port = FIRST_HOST_PORT + (t.count - 1) as u16;
                let (rate, cost) = tools::new_flow_figures(
                    &t.lab.outside,
                    OUTSIDE_IP,
                    SocketAddrV4::new(HOST_UPLINK_IP, port),
                    round,
                    timing.wrk,
                )
                .with_context(|| format!("ports: {} at {}", t.name(), label(t.count)))?;
                metrics[n].values.entry(t.name()).or_default().push(rate);
                flow_cost[n].values.entry(t.name()).or_default().push(cost);
            }
        }
    }
    for t in targets.iter().filter(|t| t.kind == Kind::Netbpf) {
        check_counters(
            netbpf_bin,
            &format!("netbpf at {}", label(t.count)),
            &t.lab,
            &[(Hook::FromUplink, Outcome::Published)],
            &[],
        )?;
    }
    let flat = |target: &'static str| {
        metrics[2]
            .of(target)
            .iter()
            .zip(metrics[0].of(target))
            .map(|(m, o)| m / o)
            .collect::<Vec<f64>>()
    };
    let derived = vec![
        Derived {
            name: "netbpf's new connections/s at 5,000 ports / at 1 port",
            how: "the two rates above, each round's pair",
            per_round: flat("netbpf"),
            target: None,
            higher_is_better: true,
        },
        Derived {
            name: "iptables' new connections/s at 5,000 ports / at 1 port",
            how: "the same for the baseline",
            per_round: flat("iptables"),
            target: None,
            higher_is_better: true,
        },
    ];
    metrics.push(apply);
    metrics.push(change);
    metrics.extend(flow_cost);
    Ok(Measured {
        scenario: &PORTS,
        metrics,
        derived,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_port_leads_to_nginx() {
        let p = ports(1000, false);
        assert_eq!(p.len(), 1000);
        assert_eq!(p[0], (20000, 10000));
        assert_eq!(p[999], (20999, 80));
        assert_eq!(ports(3, true)[0], (30000, 10000));
        assert_eq!(ports(1, false), vec![(20000, 80)]);
        let rules = docker_rules(20000, 10000);
        assert_eq!(rules.len(), 3);
        assert!(rules[0].contains(&"198.18.10.3:10000"));
    }
}
