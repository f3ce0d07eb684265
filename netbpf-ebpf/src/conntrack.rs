//! The connection-tracking table of translated flows and the host's own addresses.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_prandom_u32, bpf_jiffies64},
    macros::map,
    maps::{Array, HashMap, LruHashMap},
};
use netbpf_common::{
    conntrack::{
        CT_SERVICE, CtEntry, CtKey, HostConfig, TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN_SENT, partner,
    },
    maps::{MAX_CT, MAX_LOCAL},
};

use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    monitor,
    nat::{L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    packet::ptr_at,
    service,
};

#[map]
static NB_CT: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(MAX_CT, 0);

#[map]
static NB_LOCAL: HashMap<u32, u32> = HashMap::with_max_entries(MAX_LOCAL, 0);

#[map]
static NB_CONFIG: Array<HostConfig> = Array::with_max_entries(1, 0);

/// The conntrack clock: jiffies (the JIT makes this helper a load; user space converts
/// with `HostConfig::jiffies_hz`).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_jiffies64() }
}

/// The host's configuration, if an uplink is set.
#[inline(always)]
pub fn host_config() -> Option<&'static HostConfig> {
    NB_CONFIG.get(0).filter(|c| c.uplink_ifindex != 0)
}

/// The host's configuration, uplink or not (the port range is always there).
#[inline(always)]
pub fn any_host_config() -> Option<&'static HostConfig> {
    NB_CONFIG.get(0).filter(|c| c.masq_port_max != 0)
}

/// Tries to take a port for a translated flow: the reply entry (keyed with the port as its
/// destination port) is created only if no flow holds that port toward that destination
/// yet. A few tries from a random start; returns the port taken (network byte order).
#[inline(always)]
pub fn take_port(cfg: &HostConfig, reply_key: &mut CtKey, reply: &CtEntry) -> Option<u16> {
    let span = u32::from(cfg.masq_port_max.saturating_sub(cfg.masq_port_min)) + 1;
    // SAFETY: helper without preconditions.
    let start = unsafe { bpf_get_prandom_u32() };
    let mut entry = *reply;
    entry.last_seen = now();
    // The reply direction: no packet of it seen yet.
    entry.packets = 0;
    for i in 0..8u32 {
        let port =
            (u32::from(cfg.masq_port_min) + start.wrapping_add(i.wrapping_mul(7919)) % span) as u16;
        reply_key.dport = port.to_be();
        if NB_CT
            .insert(reply_key, &entry, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            return Some(reply_key.dport);
        }
    }
    None
}

/// Whether a flow direction is recorded (without refreshing it).
#[inline(always)]
pub fn exists(key: &CtKey) -> bool {
    // SAFETY: the value is not read.
    unsafe { NB_CT.get(key) }.is_some()
}

/// Records a flow's reply direction unless the key is taken already.
#[inline(always)]
pub fn insert_reply(key: &CtKey, entry: &CtEntry) -> bool {
    store_reply(key, entry, BPF_NOEXIST)
}

/// Records a flow's reply direction in place of a leftover entry of its tuple.
#[inline(always)]
pub fn replace_reply(key: &CtKey, entry: &CtEntry) -> bool {
    store_reply(key, entry, BPF_ANY)
}

/// A reply direction's entry as recorded: no packet of it seen yet.
#[inline(always)]
fn store_reply(key: &CtKey, entry: &CtEntry, flags: u32) -> bool {
    let mut e = *entry;
    e.last_seen = now();
    e.packets = 0;
    NB_CT.insert(key, &e, u64::from(flags)).is_ok()
}

/// A flow direction's entry where it lies, untouched (no copy: stack space is scarce).
#[inline(always)]
pub fn peek(key: &CtKey) -> Option<&'static CtEntry> {
    // SAFETY: a reference into the map's value, valid for this run.
    unsafe { NB_CT.get(key) }
}

/// Forgets a flow: the direction at `key` (whose entry is `e`) and the other.
#[inline(always)]
pub fn forget(key: &CtKey, e: &CtEntry) {
    remove(&partner(key, e));
    remove(key);
}

