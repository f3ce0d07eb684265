//! Batched reads and writes of array maps (BPF_MAP_LOOKUP_BATCH and BPF_MAP_UPDATE_BATCH,
//! Linux 5.6), which aya 0.16 does not wrap: one system call for a whole `NB_TABLES`
//! region or the whole backend array instead of one per entry; and whole hash maps
//! ([`lookup_hash`]: `show conntrack` reads 100,000 flows in a few dozen calls). Callers
//! fall back to single entries when the kernel refuses ([`unsupported`]).

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

/// `union bpf_attr`'s member for the batch commands (include/uapi/linux/bpf.h).
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

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: the attribute is a live, correctly laid out struct of the size given; the
    // buffers it points at are owned by the caller and sized for `count` entries.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut BatchAttr).cast::<libc::c_void>(),
            size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether an error means the kernel has no batch operations for this map.
pub fn unsupported(e: &io::Error) -> bool {
    // ENOTSUPP (524) is the kernel-internal code some versions leak.
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | 524)
    )
}

/// Writes `values` to entries `start..` of an array map.
pub fn update<V: Pod>(fd: BorrowedFd<'_>, start: u32, values: &[V]) -> io::Result<()> {
    let count = u32::try_from(values.len()).map_err(io::Error::other)?;
    if count == 0 {
        return Ok(());
    }
    let keys: Vec<u32> = (start..start.saturating_add(count)).collect();
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
    if attr.count != count {
        return Err(io::Error::other(format!(
            "batch update wrote {} of {count} entries",
            attr.count
        )));
    }
    Ok(())
}

/// Reads entries `start..start + count` of an array map (fewer if the array ends first).
pub fn lookup<V: Pod + Default + Clone>(
    fd: BorrowedFd<'_>,
    start: u32,
    count: u32,
) -> io::Result<Vec<V>> {
    let mut out: Vec<V> = Vec::with_capacity(count as usize);
    // The kernel continues after the key in `in_batch` (none: from the first entry).
    let mut previous: u32 = start.wrapping_sub(1);
    let mut next: u32 = 0;
    while (out.len() as u32) < count {
        let want = count - out.len() as u32;
        let mut keys = vec![0u32; want as usize];
        let mut values = vec![V::default(); want as usize];
        let mut attr = BatchAttr {
            in_batch: if start == 0 && out.is_empty() {
                0
            } else {
                (&raw const previous) as u64
            },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: want,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = attr.count.min(want) as usize;
        values.truncate(got);
        out.extend(values);
        match result {
            Ok(()) if got > 0 => previous = next,
            // ENOENT: the array ended.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Ok(()) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Every entry of a hash map (plain or LRU), read bucket by bucket with
/// BPF_MAP_LOOKUP_BATCH, `chunk` entries a call (grown when one bucket holds more).
///
/// Reading an LRU map this way does not refresh its entries: the kernel's batch lookup
/// (`__htab_map_lookup_and_delete_batch` in kernel/bpf/hashtab.c) copies keys and values
/// under the bucket lock and never calls `bpf_lru_node_set_ref`, as single lookups from
/// user space do not either (`map_lookup_elem_sys_only`, since 2019: "bpf, lru: avoid
/// messing with eviction heuristics upon syscall lookup"). A bucket's lock is held only
/// while its few entries are copied.
pub fn lookup_hash<K, V>(fd: BorrowedFd<'_>, chunk: u32) -> io::Result<Vec<(K, V)>>
where
    K: Pod + Default + Clone,
    V: Pod + Default + Clone,
{
    let mut out = Vec::new();
    let mut chunk = chunk.max(1);
    // The kernel's cursor is a bucket index (u32); none: from the first bucket.
    let mut previous: u32 = 0;
    let mut next: u32 = 0;
    let mut first = true;
    loop {
        let mut keys = vec![K::default(); chunk as usize];
        let mut values = vec![V::default(); chunk as usize];
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                (&raw const previous) as u64
            },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = attr.count.min(chunk) as usize;
        keys.truncate(got);
        values.truncate(got);
        out.extend(keys.into_iter().zip(values));
        match result {
            Ok(()) => {
                previous = next;
                first = false;
            }
            // ENOENT: the last bucket was read.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            // ENOSPC: the next bucket holds more than `chunk` entries.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && got == 0 => {
                chunk = chunk.saturating_mul(2);
            }
            Err(e) => return Err(e),
        }
    }
}
