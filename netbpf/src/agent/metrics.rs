//! `netbpf agent --metrics ADDR:PORT`: Prometheus text format (version 0.0.4) at
//! `GET /metrics`, from a small HTTP server on one thread (blocking accept, one request per
//! connection, no polling).
//!
//! Every scrape reads the pinned maps afresh, with lookups only (the counters, the
//! services as `show services` reads them, the conntrack table's keys: syscall reads of an
//! LRU map mark nothing as used), so a scrape never changes what the datapath does. What
//! only the agent knows (reconciles, conntrack cleanup, health checks) comes from
//! [`Status`], which the agent's loop updates.
//!
//! Map memory is what the kernel charges each map (`memlock` in the map fd's
//! `/proc/self/fdinfo` entry): its own account of the memory the map uses, per-CPU copies
//! and hash-table overhead included, where key + value size x max_entries would leave
//! both out.

use std::{
    fmt::Write as _,
    io,
    net::{SocketAddr, TcpListener},
    os::fd::{AsFd as _, AsRawFd as _},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::maps::MapData;
use netbpf_common::maps;

use super::health::HealthView;
use crate::{
    Error, Result, inspect,
    kernel::{conntrack, pins::PinDir, stats},
    logging,
};

/// What the agent's loop tells the metrics: reconciles and cleanup so far.
#[derive(Clone, Debug, Default)]
pub struct AgentStatus {
    /// Every reconcile from the definitions file (at start, on reload), whatever became
    /// of it.
    pub reconciles: u64,
    /// Reconciles refused because the file was invalid (nothing changed).
    pub invalid: u64,
    /// Reconciles that failed part way (retried on the next change).
    pub failed: u64,
    /// How long the last reconcile took, whatever became of it.
    pub last_duration: Duration,
    /// When the last successful one ended.
    pub last_success: Option<SystemTime>,
    /// Conntrack entries the agent removed as idle.
    pub conntrack_expired: u64,
    /// Backends taken out (down) and brought back (up) by their health checks.
    pub health_down: u64,
    pub health_up: u64,
    pub started: Option<SystemTime>,
}

/// The agent's status, shared between its loop and the metrics server.
#[derive(Clone, Debug, Default)]
pub struct Status(Arc<Mutex<AgentStatus>>);

impl Status {
    pub fn new() -> Status {
        Status(Arc::new(Mutex::new(AgentStatus {
            started: Some(SystemTime::now()),
            ..AgentStatus::default()
        })))
    }

    /// The status, to read or update.
    pub fn lock(&self) -> MutexGuard<'_, AgentStatus> {
        // Plain counters: a panic elsewhere while holding the lock leaves nothing broken.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a scrape reads.
pub struct Source {
    pub pins: PinDir,
    pub status: Status,
    pub health: HealthView,
}

/// Binds `addr` (in the namespace the agent runs in) and serves the metrics from a
/// thread of their own. Returns the address bound (the port chosen for port 0).
pub fn serve(addr: SocketAddr, source: Source) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).map_err(|source| Error::MetricsBind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::MetricsBind { addr, source })?;
    std::thread::Builder::new()
        .name("metrics".to_owned())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        let answered = stream
                            .set_read_timeout(Some(IO_TIMEOUT))
                            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
                            .and_then(|()| answer(&stream, &source));
                        if let Err(e) = answered {
                            logging::debug(
                                "metrics request failed",
                                &[("error", e.to_string().into())],
                            );
                        }
                    }
                    Err(e) => {
                        logging::warn(
                            "metrics: accepting a connection failed",
                            &[("error", e.to_string().into())],
                        );
                        // Out of file descriptors, say: wait instead of spinning.
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })
        .map_err(|e| Error::io("starting the metrics thread", e))?;
    Ok(local)
}

/// Longest request head read (a scraper sends a few hundred bytes).
const MAX_REQUEST: usize = 8192;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads one request and answers it; the connection closes after.
fn answer(mut stream: impl io::Read + io::Write, source: &Source) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let response = route(&String::from_utf8_lossy(&head), || scrape(source));
    stream.write_all(&response)?;
    stream.flush()
}

