//! The per-CPU packet and byte counters, indexed by (hook, outcome).

use aya_ebpf::{macros::map, maps::PerCpuArray};
use netbpf_common::stats::{Counter, Hook, Outcome, STATS_SLOTS, slot};

/// User space pins this map (`netbpf-common::maps::STATS`) and sums it across CPUs.
#[map]
static NB_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STATS_SLOTS, 0);

#[inline(always)]
pub fn count(hook: Hook, outcome: Outcome, bytes: u32) {
    if let Some(counter) = NB_STATS.get_ptr_mut(slot(hook, outcome)) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += u64::from(bytes);
        }
    }
}
