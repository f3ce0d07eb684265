//! `from_container`: a frame leaving a container, as its host-side veth receives it.
//! The path: who sent it (the veth's endpoint), is the sender honest (MAC, IP), then ARP
//! answered in place, or IPv4 delivered: to a peer of the same network, to the host, or
//! dropped with its reason.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use netbpf_common::{
    conntrack::{
        CT_HAIRPIN, CT_HAIRPIN_REPLY, CT_MASQ_OUT, CT_MASQ_REPLY, CT_PUBLISHED_REPLY, CT_SERVICE,
        CT_SERVICE_REPLY, CT_SERVICE_REPLY_OUT, CtEntry, CtKey, HostConfig, reply_check_due,
    },
    net::{IFACE_NAT_TARGET, IfaceInfo, NET_ICC, NET_INTERNAL, NET_MASQUERADE},
    service::Service,
    stats::Outcome,
};
use network_types::{arp::ArpHdr, eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    conntrack,
    endpoints::{self, Peer},
    icmp::{self, End},
    nat::{self, IPPROTO_TCP, L4, TCP_ACK, TCP_SYN},
    packet::{
        self, ETH_P_ARP, ETH_P_IPV4, ipv4_header_ok, is_multi_destination, ptr_at, ptr_at_mut,
    },
    reject,
    service::{self, NewFlow},
};

const ARP_HTYPE_ETHERNET: [u8; 2] = 1u16.to_be_bytes();
const ARP_REQUEST: [u8; 2] = 1u16.to_be_bytes();
const ARP_REPLY: [u8; 2] = 2u16.to_be_bytes();

/// The outcome to count and the verdict to return.
pub type Decision = (Outcome, i32);

#[inline(always)]
fn drop(reason: Outcome) -> Decision {
    (reason, TC_ACT_SHOT)
}

#[inline(always)]
pub fn handle(ctx: &TcContext) -> Decision {
    let ifindex = packet::ifindex(ctx);
    let Some(own) = endpoints::iface(ifindex) else {
        return drop(Outcome::DropUnknownSource);
    };
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let Ok(eth) = ptr_at_mut::<EthHdr>(data, data_end, 0) else {
        return drop(Outcome::DropMalformed);
    };
    // SAFETY: ptr_at checked the header lies inside the packet.
    let eth = unsafe { &mut *eth };
    if eth.src_addr != own.mac {
        return drop(Outcome::DropSpoofedMac);
    }
    match eth.ether_type {
        ETH_P_IPV4 => ipv4(ctx, data, data_end, own),
        ETH_P_ARP => arp(data, data_end, eth, ifindex, own),
        _ => drop(Outcome::DropUnsupportedL3),
    }
}

#[inline(always)]
fn ipv4(ctx: &TcContext, data: usize, data_end: usize, own: &IfaceInfo) -> Decision {
    let frame_len = ctx.len();
    let Ok(ip) = ptr_at::<Ipv4Hdr>(data, data_end, EthHdr::LEN) else {
        return drop(Outcome::DropMalformed);
    };
    // SAFETY: ptr_at checked the header lies inside the packet.
    let ip = unsafe { &*ip };
    if !ipv4_header_ok(ip, frame_len) {
        return drop(Outcome::DropMalformed);
    }
    if u32::from_ne_bytes(ip.src_addr) != own.addr {
        return drop(Outcome::DropSpoofedIp);
    }
    let dst = u32::from_ne_bytes(ip.dst_addr);
    let in_subnet = dst & own.mask == own.subnet && dst != own.gateway;
    // Replies of a service backend or of a container publishing ports carry its own
    // address, maybe to a peer of its subnet: its recorded flows come before the
    // same-subnet fast path (the VIP, or the host's address and port, restored first).
    let nat_target = own.net_flags & IFACE_NAT_TARGET != 0;
    if in_subnet && !nat_target {
        return to_peer(own, dst);
    }
    let l4 = nat::l4(data, data_end, ip);
    // A translated flow already recorded: its entry says everything (the common case of
    // translated traffic, so it comes first).
    if let Some(l4) = &l4
        && let Some(decision) = recorded(ctx, l4, own, dst)
    {
        return decision;
    }
    // An ICMP error about a packet of a translated flow (the error quotes it as the
    // container received it): translated back like the flow's own packets.
    if l4.is_none()
        && let Some(decision) = icmp_error(ctx, data, data_end, ip, own)
    {
        return decision;
    }
    if in_subnet {
        return to_peer(own, dst);
    }
    // A new flow to a service's VIP (never the gateway).
    if let Some(l4) = &l4
        && dst != own.gateway
        && let Some(svc) = service::lookup(dst, l4.dport, l4.proto)
    {
        return to_service(ctx, l4, own, dst, svc);
    }
    let local = dst == own.gateway || conntrack::is_local(dst);
    // A new flow to a published port of one of the host's own addresses (hairpin).
    if let Some(l4) = &l4
        && own.net_flags & NET_INTERNAL == 0
        && local
        && let Some(decision) = hairpin(ctx, l4, own, dst)
    {
        return decision;
    }
    if dst == own.gateway {
        return (Outcome::Pass, TC_ACT_OK);
    }
    if is_multi_destination(ip.dst_addr) {
        return drop(Outcome::DropNotUnicast);
    }
    if let Some(peer) = endpoints::endpoint(dst) {
        // A container of another subnet, reached through the gateway.
        return deliver(own, peer.ifindex, peer.network_id);
    }
    if own.net_flags & NET_INTERNAL != 0 {
        return drop(Outcome::DropInternal);
    }
    if own.net_flags & NET_MASQUERADE != 0
        && !local
        && let Some(cfg) = conntrack::host_config()
    {
        // Nothing leaves a masquerading network with its private source address.
        return match &l4 {
            Some(l4) if l4.starts_flows() => masquerade(ctx, l4, own, dst, cfg),
            _ => drop(Outcome::DropNotTranslatable),
        };
    }
    (Outcome::Pass, TC_ACT_OK)
}

