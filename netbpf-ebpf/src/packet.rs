//! Header access and validation. All packet reads go through [`ptr_at`], which proves to
//! the verifier that the read stays inside the packet.

use core::mem::size_of;

use netbpf_common::stats::Outcome;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

/// A pointer to a `T` at `offset` bytes into the packet, if all of it lies before `data_end`.
#[inline(always)]
pub fn ptr_at<T>(data: usize, data_end: usize, offset: usize) -> Result<*const T, ()> {
    let start = data + offset;
    if start + size_of::<T>() > data_end {
        return Err(());
    }
    Ok(start as *const T)
}

/// Checks the Ethernet header and, for IPv4, the fields the kernel's `ip_rcv` would reject.
/// Anything that is not IPv4 (ARP, IPv6, ...) passes untouched.
#[inline(always)]
pub fn check_headers(data: usize, data_end: usize, frame_len: u32) -> Outcome {
    let Ok(eth) = ptr_at::<EthHdr>(data, data_end, 0) else {
        return Outcome::DropMalformed;
    };
    // SAFETY: ptr_at checked that the header lies inside the packet.
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return Outcome::Pass;
    }
    let Ok(ip) = ptr_at::<Ipv4Hdr>(data, data_end, EthHdr::LEN) else {
        return Outcome::DropMalformed;
    };
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    let header_len = u32::from(ip.ihl());
    let total_len = u32::from(u16::from_be_bytes(ip.tot_len));
    let l3_len = frame_len.saturating_sub(EthHdr::LEN as u32);
    // total_len 0 is BIG TCP's marker for a GRO packet above 64 KiB (Linux 6.3).
    let total_ok =
        total_len == 0 && l3_len > 0xffff || total_len >= header_len && total_len <= l3_len;
    if ip.version() != 4 || header_len < Ipv4Hdr::LEN as u32 || !total_ok {
        return Outcome::DropMalformed;
    }
    Outcome::Pass
}
