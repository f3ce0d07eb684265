//! `cargo xtask demo`: the built-in lab. A host namespace with three containers and an
//! uplink to an outside client; netbpf wires two networks, publishes a port and serves a
//! VIP; real traffic shows what is allowed, translated and dropped; then what netbpf shows
//! of it (ports, services, conntrack, drops, an explained packet, counters); then
//! everything removed.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use netbpf_common::pin_paths::NETNS_PIN_ROOT;
use netbpf_tests::{
    TempDir,
    lab::{
        HOST_UPLINK_IF, HOST_UPLINK_IP, HOST_UPLINK_MAC, Lab, OUTSIDE_IF, OUTSIDE_IP, OUTSIDE_MAC,
    },
    netns::{self, NETNS_RUN_DIR, Netns},
    packet::{self, ETH_HLEN},
    process::{send_frames, send_udp},
};

use crate::{
    cmd::{self, step},
    setup,
};

const DEMO_PREFIX: &str = "nbdemo";
const PINGS: usize = 10;
const DATAGRAMS: usize = 1000;
const MALFORMED: usize = 5;

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    if !cmd::is_root() {
        bail!("the demo builds network namespaces and loads BPF programs: run it as root");
    }
    netns::remove_stale(DEMO_PREFIX);
    step("build netbpf");
    cmd::run(cmd::cargo().args(["build", "--quiet", "--package", "netbpf"]))?;
    let netbpf = cmd::workspace_root().join("target/debug/netbpf");

    let lab = Lab::new(DEMO_PREFIX, 3).context("building the lab")?;
    step(&format!(
        "lab: host namespace {} with an uplink ({HOST_UPLINK_IF} {HOST_UPLINK_IP}) to {} and three container namespaces",
        lab.host.name(),
        lab.outside.name()
    ));
    let dir = TempDir::new(&lab.prefix).context("demo directory")?;
    let result = containers(&lab, &netbpf, &dir).and_then(|()| traffic_and_counters(&lab, &netbpf));
    // Detach and unpin through netbpf itself, whatever happened above.
    step("netbpf down");
    let down = run_netbpf(&netbpf, &lab.host, &["down"]);
    let pin_dir = Path::new(NETNS_PIN_ROOT).join(lab.host.name());
    let names: Vec<String> = [&lab.host, &lab.outside]
        .into_iter()
        .chain(&lab.containers)
        .map(|ns| ns.name().to_owned())
        .collect();
    drop(lab);
    match (result, down) {
        (Err(e), Err(down)) => return Err(e.context(format!("and then: {down}"))),
        (Err(e), Ok(_)) | (Ok(()), Err(e)) => return Err(e),
        (Ok(()), Ok(_)) => {}
    }
    if pin_dir.exists() {
        bail!("{} still exists after netbpf down", pin_dir.display());
    }
    let left: Vec<&String> = names
        .iter()
        .filter(|n| Path::new(NETNS_RUN_DIR).join(n).exists())
        .collect();
    if !left.is_empty() {
        bail!("namespaces left behind: {left:?}");
    }
    step("lab removed: no namespace or pin left (netbpf runs no process)");
    Ok(())
}

/// The definitions: two networks, three containers, a published port, a service.
fn definitions(lab: &Lab) -> String {
    let ns = |i: usize| lab.containers[i].path().display().to_string();
    format!(
        "[host]\nuplink = \"{HOST_UPLINK_IF}\"\n\n\
         [[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
         [[network]]\nname = \"back\"\nsubnet = \"198.18.20.0/24\"\n\n\
         [[container]]\nname = \"web1\"\nnetns = \"{}\"\nnetwork = \"front\"\nip = \"198.18.10.2\"\nports = [\"8080:80\"]\n\n\
         [[container]]\nname = \"web2\"\nnetns = \"{}\"\nnetwork = \"front\"\nip = \"198.18.10.3\"\n\n\
         [[container]]\nname = \"db\"\nnetns = \"{}\"\nnetwork = \"back\"\nip = \"198.18.20.2\"\n\n\
         [[service]]\nname = \"web\"\nvip = \"{VIP}\"\nport = 80\nscheduler = \"rr\"\nexternal = true\n\
         backends = [{{ container = \"web1\", port = 80 }}, {{ container = \"web2\", port = 80 }}]\n",
        ns(0),
        ns(1),
        ns(2)
    )
}

const VIP: &str = "198.18.200.10";

