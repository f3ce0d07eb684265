//! `netbpf explain`: what the datapath would do with one packet, and why, worked out from
//! the pinned maps without sending anything and without writing to any map.
//!
//! - [`decide`]: the decision itself, a pure function of a packet, where it enters and a
//!   [`Maps`] reader; it follows the programs' order of checks step by step.
//! - [`pinned`]: [`Maps`] over the pinned maps (lookups only: a lookup from user space
//!   leaves an LRU map's eviction order alone), and which program sees the packet.
//! - [`text`]: the human rendering; `-o json` serializes [`Explanation`] as it is.

pub mod decide;
pub mod pinned;
pub mod text;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddrV4};

use netbpf_common::{
    conntrack::{CtEntry, CtKey, HostConfig},
    net::{EndpointInfo, IfaceInfo, NetworkInfo, PeerInfo},
    ports::{PortKey, PortTarget},
    service::{Affinity, AffinityKey, Backend, BackendConns, Service, ServiceKey},
};
use serde::Serialize;

use crate::{Error, Result, cli::Output, kernel::pins::PinDir};

/// What the decision reads: one lookup per call, as the programs do. `None`: no entry
/// (for arrays: an index past the end).
pub trait Maps {
    /// `NB_IFACES` (ifindex below `IFACE_SLOTS`) or `NB_IFACES_BIG`.
    fn iface(&self, ifindex: u32) -> Result<Option<IfaceInfo>>;
    fn peer(&self, slot: u32) -> Result<Option<PeerInfo>>;
    fn endpoint(&self, addr: u32) -> Result<Option<EndpointInfo>>;
    fn network(&self, id: u32) -> Result<Option<NetworkInfo>>;
    fn port(&self, key: &PortKey) -> Result<Option<PortTarget>>;
    fn is_local(&self, addr: u32) -> Result<bool>;
    fn host_config(&self) -> Result<Option<HostConfig>>;
    fn service(&self, key: &ServiceKey) -> Result<Option<Service>>;
    /// The service's name, from user space's trailer of its region (not the datapath's).
    fn service_name(&self, svc: &Service) -> Result<Option<String>>;
    fn table(&self, index: u32) -> Result<Option<u32>>;
    fn backend(&self, id: u32) -> Result<Option<Backend>>;
    fn conns(&self, id: u32) -> Result<Option<BackendConns>>;
    /// `NB_BE_GC`: connections the agent expired.
    fn expired(&self, id: u32) -> Result<Option<u64>>;
    /// `NB_SVC_RR`: the service's round-robin position.
    fn rr_position(&self, service_id: u32) -> Result<Option<u64>>;
    fn affinity(&self, key: &AffinityKey) -> Result<Option<Affinity>>;
    fn conntrack(&self, key: &CtKey) -> Result<Option<CtEntry>>;
    /// The interface's name, if it has one here (user space only).
    fn ifname(&self, ifindex: u32) -> Option<String>;
}

/// The packet to explain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub proto: Protocol,
    /// For ICMP (an echo request) the source port is the echo identifier, the destination
    /// port 0.
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// TCP flags (`TCP_*` bits); 0 for UDP and ICMP.
    pub tcp_flags: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// An ICMP echo request (its identifier in the source port).
    Icmp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

const TCP_FLAG_NAMES: [(u8, &str); 6] = [
    (TCP_SYN, "syn"),
    (TCP_ACK, "ack"),
    (TCP_FIN, "fin"),
    (TCP_RST, "rst"),
    (TCP_PSH, "psh"),
    (TCP_URG, "urg"),
];

/// `syn,ack` -> the flag bits; `none` is no flag.
pub fn parse_tcp_flags(text: &str) -> std::result::Result<u8, String> {
    if text.trim() == "none" {
        return Ok(0);
    }
    text.split(',').try_fold(0u8, |flags, name| {
        let name = name.trim().to_ascii_lowercase();
        TCP_FLAG_NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(bit, _)| flags | bit)
            .ok_or_else(|| {
                format!("{name:?} is no TCP flag (syn, ack, fin, rst, psh, urg, or none)")
            })
    })
}

/// The flag bits as `syn,ack` (`none` for none).
pub fn tcp_flags_name(flags: u8) -> String {
    let names: Vec<&str> = TCP_FLAG_NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(",")
    }
}

