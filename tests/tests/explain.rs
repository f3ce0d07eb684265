//! `netbpf explain` against real traffic: for each path (same-network forward, cross-network
//! drop, spoofed sources, published ports from outside at tc and XDP, a VIP with each
//! scheduler) the explanation's verdict, backend and translation are checked, then real
//! packets take the path and must do what it said; and explaining changes nothing: the
//! conntrack table and the counters read the same before and after.

mod support;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use netbpf_common::stats::{Hook, Outcome};
use netbpf_tests::{
    TEST_PREFIX, TempDir,
    lab::{
        HOST_UPLINK_IF, HOST_UPLINK_IP, HOST_UPLINK_MAC, Lab, OUTSIDE_IF, OUTSIDE_IP, OUTSIDE_MAC,
    },
    netns::Netns,
    packet::{self, Mac},
    process::{accept_within, send_frames, wait_for},
    require_root,
    servers::TcpServer,
    sockets::BoundTcp,
};
use serde_json::Value;
use support::{counter, netbpf, netbpf_ok, stats};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const CLIENT_MAC: Mac = Mac([0x02, 0x42, 198, 18, 10, 2]);
const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);
const B1_MAC: Mac = Mac([0x02, 0x42, 198, 18, 10, 3]);
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 10);
const BACKENDS: [&str; 3] = ["b1", "b2", "b3"];
const LIMIT: Duration = Duration::from_secs(5);

/// client (c0), b1..b3 (c1..c3) on "front", other (c4) on "back"; b1 publishes 8080:80;
/// the uplink translates at `mode`.
fn definitions(lab: &Lab, mode: &str, services: &str) -> String {
    let ns = |i: usize| lab.containers[i].path().display().to_string();
    let mut text = format!(
        "[host]\nuplink = \"{HOST_UPLINK_IF}\"\nuplink_mode = \"{mode}\"\n\n\
         [[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
         [[network]]\nname = \"back\"\nsubnet = \"198.18.20.0/24\"\n\n\
         [[container]]\nname = \"client\"\nnetns = \"{}\"\nnetwork = \"front\"\nip = \"{CLIENT}\"\n\n\
         [[container]]\nname = \"other\"\nnetns = \"{}\"\nnetwork = \"back\"\nip = \"{OTHER}\"\n\n",
        ns(0),
        ns(4)
    );
    for (i, name) in BACKENDS.iter().enumerate() {
        let ports = if i == 0 {
            "ports = [\"8080:80\"]\n"
        } else {
            ""
        };
        text += &format!(
            "[[container]]\nname = \"{name}\"\nnetns = \"{}\"\nnetwork = \"front\"\nip = \"198.18.10.{}\"\n{ports}\n",
            ns(i + 1),
            i + 3
        );
    }
    text + services
}

fn apply(lab: &Lab, dir: &TempDir, text: &str) {
    let file = dir.write("netbpf.toml", text).expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);
}

fn setup(mode: &str) -> (Lab, TempDir) {
    let lab = Lab::new(TEST_PREFIX, 5).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    apply(&lab, &dir, &definitions(&lab, mode, ""));
    // Checksums in software at the outside client (XDP on a veth needs them whole).
    lab.outside
        .exec("ethtool", &["-K", OUTSIDE_IF, "tx", "off"])
        .expect("ethtool");
    (lab, dir)
}

/// `netbpf explain ARGS -o json`, parsed.
fn explain(lab: &Lab, args: &[&str]) -> Value {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&netbpf_ok(&lab.host, &all)).expect("explain JSON")
}

/// What explaining must not change: the conntrack table (clock fields aside: they move
/// with time) and the counters (ARP aside: a container's kernel may re-probe a neighbour
/// at any time).
fn state(lab: &Lab) -> (Value, Vec<Value>) {
    let mut ct: Value =
        serde_json::from_str(&netbpf_ok(&lab.host, &["show", "conntrack", "-o", "json"]))
            .expect("conntrack JSON");
    if let Some(rows) = ct.as_array_mut() {
        for row in rows {
            if let Some(fields) = row.as_object_mut() {
                fields.retain(|k, _| !k.contains("idle") && !k.contains("age"));
            }
        }
    }
    let counters: Vec<Value> = stats(&lab.host)
        .into_iter()
        .filter(|r| r["outcome"] != Outcome::ArpReply.name())
        .collect();
    (ct, counters)
}

