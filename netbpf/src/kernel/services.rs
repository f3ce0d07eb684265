//! The service maps, opened from their pins: frontends (`NB_SERVICES`), regions
//! (`NB_TABLES`), backends (`NB_BACKENDS`), their connection counts (`NB_BE_CONNS`,
//! written by the datapath; `NB_BE_GC`, by the agent) and traffic (`NB_BE_TRAFFIC`, the
//! datapath's). Typed handles for the reconciler, `show services` and the conntrack
//! cleanup.

use std::{collections::BTreeMap, os::fd::AsFd as _};

use aya::maps::{Array, HashMap, IterableMap as _, MapData, MapError};
use netbpf_common::{
    maps,
    service::{Backend, BackendConns, BackendTraffic, Service, ServiceKey},
};

use super::{
    batch,
    maps::{map_err, open, typed},
    pins::PinDir,
};
use crate::{Error, Result, plan::services::Trailer};

pub struct ServiceMaps {
    services: HashMap<MapData, ServiceKey, Service>,
    tables: Array<MapData, u32>,
    backends: Array<MapData, Backend>,
    conns: Array<MapData, BackendConns>,
    gc: Array<MapData, u64>,
    traffic: Array<MapData, BackendTraffic>,
}

/// What a backend's flows did (since its id was given to it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendCounts {
    pub conns: BackendConns,
    /// Connections the agent expired (removed from conntrack before they closed).
    pub expired: u64,
    pub traffic: BackendTraffic,
}

impl ServiceMaps {
    pub fn open_pinned(pins: &PinDir) -> Result<Self> {
        Ok(ServiceMaps {
            services: typed(open(pins, maps::SERVICES)?, maps::SERVICES)?,
            tables: typed(open(pins, maps::TABLES)?, maps::TABLES)?,
            backends: typed(open(pins, maps::BACKENDS)?, maps::BACKENDS)?,
            conns: typed(open(pins, maps::BE_CONNS)?, maps::BE_CONNS)?,
            gc: typed(open(pins, maps::BE_GC)?, maps::BE_GC)?,
            traffic: typed(open(pins, maps::BE_TRAFFIC)?, maps::BE_TRAFFIC)?,
        })
    }

    /// Every frontend.
    pub fn frontends(&self) -> Result<Vec<(ServiceKey, Service)>> {
        super::dump::hash_entries(&self.services, maps::SERVICES)
    }

    pub fn set_frontend(&mut self, key: &ServiceKey, frontend: &Service) -> Result<()> {
        self.services
            .insert(key, frontend, 0)
            .map_err(map_err(maps::SERVICES))
    }

