//! The kernel object built by `build.rs` from `netbpf-ebpf`, embedded in the binary.

use std::sync::OnceLock;

use aya::{Ebpf, EbpfLoader};
use netbpf_common::{maps, skb};

use super::{btf::Btf, pins::PinDir};
use crate::Result;

/// A program that does nothing, the baseline of per-packet cost measurements.
pub const BENCH_EMPTY_TC: &str = "bench_empty_tc";
/// The same for XDP.
pub const BENCH_EMPTY_XDP: &str = "bench_empty_xdp";
/// A program that only records the packet's flow in conntrack: the floor under a new
/// flow's cost.
pub const BENCH_CT_INSERT: &str = "bench_ct_insert";

/// The ELF object with every netbpf program and map.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netbpf"));

/// Creates the object's maps in the kernel (programs stay unloaded until attached).
///
/// With `pins`, every map is pinned under [`PinDir::maps_dir`], and maps already pinned
/// there are reused, so counters and state survive a reload. Without, the maps are private
/// to the returned handle (BPF_PROG_TEST_RUN fixtures).
pub fn open(pins: Option<&PinDir>) -> Result<Ebpf> {
    open_with(pins, SkbLayout::of_this_kernel())
}

/// As [`open`] with private maps, the programs told nothing of this kernel's `sk_buff`:
/// every checksum goes through the csum helpers, as on a kernel without BTF (tests check
/// that both ways give the same bytes).
pub fn open_with_csum_helpers() -> Result<Ebpf> {
    open_with(None, SkbLayout::UNKNOWN)
}

fn open_with(pins: Option<&PinDir>, layout: SkbLayout) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    let paths: Vec<_> = pins
        .map(|pins| {
            maps::ALL
                .iter()
                .map(|name| (*name, pins.map(name)))
                .collect()
        })
        .unwrap_or_default();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    loader.override_global(skb::CSUM_STATE_AT, &layout.csum_state_at, true);
    loader.override_global(skb::CSUM_STATE_SHIFT, &layout.csum_state_shift, true);
    Ok(loader.load(layout.patch(OBJECT).bytes())?)
}

/// What the tc programs need to know of this kernel's `struct sk_buff` (see
/// [`netbpf_common::skb`]): how to reach it from their context, and where it keeps the
/// checksum state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SkbLayout {
    /// The BTF id of the kfunc `bpf_cast_to_kern_ctx`; 0: none.
    kern_ctx_id: u32,
    /// As the programs' globals of the same names.
    csum_state_at: u32,
    csum_state_shift: u32,
}

impl SkbLayout {
    const UNKNOWN: SkbLayout = SkbLayout {
        kern_ctx_id: 0,
        csum_state_at: 0,
        csum_state_shift: 0,
    };

    /// Read once from the kernel's BTF. Without it, without the kfunc, or without the JIT
    /// (which kfunc calls need), the programs are told nothing and keep to the csum
    /// helpers.
    fn of_this_kernel() -> SkbLayout {
        static LAYOUT: OnceLock<SkbLayout> = OnceLock::new();
        *LAYOUT.get_or_init(|| {
            if !jit_enabled() {
                return SkbLayout::UNKNOWN;
            }
            let Ok(btf) = Btf::vmlinux() else {
                return SkbLayout::UNKNOWN;
            };
            match (
                btf.func_id("bpf_cast_to_kern_ctx"),
                btf.bitfield("sk_buff", "ip_summed"),
            ) {
                (Some(id), Some(field)) => SkbLayout {
                    kern_ctx_id: id,
                    csum_state_at: field.byte + 1,
                    csum_state_shift: field.shift,
                },
                _ => SkbLayout::UNKNOWN,
            }
        })
    }

    /// The object with every call of [`skb::KERN_CTX_CALL`] made the kfunc's call, or,
    /// without the kfunc, a move of 0 (the programs then never reach it: the verifier
    /// follows `CSUM_STATE_AT`'s 0 past it).
    fn patch(&self, object: &[u8]) -> AlignedBytes {
        const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
        const MOV_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
        const PSEUDO_KFUNC_CALL: u8 = 2;
        let mut out = AlignedBytes::copy_of(object);
        let marker = skb::KERN_CTX_CALL.to_le_bytes();
        for range in executable_sections(object) {
            for insn in out.bytes_mut()[range].as_chunks_mut::<8>().0 {
                // A helper call (registers 0, offset 0) of the marker number.
                if insn[0] != CALL || insn[1..4] != [0; 3] || insn[4..8] != marker {
                    continue;
                }
                if self.kern_ctx_id != 0 {
                    insn[1] = PSEUDO_KFUNC_CALL << 4;
                    insn[4..8].copy_from_slice(&self.kern_ctx_id.to_le_bytes());
                } else {
                    insn[0] = MOV_IMM;
                    insn[4..8].copy_from_slice(&[0; 4]);
                }
            }
        }
        out
    }
}

