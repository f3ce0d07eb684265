//! North-south: published ports (definitions resolved to host ports, shown like `docker
//! port`, stable across reloads, conflicts refused, reachable from outside with the real
//! client address) and outbound masquerade, with real traffic through the uplink.

mod support;

use netbpf_common::stats::{Hook, Outcome};
use netbpf_tests::{TEST_PREFIX, TempDir, lab::Lab, require_root, sockets::BoundTcp};
use serde_json::Value;
use support::{
    assert_checksums, counter, netbpf, netbpf_ok, stats, stderr_of, tcp_echo, tx_offload,
};

fn definitions(lab: &Lab, web1_ports: &str, extra: &str) -> String {
    let ns = |i: usize| lab.containers[i].path().display().to_string();
    format!(
        "{extra}[[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
         [[container]]\nname = \"web1\"\nnetns = \"{}\"\nnetwork = \"front\"\nports = [{web1_ports}]\n\n\
         [[container]]\nname = \"web2\"\nnetns = \"{}\"\nnetwork = \"front\"\npublish_all = true\nexpose = [80, \"53/udp\"]\n",
        ns(0),
        ns(1)
    )
}

fn ports(lab: &Lab) -> Vec<String> {
    let rows: Vec<Value> =
        serde_json::from_str(&netbpf_ok(&lab.host, &["show", "ports", "-o", "json"]))
            .expect("JSON");
    rows.iter()
        .map(|r| {
            format!(
                "{} {}/{} -> {}:{}",
                r["container"].as_str().unwrap_or("?"),
                r["container_port"],
                r["proto"].as_str().unwrap_or("?"),
                r["host_ip"].as_str().unwrap_or("?"),
                r["host_port"]
            )
        })
        .collect()
}