/// To a neighbour of the sender's subnet (the fast path): its slot in the network's
/// range, or the endpoint hash.
#[inline(always)]
fn to_peer(own: &IfaceInfo, dst: u32) -> Decision {
    let peer = match endpoints::peer_in_subnet(own, dst) {
        Peer::Found(peer) => Some((peer.ifindex, peer.network_id)),
        Peer::Nobody => None,
        Peer::NoRange => endpoints::endpoint(dst).map(|ep| (ep.ifindex, ep.network_id)),
    };
    match peer {
        Some((ifindex, network_id)) => deliver(own, ifindex, network_id),
        None if dst == own.subnet | !own.mask => drop(Outcome::DropNotUnicast),
        None => drop(Outcome::DropNoEndpoint),
    }
}

/// A packet of a translated flow recorded in conntrack, sent on as its entry says.
/// `None`: no such flow.
#[inline(always)]
fn recorded(ctx: &TcContext, l4: &L4, own: &IfaceInfo, dst: u32) -> Option<Decision> {
    let key = conntrack::key(own.addr, dst, l4);
    let entry = conntrack::lookup(&key, l4)?;
    // SAFETY: a pointer into the map's value, valid for this run (lookup just stamped it).
    unsafe {
        if (*entry).kind == CT_MASQ_OUT && reply_check_due((*entry).last_seen, &*entry) {
            // The flow's port must still be its own: claim it again, or give the flow up
            // (another flow holds it).
            if !masquerade_reply_held(ctx, l4, own, dst, &*entry) {
                conntrack::remove(&key);
                return Some(drop(Outcome::DropNatFailed));
            }
            (*entry).reply_checked = (*entry).last_seen as u32;
        }
    }
    // SAFETY: as above.
    established(ctx, l4, own, dst, &key, unsafe { &*entry })
}

/// A packet of a recorded translated flow (`key`, its entry `e`), sent on as the entry
/// says. `None`: an entry of another direction's kind (left to the paths below).
#[inline(always)]
fn established(
    ctx: &TcContext,
    l4: &L4,
    own: &IfaceInfo,
    dst: u32,
    key: &CtKey,
    e: &CtEntry,
) -> Option<Decision> {
    Some(match e.kind {
        CT_PUBLISHED_REPLY => send_out(ctx, l4, own.addr, e, Outcome::PublishedReply),
        // Its reply entry checked in `recorded`.
        CT_MASQ_OUT => send_out(ctx, l4, own.addr, e, Outcome::Masquerade),
        CT_HAIRPIN | CT_HAIRPIN_REPLY => both_ways(ctx, l4, own.addr, dst, e),
        CT_SERVICE if service::backend_alive(e.backend_id, e.nat_addr, e.nat_port) => {
            to_backend(ctx, l4, dst, e)
        }
        CT_SERVICE => {
            conntrack::forget(key, e);
            refuse(ctx, l4)
        }
        CT_SERVICE_REPLY | CT_SERVICE_REPLY_OUT => service_reply(ctx, l4, own, e),
        _ => return None,
    })
}

