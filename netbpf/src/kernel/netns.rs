//! Entering a named network namespace, as `ip netns exec` would, but only the network
//! namespace: `ip netns exec` also remounts /sys, which hides /sys/fs/bpf and would make
//! pins vanish with the process.

use std::{fs::File, io, os::fd::AsRawFd as _, path::PathBuf};

use crate::{Error, Result};

/// Where `ip netns add NAME` bind-mounts a namespace.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Path of a namespace given by name (`/run/netns/NAME`) or by path (anything with a `/`).
pub fn path_of(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        PathBuf::from(NETNS_RUN_DIR).join(name)
    }
}

/// Moves the calling thread into the namespace. Call it before any other thread starts:
/// setns changes only the calling thread.
pub fn enter(name: &str) -> Result<()> {
    let path = path_of(name);
    let file = File::open(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::NetnsNotFound {
            name: name.to_owned(),
            path: path.clone(),
        },
        _ => Error::NetnsEnter {
            name: name.to_owned(),
            source,
        },
    })?;
    // SAFETY: a valid fd and a namespace type flag; failure is reported through errno.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::NetnsEnter {
            name: name.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}
