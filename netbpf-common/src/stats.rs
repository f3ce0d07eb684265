//! Packet accounting: which program saw a packet ([`Hook`]) and what it did with it
//! ([`Outcome`]), counted per CPU in the `NB_STATS` array at [`slot`].

/// A program attachment point. The discriminant is the hook's row in the stats array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// tc (tcx) ingress on the host's uplink: traffic arriving from outside.
    FromUplink = 0,
    /// XDP on the host's uplink: the same traffic before the kernel builds an skb.
    XdpUplink = 1,
    /// tc (tcx) ingress on a container's host-side veth: traffic leaving the container.
    FromContainer = 2,
    /// cgroup connect4: a host process connecting (counted per socket, not per packet).
    SockConnect4 = 3,
    /// cgroup sendmsg4: a host process sending a datagram.
    SockSendmsg4 = 4,
    /// cgroup recvmsg4: a host process receiving a datagram.
    SockRecvmsg4 = 5,
    /// cgroup getpeername4: a host process asking for its peer.
    SockPeername4 = 6,
}

impl Hook {
    pub const ALL: [Hook; 7] = [
        Hook::FromUplink,
        Hook::XdpUplink,
        Hook::FromContainer,
        Hook::SockConnect4,
        Hook::SockSendmsg4,
        Hook::SockRecvmsg4,
        Hook::SockPeername4,
    ];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The stable name used in pins, tables and JSON (also the program's name).
    pub const fn name(self) -> &'static str {
        match self {
            Hook::FromUplink => "from_uplink",
            Hook::XdpUplink => "xdp_uplink",
            Hook::FromContainer => "from_container",
            Hook::SockConnect4 => "sock_connect4",
            Hook::SockSendmsg4 => "sock_sendmsg4",
            Hook::SockRecvmsg4 => "sock_recvmsg4",
            Hook::SockPeername4 => "sock_peername4",
        }
    }
}

/// What a program did with a packet. Drops carry their reason in the variant.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Pass = 0,
    Forward = 1,
    ArpReply = 2,
    Published = 3,
    PublishedReply = 4,
    Masquerade = 5,
    MasqueradeReply = 6,
    Hairpin = 7,
    DropMalformed = 8,
    DropUnknownSource = 9,
    DropSpoofedMac = 10,
    DropSpoofedIp = 11,
    DropCrossNetwork = 12,
    DropIcc = 13,
    DropInternal = 14,
    DropNoEndpoint = 15,
    DropNotUnicast = 16,
    DropUnsupportedL3 = 17,
    DropArpUnanswered = 18,
    DropNatFailed = 19,
    DropNoNatPort = 20,
    DropNotTranslatable = 21,
    IcmpError = 22,
    Service = 23,
    ServiceReply = 24,
    ServiceReset = 25,
    DropNoBackend = 26,
    ServiceUnreachable = 27,
}

