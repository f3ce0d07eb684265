//! `netbpf monitor`: a drop shows with its reason while a monitor runs, a new translated
//! flow with `--all`, and the monitor's lease ends with it.

mod support;

use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    process::{Command, Stdio},
};

use netbpf_tests::{
    TEST_PREFIX, TempDir,
    lab::{HOST_UPLINK_IF, HOST_UPLINK_IP, Lab},
    netbpf_bin,
    packet::{self, Mac},
    process::{Background, send_frames},
    require_root,
};
use serde_json::Value;
use support::{netbpf_ok, tcp_echo};

const WEB1: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const WEB2: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);

fn lab() -> (Lab, TempDir) {
    let lab = Lab::new(TEST_PREFIX, 2).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let file = dir
        .write(
            "netbpf.toml",
            &format!(
                "[host]\nuplink = \"{HOST_UPLINK_IF}\"\n\n[[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
                 [[container]]\nname = \"web1\"\nnetns = \"{}\"\nnetwork = \"front\"\nip = \"{WEB1}\"\nports = [\"8080:80\"]\n\n\
                 [[container]]\nname = \"web2\"\nnetns = \"{}\"\nnetwork = \"front\"\nip = \"{WEB2}\"\n",
                lab.containers[0].path().display(),
                lab.containers[1].path().display()
            ),
        )
        .expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);
    (lab, dir)
}

/// A monitor printing JSON lines to a pipe; returns once its lease is taken.
fn start_monitor(lab: &Lab, args: &[&str]) -> (Background, BufReader<std::process::ChildStdout>) {
    let mut cmd = Command::new(netbpf_bin());
    cmd.args(["--netns", lab.host.name(), "monitor", "-o", "json"])
        .args(args)
        .stderr(Stdio::piped());
    let mut monitor = Background::spawn_reading(cmd).expect("monitor starts");
    let mut stderr = BufReader::new(monitor.stderr().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("the monitor reports");
    assert!(line.starts_with("monitoring"), "{line}");
    let stdout = BufReader::new(monitor.stdout().expect("stdout"));
    (monitor, stdout)
}

fn next_event(out: &mut BufReader<std::process::ChildStdout>) -> Value {
    let mut line = String::new();
    out.read_line(&mut line).expect("an event");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// NB_MON_ON read with bpftool (JSON: the value as bytes; the lease's end first).
fn lease(lab: &Lab) -> Value {
    let path = format!("/sys/fs/bpf/netbpf-ns/{}/maps/NB_MON_ON", lab.host.name());
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned", &path])
        .output()
        .expect("bpftool");
    serde_json::from_slice(&out.stdout).expect("bpftool JSON")
}

#[test]
fn a_spoofed_packet_shows_with_its_reason() {
    require_root!();
    let (lab, _dir) = lab();
    let (mut monitor, mut events) = start_monitor(&lab, &["--count", "1"]);
    let spoofed = packet::udp4_frame(
        Mac([0x02, 0x42, 198, 18, 10, 3]),
        Mac([0x02, 0x42, 198, 18, 10, 2]),
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 10, 77), 4000),
        SocketAddrV4::new(WEB2, 53),
        b"forged",
    );
    lab.containers[0]
        .run(|| send_frames("eth0", &[spoofed]))
        .expect("send");
    let event = next_event(&mut events);
    assert_eq!(event["kind"], "drop");
    assert_eq!(event["hook"], "from_container");
    assert_eq!(event["reason"], "drop_spoofed_ip");
    assert_eq!(event["src"], "198.18.10.77:4000");
    assert_eq!(event["dst"], "198.18.10.3:53");
    assert_eq!(event["proto"], "udp");
    assert!(
        event["meaning"]
            .as_str()
            .is_some_and(|m| m.contains("source IPv4")),
        "{event}"
    );
    assert!(monitor.wait().expect("exits").success());
    // Gone, the monitor left no lease behind: the datapath writes no more events.
    let dumped = lease(&lab);
    let until: Vec<&str> = dumped[0]["value"]
        .as_array()
        .expect("value bytes")
        .iter()
        .take(8)
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(until, ["0x00"; 8], "the lease's end is 0: {dumped}");
}

#[test]
fn new_translated_flows_show_with_all() {
    require_root!();
    let (lab, _dir) = lab();
    let listener = lab.containers[0].run(|| TcpListener::bind("0.0.0.0:80").expect("listen"));
    let (mut monitor, mut events) = start_monitor(&lab, &["--all", "--count", "1"]);
    let echo = tcp_echo(
        &listener,
        &lab.outside,
        SocketAddrV4::new(HOST_UPLINK_IP, 8080),
        b"flow",
    );
    assert_eq!(&echo.reply, b"flow");
    let event = next_event(&mut events);
    assert_eq!(event["kind"], "flow");
    assert_eq!(event["reason"], "published");
    assert_eq!(event["dst"], "198.18.0.1:8080");
    assert_eq!(event["translated"], "198.18.10.2:80");
    assert_eq!(event["src"], echo.client_local.to_string());
    assert!(monitor.wait().expect("exits").success());
}
