//! ICMP errors about translated flows (destination unreachable, fragmentation needed, time
//! exceeded, parameter problem). An error quotes the packet that caused it; for the error
//! to reach the socket that sent that packet, the quoted packet must be translated back
//! as the flow's entry says, and the error's own address with it (RFC 5508, section 4).
//! The rewrite writes the headers directly, with RFC 1624 checksum updates, so the same
//! code serves tc and XDP. Errors whose IPv4 header or quote carries IP options are left
//! alone: fixed offsets keep every access provable to the verifier, and options are all
//! but unused.

use netbpf_common::conntrack::CtKey;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    nat::{ICMP_ECHO_REQUEST, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, csum_replace, words},
    packet::{ptr_at, ptr_at_mut},
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROB: u8 = 12;

const IP_CSUM_AT: usize = 10;
const IP_SADDR_AT: usize = 12;
const IP_DADDR_AT: usize = 16;

/// Offsets in the frame: the error's ICMP header, the quoted IPv4 header, the quoted
/// transport header.
const ICMP_AT: usize = EthHdr::LEN + Ipv4Hdr::LEN;
const INNER_IP_AT: usize = ICMP_AT + 8;
const INNER_L4_AT: usize = INNER_IP_AT + Ipv4Hdr::LEN;

/// An ICMP error and the packet it quotes.
pub struct IcmpError {
    /// The quoted packet's tuple (addresses and ports as they sit in the packet; for an
    /// ICMP echo the identifier is the requester's port, as in [`crate::nat::L4`]).
    proto: u8,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    sport_at: usize,
    dport_at: usize,
}

/// Which end of the quoted packet the translation rewrites.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The quoted packet left us (an error coming in from outside): its source, and the
    /// error's destination.
    Source,
    /// The quoted packet came to us (an error a container sends out): its destination,
    /// and the error's source.
    Destination,
}

impl IcmpError {
    /// The conntrack key of the flow direction the error travels in: the quoted packet
    /// mirrored (the error goes back the way the quoted packet came).
    pub fn key(&self) -> CtKey {
        CtKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            pad: [0; 3],
        }
    }

    /// The quoted packet's address at `end`.
    pub fn addr(&self, end: End) -> u32 {
        match end {
            End::Source => self.saddr,
            End::Destination => self.daddr,
        }
    }

    /// The quoted packet's port at `end`.
    pub fn port(&self, end: End) -> u16 {
        match end {
            End::Source => self.sport,
            End::Destination => self.dport,
        }
    }
}

/// The ICMP error in an IPv4 packet (`ip`, at the usual offset), if it is one this
/// module translates: a first fragment, an error type that quotes a packet, and a quote
/// of TCP, UDP or an ICMP echo request long enough to hold the ports.
#[inline(always)]
pub fn parse(data: usize, data_end: usize, ip: &Ipv4Hdr) -> Option<IcmpError> {
    if ip.proto != IPPROTO_ICMP
        || usize::from(ip.ihl()) != Ipv4Hdr::LEN
        || u16::from_be_bytes(ip.frags) & 0x1fff != 0
    {
        return None;
    }
    // SAFETY (all reads below): ptr_at checked each lies inside the packet.
    let kind = unsafe { *ptr_at::<[u8; 8]>(data, data_end, ICMP_AT).ok()? }[0];
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED && kind != ICMP_PARAMETER_PROB {
        return None;
    }
    let inner = unsafe { &*ptr_at::<Ipv4Hdr>(data, data_end, INNER_IP_AT).ok()? };
    if inner.version() != 4
        || usize::from(inner.ihl()) != Ipv4Hdr::LEN
        || u16::from_be_bytes(inner.frags) & 0x1fff != 0
    {
        return None;
    }
    let head = unsafe { *ptr_at::<[u8; 8]>(data, data_end, INNER_L4_AT).ok()? };
    let (sport, dport, sport_at, dport_at) = match inner.proto {
        IPPROTO_TCP | IPPROTO_UDP => (
            u16::from_ne_bytes([head[0], head[1]]),
            u16::from_ne_bytes([head[2], head[3]]),
            0,
            2,
        ),
        // Only a request can have been translated (replies never start flows).
        IPPROTO_ICMP if head[0] == ICMP_ECHO_REQUEST => {
            (u16::from_ne_bytes([head[4], head[5]]), 0, 4, 4)
        }
        _ => return None,
    };
    Some(IcmpError {
        proto: inner.proto,
        saddr: u32::from_ne_bytes(inner.src_addr),
        daddr: u32::from_ne_bytes(inner.dst_addr),
        sport,
        dport,
        sport_at,
        dport_at,
    })
}