#[test]
fn ports_are_published_shown_and_kept_across_reloads() {
    require_root!();
    let lab = Lab::new(TEST_PREFIX, 3).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let file = dir
        .write(
            "netbpf.toml",
            &definitions(
                &lab,
                r#""8080:80", "127.0.0.1:5353:53/udp", "9000-9001:9000-9001", "90""#,
                "",
            ),
        )
        .expect("write");
    let file = file.to_str().expect("UTF-8").to_owned();
    let out = netbpf_ok(&lab.host, &["apply", "-c", &file]);
    assert!(out.contains("7 published port(s)"), "{out}");
    let first = ports(&lab);
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("port range")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("low port");
    assert_eq!(
        first,
        [
            "web1 53/udp -> 127.0.0.1:5353".to_owned(),
            "web1 80/tcp -> 0.0.0.0:8080".to_owned(),
            format!("web1 90/tcp -> 0.0.0.0:{low}"),
            "web1 9000/tcp -> 0.0.0.0:9000".to_owned(),
            "web1 9001/tcp -> 0.0.0.0:9001".to_owned(),
            format!("web2 53/udp -> 0.0.0.0:{low}"),
            format!("web2 80/tcp -> 0.0.0.0:{}", low + 1),
        ]
    );

    // A container listed first that wants a free port does not take web1's or web2's.
    let extra = format!(
        "[[container]]\nname = \"aaa\"\nnetns = \"{}\"\nnetwork = \"front\"\nports = [\"70\"]\n\n",
        lab.containers[2].path().display()
    );
    dir.write(
        "netbpf.toml",
        &definitions(
            &lab,
            r#""8080:80", "127.0.0.1:5353:53/udp", "9000-9001:9000-9001", "90""#,
            &extra,
        ),
    )
    .expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", &file]);
    let second = ports(&lab);
    for row in &first {
        assert!(second.contains(row), "{row} moved: {second:?}");
    }
    assert!(
        second.contains(&format!("aaa 70/tcp -> 0.0.0.0:{}", low + 2)),
        "{second:?}"
    );

    // A conflict is refused, naming container and entry, and nothing changes.
    let bad = dir
        .write(
            "bad.toml",
            &definitions(&lab, r#""8080:80", "8080:81""#, ""),
        )
        .expect("write");
    let out = netbpf(&lab.host, &["apply", "-c", bad.to_str().expect("UTF-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("container \"web1\": ports: entry \"8080:81\": host port 8080/tcp on 0.0.0.0 is already published"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(ports(&lab), second);
}

/// The definitions of an uplink and one container, web1, publishing `ports` (a TOML
/// array's items; none if empty).
fn web1_definitions(lab: &Lab, ports: &str) -> String {
    use netbpf_tests::lab::HOST_UPLINK_IF;

    let ports = if ports.is_empty() {
        String::new()
    } else {
        format!("ports = [{ports}]\n")
    };
    format!(
        "[host]\nuplink = \"{HOST_UPLINK_IF}\"\n\n[[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
         [[container]]\nname = \"web1\"\nnetns = \"{}\"\nnetwork = \"front\"\n{ports}",
        lab.containers[0].path().display()
    )
}

/// A lab whose container web1 publishes 8080:80 and 5353:53/udp on the uplink's address
/// (the definitions file lives as long as the returned directory).
fn lab_publishing_web1() -> (Lab, TempDir) {
    let lab = Lab::new(TEST_PREFIX, 1).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let file = dir
        .write(
            "netbpf.toml",
            &web1_definitions(&lab, r#""8080:80", "5353:53/udp""#),
        )
        .expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);
    (lab, dir)
}

/// A UDP query and its answer, as each end saw them.
struct UdpExchange {
    server_saw: std::net::SocketAddr,
    client_local: std::net::SocketAddr,
    answered_by: std::net::SocketAddr,
}

/// A client in `client_ns` sends "query" to `target`; `server` (a socket of `server_ns`)
/// must receive it and answer, and the answer must come back.
fn udp_exchange(
    client_ns: &netbpf_tests::netns::Netns,
    server_ns: &netbpf_tests::netns::Netns,
    server: &std::net::UdpSocket,
    target: std::net::SocketAddrV4,
) -> UdpExchange {
    use std::{net::UdpSocket, time::Duration};

    let limit = Some(Duration::from_secs(5));
    server.set_read_timeout(limit).expect("timeout");
    let client = client_ns.run(|| UdpSocket::bind("0.0.0.0:0").expect("bind"));
    client.set_read_timeout(limit).expect("timeout");
    client.send_to(b"query", target).expect("send");
    let mut buf = [0u8; 64];
    let (n, server_saw) = server.recv_from(&mut buf).expect("the query arrives");
    assert_eq!(&buf[..n], b"query");
    server_ns
        .run(|| server.send_to(b"answer", server_saw))
        .expect("answer");
    let (n, answered_by) = client.recv_from(&mut buf).expect("the answer comes back");
    assert_eq!(&buf[..n], b"answer");
    UdpExchange {
        server_saw,
        client_local: client.local_addr().expect("local address"),
        answered_by,
    }
}

/// nstat's counter of TCP and UDP checksum errors in a namespace.
fn checksum_errors(ns: &netbpf_tests::netns::Netns) -> u64 {
    let out = ns
        .exec(
            "nstat",
            &["-a", "-s", "-z", "TcpInCsumErrors", "UdpInCsumErrors"],
        )
        .expect("nstat");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// From outside to a published port, TCP and UDP: the container's server sees the real
/// client address, the client sees answers from the host address and published port, and
/// with checksum offload off on every sender no receiver counts a checksum error.
#[test]
fn outside_reaches_published_ports_with_the_real_client_address() {
    use std::{
        net::{IpAddr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
        time::Duration,
    };

    use netbpf_tests::lab::{HOST_UPLINK_IP, OUTSIDE_IF, OUTSIDE_IP};

    require_root!();
    let (lab, dir) = lab_publishing_web1();
    // Checksums computed in software by every sender: a wrong rewrite would show.
    lab.outside
        .exec("ethtool", &["-K", OUTSIDE_IF, "tx", "off"])
        .expect("ethtool outside");
    lab.containers[0]
        .exec("ethtool", &["-K", "eth0", "tx", "off"])
        .expect("ethtool container");
    let errors_before = checksum_errors(&lab.outside) + checksum_errors(&lab.containers[0]);

    let container = &lab.containers[0];
    let listener = container.run(|| TcpListener::bind("0.0.0.0:80").expect("listen"));
    let udp_server = container.run(|| UdpSocket::bind("0.0.0.0:53").expect("bind"));
    udp_server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let published = SocketAddrV4::new(HOST_UPLINK_IP, 8080);

    for round in 0..3 {
        let echo = tcp_echo(&listener, &lab.outside, published, b"ping");
        assert_eq!(&echo.reply, b"ping", "round {round}");
        assert_eq!(
            echo.server_saw, echo.client_local,
            "the server saw the client's own address and port"
        );
        assert_eq!(echo.server_saw.ip(), IpAddr::V4(OUTSIDE_IP));
        assert_eq!(
            echo.client_peer,
            published.into(),
            "the client sees the published address"
        );
    }

    let udp = udp_exchange(
        &lab.outside,
        container,
        &udp_server,
        SocketAddrV4::new(HOST_UPLINK_IP, 5353),
    );
    assert_eq!(
        udp.server_saw,
        SocketAddr::new(IpAddr::V4(OUTSIDE_IP), udp.client_local.port()),
        "the server saw the client's own address and port"
    );
    assert_eq!(
        udp.answered_by,
        SocketAddr::from(SocketAddrV4::new(HOST_UPLINK_IP, 5353))
    );

    // Every flow is in the conntrack table, both directions.
    let flows: Vec<Value> =
        serde_json::from_str(&netbpf_ok(&lab.host, &["show", "conntrack", "-o", "json"]))
            .expect("JSON");
    let published_in = flows
        .iter()
        .filter(|f| {
            f["kind"] == "published"
                && f["dst"] == "198.18.0.1:8080"
                && f["translated"] == "198.18.10.2:80"
        })
        .count();
    let published_out = flows
        .iter()
        .filter(|f| {
            f["kind"] == "published_reply"
                && f["src"] == "198.18.10.2:80"
                && f["translated"] == "198.18.0.1:8080"
        })
        .count();
    assert_eq!((published_in, published_out), (3, 3), "{flows:?}");
    assert!(
        flows
            .iter()
            .any(|f| f["proto"] == "udp" && f["translated"] == "198.18.10.2:53"),
        "{flows:?}"
    );

    let errors_after = checksum_errors(&lab.outside) + checksum_errors(&lab.containers[0]);
    assert_eq!(
        errors_after, errors_before,
        "checksum errors after translation"
    );
    let rows = stats(&lab.host);
    assert!(counter(&rows, Hook::FromUplink, Outcome::Published).0 > 0);
    assert!(counter(&rows, Hook::FromContainer, Outcome::PublishedReply).0 > 0);

    // Unpublished, the port's flows go with it (both directions).
    let unpublished = dir
        .write("netbpf.toml", &web1_definitions(&lab, ""))
        .expect("write");
    netbpf_ok(
        &lab.host,
        &["apply", "-c", unpublished.to_str().expect("UTF-8")],
    );
    let flows: Vec<Value> =
        serde_json::from_str(&netbpf_ok(&lab.host, &["show", "conntrack", "-o", "json"]))
            .expect("JSON");
    assert!(
        flows.is_empty(),
        "flows of an unpublished port remain: {flows:?}"
    );
}

/// Senders that leave their checksums to offload (CHECKSUM_PARTIAL, a veth's default: the
/// field holds the pseudo header's sum until a device or the kernel completes it): every
/// translated frame, both ways, of a published port and of masquerade, TCP and UDP,
/// arrives with the pseudo header's sum of its new addresses, which is what the
/// completion builds on. (Receivers trust such frames unchecked, so a wrong sum would only
/// show once a frame left through a device without offload.)
#[test]
fn partial_checksums_follow_every_translation() {
    use std::{
        io::{Read as _, Write as _},
        net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
        time::Duration,
    };

    use netbpf_tests::{
        capture::Capture,
        lab::{HOST_UPLINK_IP, OUTSIDE_IF, OUTSIDE_IP},
        process::accept_within,
    };

    require_root!();
    let (lab, _dir) = lab_publishing_web1();
    let container = &lab.containers[0];
    let in_container = container.run(|| Capture::open("eth0")).expect("capture");
    let at_outside = lab
        .outside
        .run(|| Capture::open(OUTSIDE_IF))
        .expect("capture");
    let limit = Duration::from_secs(5);

    // Published: the outside's packets in, the container's replies out.
    let listener = container.run(|| TcpListener::bind("0.0.0.0:80").expect("listen"));
    let echo = tcp_echo(
        &listener,
        &lab.outside,
        SocketAddrV4::new(HOST_UPLINK_IP, 8080),
        b"ping",
    );
    assert_eq!(&echo.reply, b"ping");
    let server = container.run(|| UdpSocket::bind("0.0.0.0:53").expect("bind"));
    server.set_read_timeout(Some(limit)).expect("timeout");
    udp_exchange(
        &lab.outside,
        container,
        &server,
        SocketAddrV4::new(HOST_UPLINK_IP, 5353),
    );

    // Masquerade: the container's packets out, the outside's replies in.
    let outside_tcp = SocketAddrV4::new(OUTSIDE_IP, 9000);
    let outside_listener = lab
        .outside
        .run(|| TcpListener::bind(outside_tcp).expect("listen"));
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut conn = accept_within(&outside_listener, limit).expect("accept");
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).expect("read");
            conn.write_all(&buf).expect("echo");
        });
        container.run(|| {
            let mut conn = TcpStream::connect_timeout(&outside_tcp.into(), limit).expect("connect");
            conn.set_read_timeout(Some(limit)).expect("timeout");
            conn.write_all(b"out!").expect("write");
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).expect("the echo comes back");
            assert_eq!(&buf, b"out!");
        });
    });
    let mut buf = [0u8; 64];
    let outside_udp = lab
        .outside
        .run(|| UdpSocket::bind(SocketAddrV4::new(OUTSIDE_IP, 9001)).expect("bind"));
    outside_udp.set_read_timeout(Some(limit)).expect("timeout");
    let inside_udp = container.run(|| UdpSocket::bind("0.0.0.0:0").expect("bind"));
    inside_udp.set_read_timeout(Some(limit)).expect("timeout");
    container
        .run(|| inside_udp.send_to(b"hello", SocketAddrV4::new(OUTSIDE_IP, 9001)))
        .expect("send");
    let (n, from) = outside_udp
        .recv_from(&mut buf)
        .expect("the datagram leaves");
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(
        from.ip(),
        std::net::IpAddr::V4(HOST_UPLINK_IP),
        "masqueraded"
    );
    lab.outside
        .run(|| outside_udp.send_to(b"back", from))
        .expect("reply");
    let (n, _) = inside_udp.recv_from(&mut buf).expect("the reply comes in");
    assert_eq!(&buf[..n], b"back");

    // Both ways carried TCP and UDP of both kinds: a handshake, data and a close each.
    assert_checksums("in the container", &in_container, true, 6);
    assert_checksums("outside", &at_outside, true, 6);
}

