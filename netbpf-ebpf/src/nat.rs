//! Address and port translation: the L4 header's ports, rewriting a destination or source
//! with the checksums kept right, incrementally (RFC 1624). At tc the sender's checksum
//! state decides how: read off the kernel's sk_buff ([`crate::skb`]), it leaves only
//! CHECKSUM_COMPLETE (whose skb->csum only a helper can write) to the csum helpers, which
//! also serve a kernel whose layout the loader could not read. XDP has no such state and
//! updates by hand.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use core::mem::offset_of;

use netbpf_common::conntrack::CtEntry;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    packet::{ptr_at, ptr_at_mut},
    skb::{self, CHECKSUM_NONE, CHECKSUM_PARTIAL, CHECKSUM_UNNECESSARY},
};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

const IP_CSUM_OFF: usize = EthHdr::LEN + 10;
const IP_SADDR_OFF: usize = EthHdr::LEN + 12;
const IP_DADDR_OFF: usize = EthHdr::LEN + 16;

const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;

/// The transport header of a TCP or UDP packet, or an ICMP echo, whose identifier plays
/// the part of a port: the request's source port, the reply's destination port (the
/// other is 0), so that a reply's tuple mirrors its request's as for TCP and UDP.
#[derive(Clone, Copy)]
pub struct L4 {
    pub proto: u8,
    /// Offset of the TCP/UDP/ICMP header from the start of the frame (at most 74: bytes
    /// keep the struct small on a crowded stack, and bounded for the verifier).
    offset: u8,
    /// Ports as they sit in the packet (network byte order).
    pub sport: u16,
    pub dport: u16,
    /// TCP flags (0 for UDP and ICMP).
    pub tcp_flags: u8,
    /// Where the source and destination "ports" sit, from `offset`.
    sport_at: u8,
    dport_at: u8,
}

impl L4 {
    /// Offset of the transport header.
    pub fn offset(&self) -> usize {
        usize::from(self.offset)
    }

    fn sport_offset(&self) -> usize {
        usize::from(self.offset) + usize::from(self.sport_at)
    }

    fn dport_offset(&self) -> usize {
        usize::from(self.offset) + usize::from(self.dport_at)
    }

    pub fn csum_offset(&self) -> usize {
        self.offset()
            + match self.proto {
                IPPROTO_TCP => 16,
                IPPROTO_UDP => 6,
                _ => 2,
            }
    }

    /// Whether a packet like this may start a translated flow: not an ICMP echo reply
    /// (its "source port" is no port at all).
    pub fn starts_flows(&self) -> bool {
        self.proto != IPPROTO_ICMP || self.sport_at != 0
    }

    /// Whether the "port" at `at` is none: an ICMP echo has its identifier on one side
    /// only (the request's source, the reply's destination), the other side's offset
    /// being the type and code, never to be written.
    fn not_a_port(&self, at: usize) -> bool {
        self.proto == IPPROTO_ICMP && at == self.offset()
    }

    /// ICMP has no pseudo header: an address change leaves its checksum alone.
    pub fn has_pseudo_header(&self) -> bool {
        self.proto != IPPROTO_ICMP
    }

    fn csum_flags(&self) -> u64 {
        // A UDP checksum of 0 means "none": keep it so (and never produce 0).
        if self.proto == IPPROTO_UDP {
            u64::from(BPF_F_MARK_MANGLED_0)
        } else {
            0
        }
    }
}

/// The ports of a TCP or UDP packet, or the identifier of an ICMP echo; `None` for other
/// protocols and ICMP types, for fragments after the first (they carry no ports) and for
/// a transport header cut short.
#[inline(always)]
pub fn l4(data: usize, data_end: usize, ip: &Ipv4Hdr) -> Option<L4> {
    // Through memory, volatile: every field is then loaded on every path. Otherwise LLVM
    // may leave the fields of the `None` path unset and still copy their registers where
    // paths join, which the verifier refuses (reading an uninitialised register).
    let mut slot = L4::NONE;
    // SAFETY: a local, written and read whole.
    let l4 = unsafe {
        core::ptr::write_volatile(&mut slot, parse_l4(data, data_end, ip));
        core::ptr::read_volatile(&slot)
    };
    (l4.proto != 0).then_some(l4)
}

impl L4 {
    /// No transport header.
    const NONE: L4 = L4 {
        proto: 0,
        offset: 0,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        sport_at: 0,
        dport_at: 0,
    };
}

