//! [`Maps`] over the maps pinned under a pin directory, and where a packet enters.
//!
//! Only lookups (BPF_MAP_LOOKUP_ELEM): nothing here writes. A lookup from user space does
//! not mark an LRU entry as used (the kernel's `htab_lru_map_lookup_elem_sys`, Linux 5.2),
//! so reading `NB_CT` and `NB_AFFINITY` leaves their eviction order as it was.

use std::{ffi::CStr, path::Path};

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use netbpf_common::{
    conntrack::{CtEntry, CtKey, HostConfig},
    maps,
    net::{EndpointInfo, IFACE_SLOTS, IfaceInfo, NetworkInfo, PeerInfo, name_str},
    ports::{PortKey, PortTarget},
    service::{Affinity, AffinityKey, Backend, BackendConns, Service, ServiceKey},
    stats::Hook,
};

use super::{Maps, Origin, Packet, Sender};
use crate::{
    Error, Result,
    kernel::{
        maps::{addr_key, found},
        pins::PinDir,
        services::ServiceMaps,
    },
};

/// The pinned maps, opened for lookups.
pub struct PinnedMaps {
    ifaces: Array<MapData, IfaceInfo>,
    ifaces_big: HashMap<MapData, u32, IfaceInfo>,
    peers: Array<MapData, PeerInfo>,
    endpoints: HashMap<MapData, u32, EndpointInfo>,
    networks: HashMap<MapData, u32, NetworkInfo>,
    ports: HashMap<MapData, PortKey, PortTarget>,
    local: HashMap<MapData, u32, u32>,
    config: Array<MapData, HostConfig>,
    services: HashMap<MapData, ServiceKey, Service>,
    tables: Array<MapData, u32>,
    backends: Array<MapData, Backend>,
    conns: Array<MapData, BackendConns>,
    gc: Array<MapData, u64>,
    rr: Array<MapData, u64>,
    affinity: HashMap<MapData, AffinityKey, Affinity>,
    ct: HashMap<MapData, CtKey, CtEntry>,
    /// For the services' names (their regions' trailers).
    service_maps: ServiceMaps,
}

fn open<T: TryFrom<Map, Error = MapError>>(pins: &PinDir, name: &'static str) -> Result<T> {
    let path = pins.map(name);
    if !path.exists() {
        return Err(Error::NotAttached {
            pin_dir: pins.path().to_owned(),
        });
    }
    let err = |source| Error::Map { map: name, source };
    let data = MapData::from_pin(&path).map_err(err)?;
    T::try_from(Map::from_map_data(data).map_err(err)?).map_err(err)
}

/// A lookup's value, `None` for a missing key or an index past an array's end.
impl PinnedMaps {
    pub fn open(pins: &PinDir) -> Result<Self> {
        Ok(PinnedMaps {
            ifaces: open(pins, maps::IFACES)?,
            ifaces_big: open(pins, maps::IFACES_BIG)?,
            peers: open(pins, maps::PEERS)?,
            endpoints: open(pins, maps::ENDPOINTS)?,
            networks: open(pins, maps::NETWORKS)?,
            ports: open(pins, maps::PORTS)?,
            local: open(pins, maps::LOCAL)?,
            config: open(pins, maps::CONFIG)?,
            services: open(pins, maps::SERVICES)?,
            tables: open(pins, maps::TABLES)?,
            backends: open(pins, maps::BACKENDS)?,
            conns: open(pins, maps::BE_CONNS)?,
            gc: open(pins, maps::BE_GC)?,
            rr: open(pins, maps::SVC_RR)?,
            affinity: open(pins, maps::AFFINITY)?,
            ct: open(pins, maps::CT)?,
            service_maps: ServiceMaps::open_pinned(pins)?,
        })
    }

    /// The wired container called `name` (its address and endpoint).
    fn container(&self, name: &str) -> Result<Option<(u32, EndpointInfo)>> {
        for item in self.endpoints.iter() {
            let (addr, ep) = item.map_err(|source| Error::Map {
                map: maps::ENDPOINTS,
                source,
            })?;
            if name_str(&ep.name) == name {
                return Ok(Some((addr, ep)));
            }
        }
        Ok(None)
    }
}

impl Maps for PinnedMaps {
    fn iface(&self, ifindex: u32) -> Result<Option<IfaceInfo>> {
        if ifindex < IFACE_SLOTS {
            found(self.ifaces.get(&ifindex, 0), maps::IFACES)
        } else {
            found(self.ifaces_big.get(&ifindex, 0), maps::IFACES_BIG)
        }
    }

    fn peer(&self, slot: u32) -> Result<Option<PeerInfo>> {
        found(self.peers.get(&slot, 0), maps::PEERS)
    }

    fn endpoint(&self, addr: u32) -> Result<Option<EndpointInfo>> {
        found(self.endpoints.get(&addr, 0), maps::ENDPOINTS)
    }

    fn network(&self, id: u32) -> Result<Option<NetworkInfo>> {
        found(self.networks.get(&id, 0), maps::NETWORKS)
    }

    fn port(&self, key: &PortKey) -> Result<Option<PortTarget>> {
        found(self.ports.get(key, 0), maps::PORTS)
    }

