//! Packets built byte by byte, with correct checksums, and fixtures that say what a program
//! must do with them under BPF_PROG_TEST_RUN.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
};

use netbpf_common::stats::{Hook, Outcome};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The Internet checksum (RFC 1071) of `data`, folded and complemented.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = sum16(data, 0);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    sum
}

/// An Ethernet frame around `payload`.
pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_HLEN + payload.len());
    frame.extend_from_slice(&dst.0);
    frame.extend_from_slice(&src.0);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 packet (20-byte header, TTL 64, DF, checksummed) around an L4 segment.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let total_len = (IPV4_HLEN + l4.len()) as u16;
    let mut packet = Vec::with_capacity(total_len as usize);
    packet.extend_from_slice(&[0x45, 0]);
    packet.extend_from_slice(&total_len.to_be_bytes());
    packet.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    let sum = checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(l4);
    packet
}

/// Sum of the IPv4 pseudo header for an L4 checksum.
fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    sum16(&pseudo, 0)
}

fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut sum = sum16(segment, pseudo_header_sum(src, dst, proto, segment.len()));
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A UDP datagram with its checksum (0 is sent as 0xffff, as RFC 768 asks).
pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let len = (UDP_HLEN + payload.len()) as u16;
    let mut segment = Vec::with_capacity(len as usize);
    segment.extend_from_slice(&src.port().to_be_bytes());
    segment.extend_from_slice(&dst.port().to_be_bytes());
    segment.extend_from_slice(&len.to_be_bytes());
    segment.extend_from_slice(&[0, 0]);
    segment.extend_from_slice(payload);
    let sum = match l4_checksum(*src.ip(), *dst.ip(), IPPROTO_UDP, &segment) {
        0 => 0xffff,
        sum => sum,
    };
    segment[6..8].copy_from_slice(&sum.to_be_bytes());
    segment
}

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A TCP segment (20-byte header, window 65535) with its checksum.
pub fn tcp(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    tcp_segment(src, dst, seq, ack, flags, 0xffff, payload)
}

/// A reset as a host sends it: no payload, window 0.
pub fn tcp_reset(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    tcp_segment(src, dst, seq, ack, flags, 0, b"")
}

fn tcp_segment(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut segment = Vec::with_capacity(20 + payload.len());
    segment.extend_from_slice(&src.port().to_be_bytes());
    segment.extend_from_slice(&dst.port().to_be_bytes());
    segment.extend_from_slice(&seq.to_be_bytes());
    segment.extend_from_slice(&ack.to_be_bytes());
    segment.extend_from_slice(&[5 << 4, flags]);
    segment.extend_from_slice(&window.to_be_bytes());
    segment.extend_from_slice(&[0, 0, 0, 0]);
    segment.extend_from_slice(payload);
    let sum = l4_checksum(*src.ip(), *dst.ip(), IPPROTO_TCP, &segment);
    segment[16..18].copy_from_slice(&sum.to_be_bytes());
    segment
}

