//! Container networks wired by `netbpf apply` / `netbpf agent`, with real traffic between
//! container namespaces: reachability where allowed, drops (counted) where not, ARP,
//! anti-spoofing, reconcile and restart without loss, and invalid files that change nothing.

mod support;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use netbpf_common::{
    maps,
    net::{IfaceInfo, PeerInfo},
    pin_paths::NETNS_PIN_ROOT,
    stats::{Hook, Outcome},
};
use netbpf_tests::{
    TEST_PREFIX, TempDir,
    lab::Lab,
    netbpf_bin,
    netns::Netns,
    packet::{self, Mac},
    process::{Background, SetOnDrop, accept_within, send_frames, wait_for},
    require_root,
};
use serde_json::Value;
use support::{counter, link_ids, netbpf, netbpf_ok, stats, stderr_of, wait_for_count};

const FRONT_GW: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
const WEB1: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const WEB2: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);
const BACK_GW: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 1);
const DB1: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
const DB2: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 3);
const WEB3: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 4);
const WAIT: Duration = Duration::from_secs(5);

/// Two networks ("back" without inter-container communication), four containers: the
/// namespaces c0..c3 of the lab, in that order web1, web2, db1, db2.
fn definitions(lab: &Lab, extra: &str) -> String {
    let ns = |i: usize| lab.containers[i].path().display().to_string();
    format!(
        r#"
[[network]]
name = "front"
subnet = "198.18.10.0/24"

[[network]]
name = "back"
subnet = "198.18.20.0/24"
icc = false

[[container]]
name = "web1"
netns = "{}"
network = "front"
ip = "198.18.10.2"

[[container]]
name = "web2"
netns = "{}"
network = "front"
ip = "198.18.10.3"

[[container]]
name = "db1"
netns = "{}"
network = "back"
ip = "198.18.20.2"

[[container]]
name = "db2"
netns = "{}"
network = "back"
ip = "198.18.20.3"
{extra}"#,
        ns(0),
        ns(1),
        ns(2),
        ns(3)
    )
}

struct Setup {
    lab: Lab,
    dir: TempDir,
    file: PathBuf,
}

fn setup(extra_containers: usize) -> Setup {
    let lab = Lab::new(TEST_PREFIX, 4 + extra_containers).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("temp dir");
    let file = dir
        .write("netbpf.toml", &definitions(&lab, ""))
        .expect("write definitions");
    let out = netbpf_ok(
        &lab.host,
        &["apply", "-c", file.to_str().expect("UTF-8 path")],
    );
    assert!(out.contains("added 4 container(s)"), "{out}");
    Setup { lab, dir, file }
}

/// One echo request from `from` to `to`: whether it was answered.
fn ping(from: &Netns, to: Ipv4Addr) -> bool {
    from.command("ping", &["-c", "1", "-W", "1", &to.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ping runs")
        .success()
}

/// Whether `to` answers any of three pings from `from`: for a container just added, whose
/// first ARP or echo may go while its link comes up on a loaded machine.
fn reaches(from: &Netns, to: Ipv4Addr) -> bool {
    (0..3).any(|_| ping(from, to))
}

/// A TCP connection from `from` to a listener in `to`, with one echoed message.
fn tcp_works(from: &Netns, to: &Netns, addr: Ipv4Addr) -> bool {
    let target = SocketAddrV4::new(addr, 7000);
    let listener = to.run(|| TcpListener::bind(target).expect("listen"));
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Ok(mut conn) = accept_within(&listener, Duration::from_secs(2)) {
                let mut buf = [0u8; 4];
                if conn.read_exact(&mut buf).is_ok() {
                    let _ = conn.write_all(&buf);
                }
            }
        });
        from.run(|| {
            let Ok(mut conn) = TcpStream::connect_timeout(&target.into(), Duration::from_secs(1))
            else {
                return false;
            };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4];
            conn.write_all(b"ping").is_ok() && conn.read_exact(&mut buf).is_ok() && &buf == b"ping"
        })
    })
}