#[inline(always)]
fn parse_l4(data: usize, data_end: usize, ip: &Ipv4Hdr) -> L4 {
    if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP && ip.proto != IPPROTO_ICMP {
        return L4::NONE;
    }
    // Fragment offset (13 bits): only the first fragment has the ports.
    if u16::from_be_bytes(ip.frags) & 0x1fff != 0 {
        return L4::NONE;
    }
    let offset = EthHdr::LEN + usize::from(ip.ihl());
    // Bound the offset for the verifier: ihl() is at most 60.
    if offset > EthHdr::LEN + 60 {
        return L4::NONE;
    }
    if ip.proto == IPPROTO_ICMP {
        return icmp_echo(data, data_end, offset as u8);
    }
    let Ok(ports) = ptr_at::<[u16; 2]>(data, data_end, offset) else {
        return L4::NONE;
    };
    // SAFETY: ptr_at checked the ports lie inside the packet.
    let [sport, dport] = unsafe { *ports };
    let tcp_flags = if ip.proto == IPPROTO_TCP {
        let Ok(header) = ptr_at::<[u8; 20]>(data, data_end, offset) else {
            return L4::NONE;
        };
        // SAFETY: as above, for the whole TCP header.
        unsafe { (*header)[13] }
    } else {
        if ptr_at::<[u8; 8]>(data, data_end, offset).is_err() {
            return L4::NONE;
        }
        0
    };
    L4 {
        proto: ip.proto,
        offset: offset as u8,
        sport,
        dport,
        tcp_flags,
        sport_at: 0,
        dport_at: 2,
    }
}

/// An ICMP echo request or reply (8-byte header: type, code, checksum, id, sequence).
#[inline(always)]
fn icmp_echo(data: usize, data_end: usize, offset: u8) -> L4 {
    let Ok(header) = ptr_at::<[u8; 8]>(data, data_end, usize::from(offset)) else {
        return L4::NONE;
    };
    // SAFETY: ptr_at checked the header lies inside the packet.
    let header = unsafe { *header };
    let id = u16::from_ne_bytes([header[4], header[5]]);
    let (sport, dport, sport_at, dport_at) = match header[0] {
        ICMP_ECHO_REQUEST => (id, 0, 4, 0),
        ICMP_ECHO_REPLY => (0, id, 0, 4),
        _ => return L4::NONE,
    };
    L4 {
        proto: IPPROTO_ICMP,
        offset,
        sport,
        dport,
        tcp_flags: 0,
        sport_at,
        dport_at,
    }
}

/// Rewrites the destination address and port (DNAT).
#[inline(always)]
pub fn rewrite_dst(
    ctx: &TcContext,
    l4: &L4,
    old_addr: u32,
    addr: u32,
    port: u16,
) -> Result<(), i64> {
    rewrite(
        ctx,
        l4,
        IP_DADDR_OFF,
        l4.dport_offset(),
        old_addr,
        addr,
        l4.dport,
        port,
    )
}

/// Rewrites the source address and port (the reverse of a DNAT, or SNAT).
#[inline(always)]
pub fn rewrite_src(
    ctx: &TcContext,
    l4: &L4,
    old_addr: u32,
    addr: u32,
    port: u16,
) -> Result<(), i64> {
    rewrite(
        ctx,
        l4,
        IP_SADDR_OFF,
        l4.sport_offset(),
        old_addr,
        addr,
        l4.sport,
        port,
    )
}

