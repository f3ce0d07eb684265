//! Datapath events for `netbpf monitor`: drops with their reason and, on request, new
//! translated flows. The programs write them into the `NB_MONITOR` ring buffer only while
//! a monitor is attached: `NB_MON_ON` holds when the attached monitor's lease ends (in
//! jiffies, renewed every second by the monitor) and what it wants. A monitor that dies
//! stops the events within its lease; with none, a drop costs one array lookup and a new
//! flow the same, and nothing else pays anything.

/// `MonitorLease::wants`: drops (with their reason).
pub const MON_DROPS: u32 = 1 << 0;
/// `MonitorLease::wants`: new translated flows (published ports, masquerade, hairpin,
/// services).
pub const MON_FLOWS: u32 = 1 << 1;

/// `NB_MON_ON` (one slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorLease {
    /// bpf_jiffies64() until which events are wanted (0: no monitor).
    pub until: u64,
    pub wants: u32,
    pub pad: u32,
}

/// `MonitorEvent::kind`.
pub const EVENT_DROP: u8 = 1;
pub const EVENT_FLOW: u8 = 2;

/// One event in `NB_MONITOR`. Addresses and ports as they sit in the packet (network
/// byte order); for a new flow, `nat_*` is where its packets are translated to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorEvent {
    pub kind: u8,
    pub proto: u8,
    /// `CtEntry::kind` of a new flow's first direction (0 for drops).
    pub flow_kind: u8,
    pub pad: u8,
    /// `stats::Hook` and `stats::Outcome` discriminants (drops).
    pub hook: u32,
    pub outcome: u32,
    /// Frame length (drops), the interface it arrived on.
    pub len: u32,
    pub ifindex: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub nat_addr: u32,
    pub nat_port: u16,
    pub pad2: u16,
}

const _: () = assert!(size_of::<MonitorLease>() == 16);
const _: () = assert!(size_of::<MonitorEvent>() == 40);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no padding (sizes asserted above).
unsafe impl aya::Pod for MonitorLease {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for MonitorEvent {}