/// A UDP datagram from `from` to a socket in `to`.
fn udp_works(from: &Netns, to: &Netns, addr: Ipv4Addr) -> bool {
    let target = SocketAddrV4::new(addr, 7001);
    let socket = to.run(|| UdpSocket::bind(target).expect("bind"));
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    from.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.send_to(b"datagram", target).is_ok()
    }) && socket.recv_from(&mut [0u8; 64]).is_ok_and(|(n, _)| n == 8)
}

#[test]
fn connectivity_matrix_over_two_networks() {
    require_root!();
    let Setup { lab, .. } = setup(0);
    let [web1, web2, db1, db2] = [0, 1, 2, 3].map(|i| &lab.containers[i]);

    // ICMP first, one echo request per pair: the drop counters must match exactly.
    for (from, to, allowed) in [
        (web1, WEB2, true),
        (web2, WEB1, true),
        (web1, FRONT_GW, true),
        (db1, BACK_GW, true),
        (db1, DB2, false),
        (db2, DB1, false),
        (web1, DB1, false),
        (db1, WEB1, false),
    ] {
        assert_eq!(ping(from, to), allowed, "ping {} -> {to}", from.name());
    }
    let rows = stats(&lab.host);
    assert_eq!(counter(&rows, Hook::FromContainer, Outcome::DropIcc).0, 2);
    assert_eq!(
        counter(&rows, Hook::FromContainer, Outcome::DropCrossNetwork).0,
        2
    );
    // 2 echo requests and 2 replies between web1 and web2.
    assert_eq!(counter(&rows, Hook::FromContainer, Outcome::Forward).0, 4);
    assert_eq!(counter(&rows, Hook::FromContainer, Outcome::Pass).0, 2);

    for (from, to, addr, allowed) in [
        (web1, web2, WEB2, true),
        (web2, web1, WEB1, true),
        (db1, db2, DB2, false),
        (web1, db1, DB1, false),
        (db2, web2, WEB2, false),
    ] {
        assert_eq!(
            tcp_works(from, to, addr),
            allowed,
            "tcp {} -> {addr}",
            from.name()
        );
        assert_eq!(
            udp_works(from, to, addr),
            allowed,
            "udp {} -> {addr}",
            from.name()
        );
    }
    let rows = stats(&lab.host);
    assert!(counter(&rows, Hook::FromContainer, Outcome::DropIcc).0 >= 4);
    assert!(counter(&rows, Hook::FromContainer, Outcome::DropCrossNetwork).0 >= 6);
}

#[test]
fn spoofed_source_mac_and_ip_are_dropped_and_counted() {
    require_root!();
    let Setup { lab, .. } = setup(0);
    let web1 = &lab.containers[0];
    let own = Mac([0x02, 0x42, 198, 18, 10, 2]);
    let forged = Mac([0x02, 0x42, 198, 18, 10, 99]);
    let peer = Mac([0x02, 0x42, 198, 18, 10, 3]);
    let to = SocketAddrV4::new(WEB2, 9);
    let spoofed_mac = packet::udp4_frame(peer, forged, SocketAddrV4::new(WEB1, 9), to, b"x");
    let spoofed_ip = packet::udp4_frame(
        peer,
        own,
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 10, 3), 9),
        to,
        b"x",
    );
    let spoofed_arp = packet::arp_request(own, Ipv4Addr::new(198, 18, 10, 50), WEB2);
    web1.run(|| {
        send_frames(
            "eth0",
            &[spoofed_mac.clone(), spoofed_mac.clone(), spoofed_mac],
        )
    })
    .expect("send");
    wait_for_count(&lab.host, Hook::FromContainer, Outcome::DropSpoofedMac, 3);
    web1.run(|| send_frames("eth0", &[spoofed_ip.clone(), spoofed_ip, spoofed_arp]))
        .expect("send");
    let rows = wait_for_count(&lab.host, Hook::FromContainer, Outcome::DropSpoofedIp, 3);
    assert_eq!(counter(&rows, Hook::FromContainer, Outcome::Forward).0, 0);
}

