//! Fresh-machine setup: everything the build and the tests need beyond the Rust toolchain
//! (which `./x` installs first, since cargo itself needs it). Idempotent: each step checks
//! before it acts, so a second run changes nothing and takes seconds.

use std::{fs, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd::{self, step};

/// Debian packages, with why each is needed.
const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "llvm-22-dev",
        "bpf-linker links LLVM 22, the LLVM of the pinned Rust",
    ),
    ("libpolly-22-dev", "bpf-linker's LLVM link line"),
    ("libzstd-dev", "bpf-linker's LLVM link line"),
    ("zlib1g-dev", "bpf-linker's LLVM link line"),
    (
        "iproute2",
        "network namespaces and veths for labs and tests",
    ),
    ("iputils-ping", "ping in the demo lab"),
    (
        "bpftool",
        "inspecting the kernel object, programs and links",
    ),
    ("util-linux", "setpriv and nsenter for tests"),
    ("procps", "sysctl inside lab namespaces"),
    (
        "python3",
        "tests: a host process's socket calls (getpeername, recvfrom)",
    ),
    ("ethtool", "tests turn checksum offload off"),
    ("curl", "tests scrape the agent's metrics"),
    (
        "docker.io",
        "tests: a real dockerd (20.10) using netbpf as its network driver",
    ),
    (
        "busybox-static",
        "tests: the root filesystem of the busybox image the Docker tests import",
    ),
    ("bpftool", "map dumps in tests"),
    ("iperf3", "benchmark: single-stream throughput"),
    (
        "iptables",
        "benchmark: Docker's iptables rules in the baseline",
    ),
    ("sockperf", "benchmark: TCP request/response latency"),
    ("wrk", "benchmark: HTTP connection rate"),
    ("nginx-light", "benchmark: the HTTP server"),
];

/// bpf-linker, built from source against Debian's LLVM 22 (prebuilt binaries are not
/// reachable here, and its default feature targets LLVM 23).
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

const BPFFS: &str = netbpf_common::pin_paths::BPFFS_ROOT;

pub fn run() -> anyhow::Result<()> {
    apt_packages()?;
    bpf_linker()?;
    bpffs()?;
    step("setup: done");
    Ok(())
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !deb_installed(name))
        .collect();
    if missing.is_empty() {
        step("setup: Debian packages present");
        return Ok(());
    }
    for (name, why) in APT_PACKAGES.iter().filter(|(n, _)| missing.contains(n)) {
        println!("    {name}: {why}");
    }
    require_root("install Debian packages")?;
    step(&format!("setup: installing {}", missing.join(" ")));
    // Packages with services (docker.io, nginx) must not start them: a dockerd in the
    // machine's own namespace would rewrite its firewall. Debian's maintainer scripts ask
    // policy-rc.d; without one, a refusing one stands for the install.
    let _no_services = NoServiceStarts::install()?;
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// A policy-rc.d that refuses every service start (exit 101), in place while it lives,
/// unless the machine has one of its own.
struct NoServiceStarts {
    ours: bool,
}

impl NoServiceStarts {
    fn install() -> anyhow::Result<NoServiceStarts> {
        if std::path::Path::new(POLICY_RC_D).exists() {
            return Ok(NoServiceStarts { ours: false });
        }
        fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# netbpf setup: no service starts while packages install\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        let mut perms = fs::metadata(POLICY_RC_D)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(POLICY_RC_D, perms).with_context(|| format!("chmod {POLICY_RC_D}"))?;
        Ok(NoServiceStarts { ours: true })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.ours {
            let _ = fs::remove_file(POLICY_RC_D);
        }
    }
}

fn deb_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", name])
        .output()
        .is_ok_and(|out| out.stdout == b"installed")
}

fn bpf_linker() -> anyhow::Result<()> {
    if let Some(problem) = bpf_linker_problem() {
        step(&format!(
            "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 ({problem}; about a minute)"
        ));
        cmd::run(
            cmd::cargo()
                .env("LLVM_PREFIX", LLVM_PREFIX)
                .args(["install", "bpf-linker", "--locked", "--force", "--version"])
                .arg(BPF_LINKER_VERSION)
                .args(["--no-default-features", "--features", "llvm-22"]),
        )?;
        if let Some(problem) = bpf_linker_problem() {
            bail!("bpf-linker still unusable after install: {problem}");
        }
    }
    step(&format!(
        "setup: bpf-linker {BPF_LINKER_VERSION} (LLVM 22) present"
    ));
    Ok(())
}

/// Why the installed bpf-linker won't do, if it won't.
fn bpf_linker_problem() -> Option<String> {
    let Ok(version) = cmd::output(Command::new("bpf-linker").arg("--version")) else {
        return Some("not installed".into());
    };
    if !version.contains(BPF_LINKER_VERSION) {
        return Some(format!("found {}", version.trim()));
    }
    let Ok(path) = cmd::output(Command::new("sh").args(["-c", "command -v bpf-linker"])) else {
        return Some("not on PATH".into());
    };
    match cmd::output(Command::new("ldd").arg(path.trim())) {
        Ok(libs) if libs.contains("libLLVM.so.22") => None,
        _ => Some("not linked against LLVM 22".into()),
    }
}

fn bpffs() -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let mounted = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, target, fstype) = (fields.next(), fields.next(), fields.next());
        target == Some(BPFFS) && fstype == Some("bpf")
    });
    if mounted {
        step(&format!("setup: bpffs mounted at {BPFFS}"));
        return Ok(());
    }
    require_root("mount bpffs")?;
    step(&format!(
        "setup: mounting bpffs at {BPFFS} (the pin directory lives there)"
    ));
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
}

fn require_root(to: &str) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("setup must run as root to {to}");
    }
    Ok(())
}