/// The response to a request head: `/metrics` runs `scrape`.
fn route(head: &str, scrape: impl FnOnce() -> String) -> Vec<u8> {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body, allow) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            scrape(),
            false,
        ),
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "netbpf agent: metrics at /metrics\n".to_owned(),
            false,
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".to_owned(),
            false,
        ),
        ("", _) | (_, "") => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_owned(),
            false,
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_owned(),
            true,
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        body.len(),
        if allow { "Allow: GET, HEAD\r\n" } else { "" }
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Every metric, read now.
pub fn scrape(source: &Source) -> String {
    let mut m = Exposition::default();
    let mut errors = 0u64;
    let mut failed = |what: &str, e: &Error| {
        errors += 1;
        logging::debug(
            "metrics: a read failed",
            &[("what", what.into()), ("error", e.to_string().into())],
        );
    };
    match stats::read_pinned(&source.pins) {
        Ok(rows) => datapath(&mut m, &rows),
        Err(e) => failed("counters", &e),
    }
    match inspect::services(&source.pins) {
        Ok(rows) => services(&mut m, &rows),
        Err(e) => failed("services", &e),
    }
    health(&mut m, &source.health.states());
    match conntrack_entries(&source.pins) {
        Ok(entries) => conntrack_metrics(&mut m, entries),
        Err(e) => failed("conntrack", &e),
    }
    agent(&mut m, &source.status.lock());
    map_memory(&mut m, &map_sizes(&source.pins));
    m.family(
        "netbpf_scrape_errors",
        Kind::Gauge,
        "Parts of this scrape that could not be read (nothing is pinned before the first reconcile).",
    )
    .value(errors);
    m.finish()
}

/// The counters of `NB_STATS`, every (hook, outcome), as `show stats -o json` has them.
pub fn datapath(m: &mut Exposition, rows: &[stats::StatRow]) {
    let labels = |r: &stats::StatRow| {
        [
            ("hook", r.hook.to_owned()),
            ("outcome", r.outcome.to_owned()),
            ("drop", r.drop.to_string()),
        ]
    };
    let mut f = m.family(
        "netbpf_packets_total",
        Kind::Counter,
        "Packets each program handled, by what it did with them (drop_* outcomes are drop reasons; tc counts a GRO/GSO skb once).",
    );
    for r in rows {
        f.sample(&labels(r), r.packets);
    }
    let mut f = m.family(
        "netbpf_bytes_total",
        Kind::Counter,
        "Frame bytes (Ethernet header included) each program handled, by outcome.",
    );
    for r in rows {
        f.sample(&labels(r), r.bytes);
    }
}

/// Services and backends, as `show services --stats -o json` has them. A service's
/// figures are its current backends' sums.
pub fn services(m: &mut Exposition, rows: &[inspect::ServiceRow]) {
    let mut f = m.family(
        "netbpf_service_info",
        Kind::Gauge,
        "A virtual service: its VIP, port, protocol and scheduler (always 1).",
    );
    for s in rows {
        f.sample(
            &[
                ("service", s.name.clone()),
                ("vip", s.vip.clone()),
                ("port", s.port.to_string()),
                ("protocol", s.protocol.clone()),
                ("scheduler", s.scheduler.clone()),
            ],
            1u64,
        );
    }
    for (name, kind, help, parts) in SERVICE_FIGURES {
        let mut f = m.family(name, *kind, help);
        for s in rows {
            for (direction, figure) in *parts {
                let total = s
                    .backends
                    .iter()
                    .fold(0u64, |sum, b| sum.saturating_add(figure(b)));
                let mut labels = vec![("service", s.name.clone())];
                labels.extend(direction.map(|d| ("direction", d.to_owned())));
                f.sample(&labels, total);
            }
        }
    }
    for (name, kind, help, parts) in BACKEND_FIGURES {
        let mut f = m.family(name, *kind, help);
        for s in rows {
            for b in &s.backends {
                for (direction, figure) in *parts {
                    let mut labels = vec![
                        ("service", s.name.clone()),
                        ("backend", format!("{}:{}", b.address, b.port)),
                    ];
                    labels.extend(direction.map(|d| ("direction", d.to_owned())));
                    f.sample(&labels, figure(b));
                }
            }
        }
    }
}

/// A family of figures of backends: name, type, help, and its series (with their
/// `direction` label, if they have one).
type Figures = &'static [(
    &'static str,
    Kind,
    &'static str,
    &'static [(Option<&'static str>, fn(&inspect::BackendRow) -> u64)],
)];