/// An ICMP echo request (type 8) or reply (type 0) with its checksum.
pub fn icmp_echo(kind: u8, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut msg = vec![kind, 0, 0, 0];
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(payload);
    let sum = checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// An ICMP error (`kind`, `code`, the header's second word `rest`, e.g. the next-hop MTU
/// of "fragmentation needed") quoting `quoted`, an IPv4 packet, whole.
pub fn icmp_error(kind: u8, code: u8, rest: u32, quoted: &[u8]) -> Vec<u8> {
    let mut msg = vec![kind, code, 0, 0];
    msg.extend_from_slice(&rest.to_be_bytes());
    msg.extend_from_slice(quoted);
    let sum = checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// An Ethernet + IPv4 frame carrying [`icmp_error`].
#[allow(clippy::too_many_arguments, reason = "every field of the frame")]
pub fn icmp_error_frame(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: u8,
    code: u8,
    rest: u32,
    quoted: &[u8],
) -> Vec<u8> {
    let icmp = icmp_error(kind, code, rest, quoted);
    ethernet(
        dst_mac,
        src_mac,
        ETH_P_IPV4,
        &ipv4(src, dst, IPPROTO_ICMP, &icmp),
    )
}

/// An Ethernet + IPv4 + ICMP echo frame.
#[allow(clippy::too_many_arguments, reason = "every field of the frame")]
pub fn icmp4_frame(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: u8,
    id: u16,
    seq: u16,
) -> Vec<u8> {
    let icmp = icmp_echo(kind, id, seq, b"netbpf echo");
    ethernet(
        dst_mac,
        src_mac,
        ETH_P_IPV4,
        &ipv4(src, dst, IPPROTO_ICMP, &icmp),
    )
}

/// An Ethernet + IPv4 + UDP frame.
pub fn udp4_frame(
    dst_mac: Mac,
    src_mac: Mac,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let l4 = udp(src, dst, payload);
    ethernet(
        dst_mac,
        src_mac,
        ETH_P_IPV4,
        &ipv4(*src.ip(), *dst.ip(), IPPROTO_UDP, &l4),
    )
}

/// An Ethernet + IPv4 + TCP frame.
pub fn tcp4_frame(
    dst_mac: Mac,
    src_mac: Mac,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let l4 = tcp(src, dst, 1, 0, flags, payload);
    ethernet(
        dst_mac,
        src_mac,
        ETH_P_IPV4,
        &ipv4(*src.ip(), *dst.ip(), IPPROTO_TCP, &l4),
    )
}

/// An ARP request (who has `target`? tell `sender`).
pub fn arp_request(sender_mac: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    arp.extend_from_slice(&sender_mac.0);
    arp.extend_from_slice(&sender.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target.octets());
    ethernet(Mac([0xff; 6]), sender_mac, ETH_P_ARP, &arp)
}

/// Program return values, as the kernel defines them.
pub mod verdict {
    pub const TC_ACT_OK: u32 = 0;
    pub const TC_ACT_SHOT: u32 = 2;
    pub const TC_ACT_REDIRECT: u32 = 7;
    pub const XDP_DROP: u32 = 1;
    pub const XDP_PASS: u32 = 2;
}

/// What a program must do with one input packet.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub name: &'static str,
    pub hook: Hook,
    pub input: Vec<u8>,
    pub verdict: u32,
    /// The packet after the program; `None`: unchanged.
    pub output: Option<Vec<u8>>,
    /// The one counter that must rise, by one packet of the input's length; every other
    /// counter must stay put.
    pub outcome: Outcome,
}

/// A readable diff of two byte strings: offset and both values of every differing byte.
pub fn byte_diff(expected: &[u8], actual: &[u8]) -> String {
    let mut out = String::new();
    if expected.len() != actual.len() {
        out.push_str(&format!(
            "length: expected {}, got {}\n",
            expected.len(),
            actual.len()
        ));
    }
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        if e != a {
            out.push_str(&format!("  byte {i:4}: expected {e:02x}, got {a:02x}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        let packet = ipv4(
            Ipv4Addr::new(198, 18, 0, 2),
            Ipv4Addr::new(198, 18, 0, 1),
            IPPROTO_UDP,
            &[],
        );
        assert_eq!(checksum(&packet[..IPV4_HLEN]), 0);
    }

    /// RFC 1071's worked example: the sum of these words is 0xddf2, so the checksum is !0xddf2.
    #[test]
    fn checksum_matches_rfc1071_example() {
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn udp_and_tcp_checksums_verify_with_pseudo_header() {
        let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 40000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 53);
        for (proto, seg) in [
            (IPPROTO_UDP, udp(src, dst, b"odd-length")),
            (IPPROTO_TCP, tcp(src, dst, 7, 9, tcp_flags::SYN, b"x")),
        ] {
            let sum = sum16(
                &seg,
                pseudo_header_sum(*src.ip(), *dst.ip(), proto, seg.len()),
            );
            let folded = (sum & 0xffff) + (sum >> 16);
            assert_eq!((folded & 0xffff) + (folded >> 16), 0xffff, "proto {proto}");
        }
    }

    #[test]
    fn frame_layout() {
        let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 1);
        let dst = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 2);
        let frame = udp4_frame(Mac([1; 6]), Mac([2; 6]), src, dst, &[0xaa; 10]);
        assert_eq!(frame.len(), ETH_HLEN + IPV4_HLEN + UDP_HLEN + 10);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 38);
        assert_eq!(arp_request(Mac([2; 6]), *src.ip(), *dst.ip()).len(), 42);
        assert_eq!(
            Mac([0x02, 0, 0xc6, 0x12, 0, 0x0a]).to_string(),
            "02:00:c6:12:00:0a"
        );
    }
}