/// Replaces the quoted packet's address and port at `end` with `addr:port`, and the
/// error's own address on the matching side (its destination for [`End::Source`], its
/// source for [`End::Destination`]) with `addr`. Every checksum is updated: the error's
/// IPv4 header, the ICMP message, the quoted IPv4 header and, when quoted in full, the
/// quoted transport checksum.
#[inline(always)]
pub fn translate(
    data: usize,
    data_end: usize,
    err: &IcmpError,
    end: End,
    addr: u32,
    port: u16,
) -> Result<(), ()> {
    let (addr_at, port_at, old_port) = match end {
        End::Source => (IP_SADDR_AT, err.sport_at, err.sport),
        End::Destination => (IP_DADDR_AT, err.dport_at, err.dport),
    };
    let outer_addr_at = match end {
        End::Source => IP_DADDR_AT,
        End::Destination => IP_SADDR_AT,
    };
    let old_addr = err.addr(end);
    let (old_words, new_words) = (words(old_addr), words(addr));

    let outer_csum = ptr_at_mut::<u16>(data, data_end, EthHdr::LEN + IP_CSUM_AT)?;
    let outer_addr = ptr_at_mut::<u32>(data, data_end, EthHdr::LEN + outer_addr_at)?;
    let icmp_csum = ptr_at_mut::<u16>(data, data_end, ICMP_AT + 2)?;
    let inner_csum = ptr_at_mut::<u16>(data, data_end, INNER_IP_AT + IP_CSUM_AT)?;
    let inner_addr = ptr_at_mut::<u32>(data, data_end, INNER_IP_AT + addr_at)?;
    let inner_port = ptr_at_mut::<u16>(data, data_end, INNER_L4_AT + port_at)?;
    // The quoted transport checksum, if the quote reaches it (a TCP quote may stop at
    // 8 bytes; then there is nothing to keep right).
    let l4_csum_at = match err.proto {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => 2,
    };
    let l4_csum = ptr_at_mut::<u16>(data, data_end, INNER_L4_AT + l4_csum_at).ok();

    // SAFETY: every pointer was bounds-checked by ptr_at; the packet is writable here.
    unsafe {
        // The error's own header: only its address changes (ICMP has no pseudo header).
        let old_outer = *outer_addr;
        *outer_csum = csum_replace(*outer_csum, &words(old_outer), &new_words);
        *outer_addr = addr;

        // Inside the ICMP message: the quoted header's address and checksum, the quoted
        // port and transport checksum. The ICMP checksum covers them all.
        let old_inner_csum = *inner_csum;
        let new_inner_csum = csum_replace(old_inner_csum, &old_words, &new_words);
        let (mut old_l4, mut new_l4) = (0u16, 0u16);
        if let Some(l4_csum) = l4_csum {
            old_l4 = *l4_csum;
            new_l4 = old_l4;
            let udp_without_checksum = err.proto == IPPROTO_UDP && old_l4 == 0;
            if !udp_without_checksum {
                if err.proto != IPPROTO_ICMP {
                    new_l4 = csum_replace(new_l4, &old_words, &new_words);
                }
                new_l4 = csum_replace(new_l4, &[old_port], &[port]);
                if err.proto == IPPROTO_UDP && new_l4 == 0 {
                    new_l4 = 0xffff;
                }
                *l4_csum = new_l4;
            }
        }
        *icmp_csum = csum_replace(
            *icmp_csum,
            &[old_words[0], old_words[1], old_inner_csum, old_port, old_l4],
            &[new_words[0], new_words[1], new_inner_csum, port, new_l4],
        );
        *inner_csum = new_inner_csum;
        *inner_addr = addr;
        *inner_port = port;
    }
    Ok(())
}
