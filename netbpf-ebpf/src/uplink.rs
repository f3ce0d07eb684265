//! `from_uplink`: a frame arriving from outside on the host's uplink. Published ports are
//! translated to their container and delivered straight into it; everything else goes to
//! the host's stack untouched.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect_peer,
    programs::TcContext,
};
use netbpf_common::{
    conntrack::{CT_MASQ_REPLY, CT_PUBLISHED_IN, CT_PUBLISHED_REPLY, CtEntry, CtKey},
    stats::Outcome,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    conntrack,
    container::Decision,
    endpoints,
    nat::{self, IPPROTO_TCP, L4, TCP_ACK, TCP_SYN},
    packet::{ETH_P_IPV4, check_headers, ptr_at},
};

#[inline(always)]
fn pass() -> Decision {
    (Outcome::Pass, TC_ACT_OK)
}

#[inline(always)]
pub fn handle(ctx: &TcContext) -> Decision {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let outcome = check_headers(data, data_end, ctx.len());
    if outcome != Outcome::Pass {
        return (outcome, TC_ACT_SHOT);
    }
    let Ok(eth) = ptr_at::<EthHdr>(data, data_end, 0) else {
        return (Outcome::DropMalformed, TC_ACT_SHOT);
    };
    // SAFETY: ptr_at checked the header lies inside the packet.
    if unsafe { (*eth).ether_type } != ETH_P_IPV4 {
        return pass();
    }
    let Ok(ip) = ptr_at::<Ipv4Hdr>(data, data_end, EthHdr::LEN) else {
        return (Outcome::DropMalformed, TC_ACT_SHOT);
    };
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    let Some(l4) = nat::l4(data, data_end, ip) else {
        return pass();
    };
    let (saddr, daddr) = (
        u32::from_ne_bytes(ip.src_addr),
        u32::from_ne_bytes(ip.dst_addr),
    );
    // From outside, never from the host's own addresses: such a packet is forged.
    if conntrack::is_local(saddr) {
        return (Outcome::DropSpoofedIp, TC_ACT_SHOT);
    }
    let key = conntrack::key(saddr, daddr, &l4);
    if let Some(entry) = conntrack::lookup(&key, &l4) {
        // SAFETY: a pointer into the map's value, valid for this run.
        let e = unsafe { *entry };
        let outcome = match e.kind {
            CT_PUBLISHED_IN => Outcome::Published,
            CT_MASQ_REPLY => Outcome::MasqueradeReply,
            _ => return pass(),
        };
        return deliver(ctx, &l4, daddr, &e, outcome);
    }
    // A new flow to a published port of one of the host's own addresses?
    if !conntrack::is_local(daddr) {
        return pass();
    }
    let Some(target) = endpoints::published(daddr, l4.dport, l4.proto) else {
        return pass();
    };
    // A TCP flow starts with a SYN; anything else without state is the host's to answer.
    if l4.proto == IPPROTO_TCP && l4.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return pass();
    }
    let Some(ep) = endpoints::endpoint(target.addr) else {
        return (Outcome::DropNoEndpoint, TC_ACT_SHOT);
    };
    // SAFETY: the context of a tc program is an __sk_buff.
    let uplink = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex };
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
    if !conntrack::create(&key, &forward, &reply_key, &reply) {
        return (Outcome::DropNatFailed, TC_ACT_SHOT);
    }
    deliver(ctx, &l4, daddr, &forward, Outcome::Published)
}

/// Translates the destination as the flow's entry says and delivers the frame into the
/// container, addressed to it from its gateway.
#[inline(always)]
fn deliver(ctx: &TcContext, l4: &L4, old_daddr: u32, e: &CtEntry, outcome: Outcome) -> Decision {
    if nat::rewrite_dst(ctx, l4, old_daddr, e.nat_addr, e.nat_port).is_err()
        || nat::set_macs(ctx, &e.dst_mac, &e.src_mac).is_err()
    {
        return (Outcome::DropNatFailed, TC_ACT_SHOT);
    }
    // SAFETY: a helper call with plain integer arguments.
    let verdict = unsafe { bpf_redirect_peer(e.ifindex, 0) } as i32;
    (outcome, verdict)
}
