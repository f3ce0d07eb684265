//! The datapath's decision for one packet, worked out from lookups alone. Each function
//! here mirrors one of the kernel programs' (netbpf-ebpf/src: `container::handle`,
//! `uplink::handle`, `service::open_flow` and `schedule`, `conntrack::lookup`, `create`
//! and `claim`), in the same order of checks, and records each lookup as a [`Step`].
//! Where the program would write (a conntrack entry, a counter, the round-robin
//! position, an affinity), this only notes it in `effects`; nothing is written. What a
//! lookup cannot tell (which port a new translation takes, the random scheduler's draw)
//! is said as such.

use netbpf_common::{
    conntrack::{
        CT_HAIRPIN, CT_HAIRPIN_REPLY, CT_MASQ_OUT, CT_MASQ_REPLY, CT_PUBLISHED_IN,
        CT_PUBLISHED_REPLY, CT_SERVICE, CT_SERVICE_REPLY, CT_SERVICE_REPLY_OUT, CtEntry, CtKey,
        HostConfig, MASQ_REPLY_CHECK_TICKS, TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN_SENT, kind_name,
        partner, reply_check_due,
    },
    net::{
        IFACE_NAT_TARGET, IFACE_SLOTS, IfaceInfo, NET_ICC, NET_INTERNAL, NET_MASQUERADE,
        NO_PEER_SLOTS, name_str,
    },
    ports::{PortKey, PortTarget},
    service::{
        AffinityKey, Backend, MAX_SERVICE_BACKENDS, SVC_EXTERNAL, Scheduler, Service, ServiceKey,
        flow_hash,
    },
    stats::{Hook, Outcome},
};

use super::{
    BackendChoice, Delivery, Explanation, FlowRow, Interface, Maps, Origin, Packet, PacketRow,
    Protocol, ServiceHit, Step, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Translation, tcp_flags_name,
};
use crate::{
    Result,
    kernel::maps::{addr_key, addr_of},
};

/// What the datapath would do with `packet` entering at `origin`. `now_ns` is
/// CLOCK_MONOTONIC_COARSE now (the clock of affinity entries), `ticks` the kernel's
/// jiffies now (the clock of conntrack entries).
pub fn explain<M: Maps>(
    maps: &M,
    packet: &Packet,
    origin: &Origin,
    now_ns: u64,
    ticks: u64,
) -> Result<Explanation> {
    let mut run = Run {
        maps,
        tuple: Tuple::of(packet),
        tcp_flags: packet.tcp_flags,
        now_ns,
        ticks,
        forgotten: Vec::new(),
        out: Explanation {
            packet: PacketRow {
                proto: packet.proto.name().to_owned(),
                src: packet.src.to_string(),
                dst: packet.dst.to_string(),
                tcp_flags: (packet.proto == Protocol::Tcp)
                    .then(|| tcp_flags_name(packet.tcp_flags)),
            },
            ..Explanation::default()
        },
    };
    match origin {
        Origin::Container { name, ifindex } => {
            run.out.from = format!("container {name}");
            run.container_path(*ifindex)?;
        }
        Origin::Uplink {
            hook,
            ifindex,
            then_tc,
        } => {
            run.out.from = "outside".to_owned();
            run.uplink_path(*hook, *ifindex, *then_tc)?;
        }
        Origin::NoUplink => {
            run.out.from = "outside".to_owned();
            run.step(
                "uplink",
                "no uplink program is attached: netbpf does not see the packet, the kernel's \
                 own path handles it",
            );
            run.out.delivery = Some(Delivery {
                via: "stack",
                ..Delivery::default()
            });
        }
    }
    Ok(run.out)
}

/// The packet's tuple as the programs hold it: addresses and ports in network byte order.
#[derive(Clone, Copy, Debug)]
struct Tuple {
    proto: u8,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
}

impl Tuple {
    fn of(p: &Packet) -> Tuple {
        Tuple {
            proto: p.proto.number(),
            saddr: addr_key(*p.src.ip()),
            daddr: addr_key(*p.dst.ip()),
            // An ICMP echo request: the identifier as the source port, 0 as the other.
            sport: p.src.port().to_be(),
            dport: p.dst.port().to_be(),
        }
    }

    fn key(&self, saddr: u32, daddr: u32) -> CtKey {
        CtKey {
            saddr,
            daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            pad: [0; 3],
        }
    }
}

/// `ADDR:PORT` of a map's address and port.
fn ep(addr: u32, port: u16) -> String {
    format!("{}:{}", addr_of(addr), u16::from_be(port))
}

fn tcp_state_name(state: u8) -> &'static str {
    match state {
        TCP_SYN_SENT => "syn_sent",
        TCP_ESTABLISHED => "established",
        TCP_CLOSING => "closing",
        _ => "-",
    }
}

fn key_text(proto: u8, key: &CtKey) -> String {
    let proto = match proto {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        _ => "?",
    };
    format!(
        "{proto} {} -> {}",
        ep(key.saddr, key.sport),
        ep(key.daddr, key.dport)
    )
}

/// What opening a flow's entries would do (`conntrack::create` / `claim`).
enum Created {
    New,
    /// The forward key is recorded already: the packet follows that entry.
    Existing(CtEntry),
    /// The reply key is another flow's, and no entry of this flow exists.
    Failed,
}

/// What a new flow to a service gets (`service::NewFlow`, and the random case).
enum NewFlow {
    Open {
        entry: CtEntry,
        backend: BackendChoice,
    },
    /// random: one of these, drawn per flow.
    Random(Vec<(BackendChoice, u32)>),
    Refused,
    Failed,
}

struct Run<'m, M: Maps> {
    maps: &'m M,
    tuple: Tuple,
    tcp_flags: u8,
    now_ns: u64,
    ticks: u64,
    /// Entries this packet would remove before a later lookup (a SYN on a closing flow, a
    /// removed backend's flow): later lookups must not find them.
    forgotten: Vec<CtKey>,
    out: Explanation,
}

