//! The conntrack table as `show conntrack` lists it: every direction of every translated
//! flow, read in bulk without refreshing any entry (see [`crate::kernel::batch::lookup_hash`]),
//! filtered by source, destination, service and protocol before anything is formatted.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use netbpf_common::{
    conntrack::{
        CT_SERVICE, CT_SERVICE_REPLY, CT_SERVICE_REPLY_OUT, CtEntry, CtKey, TCP_CLOSING,
        TCP_ESTABLISHED, TCP_SYN_SENT, kind_name,
    },
    maps,
    service::ServiceKey,
};

use super::ConntrackRow;
use crate::{
    Error, Result,
    config::ports::Proto,
    kernel::{
        conntrack::{clock, open_table},
        dump,
        maps::{addr_key, addr_of},
        pins::PinDir,
    },
};

/// `ADDR` or `ADDR:PORT`, as `--src` and `--dst` take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    pub port: Option<u16>,
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (addr, port) = match s.split_once(':') {
            Some((addr, port)) => (
                addr,
                Some(
                    port.parse::<u16>()
                        .map_err(|_| format!("{port:?} is not a port (0 to 65535)"))?,
                ),
            ),
            None => (s, None),
        };
        let addr = addr
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("{addr:?} is not an IPv4 address (expected ADDR or ADDR:PORT)"))?;
        Ok(Endpoint { addr, port })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl Endpoint {
    /// Whether a map key's (address, port), both in network byte order, match.
    fn matches(&self, addr: u32, port: u16) -> bool {
        addr == addr_key(self.addr) && self.port.is_none_or(|p| p == u16::from_be(port))
    }
}

/// Which rows `show conntrack` keeps. Each row is one direction of a flow: `src` and `dst`
/// match the row's own tuple; `service` keeps both directions of the service's flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub src: Option<Endpoint>,
    pub dst: Option<Endpoint>,
    /// IP protocol number.
    pub proto: Option<u8>,
    pub service: Option<ServiceKey>,
}

impl Filter {
    pub fn matches(&self, k: &CtKey, e: &CtEntry) -> bool {
        self.src.is_none_or(|s| s.matches(k.saddr, k.sport))
            && self.dst.is_none_or(|d| d.matches(k.daddr, k.dport))
            && self.proto.is_none_or(|p| p == k.proto)
            && self.service.is_none_or(|s| of_service(&s, k, e))
    }
}

/// Whether a flow direction belongs to a service: the client's direction goes to its
/// VIP and port, the backend's replies leave as them.
fn of_service(svc: &ServiceKey, k: &CtKey, e: &CtEntry) -> bool {
    if k.proto != svc.proto {
        return false;
    }
    match e.kind {
        CT_SERVICE => (k.daddr, k.dport) == (svc.vip, svc.port),
        CT_SERVICE_REPLY | CT_SERVICE_REPLY_OUT => (e.nat_addr, e.nat_port) == (svc.vip, svc.port),
        _ => false,
    }
}

fn tcp_state_name(state: u8) -> &'static str {
    match state {
        TCP_SYN_SENT => "syn_sent",
        TCP_ESTABLISHED => "established",
        TCP_CLOSING => "closing",
        _ => "-",
    }
}

