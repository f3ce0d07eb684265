//! The container maps, opened from their pins: typed handles for the reconciler (writes)
//! and for `show` (reads).

use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use netbpf_common::conntrack::HostConfig;
use netbpf_common::{
    maps,
    net::{EndpointInfo, IFACE_SLOTS, IfaceInfo, NO_PEER_SLOTS, NetworkInfo, PeerInfo},
    ports::{PortKey, PortTarget},
};

use super::pins::PinDir;
use crate::{Error, Result};

pub struct ContainerMaps {
    pub networks: HashMap<MapData, u32, NetworkInfo>,
    pub endpoints: HashMap<MapData, u32, EndpointInfo>,
    iface_slots: Array<MapData, IfaceInfo>,
    iface_big: HashMap<MapData, u32, IfaceInfo>,
    peers: Array<MapData, PeerInfo>,
    pub ports: HashMap<MapData, PortKey, PortTarget>,
    pub local: HashMap<MapData, u32, u32>,
    config: Array<MapData, HostConfig>,
}

pub(super) fn open(pins: &PinDir, name: &'static str) -> Result<Map> {
    let path = pins.map(name);
    if !path.exists() {
        return Err(Error::NotAttached {
            pin_dir: pins.path().to_owned(),
        });
    }
    let err = |source| Error::Map { map: name, source };
    Map::from_map_data(MapData::from_pin(&path).map_err(err)?).map_err(err)
}

pub(super) fn typed<T: TryFrom<Map, Error = MapError>>(map: Map, name: &'static str) -> Result<T> {
    T::try_from(map).map_err(|source| Error::Map { map: name, source })
}

