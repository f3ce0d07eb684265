//! Refusing a TCP connection explicitly: the segment is turned, in place, into the RST
//! that answers it (RFC 9293, section 3.10.7.1), addressed back to its sender. Used when
//! a service has no backend to give, or a flow's backend was removed: the client learns
//! at once instead of retrying into silence. Direct writes, so tc and XDP share it.

use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    nat::{IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, fold},
    packet::ptr_at_mut,
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
pub fn refuse(data: usize, data_end: usize) -> Result<(), ()> {
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
