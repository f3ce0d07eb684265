//! `cargo xtask test`: everything, in order of how much each needs: unit tests (no root),
//! BPF_PROG_TEST_RUN fixtures, namespace tests with real traffic, then rustfmt and clippy.

use netbpf_tests::{TEST_PREFIX, netns};

use crate::{
    cmd::{self, step},
    ebpf, setup,
};

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    let stale = netns::remove_stale(TEST_PREFIX);
    if !stale.is_empty() {
        step(&format!(
            "removed namespaces left by killed runs: {}",
            stale.join(" ")
        ));
    }
    if !cmd::is_root() {
        println!("NOTE: not root: tests that need root will say SKIPPED");
    }

    step("build netbpf (and its kernel object)");
    cmd::run(cmd::cargo().args(["build", "--package", "netbpf"]))?;

    step("unit tests");
    cmd::run(cmd::cargo().args(["test", "--lib", "--bins"]))?;
    step("BPF_PROG_TEST_RUN fixtures");
    cmd::run(cmd::cargo().args(["test", "--package", "netbpf-tests", "--test", "fixtures"]))?;
    step("namespace tests (real packets through attached programs)");
    cmd::run(cmd::cargo().args([
        "test",
        "--package",
        "netbpf-tests",
        "--test",
        "datapath",
        "--test",
        "cli",
    ]))?;

    step("rustfmt");
    cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;
    step("clippy (userspace)");
    cmd::run(cmd::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    ebpf::clippy()?;
    step("all tests and checks passed");
    Ok(())
}
