//! A network namespace that exists as long as its guard: created with `ip netns add`,
//! deleted on drop together with any netbpf pins made for it.

use std::{
    fs,
    io::{self, ErrorKind},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use netbpf_common::pin_paths::NETNS_PIN_ROOT;

/// Where `ip netns add` puts namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `name` with loopback up and IPv6 off (no router or neighbour
    /// solicitations: the only packets on its links are the ones a test sends).
    pub fn create(name: &str) -> io::Result<Netns> {
        run_checked(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Names the network namespace of process `pid` (`ip netns attach`, e.g. a Docker
    /// container's), so that commands run in it as in any other. Dropping the guard removes
    /// the name; the namespace lives as long as its processes.
    pub fn attach(name: &str, pid: u32) -> io::Result<Netns> {
        run_checked(Command::new("ip").args(["netns", "attach", name, &pid.to_string()]))?;
        Ok(Netns {
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// Runs `ip -n NAME ARGS...`; an error carries the command and its stderr.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        run_checked(Command::new("ip").arg("-n").arg(&self.name).args(args)).map(drop)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let setting = format!("{key}={value}");
        run_checked(&mut self.command("sysctl", &["-q", "-w", &setting])).map(drop)
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Runs a command inside the namespace to completion; fails on a non-zero exit.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        run_checked(&mut self.command(program, args))
    }

    /// Moves the calling thread into this namespace (sockets it opens afterwards live here).
    pub fn enter_current_thread(&self) -> io::Result<()> {
        let file = fs::File::open(self.path())?;
        // SAFETY: a valid fd and a namespace type; failure is reported through errno.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a thread inside the namespace and returns its result (a panic in `f`
    /// propagates to the caller).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                self.enter_current_thread()
                    .unwrap_or_else(|e| panic!("entering netns {}: {e}", self.name));
                f()
            });
            handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.name);
    }
}

/// Deletes a namespace and the pins a `netbpf --netns NAME` left for it. Errors are
/// reported, not raised: this runs in destructors.
pub fn remove(name: &str) {
    let pins = Path::new(NETNS_PIN_ROOT).join(name);
    if let Err(e) = fs::remove_dir_all(&pins)
        && e.kind() != ErrorKind::NotFound
    {
        eprintln!("cleanup: removing {}: {e}", pins.display());
    }
    // Gone once no other instance has pins left (fails harmlessly otherwise).
    let _ = fs::remove_dir(NETNS_PIN_ROOT);
    if let Err(e) = run_checked(Command::new("ip").args(["netns", "del", name])) {
        eprintln!("cleanup: {e}");
    }
}

/// Removes namespaces named `<base>-<pid>-...` whose creating process is gone (a run that
/// was killed before its guards could drop). Returns the names removed.
pub fn remove_stale(base: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove(&name);
            removed.push(name);
        }
    }
    removed
}

/// Runs a command; a failure to start or a non-zero exit becomes an error naming the
/// command and quoting its stderr.
pub fn run_checked(cmd: &mut Command) -> io::Result<Output> {
    let output = cmd
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{cmd:?}: {e}")))?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output)
}