/// Container networks, a published port, a service: traffic where it is allowed and where
/// it is not, then what netbpf shows of it.
fn containers(lab: &Lab, netbpf: &Path, dir: &TempDir) -> anyhow::Result<()> {
    let file = dir
        .write("netbpf.toml", &definitions(lab))
        .context("writing definitions")?;
    let file = file.display().to_string();
    step(
        "netbpf apply: networks front and back, containers web1 web2 | db, web1's port 80 \
         published as 8080, a service at 198.18.200.10:80 over web1 and web2 (rr)",
    );
    print!(
        "{}",
        run_netbpf(netbpf, &lab.host, &["apply", "-c", &file])?
    );
    print!(
        "{}",
        run_netbpf(netbpf, &lab.host, &["show", "containers"])?
    );
    step("ping");
    for (from, to, what) in [
        (0, "198.18.10.3", "web1 -> web2 (same network)"),
        (0, "198.18.10.1", "web1 -> its gateway (the host)"),
        (0, "198.18.20.2", "web1 -> db (another network: dropped)"),
        (0, &*OUTSIDE_IP.to_string(), "web1 -> outside (masqueraded)"),
    ] {
        let ok = lab.containers[from]
            .command("ping", &["-c", "3", "-i", "0.2", "-W", "1", "-q", to])
            .output()
            .context("ping")?
            .status
            .success();
        println!(
            "    ping {what}: {}",
            if ok { "answered" } else { "no answer" }
        );
    }

    // web1 and web2 answer every connection on port 80 with their name and the client
    // address they saw.
    let servers = [(0, "web1"), (1, "web2")]
        .into_iter()
        .map(|(i, name)| NameServer::start(&lab.containers[i], name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    step("TCP: each connection prints who answered and the client address the server saw");
    let ask = |ns: &Netns, to: &str| -> String {
        let to: SocketAddrV4 = to.parse().expect("address");
        ns.run(|| {
            TcpStream::connect_timeout(&to.into(), Duration::from_secs(3))
                .and_then(|mut conn| {
                    conn.set_read_timeout(Some(Duration::from_secs(3)))?;
                    let mut answer = String::new();
                    conn.read_to_string(&mut answer)?;
                    Ok(answer.trim().to_owned())
                })
                .unwrap_or_else(|e| format!("failed: {e}"))
        })
    };
    let published = format!("{HOST_UPLINK_IP}:8080");
    println!(
        "    outside -> {published} (published): {}",
        ask(&lab.outside, &published)
    );
    let vip = format!("{VIP}:80");
    for i in 1..=4 {
        println!(
            "    db -> {vip} (service, connection {i}): {}",
            ask(&lab.containers[2], &vip)
        );
    }
    lab.outside
        .ip(&[
            "route",
            "add",
            &format!("{VIP}/32"),
            "via",
            &HOST_UPLINK_IP.to_string(),
        ])
        .context("route to the VIP")?;
    println!(
        "    outside -> {vip} (external service): {}",
        ask(&lab.outside, &vip)
    );
    drop(servers);

    for view in [
        &["show", "ports"][..],
        &["show", "services", "--stats"],
        &["show", "conntrack", "--proto", "tcp"],
        &["show", "drops"],
    ] {
        step(&format!("netbpf {}", view.join(" ")));
        print!("{}", run_netbpf(netbpf, &lab.host, view)?);
    }
    step("netbpf explain tcp 198.18.10.2:40000 198.18.20.2:5432 (web1 -> db)");
    print!(
        "{}",
        run_netbpf(
            netbpf,
            &lab.host,
            &["explain", "tcp", "198.18.10.2:40000", "198.18.20.2:5432"]
        )?
    );
    Ok(())
}

/// A server in a container answering each connection with its name and the client's
/// address, then closing. Stops when dropped.
struct NameServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NameServer {
    fn start(ns: &Netns, name: &'static str) -> anyhow::Result<NameServer> {
        let listener = ns
            .run(|| TcpListener::bind("0.0.0.0:80"))
            .with_context(|| format!("listening in {name}"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = writeln!(conn, "{name} (saw client {peer})");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(NameServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn traffic_and_counters(lab: &Lab, netbpf: &Path) -> anyhow::Result<()> {
    step(&format!(
        "traffic from outside to the host itself: {PINGS} pings, {DATAGRAMS} UDP datagrams, \
         {MALFORMED} malformed frames"
    ));
    let ping = lab
        .outside
        .exec(
            "ping",
            &[
                "-c",
                &PINGS.to_string(),
                "-i",
                "0.05",
                "-q",
                &HOST_UPLINK_IP.to_string(),
            ],
        )
        .context("ping from outside")?;
    for line in String::from_utf8_lossy(&ping.stdout).lines() {
        if line.contains("packets transmitted") {
            println!("    ping: {line}");
        }
    }
    let to = SocketAddrV4::new(HOST_UPLINK_IP, 9);
    lab.outside
        .run(|| send_udp(SocketAddrV4::new(OUTSIDE_IP, 0), to, &[0u8; 64], DATAGRAMS))
        .context("sending UDP")?;
    let mut bad = packet::udp4_frame(
        HOST_UPLINK_MAC,
        OUTSIDE_MAC,
        SocketAddrV4::new(OUTSIDE_IP, 9),
        to,
        &[0u8; 64],
    );
    // An IPv4 total length far beyond the frame's end.
    bad[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&1500u16.to_be_bytes());
    lab.outside
        .run(|| send_frames(OUTSIDE_IF, &vec![bad; MALFORMED]))
        .context("sending malformed frames")?;

    // Raw frames cross the veth in softirq context, a moment after sendto returns.
    std::thread::sleep(Duration::from_millis(200));
    step("netbpf show stats (a separate process reading the pinned counters)");
    let table = run_netbpf(netbpf, &lab.host, &["show", "stats"])?;
    print!("{table}");
    println!(
        "    on the uplink (tc, the mode for a veth): the pings and datagrams to the host \
         passed, the {MALFORMED} malformed frames dropped; the published port's and the \
         service's flows translated; from containers: forwards, ARP replies, the \
         masqueraded pings, service and published-port replies, the cross-network drops"
    );
    Ok(())
}

fn run_netbpf(netbpf: &Path, ns: &Netns, args: &[&str]) -> anyhow::Result<String> {
    let out = cmd::output(Command::new(netbpf).args(["--netns", ns.name()]).args(args))
        .map_err(|e| anyhow!("netbpf {}: {e}", args.join(" ")))?;
    Ok(out)
}
