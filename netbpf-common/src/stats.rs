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
}

impl Hook {
    pub const ALL: [Hook; 2] = [Hook::FromUplink, Hook::XdpUplink];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The stable name used in pins, tables and JSON (also the program's name).
    pub const fn name(self) -> &'static str {
        match self {
            Hook::FromUplink => "from_uplink",
            Hook::XdpUplink => "xdp_uplink",
        }
    }
}

/// What a program did with a packet. Drops carry their reason in the variant.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Handed on to the kernel's network stack unchanged.
    Pass = 0,
    /// Dropped: the Ethernet or IPv4 header is truncated or invalid.
    DropMalformed = 1,
}

impl Outcome {
    pub const ALL: [Outcome; 2] = [Outcome::Pass, Outcome::DropMalformed];
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The stable name used in tables and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::DropMalformed => "drop_malformed",
        }
    }

    /// One line for operators: what this outcome means.
    pub const fn meaning(self) -> &'static str {
        match self {
            Outcome::Pass => "handed to the kernel network stack unchanged",
            Outcome::DropMalformed => {
                "Ethernet or IPv4 header truncated or invalid (version, header length, total length)"
            }
        }
    }

    pub const fn is_drop(self) -> bool {
        !matches!(self, Outcome::Pass)
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
