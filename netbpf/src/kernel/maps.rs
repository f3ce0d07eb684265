//! The container maps, opened from their pins: typed handles for the reconciler (writes)
//! and for `show` (reads).

use std::net::Ipv4Addr;

use aya::maps::{HashMap, Map, MapData};
use netbpf_common::{
    maps,
    net::{EndpointInfo, NetworkInfo},
};

use super::pins::PinDir;
use crate::{Error, Result};

pub struct ContainerMaps {
    pub networks: HashMap<MapData, u32, NetworkInfo>,
    pub endpoints: HashMap<MapData, u32, EndpointInfo>,
    pub ifaces: HashMap<MapData, u32, u32>,
}

fn open<V: aya::Pod>(pins: &PinDir, name: &'static str) -> Result<HashMap<MapData, u32, V>> {
    let path = pins.map(name);
    if !path.exists() {
        return Err(Error::NotAttached {
            pin_dir: pins.path().to_owned(),
        });
    }
    let err = |source| Error::Map { map: name, source };
    let data = MapData::from_pin(&path).map_err(err)?;
    HashMap::try_from(Map::from_map_data(data).map_err(err)?).map_err(err)
}

impl ContainerMaps {
    pub fn open_pinned(pins: &PinDir) -> Result<Self> {
        Ok(ContainerMaps {
            networks: open(pins, maps::NETWORKS)?,
            endpoints: open(pins, maps::ENDPOINTS)?,
            ifaces: open(pins, maps::IFACES)?,
        })
    }

    /// Every network, by id.
    pub fn networks(&self) -> Result<Vec<(u32, NetworkInfo)>> {
        collect(self.networks.iter(), maps::NETWORKS)
    }

    /// Every endpoint, by address.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>> {
        Ok(collect(self.endpoints.iter(), maps::ENDPOINTS)?
            .into_iter()
            .map(|(k, v)| (addr_of(k), v))
            .collect())
    }

    pub fn ifaces(&self) -> Result<Vec<(u32, Ipv4Addr)>> {
        Ok(collect(self.ifaces.iter(), maps::IFACES)?
            .into_iter()
            .map(|(k, v)| (k, addr_of(v)))
            .collect())
    }
}

fn collect<K, V>(
    iter: impl Iterator<Item = std::result::Result<(K, V), aya::maps::MapError>>,
    map: &'static str,
) -> Result<Vec<(K, V)>> {
    iter.collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| Error::Map { map, source })
}

/// A map key or value holding an address (network byte order in a native u32).
pub fn addr_key(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

pub fn addr_of(key: u32) -> Ipv4Addr {
    Ipv4Addr::from(key.to_ne_bytes())
}
