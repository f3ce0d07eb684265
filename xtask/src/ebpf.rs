//! The kernel crate on its own target: the object for inspection, and clippy for BPF.

use std::{fs, path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::cmd::{self, step};

const TARGET: &str = "bpfel-unknown-none";

/// A cargo command for the eBPF crate, configured as aya-build configures netbpf's nested
/// build (build-std on the pinned stable toolchain needs RUSTC_BOOTSTRAP).
fn ebpf_cargo(subcommand: &str) -> Command {
    let mut cmd = cmd::cargo();
    cmd.env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                &format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        )
        .args([
            subcommand,
            "--package",
            "netbpf-ebpf",
            "--release",
            "--target",
            TARGET,
        ])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(cmd::workspace_root().join("target/ebpf"));
    cmd
}

/// Builds the object and copies it to target/bpf/netbpf.o; returns that path.
pub fn build() -> anyhow::Result<PathBuf> {
    step("build-ebpf: netbpf-ebpf for bpfel-unknown-none");
    cmd::run(ebpf_cargo("build").arg("--bins"))?;
    let root = cmd::workspace_root();
    let built = root.join("target/ebpf").join(TARGET).join("release/netbpf");
    let out_dir = root.join("target/bpf");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join("netbpf.o");
    fs::copy(&built, &out)
        .with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    Ok(out)
}

/// Clippy on the BPF target, warnings denied.
pub fn clippy() -> anyhow::Result<()> {
    step("clippy (BPF target)");
    cmd::run(ebpf_cargo("clippy").args(["--bins", "--", "-D", "warnings"]))
}