/// The state once no packet moves it any more (a closed connection's last segments may
/// still be on their way).
fn settled(lab: &Lab) -> (Value, Vec<Value>) {
    let mut last = state(lab);
    wait_for(LIMIT, || {
        std::thread::sleep(Duration::from_millis(50));
        let now = state(lab);
        let same = now == last;
        last = now;
        same.then_some(())
    })
    .expect("the datapath settles");
    last
}

/// Runs `f` (explain calls) and asserts that conntrack and counters read the same after.
fn unchanged<T>(lab: &Lab, f: impl FnOnce() -> T) -> T {
    let before = settled(lab);
    let result = f();
    let after = state(lab);
    assert_eq!(before.0, after.0, "explain changed the conntrack table");
    assert_eq!(before.1, after.1, "explain changed the counters");
    result
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn packets(lab: &Lab, hook: Hook, outcome: Outcome) -> u64 {
    counter(&stats(&lab.host), hook, outcome).0
}

/// Waits for the counter to reach `at_least`.
fn rises_to(lab: &Lab, hook: Hook, outcome: Outcome, at_least: u64) {
    let mut last = 0;
    wait_for(LIMIT, || {
        last = packets(lab, hook, outcome);
        (last >= at_least).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{}/{} stayed at {last}, expected {at_least}",
            hook.name(),
            outcome.name()
        )
    });
}