impl ContainerMaps {
    /// The maps of a freshly opened object (private, unpinned: fixtures and cost runs).
    pub fn take_from(ebpf: &mut aya::Ebpf) -> Result<Self> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or(Error::Map {
                map: name,
                source: MapError::InvalidName {
                    name: name.to_owned(),
                },
            })
        };
        Ok(ContainerMaps {
            networks: typed(take(maps::NETWORKS)?, maps::NETWORKS)?,
            endpoints: typed(take(maps::ENDPOINTS)?, maps::ENDPOINTS)?,
            iface_slots: typed(take(maps::IFACES)?, maps::IFACES)?,
            iface_big: typed(take(maps::IFACES_BIG)?, maps::IFACES_BIG)?,
            peers: typed(take(maps::PEERS)?, maps::PEERS)?,
            ports: typed(take(maps::PORTS)?, maps::PORTS)?,
            local: typed(take(maps::LOCAL)?, maps::LOCAL)?,
            config: typed(take(maps::CONFIG)?, maps::CONFIG)?,
        })
    }

    pub fn open_pinned(pins: &PinDir) -> Result<Self> {
        Ok(ContainerMaps {
            networks: typed(open(pins, maps::NETWORKS)?, maps::NETWORKS)?,
            endpoints: typed(open(pins, maps::ENDPOINTS)?, maps::ENDPOINTS)?,
            iface_slots: typed(open(pins, maps::IFACES)?, maps::IFACES)?,
            iface_big: typed(open(pins, maps::IFACES_BIG)?, maps::IFACES_BIG)?,
            peers: typed(open(pins, maps::PEERS)?, maps::PEERS)?,
            ports: typed(open(pins, maps::PORTS)?, maps::PORTS)?,
            local: typed(open(pins, maps::LOCAL)?, maps::LOCAL)?,
            config: typed(open(pins, maps::CONFIG)?, maps::CONFIG)?,
        })
    }

    /// What the program reads about the sender behind `ifindex`.
    pub fn iface(&self, ifindex: u32) -> Result<Option<IfaceInfo>> {
        if ifindex < IFACE_SLOTS {
            found(self.iface_slots.get(&ifindex, 0), maps::IFACES)
        } else {
            found(self.iface_big.get(&ifindex, 0), maps::IFACES_BIG)
        }
    }

    /// Puts the sender behind `ifindex` where the program looks for it.
    pub fn set_iface(&mut self, ifindex: u32, info: &IfaceInfo) -> Result<()> {
        if ifindex < IFACE_SLOTS {
            self.iface_slots
                .set(ifindex, info, 0)
                .map_err(map_err(maps::IFACES))
        } else {
            self.iface_big
                .insert(&ifindex, info, 0)
                .map_err(map_err(maps::IFACES_BIG))
        }
    }

    /// What the programs need of the host (uplink, masquerade address and ports).
    /// What the programs have of the host now (all zero before the first reconcile).
    pub fn host_config(&self) -> Result<HostConfig> {
        self.config.get(&0, 0).map_err(map_err(maps::CONFIG))
    }

    pub fn set_host_config(&mut self, config: &HostConfig) -> Result<()> {
        self.config.set(0, config, 0).map_err(map_err(maps::CONFIG))
    }

    /// Puts a container in its network's range of peer slots (a network without a range
    /// keeps nothing there).
    pub fn set_peer(
        &mut self,
        network: &NetworkInfo,
        addr: Ipv4Addr,
        info: &PeerInfo,
    ) -> Result<()> {
        match peer_slot(network, addr) {
            Some(slot) => self.peers.set(slot, info, 0).map_err(map_err(maps::PEERS)),
            None => Ok(()),
        }
    }

    pub fn clear_peer(&mut self, network: &NetworkInfo, addr: Ipv4Addr) -> Result<()> {
        self.set_peer(network, addr, &PeerInfo::default())
    }

    /// Forgets the sender behind `ifindex` (its packets are dropped as of unknown source).
    pub fn clear_iface(&mut self, ifindex: u32) -> Result<()> {
        if ifindex < IFACE_SLOTS {
            self.iface_slots
                .set(ifindex, &IfaceInfo::default(), 0)
                .map_err(map_err(maps::IFACES))
        } else {
            match self.iface_big.remove(&ifindex) {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(source) => Err(Error::Map {
                    map: maps::IFACES_BIG,
                    source,
                }),
            }
        }
    }

    /// Every network, by id.
    pub fn networks(&self) -> Result<Vec<(u32, NetworkInfo)>> {
        collect(self.networks.iter(), maps::NETWORKS)
    }

    /// Every published port.
    pub fn ports(&self) -> Result<Vec<(PortKey, PortTarget)>> {
        collect(self.ports.iter(), maps::PORTS)
    }

    /// Every endpoint, by address.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>> {
        Ok(collect(self.endpoints.iter(), maps::ENDPOINTS)?
            .into_iter()
            .map(|(k, v)| (addr_of(k), v))
            .collect())
    }
}

/// A map read whose key may be absent: `None` then, any other failure an error.
pub(crate) fn found<V>(
    result: std::result::Result<V, MapError>,
    map: &'static str,
) -> Result<Option<V>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound | MapError::OutOfBounds { .. }) => Ok(None),
        Err(source) => Err(Error::Map { map, source }),
    }
}

pub(super) fn map_err(map: &'static str) -> impl Fn(MapError) -> Error {
    move |source| Error::Map { map, source }
}

pub(super) fn collect<K, V>(
    iter: impl Iterator<Item = std::result::Result<(K, V), MapError>>,
    map: &'static str,
) -> Result<Vec<(K, V)>> {
    iter.collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| Error::Map { map, source })
}

/// The slot of `addr` in `network`'s peer range, if it has one.
pub fn peer_slot(network: &NetworkInfo, addr: Ipv4Addr) -> Option<u32> {
    if network.peer_base == NO_PEER_SLOTS {
        return None;
    }
    let host_bits = 32 - network.prefix_len.min(32);
    let host = u32::from(addr) & (u32::MAX.checked_shr(network.prefix_len).unwrap_or(0));
    (host_bits < 32).then_some(network.peer_base + host)
}

/// A map key or value holding an address (network byte order in a native u32).
pub fn addr_key(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

pub fn addr_of(key: u32) -> Ipv4Addr {
    Ipv4Addr::from(key.to_ne_bytes())
}
