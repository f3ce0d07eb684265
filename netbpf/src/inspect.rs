//! What the pinned maps hold, as rows for `netbpf show` (tables and JSON). Reads only, and
//! nothing read refreshes an entry of an LRU map.

pub mod conntrack;
pub mod drops;
pub mod services;

pub use conntrack::conntrack;
pub use services::services;

use std::{collections::HashMap, ffi::CStr};

use netbpf_common::net::{NET_ICC, NET_INTERNAL, NET_MASQUERADE, name_str};
use serde::Serialize;

use crate::{
    Result,
    config::{model::format_mac, ports::Proto},
    kernel::{
        maps::{ContainerMaps, addr_key, addr_of},
        pins::PinDir,
    },
};

/// One network. Field names are the stable JSON keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkRow {
    pub name: String,
    pub id: u32,
    pub subnet: String,
    pub gateway: String,
    pub icc: bool,
    pub internal: bool,
    pub masquerade: bool,
    pub containers: usize,
}

/// One wired container. Field names are the stable JSON keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerRow {
    pub name: String,
    pub network: String,
    pub ip: String,
    pub mac: String,
    /// The host end of its veth.
    pub host_interface: String,
    pub ifindex: u32,
}

/// One published port, as `docker port` shows it. Field names are the stable JSON keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortRow {
    pub container: String,
    pub container_port: u16,
    pub proto: String,
    pub host_ip: String,
    pub host_port: u16,
}

pub fn ports(pins: &PinDir) -> Result<Vec<PortRow>> {
    let maps = ContainerMaps::open_pinned(pins)?;
    let names: HashMap<u32, String> = maps
        .endpoints()?
        .into_iter()
        .map(|(addr, ep)| (addr_key(addr), name_str(&ep.name).to_owned()))
        .collect();
    let mut rows: Vec<PortRow> = maps
        .ports()?
        .into_iter()
        .map(|(key, target)| PortRow {
            container: names
                .get(&target.addr)
                .cloned()
                .unwrap_or_else(|| addr_of(target.addr).to_string()),
            container_port: u16::from_be(target.port),
            proto: Proto::from_number(key.proto)
                .map_or_else(|| key.proto.to_string(), |p| p.to_string()),
            host_ip: addr_of(key.addr).to_string(),
            host_port: u16::from_be(key.port),
        })
        .collect();
    rows.sort_by(|a, b| {
        (&a.container, a.container_port, &a.proto, a.host_port).cmp(&(
            &b.container,
            b.container_port,
            &b.proto,
            b.host_port,
        ))
    });
    Ok(rows)
}

/// One direction of a translated flow. Field names are the stable JSON keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConntrackRow {
    pub proto: String,
    /// The packet's tuple as the program that handles this direction sees it.
    pub src: String,
    pub dst: String,
    /// published | published_reply | masquerade | masquerade_reply | hairpin |
    /// hairpin_reply | service | service_reply | service_reply_out
    pub kind: String,
    /// What the packet's destination (published, masquerade_reply) or source (the others)
    /// becomes.
    pub translated: String,
    pub tcp_state: String,
    pub packets: u64,
    /// Seconds since the last packet.
    pub idle_seconds: u64,
}

pub fn networks(pins: &PinDir) -> Result<Vec<NetworkRow>> {
    let maps = ContainerMaps::open_pinned(pins)?;
    let endpoints = maps.endpoints()?;
    let mut rows: Vec<NetworkRow> = maps
        .networks()?
        .into_iter()
        .map(|(id, n)| NetworkRow {
            name: name_str(&n.name).to_owned(),
            id,
            subnet: format!("{}/{}", addr_of(n.subnet), n.prefix_len),
            gateway: addr_of(n.gateway).to_string(),
            icc: n.flags & NET_ICC != 0,
            internal: n.flags & NET_INTERNAL != 0,
            masquerade: n.flags & NET_MASQUERADE != 0,
            containers: endpoints
                .iter()
                .filter(|(_, ep)| ep.network_id == id)
                .count(),
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

pub fn containers(pins: &PinDir) -> Result<Vec<ContainerRow>> {
    let maps = ContainerMaps::open_pinned(pins)?;
    let network_names: HashMap<u32, String> = maps
        .networks()?
        .into_iter()
        .map(|(id, n)| (id, name_str(&n.name).to_owned()))
        .collect();
    let mut rows: Vec<ContainerRow> = maps
        .endpoints()?
        .into_iter()
        .map(|(addr, ep)| ContainerRow {
            name: name_str(&ep.name).to_owned(),
            network: network_names
                .get(&ep.network_id)
                .cloned()
                .unwrap_or_else(|| format!("#{}", ep.network_id)),
            ip: addr.to_string(),
            mac: format_mac(&ep.mac),
            host_interface: ifname_of(ep.ifindex),
            ifindex: ep.ifindex,
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

fn ifname_of(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let ptr = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if ptr.is_null() {
        return "?".to_owned();
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// One virtual service, as `ipvsadm -Ln` shows it. Field names are the stable JSON keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceRow {
    pub name: String,
    pub vip: String,
    pub port: u16,
    /// tcp | udp
    pub protocol: String,
    pub scheduler: String,
    /// 0: no persistence.
    pub persistence_secs: u32,
    pub persistence_netmask: String,
    pub external: bool,
    pub backends: Vec<BackendRow>,
}

/// One backend of a service. Field names are the stable JSON keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendRow {
    pub address: String,
    pub port: u16,
    /// The weight in effect: 0 while drained or taken out by a health check.
    pub weight: u16,
    /// Connections open now: opened - closed - expired.
    pub active: u64,
    /// Connections closing but still tracked (ipvsadm's InActConn).
    pub inactive: u64,
    /// Connections scheduled to it since it got its id (ipvsadm's Conns).
    pub opened: u64,
    /// Packets and bytes of its flows, client to backend (in) and back (out), frames
    /// counted whole (ipvsadm's --stats).
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    /// The container at its address, if one is wired here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}