#[test]
fn forward_cross_network_and_spoofed_sources_as_explained() {
    require_root!();
    let (lab, _dir) = setup("tc");
    let (client, b1, other) = (&lab.containers[0], &lab.containers[1], &lab.containers[4]);

    let (forward, cross, spoofed, auto, forged) = unchanged(&lab, || {
        (
            explain(
                &lab,
                &[
                    "udp",
                    "198.18.10.2:5000",
                    "198.18.10.3:9",
                    "--from",
                    "client",
                ],
            ),
            explain(
                &lab,
                &[
                    "udp",
                    "198.18.10.2:5000",
                    "198.18.20.2:9",
                    "--from",
                    "client",
                ],
            ),
            explain(
                &lab,
                &[
                    "udp",
                    "198.18.10.99:5000",
                    "198.18.10.3:9",
                    "--from",
                    "client",
                ],
            ),
            // Without --from: the container that has the source address.
            explain(&lab, &["udp", "198.18.10.2:5000", "198.18.10.3:9"]),
            explain(
                &lab,
                &[
                    "tcp",
                    "198.18.0.1:1000",
                    "198.18.0.1:8080",
                    "--from-outside",
                ],
            ),
        )
    });
    assert_eq!(forward["program"], "from_container", "{forward:#}");
    assert_eq!(forward["outcome"], "forward", "{forward:#}");
    assert_eq!(forward["drop"], false);
    assert_eq!(forward["delivery"]["via"], "redirect_peer");
    assert_eq!(forward["delivery"]["container"], "b1");
    assert_eq!(forward["translation"], Value::Null);
    assert_eq!(auto["from"], "container client");
    assert_eq!(auto["outcome"], "forward");
    assert_eq!(cross["outcome"], "drop_cross_network", "{cross:#}");
    assert_eq!(cross["drop"], true);
    assert_eq!(cross["delivery"], Value::Null);
    assert_eq!(spoofed["outcome"], "drop_spoofed_ip", "{spoofed:#}");
    assert_eq!(forged["program"], "from_uplink", "{forged:#}");
    assert_eq!(forged["outcome"], "drop_spoofed_ip", "{forged:#}");
    let text = netbpf_ok(
        &lab.host,
        &[
            "explain",
            "udp",
            "198.18.10.2:5000",
            "198.18.20.2:9",
            "--from",
            "client",
        ],
    );
    assert!(text.contains("program: from_container on "), "{text}");
    assert!(
        text.contains(
            "verdict: DROP drop_cross_network: destination is a container of another network"
        ),
        "{text}"
    );

    // Forward: the datagram arrives, from the client's own address.
    let server = b1.run(|| UdpSocket::bind("0.0.0.0:9").expect("bind"));
    server.set_read_timeout(Some(LIMIT)).expect("timeout");
    let forwarded = packets(&lab, Hook::FromContainer, Outcome::Forward);
    client.run(|| {
        UdpSocket::bind("0.0.0.0:5000")
            .and_then(|s| s.send_to(b"hello", SocketAddrV4::new(B1, 9)))
            .expect("send")
    });
    let mut buf = [0u8; 16];
    let (n, from) = server.recv_from(&mut buf).expect("the datagram arrives");
    assert_eq!(
        (&buf[..n], from),
        (&b"hello"[..], SocketAddrV4::new(CLIENT, 5000).into())
    );
    rises_to(&lab, Hook::FromContainer, Outcome::Forward, forwarded + 1);

    // Cross-network: dropped with the reason explain gave, never delivered.
    let isolated = other.run(|| UdpSocket::bind("0.0.0.0:9").expect("bind"));
    isolated
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let crossed = packets(&lab, Hook::FromContainer, Outcome::DropCrossNetwork);
    client.run(|| {
        UdpSocket::bind("0.0.0.0:5001")
            .and_then(|s| s.send_to(b"hello", SocketAddrV4::new(OTHER, 9)))
            .expect("send")
    });
    rises_to(
        &lab,
        Hook::FromContainer,
        Outcome::DropCrossNetwork,
        crossed + 1,
    );
    assert!(isolated.recv_from(&mut buf).is_err(), "crossed networks");

    // Spoofed, from the container and from outside: the counters explain named.
    let spoofed_ip = packets(&lab, Hook::FromContainer, Outcome::DropSpoofedIp);
    let frame = packet::udp4_frame(
        B1_MAC,
        CLIENT_MAC,
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 10, 99), 5000),
        SocketAddrV4::new(B1, 9),
        b"x",
    );
    client
        .run(|| send_frames("eth0", &[frame]))
        .expect("send frame");
    rises_to(
        &lab,
        Hook::FromContainer,
        Outcome::DropSpoofedIp,
        spoofed_ip + 1,
    );
    let forged_before = packets(&lab, Hook::FromUplink, Outcome::DropSpoofedIp);
    let frame = packet::tcp4_frame(
        HOST_UPLINK_MAC,
        OUTSIDE_MAC,
        SocketAddrV4::new(HOST_UPLINK_IP, 1000),
        SocketAddrV4::new(HOST_UPLINK_IP, 8080),
        packet::tcp_flags::SYN,
        b"",
    );
    lab.outside
        .run(|| send_frames(OUTSIDE_IF, &[frame]))
        .expect("send frame");
    rises_to(
        &lab,
        Hook::FromUplink,
        Outcome::DropSpoofedIp,
        forged_before + 1,
    );

    // Invalid input: exit 2, nothing explained.
    for args in [
        &[
            "explain",
            "udp",
            "198.18.10.2:5000",
            "198.18.10.3:9",
            "--from",
            "nobody",
        ][..],
        &["explain", "tcp", "198.18.10.2", "198.18.10.3:80"],
        &["explain", "tcp", "198.18.10.300:1", "198.18.10.3:80"],
        &["explain", "sctp", "198.18.10.2:1", "198.18.10.3:80"],
        &[
            "explain",
            "tcp",
            "198.18.10.2:1",
            "198.18.10.3:80",
            "--tcp-flags",
            "push",
        ],
    ] {
        let out = netbpf(&lab.host, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// One TCP exchange from `addr` (outside) to the published port; returns the client
/// address the server saw.
fn published_exchange(lab: &Lab, listener: &TcpListener, from: SocketAddrV4) -> SocketAddrV4 {
    std::thread::scope(|scope| {
        let server = scope.spawn(|| {
            let mut conn = accept_within(listener, LIMIT).expect("accept");
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).expect("read");
            conn.write_all(&buf).expect("echo");
            match conn.peer_addr().expect("peer") {
                std::net::SocketAddr::V4(v4) => v4,
                other => panic!("{other}"),
            }
        });
        lab.outside.run(|| {
            let mut conn = BoundTcp::bind(from)
                .and_then(|s| s.connect_to(SocketAddrV4::new(HOST_UPLINK_IP, 8080), LIMIT))
                .expect("connect");
            conn.write_all(b"ping").expect("write");
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).expect("echo");
            assert_eq!(&buf, b"ping");
        });
        server.join().expect("server")
    })
}

