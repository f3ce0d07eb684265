//! The control loop: definitions -> model -> plan -> kernel ([`reconcile`]).

pub mod reconcile;

use std::path::Path;

use crate::{
    Result,
    config::{self, Model, validate::Previous},
    kernel::{maps::ContainerMaps, pins::PinDir},
    plan,
};
use netbpf_common::net::name_str;

/// What the kernel already holds, for stable ids and addresses across reloads (empty when
/// nothing is pinned yet).
pub fn previous(pins: &PinDir) -> Previous {
    let Ok(maps) = ContainerMaps::open_pinned(pins) else {
        return Previous::default();
    };
    let mut prev = Previous::default();
    if let Ok(networks) = maps.networks() {
        prev.network_ids = networks
            .iter()
            .map(|(id, n)| (name_str(&n.name).to_owned(), *id))
            .collect();
    }
    if let Ok(endpoints) = maps.endpoints() {
        prev.addresses = endpoints
            .iter()
            .map(|(addr, ep)| (name_str(&ep.name).to_owned(), *addr))
            .collect();
    }
    prev
}

/// Loads and validates a definitions file against what `pins` holds.
pub fn load_model(file: &Path, pins: &PinDir) -> Result<Model> {
    config::load(file, &previous(pins))
}

/// One reconcile from a file: validate everything first, so an invalid file changes nothing.
pub fn apply(file: &Path, pins: &PinDir) -> Result<reconcile::Report> {
    let model = load_model(file, pins)?;
    reconcile::reconcile(pins, &plan::plan(&model))
}
