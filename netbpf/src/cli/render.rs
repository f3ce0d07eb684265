//! Human tables and JSON for the CLI's output.

use std::{fmt::Write as _, path::Path};

use serde::Serialize;

use crate::kernel::{
    datapath::{Attached, Removed},
    stats::StatRow,
};

pub fn json<T: Serialize>(rows: &[T]) -> String {
    // Serializing plain structs of strings and integers cannot fail.
    serde_json::to_string_pretty(rows).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

pub fn stats_table(rows: &[StatRow]) -> String {
    let mut out = format!(
        "{:<15} {:<20} {:>12} {:>14}\n",
        "HOOK", "OUTCOME", "PACKETS", "BYTES"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<15} {:<20} {:>12} {:>14}",
            r.hook, r.outcome, r.packets, r.bytes
        );
    }
    out
}

pub fn attached(attached: &[Attached]) -> String {
    let mut out = String::new();
    for a in attached {
        let verb = if a.replaced {
            "replaced program in"
        } else {
            "attached"
        };
        let _ = writeln!(
            out,
            "{} on {}: {verb} {}",
            a.hook.name(),
            a.iface,
            a.link_pin.display()
        );
    }
    out
}

pub fn removed(pin_dir: &Path, removed: &Removed) -> String {
    format!(
        "removed {} link(s) and {} map(s) under {}\n",
        removed.links.len(),
        removed.maps.len(),
        pin_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<StatRow> {
        vec![
            StatRow {
                hook: "from_uplink",
                outcome: "pass",
                drop: false,
                packets: 1010,
                bytes: 106_980,
            },
            StatRow {
                hook: "xdp_uplink",
                outcome: "drop_malformed",
                drop: true,
                packets: 5,
                bytes: 530,
            },
        ]
    }

    #[test]
    fn stats_table_layout() {
        assert_eq!(
            stats_table(&rows()),
            "HOOK            OUTCOME                   PACKETS          BYTES\n\
             from_uplink     pass                         1010         106980\n\
             xdp_uplink      drop_malformed                  5            530\n"
        );
    }

    #[test]
    fn stats_json_is_an_array_with_stable_keys() {
        let value: serde_json::Value =
            serde_json::from_str(&json(&rows()[..1])).expect("valid JSON");
        assert_eq!(
            value,
            serde_json::json!([{
                "hook": "from_uplink", "outcome": "pass", "drop": false,
                "packets": 1010, "bytes": 106980
            }])
        );
    }
}