impl<M: Maps> Run<'_, M> {
    fn step(&mut self, stage: &'static str, detail: impl Into<String>) {
        self.out.steps.push(Step {
            stage,
            detail: detail.into(),
        });
    }

    fn effect(&mut self, effect: impl Into<String>) {
        self.out.effects.push(effect.into());
    }

    fn syn_only(&self) -> bool {
        self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    fn interface(&self, ifindex: u32) -> Interface {
        Interface {
            name: self.maps.ifname(ifindex),
            ifindex,
        }
    }

    fn container_name(&self, addr: u32) -> Result<Option<String>> {
        Ok(self
            .maps
            .endpoint(addr)?
            .map(|ep| name_str(&ep.name).to_owned()))
    }

    fn network_name(&self, id: u32) -> Result<String> {
        Ok(self
            .maps
            .network(id)?
            .map_or_else(|| format!("#{id}"), |n| name_str(&n.name).to_owned()))
    }

    fn finish(&mut self, outcome: Outcome) {
        self.out.outcome = Some(outcome.name());
        self.out.meaning = Some(outcome.meaning());
        self.out.drop = outcome.is_drop();
    }

    fn drop(&mut self, outcome: Outcome) -> Result<()> {
        self.finish(outcome);
        self.out.delivery = None;
        Ok(())
    }

    fn pass(&mut self) -> Result<()> {
        self.finish(Outcome::Pass);
        self.out.delivery = Some(Delivery {
            via: "stack",
            ..Delivery::default()
        });
        Ok(())
    }

    fn delivery(&self, via: &'static str, ifindex: u32, container: Option<String>) -> Delivery {
        Delivery {
            via,
            ifindex: Some(ifindex),
            interface: self.maps.ifname(ifindex),
            container,
        }
    }

    fn translate(&mut self, src: (u32, u16), dst: (u32, u16)) {
        self.out.translation = Some(Translation {
            src: Some(ep(src.0, src.1)),
            dst: Some(ep(dst.0, dst.1)),
        });
    }

    /// A copy of an entry, without touching it (`conntrack::get`).
    fn ct_get(&self, key: &CtKey) -> Result<Option<CtEntry>> {
        if self.forgotten.contains(key) {
            return Ok(None);
        }
        self.maps.conntrack(key)
    }

    /// `conntrack::forget`: both directions.
    fn forget(&mut self, key: &CtKey, e: &CtEntry) {
        let other = partner(key, e);
        self.effect(format!(
            "NB_CT: {} and its other direction {} removed",
            key_text(key.proto, key),
            key_text(other.proto, &other)
        ));
        self.forgotten.push(other);
        self.forgotten.push(*key);
    }

    fn flow_row(key: &CtKey, e: &CtEntry) -> FlowRow {
        FlowRow {
            src: ep(key.saddr, key.sport),
            dst: ep(key.daddr, key.dport),
            kind: kind_name(e.kind),
            translated: ep(e.nat_addr, e.nat_port),
            tcp_state: tcp_state_name(e.tcp_state),
            packets: e.packets,
            backend_id: e.backend_id,
        }
    }

    /// `conntrack::lookup`: the entry of the packet's tuple, refreshed; a TCP SYN on a
    /// closing entry forgets the flow and finds nothing.
    fn ct_lookup(&mut self, key: &CtKey) -> Result<Option<CtEntry>> {
        let Some(e) = self.ct_get(key)? else {
            self.step(
                "conntrack",
                format!("NB_CT {}: no recorded flow", key_text(key.proto, key)),
            );
            return Ok(None);
        };
        if self.tcp_flags & TCP_SYN != 0 && e.tcp_state == TCP_CLOSING {
            self.step(
                "conntrack",
                format!(
                    "NB_CT {}: a {} flow, closing; a SYN (or SYN-ACK) reuses its tuple: the \
                     flow is forgotten (both directions, its port freed) and starts anew",
                    key_text(key.proto, key),
                    kind_name(e.kind)
                ),
            );
            self.forget(key, &e);
            return Ok(None);
        }
        self.step(
            "conntrack",
            format!(
                "NB_CT {}: a recorded {} flow ({}, {} packets, to {})",
                key_text(key.proto, key),
                kind_name(e.kind),
                tcp_state_name(e.tcp_state),
                e.packets,
                ep(e.nat_addr, e.nat_port)
            ),
        );
        let closes = self.tcp_flags & (TCP_FIN | TCP_RST) != 0;
        let mut effect = format!(
            "NB_CT {}: last seen now, packets {} -> {}",
            key_text(key.proto, key),
            e.packets,
            e.packets.wrapping_add(1)
        );
        if closes && e.tcp_state != TCP_CLOSING {
            effect += ", state -> closing";
            if e.kind == CT_SERVICE {
                effect += &format!(" (NB_BE_CONNS[{}].closed + 1)", e.backend_id);
            }
        } else if e.tcp_state == TCP_SYN_SENT && self.tcp_flags & TCP_ACK != 0 {
            effect += ", state -> established";
        }
        self.effect(effect);
        self.out.conntrack = Some(Self::flow_row(key, &e));
        Ok(Some(e))
    }

    /// `conntrack::create`: the reply entry first (never over another flow's), then the
    /// forward one (`claim`).
    fn create(&mut self, forward: &CtKey, reply: &CtKey) -> Result<Created> {
        if self.ct_get(reply)?.is_some() {
            self.step(
                "conntrack",
                format!(
                    "NB_CT {}: the reply direction is another flow's entry",
                    key_text(reply.proto, reply)
                ),
            );
            return Ok(match self.ct_get(forward)? {
                Some(e) => Created::Existing(e),
                None => Created::Failed,
            });
        }
        self.claim(forward)
    }

    /// `conntrack::claim`: the forward entry, unless another flow recorded it first.
    fn claim(&mut self, forward: &CtKey) -> Result<Created> {
        Ok(match self.ct_get(forward)? {
            Some(e) => {
                self.step(
                    "conntrack",
                    format!(
                        "NB_CT {}: recorded already (a {} entry): the packet follows it",
                        key_text(forward.proto, forward),
                        kind_name(e.kind)
                    ),
                );
                Created::Existing(e)
            }
            None => Created::New,
        })
    }

    // ---- from_container ----------------------------------------------------------------

    /// `container::handle` and `container::ipv4`.
    fn container_path(&mut self, ifindex: u32) -> Result<()> {
        self.out.program = Some(Hook::FromContainer.name());
        self.out.interface = Some(self.interface(ifindex));
        let map = if ifindex < IFACE_SLOTS {
            "NB_IFACES"
        } else {
            "NB_IFACES_BIG"
        };
        let own = match self.maps.iface(ifindex)? {
            Some(own) if own.addr != 0 => own,
            _ => {
                self.step(
                    "iface",
                    format!("{map}[{ifindex}]: no container behind this interface"),
                );
                return self.drop(Outcome::DropUnknownSource);
            }
        };
        let mut flags = Vec::new();
        for (bit, name) in [
            (NET_ICC, "icc"),
            (NET_INTERNAL, "internal"),
            (NET_MASQUERADE, "masquerade"),
            (IFACE_NAT_TARGET, "nat target"),
        ] {
            if own.net_flags & bit != 0 {
                flags.push(name);
            }
        }
        let network = self.network_name(own.network_id)?;
        self.step(
            "iface",
            format!(
                "{map}[{ifindex}]: container {} of network {network} ({}/{}, gateway {}; {})",
                addr_of(own.addr),
                addr_of(own.subnet),
                u32::from_be(own.mask).count_ones(),
                addr_of(own.gateway),
                if flags.is_empty() {
                    "no icc".to_owned()
                } else {
                    flags.join(", ")
                }
            ),
        );
        self.step(
            "source",
            format!(
                "source MAC: taken as the container's own ({}); a frame with another is \
                 dropped as {}",
                crate::config::model::format_mac(&own.mac),
                Outcome::DropSpoofedMac.name()
            ),
        );
        let t = self.tuple;
        if t.saddr != own.addr {
            self.step(
                "source",
                format!(
                    "source address {} is not the container's ({})",
                    addr_of(t.saddr),
                    addr_of(own.addr)
                ),
            );
            return self.drop(Outcome::DropSpoofedIp);
        }
        self.step(
            "source",
            format!("source address {} is the container's own", addr_of(t.saddr)),
        );
        let dst = t.daddr;
        let in_subnet = dst & own.mask == own.subnet && dst != own.gateway;
        // A container translated flows lead to: its recorded flows (its replies to a peer
        // of its subnet among them) before the same-subnet fast path.
        let nat_target = own.net_flags & IFACE_NAT_TARGET != 0;
        if in_subnet && !nat_target {
            return self.same_subnet(&own, dst);
        }
        let key = t.key(own.addr, dst);
        if let Some(e) = self.ct_lookup(&key)?
            && self.established(&own, &key, &e, ifindex)?
        {
            return Ok(());
        }
        if in_subnet {
            return self.same_subnet(&own, dst);
        }
        if dst != own.gateway
            && let Some(svc) = self.lookup_service(dst)?
        {
            return self.container_to_service(&own, ifindex, &svc);
        }
        let is_local = self.maps.is_local(dst)?;
        let local = dst == own.gateway || is_local;
        if dst != own.gateway {
            self.step(
                "local",
                format!(
                    "NB_LOCAL {}: {}",
                    addr_of(dst),
                    if is_local {
                        "one of the host's addresses"
                    } else {
                        "not a host address"
                    }
                ),
            );
        }
        if own.net_flags & NET_INTERNAL == 0 && local && self.hairpin(&own, dst)? {
            return Ok(());
        }
        if dst == own.gateway {
            self.step(
                "gateway",
                format!("{} is the network's gateway: the host's", addr_of(dst)),
            );
            return self.pass();
        }
        let octets = addr_of(dst).octets();
        if octets == [255, 255, 255, 255] || octets[0] & 0xf0 == 0xe0 {
            self.step("destination", "broadcast or multicast");
            return self.drop(Outcome::DropNotUnicast);
        }
        if let Some(peer) = self.maps.endpoint(dst)? {
            self.step(
                "endpoint",
                format!(
                    "NB_ENDPOINTS {}: container {} of network {}, through the gateway",
                    addr_of(dst),
                    name_str(&peer.name),
                    self.network_name(peer.network_id)?
                ),
            );
            return self.deliver(&own, peer.ifindex, peer.network_id, dst);
        }
        self.step(
            "endpoint",
            format!("NB_ENDPOINTS {}: no container", addr_of(dst)),
        );
        if own.net_flags & NET_INTERNAL != 0 {
            self.step("internal", "the network is internal");
            return self.drop(Outcome::DropInternal);
        }
        if own.net_flags & NET_MASQUERADE != 0 && !local {
            match self.maps.host_config()?.filter(|c| c.uplink_ifindex != 0) {
                Some(cfg) => return self.masquerade(&own, &cfg),
                None => self.step(
                    "masquerade",
                    "the network masquerades, but no uplink is configured (NB_CONFIG)",
                ),
            }
        }
        self.step(
            "route",
            if local {
                "to one of the host's addresses: the host's stack"
            } else {
                "not translated: the host routes it"
            },
        );
        self.pass()
    }

    /// `container::service_reply`: a backend's reply to a client of its service (entry
    /// `e`).
    fn service_reply(&mut self, dst: u32, e: &CtEntry) -> Result<()> {
        self.effect(format!("NB_BE_TRAFFIC[{}]: out packets + 1", e.backend_id));
        self.translate((e.nat_addr, e.nat_port), (dst, self.tuple.dport));
        self.out.backend = self.backend_choice(e.backend_id, "conntrack")?;
        if e.kind == CT_SERVICE_REPLY_OUT {
            self.step(
                "service_reply",
                format!(
                    "to a client outside: the source becomes the VIP {}, out of the uplink",
                    ep(e.nat_addr, e.nat_port)
                ),
            );
            self.out.delivery = Some(self.delivery("redirect_neigh", e.ifindex, None));
        } else {
            self.step(
                "service_reply",
                format!(
                    "to a container client: the source becomes the VIP {}",
                    ep(e.nat_addr, e.nat_port)
                ),
            );
            let client = self.container_name(dst)?;
            self.out.delivery = Some(self.delivery("redirect_peer", e.ifindex, client));
        }
        self.finish(Outcome::ServiceReply);
        Ok(())
    }

    /// The same-subnet fast path: the peer slot, or the endpoint hash.
    fn same_subnet(&mut self, own: &IfaceInfo, dst: u32) -> Result<()> {
        let peer = if own.peer_base == NO_PEER_SLOTS {
            let ep = self.maps.endpoint(dst)?;
            self.step(
                "endpoint",
                format!(
                    "same subnet; the network has no peer range: NB_ENDPOINTS {}: {}",
                    addr_of(dst),
                    ep.map_or_else(
                        || "no container".to_owned(),
                        |ep| format!("container {}", name_str(&ep.name))
                    )
                ),
            );
            ep.map(|ep| (ep.ifindex, ep.network_id))
        } else {
            let host = u32::from_be(dst & !own.mask);
            let slot = own.peer_base.wrapping_add(host);
            let peer = self.maps.peer(slot)?.filter(|p| p.ifindex != 0);
            let who = match &peer {
                Some(p) => format!(
                    "ifindex {}{}",
                    p.ifindex,
                    self.container_name(dst)?
                        .map(|n| format!(", container {n}"))
                        .unwrap_or_default()
                ),
                None => "empty".to_owned(),
            };
            self.step(
                "peer",
                format!(
                    "same subnet: NB_PEERS[{slot}] (range at {} + host part {host}): {who}",
                    own.peer_base
                ),
            );
            peer.map(|p| (p.ifindex, p.network_id))
        };
        match peer {
            Some((ifindex, network_id)) => self.deliver(own, ifindex, network_id, dst),
            None if dst == own.subnet | !own.mask => {
                self.step("destination", "the subnet's broadcast address");
                self.drop(Outcome::DropNotUnicast)
            }
            None => self.drop(Outcome::DropNoEndpoint),
        }
    }

    /// `container::deliver`: into a container of the sender's network, if icc allows.
    fn deliver(&mut self, own: &IfaceInfo, ifindex: u32, network_id: u32, dst: u32) -> Result<()> {
        if network_id != own.network_id {
            self.step(
                "deliver",
                format!(
                    "the destination is of network {}, the sender of {}",
                    self.network_name(network_id)?,
                    self.network_name(own.network_id)?
                ),
            );
            return self.drop(Outcome::DropCrossNetwork);
        }
        if own.net_flags & NET_ICC == 0 {
            self.step("deliver", "the network has icc = false");
            return self.drop(Outcome::DropIcc);
        }
        self.step("deliver", "same network, icc: straight into the container");
        let name = self.container_name(dst)?;
        self.out.delivery = Some(self.delivery("redirect_peer", ifindex, name));
        self.finish(Outcome::Forward);
        Ok(())
    }

    /// `container::established`: a recorded flow's packet. `true`: decided; `false`: an
    /// entry of a kind this path leaves to the checks after it.
    fn established(
        &mut self,
        own: &IfaceInfo,
        key: &CtKey,
        e: &CtEntry,
        ifindex: u32,
    ) -> Result<bool> {
        let t = self.tuple;
        match e.kind {
            CT_PUBLISHED_REPLY => {
                self.step(
                    "established",
                    "a published port's reply: the source becomes the host's address and port",
                );
                self.translate((e.nat_addr, e.nat_port), (t.daddr, t.dport));
                self.out.delivery = Some(self.delivery("redirect_neigh", e.ifindex, None));
                self.finish(Outcome::PublishedReply);
            }
            CT_MASQ_OUT => {
                let reply_key = CtKey {
                    saddr: t.daddr,
                    daddr: e.nat_addr,
                    sport: t.dport,
                    dport: e.nat_port,
                    proto: t.proto,
                    pad: [0; 3],
                };
                let reply = key_text(t.proto, &reply_key);
                if !reply_check_due(self.ticks, e) {
                    self.step(
                        "established",
                        format!(
                            "a masqueraded flow; its reply entry {reply} was checked {} ticks \
                             ago (every {MASQ_REPLY_CHECK_TICKS} at most)",
                            (self.ticks as u32).wrapping_sub(e.reply_checked)
                        ),
                    );
                } else if let Some(held) = self.ct_get(&reply_key)? {
                    let own_port = held.kind == CT_MASQ_REPLY
                        && held.nat_addr == own.addr
                        && held.nat_port == t.sport;
                    if !own_port {
                        self.step(
                            "established",
                            format!(
                                "a masqueraded flow whose port another flow took: {reply} \
                                 leads to {}; the flow is given up",
                                ep(held.nat_addr, held.nat_port)
                            ),
                        );
                        self.effect(format!("NB_CT: {} removed", key_text(key.proto, key)));
                        self.forgotten.push(*key);
                        self.drop(Outcome::DropNatFailed)?;
                        return Ok(true);
                    }
                    self.step(
                        "established",
                        format!("a masqueraded flow; its reply entry {reply} is there"),
                    );
                    self.effect("NB_CT: the flow's reply entry checked now");
                } else {
                    self.step(
                        "established",
                        format!(
                            "a masqueraded flow whose reply entry {reply} was evicted: \
                             recreated (its port is free)"
                        ),
                    );
                    self.effect(format!("NB_CT: {reply} recorded again (masquerade_reply)"));
                }
                self.translate((e.nat_addr, e.nat_port), (t.daddr, t.dport));
                self.out.delivery = Some(self.delivery("redirect_neigh", e.ifindex, None));
                self.finish(Outcome::Masquerade);
            }
            CT_HAIRPIN | CT_HAIRPIN_REPLY => {
                self.step(
                    "established",
                    "a hairpin flow: destination and source translated as recorded",
                );
                self.translate((e.rev_addr, e.rev_port), (e.nat_addr, e.nat_port));
                let name = self.container_name(e.nat_addr)?;
                self.out.delivery = Some(self.delivery("redirect_peer", e.ifindex, name));
                self.finish(Outcome::Hairpin);
            }
            CT_SERVICE => {
                if self.backend_alive(e)? {
                    self.established_to_backend(e)?;
                } else {
                    self.forget(key, e);
                    self.refuse(Hook::FromContainer, ifindex, Some(own.addr))?;
                }
            }
            CT_SERVICE_REPLY | CT_SERVICE_REPLY_OUT => self.service_reply(t.daddr, e)?,
            kind => {
                self.step(
                    "established",
                    format!(
                        "a {} entry: not this direction's, the checks go on",
                        kind_name(kind)
                    ),
                );
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `service::backend_alive`, with its step.
    fn backend_alive(&mut self, e: &CtEntry) -> Result<bool> {
        let b = self.maps.backend(e.backend_id)?;
        let alive = b.is_some_and(|b| b.addr == e.nat_addr && b.port == e.nat_port);
        self.step(
            "backend",
            format!(
                "NB_BACKENDS[{}]: {}",
                e.backend_id,
                match (alive, b) {
                    (true, _) => format!("{} still there", ep(e.nat_addr, e.nat_port)),
                    (false, Some(b)) if b.addr != 0 => format!(
                        "now {}, not the flow's {}: removed, the flow is refused",
                        ep(b.addr, b.port),
                        ep(e.nat_addr, e.nat_port)
                    ),
                    (false, _) => format!(
                        "no backend (the flow's {} was removed): the flow is refused",
                        ep(e.nat_addr, e.nat_port)
                    ),
                }
            ),
        );
        Ok(alive)
    }

    /// A recorded service flow's packet into its backend (`container::to_backend`, or the
    /// uplink's `deliver`).
    fn established_to_backend(&mut self, e: &CtEntry) -> Result<()> {
        self.out.backend = self.backend_choice(e.backend_id, "conntrack")?;
        self.effect(format!("NB_BE_TRAFFIC[{}]: in packets + 1", e.backend_id));
        self.deliver_to_backend(e)
    }

    /// Destination translated to the entry's backend, delivered into it.
    fn deliver_to_backend(&mut self, e: &CtEntry) -> Result<()> {
        let t = self.tuple;
        self.translate((t.saddr, t.sport), (e.nat_addr, e.nat_port));
        let name = self.container_name(e.nat_addr)?;
        let via = self.container_delivery_via();
        self.out.delivery = Some(self.delivery(via, e.ifindex, name));
        self.finish(Outcome::Service);
        Ok(())
    }

    /// How the running program puts a packet into a container: XDP redirects to the
    /// host-side veth, tc past it.
    fn container_delivery_via(&self) -> &'static str {
        if self.out.program == Some(Hook::XdpUplink.name()) {
            "redirect"
        } else {
            "redirect_peer"
        }
    }

    /// `refuse` of the container or uplink path: a reset (TCP) or port unreachable, back
    /// to the sender; a packet that cannot be answered is dropped.
    fn refuse(&mut self, hook: Hook, ifindex: u32, client: Option<u32>) -> Result<()> {
        let t = self.tuple;
        let outcome = if t.proto == Protocol::Tcp.number() {
            if self.tcp_flags & TCP_RST != 0 {
                self.step("refuse", "a reset is never answered");
                return self.drop(Outcome::DropNoBackend);
            }
            self.step(
                "refuse",
                format!(
                    "answered with a TCP reset from {} (a GSO packet or one with IP options \
                     cannot be: dropped as {})",
                    ep(t.daddr, t.dport),
                    Outcome::DropNoBackend.name()
                ),
            );
            Outcome::ServiceReset
        } else {
            self.step(
                "refuse",
                format!(
                    "answered with ICMP port unreachable from {} (a GSO packet or one with IP \
                     options cannot be: dropped as {})",
                    addr_of(t.daddr),
                    Outcome::DropNoBackend.name()
                ),
            );
            Outcome::ServiceUnreachable
        };
        self.out.translation = Some(Translation {
            src: Some(ep(t.daddr, t.dport)),
            dst: Some(ep(t.saddr, t.sport)),
        });
        let name = match client {
            Some(addr) => self.container_name(addr)?,
            None => None,
        };
        self.out.delivery = Some(match hook {
            Hook::XdpUplink => Delivery {
                via: "xdp_tx",
                ifindex: Some(ifindex),
                interface: self.maps.ifname(ifindex),
                container: None,
            },
            _ => self.delivery("redirect", ifindex, name),
        });
        self.finish(outcome);
        Ok(())
    }

    fn lookup_service(&mut self, dst: u32) -> Result<Option<Service>> {
        let t = self.tuple;
        let key = ServiceKey {
            vip: dst,
            port: t.dport,
            proto: t.proto,
            pad: 0,
        };
        let svc = self.maps.service(&key)?;
        match &svc {
            None => self.step(
                "service",
                format!(
                    "NB_SERVICES {}/{}: no service",
                    ep(dst, t.dport),
                    proto_name(t.proto)
                ),
            ),
            Some(svc) => {
                let name = self.maps.service_name(svc)?;
                let scheduler = Scheduler::from_u8(svc.scheduler)
                    .map_or_else(|| format!("#{}", svc.scheduler), |s| s.name().to_owned());
                self.step(
                    "service",
                    format!(
                        "NB_SERVICES {}/{}: service {}#{} ({scheduler}, {} selectable \
                         backend(s), table of {}{}{})",
                        ep(dst, t.dport),
                        proto_name(t.proto),
                        name.as_ref().map(|n| format!("{n} ")).unwrap_or_default(),
                        svc.id,
                        svc.count,
                        svc.table_len,
                        if svc.persistence_secs != 0 {
                            format!(", persistence {}s", svc.persistence_secs)
                        } else {
                            String::new()
                        },
                        if svc.flags & SVC_EXTERNAL != 0 {
                            ", external"
                        } else {
                            ""
                        }
                    ),
                );
                self.out.service = Some(ServiceHit {
                    name,
                    id: svc.id,
                    vip: addr_of(dst).to_string(),
                    port: u16::from_be(t.dport),
                    scheduler,
                    count: svc.count,
                    table_len: svc.table_len,
                    persistence_secs: svc.persistence_secs,
                    external: svc.flags & SVC_EXTERNAL != 0,
                });
            }
        }
        Ok(svc)
    }

    /// `container::to_service`.
    fn container_to_service(&mut self, own: &IfaceInfo, ifindex: u32, svc: &Service) -> Result<()> {
        let key = self.tuple.key(own.addr, self.tuple.daddr);
        match self.open_flow(&key, svc, "service_reply")? {
            NewFlow::Open { entry, backend } => {
                self.out.backend = Some(backend);
                self.effect(format!(
                    "NB_BE_TRAFFIC[{}]: in packets + 1",
                    entry.backend_id
                ));
                self.deliver_to_backend(&entry)
            }
            NewFlow::Random(candidates) => self.random(candidates),
            NewFlow::Refused => self.refuse(Hook::FromContainer, ifindex, Some(own.addr)),
            NewFlow::Failed => self.drop(Outcome::DropNatFailed),
        }
    }

    fn random(&mut self, candidates: Vec<(BackendChoice, u32)>) -> Result<()> {
        let t = self.tuple;
        self.out.translation = Some(Translation {
            src: Some(ep(t.saddr, t.sport)),
            dst: None,
        });
        self.out.candidates = candidates.into_iter().map(|(c, _)| c).collect();
        self.out.delivery = None;
        self.finish(Outcome::Service);
        Ok(())
    }

    /// `service::open_flow`: a TCP flow starts with a SYN; a backend chosen, both
    /// directions recorded.
    fn open_flow(&mut self, key: &CtKey, svc: &Service, reply_kind: &str) -> Result<NewFlow> {
        if key.proto == Protocol::Tcp.number() && !self.syn_only() {
            self.step(
                "service",
                "a new TCP flow to a VIP starts with a SYN; this packet is not one",
            );
            return Ok(NewFlow::Refused);
        }
        let chosen = match self.schedule(svc, key.saddr, key.daddr)? {
            Scheduled::One(id, b, choice) => (id, b, choice),
            Scheduled::Random(list) => {
                self.effect(format!(
                    "NB_CT: {} recorded (service, to the drawn backend), and its reply \
                     ({reply_kind})",
                    key_text(key.proto, key)
                ));
                self.effect("NB_BE_CONNS[the drawn backend].opened + 1");
                return Ok(NewFlow::Random(list));
            }
            Scheduled::Nothing => return Ok(NewFlow::Refused),
        };
        let (id, backend, choice) = chosen;
        let Some(target) = self.maps.endpoint(backend.addr)? else {
            self.step(
                "backend",
                format!(
                    "NB_ENDPOINTS {}: the backend is not a container here",
                    addr_of(backend.addr)
                ),
            );
            return Ok(NewFlow::Refused);
        };
        self.step(
            "backend",
            format!(
                "NB_ENDPOINTS {}: container {}, behind ifindex {}",
                addr_of(backend.addr),
                name_str(&target.name),
                target.ifindex
            ),
        );
        let reply_key = CtKey {
            saddr: backend.addr,
            daddr: key.saddr,
            sport: backend.port,
            dport: key.sport,
            proto: key.proto,
            pad: [0; 3],
        };
        Ok(match self.create(key, &reply_key)? {
            Created::New => {
                self.effect(format!(
                    "NB_CT: {} recorded (service, to {}), and {} ({reply_kind})",
                    key_text(key.proto, key),
                    ep(backend.addr, backend.port),
                    key_text(key.proto, &reply_key)
                ));
                self.effect(format!("NB_BE_CONNS[{id}].opened + 1"));
                NewFlow::Open {
                    entry: CtEntry {
                        nat_addr: backend.addr,
                        nat_port: backend.port,
                        kind: CT_SERVICE,
                        ifindex: target.ifindex,
                        backend_id: id,
                        ..CtEntry::default()
                    },
                    backend: choice,
                }
            }
            Created::Existing(e) => {
                let backend = self
                    .backend_choice(e.backend_id, "conntrack")?
                    .unwrap_or(choice);
                NewFlow::Open { entry: e, backend }
            }
            Created::Failed => NewFlow::Failed,
        })
    }

    /// A backend id as the output shows it.
    fn backend_choice(&self, id: u32, chosen_by: &'static str) -> Result<Option<BackendChoice>> {
        let Some(b) = self.maps.backend(id)?.filter(|b| b.addr != 0) else {
            return Ok(None);
        };
        Ok(Some(BackendChoice {
            id,
            address: addr_of(b.addr).to_string(),
            port: u16::from_be(b.port),
            weight: b.weight,
            container: self.container_name(b.addr)?,
            chosen_by,
            ..BackendChoice::default()
        }))
    }

    /// `service::selectable`.
    fn selectable(&self, svc: &Service, id: u32) -> Result<Option<Backend>> {
        Ok(self
            .maps
            .backend(id)?
            .filter(|b| b.addr != 0 && b.service_id == svc.id && b.weight != 0))
    }

    /// `service::table_entry`: entry `i` of the scheduling table.
    fn table_entry(&self, svc: &Service, i: u32) -> Result<Option<u32>> {
        self.maps
            .table(svc.table.wrapping_add(u32::from(svc.count)).wrapping_add(i))
    }

    /// `service::active`.
    fn active(&self, id: u32) -> Result<u64> {
        let (opened, closed) = self
            .maps
            .conns(id)?
            .map_or((0, 0), |c| (c.opened, c.closed));
        let expired = self.maps.expired(id)?.unwrap_or(0);
        Ok(opened.saturating_sub(closed).saturating_sub(expired))
    }

    /// `service::schedule`: persistence, then the scheduler.
    fn schedule(&mut self, svc: &Service, saddr: u32, daddr: u32) -> Result<Scheduled> {
        if svc.count == 0 {
            self.step(
                "scheduler",
                "no selectable backend (all drained, down or none): the flow is refused",
            );
            return Ok(Scheduled::Nothing);
        }
        let affinity_key = AffinityKey {
            service_id: svc.id,
            client: saddr & svc.persistence_mask,
        };
        if svc.persistence_secs != 0 {
            let client = format!(
                "{}/{}",
                addr_of(affinity_key.client),
                u32::from_be(svc.persistence_mask).count_ones()
            );
            match self.maps.affinity(&affinity_key)? {
                None => self.step(
                    "persistence",
                    format!("NB_AFFINITY service #{} client {client}: none", svc.id),
                ),
                Some(a)
                    if self.now_ns.saturating_sub(a.last_seen)
                        > u64::from(svc.persistence_secs) * 1_000_000_000 =>
                {
                    self.step(
                        "persistence",
                        format!(
                            "NB_AFFINITY service #{} client {client}: backend #{}, expired \
                             ({}s ago, timeout {}s)",
                            svc.id,
                            a.backend_id,
                            self.now_ns.saturating_sub(a.last_seen) / 1_000_000_000,
                            svc.persistence_secs
                        ),
                    );
                }
                Some(a) => {
                    let ago = self.now_ns.saturating_sub(a.last_seen) / 1_000_000_000;
                    self.effect(format!(
                        "NB_AFFINITY service #{} client {client}: last seen now",
                        svc.id
                    ));
                    if let Some(b) = self.selectable(svc, a.backend_id)? {
                        self.step(
                            "persistence",
                            format!(
                                "NB_AFFINITY service #{} client {client}: backend #{} ({}), \
                                 live ({ago}s ago, timeout {}s)",
                                svc.id,
                                a.backend_id,
                                ep(b.addr, b.port),
                                svc.persistence_secs
                            ),
                        );
                        let choice = self.chosen(a.backend_id, &b, "persistence")?;
                        return Ok(Scheduled::One(a.backend_id, b, choice));
                    }
                    self.step(
                        "persistence",
                        format!(
                            "NB_AFFINITY service #{} client {client}: backend #{}, live but no \
                             longer selectable: the scheduler chooses",
                            svc.id, a.backend_id
                        ),
                    );
                }
            }
        }
        let Some(scheduler) = Scheduler::from_u8(svc.scheduler) else {
            self.step(
                "scheduler",
                format!("unknown scheduler #{}: the flow is refused", svc.scheduler),
            );
            return Ok(Scheduled::Nothing);
        };
        let len = svc.table_len.max(1);
        let (id, slot, active) = match scheduler {
            Scheduler::Rr | Scheduler::Wrr => {
                let Some(position) = self.maps.rr_position(svc.id)? else {
                    self.step(
                        "scheduler",
                        format!("NB_SVC_RR[{}]: no such position", svc.id),
                    );
                    return Ok(Scheduled::Nothing);
                };
                let n = position.wrapping_add(1);
                let slot = (n.wrapping_sub(1) % u64::from(len)) as u32;
                self.effect(format!("NB_SVC_RR[{}]: {position} -> {n}", svc.id));
                let id = self.table_entry(svc, slot)?;
                self.step(
                    "scheduler",
                    format!(
                        "{}: NB_SVC_RR[{}] = {position}, the next turn is slot {position} mod \
                         {len} = {slot} of the table: {}",
                        scheduler.name(),
                        svc.id,
                        entry_text(id)
                    ),
                );
                (id, Some(slot), None)
            }
            Scheduler::Random => {
                let mut shares: Vec<(u32, u32)> = Vec::new();
                for i in 0..len {
                    if let Some(id) = self.table_entry(svc, i)? {
                        match shares.iter_mut().find(|(b, _)| *b == id) {
                            Some((_, n)) => *n += 1,
                            None => shares.push((id, 1)),
                        }
                    }
                }
                let mut candidates = Vec::new();
                for (id, n) in shares {
                    if let Some(b) = self.selectable(svc, id)? {
                        let mut choice = self.chosen(id, &b, "random")?;
                        choice.table_entries = Some(n);
                        candidates.push((choice, n));
                    }
                }
                let list: Vec<String> = candidates
                    .iter()
                    .map(|(c, n)| format!("#{} {}:{} ({n}/{len})", c.id, c.address, c.port))
                    .collect();
                self.step(
                    "scheduler",
                    format!(
                        "random: a random entry of the table of {len}, drawn per flow, among: {}",
                        list.join(", ")
                    ),
                );
                if candidates.is_empty() {
                    return Ok(Scheduled::Nothing);
                }
                if svc.persistence_secs != 0 {
                    self.effect(format!(
                        "NB_AFFINITY service #{} client {}: the drawn backend",
                        svc.id,
                        addr_of(affinity_key.client)
                    ));
                }
                return Ok(Scheduled::Random(candidates));
            }
            Scheduler::Sh | Scheduler::Mh | Scheduler::Dh => {
                let (what, addr) = if scheduler == Scheduler::Dh {
                    ("destination", daddr)
                } else {
                    ("client", saddr)
                };
                let hash = flow_hash(addr);
                let slot = hash % len;
                let id = self.table_entry(svc, slot)?;
                self.step(
                    "scheduler",
                    format!(
                        "{}: flow_hash({what} {}) = {hash:#010x}, mod {len} = slot {slot} of \
                         the Maglev table: {}",
                        scheduler.name(),
                        addr_of(addr),
                        entry_text(id)
                    ),
                );
                (id, Some(slot), None)
            }
            Scheduler::Lc | Scheduler::Wlc => {
                let weighted = scheduler == Scheduler::Wlc;
                let (id, conns, seen) = self.least_connections(svc, weighted)?;
                self.step(
                    "scheduler",
                    format!(
                        "{}: fewest active connections{} among {}: {}",
                        scheduler.name(),
                        if weighted { " per unit of weight" } else { "" },
                        if seen.is_empty() {
                            "none".to_owned()
                        } else {
                            seen.join(", ")
                        },
                        entry_text(id)
                    ),
                );
                (id, None, conns)
            }
        };
        let Some(id) = id else {
            return Ok(Scheduled::Nothing);
        };
        let Some(b) = self.selectable(svc, id)? else {
            self.step(
                "backend",
                format!("NB_BACKENDS[{id}]: not selectable (gone, drained or another service's)"),
            );
            return Ok(Scheduled::Nothing);
        };
        let mut choice = self.chosen(id, &b, scheduler.name())?;
        choice.slot = slot;
        choice.active = active;
        if svc.persistence_secs != 0 {
            self.effect(format!(
                "NB_AFFINITY service #{} client {}: backend #{id}, last seen now",
                svc.id,
                addr_of(affinity_key.client)
            ));
        }
        Ok(Scheduled::One(id, b, choice))
    }

    fn chosen(&self, id: u32, b: &Backend, by: &'static str) -> Result<BackendChoice> {
        Ok(BackendChoice {
            id,
            address: addr_of(b.addr).to_string(),
            port: u16::from_be(b.port),
            weight: b.weight,
            container: self.container_name(b.addr)?,
            chosen_by: by,
            ..BackendChoice::default()
        })
    }

    /// `service::least_connections`: the scan over the backend list, ties to the first.
    /// Returns the winner, its active connections, and each backend as scanned.
    fn least_connections(
        &self,
        svc: &Service,
        weighted: bool,
    ) -> Result<(Option<u32>, Option<u64>, Vec<String>)> {
        let (mut best_id, mut best_conns, mut best_weight) = (0u32, 0u64, 0u64);
        let mut seen = Vec::new();
        let count = u32::from(svc.count).min(MAX_SERVICE_BACKENDS);
        for i in 0..count {
            let Some(id) = self.maps.table(svc.table.wrapping_add(i))? else {
                break;
            };
            let Some(b) = self.maps.backend(id)? else {
                continue;
            };
            if b.weight == 0 {
                continue;
            }
            let weight = if weighted { u64::from(b.weight) } else { 1 };
            let conns = self.active(id)?;
            seen.push(format!(
                "#{id} {} {conns} active{}",
                ep(b.addr, b.port),
                if weighted {
                    format!(" weight {}", b.weight)
                } else {
                    String::new()
                }
            ));
            if best_id == 0 || conns.wrapping_mul(best_weight) < best_conns.wrapping_mul(weight) {
                best_id = id;
                best_conns = conns;
                best_weight = weight;
            }
        }
        Ok(if best_id == 0 {
            (None, None, seen)
        } else {
            (Some(best_id), Some(best_conns), seen)
        })
    }

    /// `container::hairpin`: a new flow to a published port of the host. `true`: decided.
    fn hairpin(&mut self, own: &IfaceInfo, dst: u32) -> Result<bool> {
        let t = self.tuple;
        let key = t.key(own.addr, dst);
        let Some(target) = self.published(dst)? else {
            return Ok(false);
        };
        if t.proto == Protocol::Tcp.number() && !self.syn_only() {
            self.step(
                "hairpin",
                "not a SYN, and no recorded flow: the host's to answer",
            );
            return Ok(false);
        }
        let Some(ep_info) = self.maps.endpoint(target.addr)? else {
            self.step(
                "hairpin",
                format!("NB_ENDPOINTS {}: no container", addr_of(target.addr)),
            );
            self.drop(Outcome::DropNoEndpoint)?;
            return Ok(true);
        };
        let container = name_str(&ep_info.name).to_owned();
        // The source the server sees: the sender itself, or (the sender is the server) its
        // gateway with a port of the range.
        // The sender keeps its address unless it reaches its own port or a live flow of
        // another way in holds the reply tuple (a leftover of this tuple's own last flow
        // is replaced).
        let mut pooled = target.addr == own.addr;
        if !pooled {
            let reply_key = CtKey {
                saddr: target.addr,
                daddr: own.addr,
                sport: target.port,
                dport: t.sport,
                proto: t.proto,
                pad: [0; 3],
            };
            match self.ct_get(&reply_key)? {
                Some(old)
                    if old.kind == CT_HAIRPIN_REPLY
                        && old.rev_addr == dst
                        && old.rev_port == t.dport =>
                {
                    self.step(
                        "hairpin",
                        format!(
                            "NB_CT {}: a leftover of this tuple's last flow (its forward \
                             direction gone): replaced",
                            key_text(t.proto, &reply_key)
                        ),
                    );
                }
                Some(old) => {
                    self.step(
                        "hairpin",
                        format!(
                            "NB_CT {}: a live {} flow holds the reply tuple: this one takes \
                             a port of its own",
                            key_text(t.proto, &reply_key),
                            kind_name(old.kind)
                        ),
                    );
                    pooled = true;
                }
                None => {}
            }
        }
        let source = if pooled {
            let Some(cfg) = self.maps.host_config()?.filter(|c| c.masq_port_max != 0) else {
                self.step("hairpin", "no port range in NB_CONFIG");
                self.drop(Outcome::DropNoNatPort)?;
                return Ok(true);
            };
            self.step(
                "hairpin",
                format!(
                    "to container {container} at {}; the source becomes the gateway {} and a \
                     free port of {}-{} (Docker's masquerade when the sender is the server)",
                    ep(target.addr, target.port),
                    addr_of(own.gateway),
                    cfg.masq_port_min,
                    cfg.masq_port_max
                ),
            );
            format!("{}:*", addr_of(own.gateway))
        } else {
            self.step(
                "hairpin",
                format!(
                    "to container {container} at {}; the source stays the sender's (Docker \
                     without its proxy)",
                    ep(target.addr, target.port),
                ),
            );
            ep(own.addr, t.sport)
        };
        match self.claim(&key)? {
            Created::Existing(e) => {
                self.translate((e.rev_addr, e.rev_port), (e.nat_addr, e.nat_port));
                let name = self.container_name(e.nat_addr)?;
                self.out.delivery = Some(self.delivery("redirect_peer", e.ifindex, name));
            }
            _ => {
                self.effect(format!(
                    "NB_CT: {} recorded (hairpin, to {}), and its reply ({} -> {})",
                    key_text(t.proto, &key),
                    ep(target.addr, target.port),
                    ep(target.addr, target.port),
                    source
                ));
                self.out.translation = Some(Translation {
                    src: Some(source),
                    dst: Some(ep(target.addr, target.port)),
                });
                self.out.delivery =
                    Some(self.delivery("redirect_peer", ep_info.ifindex, Some(container)));
            }
        }
        self.finish(Outcome::Hairpin);
        Ok(true)
    }

    /// `endpoints::published`: the entry for the address, else for every address.
    fn published(&mut self, addr: u32) -> Result<Option<PortTarget>> {
        let t = self.tuple;
        let exact = PortKey {
            addr,
            port: t.dport,
            proto: t.proto,
            pad: 0,
        };
        let any = PortKey { addr: 0, ..exact };
        let (found, at) = match self.maps.port(&exact)? {
            Some(target) => (Some(target), addr),
            None => (self.maps.port(&any)?, 0),
        };
        self.step(
            "published",
            match &found {
                Some(target) => format!(
                    "NB_PORTS {}/{}: published, to {}{}",
                    ep(at, t.dport),
                    proto_name(t.proto),
                    ep(target.addr, target.port),
                    self.container_name(target.addr)?
                        .map(|n| format!(" (container {n})"))
                        .unwrap_or_default()
                ),
                None => format!(
                    "NB_PORTS {}/{} (and 0.0.0.0): not published",
                    ep(addr, t.dport),
                    proto_name(t.proto)
                ),
            },
        );
        Ok(found)
    }

    /// `container::masquerade`: a new outbound flow of a masquerading network.
    fn masquerade(&mut self, own: &IfaceInfo, cfg: &HostConfig) -> Result<()> {
        let t = self.tuple;
        let key = t.key(own.addr, t.daddr);
        self.step(
            "masquerade",
            format!(
                "the network masquerades: the source becomes the uplink's {} and a free port \
                 of {}-{}",
                addr_of(cfg.uplink_addr),
                cfg.masq_port_min,
                cfg.masq_port_max
            ),
        );
        match self.claim(&key)? {
            Created::Existing(e) => {
                self.translate((e.nat_addr, e.nat_port), (t.daddr, t.dport));
                self.out.delivery = Some(self.delivery("redirect_neigh", e.ifindex, None));
            }
            _ => {
                self.effect(format!(
                    "NB_CT: {} recorded (masquerade, as {}:*), and its reply",
                    key_text(t.proto, &key),
                    addr_of(cfg.uplink_addr)
                ));
                self.out.translation = Some(Translation {
                    src: Some(format!("{}:*", addr_of(cfg.uplink_addr))),
                    dst: Some(ep(t.daddr, t.dport)),
                });
                self.out.delivery = Some(self.delivery("redirect_neigh", cfg.uplink_ifindex, None));
            }
        }
        self.finish(Outcome::Masquerade);
        Ok(())
    }

    // ---- from_uplink / xdp_uplink ------------------------------------------------------

    /// `uplink::handle`.
    fn uplink_path(&mut self, hook: Hook, ifindex: u32, then_tc: bool) -> Result<()> {
        self.out.program = Some(hook.name());
        self.out.interface = Some(self.interface(ifindex));
        if then_tc {
            self.step(
                "uplink",
                "from_uplink is attached too: it sees what xdp_uplink passes, and decides \
                 the same",
            );
        }
        let t = self.tuple;
        let key = t.key(t.saddr, t.daddr);
        if let Some(e) = self.ct_lookup(&key)? {
            match e.kind {
                CT_PUBLISHED_IN => {
                    self.step(
                        "established",
                        "a published port's flow: the destination becomes the container's",
                    );
                    return self.uplink_deliver(&e, Outcome::Published);
                }
                CT_MASQ_REPLY => {
                    self.step(
                        "established",
                        "a masqueraded flow's reply: the destination becomes the container's",
                    );
                    return self.uplink_deliver(&e, Outcome::MasqueradeReply);
                }
                CT_SERVICE => {
                    if self.backend_alive(&e)? {
                        return self.established_to_backend(&e);
                    }
                    self.forget(&key, &e);
                    return self.refuse(hook, ifindex, None);
                }
                kind => {
                    self.step(
                        "established",
                        format!("a {} entry: handed to the stack", kind_name(kind)),
                    );
                    return self.pass();
                }
            }
        }
        if self.maps.is_local(t.saddr)? {
            self.step(
                "source",
                format!(
                    "NB_LOCAL {}: the host's own address as a source from outside: forged",
                    addr_of(t.saddr)
                ),
            );
            return self.drop(Outcome::DropSpoofedIp);
        }
        self.step(
            "source",
            format!("NB_LOCAL {}: not a host address", addr_of(t.saddr)),
        );
        if let Some(svc) = self.lookup_service(t.daddr)? {
            if svc.flags & SVC_EXTERNAL != 0 {
                return self.uplink_to_service(hook, ifindex, &key, &svc);
            }
            self.step("service", "not external: not reachable from outside");
        }
        if !self.maps.is_local(t.daddr)? {
            self.step(
                "local",
                format!(
                    "NB_LOCAL {}: not a host address: the stack routes it",
                    addr_of(t.daddr)
                ),
            );
            return self.pass();
        }
        self.step(
            "local",
            format!("NB_LOCAL {}: one of the host's addresses", addr_of(t.daddr)),
        );
        let Some(target) = self.published(t.daddr)? else {
            return self.pass();
        };
        if t.proto == Protocol::Tcp.number() && !self.syn_only() {
            self.step(
                "published",
                "not a SYN, and no recorded flow: the host's to answer",
            );
            return self.pass();
        }
        let Some(ep_info) = self.maps.endpoint(target.addr)? else {
            self.step(
                "published",
                format!("NB_ENDPOINTS {}: no container", addr_of(target.addr)),
            );
            return self.drop(Outcome::DropNoEndpoint);
        };
        let reply_key = CtKey {
            saddr: target.addr,
            daddr: t.saddr,
            sport: target.port,
            dport: t.sport,
            proto: t.proto,
            pad: [0; 3],
        };
        match self.create(&key, &reply_key)? {
            Created::New => {
                self.effect(format!(
                    "NB_CT: {} recorded (published, to {}), and {} (published_reply)",
                    key_text(t.proto, &key),
                    ep(target.addr, target.port),
                    key_text(t.proto, &reply_key)
                ));
                let entry = CtEntry {
                    nat_addr: target.addr,
                    nat_port: target.port,
                    kind: CT_PUBLISHED_IN,
                    ifindex: ep_info.ifindex,
                    ..CtEntry::default()
                };
                self.uplink_deliver(&entry, Outcome::Published)
            }
            Created::Existing(e) => self.uplink_deliver(&e, Outcome::Published),
            Created::Failed => self.drop(Outcome::DropNatFailed),
        }
    }

    /// The uplink's `deliver`: destination translated as the entry says, into its
    /// container.
    fn uplink_deliver(&mut self, e: &CtEntry, outcome: Outcome) -> Result<()> {
        let t = self.tuple;
        self.translate((t.saddr, t.sport), (e.nat_addr, e.nat_port));
        let name = self.container_name(e.nat_addr)?;
        let via = self.container_delivery_via();
        self.out.delivery = Some(self.delivery(via, e.ifindex, name));
        self.finish(outcome);
        Ok(())
    }

    /// `uplink::to_service`: a new flow from outside to an external service.
    fn uplink_to_service(
        &mut self,
        hook: Hook,
        ifindex: u32,
        key: &CtKey,
        svc: &Service,
    ) -> Result<()> {
        match self.open_flow(key, svc, "service_reply_out")? {
            NewFlow::Open { entry, backend } => {
                self.out.backend = Some(backend);
                self.effect(format!(
                    "NB_BE_TRAFFIC[{}]: in packets + 1",
                    entry.backend_id
                ));
                self.deliver_to_backend(&entry)
            }
            NewFlow::Random(candidates) => self.random(candidates),
            NewFlow::Refused => self.refuse(hook, ifindex, None),
            NewFlow::Failed => self.drop(Outcome::DropNatFailed),
        }
    }
}

/// What `schedule` gives.
enum Scheduled {
    One(u32, Backend, BackendChoice),
    Random(Vec<(BackendChoice, u32)>),
    Nothing,
}

fn entry_text(id: Option<u32>) -> String {
    match id {
        Some(id) => format!("backend #{id}"),
        None => "nothing (past the table's end)".to_owned(),
    }
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        _ => "?",
    }
}
