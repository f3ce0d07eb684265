//! The traffic tools a benchmark runs, and how to read what they print.

use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use netbpf_tests::{
    netns::Netns,
    process::{Background, wait_for},
};

use crate::cmd;

pub const SOCKPERF_PORT: u16 = 11111;
pub const HTTP_PORT: u16 = 8080;
pub const IPERF_PORT: u16 = 5201;

/// The servers of one benchmark target, running in its namespace until dropped.
pub struct Servers {
    _nginx: Background,
    _iperf3: Background,
}

/// Starts nginx and iperf3 on `addr` inside `ns` and waits until each accepts.
pub fn start_servers(ns: &Netns, addr: Ipv4Addr, dir: &Path) -> anyhow::Result<Servers> {
    let ip = addr.to_string();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\n\
             error_log {dir}/nginx-error.log;\nevents {{ worker_connections 4096; }}\n\
             http {{ access_log off; server {{ listen {ip}:{HTTP_PORT} reuseport; \
             location / {{ return 200 \"ok\\n\"; }} }} }}\n",
            dir = dir.display()
        ),
    )
    .context("writing nginx.conf")?;
    let conf = conf.display().to_string();
    let prefix = dir.display().to_string();
    let nginx = Background::spawn(ns.command("nginx", &["-c", &conf, "-p", &prefix]))?;
    // Its stderr goes to a log: the readiness probe below makes it complain.
    let mut iperf3 = ns.command("iperf3", &["-s", "-B", &ip, "-p", &IPERF_PORT.to_string()]);
    iperf3.stderr(std::fs::File::create(dir.join("iperf3.log")).context("iperf3 log")?);
    let iperf3 = Background::spawn(iperf3)?;
    for port in [HTTP_PORT, IPERF_PORT] {
        wait_listening(ns, SocketAddrV4::new(addr, port))?;
    }
    Ok(Servers {
        _nginx: nginx,
        _iperf3: iperf3,
    })
}

fn wait_listening(ns: &Netns, target: SocketAddrV4) -> anyhow::Result<()> {
    ns.run(|| {
        wait_for(Duration::from_secs(5), || {
            TcpStream::connect_timeout(&target.into(), Duration::from_millis(200)).ok()
        })
    })
    .map(drop)
    .ok_or_else(|| anyhow!("server on {target} in {} never came up", ns.name()))
}

fn run(ns: &Netns, program: &str, args: &[&str]) -> anyhow::Result<String> {
    cmd::output(&mut ns.command(program, args))
}

/// TCP ping-pong latency (one-way, µs): (p50, p99). Both ends poll non-blocking sockets,
/// so the figure is the network path's, not the scheduler's wake-up latency (which is
/// most of a blocking ping-pong on a small VM and the same for every data path).
/// The server spins too, so it runs only while this measures (it would steal a CPU from
/// the other figures).
pub fn latency(
    client: &Netns,
    server_ns: &Netns,
    server: Ipv4Addr,
    seconds: u32,
) -> anyhow::Result<(f64, f64)> {
    let ip = server.to_string();
    let port = SOCKPERF_PORT.to_string();
    let _server = Background::spawn(server_ns.command(
        "sockperf",
        &["server", "--tcp", "--nonblocked", "-i", &ip, "-p", &port],
    ))?;
    wait_listening(server_ns, SocketAddrV4::new(server, SOCKPERF_PORT))?;
    let out = run(
        client,
        "sockperf",
        &[
            "ping-pong",
            "--tcp",
            "--nonblocked",
            "-i",
            &server.to_string(),
            "-p",
            &SOCKPERF_PORT.to_string(),
            "-t",
            &seconds.to_string(),
            "-m",
            "64",
        ],
    )?;
    parse_sockperf(&out)
}

pub fn parse_sockperf(out: &str) -> anyhow::Result<(f64, f64)> {
    let percentile = |p: &str| {
        out.lines()
            .find(|l| l.contains(&format!("percentile {p} =")))
            .and_then(|l| l.rsplit('=').next())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| anyhow!("sockperf printed no {p} percentile:\n{out}"))
    };
    Ok((percentile("50.000")?, percentile("99.000")?))
}

/// New HTTP connections per second (`Connection: close`, one request each).
pub fn connection_rate(client: &Netns, server: Ipv4Addr, seconds: u32) -> anyhow::Result<f64> {
    let url = format!("http://{server}:{HTTP_PORT}/");
    let duration = format!("{seconds}s");
    let out = run(
        client,
        "wrk",
        &[
            "-t1",
            "-c16",
            "-d",
            &duration,
            "-H",
            "Connection: close",
            &url,
        ],
    )?;
    parse_wrk(&out)
}

pub fn parse_wrk(out: &str) -> anyhow::Result<f64> {
    // wrk counts a server's close as a read error with `Connection: close`; only non-2xx
    // answers make the figure meaningless.
    if out.contains("Non-2xx") {
        return Err(anyhow!("wrk saw non-2xx answers:\n{out}"));
    }
    out.lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("wrk printed no Requests/sec:\n{out}"))
}

/// Single-stream TCP throughput (Gbit/s).
pub fn throughput(client: &Netns, server: Ipv4Addr, seconds: u32) -> anyhow::Result<f64> {
    let out = run(
        client,
        "iperf3",
        &[
            "-c",
            &server.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ],
    )?;
    parse_iperf3(&out)
}

pub fn parse_iperf3(out: &str) -> anyhow::Result<f64> {
    let json: serde_json::Value = serde_json::from_str(out).context("iperf3 JSON")?;
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .ok_or_else(|| anyhow!("iperf3 JSON has no end.sum_received.bits_per_second"))
}

/// Per-packet cost of the datapath's paths and of an empty program (the prog_cost example).
pub fn prog_cost(runs: usize, repeat: u32) -> anyhow::Result<serde_json::Value> {
    let out = cmd::output(cmd::cargo().args([
        "run",
        "--quiet",
        "--release",
        "--package",
        "netbpf",
        "--example",
        "prog_cost",
        "--",
        &runs.to_string(),
        &repeat.to_string(),
    ]))?;
    serde_json::from_str(&out).with_context(|| format!("prog_cost output: {out}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sockperf_percentiles() {
        let out = "sockperf: ====> avg-latency=26.646 (std-dev=5.308)\n\
                   sockperf: ---> percentile 99.000 =   35.888\n\
                   sockperf: ---> percentile 50.000 =   26.309\n";
        assert_eq!(parse_sockperf(out).expect("parses"), (26.309, 35.888));
    }

    #[test]
    fn reads_wrk_rate() {
        let out = "Running 2s test @ http://198.18.10.3:8080/\n  1 threads and 16 connections\n\
                   Requests/sec:  12345.67\nTransfer/sec:      1.23MB\n";
        assert_eq!(parse_wrk(out).expect("parses"), 12345.67);
        assert!(parse_wrk("Non-2xx or 3xx responses: 5\nRequests/sec: 1\n").is_err());
    }

    #[test]
    fn reads_iperf3_json() {
        let out = r#"{"end": {"sum_received": {"bits_per_second": 16000000000.0}}}"#;
        assert_eq!(parse_iperf3(out).expect("parses"), 16.0);
    }
}
