//! The traffic tools a benchmark runs, and how to read what they print.

use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use netbpf_tests::{
    cgroup::Cgroup,
    netns::Netns,
    process::{Background, wait_for},
};

use crate::cmd;

/// The servers' ports in their container (HTTP as a web server's).
pub const HTTP_PORT: u16 = 80;
pub const SOCKPERF_PORT: u16 = 11111;
pub const IPERF_PORT: u16 = 5201;

/// The CPU every server runs on, and the one every client tool runs on: two busy ends
/// sharing a CPU would take turns (a spinning pair waits a scheduler tick, 4 ms, per
/// exchange), and where the scheduler puts them would decide the figure.
pub const SERVER_CPU: &str = "0";
pub const CLIENT_CPU: &str = "1";

/// `program args...` pinned to `cpu`, as a command line for `taskset`.
fn pinned<'a>(cpu: &'a str, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut line = vec!["-c", cpu, program];
    line.extend_from_slice(args);
    line
}

/// Where a client tool runs: a namespace, and a cgroup when socket programs must see it.
pub struct Client<'a> {
    ns: &'a Netns,
    cgroup: Option<&'a Cgroup>,
}

impl<'a> Client<'a> {
    pub fn new(ns: &'a Netns) -> Self {
        Client { ns, cgroup: None }
    }

    pub fn in_cgroup(ns: &'a Netns, cgroup: &'a Cgroup) -> Self {
        Client {
            ns,
            cgroup: Some(cgroup),
        }
    }

    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        match self.cgroup {
            Some(cgroup) => cgroup.command(self.ns, program, args),
            None => self.ns.command(program, args),
        }
    }

    /// Runs a client tool to completion, on [`CLIENT_CPU`].
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        cmd::output(&mut self.command("taskset", &pinned(CLIENT_CPU, program, args)))
    }
}

/// The servers of one benchmark target, running in its namespace until dropped.
pub struct Servers {
    _nginx: Background,
    _iperf3: Background,
}

/// Starts nginx and iperf3 on `addr` inside `ns` and waits until each accepts.
pub fn start_servers(ns: &Netns, addr: Ipv4Addr, dir: &Path) -> anyhow::Result<Servers> {
    let nginx = start_web(ns, addr, dir)?;
    let ip = addr.to_string();
    // Its stderr goes to a log: the readiness probe below makes it complain.
    let port = IPERF_PORT.to_string();
    let mut iperf3 = ns.command(
        "taskset",
        &pinned(SERVER_CPU, "iperf3", &["-s", "-B", &ip, "-p", &port]),
    );
    iperf3.stderr(std::fs::File::create(dir.join("iperf3.log")).context("iperf3 log")?);
    let iperf3 = Background::spawn(iperf3)?;
    wait_listening(ns, SocketAddrV4::new(addr, IPERF_PORT))?;
    Ok(Servers {
        _nginx: nginx,
        _iperf3: iperf3,
    })
}

/// Starts nginx on `addr`:[`HTTP_PORT`] inside `ns` (its files in `dir`) and waits until
/// it accepts; it runs until the guard drops.
pub fn start_web(ns: &Netns, addr: Ipv4Addr, dir: &Path) -> anyhow::Result<Background> {
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
    let nginx = Background::spawn(ns.command(
        "taskset",
        &pinned(SERVER_CPU, "nginx", &["-c", &conf, "-p", &prefix]),
    ))?;
    wait_listening(ns, SocketAddrV4::new(addr, HTTP_PORT))?;
    Ok(nginx)
}

pub fn wait_listening(ns: &Netns, target: SocketAddrV4) -> anyhow::Result<()> {
    ns.run(|| {
        wait_for(Duration::from_secs(5), || {
            TcpStream::connect_timeout(&target.into(), Duration::from_millis(200)).ok()
        })
    })
    .map(drop)
    .ok_or_else(|| anyhow!("server on {target} in {} never came up", ns.name()))
}

