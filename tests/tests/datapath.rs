//! The programs attached by `netbpf` in a lab namespace, with real packets over real veths.

mod support;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use netbpf_common::{
    maps,
    pin_paths::NETNS_PIN_ROOT,
    stats::{Hook, Outcome},
};
use netbpf_tests::{
    TEST_PREFIX,
    lab::{
        HOST_UPLINK_IF, HOST_UPLINK_IP, HOST_UPLINK_MAC, Lab, OUTSIDE_IF, OUTSIDE_IP, OUTSIDE_MAC,
    },
    packet::{self, ETH_HLEN, IPV4_HLEN, UDP_HLEN},
    process::{accept_within, send_frames, send_udp},
    require_root,
};
use support::{
    counter, link_ids, netbpf_ok, stats, tcx_ingress_programs, wait_for_count, xdp_attached,
};

const PAYLOAD: &[u8] = &[0x5a; 100];
const UPLINK_HOOKS: [Hook; 2] = [Hook::FromUplink, Hook::XdpUplink];
const UDP_FRAME_LEN: u64 = (ETH_HLEN + IPV4_HLEN + UDP_HLEN + 100) as u64;

fn lab() -> Lab {
    Lab::new(TEST_PREFIX, 0).expect("lab builds")
}

/// Sends `count` datagrams from outside to a socket on the host and waits until all have
/// arrived: what the counters must then show is exact.
fn udp_through_uplink(lab: &Lab, count: usize) {
    let server = SocketAddrV4::new(HOST_UPLINK_IP, 9000);
    let socket = lab
        .host
        .run(|| UdpSocket::bind(server).expect("bind in host"));
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    lab.outside
        .run(|| send_udp(SocketAddrV4::new(OUTSIDE_IP, 0), server, PAYLOAD, count))
        .expect("send");
    let mut buf = [0u8; 2048];
    for i in 0..count {
        let (n, from) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} of {count} never arrived: {e}"));
        assert_eq!(
            (n, from.ip()),
            (PAYLOAD.len(), std::net::IpAddr::V4(OUTSIDE_IP))
        );
    }
}

/// Frames whose IPv4 total length claims more bytes than the frame has.
fn malformed_frames(count: usize) -> Vec<Vec<u8>> {
    let src = SocketAddrV4::new(OUTSIDE_IP, 4000);
    let dst = SocketAddrV4::new(HOST_UPLINK_IP, 9000);
    let mut frame = packet::udp4_frame(HOST_UPLINK_MAC, OUTSIDE_MAC, src, dst, PAYLOAD);
    frame[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&1400u16.to_be_bytes());
    vec![frame; count]
}

#[test]
fn counters_rise_by_exactly_the_packets_sent() {
    require_root!();
    let lab = lab();
    netbpf_ok(&lab.host, &["attach", "--iface", HOST_UPLINK_IF]);
    assert_eq!(
        tcx_ingress_programs(&lab.host, HOST_UPLINK_IF),
        ["from_uplink"]
    );
    assert!(xdp_attached(&lab.host, HOST_UPLINK_IF));

    udp_through_uplink(&lab, 25);

    // Read by a separate process from the pinned map.
    let rows = stats(&lab.host);
    for hook in UPLINK_HOOKS {
        assert_eq!(
            counter(&rows, hook, Outcome::Pass),
            (25, 25 * UDP_FRAME_LEN),
            "{hook:?}"
        );
        assert_eq!(
            counter(&rows, hook, Outcome::DropMalformed),
            (0, 0),
            "{hook:?}"
        );
    }
}

#[test]
fn malformed_packets_are_dropped_and_counted_at_the_first_hook() {
    require_root!();
    let lab = lab();
    netbpf_ok(
        &lab.host,
        &["attach", "--iface", HOST_UPLINK_IF, "--hook", "tc"],
    );
    assert!(!xdp_attached(&lab.host, HOST_UPLINK_IF));
    lab.outside
        .run(|| send_frames(OUTSIDE_IF, &malformed_frames(3)))
        .expect("raw send");
    let rows = stats(&lab.host);
    assert_eq!(
        counter(&rows, Hook::FromUplink, Outcome::DropMalformed).0,
        3
    );

    // With XDP in front, XDP drops them and tc never sees them.
    netbpf_ok(
        &lab.host,
        &["attach", "--iface", HOST_UPLINK_IF, "--hook", "xdp"],
    );
    lab.outside
        .run(|| send_frames(OUTSIDE_IF, &malformed_frames(4)))
        .expect("raw send");
    let rows = wait_for_count(&lab.host, Hook::XdpUplink, Outcome::DropMalformed, 4);
    assert_eq!(
        counter(&rows, Hook::FromUplink, Outcome::DropMalformed).0,
        3
    );
    assert_eq!(counter(&rows, Hook::XdpUplink, Outcome::Pass).0, 0);
}