/// Outbound: containers of a masquerading network reach the outside, which sees the
/// uplink's address and a masquerade port; two containers with the same source port to
/// the same destination both work; an internal network gets nowhere.
#[test]
fn containers_reach_the_outside_through_masquerade() {
    use std::{
        io::{Read as _, Write as _},
        net::{IpAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
        time::Duration,
    };

    use netbpf_tests::{
        lab::{HOST_UPLINK_IF, HOST_UPLINK_IP, OUTSIDE_IP},
        process::accept_within,
    };

    require_root!();
    let lab = Lab::new(TEST_PREFIX, 3).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let ns = |i: usize| lab.containers[i].path().display().to_string();
    let file = dir
        .write(
            "netbpf.toml",
            &format!(
                "[host]\nuplink = \"{HOST_UPLINK_IF}\"\n\n\
                 [[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
                 [[network]]\nname = \"vault\"\nsubnet = \"198.18.30.0/24\"\ninternal = true\n\n\
                 [[container]]\nname = \"web1\"\nnetns = \"{}\"\nnetwork = \"front\"\n\n\
                 [[container]]\nname = \"web2\"\nnetns = \"{}\"\nnetwork = \"front\"\n\n\
                 [[container]]\nname = \"secret\"\nnetns = \"{}\"\nnetwork = \"vault\"\n",
                ns(0),
                ns(1),
                ns(2)
            ),
        )
        .expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);

    let server = SocketAddrV4::new(OUTSIDE_IP, 9000);
    let listener = lab
        .outside
        .run(|| TcpListener::bind(server).expect("listen outside"));
    let mut seen = Vec::new();
    for container in &lab.containers[..2] {
        let peer = std::thread::scope(|s| {
            let accepted = s.spawn(|| {
                let mut conn = accept_within(&listener, Duration::from_secs(5)).expect("accept");
                let peer = conn.peer_addr().expect("peer");
                let mut buf = [0u8; 4];
                conn.read_exact(&mut buf).expect("read");
                conn.write_all(&buf).expect("echo");
                peer
            });
            container.run(|| {
                // The same source port from both containers.
                let socket = BoundTcp::port(5555).expect("bind");
                let mut conn = socket
                    .connect_to(server, Duration::from_secs(5))
                    .expect("connect");
                conn.write_all(b"ping").expect("write");
                let mut buf = [0u8; 4];
                conn.read_exact(&mut buf).expect("the reply comes back");
                assert_eq!(&buf, b"ping");
            });
            accepted.join().expect("server")
        });
        seen.push(peer);
    }
    for peer in &seen {
        assert_eq!(
            peer.ip(),
            IpAddr::V4(HOST_UPLINK_IP),
            "the outside sees the uplink's address"
        );
        assert!(
            (61000..=65535).contains(&peer.port()),
            "a masquerade port: {peer}"
        );
    }
    assert_ne!(seen[0].port(), seen[1].port(), "two flows, two ports");

    // UDP, and the answer finds its way back.
    let udp_server = lab
        .outside
        .run(|| UdpSocket::bind(SocketAddrV4::new(OUTSIDE_IP, 9001)).expect("bind"));
    udp_server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let client = lab.containers[0].run(|| UdpSocket::bind("0.0.0.0:0").expect("bind"));
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    client
        .send_to(b"hi", SocketAddrV4::new(OUTSIDE_IP, 9001))
        .expect("send");
    let mut buf = [0u8; 16];
    let (n, from) = udp_server.recv_from(&mut buf).expect("datagram arrives");
    assert_eq!(
        (&buf[..n], from.ip()),
        (&b"hi"[..], IpAddr::V4(HOST_UPLINK_IP))
    );
    lab.outside
        .run(|| udp_server.send_to(b"back", from))
        .expect("answer");
    let (n, _) = client.recv_from(&mut buf).expect("the answer comes back");
    assert_eq!(&buf[..n], b"back");

    // ICMP echo is masqueraded too (its identifier takes a port's part).
    let ping = lab.containers[0]
        .exec(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "2", &OUTSIDE_IP.to_string()],
        )
        .expect("ping from a container to the outside");
    assert!(String::from_utf8_lossy(&ping.stdout).contains("2 received"));

    // The internal network's container gets nowhere: it has no route out, and with one
    // added from inside, the datapath drops what it sends.
    let blocked = lab.containers[2]
        .run(|| TcpStream::connect_timeout(&server.into(), Duration::from_secs(1)));
    assert!(blocked.is_err(), "internal container reached the outside");
    lab.containers[2]
        .exec("ip", &["route", "add", "default", "via", "198.18.30.1"])
        .expect("route");
    let blocked = lab.containers[2]
        .run(|| TcpStream::connect_timeout(&server.into(), Duration::from_secs(1)));
    assert!(blocked.is_err(), "internal container reached the outside");
    let rows = stats(&lab.host);
    assert!(counter(&rows, Hook::FromContainer, Outcome::DropInternal).0 > 0);
    assert!(counter(&rows, Hook::FromContainer, Outcome::Masquerade).0 > 0);
}

