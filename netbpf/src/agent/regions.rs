//! Where services' regions go in `NB_TABLES`: a first-fit allocator over the array's
//! entries. It keeps no state of its own between runs: the reconciler rebuilds it from the
//! frontends the kernel holds (each points at its region), so what is in use is always
//! what the datapath can reach.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regions {
    /// Free ranges: start -> length, never adjacent (merged on free).
    free: BTreeMap<u32, u32>,
}

impl Regions {
    /// An empty array of `capacity` entries.
    pub fn new(capacity: u32) -> Regions {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Regions { free }
    }

    /// Marks `len` entries at `start` as in use (a region found in the kernel). False if
    /// any of them is not free (outside the array, or overlapping another region).
    pub fn reserve(&mut self, start: u32, len: u32) -> bool {
        if len == 0 {
            return true;
        }
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        let Some((&gap, &gap_len)) = self.free.range(..=start).next_back() else {
            return false;
        };
        let gap_end = gap + gap_len;
        if end > gap_end {
            return false;
        }
        self.free.remove(&gap);
        if start > gap {
            self.free.insert(gap, start - gap);
        }
        if gap_end > end {
            self.free.insert(end, gap_end - end);
        }
        true
    }

    /// The first free range of `len` entries, now in use.
    pub fn allocate(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return Some(0);
        }
        let (&start, _) = self.free.iter().find(|(_, l)| **l >= len)?;
        self.reserve(start, len).then_some(start)
    }

    /// Gives `len` entries at `start` back (a region no frontend points at any more).
    pub fn free(&mut self, start: u32, len: u32) {
        if len == 0 {
            return;
        }
        let mut start = start;
        let mut len = len;
        if let Some((&prev, &prev_len)) = self.free.range(..start).next_back()
            && prev + prev_len == start
        {
            self.free.remove(&prev);
            start = prev;
            len += prev_len;
        }
        if let Some(&next_len) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += next_len;
        }
        self.free.insert(start, len);
    }

    /// Entries free in all.
    pub fn available(&self) -> u64 {
        self.free.values().map(|l| u64::from(*l)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_and_merging() {
        let mut r = Regions::new(100);
        assert_eq!(r.allocate(10), Some(0));
        assert_eq!(r.allocate(20), Some(10));
        assert_eq!(r.allocate(5), Some(30));
        r.free(10, 20);
        // The hole at 10 takes what fits; what does not goes after the last region.
        assert_eq!(r.allocate(25), Some(35));
        assert_eq!(r.allocate(15), Some(10));
        assert_eq!(r.allocate(5), Some(25));
        assert_eq!(r.allocate(41), None, "40 left at the end");
        assert_eq!(r.allocate(40), Some(60));
        assert_eq!(r.available(), 0);
        // Freeing everything merges back into one range.
        for (start, len) in [(0, 10), (30, 5), (10, 15), (60, 40), (25, 5), (35, 25)] {
            r.free(start, len);
        }
        assert_eq!(r, Regions::new(100));
    }

    #[test]
    fn rebuilt_from_what_the_kernel_holds() {
        let mut r = Regions::new(1000);
        assert!(r.reserve(100, 50));
        assert!(r.reserve(0, 10));
        assert!(!r.reserve(120, 10), "overlaps");
        assert!(!r.reserve(995, 10), "beyond the array");
        assert!(r.reserve(990, 10));
        assert_eq!(r.allocate(90), Some(10));
        assert_eq!(r.allocate(100), Some(150));
        assert_eq!(r.available(), 1000 - 50 - 10 - 10 - 90 - 100);
    }

    #[test]
    fn empty_regions_take_no_room() {
        let mut r = Regions::new(10);
        assert_eq!(r.allocate(0), Some(0));
        assert!(r.reserve(3, 0));
        r.free(3, 0);
        assert_eq!(r.available(), 10);
    }
}