/// The flows the filter keeps, ordered by source, destination (address, then port),
/// protocol and kind.
pub fn conntrack(pins: &PinDir, filter: &Filter) -> Result<Vec<ConntrackRow>> {
    let table = open_table(pins)?.ok_or_else(|| Error::NotAttached {
        pin_dir: pins.path().to_owned(),
    })?;
    let clock = clock(pins)?;
    let mut entries: Vec<(CtKey, CtEntry)> = dump::hash_entries(&table, maps::CT)?
        .into_iter()
        .filter(|(k, e)| filter.matches(k, e))
        .collect();
    entries.sort_unstable_by_key(|(k, e)| {
        (
            addr_of(k.saddr),
            u16::from_be(k.sport),
            addr_of(k.daddr),
            u16::from_be(k.dport),
            k.proto,
            e.kind,
        )
    });
    let endpoint = |addr: u32, port: u16| format!("{}:{}", addr_of(addr), u16::from_be(port));
    Ok(entries
        .iter()
        .map(|(k, e)| ConntrackRow {
            proto: Proto::from_number(k.proto)
                .map_or_else(|| k.proto.to_string(), |p| p.to_string()),
            src: endpoint(k.saddr, k.sport),
            dst: endpoint(k.daddr, k.dport),
            kind: kind_name(e.kind).to_owned(),
            translated: endpoint(e.nat_addr, e.nat_port),
            tcp_state: tcp_state_name(e.tcp_state).to_owned(),
            packets: e.packets,
            idle_seconds: clock.since(e.last_seen).as_secs(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use netbpf_common::conntrack::CT_PUBLISHED_IN;

    use super::*;

    fn key(s: [u8; 4], sp: u16, d: [u8; 4], dp: u16, proto: u8) -> CtKey {
        CtKey {
            saddr: u32::from_ne_bytes(s),
            daddr: u32::from_ne_bytes(d),
            sport: sp.to_be(),
            dport: dp.to_be(),
            proto,
            pad: [0; 3],
        }
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            "198.18.0.2".parse::<Endpoint>(),
            Ok(Endpoint {
                addr: Ipv4Addr::new(198, 18, 0, 2),
                port: None
            })
        );
        assert_eq!(
            "198.18.0.2:8080".parse::<Endpoint>().map(|e| e.to_string()),
            Ok("198.18.0.2:8080".to_owned())
        );
        assert!("198.18.0.2:http".parse::<Endpoint>().is_err());
        assert!("198.18.0.2:70000".parse::<Endpoint>().is_err());
        assert!("web1".parse::<Endpoint>().is_err());
    }

    #[test]
    fn filters_match_the_rows_tuple() {
        let forward = key([198, 18, 0, 2], 40000, [198, 18, 0, 1], 8080, 6);
        let e = CtEntry {
            kind: CT_PUBLISHED_IN,
            ..CtEntry::default()
        };
        let src = |s: &str| Filter {
            src: Some(s.parse().expect("endpoint")),
            ..Filter::default()
        };
        assert!(Filter::default().matches(&forward, &e));
        assert!(src("198.18.0.2").matches(&forward, &e));
        assert!(src("198.18.0.2:40000").matches(&forward, &e));
        assert!(!src("198.18.0.2:40001").matches(&forward, &e));
        assert!(!src("198.18.0.1").matches(&forward, &e));
        let dst = Filter {
            dst: Some("198.18.0.1:8080".parse().expect("endpoint")),
            proto: Some(6),
            ..Filter::default()
        };
        assert!(dst.matches(&forward, &e));
        assert!(
            !Filter {
                proto: Some(17),
                ..dst
            }
            .matches(&forward, &e)
        );
    }

    #[test]
    fn a_service_keeps_both_directions_of_its_flows() {
        let vip = [198, 18, 200, 10];
        let svc = ServiceKey {
            vip: u32::from_ne_bytes(vip),
            port: 80u16.to_be(),
            proto: 6,
            pad: 0,
        };
        let only = Filter {
            service: Some(svc),
            ..Filter::default()
        };
        let forward = key([198, 18, 10, 2], 40000, vip, 80, 6);
        let to_backend = CtEntry {
            kind: CT_SERVICE,
            nat_addr: u32::from_ne_bytes([198, 18, 10, 3]),
            nat_port: 8080u16.to_be(),
            ..CtEntry::default()
        };
        let reply = key([198, 18, 10, 3], 8080, [198, 18, 10, 2], 40000, 6);
        let from_vip = CtEntry {
            kind: CT_SERVICE_REPLY,
            nat_addr: svc.vip,
            nat_port: svc.port,
            ..CtEntry::default()
        };
        assert!(only.matches(&forward, &to_backend));
        assert!(only.matches(&reply, &from_vip));
        // Another port of the VIP, another protocol, or a published flow: not the service.
        let other = key([198, 18, 10, 2], 40000, vip, 81, 6);
        assert!(!only.matches(&other, &to_backend));
        let udp = key([198, 18, 10, 2], 40000, vip, 80, 17);
        assert!(!only.matches(&udp, &to_backend));
        let published = CtEntry {
            kind: CT_PUBLISHED_IN,
            ..to_backend
        };
        assert!(!only.matches(&forward, &published));
    }
}