/// `ADDR:PORT`, or `ADDR` alone (ICMP; the port is then absent).
pub fn parse_endpoint(text: &str) -> std::result::Result<(Ipv4Addr, Option<u16>), String> {
    let (addr, port) = match text.rsplit_once(':') {
        Some((addr, port)) => (addr, Some(port)),
        None => (text, None),
    };
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port (0-65535)"))
        })
        .transpose()?;
    Ok((addr, port))
}

/// Where the packet enters the datapath, as resolved against the pinned state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Leaving a container: `from_container` on its host-side veth.
    Container { name: String, ifindex: u32 },
    /// Arriving from outside on the uplink, seen by `hook` (from_uplink or xdp_uplink).
    Uplink {
        hook: netbpf_common::stats::Hook,
        ifindex: u32,
        /// The other uplink program is attached too and sees what this one passes.
        then_tc: bool,
    },
    /// From outside, with no uplink program attached: netbpf never sees it.
    NoUplink,
}

/// What the datapath would do with the packet. Field names are the stable JSON keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub packet: PacketRow,
    /// `container NAME` or `outside`.
    pub from: String,
    /// from_container | from_uplink | xdp_uplink; null when no program sees the packet.
    pub program: Option<&'static str>,
    /// The interface the program runs on.
    pub interface: Option<Interface>,
    /// The lookups and checks in the order the program makes them.
    pub steps: Vec<Step>,
    /// The outcome the program would count (`netbpf show stats`); null: no program.
    pub outcome: Option<&'static str>,
    /// One line on what the outcome means.
    pub meaning: Option<&'static str>,
    pub drop: bool,
    /// The recorded flow the packet belongs to, if one is (the entry it follows).
    pub conntrack: Option<FlowRow>,
    /// The virtual service at the destination, if the packet is a new flow to one.
    pub service: Option<ServiceHit>,
    /// The backend that takes the packet (the scheduler's choice, persistence, or the
    /// flow's recorded one). Null for the random scheduler: see `candidates`.
    pub backend: Option<BackendChoice>,
    /// rr..mh: empty. random: every backend the draw may give.
    pub candidates: Vec<BackendChoice>,
    /// The packet's addresses as it leaves, if translated. A port `*` is taken when the
    /// flow starts (masquerade, hairpin): any free one of the range.
    pub translation: Option<Translation>,
    /// Where it goes; null for a drop.
    pub delivery: Option<Delivery>,
    /// What the real packet would change (this command changes nothing).
    pub effects: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PacketRow {
    /// tcp | udp | icmp
    pub proto: String,
    pub src: String,
    pub dst: String,
    /// `syn,ack`..., `none`; null for UDP and ICMP.
    pub tcp_flags: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: Option<String>,
    pub ifindex: u32,
}

/// One lookup or check: `stage` a stable word, `detail` a sentence.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Step {
    pub stage: &'static str,
    pub detail: String,
}

