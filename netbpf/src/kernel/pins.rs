//! The pin directory on bpffs: where netbpf keeps its maps and links so that the datapath
//! outlives the process that set it up, and a later process can find it again.
//!
//! Layout: `DIR/maps/<MAP>` and `DIR/links/<hook>@<interface>`.

use std::{
    ffi::CString,
    fs, io,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use netbpf_common::{
    pin_paths::{BPFFS_ROOT, DEFAULT_PIN_DIR, NETNS_PIN_ROOT},
    stats::Hook,
};

use crate::{Error, Result};

/// `f_type` of a bpf filesystem in statfs (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PinDir { root: root.into() }
    }

    /// The pin directory for an instance: the one given, else one per network namespace, so
    /// instances in different namespaces never share maps.
    pub fn resolve(explicit: Option<&Path>, netns: Option<&str>) -> Self {
        match (explicit, netns) {
            (Some(dir), _) => PinDir::new(dir),
            (None, Some(ns)) => PinDir::new(Path::new(NETNS_PIN_ROOT).join(netns_key(ns))),
            (None, None) => PinDir::new(DEFAULT_PIN_DIR),
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn link(&self, hook: Hook, iface: &str) -> PathBuf {
        self.links_dir().join(format!("{}@{iface}", hook.name()))
    }

    /// Makes sure the directory is on bpffs, mounting bpffs at /sys/fs/bpf if that is where
    /// it belongs and nothing is mounted there yet, then creates the layout.
    pub fn prepare(&self) -> Result<()> {
        if !self.on_bpffs()? {
            let bpffs_root = Path::new(BPFFS_ROOT);
            if !self.root.starts_with(bpffs_root) || !bpffs_root.is_dir() {
                return Err(Error::PinDirNotBpffs {
                    path: self.root.clone(),
                });
            }
            mount_bpffs(bpffs_root)?;
            if !self.on_bpffs()? {
                return Err(Error::PinDirNotBpffs {
                    path: self.root.clone(),
                });
            }
        }
        for dir in [self.maps_dir(), self.links_dir()] {
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(())
    }

    /// Whether the directory, or the closest of its ancestors that exists, is on bpffs.
    pub fn on_bpffs(&self) -> Result<bool> {
        let existing = self
            .root
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        Ok(statfs_type(existing)? == BPF_FS_MAGIC)
    }

    /// Whether maps are pinned here (that is, netbpf has set up a datapath).
    pub fn has_maps(&self) -> bool {
        self.maps_dir().is_dir()
    }

    /// Paths of the links pinned here, sorted.
    pub fn pinned_links(&self) -> Result<Vec<PathBuf>> {
        list_dir(&self.links_dir())
    }

    /// Paths of the maps pinned here, sorted.
    pub fn pinned_maps(&self) -> Result<Vec<PathBuf>> {
        list_dir(&self.maps_dir())
    }

    /// Removes the (by then empty) layout, and the directory itself if `remove_root`.
    /// Links and maps must have been unpinned first. The shared parent of per-namespace
    /// directories stays: another instance may be creating its directory in it.
    pub fn remove_layout(&self, remove_root: bool) -> Result<()> {
        let mut dirs = vec![self.links_dir(), self.maps_dir()];
        if remove_root {
            dirs.push(self.root.clone());
        }
        for dir in dirs {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", dir.display()), e)),
            }
        }
        Ok(())
    }
}

/// The directory name of a namespace's instance: its name under /run/netns, or for any
/// other path (such as /proc/PID/ns/net) the namespace's inode, which identifies it.
fn netns_key(ns: &str) -> String {
    let path = Path::new(ns);
    if !ns.contains('/') {
        return ns.to_owned();
    }
    if path.parent() == Some(Path::new(super::netns::NETNS_RUN_DIR))
        && let Some(name) = path.file_name().and_then(|n| n.to_str())
    {
        return name.to_owned();
    }
    match fs::metadata(path) {
        Ok(meta) => format!("netns-{}", meta.ino()),
        Err(_) => ns.replace('/', "_"),
    }
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let mut paths = entries
        .map(|entry| entry.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    paths.sort();
    Ok(paths)
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|e| {
        Error::io(
            format!("path {}", path.display()),
            io::Error::new(io::ErrorKind::InvalidInput, e),
        )
    })
}

fn statfs_type(path: &Path) -> Result<i64> {
    let c = c_path(path)?;
    // SAFETY: statfs writes only into the zeroed struct we pass.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(Error::io(
            format!("statfs {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok(buf.f_type)
}

fn mount_bpffs(target: &Path) -> Result<()> {
    let c = c_path(target)?;
    // SAFETY: NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::MountBpffs {
            path: target.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_dir_per_namespace() {
        assert_eq!(
            PinDir::resolve(None, None).path(),
            Path::new(DEFAULT_PIN_DIR)
        );
        assert_eq!(
            PinDir::resolve(None, Some("lab1")).path(),
            Path::new("/sys/fs/bpf/netbpf-ns/lab1")
        );
        assert_eq!(
            PinDir::resolve(None, Some("/run/netns/lab2")).path(),
            Path::new("/sys/fs/bpf/netbpf-ns/lab2")
        );
        // Two /proc paths of different namespaces never share a directory.
        let own = fs::metadata("/proc/self/ns/net").expect("own netns");
        assert_eq!(
            PinDir::resolve(None, Some("/proc/self/ns/net")).path(),
            Path::new(NETNS_PIN_ROOT).join(format!("netns-{}", own.ino()))
        );
        assert_eq!(
            PinDir::resolve(Some(Path::new("/sys/fs/bpf/x")), Some("lab1")).path(),
            Path::new("/sys/fs/bpf/x")
        );
    }

    #[test]
    fn link_names_carry_hook_and_interface() {
        let pins = PinDir::new("/p");
        assert_eq!(
            pins.link(Hook::FromUplink, "eth0"),
            Path::new("/p/links/from_uplink@eth0")
        );
        assert_eq!(pins.map("NB_STATS"), Path::new("/p/maps/NB_STATS"));
    }

    #[test]
    fn tmp_is_not_bpffs() {
        let pins = PinDir::new(std::env::temp_dir().join("netbpf-not-bpffs/x"));
        assert!(!pins.on_bpffs().expect("statfs works"));
    }
}
