//! Where the agent's definitions come from: the definitions file ([`FileSource`]), or the
//! Docker driver ([`crate::docker::Driver`], with or without a file). Every source yields
//! the same validated [`Model`]; the planner and the reconciler never know which one it
//! was.

use std::path::{Path, PathBuf};

use super::{reconcile::Report, watch::Waker};
use crate::{
    Error, Result,
    config::{self, Model, validate::Previous},
};

pub trait Source: Send + Sync {
    /// The file whose changes make the agent reload, if any.
    fn file(&self) -> Option<&Path>;

    /// The definitions, validated against what the kernel holds (`previous`).
    fn load(&self, previous: &Previous) -> Result<Model>;

    /// The outcome of the reconcile that followed the last [`Source::load`] (or of the
    /// load itself, when it failed).
    fn applied(&self, _outcome: std::result::Result<&Report, &Error>) {}

    /// Called once the agent's loop can be woken: a source that changes by itself calls
    /// `reload` to have its definitions loaded and applied again.
    fn start(&self, _reload: Waker) -> Result<()> {
        Ok(())
    }

    /// Periodic work, on the agent's tick (garbage collection).
    fn tick(&self) {}

    /// The agent is exiting.
    fn stop(&self) {}
}

/// The definitions file, reloaded when it changes.
#[derive(Clone, Debug)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    pub fn new(path: &Path) -> FileSource {
        FileSource {
            path: path.to_owned(),
        }
    }
}

impl Source for FileSource {
    fn file(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn load(&self, previous: &Previous) -> Result<Model> {
        config::load(&self.path, previous)
    }
}