/// Hairpin (a container to a neighbour's port published on the host's address), both
/// ways, with senders that complete their checksums and with senders that leave them to
/// offload: every frame each end receives has the right transport checksum for its
/// translated addresses.
#[test]
fn hairpin_checksums_are_right_both_ways() {
    use std::net::{SocketAddrV4, TcpListener};

    use netbpf_tests::{
        capture::Capture,
        lab::{HOST_UPLINK_IF, HOST_UPLINK_IP},
    };

    require_root!();
    let lab = Lab::new(TEST_PREFIX, 2).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let file = dir
        .write(
            "netbpf.toml",
            &format!(
                "[host]\nuplink = \"{HOST_UPLINK_IF}\"\n\n[[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
                 [[container]]\nname = \"server\"\nnetns = \"{}\"\nnetwork = \"front\"\nports = [\"8080:80\"]\n\n\
                 [[container]]\nname = \"peer\"\nnetns = \"{}\"\nnetwork = \"front\"\n",
                lab.containers[0].path().display(),
                lab.containers[1].path().display()
            ),
        )
        .expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);
    let (server, peer) = (&lab.containers[0], &lab.containers[1]);
    let listener = server.run(|| TcpListener::bind("0.0.0.0:80").expect("listen"));
    for offload in [false, true] {
        for ns in [server, peer] {
            tx_offload(ns, "eth0", offload);
        }
        let at_server = server.run(|| Capture::open("eth0")).expect("capture");
        let at_peer = peer.run(|| Capture::open("eth0")).expect("capture");
        let echo = tcp_echo(
            &listener,
            peer,
            SocketAddrV4::new(HOST_UPLINK_IP, 8080),
            b"ping",
        );
        assert_eq!(&echo.reply, b"ping");
        // A handshake, the data and a close each way.
        assert_checksums("at the server", &at_server, offload, 4);
        assert_checksums("at the peer", &at_peer, offload, 4);
    }
}