/// TCP ping-pong latency (one-way, µs): (p50, p99), a sockperf server listening on
/// `listen` in `server_ns`, the client sending to `to` (the same address, or where it is
/// published). Both ends poll non-blocking sockets, so the figure is the network path's,
/// not the scheduler's wake-up latency (which is most of a blocking ping-pong on a small
/// VM and the same for every data path). The server spins too, so it runs only while this
/// measures (it would steal a CPU from the other figures).
pub fn latency(
    client: &Client,
    server_ns: &Netns,
    listen: SocketAddrV4,
    to: SocketAddrV4,
    seconds: u32,
) -> anyhow::Result<(f64, f64)> {
    let (ip, port) = (listen.ip().to_string(), listen.port().to_string());
    let _server = Background::spawn(server_ns.command(
        "taskset",
        &pinned(
            SERVER_CPU,
            "sockperf",
            &["server", "--tcp", "--nonblocked", "-i", &ip, "-p", &port],
        ),
    ))?;
    wait_listening(server_ns, listen)?;
    let out = client.run(
        "sockperf",
        &[
            "ping-pong",
            "--tcp",
            "--nonblocked",
            "-i",
            &to.ip().to_string(),
            "-p",
            &to.port().to_string(),
            "-t",
            &seconds.to_string(),
            "-m",
            "64",
        ],
    )?;
    parse_sockperf(&out)
}

/// The sockperf client sleeps 2 s after it connects, then measures. [`latency_overlapped`]
/// runs other figures in that sleep, which must end before this much of it has passed.
const SOCKPERF_IDLE: Duration = Duration::from_millis(1800);

