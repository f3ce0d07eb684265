//! Refusing explicitly what a service cannot take (no backend to give, or a flow whose
//! backend was removed), so that the client learns at once instead of retrying into
//! silence: a TCP segment is turned, in place, into the RST that answers it (RFC 9293,
//! section 3.10.7.1); anything else is answered with ICMP port unreachable, built in the
//! frame after resizing it. Both go back to the sender, from the VIP.

use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::{TcContext, XdpContext},
};
use netbpf_common::stats::Outcome;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    nat::{IPPROTO_ICMP, IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, fold},
    packet::{self, ptr_at_mut},
};

const TCP_AT: usize = EthHdr::LEN + Ipv4Hdr::LEN;
const TCP_HLEN: usize = 20;

/// Whether a segment may be answered with a reset: never a reset itself.
#[inline(always)]
pub fn answerable(tcp_flags: u8) -> bool {
    tcp_flags & TCP_RST == 0
}

/// Rewrites the TCP segment at the start of the frame into its reset. The IPv4 header
/// must have no options (fixed offsets keep every access provable); the reset keeps 20
/// bytes of TCP header and no payload: the IPv4 total length says so, and the receiver's
/// IP layer trims whatever follows.
#[inline(always)]
pub fn tcp_reset(data: usize, data_end: usize) -> Result<(), ()> {
    let eth = ptr_at_mut::<EthHdr>(data, data_end, 0)?;
    let ip = ptr_at_mut::<Ipv4Hdr>(data, data_end, EthHdr::LEN)?;
    let tcp = ptr_at_mut::<[u8; TCP_HLEN]>(data, data_end, TCP_AT)?;
    // SAFETY: every pointer was bounds-checked by ptr_at; the packet is writable here.
    unsafe {
        let (eth, ip, tcp) = (&mut *eth, &mut *ip, &mut *tcp);
        if ip.proto != IPPROTO_TCP || usize::from(ip.ihl()) != Ipv4Hdr::LEN {
            return Err(());
        }
        let header_len = usize::from(tcp[12] >> 4) * 4;
        let total_len = usize::from(u16::from_be_bytes(ip.tot_len));
        let flags = tcp[13];
        // What the segment occupies in sequence space: payload, SYN and FIN.
        let seg_len = total_len.saturating_sub(Ipv4Hdr::LEN + header_len) as u32
            + u32::from(flags & TCP_SYN != 0)
            + u32::from(flags & TCP_FIN != 0);
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let ack = [tcp[8], tcp[9], tcp[10], tcp[11]];
        let (new_seq, new_ack, new_flags) = if flags & TCP_ACK != 0 {
            (ack, [0; 4], TCP_RST)
        } else {
            (
                [0; 4],
                seq.wrapping_add(seg_len).to_be_bytes(),
                TCP_RST | TCP_ACK,
            )
        };
        let mut rst = [0u8; TCP_HLEN];
        rst[0..2].copy_from_slice(&tcp[2..4]);
        rst[2..4].copy_from_slice(&tcp[0..2]);
        rst[4..8].copy_from_slice(&new_seq);
        rst[8..12].copy_from_slice(&new_ack);
        rst[12] = 5 << 4;
        rst[13] = new_flags;

        core::mem::swap(&mut ip.src_addr, &mut ip.dst_addr);
        ip.tot_len = ((Ipv4Hdr::LEN + TCP_HLEN) as u16).to_be_bytes();
        ip.ttl = 64;
        ip.check = [0; 2];
        ip.check = (!fold(sum_words(&*(ip as *const Ipv4Hdr as *const [u8; 20]), 0))).to_ne_bytes();

        // The pseudo header: addresses, protocol, TCP length.
        let pseudo = sum_words(&ip.src_addr, 0)
            + sum_words(&ip.dst_addr, 0)
            + u32::from(u16::from_ne_bytes([0, IPPROTO_TCP]))
            + u32::from(u16::from_ne_bytes((TCP_HLEN as u16).to_be_bytes()));
        let sum = !fold(sum_words(&rst, pseudo));
        rst[16..18].copy_from_slice(&sum.to_ne_bytes());
        *tcp = rst;

        core::mem::swap(&mut eth.src_addr, &mut eth.dst_addr);
    }
    Ok(())
}

