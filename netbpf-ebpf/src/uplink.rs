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
    conntrack, endpoints,
    icmp::{self, End, IcmpError},
    nat::{self, IPPROTO_TCP, L4, TCP_ACK, TCP_SYN},
    packet::{self, ETH_P_IPV4, check_headers, ptr_at},
    reject,
    service::{self, NewFlow},
};

/// A hook's way of carrying out the shared decision: its verdicts, how it rewrites a
/// frame and sends it. Each path calls the hook at once, with scalars and references, so
/// no action value with variant-dependent fields travels between paths (LLVM would copy
/// the fields a path leaves unset where paths join, which the verifier refuses).
pub trait Uplink {
    type Verdict: Copy;
    const PASS: Self::Verdict;
    const DROP: Self::Verdict;
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// The whole frame's length (an skb's data may cover only its linear part).
    fn frame_len(&self) -> u32;
    fn ifindex(&self) -> u32;
    /// Translates the destination as the entry says and delivers into its container.
    fn deliver(&self, l4: &L4, old_daddr: u32, e: &CtEntry) -> Result<Self::Verdict, ()>;
    /// Translates an ICMP error's quote back and delivers into the entry's container.
    fn deliver_error(&self, err: &IcmpError, e: &CtEntry) -> Result<Self::Verdict, ()>;
    /// Turns the packet into its refusal and sends it back out.
    fn refuse(&self, proto: u8, tcp_flags: u8) -> Result<(Outcome, Self::Verdict), ()>;
}

type Decision<H> = (Outcome, <H as Uplink>::Verdict);

#[inline(always)]
fn pass<H: Uplink>() -> Decision<H> {
    (Outcome::Pass, H::PASS)
}

#[inline(always)]
fn drop<H: Uplink>(outcome: Outcome) -> Decision<H> {
    (outcome, H::DROP)
}

#[inline(always)]
fn deliver<H: Uplink>(
    h: &H,
    l4: &L4,
    old_daddr: u32,
    e: &CtEntry,
    outcome: Outcome,
) -> Decision<H> {
    if outcome == Outcome::Service {
        service::traffic(e.backend_id, true, h.frame_len());
    }
    match h.deliver(l4, old_daddr, e) {
        Ok(verdict) => (outcome, verdict),
        Err(()) => drop::<H>(Outcome::DropNatFailed),
    }
}

/// A packet to a VIP without a backend for it: answered (a reset, or port unreachable).
#[inline(always)]
fn refuse<H: Uplink>(h: &H, l4: &L4) -> Decision<H> {
    h.refuse(l4.proto, l4.tcp_flags)
        .unwrap_or((Outcome::DropNoBackend, H::DROP))
}

/// The decision, shared by both hooks.
#[inline(always)]
pub fn handle<H: Uplink>(h: &H) -> Decision<H> {
    let (data, data_end, uplink) = (h.data(), h.data_end(), h.ifindex());
    let outcome = check_headers(data, data_end, h.frame_len());
    if outcome != Outcome::Pass {
        return drop::<H>(outcome);
    }
    let Ok(eth) = ptr_at::<EthHdr>(data, data_end, 0) else {
        return drop::<H>(Outcome::DropMalformed);
    };
    // SAFETY: ptr_at checked the header lies inside the packet.
    if unsafe { (*eth).ether_type } != ETH_P_IPV4 {
        return pass::<H>();
    }
    let Ok(ip) = ptr_at::<Ipv4Hdr>(data, data_end, EthHdr::LEN) else {
        return drop::<H>(Outcome::DropMalformed);
    };
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    let Some(l4) = nat::l4(data, data_end, ip) else {
        return icmp_error(h, ip);
    };
    let (saddr, daddr) = (
        u32::from_ne_bytes(ip.src_addr),
        u32::from_ne_bytes(ip.dst_addr),
    );
    // A recorded flow first (no flow is recorded with a host address as its source from
    // outside, so a forged one finds nothing here and is caught below).
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
                return refuse(h, &l4);
            }
            _ => return pass::<H>(),
        };
        return deliver(h, &l4, daddr, &e, outcome);
    }
    // From outside, never from the host's own addresses: such a packet is forged.
    if conntrack::is_local(saddr) {
        return drop::<H>(Outcome::DropSpoofedIp);
    }
    // A new flow to a service reachable from outside?
    if let Some(svc) = service::lookup(daddr, l4.dport, l4.proto)
        && svc.flags & SVC_EXTERNAL != 0
    {
        return to_service(h, &key, &l4, svc, uplink);
    }
    // A new flow to a published port of one of the host's own addresses?
    if !conntrack::is_local(daddr) {
        return pass::<H>();
    }
    let Some(target) = endpoints::published(daddr, l4.dport, l4.proto) else {
        return pass::<H>();
    };
    // A TCP flow starts with a SYN; anything else without state is the host's to answer.
    if l4.proto == IPPROTO_TCP && l4.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return pass::<H>();
    }
    let Some(ep) = endpoints::endpoint(target.addr) else {
        return drop::<H>(Outcome::DropNoEndpoint);
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
        return drop::<H>(Outcome::DropNatFailed);
    };
    deliver(h, &l4, daddr, &entry.entry(), Outcome::Published)
}

/// A new flow from outside to an external service: its backend chosen, both directions
/// recorded (the replies leave through the uplink), delivered into the backend.
#[inline(always)]
fn to_service<H: Uplink>(h: &H, key: &CtKey, l4: &L4, svc: &Service, uplink: u32) -> Decision<H> {
    let reply = conntrack::entry(CT_SERVICE_REPLY_OUT, 0, 0, uplink, l4);
    match service::open_flow(key, l4, svc, &reply) {
        NewFlow::Open(e) => deliver(h, l4, key.daddr, &e, Outcome::Service),
        NewFlow::Refused => refuse(h, l4),
        NewFlow::Failed => drop::<H>(Outcome::DropNatFailed),
    }
}