#[test]
fn published_ports_from_outside_as_explained_at_tc_and_xdp() {
    require_root!();
    let (lab, dir) = setup("tc");
    let b1 = &lab.containers[1];
    let listener = b1.run(|| TcpListener::bind("0.0.0.0:80").expect("listen"));
    for (round, (mode, hook, via)) in [
        ("tc", Hook::FromUplink, "redirect_peer"),
        ("xdp", Hook::XdpUplink, "redirect"),
    ]
    .into_iter()
    .enumerate()
    {
        apply(&lab, &dir, &definitions(&lab, mode, ""));
        let port = 50000 + round as u16;
        let src = format!("{OUTSIDE_IP}:{port}");
        let args = ["tcp", &src, "198.18.0.1:8080", "--from-outside"];
        let e = unchanged(&lab, || explain(&lab, &args));
        assert_eq!(e["program"], hook.name(), "{mode}: {e:#}");
        assert_eq!(e["outcome"], "published", "{mode}: {e:#}");
        assert_eq!(e["conntrack"], Value::Null);
        assert_eq!(e["translation"]["src"], src.as_str());
        assert_eq!(e["translation"]["dst"], "198.18.10.3:80");
        assert_eq!(e["delivery"]["via"], via);
        assert_eq!(e["delivery"]["container"], "b1");

        let before = packets(&lab, hook, Outcome::Published);
        let seen = published_exchange(&lab, &listener, SocketAddrV4::new(OUTSIDE_IP, port));
        assert_eq!(seen, SocketAddrV4::new(OUTSIDE_IP, port), "the real client");
        assert!(packets(&lab, hook, Outcome::Published) > before, "{mode}");

        // The flow is recorded now: explain follows its entry (and refreshes nothing).
        let mut ack = args.to_vec();
        ack.extend_from_slice(&["--tcp-flags", "ack"]);
        let e = unchanged(&lab, || explain(&lab, &ack));
        assert_eq!(e["conntrack"]["kind"], "published", "{mode}: {e:#}");
        assert_eq!(e["outcome"], "published");
        assert_eq!(e["delivery"]["container"], "b1");
    }
}

/// A connection to the VIP from `from` (in `ns`): the stream and the backend's name.
fn connect(ns: &Netns, from: SocketAddrV4) -> (TcpStream, String) {
    ns.run(|| {
        let stream = BoundTcp::bind(from)
            .and_then(|s| s.connect_to(SocketAddrV4::new(VIP, 80), LIMIT))
            .unwrap_or_else(|e| panic!("{from} -> VIP: {e}"));
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut name = String::new();
        reader.read_line(&mut name).expect("the backend's name");
        (stream, name.trim().to_owned())
    })
}

fn service(scheduler: &str, extra: &str, weights: &[u16]) -> String {
    let backends: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "{{ container = \"{}\", port = 8080, weight = {w} }}",
                BACKENDS[i]
            )
        })
        .collect();
    format!(
        "[[service]]\nname = \"web\"\nvip = \"{VIP}\"\nport = 80\nprotocol = \"tcp\"\n\
         scheduler = \"{scheduler}\"\n{extra}backends = [{}]\n",
        backends.join(", ")
    )
}