#[test]
fn truncated_frames_from_a_container_are_dropped_as_malformed() {
    require_root!();
    let Setup { lab, .. } = setup(0);
    let own = Mac([0x02, 0x42, 198, 18, 10, 2]);
    let peer = Mac([0x02, 0x42, 198, 18, 10, 3]);
    let frame = packet::udp4_frame(
        peer,
        own,
        SocketAddrV4::new(WEB1, 9),
        SocketAddrV4::new(WEB2, 9),
        b"x",
    );
    let arp = packet::arp_request(own, WEB1, WEB2);
    // Cut at each header boundary and inside each header.
    let cuts = [
        frame[..14].to_vec(),
        frame[..14 + 10].to_vec(),
        frame[..14 + 19].to_vec(),
        arp[..14].to_vec(),
        arp[..14 + 8].to_vec(),
        arp[..14 + 27].to_vec(),
    ];
    lab.containers[0]
        .run(|| send_frames("eth0", &cuts))
        .expect("send");
    let rows = wait_for_count(
        &lab.host,
        Hook::FromContainer,
        Outcome::DropMalformed,
        cuts.len() as u64,
    );
    assert_eq!(counter(&rows, Hook::FromContainer, Outcome::Forward).0, 0);
    assert_eq!(counter(&rows, Hook::FromContainer, Outcome::ArpReply).0, 0);
}

