//! netbpf: an eBPF data plane for the containers of a Linux host.
//!
//! - [`config`]: the definitions file, validated and resolved into a model.
//! - [`kernel`]: the embedded kernel object, loading, attaching, pinning, namespaces, counters.
//! - [`cli`]: command-line parsing and rendering; `main` only maps its result to an exit code.

pub mod agent;
pub mod cli;
pub mod config;
pub mod docker;
pub mod error;
pub mod explain;
pub mod inspect;
pub mod kernel;
pub mod logging;
pub mod monitor;
pub mod plan;

pub use error::{Error, Result};