#[test]
fn attaching_again_swaps_programs_in_place_and_keeps_counters() {
    require_root!();
    let lab = lab();
    netbpf_ok(&lab.host, &["attach", "--iface", HOST_UPLINK_IF]);
    let pins = Path::new(NETNS_PIN_ROOT)
        .join(lab.host.name())
        .join("links");
    let links = [pins.join("from_uplink@up0"), pins.join("xdp_uplink@up0")];
    let before: Vec<(u32, u32)> = links.iter().map(|l| link_ids(l)).collect();
    udp_through_uplink(&lab, 5);
    let out = netbpf_ok(&lab.host, &["attach", "--iface", HOST_UPLINK_IF]);
    assert_eq!(out.matches("replaced program in").count(), 2, "{out}");
    // The same links, now running new programs, counting into the same pinned map.
    for (link, (link_id, prog_id)) in links.iter().zip(before) {
        let (new_link_id, new_prog_id) = link_ids(link);
        assert_eq!(new_link_id, link_id, "{}", link.display());
        assert_ne!(new_prog_id, prog_id, "{}", link.display());
    }
    assert_eq!(
        tcx_ingress_programs(&lab.host, HOST_UPLINK_IF),
        ["from_uplink"]
    );
    assert!(xdp_attached(&lab.host, HOST_UPLINK_IF));
    udp_through_uplink(&lab, 7);
    let rows = stats(&lab.host);
    for hook in UPLINK_HOOKS {
        assert_eq!(
            counter(&rows, hook, Outcome::Pass),
            (12, 12 * UDP_FRAME_LEN),
            "{hook:?}"
        );
    }
}

#[test]
fn tcp_works_through_the_attached_programs() {
    require_root!();
    let lab = lab();
    netbpf_ok(&lab.host, &["attach", "--iface", HOST_UPLINK_IF]);
    let addr = SocketAddrV4::new(HOST_UPLINK_IP, 8080);
    let listener = lab
        .host
        .run(|| TcpListener::bind(addr).expect("listen in host"));
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut conn = accept_within(&listener, Duration::from_secs(5)).expect("accept");
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).expect("read");
            conn.write_all(&buf).expect("echo");
        });
        let reply = lab.outside.run(|| {
            let mut conn =
                TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            conn.write_all(b"hello").expect("write");
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).expect("read echo");
            buf
        });
        assert_eq!(&reply, b"hello");
    });
    let rows = stats(&lab.host);
    // SYN, ACK, data, ACKs, FIN...: at least the handshake and the data passed both hooks.
    for hook in UPLINK_HOOKS {
        assert!(
            counter(&rows, hook, Outcome::Pass).0 >= 3,
            "{hook:?}: {rows:?}"
        );
    }
}

#[test]
fn down_leaves_nothing_attached_or_pinned() {
    require_root!();
    let lab = lab();
    netbpf_ok(&lab.host, &["attach", "--iface", HOST_UPLINK_IF]);
    let pin_dir = Path::new(NETNS_PIN_ROOT).join(lab.host.name());
    assert!(pin_dir.join("maps/NB_STATS").exists());
    assert!(pin_dir.join("links/from_uplink@up0").exists());
    assert!(pin_dir.join("links/xdp_uplink@up0").exists());

    let out = netbpf_ok(&lab.host, &["down"]);
    let expected = format!("removed 2 link(s) and {} map(s)", maps::ALL.len());
    assert!(out.starts_with(&expected), "{out}");
    assert!(!pin_dir.exists(), "{} still exists", pin_dir.display());
    assert!(tcx_ingress_programs(&lab.host, HOST_UPLINK_IF).is_empty());
    assert!(!xdp_attached(&lab.host, HOST_UPLINK_IF));
    // Traffic still flows, now without programs.
    udp_through_uplink(&lab, 3);
    // A second down finds nothing and succeeds.
    let out = netbpf_ok(&lab.host, &["down"]);
    assert!(out.starts_with("nothing to remove"), "{out}");
}
