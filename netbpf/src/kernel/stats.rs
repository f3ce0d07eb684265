//! Reading the per-CPU counters: summed over CPUs, one row per (hook, outcome).

use std::borrow::Borrow;

use aya::maps::{Map, MapData, PerCpuArray};
use netbpf_common::{
    maps,
    stats::{Counter, Hook, Outcome, slot},
};
use serde::Serialize;

use super::pins::PinDir;
use crate::{Error, Result};

/// One counter, summed over all CPUs. Field names are the stable JSON keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatRow {
    pub hook: &'static str,
    pub outcome: &'static str,
    pub drop: bool,
    pub packets: u64,
    pub bytes: u64,
}

/// Reads the counters of the datapath pinned under `pins` (any process, no agent needed).
pub fn read_pinned(pins: &PinDir) -> Result<Vec<StatRow>> {
    let path = pins.map(maps::STATS);
    if !path.exists() {
        return Err(Error::NotAttached {
            pin_dir: pins.path().to_owned(),
        });
    }
    let map_err = |source| Error::Map {
        map: maps::STATS,
        source,
    };
    let data = MapData::from_pin(&path).map_err(map_err)?;
    let map = Map::from_map_data(data).map_err(map_err)?;
    let array: PerCpuArray<MapData, Counter> = PerCpuArray::try_from(map).map_err(map_err)?;
    read(&array)
}

/// Reads the counters from an open stats map (for example one of a fixture's private maps).
pub fn read<T: Borrow<MapData>>(array: &PerCpuArray<T, Counter>) -> Result<Vec<StatRow>> {
    let mut rows = Vec::new();
    for hook in Hook::ALL {
        for outcome in Outcome::ALL {
            let per_cpu = array
                .get(&slot(hook, outcome), 0)
                .map_err(|source| Error::Map {
                    map: maps::STATS,
                    source,
                })?;
            let total = per_cpu.iter().fold(Counter::default(), |sum, c| Counter {
                packets: sum.packets + c.packets,
                bytes: sum.bytes + c.bytes,
            });
            rows.push(StatRow {
                hook: hook.name(),
                outcome: outcome.name(),
                drop: outcome.is_drop(),
                packets: total.packets,
                bytes: total.bytes,
            });
        }
    }
    Ok(rows)
}

/// The counter of one (hook, outcome) in a set of rows.
pub fn find(rows: &[StatRow], hook: Hook, outcome: Outcome) -> Counter {
    rows.iter()
        .find(|r| r.hook == hook.name() && r.outcome == outcome.name())
        .map_or_else(Counter::default, |r| Counter {
            packets: r.packets,
            bytes: r.bytes,
        })
}
