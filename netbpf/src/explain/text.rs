//! `netbpf explain`'s human output: the packet, the program, its steps, the verdict.

use std::fmt::Write as _;

use super::{BackendChoice, Delivery, Explanation};

pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let flags = e
        .packet
        .tcp_flags
        .as_ref()
        .map(|f| format!(" [{f}]"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} {} -> {}{flags}, from {}",
        e.packet.proto, e.packet.src, e.packet.dst, e.from
    );
    match (&e.program, &e.interface) {
        (Some(program), Some(iface)) => {
            let _ = writeln!(
                out,
                "program: {program} on {} (ifindex {})",
                iface.name.as_deref().unwrap_or("?"),
                iface.ifindex
            );
        }
        (Some(program), None) => {
            let _ = writeln!(out, "program: {program}");
        }
        (None, _) => {
            let _ = writeln!(out, "program: none");
        }
    }
    for (i, step) in e.steps.iter().enumerate() {
        let _ = writeln!(out, "  {:>2}. {:<13} {}", i + 1, step.stage, step.detail);
    }
    match (&e.outcome, &e.meaning) {
        (Some(outcome), Some(meaning)) => {
            let _ = writeln!(
                out,
                "verdict: {}{outcome}: {meaning}",
                if e.drop { "DROP " } else { "" }
            );
        }
        _ => {
            let _ = writeln!(out, "verdict: not seen by netbpf");
        }
    }
    if let Some(b) = &e.backend {
        let _ = writeln!(out, "  backend:     {}", backend(b));
    }
    if !e.candidates.is_empty() {
        let _ = writeln!(out, "  candidates:  one drawn at random per flow:");
        for b in &e.candidates {
            let _ = writeln!(out, "               {}", backend(b));
        }
    }
    if let Some(t) = &e.translation {
        let _ = writeln!(
            out,
            "  translation: {} -> {}",
            t.src.as_deref().unwrap_or("?"),
            t.dst.as_deref().unwrap_or("(the drawn backend)")
        );
    }
    if let Some(d) = &e.delivery {
        let _ = writeln!(out, "  delivery:    {}", delivery(d));
    }
    if !e.effects.is_empty() {
        let _ = writeln!(out, "  the packet would change (explain changed nothing):");
        for effect in &e.effects {
            let _ = writeln!(out, "    - {effect}");
        }
    }
    out
}

fn backend(b: &BackendChoice) -> String {
    let mut text = format!("#{} {}:{}", b.id, b.address, b.port);
    if let Some(c) = &b.container {
        let _ = write!(text, " ({c})");
    }
    let _ = write!(text, ", weight {}, by {}", b.weight, b.chosen_by);
    if let Some(slot) = b.slot {
        let _ = write!(text, ", table slot {slot}");
    }
    if let Some(active) = b.active {
        let _ = write!(text, ", {active} active");
    }
    if let Some(n) = b.table_entries {
        let _ = write!(text, ", {n} table entries");
    }
    text
}

fn delivery(d: &Delivery) -> String {
    let mut text = d.via.to_owned();
    match (&d.interface, d.ifindex) {
        (Some(name), Some(i)) => {
            let _ = write!(text, " {name} (ifindex {i})");
        }
        (None, Some(i)) => {
            let _ = write!(text, " ifindex {i}");
        }
        _ => {}
    }
    if let Some(c) = &d.container {
        let _ = write!(text, ", into container {c}");
    }
    text
}
