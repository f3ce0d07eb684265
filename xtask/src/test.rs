//! `cargo xtask test`: everything, in order of how much each needs: unit tests (no root),
//! BPF_PROG_TEST_RUN fixtures, namespace tests with real traffic, then rustfmt and clippy.

use netbpf_tests::{TEST_PREFIX, netns};

use crate::{
    cmd::{self, step},
    ebpf, setup,
};

/// The files of tests/tests/, by what they need (a unit test below keeps this complete).
const FIXTURE_TESTS: &[&str] = &["fixtures", "container_fixtures", "service_fixtures"];
const NAMESPACE_TESTS: &[&str] = &[
    "datapath",
    "cli",
    "harness",
    "containers",
    "north_south",
    "services",
    "explain",
    "monitor",
    "docker",
    "metrics",
    "show",
    "conntrack_scale",
];

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
    integration_tests(FIXTURE_TESTS)?;
    step("namespace tests (real packets through attached programs)");
    integration_tests(NAMESPACE_TESTS)?;

    step("rustfmt");
    cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;
    step("clippy (userspace)");
    cmd::run(cmd::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    ebpf::clippy()?;
    step("all tests and checks passed");
    Ok(())
}

fn integration_tests(files: &[&str]) -> anyhow::Result<()> {
    let mut cargo = cmd::cargo();
    cargo.args(["test", "--package", "netbpf-tests"]);
    for file in files {
        cargo.args(["--test", file]);
    }
    cmd::run(&mut cargo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_integration_test_file_runs() {
        let dir = cmd::workspace_root().join("tests/tests");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("tests/tests exists")
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".rs")
                    .map(String::from)
            })
            .collect();
        files.sort();
        let mut listed: Vec<&str> = FIXTURE_TESTS
            .iter()
            .chain(NAMESPACE_TESTS)
            .copied()
            .collect();
        listed.sort();
        assert_eq!(files, listed);
    }
}
