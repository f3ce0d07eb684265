//! Raw access to pinned BPF maps for tests and benchmarks that need many entries fast
//! (100,000 conntrack flows): open a pin, write entries in batches, look single entries
//! up. Plain bpf(2) calls, so that xtask can use them without aya; lookups from user space
//! never refresh an LRU map's entries (kernel/bpf/syscall.c calls the map's
//! `map_lookup_elem_sys_only`).

use std::{
    ffi::CString,
    io,
    net::Ipv4Addr,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use netbpf_common::conntrack::{CT_PUBLISHED_IN, CtEntry, CtKey};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// `union bpf_attr` as BPF_MAP_*_BATCH reads it.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `union bpf_attr` as BPF_MAP_LOOKUP_ELEM reads it.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` as BPF_OBJ_GET reads it.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    pad: u32,
}

fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, correctly laid out bpf_attr member of the size given; the
    // buffers it points at belong to the caller and are sized for what it describes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut A).cast::<libc::c_void>(),
            size_of::<A>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// A map pinned on bpffs.
pub struct PinnedMap {
    fd: OwnedFd,
}

impl PinnedMap {
    pub fn open(pin: &Path) -> io::Result<PinnedMap> {
        let path = CString::new(pin.as_os_str().as_bytes()).map_err(io::Error::other)?;
        let mut attr = ObjAttr {
            pathname: path.as_ptr() as u64,
            ..ObjAttr::default()
        };
        let fd = bpf(BPF_OBJ_GET, &mut attr)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", pin.display())))?;
        // SAFETY: BPF_OBJ_GET returned a new file descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(PinnedMap { fd })
    }

    /// Writes every (key, value) with BPF_MAP_UPDATE_BATCH, `chunk` entries a call, in
    /// order: into an LRU map they go in as if inserted one by one, on the calling CPU.
    pub fn update_batch<K: Copy, V: Copy>(
        &self,
        entries: &[(K, V)],
        chunk: usize,
    ) -> io::Result<()> {
        for part in entries.chunks(chunk.max(1)) {
            let keys: Vec<K> = part.iter().map(|(k, _)| *k).collect();
            let values: Vec<V> = part.iter().map(|(_, v)| *v).collect();
            let count = u32::try_from(part.len()).map_err(io::Error::other)?;
            let mut attr = BatchAttr {
                keys: keys.as_ptr() as u64,
                values: values.as_ptr() as u64,
                count,
                map_fd: self.fd.as_raw_fd() as u32,
                ..BatchAttr::default()
            };
            bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
            if attr.count != count {
                return Err(io::Error::other(format!(
                    "batch update wrote {} of {count} entries",
                    attr.count
                )));
            }
        }
        Ok(())
    }

    /// One entry, or `None` (BPF_MAP_LOOKUP_ELEM: leaves an LRU map's order alone).
    pub fn lookup<K: Copy, V: Copy + Default>(&self, key: &K) -> io::Result<Option<V>> {
        let mut value = V::default();
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: (key as *const K) as u64,
            value: (&raw mut value) as u64,
            ..ElemAttr::default()
        };
        match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Keeps the calling thread on one CPU: the kernel's LRU lists keep per-CPU free and
/// pending lists, so entries written from one CPU go in, and are evicted, in order.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above, `cpu` below CPU_SETSIZE (checked by the kernel on use).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the set is initialised.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where synthetic published-port flows go: the container (address, port, host-side
/// ifindex, its MAC and its gateway's) a real flow's entry would name.
#[derive(Clone, Copy, Debug)]
pub struct FlowTarget {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub gateway_mac: [u8; 6],
}

/// The key of synthetic flow `i`: UDP from `client` to `host`, source ports 1024..61024,
/// then the next destination port from `first_dport` (so 60,000 flows per destination
/// port, and any count up to a few million distinct).
pub fn flow_key(client: Ipv4Addr, host: Ipv4Addr, first_dport: u16, i: u32) -> CtKey {
    let sport = 1024 + (i % 60_000) as u16;
    let dport = first_dport.wrapping_add((i / 60_000) as u16);
    CtKey {
        saddr: u32::from_ne_bytes(client.octets()),
        daddr: u32::from_ne_bytes(host.octets()),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto: 17,
        pad: [0; 3],
    }
}

/// `count` conntrack entries of published-port flows (the arriving direction, as the
/// uplink program records it), keys from [`flow_key`].
pub fn published_flows(
    client: Ipv4Addr,
    host: Ipv4Addr,
    first_dport: u16,
    range: std::ops::Range<u32>,
    to: &FlowTarget,
) -> Vec<(CtKey, CtEntry)> {
    range
        .map(|i| {
            let key = flow_key(client, host, first_dport, i);
            let entry = CtEntry {
                kind: CT_PUBLISHED_IN,
                nat_addr: u32::from_ne_bytes(to.addr.octets()),
                nat_port: to.port.to_be(),
                ifindex: to.ifindex,
                dst_mac: to.mac,
                src_mac: to.gateway_mac,
                ..CtEntry::default()
            };
            (key, entry)
        })
        .collect()
}
