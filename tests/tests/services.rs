//! Virtual services with real traffic: a client container (or a client outside) connects
//! to a VIP, and each backend's server answers with its own name, so the test sees which
//! backend every connection reached. Exact counts where the scheduler promises them.

mod support;

use std::{
    collections::BTreeMap,
    io::{self, BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use netbpf_common::stats::{Hook, Outcome};
use netbpf_tests::{
    TEST_PREFIX, TempDir, lab::Lab, netbpf_bin, netns::Netns, process::Background, require_root,
    servers::TcpServer, sockets::BoundTcp,
};
use serde_json::Value;
use support::{assert_checksums, counter, netbpf_ok, stats, tx_offload};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 10);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const BACKENDS: [&str; 3] = ["b1", "b2", "b3"];
const LIMIT: Duration = Duration::from_secs(5);

/// The client (container 0) and the backends b1..b3 (containers 1..3), one network.
fn definitions(lab: &Lab, host: &str, services: &str) -> String {
    let mut text = format!(
        "{host}[[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
         [[container]]\nname = \"client\"\nnetns = \"{}\"\nnetwork = \"front\"\nip = \"{CLIENT_IP}\"\n\n",
        lab.containers[0].path().display()
    );
    for (i, name) in BACKENDS.iter().enumerate() {
        text += &format!(
            "[[container]]\nname = \"{name}\"\nnetns = \"{}\"\nnetwork = \"front\"\nip = \"198.18.10.{}\"\n\n",
            lab.containers[i + 1].path().display(),
            i + 3
        );
    }
    text + services
}

/// A `[[service]]` at the VIP, port 80, over the named backends' port 8080.
fn service(scheduler: &str, extra: &str, backends: &[(&str, u16)]) -> String {
    let backends: Vec<String> = backends
        .iter()
        .map(|(name, weight)| {
            format!("{{ container = \"{name}\", port = 8080, weight = {weight} }}")
        })
        .collect();
    format!(
        "[[service]]\nname = \"web\"\nvip = \"{VIP}\"\nport = 80\nprotocol = \"tcp\"\n\
         scheduler = \"{scheduler}\"\n{extra}backends = [{}]\n",
        backends.join(", ")
    )
}

/// The lab's definitions with these services (no `[host]` section).
fn apply_services(lab: &Lab, dir: &TempDir, services: &str) {
    apply(lab, dir, &definitions(lab, "", services));
}

fn apply(lab: &Lab, dir: &TempDir, text: &str) {
    let file = dir.write("netbpf.toml", text).expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);
}

/// A connection to the VIP, its backend's name read.
struct Conn {
    reader: BufReader<TcpStream>,
    backend: String,
}

impl Conn {
    fn open(ns: &Netns, to: SocketAddrV4) -> io::Result<Conn> {
        ns.run(|| {
            let stream = TcpStream::connect_timeout(&to.into(), LIMIT)?;
            stream.set_read_timeout(Some(LIMIT))?;
            let mut reader = BufReader::new(stream);
            let mut backend = String::new();
            reader.read_line(&mut backend)?;
            Ok(Conn {
                reader,
                backend: backend.trim().to_owned(),
            })
        })
    }

    /// One exchange on the open connection.
    fn echo(&mut self, msg: &str) -> io::Result<String> {
        self.reader
            .get_mut()
            .write_all(format!("{msg}\n").as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line.trim().to_owned())
    }
}

/// The backend one new connection reaches (the connection then closes).
fn backend_of(ns: &Netns, to: SocketAddrV4) -> String {
    Conn::open(ns, to)
        .unwrap_or_else(|e| panic!("connection to {to}: {e}"))
        .backend
}

