//! The host's uplink: a frame arriving from outside. Published ports are translated to
//! their container and delivered straight into it, as are the replies of masqueraded
//! flows; everything else goes to the host's stack untouched. The decision is the same at
//! tc and at XDP; only how the packet is rewritten and sent differs.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action, xdp_md},
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::{TcContext, XdpContext},
};
use netbpf_common::{
    conntrack::{
        CT_MASQ_REPLY, CT_PUBLISHED_IN, CT_PUBLISHED_REPLY, CT_SERVICE, CT_SERVICE_REPLY_OUT,
        CtEntry, CtKey,
    },
    service::{SVC_EXTERNAL, Service},
    stats::Outcome,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    conntrack::{self, Created},
    endpoints,
    icmp::{self, End, IcmpError},
    nat::{self, IPPROTO_TCP, L4, TCP_ACK, TCP_SYN},
    packet::{self, ETH_P_IPV4, check_headers, ptr_at},
    reset, service,
};

/// What to do with a frame from outside.
enum Action {
    Pass,
    Drop(Outcome),
    /// Translate the destination as the entry says and deliver into its container.
    Deliver {
        l4: L4,
        old_daddr: u32,
        entry: CtEntry,
        outcome: Outcome,
    },
    /// An ICMP error about a flow translated here: translate its quote back as the entry
    /// says and deliver it into the container.
    DeliverError {
        err: IcmpError,
        entry: CtEntry,
    },
    /// Turn the TCP segment into its reset and send it back out.
    Reset,
}

/// The decision, shared by both hooks (`uplink`: the interface the frame arrived on).
#[inline(always)]
fn decide(data: usize, data_end: usize, frame_len: u32, uplink: u32) -> Action {
    let outcome = check_headers(data, data_end, frame_len);
    if outcome != Outcome::Pass {
        return Action::Drop(outcome);
    }
    let Ok(eth) = ptr_at::<EthHdr>(data, data_end, 0) else {
        return Action::Drop(Outcome::DropMalformed);
    };
    // SAFETY: ptr_at checked the header lies inside the packet.
    if unsafe { (*eth).ether_type } != ETH_P_IPV4 {
        return Action::Pass;
    }
    let Ok(ip) = ptr_at::<Ipv4Hdr>(data, data_end, EthHdr::LEN) else {
        return Action::Drop(Outcome::DropMalformed);
    };
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    let Some(l4) = nat::l4(data, data_end, ip) else {
        return icmp_error(data, data_end, ip);
    };
    let (saddr, daddr) = (
        u32::from_ne_bytes(ip.src_addr),
        u32::from_ne_bytes(ip.dst_addr),
    );
    // From outside, never from the host's own addresses: such a packet is forged.
    if conntrack::is_local(saddr) {
        return Action::Drop(Outcome::DropSpoofedIp);
    }
    let key = conntrack::key(saddr, daddr, &l4);
    if let Some(entry) = conntrack::lookup(&key, &l4) {
        // SAFETY: a pointer into the map's value, valid for this run.
        let e = unsafe { *entry };
        let outcome = match e.kind {
            CT_PUBLISHED_IN => Outcome::Published,
            CT_MASQ_REPLY => Outcome::MasqueradeReply,
            CT_SERVICE if service::backend_alive(e.backend_id, e.nat_addr, e.nat_port) => {
                Outcome::Service
            }
            CT_SERVICE => {
                conntrack::forget(&key, &e);
                return refuse(&l4);
            }
            _ => return Action::Pass,
        };
        return Action::Deliver {
            l4,
            old_daddr: daddr,
            entry: e,
            outcome,
        };
    }
    // A new flow to a service reachable from outside?
    if let Some(svc) = service::lookup(daddr, l4.dport, l4.proto)
        && svc.flags & SVC_EXTERNAL != 0
    {
        return to_service(&key, &l4, svc, uplink);
    }
    // A new flow to a published port of one of the host's own addresses?
    if !conntrack::is_local(daddr) {
        return Action::Pass;
    }
    let Some(target) = endpoints::published(daddr, l4.dport, l4.proto) else {
        return Action::Pass;
    };
    // A TCP flow starts with a SYN; anything else without state is the host's to answer.
    if l4.proto == IPPROTO_TCP && l4.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return Action::Pass;
    }
    let Some(ep) = endpoints::endpoint(target.addr) else {
        return Action::Drop(Outcome::DropNoEndpoint);
    };
    let mut forward = conntrack::entry(CT_PUBLISHED_IN, target.addr, target.port, ep.ifindex, &l4);
    forward.dst_mac = ep.mac;
    forward.src_mac = ep.host_mac;
    let reply_key = CtKey {
        saddr: target.addr,
        daddr: saddr,
        sport: target.port,
        dport: l4.sport,
        proto: l4.proto,
        pad: [0; 3],
    };
    let reply = conntrack::entry(CT_PUBLISHED_REPLY, daddr, l4.dport, uplink, &l4);
    let Some(entry) = conntrack::create(&key, &forward, &reply_key, &reply) else {
        return Action::Drop(Outcome::DropNatFailed);
    };
    let entry = entry.entry();
    Action::Deliver {
        l4,
        old_daddr: daddr,
        entry,
        outcome: Outcome::Published,
    }
}