#[test]
fn containers_reach_published_ports_through_the_host_address() {
    use std::{
        net::{IpAddr, Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
        time::Duration,
    };

    use netbpf_tests::lab::{HOST_UPLINK_IF, HOST_UPLINK_IP};

    require_root!();
    let lab = Lab::new(TEST_PREFIX, 3).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let ns = |i: usize| lab.containers[i].path().display().to_string();
    let file = dir
        .write(
            "netbpf.toml",
            &format!(
                "[host]\nuplink = \"{HOST_UPLINK_IF}\"\n\n\
                 [[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
                 [[network]]\nname = \"back\"\nsubnet = \"198.18.20.0/24\"\n\n\
                 [[container]]\nname = \"server\"\nnetns = \"{}\"\nnetwork = \"front\"\nports = [\"8080:80\", \"127.0.0.1:8181:81\", \"5353:53/udp\"]\n\n\
                 [[container]]\nname = \"peer\"\nnetns = \"{}\"\nnetwork = \"front\"\n\n\
                 [[container]]\nname = \"other\"\nnetns = \"{}\"\nnetwork = \"back\"\n",
                ns(0),
                ns(1),
                ns(2)
            ),
        )
        .expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);
    let server = &lab.containers[0];
    let listener = server.run(|| TcpListener::bind("0.0.0.0:80").expect("listen"));
    let published = SocketAddrV4::new(HOST_UPLINK_IP, 8080);

    // From a peer (its reply to a neighbour of its own subnet is translated too), from
    // another network, and from the server itself. As Docker without its proxy, the
    // server sees the client itself, or (its own connection, its address on both ends)
    // the gateway.
    for (client, seen_as_gateway) in [
        (&lab.containers[1], None),
        (&lab.containers[2], None),
        (&lab.containers[0], Some(Ipv4Addr::new(198, 18, 10, 1))),
    ] {
        let echo = tcp_echo(&listener, client, published, b"pong");
        assert_eq!(&echo.reply, b"pong", "from {}", client.name());
        assert_eq!(
            echo.client_peer,
            published.into(),
            "the client sees the published address"
        );
        match seen_as_gateway {
            None => assert_eq!(echo.server_saw, echo.client_local, "from {}", client.name()),
            Some(gateway) => assert_eq!(
                echo.server_saw.ip(),
                IpAddr::V4(gateway),
                "from {}",
                client.name()
            ),
        }
    }

    // More connections from one client in a row, each closed at once (an HTTP client
    // with `Connection: close`), than the masquerade range has ports: none of them needs
    // one, none is dropped.
    for i in 0..4600 {
        let echo = tcp_echo(&listener, &lab.containers[1], published, b"ping");
        assert_eq!(&echo.reply, b"ping", "connection {i}");
    }
    let rows = stats(&lab.host);
    for reason in [Outcome::DropNoNatPort, Outcome::DropNatFailed] {
        assert_eq!(
            counter(&rows, Hook::FromContainer, reason).0,
            0,
            "{reason:?}"
        );
    }
    assert!(counter(&rows, Hook::FromContainer, Outcome::Hairpin).0 > 4600 * 3);

    // UDP through the host address.
    let udp_server = server.run(|| UdpSocket::bind("0.0.0.0:53").expect("bind"));
    udp_server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let client = lab.containers[1].run(|| UdpSocket::bind("0.0.0.0:0").expect("bind"));
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    client
        .send_to(b"q", SocketAddrV4::new(HOST_UPLINK_IP, 5353))
        .expect("send");
    let mut buf = [0u8; 8];
    let (_, from) = udp_server
        .recv_from(&mut buf)
        .expect("datagram reaches the server");
    server
        .run(|| udp_server.send_to(b"a", from))
        .expect("answer");
    let (n, answered_by) = client.recv_from(&mut buf).expect("answer comes back");
    assert_eq!(
        (&buf[..n], answered_by),
        (&b"a"[..], SocketAddrV4::new(HOST_UPLINK_IP, 5353).into())
    );

    // 127.0.0.1:8181 is the host's own: containers cannot reach it, by any address.
    let _listener81 = server.run(|| TcpListener::bind("0.0.0.0:81").expect("listen"));
    for target in [
        SocketAddrV4::new(HOST_UPLINK_IP, 8181),
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 10, 1), 8181),
    ] {
        let reached = lab.containers[1]
            .run(|| TcpStream::connect_timeout(&target.into(), Duration::from_secs(1)));
        assert!(
            reached.is_err(),
            "{target} reached a port published on 127.0.0.1 only"
        );
    }
}