#[test]
fn arp_answers_for_gateway_and_peers_only() {
    require_root!();
    let Setup { lab, .. } = setup(0);
    let web1 = &lab.containers[0];
    assert!(ping(web1, WEB2));
    assert!(ping(web1, FRONT_GW));
    let neigh = String::from_utf8(
        web1.exec("ip", &["-j", "neigh", "show", "dev", "eth0"])
            .expect("ip neigh")
            .stdout,
    )
    .expect("UTF-8");
    let neigh: Vec<Value> = serde_json::from_str(&neigh).expect("JSON");
    let mac_of = |addr: Ipv4Addr| {
        neigh
            .iter()
            .find(|n| n["dst"] == addr.to_string())
            .and_then(|n| n["lladdr"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(mac_of(WEB2).as_deref(), Some("02:42:c6:12:0a:03"));
    let containers: Vec<Value> =
        serde_json::from_str(&netbpf_ok(&lab.host, &["show", "containers", "-o", "json"]))
            .expect("JSON");
    let host_if = containers
        .iter()
        .find(|c| c["name"] == "web1")
        .expect("web1")["host_interface"]
        .as_str()
        .expect("name")
        .to_owned();
    let host_mac = lab
        .host
        .exec("cat", &[&format!("/sys/class/net/{host_if}/address")])
        .expect("mac");
    assert_eq!(
        mac_of(FRONT_GW),
        Some(String::from_utf8_lossy(&host_mac.stdout).trim().to_owned())
    );

    // Nobody answers for an address no container has, nor for another network's container.
    let before = counter(
        &stats(&lab.host),
        Hook::FromContainer,
        Outcome::DropArpUnanswered,
    )
    .0;
    let own = Mac([0x02, 0x42, 198, 18, 10, 2]);
    web1.run(|| {
        send_frames(
            "eth0",
            &[
                packet::arp_request(own, WEB1, Ipv4Addr::new(198, 18, 10, 77)),
                packet::arp_request(own, WEB1, DB1),
            ],
        )
    })
    .expect("send");
    wait_for_count(
        &lab.host,
        Hook::FromContainer,
        Outcome::DropArpUnanswered,
        before + 2,
    );
    assert!(!ping(web1, Ipv4Addr::new(198, 18, 10, 77)));
}

/// Exchanges messages over one TCP connection until `stop`; returns how many round trips
/// succeeded, or the first error.
fn echo_stream(
    from: &Netns,
    to: &Netns,
    addr: Ipv4Addr,
    port: u16,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let target = SocketAddrV4::new(addr, port);
    let listener = to.run(|| TcpListener::bind(target).expect("listen"));
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut conn = accept_within(&listener, WAIT).expect("accept");
            let mut buf = [0u8; 1024];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        from.run(|| {
            let mut conn =
                TcpStream::connect_timeout(&target.into(), WAIT).map_err(|e| e.to_string())?;
            conn.set_read_timeout(Some(WAIT))
                .map_err(|e| e.to_string())?;
            let mut rounds = 0;
            let mut buf = [0u8; 1024];
            while !stop.load(Ordering::Relaxed) {
                conn.write_all(&[0xab; 1024])
                    .map_err(|e| format!("write after {rounds}: {e}"))?;
                conn.read_exact(&mut buf)
                    .map_err(|e| format!("read after {rounds}: {e}"))?;
                rounds += 1;
            }
            Ok(rounds)
        })
    })
}

#[test]
fn reconcile_adds_and_removes_containers_without_disturbing_others() {
    require_root!();
    let Setup { lab, dir, file } = setup(1);
    let file_str = file.to_str().expect("UTF-8").to_owned();
    let extra = format!(
        "\n[[container]]\nname = \"web3\"\nnetns = \"{}\"\nnetwork = \"front\"\n",
        lab.containers[4].path().display()
    );
    let stop = AtomicBool::new(false);
    let rounds = std::thread::scope(|s| {
        let stream =
            s.spawn(|| echo_stream(&lab.containers[0], &lab.containers[1], WEB2, 7100, &stop));
        // A failed assertion below must still end the stream, or the scope waits forever.
        let _stop = SetOnDrop(&stop);
        for _ in 0..3 {
            dir.write("netbpf.toml", &definitions(&lab, &extra))
                .expect("write");
            let out = netbpf_ok(&lab.host, &["apply", "-c", &file_str]);
            assert!(out.contains("added 1 container(s): web3"), "{out}");
            // web3 got the lowest free address and is reachable (from a clean neighbour
            // cache: the last round left web1 an entry that failed).
            lab.containers[0]
                .exec("ip", &["neigh", "flush", "dev", "eth0"])
                .expect("flush");
            let containers: Vec<Value> =
                serde_json::from_str(&netbpf_ok(&lab.host, &["show", "containers", "-o", "json"]))
                    .expect("JSON");
            let web3 = containers
                .iter()
                .find(|c| c["name"] == "web3")
                .expect("web3 listed");
            assert_eq!(web3["ip"], "198.18.10.4");
            assert!(reaches(&lab.containers[4], WEB1));
            assert!(reaches(&lab.containers[0], WEB3));
            dir.write("netbpf.toml", &definitions(&lab, ""))
                .expect("write");
            let unanswered = counter(
                &stats(&lab.host),
                Hook::FromContainer,
                Outcome::DropArpUnanswered,
            )
            .0;
            let out = netbpf_ok(&lab.host, &["apply", "-c", &file_str]);
            assert!(out.contains("removed 1: web3"), "{out}");
            // Its address is nobody's now: web1's ARP for it goes unanswered.
            lab.containers[0]
                .exec("ip", &["neigh", "flush", "dev", "eth0"])
                .expect("flush");
            assert!(!ping(&lab.containers[0], WEB3));
            let now = counter(
                &stats(&lab.host),
                Hook::FromContainer,
                Outcome::DropArpUnanswered,
            )
            .0;
            assert!(
                now > unanswered,
                "web1's ARP for the removed address was answered"
            );
        }
        stop.store(true, Ordering::Relaxed);
        stream.join().expect("stream thread")
    });
    let rounds = rounds.expect("the long connection never broke");
    assert!(rounds > 0);
    // Nothing of web3 is left: no veth in the host, no interface in its namespace.
    let links = lab
        .host
        .exec("ip", &["-o", "link", "show"])
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    assert_eq!(links.matches("netbpf:").count(), 4, "{links}");
    assert!(!links.contains("netbpf:web3"), "{links}");
    let left = lab.containers[4]
        .exec("ip", &["-o", "link", "show"])
        .expect("ip link");
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).lines().count(),
        1,
        "only lo is left"
    );
    let containers = netbpf_ok(&lab.host, &["show", "containers", "-o", "json"]);
    assert!(!containers.contains("web3"), "{containers}");
}