/// Per service: the sums over its backends.
const SERVICE_FIGURES: Figures = &[
    (
        "netbpf_service_connections_active",
        Kind::Gauge,
        "Connections open now over the service's backends.",
        &[(None, |b| b.active)],
    ),
    (
        "netbpf_service_connections_opened_total",
        Kind::Counter,
        "Connections scheduled to the service's current backends.",
        &[(None, |b| b.opened)],
    ),
    (
        "netbpf_service_packets_total",
        Kind::Counter,
        "Packets of the service's flows over its current backends: in (client to backend) and out (back).",
        &[
            (Some("in"), |b| b.in_packets),
            (Some("out"), |b| b.out_packets),
        ],
    ),
    (
        "netbpf_service_bytes_total",
        Kind::Counter,
        "Frame bytes of the service's flows over its current backends: in and out.",
        &[(Some("in"), |b| b.in_bytes), (Some("out"), |b| b.out_bytes)],
    ),
];

const BACKEND_FIGURES: Figures = &[
    (
        "netbpf_backend_weight",
        Kind::Gauge,
        "The backend's weight in effect (0 while drained or taken out by its health check).",
        &[(None, |b| u64::from(b.weight))],
    ),
    (
        "netbpf_backend_connections_active",
        Kind::Gauge,
        "Connections open now (opened - closed - expired).",
        &[(None, |b| b.active)],
    ),
    (
        "netbpf_backend_connections_inactive",
        Kind::Gauge,
        "Connections closing but still tracked (ipvsadm's InActConn).",
        &[(None, |b| b.inactive)],
    ),
    (
        "netbpf_backend_connections_opened_total",
        Kind::Counter,
        "Connections scheduled to the backend since it got its id.",
        &[(None, |b| b.opened)],
    ),
    (
        "netbpf_backend_packets_total",
        Kind::Counter,
        "Packets of the backend's flows: in (client to backend) and out (back).",
        &[
            (Some("in"), |b| b.in_packets),
            (Some("out"), |b| b.out_packets),
        ],
    ),
    (
        "netbpf_backend_bytes_total",
        Kind::Counter,
        "Frame bytes of the backend's flows: in and out.",
        &[(Some("in"), |b| b.in_bytes), (Some("out"), |b| b.out_bytes)],
    ),
];

/// Health-checked backends: up (1) or taken out (0).
pub fn health(m: &mut Exposition, states: &[super::health::BackendHealth]) {
    let mut f = m.family(
        "netbpf_backend_up",
        Kind::Gauge,
        "Health-checked backends: 1 while up, 0 while their checks keep them out.",
    );
    for s in states {
        f.sample(
            &[
                ("service", s.service.clone()),
                ("backend", format!("{}:{}", s.addr, s.port)),
            ],
            u64::from(s.up),
        );
    }
}

/// Entries in the conntrack table and its capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackEntries {
    pub entries: u64,
    pub capacity: u64,
}

/// Counts the conntrack table's keys (no value is read, nothing is marked as used).
fn conntrack_entries(pins: &PinDir) -> Result<ConntrackEntries> {
    let table = conntrack::open_table(pins)?.ok_or_else(|| Error::NotAttached {
        pin_dir: pins.path().to_owned(),
    })?;
    let mut entries = 0u64;
    for key in table.keys() {
        key.map_err(|source| Error::Map {
            map: maps::CT,
            source,
        })?;
        entries += 1;
    }
    let capacity = u64::from(maps::MAX_CT);
    // Keys removed while the walk runs can make it start over: never above capacity.
    Ok(ConntrackEntries {
        entries: entries.min(capacity),
        capacity,
    })
}

pub fn conntrack_metrics(m: &mut Exposition, ct: ConntrackEntries) {
    m.family(
        "netbpf_conntrack_entries",
        Kind::Gauge,
        "Entries in the conntrack table (one per direction of each translated flow).",
    )
    .value(ct.entries);
    m.family(
        "netbpf_conntrack_capacity",
        Kind::Gauge,
        "Entries the conntrack table holds before the least recently used ones are evicted.",
    )
    .value(ct.capacity);
    m.family(
        "netbpf_conntrack_pressure",
        Kind::Gauge,
        "Conntrack occupancy: entries / capacity (at 1, new flows evict old ones).",
    )
    .value(Sample::Float(ct.entries as f64 / ct.capacity.max(1) as f64));
}