/// The agent removes translated flows idle for longer than their timeout (both
/// directions), and leaves the ones still in use.
#[test]
fn idle_flows_expire() {
    use std::{
        net::{SocketAddrV4, UdpSocket},
        process::Command,
        time::Duration,
    };

    use netbpf_tests::{
        lab::{HOST_UPLINK_IF, OUTSIDE_IP},
        netbpf_bin,
        process::{Background, wait_for},
    };

    require_root!();
    let lab = Lab::new(TEST_PREFIX, 1).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let file = dir
        .write(
            "netbpf.toml",
            &format!(
                "[host]\nuplink = \"{HOST_UPLINK_IF}\"\n\n[host.conntrack]\nudp = \"2s\"\n\n\
                 [[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
                 [[container]]\nname = \"web1\"\nnetns = \"{}\"\nnetwork = \"front\"\n",
                lab.containers[0].path().display()
            ),
        )
        .expect("write");
    let mut cmd = Command::new(netbpf_bin());
    cmd.args(["--netns", lab.host.name(), "agent", "-c"])
        .arg(&file);
    cmd.stderr(std::fs::File::create(dir.path().join("agent.log")).expect("log"));
    let _agent = Background::spawn(cmd).expect("agent");
    let flows = || -> usize {
        let out = netbpf(&lab.host, &["show", "conntrack", "-o", "json"]);
        serde_json::from_slice::<Vec<Value>>(&out.stdout).map_or(0, |v| v.len())
    };
    // Wait for the agent's first reconcile: web1 is listed once wired.
    let wired = || {
        String::from_utf8_lossy(&netbpf(&lab.host, &["show", "containers"]).stdout).contains("web1")
    };
    assert!(
        wait_for(Duration::from_secs(10), || wired().then_some(())).is_some(),
        "web1 never wired"
    );

    let client = lab.containers[0].run(|| UdpSocket::bind("0.0.0.0:0").expect("bind"));
    client
        .send_to(b"x", SocketAddrV4::new(OUTSIDE_IP, 9))
        .expect("send");
    assert!(
        wait_for(Duration::from_secs(5), || (flows() == 2).then_some(())).is_some(),
        "the flow was recorded: {} / {}",
        String::from_utf8_lossy(&netbpf(&lab.host, &["show", "conntrack"]).stdout),
        String::from_utf8_lossy(&netbpf(&lab.host, &["show", "stats"]).stdout)
    );
    // Idle beyond its timeout, it goes (the agent looks every second with this timeout).
    assert!(
        wait_for(Duration::from_secs(15), || (flows() == 0).then_some(())).is_some(),
        "the idle flow stayed"
    );
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    assert!(log.contains("conntrack cleanup removed=2"), "{log}");
}

