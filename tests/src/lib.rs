//! Test harness for netbpf: network namespaces with cleanup guards ([`netns`]), lab
//! topologies ([`lab`]), processes and threads inside namespaces ([`process`]), and packets
//! and fixtures for BPF_PROG_TEST_RUN ([`packet`]).
//!
//! Everything a test makes is named with a prefix unique to the run (`<base>-<pid>-<n>`), so
//! tests run in parallel, and is removed on drop, also when the test panics.

pub mod bpfmap;
pub mod capture;
pub mod cgroup;
pub mod dockerd;
pub mod lab;
pub mod netns;
pub mod packet;
pub mod process;
pub mod servers;
pub mod sockets;

use std::{
    env,
    io::Write as _,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
};

/// Name prefix of everything the test suite creates.
pub const TEST_PREFIX: &str = "nbt";

/// A prefix unique to this process and call: `<base>-<pid>-<n>`.
pub fn unique_prefix(base: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{base}-{}-{n}", std::process::id())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a test that needs root may run. Without root it says so loudly and the test
/// returns early, except under CI, where every test must run: there it fails.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        env::var_os("CI").is_none(),
        "{test}: needs root, and CI must run every test"
    );
    // Straight to stderr: the test runner captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root (CAP_BPF, CAP_NET_ADMIN); run as root to test this"
    );
    false
}

/// Returns early from a test that needs root (see [`root_or_skip`]).
#[macro_export]
macro_rules! require_root {
    () => {
        // The enclosing function's path, for the message.
        fn here() {}
        let test = std::any::type_name_of_val(&here);
        if !$crate::root_or_skip(test.strip_suffix("::here").unwrap_or(test)) {
            return;
        }
    };
}

/// The `netbpf` binary under test: `$NETBPF_BIN`, or the one cargo built next to the
/// running test (`target/<profile>/netbpf`).
pub fn netbpf_bin() -> PathBuf {
    if let Some(bin) = env::var_os("NETBPF_BIN") {
        return PathBuf::from(bin);
    }
    let exe = env::current_exe().expect("path of the running test binary");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/netbpf
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("netbpf");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p netbpf` first (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// A directory for one test's files (definitions, logs), removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        let path = env::temp_dir().join(prefix);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> std::io::Result<PathBuf> {
        let path = self.path.join(name);
        std::fs::write(&path, contents)?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