/// Forgets a flow direction.
#[inline(always)]
pub fn remove(key: &CtKey) {
    let _ = NB_CT.remove(key);
}

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
/// up to date. A TCP SYN (or SYN-ACK) on an entry whose connection closed finds nothing:
/// the tuple is being reused, so the old flow (both directions, freeing its port) is
/// forgotten and the flow starts anew. (A reused tuple's SYN renews both directions
/// before its SYN-ACK comes back: a SYN-ACK meeting a closed entry answers a connection
/// that never went through the translation, as a direct one to a server that also
/// received a hairpin flow from the same client port.)
#[inline(always)]
pub fn lookup(key: &CtKey, l4: &L4) -> Option<*mut CtEntry> {
    let entry = NB_CT.get_ptr_mut(key)?;
    let opening = l4.tcp_flags & TCP_SYN != 0;
    // SAFETY: a pointer into the map's value, valid for this run; races with other CPUs
    // only blur the statistics fields.
    unsafe {
        if opening && (*entry).tcp_state == TCP_CLOSING {
            forget(key, &*entry);
            return None;
        }
        (*entry).last_seen = now();
        (*entry).packets += 1;
        let state = next_tcp_state((*entry).tcp_state, l4.tcp_flags);
        // A service connection closing (the client's FIN or RST) stops counting as
        // active for least-connection scheduling.
        if state == TCP_CLOSING && (*entry).tcp_state != TCP_CLOSING && (*entry).kind == CT_SERVICE
        {
            service::closed((*entry).backend_id);
        }
        (*entry).tcp_state = state;
    }
    Some(entry)
}

/// A copy of a flow direction's entry, without touching it.
#[inline(always)]
pub fn get(key: &CtKey) -> Option<CtEntry> {
    // SAFETY: the value is copied out at once.
    unsafe { NB_CT.get(key) }.copied()
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

/// A flow's entry as [`create`] and [`claim`] leave it: recorded by this packet, or by
/// another CPU that got there first (whose entry the packet then follows).
pub enum Created {
    New(CtEntry),
    Existing(CtEntry),
}

impl Created {
    #[inline(always)]
    pub fn entry(self) -> CtEntry {
        match self {
            Created::New(e) | Created::Existing(e) => e,
        }
    }
}

/// Records a new flow (both directions).
#[inline(always)]
pub fn create(
    forward: &CtKey,
    forward_entry: &CtEntry,
    reply: &CtKey,
    reply_entry: &CtEntry,
) -> Option<Created> {
    // The reply entry first: once the forward one exists, a reply may come back. It must
    // not replace another flow's entry; if it is this very flow's (another CPU creating
    // it at the same time), that CPU's entry is the one to follow.
    if !insert_reply(reply, reply_entry) {
        return get(forward).map(Created::Existing);
    }
    claim(forward, forward_entry, reply)
}

/// Records a new flow's forward direction, its reply direction (`reply`) being held
/// already. Another CPU may have recorded the same flow in between: its entry wins and
/// the reply direction taken here is let go, so no port leaks.
#[inline(always)]
pub fn claim(forward: &CtKey, entry: &CtEntry, reply: &CtKey) -> Option<Created> {
    let mut e = *entry;
    e.last_seen = now();
    if NB_CT.insert(forward, &e, u64::from(BPF_NOEXIST)).is_ok() {
        monitor::new_flow(forward, &e);
        return Some(Created::New(e));
    }
    remove(reply);
    get(forward).map(Created::Existing)
}

/// For [`crate::bench_ct_insert`]: an empty entry keyed with the frame's addresses, ports
/// and protocol (an IPv4 header without options assumed), recorded unless there already.
/// Whether it was recorded.
#[inline(always)]
pub fn bench_insert(data: usize, data_end: usize) -> bool {
    let Ok(ip) = ptr_at::<Ipv4Hdr>(data, data_end, EthHdr::LEN) else {
        return false;
    };
    let Ok(ports) = ptr_at::<[u16; 2]>(data, data_end, EthHdr::LEN + Ipv4Hdr::LEN) else {
        return false;
    };
    // SAFETY: ptr_at checked both lie inside the packet.
    let (ip, [sport, dport]) = unsafe { (&*ip, *ports) };
    let key = CtKey {
        saddr: u32::from_ne_bytes(ip.src_addr),
        daddr: u32::from_ne_bytes(ip.dst_addr),
        sport,
        dport,
        proto: ip.proto,
        pad: [0; 3],
    };
    NB_CT
        .insert(&key, &CtEntry::default(), u64::from(BPF_NOEXIST))
        .is_ok()
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
        rev_addr: 0,
        last_seen: 0,
        packets: 1,
        dst_mac: [0; 6],
        src_mac: [0; 6],
        rev_port: 0,
        pad: 0,
        backend_id: 0,
        reply_checked: 0,
    }
}
