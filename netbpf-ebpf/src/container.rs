//! `from_container`: a frame leaving a container, as its host-side veth receives it.
//! The path: who sent it (the veth's endpoint), is the sender honest (MAC, IP), then ARP
//! answered in place, or IPv4 delivered: to a peer of the same network, to the host, or
//! dropped with its reason.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use netbpf_common::{
    net::{IfaceInfo, NET_ICC, NET_INTERNAL},
    stats::Outcome,
};
use network_types::{arp::ArpHdr, eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    endpoints,
    packet::{ETH_P_ARP, ETH_P_IPV4, ipv4_header_ok, is_multi_destination, ptr_at, ptr_at_mut},
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
    // SAFETY: the context of a tc program is an __sk_buff.
    let ifindex = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex };
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
        ETH_P_IPV4 => ipv4(data, data_end, ctx.len(), own),
        ETH_P_ARP => arp(data, data_end, eth, ifindex, own),
        _ => drop(Outcome::DropUnsupportedL3),
    }
}

#[inline(always)]
fn ipv4(data: usize, data_end: usize, frame_len: u32, own: &IfaceInfo) -> Decision {
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
    if dst == own.gateway {
        return (Outcome::Pass, TC_ACT_OK);
    }
    if let Some(peer) = endpoints::endpoint(dst) {
        if peer.network_id != own.network_id {
            return drop(Outcome::DropCrossNetwork);
        }
        if own.net_flags & NET_ICC == 0 {
            return drop(Outcome::DropIcc);
        }
        // Straight into the peer's namespace, past its host-side veth and the backlog.
        // SAFETY: a helper call with plain integer arguments.
        let verdict = unsafe { bpf_redirect_peer(peer.ifindex, 0) } as i32;
        return (Outcome::Forward, verdict);
    }
    if is_multi_destination(ip.dst_addr) || dst & own.mask == own.subnet {
        // The subnet's broadcast, or an address no container has: nobody to deliver to.
        let reason = if is_multi_destination(ip.dst_addr) || dst == own.subnet | !own.mask {
            Outcome::DropNotUnicast
        } else {
            Outcome::DropNoEndpoint
        };
        return drop(reason);
    }
    if own.net_flags & NET_INTERNAL != 0 {
        return drop(Outcome::DropInternal);
    }
    (Outcome::Pass, TC_ACT_OK)
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
    let answer = if target == own.gateway {
        own.host_mac
    } else {
        match endpoints::endpoint(target) {
            Some(peer) if peer.network_id == own.network_id && target != own.addr => peer.mac,
            _ => return drop(Outcome::DropArpUnanswered),
        }
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
