//! Whole hash maps read in bulk for `show` and the agent: one BPF_MAP_LOOKUP_BATCH call per
//! few thousand entries where the kernel has it, entry by entry (aya's iterator) where it
//! does not. Neither way refreshes an LRU map's entries (see [`batch::lookup_hash`]).

use std::os::fd::AsFd as _;

use aya::{
    Pod,
    maps::{HashMap, IterableMap as _, MapData},
};

use super::batch;
use crate::{Error, Result};

/// Entries per batch call: 16 KiB of conntrack keys, and few calls for 100,000 flows.
const CHUNK: u32 = 1024;

/// Every entry of a pinned hash map (`name` for errors), in the kernel's bucket order.
pub fn hash_entries<K, V>(map: &HashMap<MapData, K, V>, name: &'static str) -> Result<Vec<(K, V)>>
where
    K: Pod + Default + Clone,
    V: Pod + Default + Clone,
{
    let fd = map.map().fd().as_fd();
    match batch::lookup_hash(fd, CHUNK) {
        Ok(entries) => Ok(entries),
        Err(e) if batch::unsupported(&e) => map
            .iter()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|source| Error::Map { map: name, source }),
        Err(e) => Err(Error::io(format!("reading {name}"), e)),
    }
}
