//! The scheduling tables the datapath reads: IPVS's weighted round-robin sequence, and
//! the weighted Maglev lookup table of the hashing schedulers. Pure functions of the
//! selectable backends (and, for Maglev, the table size).

use std::net::Ipv4Addr;

/// Longest weighted round-robin cycle written to a table. A cycle is as long as the sum
/// of the weights over their greatest common divisor; beyond this the weights are scaled
/// down for the table (the cycle is then proportional rather than exact).
pub const MAX_SEQUENCE: u64 = 65536;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// IPVS's interleaved weighted round-robin (ip_vs_wrr.c) over one full cycle: the
/// current weight starts at the largest weight and steps down by the weights' gcd; at
/// each step every backend (in order) whose weight reaches it is picked once. Returns
/// indices into `weights`; backends of weight 0 never appear. 3:1 gives `0 0 0 1`,
/// 5:3:2 gives `0 0 0 1 0 1 2 0 1 2`.
pub fn wrr_sequence(weights: &[u16]) -> Vec<usize> {
    let mut w: Vec<u64> = weights.iter().map(|w| u64::from(*w)).collect();
    let sum: u64 = w.iter().sum();
    if sum == 0 {
        return Vec::new();
    }
    let g = w.iter().fold(0, |g, w| gcd(g, *w));
    if sum / g > MAX_SEQUENCE {
        for x in w.iter_mut().filter(|x| **x > 0) {
            *x = (*x * MAX_SEQUENCE / sum).max(1);
        }
    }
    let g = w.iter().fold(0, |g, w| gcd(g, *w));
    let max = w.iter().copied().max().unwrap_or(0);
    // ip_vs_wrr_init_svc: mw = max - (gcd - 1); the first pass runs at cw = mw.
    let mut out = Vec::new();
    let mut cw = max - (g - 1);
    while cw > 0 {
        out.extend(
            w.iter()
                .enumerate()
                .filter(|(_, w)| **w >= cw)
                .map(|(i, _)| i),
        );
        cw = cw.saturating_sub(g);
    }
    out
}

/// Table entries per backend at least (Maglev's paper: M well above 100 N keeps every
/// backend's share within about 1% of its due).
pub const MAGLEV_PER_BACKEND: u32 = 100;

/// The Maglev table's size for a service of `backends` backends (every one defined,
/// selectable or not, so that a health check or a drain never changes it): the smallest
/// prime at or above 100 per backend (101 for one). A size the service had before is kept
/// while it stays between 100 and 200 per backend: a table of another size moves every
/// client, so removing one backend (and adding it back) must not change it.
pub fn maglev_size(backends: usize, previous: Option<u32>) -> u32 {
    match previous {
        Some(p) if size_fits(p, backends, backends) => p,
        _ => next_prime(per_backend(backends)),
    }
}

/// Whether a table of `m` entries may serve `members` roster members (at least 100
/// entries each) of which `live` are defined now (at most 200 entries per defined one).
pub fn size_fits(m: u32, members: usize, live: usize) -> bool {
    m >= per_backend(members) && m <= per_backend(live).saturating_mul(2) && is_prime(m)
}