/// [`latency`], with `during` run in the sockperf client's idle start (its fixed 2 s sleep
/// after connecting), the sockperf server stopped (SIGSTOP: it busy-polls) meanwhile and
/// continued before the client measures. If `during` runs past [`SOCKPERF_IDLE`], the
/// latency is measured again on its own. Returns the latency and what `during` returned.
pub fn latency_overlapped<T>(
    client: &Client,
    server_ns: &Netns,
    listen: SocketAddrV4,
    to: SocketAddrV4,
    seconds: u32,
    during: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<((f64, f64), T)> {
    let (ip, port) = (listen.ip().to_string(), listen.port().to_string());
    let server = Background::spawn(server_ns.command(
        "taskset",
        &pinned(
            SERVER_CPU,
            "sockperf",
            &["server", "--tcp", "--nonblocked", "-i", &ip, "-p", &port],
        ),
    ))?;
    wait_listening(server_ns, listen)?;
    let signal = |sig: &str| {
        cmd::output(Command::new("kill").args([sig, &server.pid().to_string()])).map(drop)
    };
    signal("-STOP")?;
    let (to_ip, to_port, secs) = (
        to.ip().to_string(),
        to.port().to_string(),
        seconds.to_string(),
    );
    let args = [
        "ping-pong",
        "--tcp",
        "--nonblocked",
        "-i",
        &to_ip,
        "-p",
        &to_port,
        "-t",
        &secs,
        "-m",
        "64",
    ];
    let started = Instant::now();
    let mut sockperf = Background::spawn_reading(
        client.command("taskset", &pinned(CLIENT_CPU, "sockperf", &args)),
    )?;
    let result = during();
    let overran = started.elapsed() > SOCKPERF_IDLE;
    signal("-CONT")?;
    let mut out = String::new();
    if let Some(mut stdout) = sockperf.stdout() {
        std::io::Read::read_to_string(&mut stdout, &mut out).context("sockperf's output")?;
    }
    let status = sockperf.wait().context("waiting for sockperf")?;
    let value = result?;
    if overran || !status.success() {
        drop(server);
        if !status.success() {
            eprintln!("warning: sockperf to {to} ({status}) measured again on its own");
        }
        return Ok((latency(client, server_ns, listen, to, seconds)?, value));
    }
    Ok((parse_sockperf(&out)?, value))
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

/// HTTP requests per second from wrk (one thread, 16 connections) to `server`: with
/// `keep_alive`, over persistent connections; without, `Connection: close`, so that every
/// request is a new connection (the figure is then new connections per second).
pub fn http_rate(
    client: &Client,
    server: SocketAddrV4,
    keep_alive: bool,
    seconds: u32,
) -> anyhow::Result<f64> {
    let url = format!("http://{server}/");
    let duration = format!("{seconds}s");
    let mut args = vec!["-t1", "-c16", "-d", &duration];
    if !keep_alive {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(&url);
    let out = client.run("wrk", &args)?;
    let (connect, timeout) = wrk_errors(&out);
    if connect + timeout > 0 {
        eprintln!("warning: wrk to {url}: {connect} connect errors, {timeout} timeouts");
    }
    parse_wrk(&out)
}

/// wrk's connect errors and timeouts (its read errors are the servers' closes under
/// `Connection: close`, not failures).
pub fn wrk_errors(out: &str) -> (u64, u64) {
    let Some(line) = out
        .lines()
        .find(|l| l.trim_start().starts_with("Socket errors:"))
    else {
        return (0, 0);
    };
    let count = |what: &str| {
        line.split(',')
            .find_map(|part| {
                part.trim()
                    .rsplit_once(' ')
                    .filter(|(k, _)| k.ends_with(what))
            })
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0)
    };
    (count("connect"), count("timeout"))
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

/// Single-stream TCP throughput (Gbit/s) to an iperf3 server at `server`.
pub fn throughput(client: &Client, server: SocketAddrV4, seconds: u32) -> anyhow::Result<f64> {
    let out = client.run(
        "iperf3",
        &[
            "-c",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
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

/// The UDP payload of the packet-rate figure (bytes): small packets, so that the figure is
/// the per-packet cost of the path, not bandwidth.
pub const UDP_PAYLOAD: u32 = 64;
/// The loss a rate may have and still count (0.1%).
pub const UDP_MAX_LOSS: f64 = 0.001;

/// One iperf3 UDP run: what was offered and what arrived.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UdpProbe {
    /// Packets per second the sender sent.
    pub sent_pps: f64,
    /// Packets per second the receiver got.
    pub received_pps: f64,
    /// Lost / sent.
    pub loss: f64,
}

/// How the UDP packet rate is found, for the report.
pub const UDP_HOW: &str = "iperf3 -u, 64-byte datagrams, one stream; the highest received rate \
    whose loss (iperf3's lost/sent, reported by the receiver) stays below 0.1%, found by a \
    short search each round, on its own: one run at the sender's full speed (-b 0), which \
    counts if its loss is below 0.1%; else runs paced at that run's received rate x 1, 0.7, \
    0.49, ... until one passes (at most 8), then bisection steps (two; one in a quick run) \
    between it and the rate above it that failed; each run a fixed count of packets (-k) lasting about `probe` \
    seconds (the report's header).";

/// A run at the sender's full speed, as [`udp_rate`] starts from (a fixed count of
/// packets: about `probe` seconds at 250,000 packets/s).
pub fn udp_full_speed(
    client: &Client,
    server: SocketAddrV4,
    probe: f64,
) -> anyhow::Result<UdpProbe> {
    udp_probe(client, server, None, probe)
}

/// The highest UDP packet rate (packets/s received) from `client` to the iperf3 server at
/// `server` with less than 0.1% loss (see [`UDP_HOW`]), starting from `full`, a run at
/// the sender's full speed; each paced run lasts about `probe` s.
pub fn udp_rate(
    client: &Client,
    server: SocketAddrV4,
    probe: f64,
    bisections: u32,
    full: UdpProbe,
) -> anyhow::Result<f64> {
    let passes = |p: &UdpProbe| p.loss < UDP_MAX_LOSS;
    let run = |pps: f64| udp_probe(client, server, Some(pps), probe);
    if passes(&full) {
        return Ok(full.received_pps);
    }
    let mut tried = vec![(None, full)];
    let mut failed = full.received_pps;
    let mut rate = failed;
    for _ in 0..8 {
        let p = run(rate)?;
        tried.push((Some(rate), p));
        if passes(&p) {
            // Bisect between the rate that passed and the one above it that failed.
            let mut best = p.received_pps;
            let (mut lo, mut hi) = (rate, failed);
            for _ in 0..bisections {
                if hi <= lo * 1.01 {
                    break;
                }
                let mid = (lo + hi) / 2.0;
                let q = run(mid)?;
                if passes(&q) {
                    best = best.max(q.received_pps);
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            return Ok(best);
        }
        failed = rate;
        rate *= 0.7;
    }
    let probes: Vec<String> = tried
        .iter()
        .map(|(rate, p)| {
            format!(
                "{}: sent {:.0}/s, received {:.0}/s, loss {:.3}%",
                rate.map_or("full speed".to_owned(), |r| format!("paced at {r:.0}/s")),
                p.sent_pps,
                p.received_pps,
                100.0 * p.loss
            )
        })
        .collect();
    anyhow::bail!(
        "UDP to {server}: no rate stayed below 0.1% loss:\n{}",
        probes.join("\n")
    )
}

/// One iperf3 UDP run to `server`: at the sender's full speed (`pps` None; 250,000
/// packets per second of `seconds`), or paced at `pps` for `seconds`.
fn udp_probe(
    client: &Client,
    server: SocketAddrV4,
    pps: Option<f64>,
    seconds: f64,
) -> anyhow::Result<UdpProbe> {
    let (ip, port) = (server.ip().to_string(), server.port().to_string());
    let len = UDP_PAYLOAD.to_string();
    let (bits, count) = match pps {
        None => ("0".to_owned(), format!("{:.0}", 250_000.0 * seconds)),
        Some(pps) => (
            format!("{:.0}", pps * f64::from(UDP_PAYLOAD * 8)),
            format!("{:.0}", (pps * seconds).max(1000.0)),
        ),
    };
    let args = [
        "-c", &ip, "-p", &port, "-u", "-l", &len, "-b", &bits, "-k", &count, "-J",
    ];
    // The server takes a moment after a test before it takes the next one.
    for _ in 0..50 {
        let out = client.run("iperf3", &args)?;
        if out.contains("the server is busy") {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        return parse_iperf3_udp(&out);
    }
    Err(anyhow!("the iperf3 server at {server} stayed busy"))
}

pub fn parse_iperf3_udp(out: &str) -> anyhow::Result<UdpProbe> {
    let json: serde_json::Value = serde_json::from_str(out).context("iperf3 JSON")?;
    let sum = &json["end"]["sum"];
    let field = |k: &str| {
        sum[k]
            .as_f64()
            .ok_or_else(|| anyhow!("iperf3 UDP JSON has no end.sum.{k}:\n{out}"))
    };
    let (packets, lost, seconds) = (field("packets")?, field("lost_packets")?, field("seconds")?);
    anyhow::ensure!(
        packets > 0.0 && seconds > 0.0,
        "iperf3 sent nothing:\n{out}"
    );
    Ok(UdpProbe {
        sent_pps: packets / seconds,
        received_pps: (packets - lost.max(0.0)) / seconds,
        loss: lost.max(0.0) / packets,
    })
}

/// SYNs per sample of [`syn_cost`].
pub const SYNS_PER_SAMPLE: u16 = 2000;

/// The source ports of round `round`'s [`syn_cost`] samples (rounds from 1): each round
/// its own, so every SYN is a new flow to every table, and all below the ephemeral range,
/// where wrk's closed connections leave entries.
pub fn syn_ports(round: usize) -> anyhow::Result<std::ops::Range<u16>> {
    const FIRST: u32 = 1024;
    const EPHEMERAL: u32 = 32768;
    let start = FIRST + (round.saturating_sub(1) as u32) * u32::from(SYNS_PER_SAMPLE);
    let end = start + u32::from(SYNS_PER_SAMPLE);
    if end > EPHEMERAL {
        bail!("round {round}: no fresh source ports left below {EPHEMERAL} for its SYNs");
    }
    Ok(start as u16..end as u16)
}

/// How the names of [`syn_cost`]'s metrics begin (the report charts them by it).
pub const NEW_FLOW_PACKETS: &str = "new-flow packets";

/// How [`syn_cost`]'s figure is measured, for a metric's `how`.
pub const SYN_COST_HOW: &str = "2,000 TCP SYNs per round from as many source ports (new \
     flows, fresh each round), sent one by one through a raw socket in the client's \
     namespace; wall time per SYN. A veth hands each packet to the sending CPU's softirq \
     before the send returns, so one SYN's time is its whole way through every hook and \
     rule, the server's SYN-ACK back and the client's reset";

/// [`syn_cost`]'s metrics, one per `what` ("to a VIP, 1 service", ...).
pub fn syn_cost_metrics(what: impl Iterator<Item = String>) -> Vec<super::Metric> {
    what.map(|w| {
        super::Metric::new(
            super::services::leak(format!("{NEW_FLOW_PACKETS} {w}")),
            SYN_COST_HOW,
            "ns/SYN",
            false,
            None,
        )
    })
    .collect()
}

/// A scaling scenario's two figures for one target and count, one after the other from
/// `ns`: new connections/s to `to` (wrk, `Connection: close`) and the cost of a new flow's
/// packets there ([`syn_cost`] from `from`, round `round`'s source ports).
pub fn new_flow_figures(
    ns: &Netns,
    from: Ipv4Addr,
    to: SocketAddrV4,
    round: usize,
    wrk_seconds: u32,
) -> anyhow::Result<(f64, f64)> {
    let rate = http_rate(&Client::new(ns), to, false, wrk_seconds)?;
    let cost = syn_cost(ns, from, to, syn_ports(round)?).context("SYNs")?;
    Ok((rate, cost))
}

/// The cost of a new flow through a whole path, kernel to kernel: TCP SYNs from `from`
/// to `to`, one per source port of `ports` (each a flow no table has seen), sent through
/// one raw socket by a thread of `ns` pinned to [`CLIENT_CPU`]; returns nanoseconds per
/// SYN. A veth hands a packet to the peer's backlog and the sending CPU's softirq runs it
/// before the send returns, so each send carries the SYN through every hook and rule on
/// the way, the server's SYN-ACK back, and the client stack's reset that ends the flow
/// (no socket of its own sent the SYN).
pub fn syn_cost(
    ns: &Netns,
    from: Ipv4Addr,
    to: SocketAddrV4,
    ports: std::ops::Range<u16>,
) -> anyhow::Result<f64> {
    use netbpf_tests::packet::{ipv4, tcp, tcp_flags::SYN};
    const IPPROTO_TCP: u8 = 6;
    let syns: Vec<Vec<u8>> = ports
        .map(|port| {
            let segment = tcp(SocketAddrV4::new(from, port), to, 1, 0, SYN, b"");
            ipv4(from, *to.ip(), IPPROTO_TCP, &segment)
        })
        .collect();
    if syns.is_empty() {
        bail!("syn_cost: no source port to send from");
    }
    ns.run(|| -> anyhow::Result<f64> {
        pin_current_thread(CLIENT_CPU)?;
        let socket = netbpf_tests::process::RawIpv4::open().context("raw IPv4 socket")?;
        let start = Instant::now();
        for syn in &syns {
            socket.send(syn).context("sending a SYN")?;
        }
        Ok(start.elapsed().as_nanos() as f64 / syns.len() as f64)
    })
}

/// Pins the calling thread to one CPU (`cpu` as [`CLIENT_CPU`] names it).
fn pin_current_thread(cpu: &str) -> anyhow::Result<()> {
    let cpu: usize = cpu.parse().context("CPU number")?;
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it (cpu < 1024).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * size_of::<libc::cpu_set_t>() {
        bail!("CPU {cpu} out of range");
    }
    // SAFETY: as above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the set is valid for its size.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
    }
    Ok(())
}

/// Per-packet cost of the datapath's paths and of empty programs (the prog_cost example):
/// `runs` rounds of `repeat` repetitions per path, and of `new_flows` single runs per
/// new-flow path.
pub fn prog_cost(runs: usize, repeat: u32, new_flows: usize) -> anyhow::Result<serde_json::Value> {
    // The example as the run's start built it (`cargo run` would rebuild it if the tree
    // changed since, and time that too).
    let example = cmd::workspace_root().join("target/release/examples/prog_cost");
    let out = cmd::output(Command::new(&example).args([
        &runs.to_string(),
        &repeat.to_string(),
        &new_flows.to_string(),
    ]))?;
    serde_json::from_str(&out).with_context(|| format!("prog_cost output: {out}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_rounds_take_fresh_ports_below_the_ephemeral_range() {
        let first = syn_ports(1).expect("round 1");
        let second = syn_ports(2).expect("round 2");
        assert_eq!(first, 1024..3024);
        assert_eq!(second.start, first.end);
        assert_eq!(syn_ports(15).expect("round 15").end, 31024);
        let err = syn_ports(16).expect_err("round 16").to_string();
        assert!(err.contains("round 16"), "{err}");
    }

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
        assert_eq!(
            wrk_errors("  Socket errors: connect 3, read 1200, write 0, timeout 7\n"),
            (3, 7)
        );
        assert_eq!(wrk_errors(out), (0, 0));
    }

    #[test]
    fn reads_iperf3_udp_json() {
        let out = r#"{"end": {"sum": {"packets": 100000, "lost_packets": 50, "seconds": 0.5}}}"#;
        let p = parse_iperf3_udp(out).expect("parses");
        assert_eq!(p.sent_pps, 200_000.0);
        assert_eq!(p.received_pps, 199_900.0);
        assert!((p.loss - 0.0005).abs() < 1e-12);
        assert!(parse_iperf3_udp(r#"{"end": {"sum": {}}}"#).is_err());
    }

    #[test]
    fn reads_iperf3_json() {
        let out = r#"{"end": {"sum_received": {"bits_per_second": 16000000000.0}}}"#;
        assert_eq!(parse_iperf3(out).expect("parses"), 16.0);
    }
}
