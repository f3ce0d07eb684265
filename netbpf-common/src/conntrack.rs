//! Connection tracking for translated flows. Every translated flow has two entries, one
//! per direction, each keyed by the packet's tuple as the program that handles that
//! direction sees it, each saying how to rewrite it and where to send it.

/// `NB_CT` key: a packet's 5-tuple (addresses and ports in network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// `CtEntry::kind`: arriving on the uplink for a published port; rewrite the destination
/// to `nat_addr:nat_port`, deliver into the container behind `ifindex`.
pub const CT_PUBLISHED_IN: u8 = 1;
/// `CtEntry::kind`: the container's reply; rewrite the source to `nat_addr:nat_port` (the
/// host address and published port), send out of the uplink `ifindex`.
pub const CT_PUBLISHED_REPLY: u8 = 2;

/// `CtEntry::kind`: a container's outbound packet on a masquerading network; rewrite the
/// source to `nat_addr:nat_port` (the uplink's address, a port taken for the flow), send
/// out of the uplink `ifindex`.
pub const CT_MASQ_OUT: u8 = 3;
/// `CtEntry::kind`: the reply to a masqueraded flow, arriving on the uplink; rewrite the
/// destination to `nat_addr:nat_port`, deliver into the container behind `ifindex`.
pub const CT_MASQ_REPLY: u8 = 4;

/// `CtEntry::kind`: a container to a published port of the host (hairpin); rewrite the
/// destination to `nat_*` (the container behind the port), the source to `rev_*` (the
/// sender itself, unchanged; or, when a live flow holds that tuple or the sender reaches
/// its own port, its gateway and a port taken for the flow), deliver into the container
/// behind `ifindex`.
pub const CT_HAIRPIN: u8 = 5;
/// `CtEntry::kind`: the reply of a hairpin flow; rewrite the destination to `nat_*` (the
/// original sender), the source to `rev_*` (the published address and port), deliver
/// into the sender's container behind `ifindex`.
pub const CT_HAIRPIN_REPLY: u8 = 6;

/// `CtEntry::kind`: a client (a container, or outside) to a service's VIP; rewrite the
/// destination to `nat_*` (the backend `backend_id`), deliver into the backend's
/// container behind `ifindex`.
pub const CT_SERVICE: u8 = 7;
/// `CtEntry::kind`: a backend's reply to a container client; rewrite the source to
/// `nat_*` (the VIP and port), deliver into the client's container behind `ifindex`.
pub const CT_SERVICE_REPLY: u8 = 8;
/// `CtEntry::kind`: a backend's reply to a client outside; rewrite the source to `nat_*`
/// (the VIP and port), send out of the uplink `ifindex`.
pub const CT_SERVICE_REPLY_OUT: u8 = 9;

/// The stable name of a `CtEntry::kind` (tables, JSON, monitor events).
pub const fn kind_name(kind: u8) -> &'static str {
    match kind {
        CT_PUBLISHED_IN => "published",
        CT_PUBLISHED_REPLY => "published_reply",
        CT_MASQ_OUT => "masquerade",
        CT_MASQ_REPLY => "masquerade_reply",
        CT_HAIRPIN => "hairpin",
        CT_HAIRPIN_REPLY => "hairpin_reply",
        CT_SERVICE => "service",
        CT_SERVICE_REPLY => "service_reply",
        CT_SERVICE_REPLY_OUT => "service_reply_out",
        _ => "unknown",
    }
}

/// `CtEntry::tcp_state`: a SYN was seen, no answer yet.
pub const TCP_SYN_SENT: u8 = 1;
pub const TCP_ESTABLISHED: u8 = 2;
/// A FIN or RST was seen: the entry goes soon, and a new SYN replaces it at once.
pub const TCP_CLOSING: u8 = 3;

