//! Making the kernel's services match the plan, in an order that never shows a packet a
//! half-written service:
//!
//! 1. backends that are new or become selectable (a new id's connection counts zeroed
//!    first);
//! 2. each changed service: its whole region written into free room of `NB_TABLES`, then
//!    its frontend pointed at it (one map update: a packet sees the old table or the new
//!    one); the old region is left alone for the rest of the pass (a packet may still be
//!    reading it) and is free for the next;
//! 3. services removed: the frontend goes, which frees the region;
//! 4. backends drained or taken out (weight 0), once no table names them;
//! 5. backends removed (address 0: their flows get a reset), once no frontend leads to
//!    them.
//!
//! A service whose frontend and trailer (see [`crate::plan::services`]) match the plan is
//! left as it is.

use std::collections::{BTreeMap, BTreeSet};

use netbpf_common::{
    maps::MAX_TABLE_ENTRIES,
    service::{Backend, Service, ServiceKey},
};

use super::regions::Regions;
use crate::{
    Error, Result,
    config::{
        ports::Proto,
        services::{PreviousBackend, PreviousService},
        validate::Previous,
    },
    kernel::{maps::addr_of, services::ServiceMaps},
    plan::services::{ServicePlan, Trailer},
};

/// What the kernel holds of the services.
#[derive(Clone, Debug, Default)]
pub struct Current {
    /// Every frontend, with its region's trailer and whole length when it has one.
    pub frontends: BTreeMap<ServiceKey, (Service, Option<(Trailer, u32)>)>,
    /// Every backend in use, by id.
    pub backends: BTreeMap<u32, Backend>,
}

impl Current {
    pub fn read(maps: &ServiceMaps) -> Result<Current> {
        let mut frontends = BTreeMap::new();
        for (key, svc) in maps.frontends()? {
            frontends.insert(key, (svc, maps.region(&svc)?));
        }
        Ok(Current {
            frontends,
            backends: maps.backends()?,
        })
    }

    /// The addresses (map keys) of every backend the kernel holds.
    pub fn backend_addrs(&self) -> BTreeSet<u32> {
        self.backends.values().map(|b| b.addr).collect()
    }

    /// Ids, table sizes and rosters for the next plan.
    pub fn fill_previous(&self, previous: &mut Previous) {
        let mut by_id = BTreeMap::new();
        for (key, (svc, region)) in &self.frontends {
            let Some(proto) = Proto::from_number(key.proto) else {
                continue;
            };
            let addr = (addr_of(key.vip), u16::from_be(key.port), proto);
            let trailer = region.as_ref().map(|(t, _)| t);
            previous.services.insert(
                addr,
                PreviousService {
                    id: svc.id,
                    scheduler: svc.scheduler,
                    maglev_size: trailer.map_or(0, |t| t.maglev_size),
                    roster: trailer.map(|t| t.roster.clone()).unwrap_or_default(),
                },
            );
            by_id.insert(svc.id, addr);
        }
        for (id, b) in &self.backends {
            if let Some(addr) = by_id.get(&b.service_id) {
                previous.backends.insert(
                    (*addr, addr_of(b.addr), u16::from_be(b.port)),
                    PreviousBackend {
                        id: *id,
                        weight: b.weight,
                    },
                );
            }
        }
    }
}

/// What one reconcile of the services did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceReport {
    pub services: usize,
    /// Services whose region and frontend were written.
    pub written: usize,
    pub removed: usize,
    pub backends: usize,
}

/// The frontend with its region's place left out (what a plan says of it).
fn unplaced(svc: &Service) -> Service {
    Service { table: 0, ..*svc }
}

pub fn reconcile(
    maps: &mut ServiceMaps,
    current: &Current,
    plan: &ServicePlan,
) -> Result<ServiceReport> {
    let mut report = ServiceReport {
        services: plan.services.len(),
        backends: plan.backends.len(),
        ..ServiceReport::default()
    };
    // The regions in use are the ones frontends point at; one that overlaps another (or
    // lies outside the array) is not trusted: its service is written anew.
    let mut regions = Regions::new(MAX_TABLE_ENTRIES);
    let mut held = BTreeSet::new();
    for (key, (svc, region)) in &current.frontends {
        let body = u32::from(svc.count).saturating_add(svc.table_len);
        let len = region.as_ref().map_or(body, |(_, len)| *len);
        if regions.reserve(svc.table, len) {
            held.insert(*key);
        }
    }

    let is_new = |id: &u32, want: &Backend| {
        current.backends.get(id).is_none_or(|have| {
            (have.addr, have.port, have.service_id) != (want.addr, want.port, want.service_id)
        })
    };
    // 1. New backends and those that can take connections now.
    for (id, want) in &plan.backends {
        if current.backends.get(id) == Some(want) || (want.weight == 0 && !is_new(id, want)) {
            continue;
        }
        if is_new(id, want) {
            maps.reset_counts(*id)?;
        }
        maps.set_backend(*id, want)?;
    }

    // 2. Changed services: a new region, then the frontend.
    let mut failed = BTreeSet::new();
    for (key, want) in &plan.services {
        let unchanged = held.contains(key)
            && current.frontends.get(key).is_some_and(|(svc, region)| {
                unplaced(svc) == want.frontend
                    && region.as_ref().is_some_and(|(t, _)| t.spec == want.spec)
            });
        if unchanged {
            continue;
        }
        let Some(start) = u32::try_from(want.region.len())
            .ok()
            .and_then(|len| regions.allocate(len))
        else {
            failed.insert(want.frontend.id);
            continue;
        };
        maps.write_words(start, &want.region)?;
        maps.set_frontend(
            key,
            &Service {
                table: start,
                ..want.frontend
            },
        )?;
        report.written += 1;
    }

    // 3. Services no longer defined: the frontend first.
    for key in current.frontends.keys() {
        if !plan.services.contains_key(key) {
            maps.remove_frontend(key)?;
            report.removed += 1;
        }
    }

    // 4. Backends drained or taken out, now that no new table names them.
    for (id, want) in &plan.backends {
        if want.weight == 0
            && current.backends.get(id) != Some(want)
            && !is_new(id, want)
            && !failed.contains(&want.service_id)
        {
            maps.set_backend(*id, want)?;
        }
    }

    // 5. Backends removed, now that nothing leads to them.
    for (id, have) in &current.backends {
        if !plan.backends.contains_key(id) && !failed.contains(&have.service_id) {
            maps.set_backend(*id, &Backend::default())?;
        }
    }

    if !failed.is_empty() {
        let names: Vec<String> = plan
            .services
            .values()
            .filter(|s| failed.contains(&s.frontend.id))
            .map(|s| format!("{:?} ({} entries)", s.name, s.region.len()))
            .collect();
        return Err(Error::Incomplete(format!(
            "NB_TABLES has no room left ({} of {MAX_TABLE_ENTRIES} entries free) for the tables of service(s) {}",
            regions.available(),
            names.join(", ")
        )));
    }
    Ok(report)
}
