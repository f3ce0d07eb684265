//! Definitions: the file as the user wrote it ([`file`]), checked and resolved into the
//! [`Model`] the planner works from ([`validate`]).

pub mod duration;
pub mod file;
pub mod model;
pub mod ports;
pub mod services;
pub mod validate;

use std::{fmt, path::Path};

pub use model::{Container, Model, Network, Service};

/// One thing wrong with a definitions file: where, which field, what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `network "front"`, `container #3`, `line 12, column 5`...
    pub place: String,
    /// The field at fault, if one is.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {field}: {}", self.place, self.message),
            None => write!(f, "{}: {}", self.place, self.message),
        }
    }
}

/// Every problem found in one file; nothing is applied while there is one.
#[derive(Debug, thiserror::Error)]
pub struct Invalid {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: invalid definitions ({n} problem{})",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}: {p}", self.file)?;
        }
        Ok(())
    }
}

/// Reads, parses and validates a definitions file. `previous` supplies what the kernel
/// already holds, so addresses allocated before stay where they are.
pub fn load(path: &Path, previous: &validate::Previous) -> Result<Model, crate::Error> {
    let text = std::fs::read_to_string(path).map_err(|source| crate::Error::ReadDefinitions {
        path: path.to_owned(),
        source,
    })?;
    let label = path.display().to_string();
    let parsed = file::parse(&text).map_err(|problem| Invalid {
        file: label.clone(),
        problems: vec![problem],
    })?;
    validate::validate(&parsed, previous).map_err(|problems| {
        Invalid {
            file: label,
            problems,
        }
        .into()
    })
}