/// `NB_CT` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub nat_addr: u32,
    pub nat_port: u16,
    pub kind: u8,
    pub tcp_state: u8,
    pub ifindex: u32,
    /// For hairpin kinds: the new source address.
    pub rev_addr: u32,
    /// bpf_jiffies64() of the last packet.
    pub last_seen: u64,
    pub packets: u64,
    /// For `CT_PUBLISHED_IN`: the frame's new Ethernet addresses (the container's, its
    /// gateway's), so an established flow needs no endpoint lookup.
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// For hairpin kinds: the new source port.
    pub rev_port: u16,
    pub pad: u16,
    /// For service kinds: the backend (its connection counts, whether it still exists).
    pub backend_id: u32,
    /// For `CT_MASQ_OUT`: when its reply entry was last found held, in ticks (the low 32
    /// bits of `last_seen`'s clock; 0 before the first check).
    pub reply_checked: u32,
}

/// Ticks between two checks that a masqueraded flow still holds its reply entry (25 ms
/// at HZ=1000, 250 ms at HZ=100). The LRU may evict that entry alone (when no reply used
/// it lately), which frees the flow's port for another container's flow to the same
/// destination; each check claims it again. Checking on every packet would cost a lookup
/// a packet for a window no shorter than the gap between two packets.
pub const MASQ_REPLY_CHECK_TICKS: u32 = 25;

/// Whether a masqueraded flow whose packet came at `now` (ticks) is due for the check of
/// its reply entry.
#[inline(always)]
pub fn reply_check_due(now: u64, e: &CtEntry) -> bool {
    (now as u32).wrapping_sub(e.reply_checked) >= MASQ_REPLY_CHECK_TICKS
}

/// The key of the flow's other direction. A packet matching `key` leaves with the entry's
/// translation applied; the other direction's packets are that packet mirrored.
#[inline(always)]
pub fn partner(key: &CtKey, e: &CtEntry) -> CtKey {
    // The translated packet's (source, destination) as (address, port) pairs.
    let (src, dst) = match e.kind {
        CT_HAIRPIN | CT_HAIRPIN_REPLY => ((e.rev_addr, e.rev_port), (e.nat_addr, e.nat_port)),
        CT_PUBLISHED_REPLY | CT_MASQ_OUT | CT_SERVICE_REPLY | CT_SERVICE_REPLY_OUT => {
            ((e.nat_addr, e.nat_port), (key.daddr, key.dport))
        }
        // Published ports, masquerade replies, services: the destination is translated.
        _ => ((key.saddr, key.sport), (e.nat_addr, e.nat_port)),
    };
    CtKey {
        saddr: dst.0,
        daddr: src.0,
        sport: dst.1,
        dport: src.1,
        proto: key.proto,
        pad: [0; 3],
    }
}

const _: () = assert!(size_of::<CtKey>() == 16);
const _: () = assert!(size_of::<CtEntry>() == 56);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no padding (sizes asserted above).
unsafe impl aya::Pod for CtKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for CtEntry {}

/// `NB_CONFIG` (one slot): what the programs need of the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// The uplink (0: none configured, nothing is masqueraded).
    pub uplink_ifindex: u32,
    /// The uplink's address: masqueraded flows leave with it.
    pub uplink_addr: u32,
    /// Ports masqueraded flows take (host byte order, inclusive).
    pub masq_port_min: u16,
    pub masq_port_max: u16,
    /// The kernel's tick rate (CONFIG_HZ): conntrack timestamps are jiffies.
    pub jiffies_hz: u32,
    /// The network namespace this instance manages (its cookie): the socket programs act
    /// on sockets of this namespace only (0: on none).
    pub netns_cookie: u64,
}

const _: () = assert!(size_of::<HostConfig>() == 24);

/// `NB_SOCK_NAT` value, keyed by socket cookie: where a host process's socket was sent
/// instead of a published address, so its peer looks as it asked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockNat {
    pub orig_addr: u32,
    pub target_addr: u32,
    pub orig_port: u16,
    pub target_port: u16,
}

const _: () = assert!(size_of::<SockNat>() == 12);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no padding.
unsafe impl aya::Pod for SockNat {}

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no padding.
unsafe impl aya::Pod for HostConfig {}