#[test]
fn agent_killed_and_restarted_loses_no_packet() {
    require_root!();
    let Setup { lab, dir, file } = setup(0);
    let file_str = file.to_str().expect("UTF-8").to_owned();
    let pins = Path::new(NETNS_PIN_ROOT)
        .join(lab.host.name())
        .join("links");
    let link_pins: Vec<PathBuf> = std::fs::read_dir(&pins)
        .expect("links")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(link_pins.len(), 4);
    let links_before: Vec<u32> = link_pins.iter().map(|p| link_ids(p).0).collect();

    let log = dir.path().join("agent.log");
    let start_agent = || {
        let mut cmd = Command::new(netbpf_bin());
        cmd.args(["--netns", lab.host.name(), "agent", "-c", &file_str]);
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        cmd.stderr(log_file);
        Background::spawn(cmd).expect("agent starts")
    };
    let reconciles = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("reconciled")
            .count()
    };

    let ping = lab.containers[0]
        .command(
            "ping",
            &["-i", "0.01", "-c", "400", "-q", &WEB2.to_string()],
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("ping starts");
    let stop = AtomicBool::new(false);
    let rounds = std::thread::scope(|s| {
        let stream =
            s.spawn(|| echo_stream(&lab.containers[0], &lab.containers[1], WEB2, 7200, &stop));
        let _stop = SetOnDrop(&stop);
        for round in 1..=5 {
            let agent = start_agent();
            assert!(
                wait_for(WAIT, || (reconciles() >= round).then_some(())).is_some(),
                "agent never reconciled"
            );
            drop(agent); // SIGKILL
        }
        let out = ping.wait_with_output().expect("ping ends");
        stop.store(true, Ordering::Relaxed);
        (stream.join().expect("stream thread"), out)
    });
    let (rounds, ping_out) = rounds;
    let summary = String::from_utf8_lossy(&ping_out.stdout).into_owned();
    assert!(
        summary.contains("400 packets transmitted, 400 received"),
        "{summary}"
    );
    assert!(rounds.expect("the stream never broke") > 0);
    let links_after: Vec<u32> = link_pins.iter().map(|p| link_ids(p).0).collect();
    assert_eq!(links_before, links_after, "pinned link ids changed");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        log_text
            .matches("containers_unchanged=4 program_swaps=4")
            .count(),
        5,
        "{log_text}"
    );
}