#[allow(clippy::too_many_arguments, reason = "one place for both directions")]
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    l4: &L4,
    addr_off: usize,
    port_off: usize,
    old_addr: u32,
    addr: u32,
    old_port: u16,
    port: u16,
) -> Result<(), i64> {
    if l4.not_a_port(port_off) {
        return Err(-1);
    }
    // Written directly: the address and port, and the IPv4 header's checksum, which no
    // sender leaves to be completed (RFC 1624).
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let ip_csum = ptr_at_mut::<u16>(data, data_end, IP_CSUM_OFF).map_err(|()| -1i64)?;
    let addr_at = ptr_at_mut::<u32>(data, data_end, addr_off).map_err(|()| -1i64)?;
    let port_at = ptr_at_mut::<u16>(data, data_end, port_off).map_err(|()| -1i64)?;
    // SAFETY: every pointer was bounds-checked by ptr_at; tc may write the packet.
    unsafe {
        *ip_csum = csum_replace(*ip_csum, &words(old_addr), &words(addr));
        *addr_at = addr;
        *port_at = port;
    }
    let csum = l4.csum_offset();
    let csum_at = ptr_at_mut::<u16>(data, data_end, csum).map_err(|()| -1i64)?;
    // SAFETY: bounds-checked by ptr_at.
    let before = unsafe { *csum_at };
    // A UDP checksum of 0 means "none": keep it so.
    if l4.proto == IPPROTO_UDP && before == 0 {
        return Ok(());
    }
    let change = sum_words(&words(old_addr), &words(addr));
    // The sender's checksum state, where the kernel says it without a call.
    match skb::csum_state(ctx) {
        CHECKSUM_NONE | CHECKSUM_UNNECESSARY => {
            // SAFETY: bounds-checked by ptr_at above.
            unsafe { *csum_at = completed(before, l4, old_addr, addr, old_port, port) };
            return Ok(());
        }
        CHECKSUM_PARTIAL => {
            // The field holds the pseudo header's sum, which only the address is part of.
            if l4.has_pseudo_header() {
                // SAFETY: as above.
                unsafe { *csum_at = fold(u32::from(before) + u32::from(change)) };
            }
            return Ok(());
        }
        // CHECKSUM_COMPLETE (skb->csum must follow, which only a helper can write), or a
        // state the loader could not locate: the helpers, which know it. Below, the state
        // is whatever the helpers find (it is COMPLETE only where the loader located it).
        _ => {}
    }
    if !l4.has_pseudo_header() || change == 0 || change == 0xffff {
        // The address leaves the checksum as it is (an ICMP echo has no pseudo header; or
        // the address kept, mostly): the port through the kernel, which knows whether the
        // checksum carries it.
        if old_port != port {
            ctx.l4_csum_replace(
                csum,
                u64::from(old_port),
                u64::from(port),
                l4.csum_flags() | 2,
            )?;
        }
        return Ok(());
    }
    // The address's part through the kernel, which knows whether the sender left the
    // checksum to be completed (CHECKSUM_PARTIAL: the field holds the pseudo header's sum
    // and only that part changes) or whether skb->csum covers it (CHECKSUM_COMPLETE).
    ctx.l4_csum_replace(
        csum,
        u64::from(old_addr),
        u64::from(addr),
        l4.csum_flags() | u64::from(BPF_F_PSEUDO_HDR) | 4,
    )?;
    // Many translations keep the port (-p 80:80, a VIP on its backends' port).
    if old_port == port {
        return Ok(());
    }
    // The port's part, which only a completed checksum carries, without a second call:
    // the kernel added the address's change to a pseudo header's sum (partial, possible
    // only where the loader could not locate the state) or took it from a complement
    // (completed), and the field tells which, as the change is not zero.
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let csum_at = ptr_at_mut::<u16>(data, data_end, csum).map_err(|()| -1i64)?;
    // SAFETY: bounds-checked by ptr_at (again: the helper may have moved the data).
    unsafe {
        let after = *csum_at;
        let partial = fold(u32::from(before) + u32::from(change));
        if !same_sum(after, partial) {
            let mut sum = csum_replace(after, &[old_port], &[port]);
            // In UDP, a computed 0 is sent as all ones (0 means "no checksum").
            if l4.proto == IPPROTO_UDP && sum == 0 {
                sum = 0xffff;
            }
            *csum_at = sum;
        }
    }
    Ok(())
}

/// A completed transport checksum brought up to date for the address and port replaced
/// (the address only where a pseudo header covers it). UDP's 0 ("no checksum") is the
/// caller's to keep.
#[inline(always)]
fn completed(check: u16, l4: &L4, old_addr: u32, addr: u32, old_port: u16, port: u16) -> u16 {
    // Zero words in place of the address where it is not covered: !0 + 0 sums to zero.
    let (old, new) = if l4.has_pseudo_header() {
        (words(old_addr), words(addr))
    } else {
        ([0; 2], [0; 2])
    };
    let sum = csum_replace(check, &[old[0], old[1], old_port], &[new[0], new[1], port]);
    // In UDP, a computed 0 is sent as all ones (0 means "no checksum").
    if l4.proto == IPPROTO_UDP && sum == 0 {
        0xffff
    } else {
        sum
    }
}

