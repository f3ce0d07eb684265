//! Bad invocations fail with one clear line and a non-zero exit, and change nothing.

mod support;

use std::{path::Path, process::Command};

use netbpf_common::{maps, pin_paths::NETNS_PIN_ROOT};
use netbpf_tests::{
    TEST_PREFIX, TempDir,
    lab::{HOST_UPLINK_IF, Lab},
    netbpf_bin, require_root, unique_prefix,
};
use support::{netbpf, netbpf_ok, stderr_of, tcx_ingress_programs, xdp_attached};

fn assert_one_line_error(out: &std::process::Output, code: i32, starts_with: &str) {
    let stderr = stderr_of(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(
        stderr.starts_with(starts_with),
        "{stderr:?} does not start with {starts_with:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The host namespace has nothing attached and nothing pinned.
fn assert_untouched(lab: &Lab) {
    assert!(tcx_ingress_programs(&lab.host, HOST_UPLINK_IF).is_empty());
    assert!(!xdp_attached(&lab.host, HOST_UPLINK_IF));
    assert!(!Path::new(NETNS_PIN_ROOT).join(lab.host.name()).exists());
}

#[test]
fn unknown_namespace() {
    require_root!();
    let name = unique_prefix(TEST_PREFIX) + "-missing";
    let out = Command::new(netbpf_bin())
        .args(["--netns", &name, "attach", "--iface", "eth0"])
        .output()
        .expect("netbpf runs");
    assert_one_line_error(
        &out,
        2,
        &format!("netbpf: network namespace \"{name}\" not found"),
    );
    assert!(!Path::new(NETNS_PIN_ROOT).join(&name).exists());
}

#[test]
fn unknown_interface() {
    require_root!();
    let lab = Lab::new(TEST_PREFIX, 0).expect("lab");
    let out = netbpf(&lab.host, &["attach", "--iface", "nope0"]);
    assert_one_line_error(
        &out,
        2,
        "netbpf: interface \"nope0\" not found in network namespace",
    );
    assert_untouched(&lab);
}

#[test]
fn pin_dir_not_on_bpffs() {
    require_root!();
    let lab = Lab::new(TEST_PREFIX, 0).expect("lab");
    let dir = std::env::temp_dir()
        .join(unique_prefix(TEST_PREFIX))
        .join("pins");
    let dir_str = dir.to_str().expect("UTF-8 temp dir");
    let out = netbpf(
        &lab.host,
        &["--pin-dir", dir_str, "attach", "--iface", HOST_UPLINK_IF],
    );
    assert_one_line_error(
        &out,
        2,
        &format!("netbpf: pin directory {dir_str} is not on a bpf filesystem"),
    );
    assert!(!dir.exists());
    assert_untouched(&lab);
}

#[test]
fn show_before_attach() {
    require_root!();
    let lab = Lab::new(TEST_PREFIX, 0).expect("lab");
    let out = netbpf(&lab.host, &["show", "stats"]);
    assert_one_line_error(&out, 1, "netbpf: nothing is attached here");
    assert_untouched(&lab);
}

#[test]
fn not_root() {
    require_root!();
    let lab = Lab::new(TEST_PREFIX, 0).expect("lab");
    // Drop to nobody for this one command.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(netbpf_bin())
        .args([
            "--netns",
            lab.host.name(),
            "attach",
            "--iface",
            HOST_UPLINK_IF,
        ])
        .output()
        .expect("setpriv runs");
    assert_one_line_error(&out, 1, "netbpf: must run as root");
    assert_untouched(&lab);
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(netbpf_bin())
        .args(["show", "nonsense"])
        .output()
        .expect("netbpf runs");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(netbpf_bin())
        .args(["attach"])
        .output()
        .expect("netbpf runs");
    assert_eq!(out.status.code(), Some(2));
}

/// Invalid services (unknown scheduler, VIP in a container subnet, backend in no network,
/// the same VIP, port and protocol twice...): exit 2, a message naming the file, service
/// and field, and the services in the kernel exactly as they were.
#[test]
fn invalid_services_change_nothing() {
    require_root!();
    let lab = Lab::new(TEST_PREFIX, 1).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("temp dir");
    let valid = format!(
        r#"
[[network]]
name = "front"
subnet = "198.18.10.0/24"

[[container]]
name = "web1"
netns = "{}"
network = "front"
ip = "198.18.10.2"

[[service]]
name = "web"
vip = "198.18.200.10"
port = 80
scheduler = "mh"
backends = [{{ container = "web1", port = 8080 }}, {{ address = "198.18.10.9", port = 8080 }}]
"#,
        lab.containers[0].path().display()
    );
    let file = dir.write("good.toml", &valid).expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);
    let pin_dir = Path::new(NETNS_PIN_ROOT).join(lab.host.name());
    // The frontends as bpftool dumps them, and every service, backend and count as
    // `show services` reads them (backends, tables and trailers behind them).
    let dump = || -> (String, String) {
        let out = Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(pin_dir.join("maps").join(maps::SERVICES))
            .output()
            .expect("bpftool runs");
        assert!(out.status.success(), "{}", stderr_of(&out));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            netbpf_ok(&lab.host, &["show", "services", "-o", "json"]),
        )
    };
    let before = dump();
    assert!(before.1.contains("\"198.18.10.9\""), "{}", before.1);
    let second = valid
        .split("[[service]]")
        .nth(1)
        .expect("a service")
        .replace("\"web\"", "\"web2\"");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown scheduler",
            valid.replace("\"mh\"", "\"fifo\""),
            "service \"web\": scheduler: \"fifo\" is none of rr, wrr, lc, wlc, sh, dh, mh, random",
        ),
        (
            "VIP in a container subnet",
            valid.replace("198.18.200.10", "198.18.10.77"),
            "service \"web\": vip: 198.18.10.77 is inside network \"front\"",
        ),
        (
            "backend in no network",
            valid.replace("198.18.10.9", "198.18.30.9"),
            "service \"web\": backends: entry #2: address 198.18.30.9 is not inside any network's subnet",
        ),
        (
            "duplicate VIP, port and protocol",
            format!("{valid}[[service]]{second}"),
            "service \"web2\": vip: TCP 198.18.200.10:80 is also service \"web\"",
        ),
        (
            "unknown backend container",
            valid.replace("container = \"web1\"", "container = \"web9\""),
            "backends: entry #1: no container named \"web9\"",
        ),
        (
            "weight out of range",
            valid.replace("port = 8080 }, {", "port = 8080, weight = 70000 }, {"),
            "entry #1: weight 70000 is out of range 0-65535",
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
            "{kind}: no file named: {stderr}"
        );
        let check = Command::new(netbpf_bin())
            .args(["check", "-c"])
            .arg(&file)
            .output()
            .expect("check");
        assert_eq!(check.status.code(), Some(2), "{kind}: check");
        assert_eq!(dump(), before, "{kind}: the services changed");
    }
}