#[test]
fn agent_reloads_on_file_change_and_sighup_and_exits_on_sigterm() {
    require_root!();
    let Setup { lab, dir, file } = setup(1);
    let log = dir.path().join("agent.log");
    let mut cmd = Command::new(netbpf_bin());
    cmd.args(["--netns", lab.host.name(), "agent", "-c"])
        .arg(&file);
    cmd.stderr(std::fs::File::create(&log).expect("log"));
    let mut agent = Background::spawn(cmd).expect("agent starts");
    let logged = |what: &str, n: usize| {
        wait_for(WAIT, || {
            (std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches(what)
                .count()
                >= n)
                .then_some(())
        })
        .is_some()
    };
    assert!(logged("reconciled", 1), "agent never reconciled");

    // The file changes (replaced, as editors do): web3 appears.
    let extra = format!(
        "\n[[container]]\nname = \"web3\"\nnetns = \"{}\"\nnetwork = \"front\"\n",
        lab.containers[4].path().display()
    );
    let staged = dir
        .write("staged.toml", &definitions(&lab, &extra))
        .expect("write");
    std::fs::rename(&staged, &file).expect("replace the file");
    assert!(logged("containers_added=1", 1), "no reload on file change");
    assert!(reaches(&lab.containers[4], WEB1));

    // An invalid file is refused and changes nothing; SIGHUP reloads the same way.
    dir.write("netbpf.toml", "[[network]]\nname = 7\n")
        .expect("write");
    assert!(logged("reload refused, kernel state unchanged", 1));
    assert!(reaches(&lab.containers[4], WEB1));
    std::fs::rename(
        dir.write("staged.toml", &definitions(&lab, ""))
            .expect("write"),
        &file,
    )
    .expect("replace");
    assert!(logged("containers_removed=1", 1));
    // SAFETY: signalling the agent this test started, by its PID.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) }, 0);
    // Reconciled so far: at start, web3 added, web3 removed; SIGHUP makes the fourth.
    assert!(logged("reconciled", 4), "no reload on SIGHUP");

    // SIGTERM: a clean exit, the datapath stays.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, libc::SIGTERM) }, 0);
    let status = agent.wait().expect("agent exits");
    assert!(status.success(), "{status}");
    assert!(logged(
        "exiting, the datapath stays in place signal=SIGTERM",
        1
    ));
    assert!(ping(&lab.containers[0], WEB2));
}

#[test]
fn down_removes_every_veth_pin_and_entry() {
    require_root!();
    let Setup { lab, .. } = setup(0);
    let out = netbpf_ok(&lab.host, &["down"]);
    assert!(out.contains("removed 4 container veth(s)"), "{out}");
    assert!(!Path::new(NETNS_PIN_ROOT).join(lab.host.name()).exists());
    let links = lab
        .host
        .exec("ip", &["-o", "link", "show"])
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    // lo and the lab's uplink: no veth of netbpf's.
    assert_eq!(links.lines().count(), 2, "{links}");
    assert!(!links.contains("netbpf:"), "{links}");
    for ns in &lab.containers[..4] {
        let links = ns.exec("ip", &["-o", "link", "show"]).expect("ip link");
        assert_eq!(
            String::from_utf8_lossy(&links.stdout).lines().count(),
            1,
            "only lo is left in {}",
            ns.name()
        );
    }
    let out = netbpf(&lab.host, &["show", "containers"]);
    assert_eq!(out.status.code(), Some(1), "nothing is attached any more");
}

/// The non-empty slots of a pinned array map.
fn array_entries<V: aya::Pod + Default + PartialEq>(pin: &Path) -> Vec<(u32, V)> {
    let data = aya::maps::MapData::from_pin(pin).expect("pinned map");
    let map = aya::maps::Map::from_map_data(data).expect("map");
    let array: aya::maps::Array<_, V> = aya::maps::Array::try_from(map).expect("array");
    array
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.ok().filter(|v| *v != V::default()).map(|v| (i as u32, v)))
        .collect()
}