/// The ones'-complement sum of `new` minus `old`, folded (0 and 0xffff both mean zero).
#[inline(always)]
fn sum_words(old: &[u16; 2], new: &[u16; 2]) -> u16 {
    fold(u32::from(!old[0]) + u32::from(!old[1]) + u32::from(new[0]) + u32::from(new[1]))
}

/// Whether two checksums are the same ones'-complement number (0 and 0xffff are both zero).
#[inline(always)]
fn same_sum(a: u16, b: u16) -> bool {
    a == b || (a == 0 || a == 0xffff) && (b == 0 || b == 0xffff)
}

/// Rewrites the Ethernet addresses as the flow's entry says (a frame delivered into a
/// container must be addressed to it, from its gateway).
#[inline(always)]
pub fn set_macs(ctx: &TcContext, e: &CtEntry) -> Result<(), i64> {
    write_macs(ctx.data(), ctx.data_end(), e).map_err(|()| -1)
}

/// Folds a 32-bit ones'-complement sum into 16 bits.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 incremental update of a checksum for 16-bit words `old` replaced by `new`
/// (all as they sit in the packet: the sum does not depend on byte order).
#[inline(always)]
pub fn csum_replace(check: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut sum = u32::from(!check);
    for w in old {
        sum += u32::from(!*w);
    }
    for w in new {
        sum += u32::from(*w);
    }
    !fold(sum)
}

#[inline(always)]
pub fn words(addr: u32) -> [u16; 2] {
    let b = addr.to_ne_bytes();
    [
        u16::from_ne_bytes([b[0], b[1]]),
        u16::from_ne_bytes([b[2], b[3]]),
    ]
}

/// The XDP twin of [`rewrite_dst`] and [`set_macs`], as the flow's entry says: no skb,
/// no csum helpers, so the checksums are updated by hand (RFC 1624) and the headers
/// written directly.
#[inline(always)]
pub fn xdp_rewrite_dst(
    data: usize,
    data_end: usize,
    l4: &L4,
    old_addr: u32,
    e: &CtEntry,
) -> Result<(), ()> {
    let (addr, port) = (e.nat_addr, e.nat_port);
    if l4.not_a_port(l4.dport_offset()) {
        return Err(());
    }
    let ip_csum = ptr_at::<u16>(data, data_end, IP_CSUM_OFF)? as *mut u16;
    let daddr = ptr_at::<u32>(data, data_end, IP_DADDR_OFF)? as *mut u32;
    let l4_csum = ptr_at::<u16>(data, data_end, l4.csum_offset())? as *mut u16;
    let dport = ptr_at::<u16>(data, data_end, l4.dport_offset())? as *mut u16;
    // SAFETY: every pointer was bounds-checked by ptr_at; the packet is writable in XDP.
    unsafe {
        *ip_csum = csum_replace(*ip_csum, &words(old_addr), &words(addr));
        let udp_without_checksum = l4.proto == IPPROTO_UDP && *l4_csum == 0;
        if !udp_without_checksum {
            *l4_csum = completed(*l4_csum, l4, old_addr, addr, l4.dport, port);
        }
        *daddr = addr;
        *dport = port;
    }
    write_macs(data, data_end, e)
}

/// Writes a frame's Ethernet addresses (tc and XDP) from the flow's entry.
#[inline(always)]
pub fn write_macs(data: usize, data_end: usize, e: &CtEntry) -> Result<(), ()> {
    let eth = ptr_at_mut::<[u32; 3]>(data, data_end, 0)?;
    // SAFETY: bounds-checked by ptr_at; the packet is writable at tc and XDP.
    unsafe { *eth = macs(e) };
    Ok(())
}

/// The entry's new destination and source MACs, 12 bytes in the order a frame starts
/// with, as three words: three loads and stores instead of twelve of each.
#[inline(always)]
fn macs(e: &CtEntry) -> [u32; 3] {
    const AT: usize = offset_of!(CtEntry, dst_mac);
    const _: () = assert!(AT.is_multiple_of(4) && offset_of!(CtEntry, src_mac) == AT + 6);
    // SAFETY: 12 bytes inside the entry, 4-aligned (the entry is 8-aligned).
    unsafe {
        *core::ptr::from_ref(e)
            .cast::<u8>()
            .add(AT)
            .cast::<[u32; 3]>()
    }
}