/// A new flow from outside to an external service: its backend chosen, both directions
/// recorded (the replies leave through the uplink), delivered into the backend.
#[inline(always)]
fn to_service(key: &CtKey, l4: &L4, svc: &Service, uplink: u32) -> Action {
    // A TCP flow starts with a SYN; anything else without state is refused.
    if l4.proto == IPPROTO_TCP && l4.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return refuse(l4);
    }
    let Some((id, backend)) = service::schedule(svc, key.saddr, key.daddr) else {
        return refuse(l4);
    };
    let Some(ep) = endpoints::endpoint(backend.addr) else {
        return refuse(l4);
    };
    let mut forward = conntrack::entry(CT_SERVICE, backend.addr, backend.port, ep.ifindex, l4);
    forward.dst_mac = ep.mac;
    forward.src_mac = ep.host_mac;
    forward.backend_id = id;
    let reply_key = CtKey {
        saddr: backend.addr,
        daddr: key.saddr,
        sport: backend.port,
        dport: l4.sport,
        proto: l4.proto,
        pad: [0; 3],
    };
    let mut reply = conntrack::entry(CT_SERVICE_REPLY_OUT, key.daddr, l4.dport, uplink, l4);
    reply.backend_id = id;
    let entry = match conntrack::create(key, &forward, &reply_key, &reply) {
        Some(Created::New(e)) => {
            service::opened(id);
            e
        }
        Some(Created::Existing(e)) => e,
        None => return Action::Drop(Outcome::DropNatFailed),
    };
    Action::Deliver {
        l4: *l4,
        old_daddr: key.daddr,
        entry,
        outcome: Outcome::Service,
    }
}

/// A packet to a VIP without a backend for it: TCP is answered with a reset, the rest
/// dropped.
#[inline(always)]
fn refuse(l4: &L4) -> Action {
    if l4.proto == IPPROTO_TCP && reset::answerable(l4.tcp_flags) {
        Action::Reset
    } else {
        Action::Drop(Outcome::DropNoBackend)
    }
}

/// An ICMP error from outside about a packet that left translated: a published port's
/// reply (the quote's source is the host's address and port) or a masqueraded packet (the
/// uplink's address and a port taken for it).
#[inline(always)]
fn icmp_error(data: usize, data_end: usize, ip: &Ipv4Hdr) -> Action {
    let Some(err) = icmp::parse(data, data_end, ip) else {
        return Action::Pass;
    };
    if conntrack::is_local(u32::from_ne_bytes(ip.src_addr)) {
        return Action::Drop(Outcome::DropSpoofedIp);
    }
    // An error goes to the quoted packet's source.
    if u32::from_ne_bytes(ip.dst_addr) != err.addr(End::Source) {
        return Action::Pass;
    }
    match conntrack::get(&err.key()) {
        Some(entry) if entry.kind == CT_PUBLISHED_IN || entry.kind == CT_MASQ_REPLY => {
            Action::DeliverError { err, entry }
        }
        _ => Action::Pass,
    }
}