    fn is_local(&self, addr: u32) -> Result<bool> {
        Ok(found(self.local.get(&addr, 0), maps::LOCAL)?.is_some())
    }

    fn host_config(&self) -> Result<Option<HostConfig>> {
        found(self.config.get(&0, 0), maps::CONFIG)
    }

    fn service(&self, key: &ServiceKey) -> Result<Option<Service>> {
        found(self.services.get(key, 0), maps::SERVICES)
    }

    fn service_name(&self, svc: &Service) -> Result<Option<String>> {
        Ok(self
            .service_maps
            .region(svc)?
            .map(|(trailer, _)| trailer.name)
            .filter(|n| !n.is_empty()))
    }

    fn table(&self, index: u32) -> Result<Option<u32>> {
        found(self.tables.get(&index, 0), maps::TABLES)
    }

    fn backend(&self, id: u32) -> Result<Option<Backend>> {
        found(self.backends.get(&id, 0), maps::BACKENDS)
    }

    fn conns(&self, id: u32) -> Result<Option<BackendConns>> {
        found(self.conns.get(&id, 0), maps::BE_CONNS)
    }

    fn expired(&self, id: u32) -> Result<Option<u64>> {
        found(self.gc.get(&id, 0), maps::BE_GC)
    }

    fn rr_position(&self, service_id: u32) -> Result<Option<u64>> {
        found(self.rr.get(&service_id, 0), maps::SVC_RR)
    }

    fn affinity(&self, key: &AffinityKey) -> Result<Option<Affinity>> {
        found(self.affinity.get(key, 0), maps::AFFINITY)
    }

    fn conntrack(&self, key: &CtKey) -> Result<Option<CtEntry>> {
        found(self.ct.get(key, 0), maps::CT)
    }

    fn ifname(&self, ifindex: u32) -> Option<String> {
        ifname_of(ifindex)
    }
}

/// The name of an interface of the current network namespace.
pub fn ifname_of(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let ptr = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn ifindex_of(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated name; 0 means "no such interface".
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (ifindex != 0).then_some(ifindex)
}

/// Where the packet enters: the named container's veth, the container that has the
/// source address, or the uplink (its attached program: XDP runs first when both are).
pub fn resolve_origin(
    pins: &PinDir,
    maps: &PinnedMaps,
    sender: &Sender,
    packet: &Packet,
) -> Result<Origin> {
    match sender {
        Sender::Container(name) => match maps.container(name)? {
            Some((_, ep)) => Ok(Origin::Container {
                name: name.clone(),
                ifindex: ep.ifindex,
            }),
            None => Err(Error::BadArgument {
                what: "--from".to_owned(),
                message: format!("no container {name:?} is wired here"),
            }),
        },
        Sender::BySource => match maps.endpoint(addr_key(*packet.src.ip()))? {
            Some(ep) => Ok(Origin::Container {
                name: name_str(&ep.name).to_owned(),
                ifindex: ep.ifindex,
            }),
            None => uplink_origin(pins, maps),
        },
        Sender::Outside => uplink_origin(pins, maps),
    }
}

/// The uplink program a packet from outside meets: on the configured uplink
/// (`NB_CONFIG`), else on any interface with a pinned uplink link.
fn uplink_origin(pins: &PinDir, maps: &PinnedMaps) -> Result<Origin> {
    let configured = maps
        .host_config()?
        .filter(|c| c.uplink_ifindex != 0)
        .and_then(|c| ifname_of(c.uplink_ifindex).map(|name| (name, c.uplink_ifindex)));
    let candidates: Vec<(String, u32)> = match configured {
        Some(uplink) => vec![uplink],
        None => pins
            .pinned_links()?
            .iter()
            .filter_map(|p| link_iface(p))
            .filter_map(|name| ifindex_of(&name).map(|i| (name, i)))
            .collect(),
    };
    for (name, ifindex) in candidates {
        let xdp = pins.link(Hook::XdpUplink, &name).exists();
        let tc = pins.link(Hook::FromUplink, &name).exists();
        match (xdp, tc) {
            (true, tc) => {
                return Ok(Origin::Uplink {
                    hook: Hook::XdpUplink,
                    ifindex,
                    then_tc: tc,
                });
            }
            (false, true) => {
                return Ok(Origin::Uplink {
                    hook: Hook::FromUplink,
                    ifindex,
                    then_tc: false,
                });
            }
            (false, false) => {}
        }
    }
    Ok(Origin::NoUplink)
}

/// The interface of an uplink link pin (`from_uplink@IFACE`, `xdp_uplink@IFACE`).
fn link_iface(pin: &Path) -> Option<String> {
    let name = pin.file_name()?.to_str()?;
    let (hook, iface) = name.split_once('@')?;
    (hook == Hook::FromUplink.name() || hook == Hook::XdpUplink.name()).then(|| iface.to_owned())
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: the clock of `bpf_ktime_get_coarse_ns`, which
/// stamps affinity entries.
pub fn monotonic_coarse_ns() -> Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and out pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        return Err(Error::io(
            "clock_gettime(CLOCK_MONOTONIC_COARSE)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