fn tally(ns: &Netns, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts
            .entry(backend_of(ns, SocketAddrV4::new(VIP, 80)))
            .or_insert(0) += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

struct Setup {
    lab: Lab,
    dir: TempDir,
    _servers: Vec<TcpServer>,
}

fn setup() -> Setup {
    let lab = Lab::new(TEST_PREFIX, 4).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    // The namespaces exist before the servers bind in them; addresses come with apply.
    apply_services(&lab, &dir, "");
    let servers = BACKENDS
        .iter()
        .enumerate()
        .map(|(i, name)| TcpServer::named(&lab.containers[i + 1], name))
        .collect();
    Setup {
        lab,
        dir,
        _servers: servers,
    }
}

/// A container's connection to a VIP, both ways, with senders that complete their
/// checksums and with senders that leave them to offload: every frame the client and
/// the backend receive has the right transport checksum for its translated addresses.
#[test]
fn vip_checksums_are_right_both_ways() {
    use netbpf_tests::capture::Capture;

    require_root!();
    let Setup { lab, dir, _servers } = setup();
    apply_services(&lab, &dir, &service("rr", "", &[("b1", 1)]));
    let (client, backend) = (&lab.containers[0], &lab.containers[1]);
    for offload in [false, true] {
        for ns in [client, backend] {
            tx_offload(ns, "eth0", offload);
        }
        let at_client = client.run(|| Capture::open("eth0")).expect("capture");
        let at_backend = backend.run(|| Capture::open("eth0")).expect("capture");
        let mut conn = Conn::open(client, SocketAddrV4::new(VIP, 80)).expect("connect");
        assert_eq!(conn.backend, "b1");
        assert_eq!(conn.echo("ping").expect("echo"), "ping");
        drop(conn);
        // A handshake, the data and a close each way.
        assert_checksums("at the client", &at_client, offload, 4);
        assert_checksums("at the backend", &at_backend, offload, 4);
    }
}

/// rr gives each of three backends exactly a third of 30 connections; wrr 3:1 gives
/// exactly 30 and 10 of 40; `show services` counts the connections.
#[test]
fn round_robin_and_weighted_round_robin_are_exact() {
    require_root!();
    let Setup { lab, dir, _servers } = setup();
    let client = &lab.containers[0];
    apply_services(
        &lab,
        &dir,
        &service("rr", "", &[("b1", 1), ("b2", 1), ("b3", 1)]),
    );
    assert_eq!(
        tally(client, 30),
        counts(&[("b1", 10), ("b2", 10), ("b3", 10)])
    );
    let shown: Vec<Value> =
        serde_json::from_str(&netbpf_ok(&lab.host, &["show", "services", "-o", "json"]))
            .expect("JSON");
    let opened: Vec<u64> = shown[0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["opened"].as_u64().expect("opened"))
        .collect();
    assert_eq!(opened, [10, 10, 10], "{shown:?}");

    apply_services(&lab, &dir, &service("wrr", "", &[("b1", 3), ("b2", 1)]));
    assert_eq!(tally(client, 40), counts(&[("b1", 30), ("b2", 10)]));
    let rows = stats(&lab.host);
    assert!(
        counter(&rows, Hook::FromContainer, Outcome::Service).0 >= 70,
        "at least a SYN per connection through the VIP"
    );
}

/// lc: connections held open on one backend steer new ones to the others.
#[test]
fn least_connections_avoid_the_busy_backend() {
    require_root!();
    let Setup { lab, dir, _servers } = setup();
    let client = &lab.containers[0];
    let vip = SocketAddrV4::new(VIP, 80);
    apply_services(&lab, &dir, &service("lc", "", &[("b1", 1)]));
    let held: Vec<Conn> = (0..3)
        .map(|_| Conn::open(client, vip).expect("held connection"))
        .collect();
    assert!(held.iter().all(|c| c.backend == "b1"));
    apply_services(
        &lab,
        &dir,
        &service("lc", "", &[("b1", 1), ("b2", 1), ("b3", 1)]),
    );
    let later = tally(client, 6);
    assert_eq!(later.get("b1"), None, "b1 holds 3 connections: {later:?}");
    assert_eq!(later.values().sum::<usize>(), 6);
    drop(held);
}

/// Persistence: a client returns to its backend while its last connection is recent;
/// once the timeout passes, the scheduler chooses again (rr: the next backend).
#[test]
fn persistence_keeps_a_client_on_its_backend() {
    require_root!();
    let Setup { lab, dir, _servers } = setup();
    let client = &lab.containers[0];
    apply_services(
        &lab,
        &dir,
        &service(
            "rr",
            "persistence = \"1s\"\n",
            &[("b1", 1), ("b2", 1), ("b3", 1)],
        ),
    );
    let first = tally(client, 10);
    assert_eq!(
        first.len(),
        1,
        "one backend for a persistent client: {first:?}"
    );
    let (stuck, _) = first.into_iter().next().expect("one");
    // Past the timeout (a wait, not a timing assertion).
    std::thread::sleep(Duration::from_millis(2100));
    let next = backend_of(client, SocketAddrV4::new(VIP, 80));
    let order = ["b1", "b2", "b3"];
    let i = order.iter().position(|b| *b == stuck).expect("known");
    assert_eq!(next, order[(i + 1) % 3], "rr goes on after the timeout");
}

/// Weight 0 drains: an established connection keeps exchanging data, new ones go
/// elsewhere; and a long connection survives backends added and removed and the file
/// applied again.
#[test]
fn drained_and_changed_backends_keep_established_connections() {
    require_root!();
    let Setup { lab, dir, _servers } = setup();
    let client = &lab.containers[0];
    let vip = SocketAddrV4::new(VIP, 80);
    apply_services(&lab, &dir, &service("rr", "", &[("b1", 1)]));
    let mut long = Conn::open(client, vip).expect("long connection");
    assert_eq!(long.backend, "b1");

    let changes = [
        service("rr", "", &[("b1", 1), ("b2", 1)]),
        service("rr", "", &[("b1", 1), ("b2", 1), ("b3", 1)]),
        service("wrr", "", &[("b1", 1), ("b3", 2)]),
        service("rr", "", &[("b1", 1), ("b3", 1)]),
    ];
    for (i, change) in changes.iter().enumerate() {
        apply_services(&lab, &dir, change);
        let msg = format!("change {i}");
        assert_eq!(long.echo(&msg).expect("the long connection goes on"), msg);
    }
    apply_services(&lab, &dir, &service("rr", "", &[("b1", 1), ("b3", 1)]));
    assert_eq!(long.echo("same file").expect("after reapply"), "same file");

    // b1 drained: no new connection, the old one still talks.
    apply_services(&lab, &dir, &service("rr", "", &[("b1", 0), ("b3", 1)]));
    assert_eq!(tally(client, 6), counts(&[("b3", 6)]));
    assert_eq!(long.echo("drained").expect("still talks"), "drained");
}

/// A removed backend's flow gets a reset; a service with no backend refuses new
/// connections with a reset, at once.
#[test]
fn removed_backends_and_empty_services_refuse_explicitly() {
    require_root!();
    let Setup { lab, dir, _servers } = setup();
    let client = &lab.containers[0];
    let vip = SocketAddrV4::new(VIP, 80);
    apply_services(&lab, &dir, &service("rr", "", &[("b1", 1), ("b2", 1)]));
    let mut long = Conn::open(client, vip).expect("connection");
    assert_eq!(long.backend, "b1");
    apply_services(&lab, &dir, &service("rr", "", &[("b2", 1)]));
    let broken = long.echo("anyone?");
    assert!(
        broken
            .as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset)
            || broken.as_ref().is_ok_and(|s| s.is_empty()),
        "a removed backend's flow is reset: {broken:?}"
    );

    apply_services(&lab, &dir, &service("rr", "", &[("b2", 0)]));
    let refused = Conn::open(client, vip).map(|c| c.backend);
    assert_eq!(
        refused.as_ref().map_err(io::Error::kind).err(),
        Some(io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
    let rows = stats(&lab.host);
    assert!(counter(&rows, Hook::FromContainer, Outcome::ServiceReset).0 >= 2);
}

/// Health checks (agent): a backend whose server stops is taken out, and every new
/// connection lands on the others; back when it answers again. With none healthy, a new
/// connection is reset.
#[test]
fn health_checks_take_backends_out_and_back() {
    require_root!();
    let lab = Lab::new(TEST_PREFIX, 4).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let client = &lab.containers[0];
    let health = "health = { kind = \"tcp\", interval = \"200ms\", timeout = \"100ms\", rise = 2, fall = 2 }\n";
    let text = definitions(
        &lab,
        "",
        &service("rr", health, &[("b1", 1), ("b2", 1), ("b3", 1)]),
    );
    apply_services(&lab, &dir, "");
    let mut servers: Vec<Option<TcpServer>> = BACKENDS
        .iter()
        .enumerate()
        .map(|(i, name)| Some(TcpServer::named(&lab.containers[i + 1], name)))
        .collect();
    let file = dir.write("netbpf.toml", &text).expect("write");
    let log = dir.path().join("agent.log");
    let _agent = start_agent(&lab, &file, &log);
    let healthy = |n: usize| {
        netbpf_tests::process::wait_for(Duration::from_secs(15), || {
            let shown: Vec<Value> =
                serde_json::from_str(&netbpf_ok(&lab.host, &["show", "services", "-o", "json"]))
                    .ok()?;
            let up = shown
                .first()?
                .get("backends")?
                .as_array()?
                .iter()
                .filter(|b| b["weight"].as_u64() != Some(0))
                .count();
            (up == n).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "never {n} healthy backends; agent log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    };
    healthy(3);

    servers[1] = None;
    healthy(2);
    let spread = tally(client, 100);
    assert_eq!(spread.get("b2"), None, "{spread:?}");
    assert_eq!(spread.values().sum::<usize>(), 100);

    servers[1] = Some(TcpServer::named(&lab.containers[2], "b2"));
    healthy(3);
    assert!(tally(client, 6).contains_key("b2"));

    servers.clear();
    healthy(0);
    let refused = Conn::open(client, SocketAddrV4::new(VIP, 80)).map(|c| c.backend);
    assert_eq!(
        refused.as_ref().map_err(io::Error::kind).err(),
        Some(io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
}

fn start_agent(lab: &Lab, file: &Path, log: &Path) -> Background {
    let mut cmd = Command::new(netbpf_bin());
    cmd.args(["--netns", lab.host.name(), "agent", "-c"])
        .arg(file)
        .stderr(std::fs::File::create(log).expect("log"));
    Background::spawn(cmd).expect("agent starts")
}

/// The outside namespace sends to the VIP through the host's uplink, with checksums
/// complete (XDP on a veth needs them).
fn outside_routes_to_the_vip(outside: &Netns) {
    use netbpf_tests::lab::{HOST_UPLINK_IP, OUTSIDE_IF};

    outside
        .exec("ethtool", &["-K", OUTSIDE_IF, "tx", "off"])
        .expect("ethtool");
    outside
        .ip(&[
            "route",
            "add",
            &format!("{VIP}/32"),
            "via",
            &HOST_UPLINK_IP.to_string(),
        ])
        .expect("route to the VIP");
}

/// An external VIP from outside, through the uplink at tc and at XDP; sh keeps each
/// client on one backend and spreads 50 clients over all of them.
#[test]
fn external_vip_and_source_hashing_from_outside() {
    use netbpf_tests::lab::{HOST_UPLINK_IF, OUTSIDE_IF};

    require_root!();
    let Setup { lab, dir, _servers } = setup();
    let outside = &lab.outside;
    outside_routes_to_the_vip(outside);
    let clients: Vec<Ipv4Addr> = (100..150).map(|i| Ipv4Addr::new(198, 18, 0, i)).collect();
    for addr in &clients {
        outside
            .ip(&["addr", "add", &format!("{addr}/32"), "dev", OUTSIDE_IF])
            .expect("client address");
    }
    for mode in ["tc", "xdp"] {
        let host = format!("[host]\nuplink = \"{HOST_UPLINK_IF}\"\nuplink_mode = \"{mode}\"\n\n");
        apply(
            &lab,
            &dir,
            &definitions(
                &lab,
                &host,
                &service(
                    "sh",
                    "external = true\n",
                    &[("b1", 1), ("b2", 1), ("b3", 1)],
                ),
            ),
        );
        let mut seen = BTreeMap::new();
        for addr in &clients {
            let reached: Vec<String> = (0..2)
                .map(|_| {
                    outside.run(|| {
                        let mut conn = BoundTcp::bind(SocketAddrV4::new(*addr, 0))
                            .and_then(|s| s.connect_to(SocketAddrV4::new(VIP, 80), LIMIT))
                            .unwrap_or_else(|e| panic!("{mode}: {addr} -> VIP: {e}"));
                        let mut line = String::new();
                        BufReader::new(&mut conn)
                            .read_line(&mut line)
                            .expect("name");
                        line.trim().to_owned()
                    })
                })
                .collect();
            assert_eq!(reached[0], reached[1], "{mode}: {addr} moved");
            *seen.entry(reached[0].clone()).or_insert(0) += 1;
        }
        assert_eq!(
            seen.len(),
            3,
            "{mode}: 50 clients over all backends: {seen:?}"
        );
    }
}

/// What a connected UDP socket of `client` hears after sending to the VIP's port 53 (the
/// refusal of a backend with no socket: `Err(ConnectionRefused)`).
fn vip_answer(client: &Netns) -> Result<(), io::ErrorKind> {
    client.run(|| {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.set_read_timeout(Some(LIMIT)).expect("timeout");
        socket.connect(SocketAddrV4::new(VIP, 53)).expect("connect");
        socket.send(b"who?").expect("send");
        let mut buf = [0u8; 8];
        socket.recv(&mut buf).map(|_| ()).map_err(|e| e.kind())
    })
}

/// Sends a query to the VIP's port 53 from a socket of `client` that is closed at once.
fn query_from_a_socket_gone(client: &Netns) {
    client.run(|| {
        let gone = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        gone.send_to(b"who?", SocketAddrV4::new(VIP, 53))
            .expect("send");
    });
}

/// What `backend` hears after answering `client` on a connected socket (a client whose
/// socket has gone: `Err(ConnectionRefused)`).
fn late_answer(
    backend: &std::net::UdpSocket,
    client: std::net::SocketAddr,
) -> Result<(), io::ErrorKind> {
    backend.connect(client).expect("connect");
    backend.send(b"late").expect("answer");
    backend.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut buf = [0u8; 16];
    backend.recv(&mut buf).map(|_| ()).map_err(|e| e.kind())
}

/// ICMP errors of an external UDP service's flows, both ways, at tc and at XDP: an outside
/// client's connected socket hears the refusal of a backend with no socket, through the
/// VIP; a backend answering an outside client whose socket has gone hears that client's
/// refusal, quoting the backend itself.
#[test]
fn icmp_errors_of_external_vip_flows_reach_both_ends() {
    use std::net::UdpSocket;

    use netbpf_tests::lab::HOST_UPLINK_IF;

    require_root!();
    let Setup { lab, dir, _servers } = setup();
    let outside = &lab.outside;
    outside_routes_to_the_vip(outside);
    let udp_service = format!(
        "[[service]]\nname = \"dns\"\nvip = \"{VIP}\"\nport = 53\nprotocol = \"udp\"\nscheduler = \"rr\"\n\
         external = true\nbackends = [{{ container = \"b1\", port = 5353 }}]\n"
    );
    for mode in ["tc", "xdp"] {
        let host = format!("[host]\nuplink = \"{HOST_UPLINK_IF}\"\nuplink_mode = \"{mode}\"\n\n");
        apply(&lab, &dir, &definitions(&lab, &host, &udp_service));

        // No socket at the backend: its port unreachable reaches the client from the VIP.
        assert_eq!(
            vip_answer(outside),
            Err(io::ErrorKind::ConnectionRefused),
            "{mode}: the backend's refusal"
        );

        // A backend answers a client whose socket has gone.
        let backend = lab.containers[1].run(|| UdpSocket::bind("0.0.0.0:5353").expect("bind"));
        backend.set_read_timeout(Some(LIMIT)).expect("timeout");
        query_from_a_socket_gone(outside);
        let mut buf = [0u8; 16];
        let (_, client) = backend.recv_from(&mut buf).expect("the query reaches b1");
        assert_eq!(
            late_answer(&backend, client),
            Err(io::ErrorKind::ConnectionRefused),
            "{mode}: the client's refusal"
        );
        let rows = stats(&lab.host);
        let hook = if mode == "tc" {
            Hook::FromUplink
        } else {
            Hook::XdpUplink
        };
        assert!(
            counter(&rows, hook, Outcome::IcmpError).0 > 0,
            "{mode}: the client's error went through the uplink program"
        );
    }
}

/// A UDP service: each new flow (a fresh client socket) takes the next backend, and the
/// answer comes back from the VIP. The host's own processes reach a VIP too, through the
/// socket programs, and see the VIP as their peer.
#[test]
fn udp_services_and_host_processes() {
    use std::net::UdpSocket;

    use netbpf_tests::cgroup::Cgroup;

    require_root!();
    let Setup { lab, dir, _servers } = setup();
    let cgroup = Cgroup::create(&lab.prefix).expect("cgroup");
    let host = format!("[host]\ncgroup = \"{}\"\n\n", cgroup.path().display());
    let udp_service = format!(
        "[[service]]\nname = \"dns\"\nvip = \"{VIP}\"\nport = 53\nprotocol = \"udp\"\nscheduler = \"rr\"\n\
         backends = [{{ container = \"b1\", port = 5353 }}, {{ container = \"b2\", port = 5353 }}]\n\n"
    );
    let text = definitions(
        &lab,
        &host,
        &(udp_service + &service("rr", "", &[("b1", 1), ("b2", 1), ("b3", 1)])),
    );
    apply(&lab, &dir, &text);
    let responders: Vec<_> = BACKENDS[..2]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let socket =
                lab.containers[i + 1].run(|| UdpSocket::bind("0.0.0.0:5353").expect("bind"));
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            (socket, *name)
        })
        .collect();
    let stop = AtomicBool::new(false);
    let answers = std::thread::scope(|s| {
        for (socket, name) in &responders {
            let stop = &stop;
            s.spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(name.as_bytes(), from);
                    }
                }
            });
        }
        let _stop = netbpf_tests::process::SetOnDrop(&stop);
        (0..4)
            .map(|_| {
                lab.containers[0].run(|| {
                    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    socket.set_read_timeout(Some(LIMIT)).expect("timeout");
                    socket
                        .send_to(b"who?", SocketAddrV4::new(VIP, 53))
                        .expect("send");
                    let mut buf = [0u8; 64];
                    let (n, from) = socket.recv_from(&mut buf).expect("an answer");
                    (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
                })
            })
            .collect::<Vec<_>>()
    });
    let names: Vec<&str> = answers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["b1", "b2", "b1", "b2"]);
    assert!(
        answers
            .iter()
            .all(|(_, from)| *from == SocketAddrV4::new(VIP, 53).into()),
        "{answers:?}"
    );

    // The backends' sockets closed: a backend's port unreachable comes back from the VIP,
    // so the client's connected socket sees the refusal.
    drop(responders);
    assert_eq!(
        vip_answer(&lab.containers[0]),
        Err(io::ErrorKind::ConnectionRefused)
    );

    // The other way: a backend answers a client whose socket has gone; the client's port
    // unreachable (about a datagram from the VIP) reaches the backend quoting itself.
    let backends: Vec<UdpSocket> = (1..=2)
        .map(|i| {
            let socket = lab.containers[i].run(|| UdpSocket::bind("0.0.0.0:5353").expect("bind"));
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            socket
        })
        .collect();
    query_from_a_socket_gone(&lab.containers[0]);
    let mut buf = [0u8; 16];
    let (backend, client) = netbpf_tests::process::wait_for(LIMIT, || {
        backends
            .iter()
            .find_map(|b| b.recv_from(&mut buf).ok().map(|(_, from)| (b, from)))
    })
    .expect("the query reaches a backend");
    assert_eq!(
        late_answer(backend, client),
        Err(io::ErrorKind::ConnectionRefused)
    );
    drop(backends);

    // The host's processes (in the configured cgroup): the next backends in turn, the VIP
    // as the peer.
    let reached: Vec<String> = (0..3)
        .map(|_| {
            let code = format!(
                "import socket\ns = socket.create_connection(('{VIP}', 80), timeout=3)\n\
                 print(s.getpeername(), s.makefile().readline().strip())"
            );
            let out = cgroup
                .command(&lab.host, "/usr/bin/python3", &["-c", &code])
                .output()
                .expect("python runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect();
    assert_eq!(
        reached,
        ["b1", "b2", "b3"].map(|b| format!("('{VIP}', 80) {b}"))
    );
}