/// An ICMP error from outside about a packet that left translated: a published port's
/// reply (the quote's source is the host's address and port), a masqueraded packet (the
/// uplink's address and a port taken for it) or an external service's reply (the VIP and
/// its port). It goes into the container that sent the packet, quoting it as it left
/// there.
#[inline(always)]
fn icmp_error<H: Uplink>(h: &H, ip: &Ipv4Hdr) -> Decision<H> {
    let Some(err) = icmp::parse(h.data(), h.data_end(), ip) else {
        return pass::<H>();
    };
    if conntrack::is_local(u32::from_ne_bytes(ip.src_addr)) {
        return drop::<H>(Outcome::DropSpoofedIp);
    }
    // An error goes to the quoted packet's source.
    if u32::from_ne_bytes(ip.dst_addr) != err.addr(End::Source) {
        return pass::<H>();
    }
    match conntrack::get(&err.key()) {
        Some(e) if e.kind == CT_PUBLISHED_IN || e.kind == CT_MASQ_REPLY || e.kind == CT_SERVICE => {
            match h.deliver_error(&err, &e) {
                Ok(verdict) => (Outcome::IcmpError, verdict),
                Err(()) => drop::<H>(Outcome::DropNatFailed),
            }
        }
        _ => pass::<H>(),
    }
}

/// `from_uplink` (tc): rewrites as the skb's checksum state asks ([`nat`]), delivers with
/// `bpf_redirect_peer`.
pub struct Tc<'a>(pub &'a TcContext);

impl Uplink for Tc<'_> {
    type Verdict = i32;
    const PASS: i32 = TC_ACT_OK;
    const DROP: i32 = TC_ACT_SHOT;

    #[inline(always)]
    fn data(&self) -> usize {
        self.0.data()
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        self.0.data_end()
    }

    #[inline(always)]
    fn frame_len(&self) -> u32 {
        self.0.len()
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        packet::ifindex(self.0)
    }

    #[inline(always)]
    fn deliver(&self, l4: &L4, old_daddr: u32, e: &CtEntry) -> Result<i32, ()> {
        nat::rewrite_dst(self.0, l4, old_daddr, e.nat_addr, e.nat_port).map_err(|_| ())?;
        nat::set_macs(self.0, e).map_err(|_| ())?;
        // SAFETY: a helper call with plain integer arguments.
        Ok(unsafe { bpf_redirect_peer(e.ifindex, 0) } as i32)
    }

    #[inline(always)]
    fn deliver_error(&self, err: &IcmpError, e: &CtEntry) -> Result<i32, ()> {
        icmp::translate(
            self.data(),
            self.data_end(),
            err,
            End::Source,
            e.nat_addr,
            e.nat_port,
        )?;
        nat::set_macs(self.0, e).map_err(|_| ())?;
        // SAFETY: a helper call with plain integer arguments.
        Ok(unsafe { bpf_redirect_peer(e.ifindex, 0) } as i32)
    }

    #[inline(always)]
    fn refuse(&self, proto: u8, tcp_flags: u8) -> Result<(Outcome, i32), ()> {
        let outcome = reject::tc(self.0, proto, tcp_flags)?;
        // Back out of the interface it came in on.
        // SAFETY: a helper call with plain integer arguments.
        Ok((outcome, unsafe { bpf_redirect(self.ifindex(), 0) } as i32))
    }
}

/// `xdp_uplink`: rewrites in place with incremental checksums, redirects to the
/// container's host-side veth (whose peer must have NAPI: GRO on, which wiring sets).
pub struct Xdp<'a>(pub &'a XdpContext);

impl Uplink for Xdp<'_> {
    type Verdict = u32;
    const PASS: u32 = xdp_action::XDP_PASS;
    const DROP: u32 = xdp_action::XDP_DROP;

    #[inline(always)]
    fn data(&self) -> usize {
        self.0.data()
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        self.0.data_end()
    }

    /// Without the xdp.frags flag a frame is one buffer: data..data_end is all of it.
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        (self.data_end() - self.data()) as u32
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context of an XDP program is an xdp_md.
        unsafe { (*(self.0.as_ptr() as *const xdp_md)).ingress_ifindex }
    }

    #[inline(always)]
    fn deliver(&self, l4: &L4, old_daddr: u32, e: &CtEntry) -> Result<u32, ()> {
        nat::xdp_rewrite_dst(self.data(), self.data_end(), l4, old_daddr, e)?;
        // SAFETY: a helper call with plain integer arguments.
        Ok(unsafe { bpf_redirect(e.ifindex, 0) } as u32)
    }

    #[inline(always)]
    fn deliver_error(&self, err: &IcmpError, e: &CtEntry) -> Result<u32, ()> {
        let (data, data_end) = (self.data(), self.data_end());
        icmp::translate(data, data_end, err, End::Source, e.nat_addr, e.nat_port)?;
        nat::write_macs(data, data_end, e)?;
        // SAFETY: a helper call with plain integer arguments.
        Ok(unsafe { bpf_redirect(e.ifindex, 0) } as u32)
    }

    #[inline(always)]
    fn refuse(&self, proto: u8, tcp_flags: u8) -> Result<(Outcome, u32), ()> {
        let outcome = reject::xdp(self.0, proto, tcp_flags)?;
        Ok((outcome, xdp_action::XDP_TX))
    }
}
