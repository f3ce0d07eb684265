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
        "{:<12} {:<16} {:>12} {:>14}\n",
        "HOOK", "OUTCOME", "PACKETS", "BYTES"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<12} {:<16} {:>12} {:>14}",
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
