//! Header access and validation. All packet reads go through [`ptr_at`] (writes through
//! [`ptr_at_mut`]), which prove to the verifier that the access stays inside the packet.

use core::mem::size_of;

use aya_ebpf::{EbpfContext as _, bindings::__sk_buff, programs::TcContext};

use netbpf_common::stats::Outcome;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

pub const ETH_P_IPV4: u16 = EtherType::Ipv4 as u16;
pub const ETH_P_ARP: u16 = EtherType::Arp as u16;

/// A pointer to a `T` at `offset` bytes into the packet, if all of it lies before `data_end`.
#[inline(always)]
pub fn ptr_at<T>(data: usize, data_end: usize, offset: usize) -> Result<*const T, ()> {
    let start = data + offset;
    if start + size_of::<T>() > data_end {
        return Err(());
    }
    Ok(start as *const T)
}

/// As [`ptr_at`], for writing.
#[inline(always)]
pub fn ptr_at_mut<T>(data: usize, data_end: usize, offset: usize) -> Result<*mut T, ()> {
    ptr_at::<T>(data, data_end, offset).map(|p| p as *mut T)
}

/// The interface a tc program's packet arrived on.
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context of a tc program is an __sk_buff.
    unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex }
}

/// Whether an skb carries several segments (GSO): not a packet to rewrite into another.
#[inline(always)]
pub fn is_gso(ctx: &TcContext) -> bool {
    // SAFETY: the context of a tc program is an __sk_buff.
    unsafe { (*(ctx.as_ptr() as *const __sk_buff)).gso_segs > 1 }
}

/// Bytes the programs read from the start of a frame: Ethernet, an IPv4 header with
/// options, and room for an L4 header.
const HEADERS_LEN: u32 = 14 + 60 + 20;

/// Makes the headers directly readable: an skb may carry part of them in page fragments,
/// where `data..data_end` does not reach. Without it such a packet would look truncated.
#[inline(always)]
pub fn pull_headers(ctx: &TcContext) {
    let linear = (ctx.data_end() - ctx.data()) as u32;
    let want = if ctx.len() < HEADERS_LEN {
        ctx.len()
    } else {
        HEADERS_LEN
    };
    if linear < want {
        // On failure the checks below see a short packet and count it as malformed.
        let _ = ctx.pull_data(want);
    }
}

/// Whether an IPv4 header has what the kernel's `ip_rcv` checks: version 4, a header of at
/// least 20 bytes, a total length that covers the header and fits the frame.
#[inline(always)]
pub fn ipv4_header_ok(ip: &Ipv4Hdr, frame_len: u32) -> bool {
    let header_len = u32::from(ip.ihl());
    let total_len = u32::from(u16::from_be_bytes(ip.tot_len));
    let l3_len = frame_len.saturating_sub(EthHdr::LEN as u32);
    // total_len 0 is BIG TCP's marker for a GRO packet above 64 KiB (Linux 6.3).
    let total_ok =
        total_len == 0 && l3_len > 0xffff || total_len >= header_len && total_len <= l3_len;
    ip.version() == 4 && header_len >= Ipv4Hdr::LEN as u32 && total_ok
}

/// Checks the Ethernet header and, for IPv4, the IPv4 header ([`ipv4_header_ok`]).
/// Anything that is not IPv4 (ARP, IPv6, ...) passes untouched.
#[inline(always)]
pub fn check_headers(data: usize, data_end: usize, frame_len: u32) -> Outcome {
    let Ok(eth) = ptr_at::<EthHdr>(data, data_end, 0) else {
        return Outcome::DropMalformed;
    };
    // SAFETY: ptr_at checked that the header lies inside the packet.
    if unsafe { (*eth).ether_type } != ETH_P_IPV4 {
        return Outcome::Pass;
    }
    let Ok(ip) = ptr_at::<Ipv4Hdr>(data, data_end, EthHdr::LEN) else {
        return Outcome::DropMalformed;
    };
    // SAFETY: as above.
    if !ipv4_header_ok(unsafe { &*ip }, frame_len) {
        return Outcome::DropMalformed;
    }
    Outcome::Pass
}

/// A destination no single host owns: limited broadcast or multicast (224.0.0.0/4).
#[inline(always)]
pub fn is_multi_destination(addr: [u8; 4]) -> bool {
    addr == [255, 255, 255, 255] || addr[0] & 0xf0 == 0xe0
}
