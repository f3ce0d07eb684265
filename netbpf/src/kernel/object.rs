//! The kernel object built by `build.rs` from `netbpf-ebpf`, embedded in the binary.

use aya::{Ebpf, EbpfLoader};
use netbpf_common::maps;

use super::pins::PinDir;
use crate::Result;

/// A program that does nothing, the baseline of per-packet cost measurements.
pub const BENCH_EMPTY_TC: &str = "bench_empty_tc";
/// The same for XDP.
pub const BENCH_EMPTY_XDP: &str = "bench_empty_xdp";

/// The ELF object with every netbpf program and map.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netbpf"));

/// Creates the object's maps in the kernel (programs stay unloaded until attached).
///
/// With `pins`, every map is pinned under [`PinDir::maps_dir`], and maps already pinned
/// there are reused, so counters and state survive a reload. Without, the maps are private
/// to the returned handle (BPF_PROG_TEST_RUN fixtures).
pub fn open(pins: Option<&PinDir>) -> Result<Ebpf> {
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
    Ok(loader.load(OBJECT)?)
}

#[cfg(test)]
mod tests {
    use aya_obj::Object;
    use netbpf_common::stats::{Hook, STATS_SLOTS};

    use super::*;

    /// Parses the embedded object without the kernel: it must hold one program per hook
    /// and every map netbpf-common names, with the layout user space reads.
    #[test]
    fn object_has_expected_programs_and_maps() {
        let object = Object::parse(OBJECT).expect("embedded object parses");
        let mut programs: Vec<&str> = object.programs.keys().map(String::as_str).collect();
        programs.sort_unstable();
        let mut expected: Vec<&str> = Hook::ALL.iter().map(|h| h.name()).collect();
        expected.extend([BENCH_EMPTY_TC, BENCH_EMPTY_XDP]);
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
