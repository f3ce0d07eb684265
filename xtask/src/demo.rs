//! `cargo xtask demo`: the built-in lab. A host and an outside client, each a network
//! namespace joined by a veth; netbpf's programs on the host's uplink; real traffic; the
//! counters as netbpf shows them; then everything removed.

use std::{net::SocketAddrV4, path::Path, process::Command};

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

/// Container networks: two networks, three containers, traffic where it is allowed and
/// where it is not.
fn containers(lab: &Lab, netbpf: &Path, dir: &TempDir) -> anyhow::Result<()> {
    let ns = |i: usize| lab.containers[i].path().display().to_string();
    let definitions = format!(
        "[[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
         [[network]]\nname = \"back\"\nsubnet = \"198.18.20.0/24\"\n\n\
         [[container]]\nname = \"web1\"\nnetns = \"{}\"\nnetwork = \"front\"\n\n\
         [[container]]\nname = \"web2\"\nnetns = \"{}\"\nnetwork = \"front\"\n\n\
         [[container]]\nname = \"db\"\nnetns = \"{}\"\nnetwork = \"back\"\n",
        ns(0),
        ns(1),
        ns(2)
    );
    let file = dir
        .write("netbpf.toml", &definitions)
        .context("writing definitions")?;
    let file = file.display().to_string();
    step("netbpf apply: two networks (front, back), three containers (web1, web2 | db)");
    print!(
        "{}",
        run_netbpf(netbpf, &lab.host, &["apply", "-c", &file])?
    );
    print!(
        "{}",
        run_netbpf(netbpf, &lab.host, &["show", "containers"])?
    );
    for (from, to, what) in [
        (0, "198.18.10.3", "web1 -> web2 (same network)"),
        (0, "198.18.10.1", "web1 -> its gateway (the host)"),
        (0, "198.18.20.2", "web1 -> db (another network: dropped)"),
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
    Ok(())
}

fn traffic_and_counters(lab: &Lab, netbpf: &Path) -> anyhow::Result<()> {
    step(&format!(
        "netbpf attach: tcx and XDP programs on {HOST_UPLINK_IF} in the host namespace"
    ));
    run_netbpf(netbpf, &lab.host, &["attach", "--iface", HOST_UPLINK_IF])?;

    step(&format!(
        "traffic: {PINGS} pings, {DATAGRAMS} UDP datagrams, {MALFORMED} malformed frames"
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
    std::thread::sleep(std::time::Duration::from_millis(200));
    step("netbpf show stats (a separate process reading the pinned counters)");
    let table = run_netbpf(netbpf, &lab.host, &["show", "stats"])?;
    print!("{table}");
    println!(
        "    expected on the uplink: {} packets passed each hook ({PINGS} echo requests + \
         {DATAGRAMS} datagrams), {MALFORMED} dropped by XDP as malformed; from containers: \
         forwards and ARP replies for web1 <-> web2, 3 cross-network drops",
        PINGS + DATAGRAMS
    );
    Ok(())
}

fn run_netbpf(netbpf: &Path, ns: &Netns, args: &[&str]) -> anyhow::Result<String> {
    let out = cmd::output(Command::new(netbpf).args(["--netns", ns.name()]).args(args))
        .map_err(|e| anyhow!("netbpf {}: {e}", args.join(" ")))?;
    Ok(out)
}