/// The host's own processes reach published ports at 127.0.0.1, localhost and the host's
/// addresses through the socket programs (no proxy), TCP and UDP, and see the address they
/// asked for as their peer; a 127.0.0.1-only port among them. A process of the same cgroup
/// in another network namespace is left alone.
#[test]
fn host_processes_reach_published_ports_without_a_proxy() {
    use std::{
        io::{Read as _, Write as _},
        net::{TcpListener, UdpSocket},
        time::Duration,
    };

    use netbpf_tests::{
        cgroup::Cgroup, lab::HOST_UPLINK_IP, netns::Netns, process::accept_within, unique_prefix,
    };

    require_root!();
    let lab = Lab::new(TEST_PREFIX, 1).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let cgroup = Cgroup::create(&lab.prefix).expect("cgroup");
    let file = dir
        .write(
            "netbpf.toml",
            &format!(
                "[host]\ncgroup = \"{}\"\n\n[[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
                 [[container]]\nname = \"web1\"\nnetns = \"{}\"\nnetwork = \"front\"\n\
                 ports = [\"8080:80\", \"127.0.0.1:8181:80\", \"5353:53/udp\"]\n",
                cgroup.path().display(),
                lab.containers[0].path().display()
            ),
        )
        .expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);

    let container = &lab.containers[0];
    let listener = container.run(|| TcpListener::bind("0.0.0.0:80").expect("listen"));
    let udp = container.run(|| UdpSocket::bind("0.0.0.0:53").expect("bind"));
    udp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let python = |ns: &Netns, code: String| {
        let out = cgroup
            .command(ns, "/usr/bin/python3", &["-c", &code])
            .output()
            .expect("python runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    };
    let tcp_client = |host: &str, port: u16| {
        format!(
            "import socket\ns = socket.create_connection(('{host}', {port}), timeout=3)\n\
             s.sendall(b'ping')\nprint(s.getpeername(), s.recv(4))"
        )
    };

    for (host, port) in [
        ("127.0.0.1", 8080),
        ("localhost", 8080),
        ("localhost", 8181),
        (&*HOST_UPLINK_IP.to_string(), 8080),
    ] {
        let (ok, out) = std::thread::scope(|s| {
            s.spawn(|| {
                let mut conn = accept_within(&listener, Duration::from_secs(5)).expect("accept");
                let mut buf = [0u8; 4];
                conn.read_exact(&mut buf).expect("read");
                conn.write_all(b"pong").expect("answer");
            });
            python(&lab.host, tcp_client(host, port))
        });
        assert!(ok, "{host}:{port}: {out}");
        let expected_ip = if host == "localhost" {
            "127.0.0.1".to_owned()
        } else {
            host.to_owned()
        };
        assert_eq!(
            out,
            format!("('{expected_ip}', {port}) b'pong'"),
            "{host}:{port}"
        );
    }

    // UDP: the datagram reaches the container, the answer seems to come from 127.0.0.1:5353.
    let (ok, out) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = [0u8; 16];
            let (n, from) = udp.recv_from(&mut buf).expect("datagram arrives");
            container
                .run(|| udp.send_to(&buf[..n], from))
                .expect("answer");
        });
        python(
            &lab.host,
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\n\
             s.sendto(b'query', ('127.0.0.1', 5353))\ndata, addr = s.recvfrom(16)\nprint(addr, data)"
                .to_owned(),
        )
    });
    assert!(ok, "{out}");
    assert_eq!(out, "('127.0.0.1', 5353) b'query'");

    // Same cgroup, another network namespace: untouched (nothing listens there).
    let elsewhere = Netns::create(&(unique_prefix(TEST_PREFIX) + "-elsewhere")).expect("netns");
    let (ok, out) = python(&elsewhere, tcp_client("127.0.0.1", 8080));
    assert!(!ok, "a socket of another namespace was redirected: {out}");
    let rows = stats(&lab.host);
    assert_eq!(
        counter(&rows, Hook::SockConnect4, Outcome::Published).0,
        4,
        "{rows:?}"
    );
}

/// The XDP uplink path (`uplink_mode = "xdp"`): published ports from outside and the
/// replies of masqueraded flows, translated before the kernel builds an skb. On a veth the
/// sender's checksum offload must be off (XDP loses partial checksums; `auto` picks tc on
/// a veth for that reason).
#[test]
fn xdp_uplink_translates_published_ports_and_masquerade_replies() {
    use std::net::{IpAddr, SocketAddrV4, TcpListener};

    use netbpf_tests::lab::{HOST_UPLINK_IF, HOST_UPLINK_IP, OUTSIDE_IF, OUTSIDE_IP};

    require_root!();
    let lab = Lab::new(TEST_PREFIX, 1).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let file = dir
        .write(
            "netbpf.toml",
            &format!(
                "[host]\nuplink = \"{HOST_UPLINK_IF}\"\nuplink_mode = \"xdp\"\n\n\
                 [[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
                 [[container]]\nname = \"web1\"\nnetns = \"{}\"\nnetwork = \"front\"\nports = [\"8080:80\"]\n",
                lab.containers[0].path().display()
            ),
        )
        .expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);
    lab.outside
        .exec("ethtool", &["-K", OUTSIDE_IF, "tx", "off"])
        .expect("ethtool");
    let container = &lab.containers[0];

    // Outside -> published port.
    let listener = container.run(|| TcpListener::bind("0.0.0.0:80").expect("listen"));
    let published = SocketAddrV4::new(HOST_UPLINK_IP, 8080);
    let echo = tcp_echo(&listener, &lab.outside, published, b"xdp!");
    assert_eq!(&echo.reply, b"xdp!");
    assert_eq!(echo.server_saw.ip(), IpAddr::V4(OUTSIDE_IP));

    // Container -> outside: the replies come back through XDP.
    let outside_server = lab
        .outside
        .run(|| TcpListener::bind(SocketAddrV4::new(OUTSIDE_IP, 9000)).expect("listen"));
    let echo = tcp_echo(
        &outside_server,
        container,
        SocketAddrV4::new(OUTSIDE_IP, 9000),
        b"back",
    );
    assert_eq!(&echo.reply, b"back");

    let rows = stats(&lab.host);
    assert!(
        counter(&rows, Hook::XdpUplink, Outcome::Published).0 > 0,
        "{rows:?}"
    );
    assert!(
        counter(&rows, Hook::XdpUplink, Outcome::MasqueradeReply).0 > 0,
        "{rows:?}"
    );
    assert_eq!(
        counter(&rows, Hook::FromUplink, Outcome::Published).0,
        0,
        "tc is not attached in xdp mode"
    );
}