/// An ICMP error the container sends about a packet it received through a translation:
/// - a published port's packet (the quote's destination becomes the host's address and
///   port again) or a masqueraded flow's reply (the uplink's address and the flow's port),
///   sent out of the uplink like the flow's own packets;
/// - a hairpin flow's packet, at either end (the server's error: the quote's destination
///   becomes the host's address and port, its source the client's own when the flow took
///   a port; the client's error about a reply: the quote's source becomes the server's
///   address and port), delivered into the other end's container;
/// - a service flow's packet, at its backend (the quote's destination becomes the VIP and
///   its port), into the client's container or out of the uplink to a client outside; at
///   a client about its backend's reply (the quote's source becomes the backend), into
///   the backend's container.
///
/// `None`: not such an error.
#[inline(always)]
fn icmp_error(
    ctx: &TcContext,
    data: usize,
    data_end: usize,
    ip: &Ipv4Hdr,
    own: &IfaceInfo,
) -> Option<Decision> {
    let err = icmp::parse(data, data_end, ip)?;
    // About a packet the container itself received, not another container's flow.
    if err.addr(End::Destination) != own.addr {
        return None;
    }
    let e = conntrack::get(&err.key())?;
    let (addr, port) = match e.kind {
        CT_PUBLISHED_REPLY | CT_MASQ_OUT | CT_SERVICE_REPLY | CT_SERVICE_REPLY_OUT => {
            (e.nat_addr, e.nat_port)
        }
        // Hairpin, either end: the quote's side that is the erring container's own
        // becomes what the other end saw (`rev_*`); the other side becomes `nat_*` below.
        CT_HAIRPIN_REPLY | CT_HAIRPIN => (e.rev_addr, e.rev_port),
        // A client about its backend's reply: its own side stays, the VIP becomes the
        // backend below.
        CT_SERVICE => (err.addr(End::Destination), err.port(End::Destination)),
        _ => return None,
    };
    if (addr != err.addr(End::Destination) || port != err.port(End::Destination))
        && icmp::translate(data, data_end, &err, End::Destination, addr, port).is_err()
    {
        return Some(drop(Outcome::DropNatFailed));
    }
    let hairpin = e.kind == CT_HAIRPIN_REPLY || e.kind == CT_HAIRPIN;
    let both_sides = hairpin || e.kind == CT_SERVICE;
    // Out of the uplink, or into the other end's container.
    if !both_sides && e.kind != CT_SERVICE_REPLY {
        // SAFETY: a helper call; no neighbour parameters (the kernel looks the next hop up).
        let verdict = unsafe { bpf_redirect_neigh(e.ifindex, core::ptr::null_mut(), 0, 0) } as i32;
        return Some((Outcome::IcmpError, verdict));
    }
    // Hairpin, or a client's error to its backend: the other end's address and port as it
    // knows them.
    if both_sides
        && (err.addr(End::Source) != e.nat_addr || err.port(End::Source) != e.nat_port)
        && icmp::translate(data, data_end, &err, End::Source, e.nat_addr, e.nat_port).is_err()
    {
        return Some(drop(Outcome::DropNatFailed));
    }
    if nat::set_macs(ctx, &e).is_err() {
        return Some(drop(Outcome::DropNatFailed));
    }
    // SAFETY: a helper call with plain integer arguments.
    let verdict = unsafe { bpf_redirect_peer(e.ifindex, 0) } as i32;
    Some((Outcome::IcmpError, verdict))
}

/// A container's new flow to a service's VIP: its backend chosen, both directions
/// recorded, delivered. Refused with a reset (TCP) or port unreachable when there is no
/// backend to give.
#[inline(always)]
fn to_service(ctx: &TcContext, l4: &L4, own: &IfaceInfo, vip: u32, svc: &Service) -> Decision {
    let key = conntrack::key(own.addr, vip, l4);
    // Replies go back into the client's container, through its veth.
    let mut reply = conntrack::entry(CT_SERVICE_REPLY, 0, 0, packet::ifindex(ctx), l4);
    reply.dst_mac = own.mac;
    reply.src_mac = own.host_mac;
    match service::open_flow(&key, l4, svc, &reply) {
        NewFlow::Open(e) => to_backend(ctx, l4, vip, &e),
        NewFlow::Refused => refuse(ctx, l4),
        NewFlow::Failed => drop(Outcome::DropNatFailed),
    }
}