/// Explains a new connection from `from` to the VIP twice (the same answer: explaining
/// moved nothing), and checks conntrack and counters stay as they were.
fn explain_vip(lab: &Lab, from: SocketAddrV4, sender: &[&str]) -> Value {
    let src = from.to_string();
    let vip = format!("{VIP}:80");
    let mut args = vec!["tcp", src.as_str(), vip.as_str()];
    args.extend_from_slice(sender);
    let (first, second) = unchanged(lab, || (explain(lab, &args), explain(lab, &args)));
    assert_eq!(first, second, "explaining twice gives the same answer");
    assert_eq!(first["outcome"], "service", "{first:#}");
    first
}

/// The backend explain named, its way of choosing, and its slot.
fn chosen(e: &Value) -> (String, String, Option<u64>) {
    let b = &e["backend"];
    (
        s(&b["container"]).to_owned(),
        s(&b["chosen_by"]).to_owned(),
        b["slot"].as_u64(),
    )
}

#[test]
fn each_scheduler_picks_the_backend_explain_names() {
    require_root!();
    let (lab, dir) = setup("tc");
    let _servers: Vec<TcpServer> = BACKENDS
        .iter()
        .enumerate()
        .map(|(i, name)| TcpServer::named(&lab.containers[i + 1], name))
        .collect();
    let client = &lab.containers[0];
    let mut port = 41000;
    let mut next_port = || {
        port += 1;
        SocketAddrV4::new(CLIENT, port)
    };
    let from_client = ["--from", "client"];

    // rr and wrr: the next turn, connection after connection.
    for (scheduler, weights, rounds) in [("rr", &[1, 1, 1][..], 6), ("wrr", &[3, 1][..], 8)] {
        apply(
            &lab,
            &dir,
            &definitions(&lab, "tc", &service(scheduler, "", weights)),
        );
        let mut reached = Vec::new();
        for _ in 0..rounds {
            let from = next_port();
            let e = explain_vip(&lab, from, &from_client);
            let (name, by, slot) = chosen(&e);
            assert_eq!(by, scheduler);
            assert!(slot.is_some(), "{e:#}");
            assert_eq!(e["service"]["scheduler"], scheduler);
            assert_eq!(
                e["translation"]["dst"],
                format!(
                    "198.18.10.{}:8080",
                    BACKENDS.iter().position(|b| *b == name).unwrap_or(9) + 3
                )
            );
            assert_eq!(e["delivery"]["container"], name.as_str());
            let (_, real) = connect(client, from);
            assert_eq!(
                real, name,
                "{scheduler}: explain said {name}, the connection reached {real}"
            );
            reached.push(real);
        }
        let expected: Vec<&str> = if scheduler == "rr" {
            vec!["b1", "b2", "b3", "b1", "b2", "b3"]
        } else {
            reached.iter().map(String::as_str).collect()
        };
        assert_eq!(reached, expected, "{scheduler}");
        if scheduler == "wrr" {
            let b1 = reached.iter().filter(|r| *r == "b1").count();
            assert_eq!((b1, reached.len() - b1), (6, 2), "3:1 over two cycles");
        }
    }

    // Hashing: the client's address (sh, mh) or the VIP (dh) through the Maglev table.
    for scheduler in ["sh", "dh", "mh"] {
        apply(
            &lab,
            &dir,
            &definitions(&lab, "tc", &service(scheduler, "", &[1, 1, 1])),
        );
        for _ in 0..2 {
            let from = next_port();
            let e = explain_vip(&lab, from, &from_client);
            let (name, by, slot) = chosen(&e);
            assert_eq!(by, scheduler);
            let steps = e["steps"].to_string();
            assert!(
                steps.contains(&format!("slot {}", slot.expect("slot"))),
                "{e:#}"
            );
            let (_, real) = connect(client, from);
            assert_eq!(real, name, "{scheduler}");
        }
    }

    // lc and wlc: connections held open steer the next ones; explain counts them too.
    for (scheduler, weights) in [("lc", &[1, 1, 1][..]), ("wlc", &[1, 2, 1][..])] {
        apply(
            &lab,
            &dir,
            &definitions(&lab, "tc", &service(scheduler, "", weights)),
        );
        let (mut held, mut names) = (Vec::new(), Vec::new());
        for _ in 0..6 {
            let from = next_port();
            let e = explain_vip(&lab, from, &from_client);
            let (name, by, _) = chosen(&e);
            assert_eq!(by, scheduler);
            assert!(e["backend"]["active"].is_u64(), "{e:#}");
            let (stream, real) = connect(client, from);
            assert_eq!(real, name, "{scheduler}");
            held.push(stream);
            names.push(real);
        }
        if scheduler == "lc" {
            let mut per_backend: Vec<&str> = names.iter().map(String::as_str).collect();
            per_backend.sort_unstable();
            assert_eq!(per_backend, ["b1", "b1", "b2", "b2", "b3", "b3"]);
        }
        drop(held);
    }

    // random: the connection reaches one of the candidates explain listed.
    apply(
        &lab,
        &dir,
        &definitions(&lab, "tc", &service("random", "", &[1, 1])),
    );
    for _ in 0..3 {
        let from = next_port();
        let e = explain_vip(&lab, from, &from_client);
        assert_eq!(e["backend"], Value::Null, "{e:#}");
        let candidates: Vec<&str> = e["candidates"]
            .as_array()
            .expect("candidates")
            .iter()
            .map(|c| s(&c["container"]))
            .collect();
        assert_eq!(candidates, ["b1", "b2"]);
        let (_, real) = connect(client, from);
        assert!(candidates.contains(&real.as_str()), "{real}");
    }

    // Persistence: the affinity a first connection leaves is what explain follows next.
    apply(
        &lab,
        &dir,
        &definitions(
            &lab,
            "tc",
            &service("rr", "persistence = \"300s\"\n", &[1, 1, 1]),
        ),
    );
    let from = next_port();
    let first = explain_vip(&lab, from, &from_client);
    let (name, by, _) = chosen(&first);
    assert_eq!(by, "rr");
    assert_eq!(connect(client, from).1, name);
    for _ in 0..2 {
        let from = next_port();
        let e = explain_vip(&lab, from, &from_client);
        assert_eq!(chosen(&e).0, name);
        assert_eq!(chosen(&e).1, "persistence", "{e:#}");
        assert_eq!(connect(client, from).1, name);
    }
}