/// ICMP errors about translated flows reach the socket that sent the packet, in both
/// uplink modes: "port unreachable" from a container behind a published UDP port reaches
/// the outside client as ECONNREFUSED (quoting the published address, not the
/// container's), and the outside's "port unreachable" for a masqueraded datagram reaches
/// the container's socket.
#[test]
fn icmp_errors_of_translated_flows_reach_the_sender() {
    use std::{
        io::ErrorKind,
        net::{SocketAddrV4, UdpSocket},
        time::Duration,
    };

    use netbpf_tests::lab::{HOST_UPLINK_IF, HOST_UPLINK_IP, OUTSIDE_IF, OUTSIDE_IP};

    require_root!();
    let lab = Lab::new(TEST_PREFIX, 2).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    lab.outside
        .exec("ethtool", &["-K", OUTSIDE_IF, "tx", "off"])
        .expect("ethtool outside");
    let container = &lab.containers[0];
    let refused = |ns: &netbpf_tests::netns::Netns, to: SocketAddrV4| {
        ns.run(|| {
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            socket.connect(to).expect("connect");
            socket.send(b"anyone?").expect("send");
            let mut buf = [0u8; 16];
            socket.recv(&mut buf).map(|_| ()).map_err(|e| e.kind())
        })
    };
    for (mode, hook) in [("tc", Hook::FromUplink), ("xdp", Hook::XdpUplink)] {
        let file = dir
            .write(
                "netbpf.toml",
                &format!(
                    "[host]\nuplink = \"{HOST_UPLINK_IF}\"\nuplink_mode = \"{mode}\"\n\n\
                     [[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
                     [[container]]\nname = \"web1\"\nnetns = \"{}\"\nnetwork = \"front\"\nports = [\"5353:53/udp\"]\n\n\
                     [[container]]\nname = \"peer\"\nnetns = \"{}\"\nnetwork = \"front\"\n",
                    container.path().display(),
                    lab.containers[1].path().display()
                ),
            )
            .expect("write");
        netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);

        // Nothing listens on the container's port 53.
        assert_eq!(
            refused(&lab.outside, SocketAddrV4::new(HOST_UPLINK_IP, 5353)),
            Err(ErrorKind::ConnectionRefused),
            "{mode}: the container's port unreachable reaches the outside client"
        );
        // Nothing listens on the outside's port 9999.
        assert_eq!(
            refused(container, SocketAddrV4::new(OUTSIDE_IP, 9999)),
            Err(ErrorKind::ConnectionRefused),
            "{mode}: the outside's port unreachable reaches the container"
        );
        // A peer through the host's address (hairpin): web1's port unreachable comes back
        // quoting the published address.
        assert_eq!(
            refused(&lab.containers[1], SocketAddrV4::new(HOST_UPLINK_IP, 5353)),
            Err(ErrorKind::ConnectionRefused),
            "{mode}: the container's port unreachable reaches its peer"
        );
        // The other way: web1 answers a peer whose socket has gone; the peer's port
        // unreachable reaches web1 quoting web1's own address.
        let server = container.run(|| UdpSocket::bind("0.0.0.0:53").expect("bind 53"));
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        lab.containers[1].run(|| {
            let gone = UdpSocket::bind("0.0.0.0:0").expect("bind");
            gone.send_to(b"query", SocketAddrV4::new(HOST_UPLINK_IP, 5353))
                .expect("send");
        });
        let mut buf = [0u8; 16];
        let (_, peer) = server.recv_from(&mut buf).expect("the query arrives");
        server.connect(peer).expect("connect");
        server.send(b"late answer").expect("answer");
        assert_eq!(
            server.recv(&mut buf).map(|_| ()).map_err(|e| e.kind()),
            Err(ErrorKind::ConnectionRefused),
            "{mode}: the peer's port unreachable reaches the container"
        );
        drop(server);
        let rows = stats(&lab.host);
        assert!(
            counter(&rows, Hook::FromContainer, Outcome::IcmpError).0 > 0,
            "{mode}: {rows:?}"
        );
        assert!(
            counter(&rows, hook, Outcome::IcmpError).0 > 0,
            "{mode}: {rows:?}"
        );
    }
}
