//! The services' part of the plan: per service its frontend (`NB_SERVICES`) and the whole
//! `NB_TABLES` region it points at, and per backend id its `NB_BACKENDS` entry. Pure: a
//! function of the model, what the kernel held (table sizes and Maglev rosters), and which
//! backends the health checks have taken out.
//!
//! A region is what `netbpf_common::service` describes (the ids of the selectable
//! backends, then the scheduling table), followed by a trailer that only user space reads
//! ([`Trailer`]): the hash of everything the region and frontend were built from (so a
//! reload rewrites only the services that changed), the service's name (for `show`), the
//! Maglev table's size and its roster (so a backend taken out and put back leaves every
//! other slot where it was).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
};

use netbpf_common::{
    net::{NAME_LEN, name_bytes, name_str},
    service::{Backend, SVC_EXTERNAL, Scheduler, Service, ServiceKey},
};

use super::sched::{hash_table, identity, maglev_size, size_fits, wrr_sequence};
use crate::{
    config::{
        Model,
        model::{self, ServiceBackend},
        services::PreviousService,
        validate::Previous,
    },
    kernel::maps::addr_key,
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServicePlan {
    pub services: BTreeMap<ServiceKey, PlannedService>,
    /// Every backend by id, with its weight in effect (0 while drained or taken out).
    pub backends: BTreeMap<u32, Backend>,
}

impl ServicePlan {
    /// The addresses (map keys) of every backend: the containers behind them are flagged
    /// `IFACE_NAT_TARGET`.
    pub fn backend_addrs(&self) -> BTreeSet<u32> {
        self.backends.values().map(|b| b.addr).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedService {
    pub name: String,
    /// The frontend; `table` is 0 here, the reconciler sets where the region went.
    pub frontend: Service,
    /// The whole region: the selectable backends' ids, the scheduling table, the trailer.
    pub region: Vec<u32>,
    /// The trailer's hash of what the region and frontend were built from.
    pub spec: u64,
}

/// A roster member of a Maglev table: (address, port, weight).
pub type RosterEntry = (Ipv4Addr, u16, u16);

/// What a region holds after its table, for user space only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trailer {
    pub spec: u64,
    pub name: String,
    /// The Maglev table's size (0 for the other schedulers), kept even while no backend
    /// is selectable.
    pub maglev_size: u32,
    pub roster: Vec<RosterEntry>,
}

/// The trailer's first word: this tag in the upper half, its length in words below.
const TRAILER_TAG: u32 = 0x4e42 << 16;
/// Words before the roster: tag and length, spec (2), Maglev size, name, roster length.
const TRAILER_HEAD: usize = 1 + 2 + 1 + NAME_LEN / 4 + 1;

impl Trailer {
    pub fn encode(&self) -> Vec<u32> {
        let mut words = Vec::with_capacity(TRAILER_HEAD + 2 * self.roster.len());
        words.push(0);
        words.push(self.spec as u32);
        words.push((self.spec >> 32) as u32);
        words.push(self.maglev_size);
        words.extend(
            name_bytes(&self.name)
                .as_chunks::<4>()
                .0
                .iter()
                .map(|c| u32::from_le_bytes(*c)),
        );
        words.push(self.roster.len() as u32);
        for (addr, port, weight) in &self.roster {
            words.push(u32::from(*addr));
            words.push((u32::from(*port) << 16) | u32::from(*weight));
        }
        words[0] = TRAILER_TAG | words.len() as u32;
        words
    }

    /// The trailer's length from its first word, if it is one.
    pub fn len_of(first: u32) -> Option<usize> {
        let len = (first & 0xffff) as usize;
        (first & 0xffff_0000 == TRAILER_TAG && len >= TRAILER_HEAD).then_some(len)
    }

    pub fn decode(words: &[u32]) -> Option<Trailer> {
        let len = Trailer::len_of(*words.first()?)?;
        if words.len() < len {
            return None;
        }
        let mut name = [0u8; NAME_LEN];
        for (chunk, word) in name
            .as_chunks_mut::<4>()
            .0
            .iter_mut()
            .zip(&words[4..4 + NAME_LEN / 4])
        {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let roster_len = words[TRAILER_HEAD - 1] as usize;
        if TRAILER_HEAD + 2 * roster_len != len {
            return None;
        }
        let roster = words[TRAILER_HEAD..len]
            .as_chunks::<2>()
            .0
            .iter()
            .map(|[addr, pw]| (Ipv4Addr::from(*addr), (pw >> 16) as u16, *pw as u16))
            .collect();
        Some(Trailer {
            spec: u64::from(words[1]) | (u64::from(words[2]) << 32),
            name: name_str(&name).to_owned(),
            maglev_size: words[3],
            roster,
        })
    }
}

pub fn service_key(s: &model::Service) -> ServiceKey {
    ServiceKey {
        vip: addr_key(s.vip),
        port: s.port.to_be(),
        proto: s.proto.number(),
        pad: 0,
    }
}

/// The plan of every service; backends in `down` (ids) count as weight 0.
pub fn plan(model: &Model, previous: &Previous, down: &BTreeSet<u32>) -> ServicePlan {
    let mut out = ServicePlan::default();
    for s in &model.services {
        let weight = |b: &ServiceBackend| if down.contains(&b.id) { 0 } else { b.weight };
        for b in &s.backends {
            out.backends.insert(
                b.id,
                Backend {
                    addr: addr_key(b.addr),
                    port: b.port.to_be(),
                    weight: weight(b),
                    service_id: s.id,
                },
            );
        }
        let previous = previous.services.get(&(s.vip, s.port, s.proto));
        out.services
            .insert(service_key(s), plan_service(s, previous, weight));
    }
    out
}

fn plan_service(
    s: &model::Service,
    previous: Option<&PreviousService>,
    weight: impl Fn(&ServiceBackend) -> u16,
) -> PlannedService {
    let selectable: Vec<&ServiceBackend> = s.backends.iter().filter(|b| weight(b) > 0).collect();
    let list: Vec<u32> = selectable.iter().map(|b| b.id).collect();
    let weights: Vec<u16> = selectable.iter().map(|b| weight(b)).collect();
    let mut trailer = Trailer {
        name: s.name.clone(),
        ..Trailer::default()
    };
    let table: Vec<u32> = match s.scheduler {
        Scheduler::Rr => list.clone(),
        Scheduler::Wrr | Scheduler::Random => wrr_sequence(&weights)
            .into_iter()
            .map(|i| list[i])
            .collect(),
        Scheduler::Lc | Scheduler::Wlc => Vec::new(),
        Scheduler::Sh | Scheduler::Dh | Scheduler::Mh => {
            let previous = previous
                .filter(|p| Scheduler::from_u8(p.scheduler).is_some_and(Scheduler::uses_maglev));
            let (roster, m) = roster(s, previous);
            let members: Vec<(u64, u16)> = roster
                .iter()
                .map(|(a, p, w)| (identity(*a, *p), *w))
                .collect();
            let live: Vec<(u64, u16)> = selectable
                .iter()
                .zip(&weights)
                .map(|(b, w)| (identity(b.addr, b.port), *w))
                .collect();
            trailer.maglev_size = m;
            trailer.roster = roster;
            hash_table(&members, &live, m)
                .into_iter()
                .map(|i| list[i])
                .collect()
        }
    };
    let frontend = Service {
        id: s.id,
        scheduler: s.scheduler as u8,
        flags: if s.external { SVC_EXTERNAL } else { 0 },
        count: list.len() as u16,
        table: 0,
        table_len: table.len() as u32,
        persistence_secs: s.persistence_secs,
        persistence_mask: addr_key(s.persistence_mask),
    };
    // The hash covers the frontend, the region and the trailer (with its spec zero).
    let body: Vec<u32> = list.iter().chain(&table).copied().collect();
    let spec = fnv1a64(
        [
            frontend.id,
            u32::from(frontend.scheduler) | (u32::from(frontend.flags) << 8),
            u32::from(frontend.count),
            frontend.table_len,
            frontend.persistence_secs,
            frontend.persistence_mask,
        ]
        .iter()
        .chain(&body)
        .chain(&trailer.encode()),
    );
    trailer.spec = spec;
    let mut region = body;
    region.extend(trailer.encode());
    PlannedService {
        name: s.name.clone(),
        frontend,
        region,
        spec,
    }
}

/// The Maglev roster and table size of a hashing service. The roster holds every backend
/// with a weight (a drained one keeps the weight it had in the roster), and the ones the
/// definitions removed while the size the table had still fits them all; the size is
/// kept while it fits (see [`super::sched::maglev_size`]).
fn roster(s: &model::Service, previous: Option<&PreviousService>) -> (Vec<RosterEntry>, u32) {
    let before: HashMap<(Ipv4Addr, u16), u16> = previous
        .map(|p| p.roster.iter().map(|(a, p, w)| ((*a, *p), *w)).collect())
        .unwrap_or_default();
    let live: Vec<RosterEntry> = s
        .backends
        .iter()
        .filter_map(|b| {
            let w = match b.weight {
                0 => before.get(&(b.addr, b.port)).copied().unwrap_or(0),
                w => w,
            };
            (w > 0).then_some((b.addr, b.port, w))
        })
        .collect();
    let defined: BTreeSet<(Ipv4Addr, u16)> = s.backends.iter().map(|b| (b.addr, b.port)).collect();
    let gone: Vec<RosterEntry> = previous
        .map(|p| {
            p.roster
                .iter()
                .filter(|(a, port, _)| !defined.contains(&(*a, *port)))
                .copied()
                .collect()
        })
        .unwrap_or_default();
    let size = previous.map(|p| p.maglev_size).filter(|m| *m > 0);
    let mut roster = live.clone();
    let m = match size {
        Some(m) if size_fits(m, live.len() + gone.len(), live.len()) => {
            roster.extend(gone);
            m
        }
        _ => maglev_size(live.len(), size),
    };
    roster.sort();
    (roster, m)
}

/// 64-bit FNV-1a over words (their little-endian bytes): small and stable.
fn fnv1a64<'a>(words: impl Iterator<Item = &'a u32>) -> u64 {
    words
        .flat_map(|w| w.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |hash, b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{
        model::{HealthCheck, HealthKind},
        ports::Proto,
    };

    fn backend(id: u32, last: u8, weight: u16) -> ServiceBackend {
        ServiceBackend {
            id,
            addr: Ipv4Addr::new(198, 18, 10, last),
            port: 8080,
            weight,
            container: None,
        }
    }

    fn service(scheduler: Scheduler, backends: Vec<ServiceBackend>) -> model::Service {
        model::Service {
            id: 5,
            name: "web".to_owned(),
            vip: Ipv4Addr::new(198, 18, 200, 10),
            port: 80,
            proto: Proto::Tcp,
            scheduler,
            persistence_secs: 300,
            persistence_mask: Ipv4Addr::new(255, 255, 255, 0),
            external: true,
            health: Some(HealthCheck {
                kind: HealthKind::Tcp,
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                rise: 2,
                fall: 2,
            }),
            backends,
        }
    }

    fn model(services: Vec<model::Service>) -> Model {
        Model {
            uplink: None,
            uplink_mode: Default::default(),
            pin_dir: None,
            cgroup: None,
            timeouts: Default::default(),
            networks: Vec::new(),
            containers: Vec::new(),
            services,
        }
    }

    fn one(s: model::Service, previous: &Previous, down: &[u32]) -> (PlannedService, ServicePlan) {
        let plan = plan(&model(vec![s]), previous, &down.iter().copied().collect());
        let svc = plan.services.values().next().expect("one service").clone();
        (svc, plan)
    }

    /// (list, table) of a planned region.
    fn parts(p: &PlannedService) -> (Vec<u32>, Vec<u32>) {
        let count = usize::from(p.frontend.count);
        let len = p.frontend.table_len as usize;
        (
            p.region[..count].to_vec(),
            p.region[count..count + len].to_vec(),
        )
    }

    fn trailer(p: &PlannedService) -> Trailer {
        let start = usize::from(p.frontend.count) + p.frontend.table_len as usize;
        Trailer::decode(&p.region[start..]).expect("trailer")
    }

    #[test]
    fn frontend_key_and_backends() {
        let (svc, plan) = one(
            service(Scheduler::Wrr, vec![backend(11, 2, 3), backend(12, 9, 1)]),
            &Previous::default(),
            &[],
        );
        let key = *plan.services.keys().next().expect("key");
        assert_eq!(
            key,
            ServiceKey {
                vip: u32::from_ne_bytes([198, 18, 200, 10]),
                port: 80u16.to_be(),
                proto: 6,
                pad: 0
            }
        );
        assert_eq!(
            svc.frontend,
            Service {
                id: 5,
                scheduler: Scheduler::Wrr as u8,
                flags: SVC_EXTERNAL,
                count: 2,
                table: 0,
                table_len: 4,
                persistence_secs: 300,
                persistence_mask: u32::from_ne_bytes([255, 255, 255, 0]),
            }
        );
        assert_eq!(parts(&svc), (vec![11, 12], vec![11, 11, 11, 12]));
        assert_eq!(
            plan.backends[&11],
            Backend {
                addr: u32::from_ne_bytes([198, 18, 10, 2]),
                port: 8080u16.to_be(),
                weight: 3,
                service_id: 5
            }
        );
        let t = trailer(&svc);
        assert_eq!(
            (t.name.as_str(), t.spec, t.maglev_size),
            ("web", svc.spec, 0)
        );
    }

    #[test]
    fn tables_per_scheduler() {
        let bs = || vec![backend(1, 2, 5), backend(2, 3, 3), backend(3, 4, 2)];
        let table = |s: Scheduler| parts(&one(service(s, bs()), &Previous::default(), &[]).0);
        assert_eq!(table(Scheduler::Rr), (vec![1, 2, 3], vec![1, 2, 3]));
        let wrr = vec![1, 1, 1, 2, 1, 2, 3, 1, 2, 3];
        assert_eq!(table(Scheduler::Wrr), (vec![1, 2, 3], wrr.clone()));
        assert_eq!(table(Scheduler::Random), (vec![1, 2, 3], wrr));
        assert_eq!(table(Scheduler::Lc), (vec![1, 2, 3], vec![]));
        assert_eq!(table(Scheduler::Wlc), (vec![1, 2, 3], vec![]));
        for s in [Scheduler::Sh, Scheduler::Dh, Scheduler::Mh] {
            let (list, t) = table(s);
            assert_eq!(list, [1, 2, 3]);
            assert_eq!(t.len(), 307, "prime, at least 100 per backend");
            let share = |id| t.iter().filter(|x| **x == id).count();
            assert!((152..=155).contains(&share(1)), "{}", share(1));
        }
    }

    #[test]
    fn drained_and_down_backends_leave_the_selection() {
        let s = service(
            Scheduler::Wrr,
            vec![backend(1, 2, 3), backend(2, 3, 0), backend(3, 4, 1)],
        );
        let (svc, plan) = one(s.clone(), &Previous::default(), &[3]);
        assert_eq!(parts(&svc), (vec![1], vec![1]));
        assert_eq!(plan.backends[&2].weight, 0, "drained");
        assert_eq!(plan.backends[&3].weight, 0, "taken out by its health check");
        assert_eq!(plan.backends.len(), 3, "all still there for their flows");
        let (svc, _) = one(s, &Previous::default(), &[1, 3]);
        assert_eq!(svc.frontend.count, 0, "nothing selectable: rejects");
        assert_eq!(parts(&svc), (vec![], vec![]));
    }

    #[test]
    fn spec_changes_with_what_the_datapath_reads() {
        let base = || service(Scheduler::Rr, vec![backend(1, 2, 1), backend(2, 3, 1)]);
        let spec = |s: model::Service| one(s, &Previous::default(), &[]).0.spec;
        let a = spec(base());
        assert_eq!(a, spec(base()), "stable");
        let mut other = base();
        other.persistence_secs = 10;
        assert_ne!(a, spec(other));
        let mut other = base();
        other.name = "web2".to_owned();
        assert_ne!(a, spec(other));
        let mut other = base();
        other.backends.reverse();
        assert_ne!(a, spec(other));
    }

    #[test]
    fn trailer_round_trips() {
        let t = Trailer {
            spec: 0x0123_4567_89ab_cdef,
            name: "a-very-long-service-name-0123456789".to_owned(),
            maglev_size: 1009,
            roster: vec![(Ipv4Addr::new(198, 18, 10, 2), 8080, 3)],
        };
        let words = t.encode();
        assert_eq!(Trailer::len_of(words[0]), Some(words.len()));
        let back = Trailer::decode(&words).expect("decodes");
        assert_eq!(
            back.name, "a-very-long-service-name-012345",
            "31 bytes kept"
        );
        assert_eq!(
            (back.spec, back.maglev_size, &back.roster),
            (t.spec, 1009, &t.roster)
        );
        assert_eq!(Trailer::decode(&[7, 0, 0]), None);
    }

    /// The kernel's view of a planned service, as a reload reads it back.
    fn previous_of(s: &model::Service, svc: &PlannedService) -> Previous {
        let t = trailer(svc);
        Previous {
            services: [(
                (s.vip, s.port, s.proto),
                PreviousService {
                    id: s.id,
                    scheduler: s.scheduler as u8,
                    maglev_size: t.maglev_size,
                    roster: t.roster,
                },
            )]
            .into(),
            ..Previous::default()
        }
    }

    /// mh over ten backends: one removed from the definitions moves only its own slots,
    /// and adding it back restores the table (the table keeps its size and the removed
    /// one stays in the roster); draining or a failed check does the same.
    #[test]
    fn maglev_removal_across_reloads_moves_only_the_removed_share() {
        let all: Vec<ServiceBackend> = (0..10).map(|i| backend(i + 1, 2 + i as u8, 1)).collect();
        let full = service(Scheduler::Mh, all.clone());
        let (first, _) = one(full.clone(), &Previous::default(), &[]);
        let (_, t0) = parts(&first);
        assert_eq!(t0.len(), 1009);

        let mut less = full.clone();
        less.backends.remove(3);
        let (second, _) = one(less.clone(), &previous_of(&full, &first), &[]);
        let (_, t1) = parts(&second);
        assert_eq!(t1.len(), 1009);
        let moved = t0
            .iter()
            .zip(&t1)
            .filter(|(a, b)| **a != 4 && a != b)
            .count();
        assert_eq!(moved, 0);
        assert!(!t1.contains(&4));
        assert_eq!(trailer(&second).roster.len(), 10, "the removed one stays");

        let (third, _) = one(full.clone(), &previous_of(&less, &second), &[]);
        assert_eq!(parts(&third).1, t0, "restored");
        assert_eq!(third.region, first.region);

        // Taken out by a health check, drained: the same moves.
        let (down, _) = one(full.clone(), &previous_of(&full, &first), &[4]);
        assert_eq!(parts(&down).1, t1);
        let mut drained = full.clone();
        drained.backends[3].weight = 0;
        let (d, _) = one(drained, &previous_of(&full, &first), &[]);
        assert_eq!(parts(&d).1, t1);

        // A fresh start (nothing pinned) with nine: a Maglev table of its own.
        let (fresh, _) = one(less, &Previous::default(), &[]);
        assert_eq!(parts(&fresh).1.len(), 907);
    }

    #[test]
    fn growing_beyond_the_size_rebuilds() {
        let five: Vec<ServiceBackend> = (0..5).map(|i| backend(i + 1, 2 + i as u8, 1)).collect();
        let s = service(Scheduler::Sh, five);
        let (first, _) = one(s.clone(), &Previous::default(), &[]);
        assert_eq!(first.frontend.table_len, 503);
        let mut more = s.clone();
        more.backends.push(backend(6, 50, 1));
        let (second, _) = one(more, &previous_of(&s, &first), &[]);
        assert_eq!(second.frontend.table_len, 601);
        assert_eq!(trailer(&second).roster.len(), 6);
    }
}
