//! Golden tests of every `netbpf show` view: a fixed lab (tests/golden/show/lab.toml: two
//! networks, four containers with fixed addresses and MACs, published ports, two services)
//! with a fixed set of packets through it, each view's table, `-q` and `-o json` output
//! compared with tests/golden/show/<view>.golden, a transcript of the commands and what
//! they printed.
//!
//! The expected files are the output of a real run, reviewed line by line. To make them
//! anew after a deliberate change, run the test with `NETBPF_GOLDEN=update` and review the
//! diff before committing it.
//!
//! Only what varies from run to run is normalized, the same way in both the output and
//! the files (see [`normalize`]):
//! - the run's name prefix (`nbt-<pid>-<n>`, in namespace names) becomes `<lab>`;
//! - in JSON, the value of every `"ifindex"` key becomes `"<ifindex>"`, of every
//!   `"idle_seconds"` key `"<idle>"`, of every `"interval_ms"` key `"<interval>"`;
//! - in `show conntrack`'s table, the last cell of each flow (IDLE, like `0s`) becomes
//!   `<idle>`, two spaces after the cell before it.
//!
//! Interface names need no normalizing: a container's host-side interface is named from a
//! hash of the container's name (`nb` + 8 hex digits), the same on every run.

mod support;

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use netbpf_tests::{
    TEST_PREFIX, TempDir,
    lab::{HOST_UPLINK_IP, HOST_UPLINK_MAC, Lab, OUTSIDE_IF, OUTSIDE_IP, OUTSIDE_MAC},
    netns::Netns,
    packet::{ETH_P_IPV4, Mac, ethernet, udp4_frame},
    process::send_frames,
    require_root,
};
use support::netbpf_ok;

const LIMIT: Duration = Duration::from_secs(5);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const CLIENT_MAC: Mac = Mac([0x02, 0x42, 0xc6, 0x12, 0x0a, 0x02]);
const DB: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
const DNS_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 53);

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/show")
}

/// A UDP socket bound in `ns`, with a read timeout.
fn udp(ns: &Netns, addr: SocketAddrV4) -> UdpSocket {
    let socket = ns.run(|| UdpSocket::bind(addr).expect("bind"));
    socket.set_read_timeout(Some(LIMIT)).expect("timeout");
    socket
}

/// `client` sends `msg` to `to`; `server` receives it and answers; `client` gets the
/// answer.
fn exchange(client: &UdpSocket, to: SocketAddrV4, server: &UdpSocket, msg: &[u8]) {
    client.send_to(msg, to).expect("send");
    let mut buf = [0u8; 64];
    let (n, from) = server.recv_from(&mut buf).expect("the server receives");
    assert_eq!(&buf[..n], msg);
    server.send_to(&buf[..n], from).expect("answer");
    let (n, _) = client.recv_from(&mut buf).expect("the answer comes back");
    assert_eq!(&buf[..n], msg);
}

/// The fixed packets: two datagrams from outside to web1's published 5353/udp and back,
/// two from the client to the dns service's VIP and back, a UDP datagram from the client
/// to a container of another network, a spoofed frame from the client and a malformed
/// one from outside.
fn traffic(lab: &Lab) {
    let (client, web1) = (&lab.containers[0], &lab.containers[1]);
    let published = udp(web1, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 53));
    let dns = udp(web1, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5300));
    let outside = udp(&lab.outside, SocketAddrV4::new(OUTSIDE_IP, 40000));
    for msg in [b"ping-1", b"ping-2"] {
        exchange(
            &outside,
            SocketAddrV4::new(HOST_UPLINK_IP, 5353),
            &published,
            msg,
        );
    }
    let from_client = udp(client, SocketAddrV4::new(CLIENT, 41000));
    for msg in [b"name-1", b"name-2"] {
        exchange(&from_client, SocketAddrV4::new(DNS_VIP, 53), &dns, msg);
    }
    from_client
        .send_to(b"cross", SocketAddrV4::new(DB, 9))
        .expect("send");
    // The client's gateway MAC, as its ARP answer gave it.
    let host_mac = lab
        .host
        .exec(
            "cat",
            &[&format!("/sys/class/net/{}/address", host_ifname(lab))],
        )
        .expect("host veth MAC");
    let host_mac = parse_mac(String::from_utf8_lossy(&host_mac.stdout).trim());
    let spoofed = udp4_frame(
        host_mac,
        CLIENT_MAC,
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 10, 99), 41001),
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 10, 3), 9),
        b"spoofed",
    );
    client
        .run(|| send_frames("eth0", &[spoofed]))
        .expect("send spoofed");
    // An IPv4 header cut short.
    let malformed = ethernet(
        HOST_UPLINK_MAC,
        OUTSIDE_MAC,
        ETH_P_IPV4,
        &[0x45, 0, 0, 40, 0, 0],
    );
    lab.outside
        .run(|| send_frames(OUTSIDE_IF, &[malformed]))
        .expect("send malformed");
    // Both drops counted before any view reads the counters.
    support::wait_for_count(
        &lab.host,
        netbpf_common::stats::Hook::FromUplink,
        netbpf_common::stats::Outcome::DropMalformed,
        1,
    );
    support::wait_for_count(
        &lab.host,
        netbpf_common::stats::Hook::FromContainer,
        netbpf_common::stats::Outcome::DropSpoofedIp,
        1,
    );
}

/// The client's host-side interface, as `show containers` names it.
fn host_ifname(lab: &Lab) -> String {
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&netbpf_ok(&lab.host, &["show", "containers", "-o", "json"]))
            .expect("JSON");
    rows.iter()
        .find(|r| r["name"] == "client")
        .and_then(|r| r["host_interface"].as_str())
        .expect("the client's interface")
        .to_owned()
}

