//! Drops per reason, as `show drops` lists them: the `drop_*` outcomes of `NB_STATS`
//! summed over every hook, each with its one-line meaning.

use netbpf_common::stats::Outcome;
use serde::Serialize;

use crate::kernel::stats::StatRow;

/// One drop reason. Field names are the stable JSON keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DropRow {
    /// The outcome's name (`drop_*`), as `show stats` and `monitor` name it.
    pub reason: &'static str,
    /// Summed over every hook.
    pub packets: u64,
    pub bytes: u64,
    pub meaning: &'static str,
}

/// Every drop reason, in the order of the outcomes, from the counters `show stats` reads.
pub fn drops(stats: &[StatRow]) -> Vec<DropRow> {
    Outcome::ALL
        .into_iter()
        .filter(|o| o.is_drop())
        .map(|o| {
            let (packets, bytes) = stats
                .iter()
                .filter(|r| r.outcome == o.name())
                .fold((0u64, 0u64), |(p, b), r| {
                    (p.saturating_add(r.packets), b.saturating_add(r.bytes))
                });
            DropRow {
                reason: o.name(),
                packets,
                bytes,
                meaning: o.meaning(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_summed_over_hooks() {
        let row = |hook, outcome: Outcome, packets| StatRow {
            hook,
            outcome: outcome.name(),
            drop: outcome.is_drop(),
            packets,
            bytes: packets * 60,
        };
        let rows = drops(&[
            row("from_uplink", Outcome::DropMalformed, 2),
            row("xdp_uplink", Outcome::DropMalformed, 3),
            row("from_container", Outcome::DropSpoofedIp, 1),
            row("from_container", Outcome::Forward, 9),
        ]);
        assert!(rows.iter().all(|r| r.reason.starts_with("drop_")));
        assert_eq!(
            rows.len(),
            Outcome::ALL.iter().filter(|o| o.is_drop()).count()
        );
        let malformed = rows
            .iter()
            .find(|r| r.reason == "drop_malformed")
            .expect("row");
        assert_eq!((malformed.packets, malformed.bytes), (5, 300));
        assert_eq!(malformed.meaning, Outcome::DropMalformed.meaning());
        let spoofed = rows
            .iter()
            .find(|r| r.reason == "drop_spoofed_ip")
            .expect("row");
        assert_eq!(spoofed.packets, 1);
    }
}
