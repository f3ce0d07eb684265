//! The connection-tracking table of translated flows and the host's own addresses.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{HashMap, LruHashMap},
};
use netbpf_common::{
    conntrack::{CtEntry, CtKey, TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN_SENT},
    maps::{MAX_CT, MAX_LOCAL},
};

use crate::nat::{L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

#[map]
static NB_CT: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(MAX_CT, 0);

#[map]
static NB_LOCAL: HashMap<u32, u32> = HashMap::with_max_entries(MAX_LOCAL, 0);

/// Whether `addr` is one of the host's own addresses.
#[inline(always)]
pub fn is_local(addr: u32) -> bool {
    // SAFETY: the value is not read.
    unsafe { NB_LOCAL.get(&addr) }.is_some()
}

#[inline(always)]
pub fn key(saddr: u32, daddr: u32, l4: &L4) -> CtKey {
    CtKey {
        saddr,
        daddr,
        sport: l4.sport,
        dport: l4.dport,
        proto: l4.proto,
        pad: [0; 3],
    }
}

/// The entry of a packet's tuple, its last-seen time, packet count and TCP state brought
/// up to date. A TCP SYN on an entry whose connection closed finds nothing: the tuple is
/// being reused, and the flow starts anew.
#[inline(always)]
pub fn lookup(key: &CtKey, l4: &L4) -> Option<*mut CtEntry> {
    let entry = NB_CT.get_ptr_mut(key)?;
    let syn_only = l4.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    // SAFETY: a pointer into the map's value, valid for this run; races with other CPUs
    // only blur the statistics fields.
    unsafe {
        if syn_only && (*entry).tcp_state == TCP_CLOSING {
            return None;
        }
        (*entry).last_seen = bpf_ktime_get_coarse_ns();
        (*entry).packets += 1;
        (*entry).tcp_state = next_tcp_state((*entry).tcp_state, l4.tcp_flags);
    }
    Some(entry)
}

#[inline(always)]
fn next_tcp_state(state: u8, flags: u8) -> u8 {
    if flags & (TCP_FIN | TCP_RST) != 0 {
        TCP_CLOSING
    } else if state == TCP_SYN_SENT && flags & TCP_ACK != 0 {
        TCP_ESTABLISHED
    } else {
        state
    }
}

/// Records a new flow (both directions). Returns false if the table refused.
#[inline(always)]
pub fn create(
    forward: &CtKey,
    forward_entry: &CtEntry,
    reply: &CtKey,
    reply_entry: &CtEntry,
) -> bool {
    // SAFETY: the time helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let mut f = *forward_entry;
    let mut r = *reply_entry;
    f.last_seen = now;
    r.last_seen = now;
    // The reply entry first: once the forward one exists, a reply may come back.
    NB_CT.insert(reply, &r, 0).is_ok() && NB_CT.insert(forward, &f, 0).is_ok()
}

/// A new entry for `l4`'s protocol (TCP starts at SYN_SENT).
#[inline(always)]
pub fn entry(kind: u8, nat_addr: u32, nat_port: u16, ifindex: u32, l4: &L4) -> CtEntry {
    CtEntry {
        nat_addr,
        nat_port,
        kind,
        tcp_state: if l4.tcp_flags & TCP_SYN != 0 {
            TCP_SYN_SENT
        } else {
            0
        },
        ifindex,
        pad: 0,
        last_seen: 0,
        packets: 1,
        dst_mac: [0; 6],
        src_mac: [0; 6],
        pad2: 0,
    }
}
