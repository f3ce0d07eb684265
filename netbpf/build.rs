//! Builds the kernel programs (`netbpf-ebpf`) for the BPF target and leaves the object in
//! OUT_DIR, where `kernel::object` embeds it.

use std::{env, fs, path::Path, process::Command};

use anyhow::{Context as _, anyhow, bail};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("netbpf has no parent directory"))?;
    let toolchain = pinned_toolchain(&root.join("rust-toolchain.toml"))?;

    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!(
            "bpf-linker is not installed (or not on PATH): run `./x setup` at the repository root"
        );
    }

    // The nested build needs `-Z build-std=core`; on the pinned stable toolchain only
    // RUSTC_BOOTSTRAP allows that. aya-build passes it to the nested cargo alone.
    // SAFETY: the build script is single-threaded.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };

    let ebpf_dir = root.join("netbpf-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    println!(
        "cargo::rerun-if-changed={}",
        root.join("netbpf-common").display()
    );
    aya_build::build_ebpf(
        [Package {
            name: "netbpf-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}

/// The `channel` of rust-toolchain.toml: the kernel object must be built by the same
/// toolchain (and so the same LLVM) that bpf-linker was built against.
fn pinned_toolchain(path: &Path) -> anyhow::Result<String> {
    println!("cargo::rerun-if-changed={}", path.display());
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| anyhow!("{}: no `channel = \"...\"` line", path.display()))
}
