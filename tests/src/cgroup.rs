//! A cgroup (v2) made for one test, removed on drop: where socket programs attach in a
//! test, never the machine's own cgroups.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::Command,
};

use crate::netns::Netns;

#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` or, on hybrid systems,
/// `/sys/fs/cgroup/unified`).
pub fn cgroup2_root() -> io::Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, target, fstype) = (f.next(), f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(target))
        })
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 hierarchy mounted"))
}

impl Cgroup {
    pub fn create(name: &str) -> io::Result<Cgroup> {
        let path = cgroup2_root()?.join(name);
        fs::create_dir(&path)?;
        Ok(Cgroup { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command that runs in this cgroup and in `ns` (joined with nsenter, which keeps
    /// the mounts: `ip netns exec` would hide /sys/fs/cgroup).
    pub fn command(&self, ns: &Netns, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && ns="$1" && shift && exec nsenter --net="$ns" "$@""#)
            .arg(&self.path)
            .arg(ns.path())
            .arg(program)
            .args(args);
        cmd
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once the test's processes have exited.
        if let Err(e) = fs::remove_dir(&self.path) {
            eprintln!("cleanup: removing cgroup {}: {e}", self.path.display());
        }
    }
}
