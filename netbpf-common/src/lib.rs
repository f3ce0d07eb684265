//! Map layouts and counter indices shared by netbpf's kernel programs and user space.
//!
//! This crate is the single source of truth for anything both sides read or write: every
//! type is `#[repr(C)]` without implicit padding, and every enum has a fixed discriminant.
#![no_std]

pub mod stats;

/// Names of the maps in the kernel object (at most 15 bytes: the kernel's object name limit).
pub mod maps {
    /// Per-CPU packet and byte counters per hook and outcome; see [`crate::stats`].
    pub const STATS: &str = "NB_STATS";

    /// Every map the object defines, in the order `netbpf down` unpins them.
    pub const ALL: &[&str] = &[STATS];
}
