//! The harness's own guarantees: what a test makes is gone after it, also after a panic.

use std::{
    panic,
    path::Path,
    process::{Command, Stdio},
};

use netbpf_tests::{
    TEST_PREFIX,
    lab::{HOST_UPLINK_IF, HOST_UPLINK_IP, Lab, OUTSIDE_IP},
    netns::{self, NETNS_RUN_DIR, Netns},
    process::Background,
    require_root, unique_prefix,
};

fn exists(name: &str) -> bool {
    Path::new(NETNS_RUN_DIR).join(name).exists()
}

#[test]
fn lab_is_removed_when_a_test_panics() {
    require_root!();
    let result = panic::catch_unwind(|| {
        let lab = Lab::new(TEST_PREFIX, 2).expect("lab");
        let names: Vec<String> = [&lab.host, &lab.outside]
            .into_iter()
            .chain(&lab.containers)
            .map(|ns| ns.name().to_owned())
            .collect();
        assert!(names.iter().all(|n| exists(n)));
        // The uplink is up and addressed: the outside reaches the host.
        lab.outside
            .exec("ping", &["-c", "1", "-W", "2", &HOST_UPLINK_IP.to_string()])
            .expect("outside pings host");
        lab.host
            .exec("ip", &["link", "show", HOST_UPLINK_IF])
            .expect("uplink exists");
        assert_ne!(OUTSIDE_IP, HOST_UPLINK_IP);
        panic::panic_any(names)
    });
    let names = result
        .expect_err("the closure panics")
        .downcast::<Vec<String>>()
        .expect("panic payload is the namespace names");
    assert_eq!(names.len(), 4);
    for name in names.iter() {
        assert!(!exists(name), "{name} survived the panic");
    }
}

#[test]
fn background_process_ends_with_its_guard() {
    require_root!();
    let ns = Netns::create(&(unique_prefix(TEST_PREFIX) + "-bg")).expect("netns");
    let mut cmd = ns.command("sleep", &["60"]);
    cmd.stdout(Stdio::null());
    let server = Background::spawn(cmd).expect("spawn");
    let proc_dir = format!("/proc/{}", server.pid());
    assert!(Path::new(&proc_dir).exists());
    drop(server);
    assert!(!Path::new(&proc_dir).exists(), "{proc_dir} still running");
}

#[test]
fn stale_namespaces_of_dead_runs_are_removed() {
    require_root!();
    // A name as a run with a PID that cannot exist (above pid_max) would have left it.
    let name = format!("{TEST_PREFIX}-4194305-0-host");
    Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .expect("ip runs");
    assert!(exists(&name));
    let removed = netns::remove_stale(TEST_PREFIX);
    assert!(removed.contains(&name), "{removed:?}");
    assert!(!exists(&name));
}