    pub fn remove_frontend(&mut self, key: &ServiceKey) -> Result<()> {
        match self.services.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(map_err(maps::SERVICES)(source)),
        }
    }

    /// Every backend id in use (a backend with address 0 is none).
    pub fn backends(&self) -> Result<BTreeMap<u32, Backend>> {
        let fd = self.backends.map().fd().as_fd();
        let all: Vec<Backend> = match batch::lookup(fd, 0, self.backends.len()) {
            Ok(all) => all,
            Err(e) if batch::unsupported(&e) => self
                .backends
                .iter()
                .collect::<std::result::Result<_, _>>()
                .map_err(map_err(maps::BACKENDS))?,
            Err(e) => return Err(Error::io("reading NB_BACKENDS", e)),
        };
        Ok(all
            .into_iter()
            .enumerate()
            .filter(|(_, b)| b.addr != 0)
            .map(|(id, b)| (id as u32, b))
            .collect())
    }

    pub fn backend(&self, id: u32) -> Result<Backend> {
        self.backends.get(&id, 0).map_err(map_err(maps::BACKENDS))
    }

    pub fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<()> {
        self.backends
            .set(id, backend, 0)
            .map_err(map_err(maps::BACKENDS))
    }

    /// Connections the datapath opened and saw close, the ones the agent expired, and the
    /// traffic of them all.
    pub fn counts(&self, id: u32) -> Result<BackendCounts> {
        Ok(BackendCounts {
            conns: self.conns.get(&id, 0).map_err(map_err(maps::BE_CONNS))?,
            expired: self.gc.get(&id, 0).map_err(map_err(maps::BE_GC))?,
            traffic: self
                .traffic
                .get(&id, 0)
                .map_err(map_err(maps::BE_TRAFFIC))?,
        })
    }

    /// The counts of backend ids `0..upto`, indexed by id: three batch reads instead of
    /// three lookups per backend (`show services` of 10,000 services).
    pub fn counts_upto(&self, upto: u32) -> Result<Vec<BackendCounts>> {
        let conns = read_array(&self.conns, upto, maps::BE_CONNS)?;
        let gc = read_array(&self.gc, upto, maps::BE_GC)?;
        let traffic = read_array(&self.traffic, upto, maps::BE_TRAFFIC)?;
        Ok(conns
            .into_iter()
            .zip(gc)
            .zip(traffic)
            .map(|((conns, expired), traffic)| BackendCounts {
                conns,
                expired,
                traffic,
            })
            .collect())
    }

    /// Zeroes the counts of an id about to be given to a new backend.
    pub fn reset_counts(&mut self, id: u32) -> Result<()> {
        self.conns
            .set(id, &BackendConns::default(), 0)
            .map_err(map_err(maps::BE_CONNS))?;
        self.traffic
            .set(id, &BackendTraffic::default(), 0)
            .map_err(map_err(maps::BE_TRAFFIC))?;
        self.gc.set(id, &0, 0).map_err(map_err(maps::BE_GC))
    }

    /// Counts `n` more connections of backend `id` as expired (removed by the agent).
    pub fn add_expired(&mut self, id: u32, n: u64) -> Result<()> {
        let before = self.gc.get(&id, 0).map_err(map_err(maps::BE_GC))?;
        self.gc
            .set(id, &before.saturating_add(n), 0)
            .map_err(map_err(maps::BE_GC))
    }

    /// `len` entries of `NB_TABLES` from `start` (fewer if the array ends first).
    pub fn words(&self, start: u32, len: u32) -> Result<Vec<u32>> {
        let fd = self.tables.map().fd().as_fd();
        match batch::lookup(fd, start, len) {
            Ok(words) => Ok(words),
            Err(e) if batch::unsupported(&e) => (start..start.saturating_add(len))
                .map(|i| self.tables.get(&i, 0).map_err(map_err(maps::TABLES)))
                .collect(),
            Err(e) => Err(Error::io(format!("reading NB_TABLES at {start}"), e)),
        }
    }

    pub fn write_words(&mut self, start: u32, words: &[u32]) -> Result<()> {
        let fd = self.tables.map().fd().as_fd();
        match batch::update(fd, start, words) {
            Ok(()) => Ok(()),
            Err(e) if batch::unsupported(&e) => {
                for (i, w) in words.iter().enumerate() {
                    self.tables
                        .set(start + i as u32, w, 0)
                        .map_err(map_err(maps::TABLES))?;
                }
                Ok(())
            }
            Err(e) => Err(Error::io(format!("writing NB_TABLES at {start}"), e)),
        }
    }

    /// The trailer of the region a frontend points at, and the region's whole length;
    /// `None` if what follows its table is no trailer.
    pub fn region(&self, frontend: &Service) -> Result<Option<(Trailer, u32)>> {
        let body = u32::from(frontend.count).saturating_add(frontend.table_len);
        let at = frontend.table.saturating_add(body);
        let Ok(first) = self.tables.get(&at, 0) else {
            return Ok(None);
        };
        let Some(len) = Trailer::len_of(first) else {
            return Ok(None);
        };
        let words = self.words(at, len as u32)?;
        Ok(Trailer::decode(&words).map(|t| (t, body + len as u32)))
    }
}

/// Entries `0..upto` of an array map (fewer if it ends first), in one batch read where the
/// kernel has it.
fn read_array<V: aya::Pod + Default + Clone>(
    array: &Array<MapData, V>,
    upto: u32,
    name: &'static str,
) -> Result<Vec<V>> {
    let fd = array.map().fd().as_fd();
    match batch::lookup(fd, 0, upto.min(array.len())) {
        Ok(values) => Ok(values),
        Err(e) if batch::unsupported(&e) => (0..upto.min(array.len()))
            .map(|i| array.get(&i, 0).map_err(map_err(name)))
            .collect(),
        Err(e) => Err(Error::io(format!("reading {name}"), e)),
    }
}
