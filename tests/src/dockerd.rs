//! A Docker daemon of one test's own: Debian's dockerd inside a namespace the test made,
//! in a private mount namespace where the plugin directory (/run/docker/plugins) is a
//! directory of the test's, every other path (data, exec root, pid file, API socket)
//! under the same temporary directory, containers under a cgroup parent of their own, no
//! bridge, no iptables. Dropping it kills the containers (through their cgroups), the
//! daemon and whatever it started, by PID, and removes the directory.

use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::netns::Netns;

pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The client of the same package (another `docker` may come first in PATH).
pub const DOCKER: &str = "/usr/bin/docker";
pub const BUSYBOX: &str = "/bin/busybox";

/// Whether dockerd, its client and a static busybox are installed (Debian's docker.io and
/// busybox-static, which `cargo xtask setup` installs).
pub fn available() -> bool {
    [DOCKERD, DOCKER, BUSYBOX]
        .iter()
        .all(|p| Path::new(p).exists())
}

#[derive(Debug)]
pub struct Dockerd {
    dir: PathBuf,
    netns: String,
    cgroup_parent: String,
    /// Holds the private mount namespace across daemon restarts.
    holder: Child,
    daemon: Option<Child>,
    extra_args: Vec<String>,
}

impl Dockerd {
    /// Starts dockerd in `netns`, everything under `dir` (made if missing), and waits
    /// until it answers. `extra_args` go to every start (e.g. `--live-restore`).
    pub fn start(netns: &Netns, dir: &Path, extra_args: &[&str]) -> io::Result<Dockerd> {
        let plugins = dir.join("plugins");
        fs::create_dir_all(&plugins)?;
        // The mount point, in the machine's mount namespace: an empty directory, as
        // Docker's own packages make it.
        fs::create_dir_all("/run/docker/plugins")?;
        fs::write(
            dir.join("daemon.json"),
            "{\"default-address-pools\": [{\"base\": \"198.19.240.0/20\", \"size\": 24}]}\n",
        )?;
        let script = format!(
            "mount --bind {} /run/docker/plugins && exec sleep 1000000",
            plugins.display()
        );
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        // Unique as the directory is: the containers' cgroups are how they are found (and
        // killed) on drop.
        let name: String = dir
            .to_string_lossy()
            .trim_matches('/')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut d = Dockerd {
            dir: dir.to_owned(),
            netns: netns.name().to_owned(),
            cgroup_parent: format!("/{name}"),
            holder,
            daemon: None,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
        };
        // The bind mount is in place once the holder execs sleep.
        let pid = d.holder.id();
        let ready = wait(Duration::from_secs(10), || {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        if !ready {
            return Err(io::Error::other("the mount namespace holder did not start"));
        }
        d.start_daemon()?;
        Ok(d)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the driver's socket goes (Docker sees it as /run/docker/plugins).
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// The Engine API's socket.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    pub fn exec_root(&self) -> PathBuf {
        self.dir.join("exec")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("docker.pid")
    }

    /// The daemon's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Starts the daemon (again) in the same namespaces and waits until it answers.
    pub fn start_daemon(&mut self) -> io::Result<()> {
        // A pid file left by a killed daemon stops the next one; so does the one of its
        // containerd, dead but not reaped (its parent is gone, and init here may not reap).
        let _ = fs::remove_file(self.pid_file());
        let containerd_pid = self.exec_root().join("containerd/containerd.pid");
        if let Ok(text) = fs::read_to_string(&containerd_pid)
            && !text.trim().parse::<u32>().is_ok_and(alive)
        {
            let _ = fs::remove_file(&containerd_pid);
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))?;
        let dir = |sub: &str| self.dir.join(sub).display().to_string();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg(DOCKERD)
            .args(["--data-root", &dir("data")])
            .args(["--exec-root", &dir("exec")])
            .args(["--pidfile", &dir("docker.pid")])
            .args(["-H", &format!("unix://{}", dir("docker.sock"))])
            .args(["--config-file", &dir("daemon.json")])
            .args(["--cgroup-parent", &self.cgroup_parent])
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--storage-driver=vfs",
            ])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.daemon = Some(cmd.spawn()?);
        let ready = wait(Duration::from_secs(60), || {
            self.docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
        });
        if !ready {
            return Err(io::Error::other(format!(
                "dockerd did not answer; its log: {}",
                self.log_tail()
            )));
        }
        Ok(())
    }

    /// The extra arguments of the next starts.
    pub fn set_args(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|s| (*s).to_owned()).collect();
    }

    /// Sends `signal` to the daemon and reaps it (SIGKILL: as a crash).
    pub fn stop_daemon(&mut self, signal: i32) {
        if let Some(mut child) = self.daemon.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: a PID we spawned and have not reaped yet.
                unsafe { libc::kill(pid, signal) };
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    /// The last lines of the daemon's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("module=grpc") && !l.contains("level=info"))
            .collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    }

    /// `docker ARGS...` against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.api_socket().display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {DOCKER}: {e}"))
    }

    /// `docker ARGS...`, which must succeed; its stdout, trimmed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}): {}\ndockerd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `docker ARGS...`, which must fail; its stderr.
    pub fn docker_err(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            !out.status.success(),
            "docker {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    }

    /// Imports `image` from a root filesystem of the static busybox and its applets.
    pub fn import_busybox(&self, image: &str) -> io::Result<()> {
        let root = self.dir.join("rootfs");
        let bin = root.join("bin");
        fs::create_dir_all(&bin)?;
        for d in ["etc", "proc", "sys", "dev", "tmp", "www"] {
            fs::create_dir_all(root.join(d))?;
        }
        fs::copy(BUSYBOX, bin.join("busybox"))?;
        let list = Command::new(BUSYBOX).arg("--list").output()?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.is_empty() {
                let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
            }
        }
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = tar
            .stdout
            .ok_or_else(|| io::Error::other("no pipe from tar"))?;
        let out = Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.api_socket().display()))
            .args(["import", "-", image])
            .stdin(stdout)
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "docker import: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// The cgroup directories of this daemon's containers, in every hierarchy.
    fn cgroups(&self) -> Vec<PathBuf> {
        let parent = self.cgroup_parent.trim_start_matches('/');
        let mut out = vec![Path::new("/sys/fs/cgroup").join(parent)];
        if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
            out.extend(entries.flatten().map(|e| e.path().join(parent)));
        }
        out.retain(|p| p.is_dir());
        out
    }

    /// Kills every process in this daemon's container cgroups, then removes them.
    fn kill_containers(&self) {
        for root in self.cgroups() {
            for dir in walk(&root) {
                for file in ["cgroup.procs", "tasks"] {
                    let Ok(text) = fs::read_to_string(dir.join(file)) else {
                        continue;
                    };
                    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: a PID of a container this daemon ran.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        for root in self.cgroups() {
            let mut dirs = walk(&root);
            dirs.reverse();
            for dir in dirs {
                let _ = fs::remove_dir(&dir);
            }
        }
    }

    /// PIDs of the processes in the private mount namespace (containerd, shims), but for
    /// the holder itself.
    fn mount_ns_processes(&self) -> Vec<i32> {
        let Ok(ns) = fs::metadata(format!("/proc/{}/ns/mnt", self.holder.id())) else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != self.holder.id()))
            .filter(|pid| {
                fs::metadata(format!("/proc/{pid}/ns/mnt"))
                    .is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev())
            })
            .collect()
    }
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) state ...`: the state follows the last ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_owned()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            out.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        i += 1;
    }
    out
}

fn wait(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first (the daemon then has nothing to stop), the daemon, then
        // whatever is left in its mount namespace, then the namespace's holder.
        self.kill_containers();
        self.stop_daemon(libc::SIGTERM);
        for pid in self.mount_ns_processes() {
            // SAFETY: a process of the mount namespace this guard made (containerd, a shim).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.kill_containers();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            eprintln!("cleanup: removing {}: {e}", self.dir.display());
        }
    }
}