/// What the agent's loop counted.
pub fn agent(m: &mut Exposition, s: &AgentStatus) {
    m.family(
        "netbpf_reconciles_total",
        Kind::Counter,
        "Reconciles from the definitions file (at start and on each reload), whatever became of them.",
    )
    .value(s.reconciles);
    let mut f = m.family(
        "netbpf_reconcile_errors_total",
        Kind::Counter,
        "Reconciles that changed nothing because the file was invalid (invalid) or failed part way (failed).",
    );
    f.sample(&[("kind", "invalid".to_owned())], s.invalid);
    f.sample(&[("kind", "failed".to_owned())], s.failed);
    m.family(
        "netbpf_reconcile_last_duration_seconds",
        Kind::Gauge,
        "How long the last reconcile took.",
    )
    .value(Sample::Float(s.last_duration.as_secs_f64()));
    m.family(
        "netbpf_reconcile_last_success_timestamp_seconds",
        Kind::Gauge,
        "When the last successful reconcile ended (Unix time; 0 before the first).",
    )
    .value(Sample::Float(unix_seconds(s.last_success)));
    m.family(
        "netbpf_conntrack_expired_total",
        Kind::Counter,
        "Conntrack entries the agent removed after their idle timeout.",
    )
    .value(s.conntrack_expired);
    let mut f = m.family(
        "netbpf_health_transitions_total",
        Kind::Counter,
        "Backends taken out (to=down) or brought back (to=up) by their health checks.",
    );
    f.sample(&[("to", "down".to_owned())], s.health_down);
    f.sample(&[("to", "up".to_owned())], s.health_up);
    m.family(
        "netbpf_agent_start_time_seconds",
        Kind::Gauge,
        "When the agent started (Unix time).",
    )
    .value(Sample::Float(unix_seconds(s.started)));
}

fn unix_seconds(t: Option<SystemTime>) -> f64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One pinned map's size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSize {
    pub name: &'static str,
    /// What the kernel charges for it (`memlock` in its fdinfo).
    pub memlock: u64,
    pub max_entries: u64,
}

/// The size of every map pinned here (maps not pinned, or whose fdinfo cannot be read,
/// are left out).
fn map_sizes(pins: &PinDir) -> Vec<MapSize> {
    maps::ALL
        .iter()
        .filter_map(|name| {
            let data = MapData::from_pin(pins.map(name)).ok()?;
            let fd = data.fd().as_fd().as_raw_fd();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
            let field = |key: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            Some(MapSize {
                name,
                memlock: field("memlock")?,
                max_entries: field("max_entries").unwrap_or(0),
            })
        })
        .collect()
}

pub fn map_memory(m: &mut Exposition, sizes: &[MapSize]) {
    let mut f = m.family(
        "netbpf_map_memory_bytes",
        Kind::Gauge,
        "Memory the kernel charges for each map (memlock in its fdinfo).",
    );
    for s in sizes {
        f.sample(&[("map", s.name.to_owned())], s.memlock);
    }
    let mut f = m.family(
        "netbpf_map_max_entries",
        Kind::Gauge,
        "Capacity of each map, in entries.",
    );
    for s in sizes {
        f.sample(&[("map", s.name.to_owned())], s.max_entries);
    }
}

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A sample's value: counters and counts print as exact integers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sample {
    Int(u64),
    Float(f64),
}

impl From<u64> for Sample {
    fn from(v: u64) -> Sample {
        Sample::Int(v)
    }
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Sample::Int(v) => write!(f, "{v}"),
            Sample::Float(v) if v.is_nan() => f.write_str("NaN"),
            Sample::Float(v) if v.is_infinite() => {
                f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" })
            }
            Sample::Float(v) => write!(f, "{v}"),
        }
    }
}

/// The text format being written: each family's HELP and TYPE lines, then its samples.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

/// A family being written (its samples follow its HELP and TYPE lines).
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl Exposition {
    pub fn family<'a>(&'a mut self, name: &'a str, kind: Kind, help: &str) -> Family<'a> {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family {
            out: &mut self.out,
            name,
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

impl Family<'_> {
    /// The family's one sample, without labels.
    pub fn value(&mut self, value: impl Into<Sample>) {
        self.sample::<&str>(&[], value);
    }

    pub fn sample<L: AsRef<str>>(&mut self, labels: &[(&str, L)], value: impl Into<Sample>) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(value.as_ref()));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", value.into());
    }
}

