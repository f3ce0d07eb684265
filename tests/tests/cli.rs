//! Bad invocations fail with one clear line and a non-zero exit, and change nothing.

mod support;

use std::{path::Path, process::Command};

use netbpf_common::pin_paths::NETNS_PIN_ROOT;
use netbpf_tests::{
    TEST_PREFIX,
    lab::{HOST_UPLINK_IF, Lab},
    netbpf_bin, require_root, unique_prefix,
};
use support::{netbpf, stderr_of, tcx_ingress_programs, xdp_attached};

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