/// `from_uplink` (tc): rewrites through the kernel's csum helpers, delivers with
/// `bpf_redirect_peer`.
#[inline(always)]
pub fn handle_tc(ctx: &TcContext) -> (Outcome, i32) {
    match decide(ctx.data(), ctx.data_end(), ctx.len(), packet::ifindex(ctx)) {
        Action::Pass => (Outcome::Pass, TC_ACT_OK),
        Action::Drop(outcome) => (outcome, TC_ACT_SHOT),
        Action::Deliver {
            l4,
            old_daddr,
            entry: e,
            outcome,
        } => {
            if nat::rewrite_dst(ctx, &l4, old_daddr, e.nat_addr, e.nat_port).is_err()
                || nat::set_macs(ctx, &e.dst_mac, &e.src_mac).is_err()
            {
                return (Outcome::DropNatFailed, TC_ACT_SHOT);
            }
            // SAFETY: a helper call with plain integer arguments.
            let verdict = unsafe { bpf_redirect_peer(e.ifindex, 0) } as i32;
            (outcome, verdict)
        }
        Action::DeliverError { err, entry: e } => {
            if icmp::translate(
                ctx.data(),
                ctx.data_end(),
                &err,
                End::Source,
                e.nat_addr,
                e.nat_port,
            )
            .is_err()
                || nat::set_macs(ctx, &e.dst_mac, &e.src_mac).is_err()
            {
                return (Outcome::DropNatFailed, TC_ACT_SHOT);
            }
            // SAFETY: a helper call with plain integer arguments.
            let verdict = unsafe { bpf_redirect_peer(e.ifindex, 0) } as i32;
            (Outcome::IcmpError, verdict)
        }
        Action::Reset => {
            if packet::is_gso(ctx) || reset::refuse(ctx.data(), ctx.data_end()).is_err() {
                return (Outcome::DropNoBackend, TC_ACT_SHOT);
            }
            // SAFETY: a helper call with plain integer arguments.
            let verdict = unsafe { bpf_redirect(packet::ifindex(ctx), 0) } as i32;
            (Outcome::ServiceReset, verdict)
        }
    }
}

/// `xdp_uplink`: rewrites in place with incremental checksums, redirects to the
/// container's host-side veth (whose peer must have NAPI: GRO on, which wiring sets).
#[inline(always)]
pub fn handle_xdp(ctx: &XdpContext) -> (Outcome, u32) {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    // Without the xdp.frags flag a frame is one buffer: data..data_end is all of it.
    let frame_len = (data_end - data) as u32;
    // SAFETY: the context of an XDP program is an xdp_md.
    let uplink = unsafe { (*(ctx.as_ptr() as *const xdp_md)).ingress_ifindex };
    match decide(data, data_end, frame_len, uplink) {
        Action::Pass => (Outcome::Pass, xdp_action::XDP_PASS),
        Action::Drop(outcome) => (outcome, xdp_action::XDP_DROP),
        Action::Deliver {
            l4,
            old_daddr,
            entry: e,
            outcome,
        } => {
            if nat::xdp_rewrite_dst(
                data, data_end, &l4, old_daddr, e.nat_addr, e.nat_port, &e.dst_mac, &e.src_mac,
            )
            .is_err()
            {
                return (Outcome::DropNatFailed, xdp_action::XDP_DROP);
            }
            // SAFETY: a helper call with plain integer arguments.
            let verdict = unsafe { bpf_redirect(e.ifindex, 0) } as u32;
            (outcome, verdict)
        }
        Action::DeliverError { err, entry: e } => {
            if icmp::translate(data, data_end, &err, End::Source, e.nat_addr, e.nat_port).is_err()
                || nat::xdp_set_macs(data, data_end, &e.dst_mac, &e.src_mac).is_err()
            {
                return (Outcome::DropNatFailed, xdp_action::XDP_DROP);
            }
            // SAFETY: a helper call with plain integer arguments.
            let verdict = unsafe { bpf_redirect(e.ifindex, 0) } as u32;
            (Outcome::IcmpError, verdict)
        }
        Action::Reset => match reset::refuse(data, data_end) {
            Ok(()) => (Outcome::ServiceReset, xdp_action::XDP_TX),
            Err(()) => (Outcome::DropNoBackend, xdp_action::XDP_DROP),
        },
    }
}