impl Outcome {
    pub const ALL: [Outcome; 28] = [
        Outcome::Pass,
        Outcome::Forward,
        Outcome::ArpReply,
        Outcome::Published,
        Outcome::PublishedReply,
        Outcome::Masquerade,
        Outcome::MasqueradeReply,
        Outcome::Hairpin,
        Outcome::DropMalformed,
        Outcome::DropUnknownSource,
        Outcome::DropSpoofedMac,
        Outcome::DropSpoofedIp,
        Outcome::DropCrossNetwork,
        Outcome::DropIcc,
        Outcome::DropInternal,
        Outcome::DropNoEndpoint,
        Outcome::DropNotUnicast,
        Outcome::DropUnsupportedL3,
        Outcome::DropArpUnanswered,
        Outcome::DropNatFailed,
        Outcome::DropNoNatPort,
        Outcome::DropNotTranslatable,
        Outcome::IcmpError,
        Outcome::Service,
        Outcome::ServiceReply,
        Outcome::ServiceReset,
        Outcome::DropNoBackend,
        Outcome::ServiceUnreachable,
    ];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The stable name used in tables and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Forward => "forward",
            Outcome::ArpReply => "arp_reply",
            Outcome::Published => "published",
            Outcome::PublishedReply => "published_reply",
            Outcome::Masquerade => "masquerade",
            Outcome::MasqueradeReply => "masquerade_reply",
            Outcome::Hairpin => "hairpin",
            Outcome::DropMalformed => "drop_malformed",
            Outcome::DropUnknownSource => "drop_unknown_source",
            Outcome::DropSpoofedMac => "drop_spoofed_mac",
            Outcome::DropSpoofedIp => "drop_spoofed_ip",
            Outcome::DropCrossNetwork => "drop_cross_network",
            Outcome::DropIcc => "drop_icc",
            Outcome::DropInternal => "drop_internal",
            Outcome::DropNoEndpoint => "drop_no_endpoint",
            Outcome::DropNotUnicast => "drop_not_unicast",
            Outcome::DropUnsupportedL3 => "drop_unsupported_l3",
            Outcome::DropArpUnanswered => "drop_arp_unanswered",
            Outcome::DropNatFailed => "drop_nat_failed",
            Outcome::DropNoNatPort => "drop_no_nat_port",
            Outcome::DropNotTranslatable => "drop_not_translatable",
            Outcome::IcmpError => "icmp_error",
            Outcome::Service => "service",
            Outcome::ServiceReply => "service_reply",
            Outcome::ServiceReset => "service_reset",
            Outcome::DropNoBackend => "drop_no_backend",
            Outcome::ServiceUnreachable => "service_unreachable",
        }
    }

    /// One line for operators: what this outcome means.
    pub const fn meaning(self) -> &'static str {
        match self {
            Outcome::Pass => {
                "handed to the kernel network stack (the host's own addresses, routing)"
            }
            Outcome::Forward => "redirected straight into a container of the same network",
            Outcome::ArpReply => "ARP request for the gateway or a peer answered in place",
            Outcome::Published => {
                "to a published port: destination translated, delivered into the container"
            }
            Outcome::PublishedReply => {
                "a published port's reply: source restored to the host's, sent out of the uplink"
            }
            Outcome::Masquerade => {
                "outbound: source translated to the uplink's address and a free port, sent out"
            }
            Outcome::MasqueradeReply => {
                "reply to a masqueraded flow: destination restored, delivered into the container"
            }
            Outcome::Hairpin => {
                "a container to a published port of the host (or its reply): translated both ways, delivered"
            }
            Outcome::DropMalformed => {
                "Ethernet, ARP or IPv4 header truncated or invalid (version, header length, total length)"
            }
            Outcome::DropUnknownSource => "arrived on an interface with no container behind it",
            Outcome::DropSpoofedMac => "source MAC is not the container's own",
            Outcome::DropSpoofedIp => "source IPv4 address is not the container's own",
            Outcome::DropCrossNetwork => "destination is a container of another network",
            Outcome::DropIcc => "destination is a peer, but the network has icc = false",
            Outcome::DropInternal => "internal network: nothing leaves it but to its gateway",
            Outcome::DropNoEndpoint => {
                "destination is in the container's subnet, but no container has it"
            }
            Outcome::DropNotUnicast => {
                "broadcast or multicast destination: there is no bridge to flood it"
            }
            Outcome::DropUnsupportedL3 => "neither IPv4 nor ARP",
            Outcome::DropArpUnanswered => "ARP request for an address that no peer or gateway has",
            Outcome::DropNatFailed => {
                "a translation could not rewrite the packet or record the flow"
            }
            Outcome::DropNoNatPort => "no free masquerade port toward that destination",
            Outcome::DropNotTranslatable => {
                "would leave a masquerading network untranslated (a later fragment, another protocol)"
            }
            Outcome::IcmpError => {
                "an ICMP error about a translated flow: its quoted packet translated back, delivered"
            }
            Outcome::Service => {
                "to a service's VIP: destination translated to the flow's backend, delivered into it"
            }
            Outcome::ServiceReply => {
                "a backend's reply: source restored to the VIP, delivered to the client"
            }
            Outcome::ServiceReset => {
                "TCP to a VIP refused with a reset: no backend available, or the flow's backend was removed"
            }
            Outcome::DropNoBackend => {
                "to a VIP with no backend available, and not answerable (a reset, IP options, GSO)"
            }
            Outcome::ServiceUnreachable => {
                "UDP to a VIP refused with ICMP port unreachable: no backend available, or removed"
            }
        }
    }

    pub const fn is_drop(self) -> bool {
        !matches!(
            self,
            Outcome::Pass
                | Outcome::Forward
                | Outcome::ArpReply
                | Outcome::Published
                | Outcome::PublishedReply
                | Outcome::Masquerade
                | Outcome::MasqueradeReply
                | Outcome::Hairpin
                | Outcome::IcmpError
                | Outcome::Service
                | Outcome::ServiceReply
                | Outcome::ServiceReset
                | Outcome::ServiceUnreachable
        )
    }
}

/// Number of entries in the stats array: one per (hook, outcome).
pub const STATS_SLOTS: u32 = Hook::COUNT * Outcome::COUNT;

/// Index of the (hook, outcome) counter in the stats array.
#[inline(always)]
pub const fn slot(hook: Hook, outcome: Outcome) -> u32 {
    hook as u32 * Outcome::COUNT + outcome as u32
}

/// One counter of the stats array (per CPU in the kernel; summed by user space).
/// tc programs count skbs: a GRO or GSO skb that carries several segments counts once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    /// Frame bytes, Ethernet header included.
    pub bytes: u64,
}

const _: () = assert!(size_of::<Counter>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64 fields, no padding.
unsafe impl aya::Pod for Counter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_dense_and_distinct() {
        let mut seen = [false; STATS_SLOTS as usize];
        for hook in Hook::ALL {
            for outcome in Outcome::ALL {
                let s = slot(hook, outcome) as usize;
                assert!(!seen[s], "slot {s} used twice");
                seen[s] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn discriminants_match_table_order() {
        for (i, hook) in Hook::ALL.iter().enumerate() {
            assert_eq!(*hook as usize, i);
        }
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i);
        }
    }
}