/// A service flow's packet into its backend's container.
#[inline(always)]
fn to_backend(ctx: &TcContext, l4: &L4, vip: u32, e: &CtEntry) -> Decision {
    if nat::rewrite_dst(ctx, l4, vip, e.nat_addr, e.nat_port).is_err()
        || nat::set_macs(ctx, e).is_err()
    {
        return drop(Outcome::DropNatFailed);
    }
    service::traffic(e.backend_id, true, ctx.len());
    // SAFETY: a helper call with plain integer arguments.
    let verdict = unsafe { bpf_redirect_peer(e.ifindex, 0) } as i32;
    (Outcome::Service, verdict)
}

/// A backend's reply to a client of its service (entry `e`): the source becomes the VIP
/// again; into the client's container, or out of the uplink to a client outside.
#[inline(always)]
fn service_reply(ctx: &TcContext, l4: &L4, own: &IfaceInfo, e: &CtEntry) -> Decision {
    service::traffic(e.backend_id, false, ctx.len());
    if e.kind == CT_SERVICE_REPLY_OUT {
        return send_out(ctx, l4, own.addr, e, Outcome::ServiceReply);
    }
    if nat::rewrite_src(ctx, l4, own.addr, e.nat_addr, e.nat_port).is_err()
        || nat::set_macs(ctx, e).is_err()
    {
        return drop(Outcome::DropNatFailed);
    }
    // SAFETY: a helper call with plain integer arguments.
    let verdict = unsafe { bpf_redirect_peer(e.ifindex, 0) } as i32;
    (Outcome::ServiceReply, verdict)
}

/// Refuses a packet to a VIP that has no backend for it: a TCP reset, or an ICMP port
/// unreachable, back into the sender's container.
#[inline(always)]
fn refuse(ctx: &TcContext, l4: &L4) -> Decision {
    let outcome = match reject::tc(ctx, l4.proto, l4.tcp_flags) {
        Ok(outcome) => outcome,
        Err(()) => return drop(Outcome::DropNoBackend),
    };
    // Out of the veth it came in on: into the sender's container.
    // SAFETY: a helper call with plain integer arguments.
    let verdict = unsafe { bpf_redirect(packet::ifindex(ctx), 0) } as i32;
    (outcome, verdict)
}

/// Whether a masqueraded flow still holds its port: its reply entry there and its own
/// (recreated if it was evicted and the port is still free; another flow's, if another
/// container's flow to the same destination took the port meanwhile).
#[inline(always)]
fn masquerade_reply_held(
    ctx: &TcContext,
    l4: &L4,
    own: &IfaceInfo,
    dst: u32,
    out: &CtEntry,
) -> bool {
    let reply_key = CtKey {
        saddr: dst,
        daddr: out.nat_addr,
        sport: l4.dport,
        dport: out.nat_port,
        proto: l4.proto,
        pad: [0; 3],
    };
    match conntrack::peek(&reply_key) {
        Some(reply) => {
            reply.kind == CT_MASQ_REPLY && reply.nat_addr == own.addr && reply.nat_port == l4.sport
        }
        None => conntrack::insert_reply(&reply_key, &masquerade_reply(ctx, own, l4)),
    }
}

