//! Health checks of service backends (keepalived's TCP_CHECK and HTTP_GET, with HAProxy's
//! rise and fall): every `interval`, each backend of a service that defines `health` is
//! probed (a TCP connection, or `GET path` answered with the expected status) within
//! `timeout`; `fall` failures in a row take it out, `rise` successes bring it back. Each
//! transition is logged and wakes the agent, which rebuilds that service's tables with
//! the backend's weight at 0 (keepalived's inhibit_on_failure).
//!
//! A small pool of threads shares one schedule (a heap of due times): each sleeps on a
//! condition variable until the earliest probe is due, runs it, and records the result.
//! Threads start after the agent entered the namespace it manages, so probes leave from
//! there.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, BinaryHeap},
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::Instant,
};

use crate::config::{
    Model,
    model::{HealthCheck, HealthKind},
};

/// Probes that may run at once.
const WORKERS: usize = 4;

/// One backend to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub backend_id: u32,
    /// The service's name, and its protocol, VIP and port (`TCP 198.18.200.10:80`).
    pub service: String,
    pub frontend: String,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub check: HealthCheck,
}

/// Every backend of a service with a health check, with a configured weight above 0 (a
/// drained backend takes no new connections whatever its health).
pub fn targets(model: &Model) -> Vec<Target> {
    model
        .services
        .iter()
        .filter_map(|s| s.health.as_ref().map(|h| (s, h)))
        .flat_map(|(s, h)| {
            s.backends
                .iter()
                .filter(|b| b.weight > 0)
                .map(move |b| Target {
                    backend_id: b.id,
                    service: s.name.clone(),
                    frontend: s.label(),
                    addr: b.addr,
                    port: b.port,
                    check: h.clone(),
                })
        })
        .collect()
}

/// A backend's checks so far.
#[derive(Clone, Debug)]
struct Probe {
    target: Target,
    up: bool,
    /// Successes (when down) or failures (when up) in a row.
    streak: u32,
    due: Instant,
    running: bool,
    /// Bumped when the target changes: a result for an older one is dropped.
    generation: u64,
}

/// What a result did to a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    Down(String),
    Up,
}

impl Probe {
    /// Counts one result; returns the transition it completes, if any.
    fn record(&mut self, result: &Result<(), String>) -> Option<Transition> {
        let check = &self.target.check;
        match (self.up, result) {
            (true, Ok(())) | (false, Err(_)) => {
                self.streak = 0;
                None
            }
            (true, Err(why)) => {
                self.streak += 1;
                (self.streak >= check.fall).then(|| {
                    self.up = false;
                    self.streak = 0;
                    Transition::Down(format!(
                        "{} failed probe(s) in a row, last: {why}",
                        check.fall
                    ))
                })
            }
            (false, Ok(())) => {
                self.streak += 1;
                (self.streak >= check.rise).then(|| {
                    self.up = true;
                    self.streak = 0;
                    Transition::Up
                })
            }
        }
    }
}

struct State {
    probes: BTreeMap<u32, Probe>,
    /// (due, backend id) of every probe not running; an entry whose probe is gone or due
    /// at another time is stale and skipped.
    queue: BinaryHeap<Reverse<(Instant, u32)>>,
    generation: u64,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Called after every transition (wakes the agent's loop).
    notify: Box<dyn Fn() + Send + Sync>,
    /// Told of every transition first (logs it).
    on_transition: Box<OnTransition>,
}

type OnTransition = dyn Fn(&Target, &Transition) + Send + Sync;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked mid-update left counters, nothing inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running checks.
pub struct Checker {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Checker {
    /// A checker with no targets yet (its threads start with the first ones).
    pub fn new(
        notify: impl Fn() + Send + Sync + 'static,
        on_transition: impl Fn(&Target, &Transition) + Send + Sync + 'static,
    ) -> Checker {
        Checker {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    probes: BTreeMap::new(),
                    queue: BinaryHeap::new(),
                    generation: 0,
                    stop: false,
                }),
                changed: Condvar::new(),
                notify: Box::new(notify),
                on_transition: Box::new(on_transition),
            }),
            workers: Vec::new(),
        }
    }

    /// Checks these targets from now on. A backend checked before with the same target
    /// keeps its state (with another check, whether it is up); a new one starts down if it
    /// is in `down` (the kernel had it out), else up. Its first probe comes within one interval (spread, so that a reload does
    /// not probe everything at once).
    pub fn set_targets(&mut self, targets: Vec<Target>, down: &BTreeSet<u32>) {
        let now = Instant::now();
        {
            let mut state = self.shared.lock();
            state.generation += 1;
            let generation = state.generation;
            let mut next = BTreeMap::new();
            for t in targets {
                let id = t.backend_id;
                let probe = match state.probes.remove(&id) {
                    Some(p) if p.target == t => p,
                    before => {
                        let spread = u64::from(id.wrapping_mul(2_654_435_761) % 1000);
                        Probe {
                            due: now + t.check.interval.mul_f64(spread as f64 / 1000.0),
                            // A changed check keeps what the backend was.
                            up: before.map_or(!down.contains(&id), |p| p.up),
                            streak: 0,
                            running: false,
                            generation,
                            target: t,
                        }
                    }
                };
                next.insert(id, probe);
            }
            state.queue = next
                .iter()
                .filter(|(_, p)| !p.running)
                .map(|(id, p)| Reverse((p.due, *id)))
                .collect();
            state.probes = next;
        }
        self.shared.changed.notify_all();
        if self.workers.is_empty() && !self.shared.lock().probes.is_empty() {
            for _ in 0..WORKERS {
                let shared = Arc::clone(&self.shared);
                self.workers
                    .push(std::thread::spawn(move || worker(&shared)));
            }
        }
    }

    /// A handle on the checks' states for another thread (the metrics).
    pub fn view(&self) -> HealthView {
        HealthView(Some(Arc::clone(&self.shared)))
    }

    /// Backends taken out by their checks.
    pub fn down(&self) -> BTreeSet<u32> {
        self.shared
            .lock()
            .probes
            .iter()
            .filter(|(_, p)| !p.up)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// One checked backend, up or taken out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendHealth {
    pub service: String,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub up: bool,
}