/// A conntrack entry (one direction of a translated flow).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowRow {
    pub src: String,
    pub dst: String,
    /// As in `show conntrack`.
    pub kind: &'static str,
    pub translated: String,
    pub tcp_state: &'static str,
    pub packets: u64,
    /// For service kinds: the backend's id.
    pub backend_id: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceHit {
    pub name: Option<String>,
    pub id: u32,
    pub vip: String,
    pub port: u16,
    pub scheduler: String,
    /// Selectable backends.
    pub count: u16,
    pub table_len: u32,
    pub persistence_secs: u32,
    pub external: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackendChoice {
    pub id: u32,
    pub address: String,
    pub port: u16,
    pub weight: u16,
    pub container: Option<String>,
    /// conntrack | persistence | rr | wrr | lc | wlc | sh | dh | mh | random
    pub chosen_by: &'static str,
    /// rr, wrr, sh, dh, mh: the scheduling table's entry that names it.
    pub slot: Option<u32>,
    /// lc, wlc: its active connections (opened - closed - expired).
    pub active: Option<u64>,
    /// random: how many of the table's entries name it.
    pub table_entries: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Translation {
    /// `ADDR:PORT` as the packet leaves; null when not known before the draw (random).
    pub src: Option<String>,
    pub dst: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// redirect_peer (into the container behind a host-side veth), redirect (out of an
    /// interface; XDP: to it), redirect_neigh (out of the uplink, next hop resolved by the
    /// kernel), xdp_tx (back out of the uplink), stack (the kernel's own path).
    pub via: &'static str,
    pub ifindex: Option<u32>,
    pub interface: Option<String>,
    /// The container it reaches, if one.
    pub container: Option<String>,
}

/// `netbpf explain`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// tcp, udp, or icmp (an echo request; its identifier as the source port).
    #[arg(value_enum)]
    pub proto: Protocol,
    /// Source ADDR:PORT (ICMP: ADDR or ADDR:ID).
    #[arg(value_parser = parse_endpoint, value_name = "SRC:PORT")]
    pub src: (Ipv4Addr, Option<u16>),
    /// Destination ADDR:PORT (ICMP: ADDR).
    #[arg(value_parser = parse_endpoint, value_name = "DST:PORT")]
    pub dst: (Ipv4Addr, Option<u16>),
    /// The packet leaves this container [default: the container with the source address,
    /// else from outside].
    #[arg(long, value_name = "CONTAINER", conflicts_with = "from_outside")]
    pub from: Option<String>,
    /// The packet arrives from outside, on the uplink.
    #[arg(long)]
    pub from_outside: bool,
    /// TCP flags of the packet, comma-separated: syn, ack, fin, rst, psh, urg, or none.
    #[arg(long, value_parser = parse_tcp_flags, default_value = "syn", value_name = "FLAGS")]
    pub tcp_flags: u8,
    /// table: a few lines for people; json: one object with stable keys.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Where the user says the packet comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sender {
    Container(String),
    Outside,
    /// The container whose address the source is, else outside.
    BySource,
}

impl ExplainArgs {
    /// The packet as the user described it, checked.
    pub fn packet(&self) -> Result<Packet> {
        let bad = |what: &str, message: String| Error::BadArgument {
            what: what.to_owned(),
            message,
        };
        let (src, sport) = self.src;
        let (dst, dport) = self.dst;
        let (sport, dport) = match self.proto {
            Protocol::Tcp | Protocol::Udp => (
                sport.ok_or_else(|| {
                    bad(
                        "SRC",
                        format!("{src} needs a port for {}", self.proto.name()),
                    )
                })?,
                dport.ok_or_else(|| {
                    bad(
                        "DST",
                        format!("{dst} needs a port for {}", self.proto.name()),
                    )
                })?,
            ),
            Protocol::Icmp => {
                if dport.is_some_and(|p| p != 0) {
                    return Err(bad(
                        "DST",
                        "an ICMP echo request has no destination port (give ADDR)".to_owned(),
                    ));
                }
                (sport.unwrap_or(0), 0)
            }
        };
        let tcp_flags = match self.proto {
            Protocol::Tcp => self.tcp_flags,
            _ => 0,
        };
        Ok(Packet {
            proto: self.proto,
            src: SocketAddrV4::new(src, sport),
            dst: SocketAddrV4::new(dst, dport),
            tcp_flags,
        })
    }

    pub fn sender(&self) -> Sender {
        match (&self.from, self.from_outside) {
            (Some(name), _) => Sender::Container(name.clone()),
            (None, true) => Sender::Outside,
            (None, false) => Sender::BySource,
        }
    }
}

/// Runs `netbpf explain` against the maps pinned under `pins` and prints the result.
pub fn command(pins: &PinDir, args: &ExplainArgs) -> Result<()> {
    let packet = args.packet()?;
    let maps = pinned::PinnedMaps::open(pins)?;
    let origin = pinned::resolve_origin(pins, &maps, &args.sender(), &packet)?;
    let (now_ns, ticks) = (
        pinned::monotonic_coarse_ns()?,
        crate::kernel::clock::jiffies()?,
    );
    let explanation = decide::explain(&maps, &packet, &origin, now_ns, ticks)?;
    match args.output {
        Output::Table => print!("{}", text::render(&explanation)),
        Output::Json => println!("{}", json(&explanation)),
    }
    Ok(())
}

/// The explanation as pretty JSON (one object).
pub fn json(explanation: &Explanation) -> String {
    // Plain structs of strings, integers and options: serializing cannot fail.
    serde_json::to_string_pretty(explanation).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