/// A container's new flow to a published port of the host. As Docker without its proxy,
/// only the destination changes: the server sees the sender, and its replies come back
/// through its own veth (flagged `IFACE_NAT_TARGET`), where conntrack gives them the
/// host's address and port as their source. A container reaching its own published port
/// (or whose tuple a live flow holds) gets its gateway and a port taken for the flow as
/// its source (Docker's masquerade of that case). `None`: not a published port (the
/// host's own address, handled as such).
#[inline(always)]
fn hairpin(ctx: &TcContext, l4: &L4, own: &IfaceInfo, dst: u32) -> Option<Decision> {
    let key = conntrack::key(own.addr, dst, l4);
    let target = endpoints::published(dst, l4.dport, l4.proto)?;
    // A TCP flow starts with a SYN; anything else without state is the host's to answer.
    if l4.proto == IPPROTO_TCP && l4.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return None;
    }
    let Some(ep) = endpoints::endpoint(target.addr) else {
        return Some(drop(Outcome::DropNoEndpoint));
    };
    let mut reply_key = CtKey {
        saddr: target.addr,
        daddr: own.addr,
        sport: target.port,
        dport: l4.sport,
        proto: l4.proto,
        pad: [0; 3],
    };
    // One entry on the stack, the reply direction first, then made the forward one in
    // place (from_container's frame is at the BPF stack limit).
    let mut e = conntrack::entry(
        CT_HAIRPIN_REPLY,
        own.addr,
        l4.sport,
        packet::ifindex(ctx),
        l4,
    );
    e.rev_addr = dst;
    e.rev_port = l4.dport;
    e.dst_mac = own.mac;
    e.src_mac = own.host_mac;
    // The sender reaching its own port would see its own address on both ends.
    let mut pooled = target.addr == own.addr;
    if !pooled && !conntrack::insert_reply(&reply_key, &e) {
        // This very flow, recorded by another CPU at the same time: its copy of the
        // packet goes through; this one is dropped (following the entry here would
        // overflow the BPF stack).
        if conntrack::exists(&key) {
            return Some(drop(Outcome::DropNatFailed));
        }
        match conntrack::peek(&reply_key) {
            // A leftover of this tuple's last flow, its forward direction gone.
            Some(old)
                if old.kind == CT_HAIRPIN_REPLY
                    && old.rev_addr == dst
                    && old.rev_port == l4.dport =>
            {
                if !conntrack::replace_reply(&reply_key, &e) {
                    return Some(drop(Outcome::DropNatFailed));
                }
            }
            // A live flow of another way in holds the tuple (a VIP's, another host
            // address's): this one takes a port of its own, as kernel NAT resolves a clash.
            _ => pooled = true,
        }
    }
    let source = if pooled {
        let Some(cfg) = conntrack::any_host_config() else {
            return Some(drop(Outcome::DropNoNatPort));
        };
        reply_key.daddr = own.gateway;
        let Some(port) = conntrack::take_port(cfg, &mut reply_key, &e) else {
            return Some(drop(Outcome::DropNoNatPort));
        };
        (own.gateway, port)
    } else {
        (own.addr, l4.sport)
    };
    e.kind = CT_HAIRPIN;
    e.nat_addr = target.addr;
    e.nat_port = target.port;
    e.ifindex = ep.ifindex;
    e.rev_addr = source.0;
    e.rev_port = source.1;
    e.dst_mac = ep.mac;
    e.src_mac = ep.host_mac;
    let Some(forward) = conntrack::claim(&key, &e, &reply_key) else {
        return Some(drop(Outcome::DropNatFailed));
    };
    Some(both_ways(ctx, l4, own.addr, dst, &forward.entry()))
}

/// Rewrites destination and source as a hairpin entry says and delivers the frame into
/// the container behind it.
#[inline(always)]
fn both_ways(ctx: &TcContext, l4: &L4, old_saddr: u32, old_daddr: u32, e: &CtEntry) -> Decision {
    // Between two containers one end of the flow keeps its address: no rewrite for it.
    let dst_changes = e.nat_addr != old_daddr || e.nat_port != l4.dport;
    let src_changes = e.rev_addr != old_saddr || e.rev_port != l4.sport;
    if (dst_changes && nat::rewrite_dst(ctx, l4, old_daddr, e.nat_addr, e.nat_port).is_err())
        || (src_changes && nat::rewrite_src(ctx, l4, old_saddr, e.rev_addr, e.rev_port).is_err())
        || nat::set_macs(ctx, e).is_err()
    {
        return drop(Outcome::DropNatFailed);
    }
    // SAFETY: a helper call with plain integer arguments.
    let verdict = unsafe { bpf_redirect_peer(e.ifindex, 0) } as i32;
    (Outcome::Hairpin, verdict)
}

/// The entry for the replies of `own`'s masqueraded flow: back into it, through the veth
/// its packet came in on.
#[inline(always)]
fn masquerade_reply(ctx: &TcContext, own: &IfaceInfo, l4: &L4) -> CtEntry {
    let mut reply = conntrack::entry(CT_MASQ_REPLY, own.addr, l4.sport, packet::ifindex(ctx), l4);
    reply.dst_mac = own.mac;
    reply.src_mac = own.host_mac;
    reply
}

/// A new outbound flow of a masquerading network: a port of the uplink's address is taken
/// for it (toward that destination), both directions recorded, the source translated.
#[inline(always)]
fn masquerade(ctx: &TcContext, l4: &L4, own: &IfaceInfo, dst: u32, cfg: &HostConfig) -> Decision {
    let mut reply_key = CtKey {
        saddr: dst,
        daddr: cfg.uplink_addr,
        sport: l4.dport,
        dport: 0,
        proto: l4.proto,
        pad: [0; 3],
    };
    let Some(port) = conntrack::take_port(cfg, &mut reply_key, &masquerade_reply(ctx, own, l4))
    else {
        return drop(Outcome::DropNoNatPort);
    };
    let out = conntrack::entry(CT_MASQ_OUT, cfg.uplink_addr, port, cfg.uplink_ifindex, l4);
    let Some(out) = conntrack::claim(&conntrack::key(own.addr, dst, l4), &out, &reply_key) else {
        return drop(Outcome::DropNatFailed);
    };
    let out = out.entry();
    send_out(ctx, l4, own.addr, &out, Outcome::Masquerade)
}

