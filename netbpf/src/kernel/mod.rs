//! Everything that talks to the kernel: the embedded object, namespaces, bpffs pins,
//! attaching programs and reading their counters.

pub mod batch;
pub mod btf;
pub mod clock;
pub mod conntrack;
pub mod datapath;
pub mod dump;
pub mod ifaces;
pub mod maps;
pub mod netns;
pub mod object;
pub mod pins;
pub mod services;
pub mod stats;

use crate::{Error, Result};

/// Loading programs and attaching them needs root; check before touching anything.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::NotRoot);
    }
    Ok(())
}