/// mh from outside (an external VIP): each client address lands on the table slot
/// explain computes, and there on the backend explain names.
#[test]
fn maglev_from_outside_per_client_address() {
    require_root!();
    let (lab, dir) = setup("tc");
    let _servers: Vec<TcpServer> = BACKENDS
        .iter()
        .enumerate()
        .map(|(i, name)| TcpServer::named(&lab.containers[i + 1], name))
        .collect();
    lab.outside
        .ip(&[
            "route",
            "add",
            &format!("{VIP}/32"),
            "via",
            &HOST_UPLINK_IP.to_string(),
        ])
        .expect("route to the VIP");
    apply(
        &lab,
        &dir,
        &definitions(&lab, "tc", &service("mh", "external = true\n", &[1, 1, 1])),
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..8u8 {
        let addr = Ipv4Addr::new(198, 18, 0, 100 + i);
        lab.outside
            .ip(&["addr", "add", &format!("{addr}/32"), "dev", OUTSIDE_IF])
            .expect("client address");
        let from = SocketAddrV4::new(addr, 42000);
        let e = explain_vip(&lab, from, &["--from-outside"]);
        assert_eq!(e["program"], "from_uplink");
        let (name, by, slot) = chosen(&e);
        assert_eq!(by, "mh");
        assert!(slot.is_some());
        let before = packets(&lab, Hook::FromUplink, Outcome::Service);
        let (_, real) = connect(&lab.outside, from);
        assert_eq!(real, name, "{addr}");
        assert!(packets(&lab, Hook::FromUplink, Outcome::Service) > before);
        seen.insert(name);
    }
    assert!(
        seen.len() > 1,
        "8 clients over more than one backend: {seen:?}"
    );
}
