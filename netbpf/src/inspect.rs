//! What the pinned maps hold, as rows for `netbpf show` (tables and JSON). Reads only.

use std::{collections::HashMap, ffi::CStr};

use netbpf_common::net::{NET_ICC, NET_INTERNAL, NET_MASQUERADE, name_str};
use serde::Serialize;

use crate::{
    Result,
    agent::services::Current,
    config::{model::format_mac, ports::Proto},
    kernel::{
        maps::{ContainerMaps, addr_key, addr_of},
        pins::PinDir,
        services::ServiceMaps,
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

/// The conntrack table, read without refreshing any entry (syscall lookups of an LRU map
/// do not mark entries as used).
pub fn conntrack(pins: &PinDir) -> Result<Vec<ConntrackRow>> {
    use netbpf_common::conntrack::{
        CT_HAIRPIN, CT_HAIRPIN_REPLY, CT_MASQ_OUT, CT_MASQ_REPLY, CT_PUBLISHED_IN,
        CT_PUBLISHED_REPLY, CT_SERVICE, CT_SERVICE_REPLY, CT_SERVICE_REPLY_OUT, TCP_CLOSING,
        TCP_ESTABLISHED, TCP_SYN_SENT,
    };
    let err = |source| crate::Error::Map {
        map: netbpf_common::maps::CT,
        source,
    };
    let table =
        crate::kernel::conntrack::open_table(pins)?.ok_or_else(|| crate::Error::NotAttached {
            pin_dir: pins.path().to_owned(),
        })?;
    let clock = crate::kernel::conntrack::clock(pins)?;
    let mut rows = Vec::new();
    for item in table.iter() {
        let (k, e) = item.map_err(err)?;
        let proto =
            Proto::from_number(k.proto).map_or_else(|| k.proto.to_string(), |p| p.to_string());
        let endpoint = |addr: u32, port: u16| format!("{}:{}", addr_of(addr), u16::from_be(port));
        rows.push(ConntrackRow {
            proto,
            src: endpoint(k.saddr, k.sport),
            dst: endpoint(k.daddr, k.dport),
            kind: match e.kind {
                CT_PUBLISHED_IN => "published",
                CT_PUBLISHED_REPLY => "published_reply",
                CT_MASQ_OUT => "masquerade",
                CT_MASQ_REPLY => "masquerade_reply",
                CT_HAIRPIN => "hairpin",
                CT_HAIRPIN_REPLY => "hairpin_reply",
                CT_SERVICE => "service",
                CT_SERVICE_REPLY => "service_reply",
                CT_SERVICE_REPLY_OUT => "service_reply_out",
                _ => "unknown",
            }
            .to_owned(),
            translated: endpoint(e.nat_addr, e.nat_port),
            tcp_state: match e.tcp_state {
                TCP_SYN_SENT => "syn_sent",
                TCP_ESTABLISHED => "established",
                TCP_CLOSING => "closing",
                _ => "-",
            }
            .to_owned(),
            packets: e.packets,
            idle_seconds: clock.since(e.last_seen).as_secs(),
        });
    }
    rows.sort_by(|a, b| (&a.src, &a.dst, &a.kind).cmp(&(&b.src, &b.dst, &b.kind)));
    Ok(rows)
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

/// Every service with its backends and their connection counts.
pub fn services(pins: &PinDir) -> Result<Vec<ServiceRow>> {
    use netbpf_common::{
        conntrack::{CT_SERVICE, TCP_CLOSING},
        service::{SVC_EXTERNAL, Scheduler},
    };
    let maps = ServiceMaps::open_pinned(pins)?;
    let current = Current::read(&maps)?;
    let names: HashMap<u32, String> = ContainerMaps::open_pinned(pins)?
        .endpoints()?
        .into_iter()
        .map(|(addr, ep)| (addr_key(addr), name_str(&ep.name).to_owned()))
        .collect();
    // Flows closing but not yet gone, per backend.
    let mut closing: HashMap<u32, u64> = HashMap::new();
    if let Some(table) = crate::kernel::conntrack::open_table(pins)? {
        for (_, e) in table.iter().filter_map(|e| e.ok()) {
            if e.kind == CT_SERVICE && e.tcp_state == TCP_CLOSING {
                *closing.entry(e.backend_id).or_default() += 1;
            }
        }
    }
    let mut rows = Vec::new();
    for (key, (svc, region)) in &current.frontends {
        let mut backends = Vec::new();
        let mut ours: Vec<(&u32, &netbpf_common::service::Backend)> = current
            .backends
            .iter()
            .filter(|(_, b)| b.service_id == svc.id)
            .collect();
        ours.sort_by_key(|(_, b)| (addr_of(b.addr), u16::from_be(b.port)));
        for (id, b) in ours {
            let c = maps.counts(*id)?;
            backends.push(BackendRow {
                address: addr_of(b.addr).to_string(),
                port: u16::from_be(b.port),
                weight: b.weight,
                active: c
                    .conns
                    .opened
                    .saturating_sub(c.conns.closed)
                    .saturating_sub(c.expired),
                inactive: closing.get(id).copied().unwrap_or(0),
                opened: c.conns.opened,
                in_packets: c.traffic.in_packets,
                out_packets: c.traffic.out_packets,
                in_bytes: c.traffic.in_bytes,
                out_bytes: c.traffic.out_bytes,
                container: names.get(&b.addr).cloned(),
            });
        }
        rows.push(ServiceRow {
            name: region
                .as_ref()
                .map(|(t, _)| t.name.clone())
                .unwrap_or_default(),
            vip: addr_of(key.vip).to_string(),
            port: u16::from_be(key.port),
            protocol: Proto::from_number(key.proto)
                .map_or_else(|| key.proto.to_string(), |p| p.to_string()),
            scheduler: Scheduler::from_u8(svc.scheduler)
                .map_or_else(|| format!("#{}", svc.scheduler), |s| s.name().to_owned()),
            persistence_secs: svc.persistence_secs,
            persistence_netmask: addr_of(svc.persistence_mask).to_string(),
            external: svc.flags & SVC_EXTERNAL != 0,
            backends,
        });
    }
    rows.sort_by_key(|r| {
        (
            r.vip.parse::<std::net::Ipv4Addr>().ok(),
            r.port,
            r.protocol.clone(),
        )
    });
    Ok(rows)
}
