//! What the agent's loop logs and counts of its own work: reconciles (what changed, how
//! long it took, why one failed), health transitions, conntrack cleanup. Counts go to the
//! [`Status`] the metrics read; events to the structured log.

use std::time::{Duration, SystemTime};

use super::{
    health::{Target, Transition},
    metrics::Status,
    reconcile::Report,
};
use crate::{
    Error,
    logging::{self, Value},
};

/// A reconcile went through: counted, and logged with what changed.
pub fn reconciled(status: &Status, took: Duration, report: &Report) {
    {
        let mut s = status.lock();
        s.reconciles += 1;
        s.last_duration = took;
        s.last_success = Some(SystemTime::now());
    }
    logging::info("reconciled", &report_fields(report, took));
    if logging::enabled(logging::Level::Debug) {
        let names = |list: &[String]| Value::from(list.to_vec());
        logging::debug(
            "reconciled containers",
            &[
                ("added", names(&report.added)),
                ("removed", names(&report.removed)),
                ("unchanged", names(&report.kept)),
            ],
        );
    }
}

/// The counts of a reconcile, as log fields.
pub fn report_fields(r: &Report, took: Duration) -> Vec<(&'static str, Value)> {
    vec![
        ("networks", r.networks.into()),
        ("containers_added", r.added.len().into()),
        ("containers_removed", r.removed.len().into()),
        ("containers_unchanged", r.kept.len().into()),
        ("program_swaps", r.swapped.into()),
        ("published_ports", r.ports.into()),
        ("services", r.services.services.into()),
        ("services_written", r.services.written.into()),
        ("services_removed", r.services.removed.into()),
        ("backends", r.services.backends.into()),
        ("duration_ms", duration_ms(took)),
    ]
}

fn duration_ms(d: Duration) -> Value {
    // Milliseconds, to the microsecond: 12.345.
    Value::from(d.as_micros() as f64 / 1000.0)
}

/// A reload that changed nothing (an invalid file) or failed part way: counted and
/// logged. At start the error ends the agent instead, and `main` reports it.
pub fn reconcile_failed(status: &Status, took: Duration, error: &Error, starting: bool) {
    let invalid = matches!(error, Error::Invalid(_) | Error::ReadDefinitions { .. });
    {
        let mut s = status.lock();
        s.reconciles += 1;
        s.last_duration = took;
        if invalid {
            s.invalid += 1;
        } else {
            s.failed += 1;
        }
    }
    if starting {
        return;
    }
    let fields = [
        ("error", Value::from(error.to_string())),
        ("duration_ms", duration_ms(took)),
    ];
    if invalid {
        logging::warn("reload refused, kernel state unchanged", &fields);
    } else {
        logging::error(
            "reconcile failed, retried on the next change or SIGHUP",
            &fields,
        );
    }
}

/// A backend's health check took it out or brought it back.
pub fn health_transition(status: &Status, target: &Target, transition: &Transition) {
    let mut fields = vec![
        ("service", Value::from(target.service.clone())),
        ("frontend", Value::from(target.frontend.clone())),
        (
            "backend",
            Value::from(format!("{}:{}", target.addr, target.port)),
        ),
    ];
    match transition {
        Transition::Down(why) => {
            status.lock().health_down += 1;
            fields.push(("reason", why.clone().into()));
            logging::warn("backend down", &fields);
        }
        Transition::Up => {
            status.lock().health_up += 1;
            fields.push((
                "reason",
                format!("{} probe(s) passed in a row", target.check.rise).into(),
            ));
            logging::info("backend up", &fields);
        }
    }
}

/// Idle conntrack entries removed.
pub fn conntrack_cleaned(status: &Status, removed: usize) {
    status.lock().conntrack_expired += removed as u64;
    logging::info("conntrack cleanup", &[("removed", removed.into())]);
}
