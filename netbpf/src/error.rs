//! Errors of the netbpf library: each names what was wrong and where.

use std::{io, path::PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] crate::config::Invalid),

    #[error("must run as root (needs CAP_BPF and CAP_NET_ADMIN)")]
    NotRoot,

    #[error("network namespace {name:?} not found ({path} does not exist)")]
    NetnsNotFound { name: String, path: PathBuf },

    #[error("cannot enter network namespace {name:?}: {source}")]
    NetnsEnter { name: String, source: io::Error },

    #[error(
        "pin directory {path} is not on a bpf filesystem and cannot be mounted there \
         (mount one with `mount -t bpf bpf DIR`, or pass --pin-dir under /sys/fs/bpf)"
    )]
    PinDirNotBpffs { path: PathBuf },

    #[error("cannot mount bpffs at {path}: {source}")]
    MountBpffs { path: PathBuf, source: io::Error },

    #[error("nothing is attached here: no pinned maps under {pin_dir} (run `netbpf attach` first)")]
    NotAttached { pin_dir: PathBuf },

    #[error("interface {iface:?} not found in {netns}")]
    UnknownInterface { iface: String, netns: String },

    /// A command-line argument that names nothing here, or does not fit the others.
    #[error("{what}: {message}")]
    BadArgument { what: String, message: String },

    #[error("loading the kernel object: {0}")]
    Load(#[from] aya::EbpfError),

    #[error("kernel object has no program {0:?}")]
    MissingProgram(&'static str),

    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        source: aya::programs::ProgramError,
    },

    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },

    #[error("pinned link {path}: {source}")]
    Link {
        path: PathBuf,
        source: aya::programs::links::LinkError,
    },

    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },

    #[error("{command}: {stderr}")]
    Command { command: String, stderr: String },

    #[error("not everything could be done: {0}")]
    Incomplete(String),

    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },

    #[error("cannot read the definitions file {path}: {source}")]
    ReadDefinitions { path: PathBuf, source: io::Error },

    #[error("metrics: cannot listen on {addr}: {source}")]
    MetricsBind {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
}

impl Error {
    /// 2 for input the user can fix on the command line, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Invalid(_)
            | Error::BadArgument { .. }
            | Error::NetnsNotFound { .. }
            | Error::PinDirNotBpffs { .. }
            | Error::UnknownInterface { .. }
            | Error::ReadDefinitions { .. } => 2,
            // An address this namespace does not have.
            Error::MetricsBind { source, .. }
                if source.kind() == io::ErrorKind::AddrNotAvailable =>
            {
                2
            }
            _ => 1,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
