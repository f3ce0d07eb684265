//! Events for `netbpf monitor`, written only while a monitor holds a lease (see
//! `netbpf_common::monitor`): drops with their reason, and new translated flows.

use aya_ebpf::{
    macros::map,
    maps::{Array, RingBuf},
};
use netbpf_common::{
    conntrack::{CtEntry, CtKey},
    monitor::{EVENT_DROP, EVENT_FLOW, MON_DROPS, MON_FLOWS, MonitorEvent, MonitorLease},
    stats::{Hook, Outcome},
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{conntrack, packet::ptr_at};

#[map]
static NB_MONITOR: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
static NB_MON_ON: Array<MonitorLease> = Array::with_max_entries(1, 0);

/// Whether an attached monitor wants events of this kind.
#[inline(always)]
fn wanted(what: u32) -> bool {
    NB_MON_ON
        .get(0)
        .is_some_and(|l| l.wants & what != 0 && l.until > conntrack::now())
}

/// A dropped packet (the frame at `data`), with the reason its hook gave.
#[inline(always)]
pub fn dropped(hook: Hook, outcome: Outcome, data: usize, data_end: usize, len: u32, ifindex: u32) {
    if !wanted(MON_DROPS) {
        return;
    }
    let mut event = MonitorEvent {
        kind: EVENT_DROP,
        hook: hook as u32,
        outcome: outcome as u32,
        len,
        ifindex,
        ..MonitorEvent::default()
    };
    if let Ok(eth) = ptr_at::<EthHdr>(data, data_end, 0)
        // SAFETY: ptr_at checked the header lies inside the packet.
        && unsafe { (*eth).ether_type } == crate::packet::ETH_P_IPV4
        && let Ok(ip) = ptr_at::<Ipv4Hdr>(data, data_end, EthHdr::LEN)
    {
        // SAFETY: as above.
        let ip = unsafe { &*ip };
        event.proto = ip.proto;
        event.saddr = u32::from_ne_bytes(ip.src_addr);
        event.daddr = u32::from_ne_bytes(ip.dst_addr);
        if let Some(l4) = crate::nat::l4(data, data_end, ip) {
            event.sport = l4.sport;
            event.dport = l4.dport;
        }
    }
    let _ = NB_MONITOR.output(&event, 0);
}

/// A new translated flow, as recorded (its first direction's key and entry).
#[inline(always)]
pub fn new_flow(key: &CtKey, e: &CtEntry) {
    if !wanted(MON_FLOWS) {
        return;
    }
    let event = MonitorEvent {
        kind: EVENT_FLOW,
        proto: key.proto,
        flow_kind: e.kind,
        saddr: key.saddr,
        daddr: key.daddr,
        sport: key.sport,
        dport: key.dport,
        nat_addr: e.nat_addr,
        nat_port: e.nat_port,
        ifindex: e.ifindex,
        ..MonitorEvent::default()
    };
    let _ = NB_MONITOR.output(&event, 0);
}