/// Every kind of invalid file: exit 2, a message naming what is wrong, and the kernel's
/// maps exactly as they were.
#[test]
fn invalid_files_change_nothing() {
    require_root!();
    let Setup { lab, dir, .. } = setup(0);
    let pin_dir = Path::new(NETNS_PIN_ROOT).join(lab.host.name());
    // Everything a reconcile could touch: every map (hash maps as bpftool dumps them,
    // arrays as their non-empty slots), the link pins, and the host's interfaces.
    let dump = || -> Vec<String> {
        let mut state: Vec<String> = [maps::NETWORKS, maps::ENDPOINTS, maps::IFACES_BIG]
            .iter()
            .map(|m| {
                let out = Command::new("bpftool")
                    .args(["-j", "map", "dump", "pinned"])
                    .arg(pin_dir.join("maps").join(m))
                    .output()
                    .expect("bpftool runs");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .collect();
        state.push(format!(
            "{:?}",
            array_entries::<IfaceInfo>(&pin_dir.join("maps").join(maps::IFACES))
        ));
        state.push(format!(
            "{:?}",
            array_entries::<PeerInfo>(&pin_dir.join("maps").join(maps::PEERS))
        ));
        let mut pins: Vec<_> = std::fs::read_dir(pin_dir.join("links"))
            .expect("links")
            .map(|e| e.expect("entry").file_name())
            .collect();
        pins.sort();
        state.push(format!("{pins:?}"));
        let links = lab
            .host
            .exec("ip", &["-o", "link", "show"])
            .expect("ip link");
        state.push(String::from_utf8_lossy(&links.stdout).into_owned());
        state
    };
    let before = dump();
    let valid = definitions(&lab, "");
    let web1_ns = lab.containers[0].path().display().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown field",
            valid.replacen("icc = false", "icc = false\ncolour = \"red\"", 1),
            "unknown field `colour`",
        ),
        (
            "bad CIDR",
            valid.replacen("198.18.20.0/24", "198.18.20.0/33", 1),
            "subnet: \"198.18.20.0/33\"",
        ),
        (
            "host bits",
            valid.replacen("198.18.20.0/24", "198.18.20.7/24", 1),
            "did you mean 198.18.20.0/24",
        ),
        (
            "overlap",
            valid.replacen("198.18.20.0/24", "198.18.10.128/25", 1),
            "overlaps network \"front\"",
        ),
        (
            "ip outside",
            valid.replacen("ip = \"198.18.10.3\"", "ip = \"198.18.30.3\"", 1),
            "container \"web2\": ip: 198.18.30.3 is not a host address",
        ),
        (
            "ip is gateway",
            valid.replacen("ip = \"198.18.10.3\"", "ip = \"198.18.10.1\"", 1),
            "is the gateway of network \"front\"",
        ),
        (
            "bad address",
            valid.replacen("ip = \"198.18.10.3\"", "ip = \"198.18.10.300\"", 1),
            "is not an IPv4 address",
        ),
        (
            "duplicate name",
            valid.replacen("name = \"web2\"", "name = \"web1\"", 1),
            "container \"web1\": name: defined twice",
        ),
        (
            "duplicate ip",
            valid.replacen("ip = \"198.18.10.3\"", "ip = \"198.18.10.2\"", 1),
            "is also the address of container \"web1\"",
        ),
        (
            "duplicate mac",
            valid.replacen(
                "network = \"front\"\nip = \"198.18.10.3\"",
                "network = \"front\"\nip = \"198.18.10.3\"\nmac = \"02:42:c6:12:0a:02\"",
                1,
            ),
            "is also the MAC of container \"web1\"",
        ),
        (
            "missing netns",
            valid.replacen(&web1_ns, "/run/netns/nbt-does-not-exist", 1),
            "network namespace /run/netns/nbt-does-not-exist does not exist",
        ),
        (
            "unknown network",
            valid.replacen(
                "network = \"back\"\nip = \"198.18.20.3\"",
                "network = \"middle\"\nip = \"198.18.20.3\"",
                1,
            ),
            "network: no network named \"middle\"",
        ),
    ];
    for (kind, text, expected) in cases {
        assert_ne!(text, valid, "{kind}: the case did not change the file");
        let file = dir.write("bad.toml", &text).expect("write");
        let out = netbpf(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{kind}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{kind}: {stderr:?} lacks {expected:?}"
        );
        assert!(
            stderr.contains("bad.toml"),
            "{kind}: the message names no file: {stderr}"
        );
        let check = Command::new(netbpf_bin())
            .args(["check", "-c"])
            .arg(&file)
            .output()
            .expect("check");
        assert_eq!(check.status.code(), Some(2), "{kind}: check");
        assert_eq!(dump(), before, "{kind}: kernel state changed");
    }
}