/// Ones'-complement sum of the 16-bit words of `bytes` (as they sit), added to `sum`.
#[inline(always)]
fn sum_words<const N: usize>(bytes: &[u8; N], mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_ne_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

/// What an ICMP error needs of the packet it answers: its Ethernet addresses, IPv4
/// header (no options) and the first 8 bytes after it.
pub const QUOTED: usize = EthHdr::LEN + Ipv4Hdr::LEN + 8;
/// The frame of an ICMP port unreachable: Ethernet, IPv4, ICMP header, the quote.
pub const UNREACHABLE_LEN: usize = EthHdr::LEN + Ipv4Hdr::LEN + 8 + Ipv4Hdr::LEN + 8;

/// Copies the start of the packet an ICMP error will quote, before the frame is resized.
#[inline(always)]
fn capture(data: usize, data_end: usize, quoted: &mut [u8; QUOTED]) -> Result<(), ()> {
    let head = ptr_at_mut::<[u8; QUOTED]>(data, data_end, 0)?;
    // SAFETY: bounds-checked by ptr_at.
    *quoted = unsafe { *head };
    // Version 4, no options.
    if quoted[EthHdr::LEN] == 0x45 {
        Ok(())
    } else {
        Err(())
    }
}

/// Writes the ICMP port unreachable answering `quoted` into a frame of exactly
/// [`UNREACHABLE_LEN`] bytes at `data`: back to the sender, from the address it wrote to.
#[inline(always)]
pub fn write_unreachable(data: usize, data_end: usize, quoted: &[u8; QUOTED]) -> Result<(), ()> {
    const IP: usize = EthHdr::LEN;
    const ICMP: usize = IP + Ipv4Hdr::LEN;
    let frame = ptr_at_mut::<[u8; UNREACHABLE_LEN]>(data, data_end, 0)?;
    // SAFETY: bounds-checked by ptr_at; the packet is writable here. Written in place:
    // the stack is too small for a copy.
    let f = unsafe { &mut *frame };
    f[0..6].copy_from_slice(&quoted[6..12]);
    f[6..12].copy_from_slice(&quoted[0..6]);
    f[12..14].copy_from_slice(&quoted[12..14]);
    let total = (UNREACHABLE_LEN - EthHdr::LEN) as u16;
    // Version 4, 20 bytes, don't fragment, TTL 64.
    f[IP..IP + 12].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, IPPROTO_ICMP, 0, 0]);
    f[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
    f[IP + 12..IP + 16].copy_from_slice(&quoted[IP + 16..IP + 20]);
    f[IP + 16..IP + 20].copy_from_slice(&quoted[IP + 12..IP + 16]);
    let header = <&[u8; Ipv4Hdr::LEN]>::try_from(&f[IP..ICMP]).map_err(|_| ())?;
    let sum = !fold(sum_words(header, 0));
    f[IP + 10..IP + 12].copy_from_slice(&sum.to_ne_bytes());
    // Destination unreachable, port unreachable; then the quote.
    f[ICMP..ICMP + 8].copy_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
    f[ICMP + 8..].copy_from_slice(&quoted[IP..]);
    let message = <&[u8; UNREACHABLE_LEN - ICMP]>::try_from(&f[ICMP..]).map_err(|_| ())?;
    let sum = !fold(sum_words(message, 0));
    f[ICMP + 2..ICMP + 4].copy_from_slice(&sum.to_ne_bytes());
    Ok(())
}

/// The first step of a refusal, the same at tc and XDP: a TCP segment becomes its reset
/// in place (`Some`: done); anything else needs the ICMP error, whose quote is copied
/// into `quoted` (`None`) before the hook resizes the frame.
#[inline(always)]
fn begin(
    data: usize,
    data_end: usize,
    proto: u8,
    tcp_flags: u8,
    quoted: &mut [u8; QUOTED],
) -> Result<Option<Outcome>, ()> {
    if proto == IPPROTO_TCP {
        if !answerable(tcp_flags) {
            return Err(());
        }
        tcp_reset(data, data_end)?;
        return Ok(Some(Outcome::ServiceReset));
    }
    capture(data, data_end, quoted)?;
    Ok(None)
}

/// Turns the packet in a tc program into its refusal: [`tcp_reset`] for TCP, an ICMP
/// port unreachable for the rest. The outcome to count, or `Err` when the packet cannot
/// be answered (a reset, a GSO packet, IP options): drop it.
#[inline(always)]
pub fn tc(ctx: &TcContext, proto: u8, tcp_flags: u8) -> Result<Outcome, ()> {
    if packet::is_gso(ctx) {
        return Err(());
    }
    let mut quoted = [0u8; QUOTED];
    if let Some(outcome) = begin(ctx.data(), ctx.data_end(), proto, tcp_flags, &mut quoted)? {
        return Ok(outcome);
    }
    let grow = (UNREACHABLE_LEN - QUOTED) as i32;
    ctx.adjust_room(grow, BPF_ADJ_ROOM_MAC, 0).map_err(|_| ())?;
    ctx.change_tail(UNREACHABLE_LEN as u32, 0).map_err(|_| ())?;
    write_unreachable(ctx.data(), ctx.data_end(), &quoted)?;
    Ok(Outcome::ServiceUnreachable)
}

/// The XDP twin of [`tc`]: the frame grows at its head and shrinks at its tail.
#[inline(always)]
pub fn xdp(ctx: &XdpContext, proto: u8, tcp_flags: u8) -> Result<Outcome, ()> {
    let mut quoted = [0u8; QUOTED];
    if let Some(outcome) = begin(ctx.data(), ctx.data_end(), proto, tcp_flags, &mut quoted)? {
        return Ok(outcome);
    }
    let old_len = (ctx.data_end() - ctx.data()) as i32;
    let grow = (UNREACHABLE_LEN - QUOTED) as i32;
    // SAFETY: helper calls on the program's own context.
    unsafe {
        if bpf_xdp_adjust_head(ctx.ctx, -grow) != 0 {
            return Err(());
        }
        let shrink = UNREACHABLE_LEN as i32 - (old_len + grow);
        if shrink != 0 && bpf_xdp_adjust_tail(ctx.ctx, shrink) != 0 {
            return Err(());
        }
    }
    write_unreachable(ctx.data(), ctx.data_end(), &quoted)?;
    Ok(Outcome::ServiceUnreachable)
}