/// Bytes kept 8-aligned, as the ELF reader wants an object (the embedded one is, through
/// `include_bytes_aligned!`).
struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    fn copy_of(bytes: &[u8]) -> AlignedBytes {
        let mut out = AlignedBytes {
            words: vec![0; bytes.len().div_ceil(8)],
            len: bytes.len(),
        };
        out.bytes_mut().copy_from_slice(bytes);
        out
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the words hold at least `len` bytes, and any bits are a valid u8.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// Whether the kernel compiles programs (`net.core.bpf_jit_enable` not 0). The setting
/// exists in the first network namespace only: where it cannot be read, the JIT is taken
/// as on (kernels built with CONFIG_BPF_JIT_ALWAYS_ON, the distributions' way, cannot
/// turn it off).
fn jit_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").map_or(true, |v| v.trim() != "0")
}

/// The file ranges of an ELF64 little-endian object's executable sections (SHF_EXECINSTR).
fn executable_sections(elf: &[u8]) -> Vec<std::ops::Range<usize>> {
    const SHF_EXECINSTR: u64 = 0x4;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let (Some(shoff), Some(shentsize), Some(shnum)) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c))
    else {
        return Vec::new();
    };
    (0..usize::from(shnum))
        .filter_map(|i| {
            let header = usize::try_from(shoff).ok()? + i * usize::from(shentsize);
            let (flags, offset, size) = (
                u64_at(header + 0x08)?,
                u64_at(header + 0x18)?,
                u64_at(header + 0x20)?,
            );
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(usize::try_from(size).ok()?)?;
            (flags & SHF_EXECINSTR != 0 && end <= elf.len()).then_some(start..end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use aya_obj::Object;
    use netbpf_common::stats::{Hook, STATS_SLOTS};

    use super::*;

    /// On a kernel with BTF and the JIT (this one), the tc programs are told where the
    /// checksum state is, and the patched object has the kfunc's calls and no marker left.
    #[test]
    fn this_kernels_skb_layout_is_found_and_patched_in() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() || !jit_enabled() {
            eprintln!("no BTF or no JIT here: the helpers serve");
            return;
        }
        let layout = SkbLayout::of_this_kernel();
        assert_ne!(layout.kern_ctx_id, 0, "{layout:?}");
        assert_ne!(layout.csum_state_at, 0, "{layout:?}");
        let marker = [&[0x85, 0, 0, 0][..], &skb::KERN_CTX_CALL.to_le_bytes()].concat();
        let kfunc_call = [&[0x85, 0x20, 0, 0][..], &layout.kern_ctx_id.to_le_bytes()].concat();
        let count = |bytes: &[u8], insn: &[u8]| {
            executable_sections(bytes)
                .into_iter()
                .flat_map(|r| bytes[r].as_chunks::<8>().0.to_vec())
                .filter(|i| i[..] == *insn)
                .count()
        };
        let patched = layout.patch(OBJECT);
        let calls = count(OBJECT, &marker);
        assert!(calls > 0, "the object calls the marker");
        assert_eq!(count(patched.bytes(), &marker), 0);
        assert_eq!(count(patched.bytes(), &kfunc_call), calls);
        let unpatched = SkbLayout::UNKNOWN.patch(OBJECT);
        assert_eq!(count(unpatched.bytes(), &marker), 0);
    }

    /// Parses the embedded object without the kernel: it must hold one program per hook
    /// and every map netbpf-common names, with the layout user space reads.
    #[test]
    fn object_has_expected_programs_and_maps() {
        let object = Object::parse(OBJECT).expect("embedded object parses");
        let mut programs: Vec<&str> = object.programs.keys().map(String::as_str).collect();
        programs.sort_unstable();
        let mut expected: Vec<&str> = Hook::ALL.iter().map(|h| h.name()).collect();
        expected.extend([BENCH_EMPTY_TC, BENCH_EMPTY_XDP, BENCH_CT_INSERT]);
        expected.sort_unstable();
        assert_eq!(programs, expected);

        let mut map_names: Vec<&str> = object
            .maps
            .keys()
            .map(String::as_str)
            .filter(|name| !name.starts_with('.'))
            .collect();
        map_names.sort_unstable();
        assert_eq!(map_names, maps::ALL);

        let stats = &object.maps[maps::STATS];
        assert_eq!(stats.max_entries(), STATS_SLOTS);
        assert_eq!(stats.key_size(), 4);
        assert_eq!(
            stats.value_size() as usize,
            size_of::<netbpf_common::stats::Counter>()
        );
    }
}
