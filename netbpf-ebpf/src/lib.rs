//! Empty library target, so that `netbpf` can name this crate as a build dependency
//! (aya-build's `rerun-if-changed` on this directory is what rebuilds the object). The
//! programs live in `main.rs`.
#![no_std]