/// Translates the source as the flow's entry says (the published address and port, or
/// the masquerade address and port) and sends the packet out of the uplink, the kernel
/// filling in the next hop's MAC.
#[inline(always)]
fn send_out(ctx: &TcContext, l4: &L4, old_saddr: u32, e: &CtEntry, outcome: Outcome) -> Decision {
    if nat::rewrite_src(ctx, l4, old_saddr, e.nat_addr, e.nat_port).is_err() {
        return drop(Outcome::DropNatFailed);
    }
    // SAFETY: a helper call; no neighbour parameters (the kernel looks the next hop up).
    let verdict = unsafe { bpf_redirect_neigh(e.ifindex, core::ptr::null_mut(), 0, 0) } as i32;
    (outcome, verdict)
}

/// To a container: straight into its namespace if it is of the sender's network and the
/// network lets its containers talk.
#[inline(always)]
fn deliver(own: &IfaceInfo, ifindex: u32, network_id: u32) -> Decision {
    if network_id != own.network_id {
        return drop(Outcome::DropCrossNetwork);
    }
    if own.net_flags & NET_ICC == 0 {
        return drop(Outcome::DropIcc);
    }
    // Past the peer's host-side veth and the backlog queue, into its namespace.
    // SAFETY: a helper call with plain integer arguments.
    let verdict = unsafe { bpf_redirect_peer(ifindex, 0) } as i32;
    (Outcome::Forward, verdict)
}

/// Answers an ARP request for the gateway or a same-network peer by turning the request
/// into the reply and sending it back out of the veth it came from (into the container).
#[inline(always)]
fn arp(data: usize, data_end: usize, eth: &mut EthHdr, ifindex: u32, own: &IfaceInfo) -> Decision {
    let Ok(arp) = ptr_at_mut::<ArpHdr>(data, data_end, EthHdr::LEN) else {
        return drop(Outcome::DropMalformed);
    };
    // SAFETY: ptr_at checked the header lies inside the packet.
    let arp = unsafe { &mut *arp };
    if arp.htype != ARP_HTYPE_ETHERNET
        || arp.ptype != ETH_P_IPV4.to_ne_bytes()
        || arp.hlen != 6
        || arp.plen != 4
    {
        return drop(Outcome::DropMalformed);
    }
    if arp.sha != own.mac {
        return drop(Outcome::DropSpoofedMac);
    }
    let sender = u32::from_ne_bytes(arp.spa);
    // 0.0.0.0 is an address probe (RFC 5227).
    if sender != own.addr && sender != 0 {
        return drop(Outcome::DropSpoofedIp);
    }
    if arp.oper == ARP_REPLY {
        // The container answering the host.
        return (Outcome::Pass, TC_ACT_OK);
    }
    if arp.oper != ARP_REQUEST {
        return drop(Outcome::DropMalformed);
    }
    let target = u32::from_ne_bytes(arp.tpa);
    let peer_mac = if target == own.addr || target & own.mask != own.subnet {
        None
    } else {
        match endpoints::peer_in_subnet(own, target) {
            Peer::Found(peer) => Some(peer.mac),
            Peer::Nobody => None,
            Peer::NoRange => endpoints::endpoint(target)
                .filter(|ep| ep.network_id == own.network_id)
                .map(|ep| ep.mac),
        }
    };
    let answer = match peer_mac {
        _ if target == own.gateway => own.host_mac,
        Some(mac) => mac,
        None => return drop(Outcome::DropArpUnanswered),
    };
    arp.oper = ARP_REPLY;
    arp.tha = arp.sha;
    arp.tpa = arp.spa;
    arp.sha = answer;
    arp.spa = target.to_ne_bytes();
    eth.dst_addr = eth.src_addr;
    eth.src_addr = answer;
    // Out of the same veth: egress of the host end arrives in the container.
    // SAFETY: a helper call with plain integer arguments.
    let verdict = unsafe { bpf_redirect(ifindex, 0) } as i32;
    (Outcome::ArpReply, verdict)
}