/// Reads the states of a [`Checker`]'s backends from another thread.
#[derive(Clone, Default)]
pub struct HealthView(Option<Arc<Shared>>);

impl HealthView {
    /// A view of no checks at all.
    pub fn empty() -> HealthView {
        HealthView(None)
    }

    /// Every checked backend, by service and address.
    pub fn states(&self) -> Vec<BackendHealth> {
        let Some(shared) = &self.0 else {
            return Vec::new();
        };
        let mut states: Vec<BackendHealth> = shared
            .lock()
            .probes
            .values()
            .map(|p| BackendHealth {
                service: p.target.service.clone(),
                addr: p.target.addr,
                port: p.target.port,
                up: p.up,
            })
            .collect();
        states.sort_by(|a, b| (&a.service, a.addr, a.port).cmp(&(&b.service, b.addr, b.port)));
        states
    }
}

impl Drop for Checker {
    /// Stops the threads (a probe in flight ends within its timeout).
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        let Some(&Reverse((due, id))) = state.queue.peek() else {
            state = shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
            continue;
        };
        let now = Instant::now();
        if due > now {
            state = shared
                .changed
                .wait_timeout(state, due - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        state.queue.pop();
        let Some(p) = state
            .probes
            .get_mut(&id)
            .filter(|p| !p.running && p.due == due)
        else {
            continue;
        };
        p.running = true;
        let (target, generation) = (p.target.clone(), p.generation);
        drop(state);
        let started = Instant::now();
        let result = probe(&target);
        state = shared.lock();
        let Some(p) = state
            .probes
            .get_mut(&id)
            .filter(|p| p.generation == generation)
        else {
            // Replaced while running: the new one has its own schedule.
            continue;
        };
        p.running = false;
        p.due = (started + target.check.interval).max(Instant::now());
        let (next, transition) = (p.due, p.record(&result));
        state.queue.push(Reverse((next, id)));
        if let Some(t) = transition {
            (shared.on_transition)(&target, &t);
            (shared.notify)();
        }
        shared.changed.notify_all();
    }
}

/// One probe of one backend, within its timeout.
pub fn probe(t: &Target) -> Result<(), String> {
    let addr = SocketAddr::from((t.addr, t.port));
    let timeout = t.check.timeout;
    let deadline = Instant::now() + timeout;
    let why = |what: &str, e: io::Error| match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("{what}: no answer within {timeout:?}")
        }
        _ => format!("{what}: {e}"),
    };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| why("connect", e))?;
    let HealthKind::Http { path, expect } = &t.check.kind else {
        return Ok(());
    };
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    };
    let timed_out = || format!("GET {path}: no answer within {timeout:?}");
    stream
        .set_write_timeout(Some(left().ok_or_else(timed_out)?))
        .map_err(|e| why("GET", e))?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: netbpf-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| why(&format!("GET {path}"), e))?;
    // The status line is all that matters.
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 1024 {
        stream
            .set_read_timeout(Some(left().ok_or_else(timed_out)?))
            .map_err(|e| why("GET", e))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(why(&format!("GET {path}"), e)),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or("");
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(s) if s == *expect => Ok(()),
        Some(s) => Err(format!("GET {path}: status {s}, expected {expect}")),
        None => Err(format!("GET {path}: no HTTP status line in {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, time::Duration};

    use super::*;

    fn check(kind: HealthKind, rise: u32, fall: u32) -> HealthCheck {
        HealthCheck {
            kind,
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(150),
            rise,
            fall,
        }
    }

    fn target(port: u16, kind: HealthKind) -> Target {
        Target {
            backend_id: 1,
            service: "web".to_owned(),
            frontend: "TCP 198.18.200.10:80".to_owned(),
            addr: Ipv4Addr::LOCALHOST,
            port,
            check: check(kind, 2, 3),
        }
    }

    #[test]
    fn fall_failures_take_out_rise_successes_bring_back() {
        let mut p = Probe {
            target: target(1, HealthKind::Tcp),
            up: true,
            streak: 0,
            due: Instant::now(),
            running: false,
            generation: 0,
        };
        let fail = Err("connect: refused".to_owned());
        assert_eq!(p.record(&fail), None);
        assert_eq!(p.record(&fail), None);
        assert_eq!(p.record(&Ok(())), None, "a success resets the streak");
        assert_eq!(p.record(&fail), None);
        assert_eq!(p.record(&fail), None);
        assert_eq!(
            p.record(&fail),
            Some(Transition::Down(
                "3 failed probe(s) in a row, last: connect: refused".to_owned()
            ))
        );
        assert!(!p.up);
        assert_eq!(p.record(&fail), None, "down stays down");
        assert_eq!(p.record(&Ok(())), None);
        assert_eq!(p.record(&fail), None, "a failure resets the streak");
        assert_eq!(p.record(&Ok(())), None);
        assert_eq!(p.record(&Ok(())), Some(Transition::Up));
        assert!(p.up);
    }

    /// A port nothing listens on (bound, then closed).
    fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[test]
    fn tcp_probe() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert_eq!(probe(&target(port, HealthKind::Tcp)), Ok(()));
        let err = probe(&target(closed_port(), HealthKind::Tcp)).expect_err("refused");
        assert!(err.starts_with("connect: "), "{err}");
    }

    /// A one-shot HTTP server answering `reply` (or nothing).
    fn http_server(reply: Option<&'static str>) -> (u16, JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = l.accept().expect("accept");
            let mut req = [0u8; 512];
            let n = conn.read(&mut req).expect("request");
            if let Some(reply) = reply {
                conn.write_all(reply.as_bytes()).expect("reply");
            } else {
                std::thread::sleep(Duration::from_millis(400));
            }
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        (port, server)
    }

    #[test]
    fn http_probe_checks_the_status() {
        let http = |expect| HealthKind::Http {
            path: "/healthz".to_owned(),
            expect,
        };
        let (port, server) = http_server(Some("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert_eq!(probe(&target(port, http(200))), Ok(()));
        let request = server.join().expect("server");
        assert!(
            request.starts_with("GET /healthz HTTP/1.0\r\n"),
            "{request}"
        );

        let (port, server) = http_server(Some("HTTP/1.0 503 Service Unavailable\r\n\r\n"));
        assert_eq!(
            probe(&target(port, http(200))),
            Err("GET /healthz: status 503, expected 200".to_owned())
        );
        server.join().expect("server");

        let (port, server) = http_server(None);
        let err = probe(&target(port, http(200))).expect_err("silent");
        assert!(err.contains("no answer within 150ms"), "{err}");
        server.join().expect("server");
    }

    #[test]
    fn checker_takes_out_and_brings_back() {
        use std::sync::mpsc;
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        let (tx, rx) = mpsc::channel::<String>();
        let tx = Mutex::new(tx);
        let mut checker = Checker::new(
            || {},
            move |target: &Target, transition: &Transition| {
                let line = format!("backend {}:{} {transition:?}", target.addr, target.port);
                let _ = tx.lock().map(|t| t.send(line));
            },
        );
        let mut t = target(port, HealthKind::Tcp);
        t.check = check(HealthKind::Tcp, 1, 1);
        checker.set_targets(vec![t.clone()], &BTreeSet::new());
        let line = rx.recv_timeout(Duration::from_secs(5)).expect("goes down");
        assert!(
            line.contains("backend 127.0.0.1:") && line.contains(" Down(\"1 failed probe(s)"),
            "{line}"
        );
        assert_eq!(checker.down(), [1].into());
        let view = checker.view();
        assert_eq!(
            view.states(),
            [BackendHealth {
                service: "web".to_owned(),
                addr: Ipv4Addr::LOCALHOST,
                port,
                up: false
            }]
        );
        // Something listens again: it comes back.
        let _l = TcpListener::bind(("127.0.0.1", port)).expect("rebind");
        let line = rx.recv_timeout(Duration::from_secs(5)).expect("comes back");
        assert!(line.ends_with(" Up"), "{line}");
        assert!(checker.down().is_empty());
        assert!(view.states()[0].up);
        // The same target on a reload keeps its state; a new one down as told.
        let mut other = t.clone();
        other.backend_id = 2;
        checker.set_targets(vec![t.clone(), other.clone()], &[2].into());
        assert_eq!(checker.down(), [2].into());
        // Another check for a backend that is down: still down.
        other.check.interval = Duration::from_secs(60);
        other.check.timeout = Duration::from_secs(1);
        checker.set_targets(vec![t, other], &BTreeSet::new());
        assert_eq!(checker.down(), [2].into());
    }
}
