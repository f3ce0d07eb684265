//! `docker`: the same container-to-container and published-port figures through a real
//! Docker Engine (Debian's docker.io), its default bridge driver (Linux bridge, its
//! iptables rules, docker-proxy) against netbpf as its network driver. Each target is a
//! dockerd of its own in a lab's host namespace (see `netbpf_tests::dockerd`); the
//! containers are busybox `sleep`s that only hold their network namespaces, and the
//! benchmark's tools (the host's sockperf, iperf3, nginx, wrk) run inside those, exactly
//! as in the other scenarios.

use std::{
    net::SocketAddrV4,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use netbpf_common::stats::{Hook, Outcome};
use netbpf_tests::{
    TempDir,
    dockerd::{self, Dockerd},
    lab::{HOST_UPLINK_IF, HOST_UPLINK_IP, Lab},
    netns::Netns,
    process::{Background, wait_for},
    unique_prefix,
};

use super::{
    BENCH_PREFIX, CLOSE_HOW, IPERF_HOW, Measured, Metric, SOCKPERF_HOW, Scenario, check_counters,
    labs, latency_metrics, measure_rounds, target_dirs,
    tools::{self, Client, HTTP_PORT, IPERF_PORT, SOCKPERF_PORT},
};
use crate::cmd::step;

pub const DOCKER: Scenario = Scenario {
    id: "docker",
    title: "Through Docker: bridge driver against the netbpf driver",
    about: "A real dockerd (Debian's docker.io 20.10) per target, in the lab's host namespace, \
            two containers on one user-defined network (198.18.10.0/24), the server \
            publishing its ports as `-p 8080:80 -p 11111:11111 -p 5201:5201`. `bridge` is \
            Docker's default driver: a Linux bridge, dockerd's own iptables rules \
            (isolation, DNAT, MASQUERADE) and docker-proxy; `netbpf` is `docker network \
            create -d netbpf` with `netbpf agent --docker` and dockerd's iptables off. The \
            containers only hold their network namespaces: the same host tools run in them \
            for both targets. East-west figures are container to container; north-south \
            ones an outside client to the published ports at the host's uplink address.",
    targets: &["bridge", "netbpf"],
    baseline: "bridge",
    contenders: &["netbpf"],
    floor: None,
};

const IMAGE: &str = "nbbench-busybox";

/// One target: its lab, its dockerd (and netbpf's agent), the containers' namespaces by
/// name.
pub struct Target {
    client: Netns,
    server: Netns,
    _agent: Option<Background>,
    _docker: Dockerd,
    lab: Lab,
    _dir: PathBuf,
}

impl Target {
    fn build(driver: &str, netbpf_bin: &Path, dir: &Path) -> anyhow::Result<Target> {
        let lab = Lab::new(BENCH_PREFIX, 0).context("docker lab")?;
        let bridge = driver == "bridge";
        let args: &[&str] = if bridge {
            // Docker's defaults for these (the harness turns them off).
            &["--iptables=true", "--ip-forward=true", "--ip-masq=true"]
        } else {
            &[]
        };
        let docker = Dockerd::start(&lab.host, &dir.join("d"), args).context("dockerd")?;
        docker.import_busybox(IMAGE).context("busybox image")?;
        let agent = if bridge {
            None
        } else {
            let file = dir.join("netbpf.toml");
            std::fs::write(&file, format!("[host]\nuplink = \"{HOST_UPLINK_IF}\"\n"))
                .context("writing netbpf.toml")?;
            let mut cmd = Command::new(netbpf_bin);
            cmd.args(["--netns", lab.host.name(), "agent", "-c"])
                .arg(&file)
                .arg("--docker")
                .arg("--docker-socket")
                .arg(docker.plugins_dir().join("netbpf.sock"))
                .arg("--docker-api")
                .arg(docker.api_socket())
                .arg("--docker-state")
                .arg(dir.join("state"))
                .stderr(std::fs::File::create(dir.join("agent.log")).context("agent log")?);
            let agent = Background::spawn(cmd)?;
            let socket = docker.plugins_dir().join("netbpf.sock");
            if wait_for(std::time::Duration::from_secs(20), || {
                socket.exists().then_some(())
            })
            .is_none()
            {
                bail!("netbpf's agent never listened on {}", socket.display());
            }
            Some(agent)
        };
        docker_ok(
            &docker,
            &[
                "network",
                "create",
                "-d",
                driver,
                "--subnet",
                "198.18.10.0/24",
                "benchnet",
            ],
        )?;
        let mut publish = Vec::new();
        for (host, container) in labs::PUBLISHED {
            publish.extend(["-p".to_owned(), format!("{host}:{container}")]);
        }
        let mut server_args: Vec<&str> = vec!["--ip", "198.18.10.3"];
        server_args.extend(publish.iter().map(String::as_str));
        let mut netns = Vec::new();
        for (name, args) in [
            ("client", vec!["--ip", "198.18.10.2"]),
            ("server", server_args),
        ] {
            let mut run = vec!["run", "-d", "--name", name, "--network", "benchnet"];
            run.extend(args);
            run.extend([IMAGE, "sleep", "1000000"]);
            docker_ok(&docker, &run)?;
            let pid: u32 = docker_ok(&docker, &["inspect", "-f", "{{.State.Pid}}", name])?
                .parse()
                .context("a container's PID")?;
            let ns_name = format!("{}-{name}", lab.prefix);
            netns.push(Netns::attach(&ns_name, pid).context("naming a container's namespace")?);
        }
        let server = netns.pop().context("server namespace")?;
        let client = netns.pop().context("client namespace")?;
        Ok(Target {
            client,
            server,
            _agent: agent,
            _docker: docker,
            lab,
            _dir: dir.to_owned(),
        })
    }
}

fn docker_ok(docker: &Dockerd, args: &[&str]) -> anyhow::Result<String> {
    let out = docker.docker(args);
    if !out.status.success() {
        bail!(
            "docker {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            docker.log_tail()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Where the outside client reaches a published port.
fn published(container_port: u16) -> SocketAddrV4 {
    let host = labs::PUBLISHED
        .iter()
        .find(|(_, c)| *c == container_port)
        .map_or(container_port, |(h, _)| *h);
    SocketAddrV4::new(HOST_UPLINK_IP, host)
}

pub fn run(netbpf_bin: &Path, rounds: usize, seconds: u32) -> anyhow::Result<Option<Measured>> {
    if !dockerd::available() {
        step("docker: skipped (needs docker.io and busybox-static: ./x setup installs them)");
        return Ok(None);
    }
    step("docker: starting a dockerd with its bridge driver and one with netbpf's");
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let dirs = target_dirs(&dir, &DOCKER)?;
    let targets = [
        Target::build("bridge", netbpf_bin, &dirs[0])?,
        Target::build("netbpf", netbpf_bin, &dirs[1])?,
    ];
    let _servers = targets
        .iter()
        .zip(&dirs)
        .map(|(t, d)| tools::start_servers(&t.server, labs::SERVER_IP, d))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let [p50, p99] = latency_metrics(SOCKPERF_HOW);
    let [n_p50, n_p99] = latency_metrics(SOCKPERF_HOW);
    let metrics = vec![
        Metric {
            name: "east-west: TCP request/response latency p50",
            ..p50
        },
        Metric {
            name: "east-west: TCP request/response latency p99",
            ..p99
        },
        Metric::new(
            "east-west: new connections (HTTP)",
            CLOSE_HOW,
            "conn/s",
            true,
            Some(1.15),
        ),
        Metric::new(
            "east-west: single-stream TCP throughput",
            IPERF_HOW,
            "Gbit/s",
            true,
            Some(1.0),
        ),
        Metric {
            name: "north-south: TCP request/response latency p50",
            ..n_p50
        },
        Metric {
            name: "north-south: TCP request/response latency p99",
            ..n_p99
        },
        Metric::new(
            "north-south: new connections (HTTP)",
            CLOSE_HOW,
            "conn/s",
            true,
            Some(1.25),
        ),
        Metric::new(
            "north-south: single-stream TCP throughput",
            IPERF_HOW,
            "Gbit/s",
            true,
            Some(1.0),
        ),
    ];
    let measured = measure_rounds(&DOCKER, &targets, metrics, rounds, |_, t| {
        let client = Client::new(&t.client);
        let sockperf = SocketAddrV4::new(labs::SERVER_IP, SOCKPERF_PORT);
        let (lat50, lat99) = tools::latency(&client, &t.server, sockperf, sockperf, seconds)?;
        let http = SocketAddrV4::new(labs::SERVER_IP, HTTP_PORT);
        let rate = tools::http_rate(&client, http, false, seconds)?;
        let iperf = SocketAddrV4::new(labs::SERVER_IP, IPERF_PORT);
        let tput = tools::throughput(&client, iperf, seconds)?;
        let outside = Client::new(&t.lab.outside);
        let (n50, n99) = tools::latency(
            &outside,
            &t.server,
            sockperf,
            published(SOCKPERF_PORT),
            seconds,
        )?;
        let n_rate = tools::http_rate(&outside, published(HTTP_PORT), false, seconds)?;
        let n_tput = tools::throughput(&outside, published(IPERF_PORT), seconds)?;
        Ok(vec![lat50, lat99, rate, tput, n50, n99, n_rate, n_tput])
    })?;
    // netbpf's traffic took its programs: forwarded between the containers, translated at
    // the uplink.
    check_counters(
        netbpf_bin,
        "netbpf",
        &targets[1].lab,
        &[
            (Hook::FromContainer, Outcome::Forward),
            (Hook::FromUplink, Outcome::Published),
        ],
        &[],
    )?;
    drop(targets);
    Ok(Some(measured))
}