fn per_backend(backends: usize) -> u32 {
    MAGLEV_PER_BACKEND.saturating_mul(u32::try_from(backends.max(1)).unwrap_or(u32::MAX))
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn next_prime(n: u32) -> u32 {
    (n..).find(|p| is_prime(*p)).unwrap_or(n)
}

/// A backend's identity for Maglev: its address and port, never its id or position, so
/// that its permutation is the same whatever else changes.
pub fn identity(addr: Ipv4Addr, port: u16) -> u64 {
    (u64::from(u32::from(addr)) << 16) | u64::from(port)
}

/// splitmix64's finalizer: a fixed, well-mixed 64-bit hash (stable across builds).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Where a backend's preference list starts and how it steps (Maglev's offset and skip).
fn permutation(identity: u64, m: u32) -> (u64, u64) {
    let m = u64::from(m);
    let offset = mix(identity ^ 0x6e65_7462_7066_0001) % m;
    let skip = mix(identity ^ 0x6e65_7462_7066_0002) % (m - 1) + 1;
    (offset, skip)
}

/// Maglev's lookup table of prime size `m`, weighted: backends (identity, weight > 0) take
/// turns claiming the next free slot of their own permutation of the table; in each round
/// a backend adds its weight to a credit and claims a slot when the credit reaches the
/// largest weight (Katran's MaglevHashV2, Envoy's weighted Maglev), so shares follow the
/// weights. Turns go in the order of identities, so the table depends only on the set of
/// backends, never on their order. Returns indices into `backends`.
pub fn maglev_table(backends: &[(u64, u16)], m: u32) -> Vec<usize> {
    let live: Vec<usize> = {
        let mut v: Vec<usize> = (0..backends.len()).filter(|i| backends[*i].1 > 0).collect();
        v.sort_by_key(|i| backends[*i].0);
        v
    };
    match live.as_slice() {
        [] => return Vec::new(),
        [only] => return vec![*only; m as usize],
        _ => {}
    }
    let max = live
        .iter()
        .map(|i| u64::from(backends[*i].1))
        .max()
        .unwrap_or(1);
    let perms: Vec<(u64, u64)> = live
        .iter()
        .map(|i| permutation(backends[*i].0, m))
        .collect();
    let mut next = vec![0u64; live.len()];
    let mut credit = vec![0u64; live.len()];
    let mut table: Vec<Option<usize>> = vec![None; m as usize];
    let mut filled = 0;
    loop {
        for (k, &i) in live.iter().enumerate() {
            credit[k] += u64::from(backends[i].1);
            if credit[k] < max {
                continue;
            }
            credit[k] -= max;
            let (offset, skip) = perms[k];
            let slot = loop {
                let c = ((offset + next[k] * skip) % u64::from(m)) as usize;
                next[k] += 1;
                if table[c].is_none() {
                    break c;
                }
            };
            table[slot] = Some(i);
            filled += 1;
            if filled == m as usize {
                return table.into_iter().map(|e| e.unwrap_or(i)).collect();
            }
        }
    }
}

/// Gives `slots` (a taken-out member's share of the table) to the selectable backends
/// (identity, weight), balanced by weight: as in Maglev, the backends take turns (a turn
/// when their credit reaches the largest weight), each claiming the next free slot of its
/// own preference order over these slots (a hash of slot and identity). Returns one index
/// into `selectable` per slot.
fn redistribute(slots: &[u32], selectable: &[(u64, u16)]) -> Vec<usize> {
    let live: Vec<usize> = {
        let mut v: Vec<usize> = (0..selectable.len())
            .filter(|i| selectable[*i].1 > 0)
            .collect();
        v.sort_by_key(|i| selectable[*i].0);
        v
    };
    let mut owner: Vec<Option<usize>> = vec![None; slots.len()];
    if live.is_empty() {
        return Vec::new();
    }
    let prefs: Vec<Vec<usize>> = live
        .iter()
        .map(|i| {
            let id = selectable[*i].0;
            let mut order: Vec<usize> = (0..slots.len()).collect();
            order.sort_by_key(|k| {
                std::cmp::Reverse(mix(id ^ mix(u64::from(slots[*k]) ^ 0x6e65_7462_7066_0003)))
            });
            order
        })
        .collect();
    let max = live
        .iter()
        .map(|i| u64::from(selectable[*i].1))
        .max()
        .unwrap_or(1);
    let mut next = vec![0usize; live.len()];
    let mut credit = vec![0u64; live.len()];
    let mut left = slots.len();
    while left > 0 {
        for (k, &i) in live.iter().enumerate() {
            credit[k] += u64::from(selectable[i].1);
            if credit[k] < max {
                continue;
            }
            credit[k] -= max;
            while let Some(&slot) = prefs[k].get(next[k]) {
                next[k] += 1;
                if owner[slot].is_none() {
                    owner[slot] = Some(i);
                    left -= 1;
                    break;
                }
            }
            if left == 0 {
                break;
            }
        }
    }
    owner.into_iter().map(|o| o.unwrap_or(live[0])).collect()
}

/// The lookup table of a hashing scheduler (sh, dh, mh), as indices into `selectable`.
///
/// Plain Maglev moves more than the removed backend's slots when the backend set changes
/// (at 100 slots per backend, 2-6% of the others' slots when one of ten goes). So the
/// table is built in two steps: the Maglev table of the service's `roster` (every
/// backend it has, with its configured weight, healthy or not, drained or not, and the
/// ones removed from the definitions while the table keeps its size), then the slots of
/// each roster member that is not selectable now are shared out among the selectable
/// backends by weight (`redistribute`). Taking one backend out, for any reason, moves
/// its slots and no other; putting it back restores the table exactly.
pub fn hash_table(roster: &[(u64, u16)], selectable: &[(u64, u16)], m: u32) -> Vec<usize> {
    if selectable.iter().all(|(_, w)| *w == 0) {
        return Vec::new();
    }
    let index: std::collections::HashMap<u64, usize> = selectable
        .iter()
        .enumerate()
        .filter(|(_, (_, w))| *w > 0)
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let base = maglev_table(roster, m);
    let mut table: Vec<Option<usize>> = (0..m as usize)
        .map(|slot| {
            base.get(slot)
                .and_then(|member| index.get(&roster[*member].0).copied())
        })
        .collect();
    // The slots of each member out of the selection (an empty roster: every slot).
    let mut orphans: std::collections::BTreeMap<Option<u64>, Vec<u32>> = Default::default();
    for (slot, entry) in table.iter().enumerate() {
        if entry.is_none() {
            let member = base.get(slot).map(|m| roster[*m].0);
            orphans.entry(member).or_default().push(slot as u32);
        }
    }
    for slots in orphans.values() {
        for (slot, owner) in slots.iter().zip(redistribute(slots, selectable)) {
            table[*slot as usize] = Some(owner);
        }
    }
    table.into_iter().map(|e| e.unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrr_is_ipvs_sequence() {
        assert_eq!(wrr_sequence(&[3, 1]), [0, 0, 0, 1]);
        assert_eq!(wrr_sequence(&[5, 3, 2]), [0, 0, 0, 1, 0, 1, 2, 0, 1, 2]);
        // A common divisor shortens the cycle (4:2 is 2:1).
        assert_eq!(wrr_sequence(&[4, 2]), [0, 0, 1]);
        assert_eq!(wrr_sequence(&[1, 1, 1]), [0, 1, 2]);
        assert_eq!(wrr_sequence(&[0, 2, 0]), [1]);
        assert!(wrr_sequence(&[0, 0]).is_empty());
    }

    #[test]
    fn wrr_honours_weights_exactly_over_cycles() {
        // 3:1 over 40 connections (10 cycles): exactly 30 and 10.
        let seq = wrr_sequence(&[3, 1]);
        let picks: Vec<usize> = (0..40).map(|n| seq[n % seq.len()]).collect();
        assert_eq!(picks.iter().filter(|i| **i == 0).count(), 30);
        assert_eq!(picks.iter().filter(|i| **i == 1).count(), 10);
        // Any weights: one cycle holds each backend weight/gcd times.
        let weights = [7u16, 0, 21, 14, 1];
        let seq = wrr_sequence(&weights);
        assert_eq!(seq.len(), 43);
        for (i, w) in weights.iter().enumerate() {
            assert_eq!(seq.iter().filter(|x| **x == i).count(), usize::from(*w));
        }
    }

    #[test]
    fn wrr_cycles_beyond_the_limit_are_scaled() {
        let seq = wrr_sequence(&[65535, 65534, 1]);
        assert!(seq.len() as u64 <= MAX_SEQUENCE + 3, "{}", seq.len());
        assert!(seq.contains(&2), "a positive weight keeps a place");
    }

    #[test]
    fn maglev_size_is_a_prime_of_100_per_backend_kept_while_it_fits() {
        assert_eq!(maglev_size(1, None), 101);
        assert_eq!(maglev_size(0, None), 101);
        assert_eq!(maglev_size(3, None), 307);
        assert_eq!(maglev_size(10, None), 1009);
        assert_eq!(maglev_size(256, None), 25601);
        for n in 1..300 {
            let m = maglev_size(n, None);
            assert!(is_prime(m) && m as usize >= 100 * n, "{n}: {m}");
        }
        // One backend fewer keeps the size; one more than it can hold does not.
        assert_eq!(maglev_size(9, Some(1009)), 1009);
        assert_eq!(maglev_size(11, Some(1009)), 1103);
        assert_eq!(maglev_size(3, Some(1009)), 307, "too large now");
        assert_eq!(maglev_size(9, Some(1000)), 907, "not prime: not kept");
    }

    fn backends(n: u32) -> Vec<(u64, u16)> {
        (0..n)
            .map(|i| (identity(Ipv4Addr::new(198, 18, 10, 2 + i as u8), 8080), 1))
            .collect()
    }

    fn shares(table: &[usize], n: usize) -> Vec<usize> {
        let mut s = vec![0; n];
        for i in table {
            s[*i] += 1;
        }
        s
    }

    #[test]
    fn maglev_shares_follow_weights() {
        for (weights, m) in [
            (vec![1u16; 10], 1009),
            (vec![3, 1], 211),
            (vec![5, 3, 2], 307),
            (vec![1, 2, 3, 4, 5, 6, 7, 8], 809),
            (vec![100, 1, 50], 307),
        ] {
            let bs: Vec<(u64, u16)> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| (identity(Ipv4Addr::new(198, 18, 20, 10 + i as u8), 80), *w))
                .collect();
            let table = maglev_table(&bs, m);
            assert_eq!(table.len(), m as usize);
            let total: u32 = weights.iter().map(|w| u32::from(*w)).sum();
            for (i, got) in shares(&table, bs.len()).into_iter().enumerate() {
                let due = f64::from(m) * f64::from(weights[i]) / f64::from(total);
                // Within 2% of the table (at most a slot or so per backend beyond).
                assert!(
                    (got as f64 - due).abs() <= 0.02 * f64::from(m),
                    "{weights:?}: backend {i} has {got} slots, due {due:.1}"
                );
            }
        }
    }

    #[test]
    fn maglev_ignores_order_and_weight_zero() {
        let mut bs = backends(5);
        let table = maglev_table(&bs, 503);
        let ids: Vec<u64> = table.iter().map(|i| bs[*i].0).collect();
        bs.reverse();
        bs.push((identity(Ipv4Addr::new(198, 18, 10, 99), 80), 0));
        let table2 = maglev_table(&bs, 503);
        let ids2: Vec<u64> = table2.iter().map(|i| bs[*i].0).collect();
        assert_eq!(ids, ids2);
        assert_eq!(maglev_table(&bs[..1], 101), vec![0; 101]);
        assert!(maglev_table(&[(1, 0)], 101).is_empty());
    }

    /// Removing one of ten backends (it leaves the roster's selection, or the definitions
    /// while the table keeps its size) moves its own slots and no other; adding it back
    /// restores the table exactly. Plain Maglev does not promise that at this size.
    #[test]
    fn removal_moves_only_the_removed_share_and_is_undone_exactly() {
        for base in [2u8, 40, 100] {
            let all: Vec<(u64, u16)> = (0..10)
                .map(|i| (identity(Ipv4Addr::new(198, 18, 10, base + i * 3), 8080), 1))
                .collect();
            let m = maglev_size(all.len(), None);
            let ids = |sel: &[(u64, u16)], t: Vec<usize>| -> Vec<u64> {
                t.iter().map(|i| sel[*i].0).collect()
            };
            let full = ids(&all, hash_table(&all, &all, m));
            assert_eq!(
                full,
                ids(&all, maglev_table(&all, m)),
                "nothing out: Maglev's table"
            );
            for gone in 0..all.len() {
                let rest: Vec<(u64, u16)> = all
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != gone)
                    .map(|(_, b)| *b)
                    .collect();
                assert_eq!(maglev_size(rest.len(), Some(m)), m, "the size holds");
                let less = ids(&rest, hash_table(&all, &rest, m));
                let moved = full
                    .iter()
                    .zip(&less)
                    .filter(|(a, b)| **a != all[gone].0 && a != b)
                    .count();
                assert_eq!(moved, 0, "base {base}, removing {gone}");
                assert!(!less.contains(&all[gone].0));
                // Its share went to the others evenly: each within 2 slots of its due.
                for (id, _) in &rest {
                    let got = less.iter().filter(|x| *x == id).count() as f64;
                    let due = f64::from(m) / 9.0;
                    assert!((got - due).abs() <= 2.0, "{got} slots, due {due:.1}");
                }
                assert_eq!(ids(&all, hash_table(&all, &all, m)), full);
            }
        }
    }

    /// What the roster is for: Maglev alone, rebuilt without the removed backend, moves
    /// other backends' slots too (measured here so that a change of hash shows up).
    #[test]
    fn plain_maglev_moves_others_slots_on_removal() {
        let all: Vec<(u64, u16)> = (0..10)
            .map(|i| (identity(Ipv4Addr::new(198, 18, 10, 2 + i), 8080), 1))
            .collect();
        let m = maglev_size(10, None);
        let full: Vec<u64> = maglev_table(&all, m).iter().map(|i| all[*i].0).collect();
        let rest = &all[1..];
        let less: Vec<u64> = maglev_table(rest, m).iter().map(|i| rest[*i].0).collect();
        let moved = full
            .iter()
            .zip(&less)
            .filter(|(a, b)| **a != all[0].0 && a != b)
            .count();
        assert!(moved > 0 && moved < m as usize / 10, "{moved}");
    }
}