fn parse_mac(text: &str) -> Mac {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    Mac(bytes.try_into().expect("six bytes"))
}

/// The substitutions of the module documentation, applied to one command's output.
fn normalize(output: &str, prefix: &str, args: &[&str]) -> String {
    let conntrack_table = args.first() == Some(&"conntrack") && !args.contains(&"json");
    let mut out = String::new();
    for (i, line) in output.replace(prefix, "<lab>").lines().enumerate() {
        let line = json_value(line, "ifindex", "\"<ifindex>\"");
        let line = json_value(&line, "idle_seconds", "\"<idle>\"");
        let line = json_value(&line, "interval_ms", "\"<interval>\"");
        let line = if conntrack_table && i > 0 {
            let cut = line.trim_end_matches(|c: char| c.is_ascii_digit() || c == 's');
            format!("{}  <idle>", cut.trim_end())
        } else {
            line
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A pretty-printed JSON line `"key": VALUE,` with VALUE replaced.
fn json_value(line: &str, key: &str, with: &str) -> String {
    let pattern = format!("\"{key}\": ");
    match line.find(&pattern) {
        Some(at) => {
            let comma = if line.ends_with(',') { "," } else { "" };
            format!("{}{with}{comma}", &line[..at + pattern.len()])
        }
        None => line.to_owned(),
    }
}

/// One view's transcript: each command and its normalized output.
fn transcript(lab: &Lab, commands: &[&[&str]]) -> String {
    let mut out = String::new();
    for args in commands {
        let mut full = vec!["show"];
        full.extend_from_slice(args);
        let printed = netbpf_ok(&lab.host, &full);
        let _ = writeln!(out, "$ netbpf show {}", args.join(" "));
        out.push_str(&normalize(&printed, &lab.prefix, args));
    }
    out
}

/// Compares with (or, with `NETBPF_GOLDEN=update`, writes) tests/golden/show/NAME.golden.
/// Returns a description of the difference, if any.
fn check(name: &str, actual: &str) -> Option<String> {
    let path = golden_dir().join(format!("{name}.golden"));
    if std::env::var("NETBPF_GOLDEN").as_deref() == Ok("update") {
        std::fs::write(&path, actual).expect("write golden file");
        return None;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected == actual {
        return None;
    }
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut diff = format!(
        "{} differs (rerun with NETBPF_GOLDEN=update to write what this run printed):\n",
        path.display()
    );
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i), a.get(i));
        if x != y {
            let _ = writeln!(
                diff,
                "  line {}:\n    expected: {}\n    actual:   {}",
                i + 1,
                x.unwrap_or(&"<none>"),
                y.unwrap_or(&"<none>")
            );
        }
    }
    Some(diff)
}

#[test]
fn every_view_matches_its_golden_output() {
    require_root!();
    let lab = Lab::new(TEST_PREFIX, 4).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let mut definitions = std::fs::read_to_string(golden_dir().join("lab.toml")).expect("lab.toml");
    for (i, ns) in lab.containers.iter().enumerate() {
        definitions =
            definitions.replace(&format!("@NETNS_C{i}@"), &ns.path().display().to_string());
    }
    let file = dir.write("netbpf.toml", &definitions).expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);
    traffic(&lab);

    let views: &[(&str, &[&[&str]])] = &[
        (
            "networks",
            &[
                &["networks"],
                &["networks", "-q"],
                &["networks", "-o", "json"],
            ],
        ),
        (
            "containers",
            &[
                &["containers"],
                &["containers", "-q"],
                &["containers", "-o", "json"],
            ],
        ),
        ("ports", &[&["ports"], &["ports", "-o", "json"]]),
        (
            "services",
            &[
                &["services"],
                &["services", "-q"],
                &["services", "--stats"],
                &["services", "--rate"],
                &["services", "-o", "json"],
                &["services", "--rate", "-o", "json"],
            ],
        ),
        (
            "backends",
            &[
                &["backends"],
                &["backends", "-q"],
                &["backends", "-o", "json"],
            ],
        ),
        (
            "conntrack",
            &[
                &["conntrack"],
                &["conntrack", "--service", "dns"],
                &["conntrack", "--src", "198.18.0.2"],
                &["conntrack", "--dst", "198.18.10.2:41000", "--proto", "udp"],
                &["conntrack", "--proto", "tcp"],
                &["conntrack", "-o", "json"],
                &["conntrack", "--proto", "tcp", "-o", "json"],
            ],
        ),
        ("stats", &[&["stats"], &["stats", "-o", "json"]]),
        (
            "drops",
            &[&["drops"], &["drops", "--all"], &["drops", "-o", "json"]],
        ),
    ];
    let differences: Vec<String> = views
        .iter()
        .filter_map(|(name, commands)| check(name, &transcript(&lab, commands)))
        .collect();
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// Reading goes on whether or not an agent runs; a service name that is not there is a
/// usage error (exit 2) that names the services there are.
#[test]
fn an_unknown_service_is_a_usage_error() {
    require_root!();
    let lab = Lab::new(TEST_PREFIX, 4).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let mut definitions = std::fs::read_to_string(golden_dir().join("lab.toml")).expect("lab.toml");
    for (i, ns) in lab.containers.iter().enumerate() {
        definitions =
            definitions.replace(&format!("@NETNS_C{i}@"), &ns.path().display().to_string());
    }
    let file = dir.write("netbpf.toml", &definitions).expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);
    let out = support::netbpf(&lab.host, &["show", "conntrack", "--service", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = support::stderr_of(&out);
    assert_eq!(
        stderr.trim(),
        "netbpf: --service: no service named \"nope\" here (services: dns, web)"
    );
}
