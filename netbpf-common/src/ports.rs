//! Published ports: a host address (or any) and port, per protocol, leading to a
//! container's address and port. Ports are in network byte order, addresses as in
//! [`crate::net`].

/// `NB_PORTS` key. `addr == 0`: every address of the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub addr: u32,
    pub port: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
    pub pad: u8,
}

/// `NB_PORTS` value: where a published port leads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortTarget {
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
    pub network_id: u32,
}

const _: () = assert!(size_of::<PortKey>() == 8);
const _: () = assert!(size_of::<PortTarget>() == 12);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no padding (sizes asserted above).
unsafe impl aya::Pod for PortKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for PortTarget {}