/// A label value with `\`, `"` and line feeds escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn families_have_help_type_and_escaped_labels() {
        let mut m = Exposition::default();
        let mut f = m.family("netbpf_x_total", Kind::Counter, "An x.\nTwo \\ lines.");
        f.sample(&[("a", "plain"), ("b", "q\"uo\\te\nnl")], 7u64);
        f.value(u64::MAX);
        m.family("netbpf_y", Kind::Gauge, "A y.")
            .value(Sample::Float(0.25));
        m.family("netbpf_z", Kind::Gauge, "Odd values.")
            .value(Sample::Float(f64::NAN));
        assert_eq!(
            m.finish(),
            "# HELP netbpf_x_total An x.\\nTwo \\\\ lines.\n\
             # TYPE netbpf_x_total counter\n\
             netbpf_x_total{a=\"plain\",b=\"q\\\"uo\\\\te\\nnl\"} 7\n\
             netbpf_x_total 18446744073709551615\n\
             # HELP netbpf_y A y.\n\
             # TYPE netbpf_y gauge\n\
             netbpf_y 0.25\n\
             # HELP netbpf_z Odd values.\n\
             # TYPE netbpf_z gauge\n\
             netbpf_z NaN\n"
        );
    }

    fn backend(address: &str, weight: u16, opened: u64, in_packets: u64) -> inspect::BackendRow {
        inspect::BackendRow {
            address: address.to_owned(),
            port: 8080,
            weight,
            active: opened / 2,
            inactive: 1,
            opened,
            in_packets,
            out_packets: in_packets + 1,
            in_bytes: in_packets * 100,
            out_bytes: in_packets * 200,
            container: None,
        }
    }

    #[test]
    fn services_and_backends() {
        let rows = vec![inspect::ServiceRow {
            name: "web".to_owned(),
            vip: "198.18.200.10".to_owned(),
            port: 80,
            protocol: "tcp".to_owned(),
            scheduler: "rr".to_owned(),
            persistence_secs: 0,
            persistence_netmask: "255.255.255.255".to_owned(),
            external: false,
            backends: vec![
                backend("198.18.10.3", 1, 4, 10),
                backend("198.18.10.4", 0, 2, 5),
            ],
        }];
        let mut m = Exposition::default();
        services(&mut m, &rows);
        let text = m.finish();
        for line in [
            "netbpf_service_info{service=\"web\",vip=\"198.18.200.10\",port=\"80\",protocol=\"tcp\",scheduler=\"rr\"} 1",
            "# TYPE netbpf_service_connections_active gauge",
            "netbpf_service_connections_active{service=\"web\"} 3",
            "netbpf_service_connections_opened_total{service=\"web\"} 6",
            "netbpf_service_packets_total{service=\"web\",direction=\"in\"} 15",
            "netbpf_service_packets_total{service=\"web\",direction=\"out\"} 17",
            "netbpf_service_bytes_total{service=\"web\",direction=\"out\"} 3000",
            "netbpf_backend_weight{service=\"web\",backend=\"198.18.10.4:8080\"} 0",
            "netbpf_backend_connections_inactive{service=\"web\",backend=\"198.18.10.3:8080\"} 1",
            "netbpf_backend_connections_opened_total{service=\"web\",backend=\"198.18.10.3:8080\"} 4",
            "netbpf_backend_packets_total{service=\"web\",backend=\"198.18.10.4:8080\",direction=\"out\"} 6",
            "netbpf_backend_bytes_total{service=\"web\",backend=\"198.18.10.3:8080\",direction=\"in\"} 1000",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // One HELP and TYPE per family, before its samples.
        assert_eq!(
            text.matches("# TYPE netbpf_backend_packets_total counter")
                .count(),
            1
        );
        let type_at = text
            .find("# TYPE netbpf_backend_packets_total")
            .expect("type");
        let first = text.find("netbpf_backend_packets_total{").expect("sample");
        assert!(type_at < first);
        assert_well_formed(&text);
    }

    #[test]
    fn counters_health_conntrack_agent_and_maps() {
        let rows = vec![
            stats::StatRow {
                hook: "from_container",
                outcome: "forward",
                drop: false,
                packets: 3,
                bytes: 294,
            },
            stats::StatRow {
                hook: "from_container",
                outcome: "drop_spoofed_ip",
                drop: true,
                packets: 1,
                bytes: 98,
            },
        ];
        let mut m = Exposition::default();
        datapath(&mut m, &rows);
        health(
            &mut m,
            &[super::super::health::BackendHealth {
                service: "web".to_owned(),
                addr: Ipv4Addr::new(198, 18, 10, 3),
                port: 8080,
                up: false,
            }],
        );
        conntrack_metrics(
            &mut m,
            ConntrackEntries {
                entries: 65536,
                capacity: 262144,
            },
        );
        agent(
            &mut m,
            &AgentStatus {
                reconciles: 3,
                invalid: 1,
                last_duration: Duration::from_millis(1500),
                last_success: Some(UNIX_EPOCH + Duration::from_secs(100)),
                ..AgentStatus::default()
            },
        );
        map_memory(
            &mut m,
            &[MapSize {
                name: "NB_CT",
                memlock: 4096,
                max_entries: 262144,
            }],
        );
        let text = m.finish();
        for line in [
            "netbpf_packets_total{hook=\"from_container\",outcome=\"forward\",drop=\"false\"} 3",
            "netbpf_bytes_total{hook=\"from_container\",outcome=\"drop_spoofed_ip\",drop=\"true\"} 98",
            "netbpf_backend_up{service=\"web\",backend=\"198.18.10.3:8080\"} 0",
            "netbpf_conntrack_entries 65536",
            "netbpf_conntrack_pressure 0.25",
            "netbpf_reconciles_total 3",
            "netbpf_reconcile_errors_total{kind=\"invalid\"} 1",
            "netbpf_reconcile_errors_total{kind=\"failed\"} 0",
            "netbpf_reconcile_last_duration_seconds 1.5",
            "netbpf_reconcile_last_success_timestamp_seconds 100",
            "netbpf_agent_start_time_seconds 0",
            "netbpf_map_memory_bytes{map=\"NB_CT\"} 4096",
            "netbpf_map_max_entries{map=\"NB_CT\"} 262144",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert_well_formed(&text);
    }

    /// Every line is a HELP, a TYPE or a sample of the family its TYPE line announced,
    /// and every family appears once.
    fn assert_well_formed(text: &str) {
        let mut current = "";
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                current = rest.split(' ').next().expect("name");
                assert!(seen.insert(current.to_owned()), "{current} twice");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                assert_eq!(parts.next(), Some(current), "{line}");
                assert!(matches!(parts.next(), Some("counter" | "gauge")), "{line}");
            } else {
                let name = line.split(['{', ' ']).next().expect("name");
                assert_eq!(name, current, "{line}");
                assert!(name.starts_with("netbpf_"), "{line}");
                let value = line.rsplit(' ').next().expect("value");
                assert!(value.parse::<f64>().is_ok() || value == "NaN", "{line}");
            }
        }
    }

    #[test]
    fn routes() {
        let text = |v: Vec<u8>| String::from_utf8(v).expect("UTF-8");
        let ok = text(route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", || {
            "netbpf_up 1\n".to_owned()
        }));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(ok.contains("Content-Length: 12\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nnetbpf_up 1\n"), "{ok}");
        let head = text(route("HEAD /metrics?x=1 HTTP/1.1\r\n\r\n", || {
            "netbpf_up 1\n".to_owned()
        }));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"));
        let never = || -> String { panic!("no scrape for this request") };
        assert!(text(route("GET /nope HTTP/1.1\r\n\r\n", never)).starts_with("HTTP/1.1 404 "));
        let post = text(route("POST /metrics HTTP/1.1\r\n\r\n", never));
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD\r\n"));
        assert!(text(route("", never)).starts_with("HTTP/1.1 400 "));
    }

    /// A connection: the request to read, then what was written.
    struct Conn {
        request: io::Cursor<Vec<u8>>,
        reply: Vec<u8>,
    }

    impl io::Read for Conn {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // A byte at a time, as a slow client sends.
            let n = buf.len().min(1);
            self.request.read(&mut buf[..n])
        }
    }

    impl io::Write for Conn {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.reply.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn answers_a_scrape() {
        // Nothing pinned there: the agent's figures, and the parts that could not be read.
        let source = Source {
            pins: PinDir::new("/nonexistent/netbpf-metrics-test"),
            status: Status::new(),
            health: HealthView::empty(),
        };
        let mut conn = Conn {
            request: io::Cursor::new(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n".to_vec()),
            reply: Vec::new(),
        };
        answer(&mut conn, &source).expect("answered");
        let reply = String::from_utf8(conn.reply).expect("UTF-8");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("\nnetbpf_reconciles_total 0\n"), "{reply}");
        assert!(reply.contains("\nnetbpf_scrape_errors 3\n"), "{reply}");
        let body = &reply[reply.find("\r\n\r\n").expect("head ends") + 4..];
        assert_well_formed(body);
    }
}
