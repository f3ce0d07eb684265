//! `netbpf agent --metrics`: the Prometheus text, scraped with curl inside the lab's host
//! namespace, agrees exactly with `netbpf show stats`, `show services` and `show
//! conntrack` read at the same quiet moment; the agent's JSON logs are one object per line
//! with the events of its reconciles, health checks, refused reloads and exit.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    path::Path,
    process::Command,
    time::Duration,
};

use netbpf_common::{maps, pin_paths::NETNS_PIN_ROOT};
use netbpf_tests::{
    TEST_PREFIX, TempDir,
    lab::{HOST_UPLINK_IP, Lab},
    netbpf_bin,
    netns::Netns,
    process::{Background, wait_for},
    require_root,
    servers::TcpServer,
};
use serde_json::Value;
use support::{netbpf, netbpf_ok, stderr_of};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
/// Answers on 8080.
const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 3);
/// Nothing listens: its health check takes it out.
const B2: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 4);
const METRICS_PORT: u16 = 9464;
const WAIT: Duration = Duration::from_secs(15);
const LIMIT: Duration = Duration::from_secs(5);

/// A client and two backends on one network, and a service over both backends with a
/// TCP health check (two failures to go down: a first probe may leave before the agent's
/// first reconcile has wired the backend).
fn definitions(lab: &Lab) -> String {
    let mut text = "[[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n".to_owned();
    for (i, (name, ip)) in [("client", CLIENT), ("b1", B1), ("b2", B2)]
        .iter()
        .enumerate()
    {
        text += &format!(
            "[[container]]\nname = \"{name}\"\nnetns = \"{}\"\nnetwork = \"front\"\nip = \"{ip}\"\n\n",
            lab.containers[i].path().display()
        );
    }
    text + &format!(
        "[[service]]\nname = \"web\"\nvip = \"{VIP}\"\nport = 80\nscheduler = \"rr\"\n\
         health = {{ kind = \"tcp\", interval = \"1s\", timeout = \"500ms\", rise = 1, fall = 2 }}\n\
         backends = [{{ container = \"b1\", port = 8080 }}, {{ container = \"b2\", port = 8080 }}]\n"
    )
}

/// A connection from `ns` to the VIP, one exchange done.
fn exchange(ns: &Netns) -> TcpStream {
    ns.run(|| {
        let mut conn = TcpStream::connect_timeout(&SocketAddrV4::new(VIP, 80).into(), LIMIT)
            .expect("connect to the VIP");
        conn.set_read_timeout(Some(LIMIT)).expect("timeout");
        conn.write_all(b"ping").expect("write");
        let mut reply = [0u8; 4];
        conn.read_exact(&mut reply).expect("the echo comes back");
        assert_eq!(&reply, b"ping");
        conn
    })
}

fn metrics_url() -> String {
    format!("http://{HOST_UPLINK_IP}:{METRICS_PORT}/metrics")
}

/// The metrics as curl in the host namespace gets them, or `None` if it cannot.
fn try_scrape(host: &Netns) -> Option<String> {
    let out = host
        .command(
            "curl",
            &["-sS", "--fail", "--max-time", "5", &metrics_url()],
        )
        .output()
        .expect("curl runs (./x setup installs it)");
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).expect("UTF-8 metrics"))
}

fn scrape(host: &Netns) -> String {
    try_scrape(host).expect("scrape")
}

/// The samples of an exposition, by series (`name{labels}` as written), checking the
/// text format on the way: every sample follows its family's HELP and TYPE lines, every
/// family appears once and is named `netbpf_*`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut families = BTreeSet::new();
    let (mut help, mut typed) = (String::new(), String::new());
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split(' ').next().expect("name").to_owned();
            assert!(help.starts_with("netbpf_"), "{line}");
            assert!(families.insert(help.clone()), "{help} twice");
            assert!(rest.len() > help.len() + 1, "empty help: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("name and type");
            assert_eq!(name, help, "TYPE right after HELP: {line}");
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            typed = name.to_owned();
        } else {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            let name = series.split('{').next().expect("name");
            assert_eq!(name, typed, "sample of the family announced: {line}");
            let value: f64 = value.parse().expect("a number");
            assert!(
                out.insert(series.to_owned(), value).is_none(),
                "{series} twice"
            );
        }
    }
    out
}

/// A series' value, which must be there.
fn get(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in the scrape"))
}

fn show_json(lab: &Lab, what: &str) -> Vec<Value> {
    serde_json::from_str(&netbpf_ok(&lab.host, &["show", what, "-o", "json"]))
        .unwrap_or_else(|e| panic!("show {what} -o json: {e}"))
}

fn n(v: &Value) -> f64 {
    v.as_u64().expect("a count") as f64
}

/// The agent's log lines, each parsed as JSON.
fn log_events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line: {line:?}: {e}"))
        })
        .collect()
}

fn logged(log: &Path, msg: &str) -> Option<Value> {
    log_events(log).into_iter().find(|e| e["msg"] == msg)
}

#[test]
fn metrics_match_show_and_logs_are_json_lines() {
    require_root!();
    let lab = Lab::new(TEST_PREFIX, 3).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let file = dir.write("netbpf.toml", &definitions(&lab)).expect("write");
    let file_str = file.to_str().expect("UTF-8");

    // An address the host namespace does not have: exit 2, before anything is set up.
    let out = netbpf(
        &lab.host,
        &["agent", "-c", file_str, "--metrics", "198.18.99.1:9464"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).starts_with("netbpf: metrics: cannot listen on 198.18.99.1:9464"),
        "{}",
        stderr_of(&out)
    );
    assert!(!Path::new(NETNS_PIN_ROOT).join(lab.host.name()).exists());

    let _server = TcpServer::echo(&lab.containers[1]);
    let log = dir.path().join("agent.log");
    let mut cmd = Command::new(netbpf_bin());
    cmd.args(["--netns", lab.host.name(), "--log-format", "json"])
        .args(["--log-level", "debug", "agent", "-c", file_str, "--metrics"])
        .arg(format!("{HOST_UPLINK_IP}:{METRICS_PORT}"))
        .stderr(std::fs::File::create(&log).expect("log"));
    let mut agent = Background::spawn(cmd).expect("agent starts");
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // b2 taken out by its check, b1 up; both as the scrape has them.
    let health = wait_for(WAIT, || {
        let s = samples(&try_scrape(&lab.host)?);
        let up = |b: Ipv4Addr| {
            s.get(&format!(
                "netbpf_backend_up{{service=\"web\",backend=\"{b}:8080\"}}"
            ))
            .copied()
        };
        let weight = s.get("netbpf_backend_weight{service=\"web\",backend=\"198.18.10.4:8080\"}");
        (up(B1) == Some(1.0) && up(B2) == Some(0.0) && weight == Some(&0.0)).then_some(s)
    });
    assert!(health.is_some(), "never b1 up, b2 down:\n{}", agent_log());

    // Traffic: pings within the network, one to an address nobody has (a drop), five
    // connections to the VIP closed and a sixth kept open.
    let client = &lab.containers[0];
    let ping = client
        .exec(
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "1", &B1.to_string()],
        )
        .expect("ping");
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let _ = client.exec("ping", &["-c", "1", "-W", "1", "198.18.10.99"]);
    for _ in 0..5 {
        drop(exchange(client));
    }
    let _open = exchange(client);
    let settled = wait_for(WAIT, || {
        let services = show_json(&lab, "services");
        let b1 = services.first()?["backends"]
            .as_array()?
            .iter()
            .find(|b| b["address"] == B1.to_string())?
            .clone();
        (b1["opened"] == 6 && b1["active"] == 1).then_some(())
    });
    assert!(settled.is_some(), "{:?}", show_json(&lab, "services"));

    // A quiet moment (health probes count packets too): two scrapes alike, and what
    // `show` read between them.
    let (metrics, stats, services, conntrack) = (0..40)
        .find_map(|_| {
            let before = samples(&scrape(&lab.host));
            let stats = show_json(&lab, "stats");
            let services = show_json(&lab, "services");
            let conntrack = show_json(&lab, "conntrack");
            let after = samples(&scrape(&lab.host));
            if before == after {
                Some((after, stats, services, conntrack))
            } else {
                std::thread::sleep(Duration::from_millis(150));
                None
            }
        })
        .expect("a quiet moment within 40 tries");

    // Every counter of `show stats`, exactly; nothing more.
    assert_eq!(
        metrics
            .keys()
            .filter(|k| k.starts_with("netbpf_packets_total{"))
            .count(),
        stats.len()
    );
    for row in &stats {
        let labels = format!(
            "{{hook=\"{}\",outcome=\"{}\",drop=\"{}\"}}",
            row["hook"].as_str().expect("hook"),
            row["outcome"].as_str().expect("outcome"),
            row["drop"].as_bool().expect("drop")
        );
        assert_eq!(
            get(&metrics, &format!("netbpf_packets_total{labels}")),
            n(&row["packets"]),
            "{labels}"
        );
        assert_eq!(
            get(&metrics, &format!("netbpf_bytes_total{labels}")),
            n(&row["bytes"]),
            "{labels}"
        );
    }
    let counted = |outcome: &str| {
        get(
            &metrics,
            &format!(
                "netbpf_packets_total{{hook=\"from_container\",outcome=\"{outcome}\",drop=\"false\"}}"
            ),
        )
    };
    assert!(counted("forward") >= 6.0 && counted("service") > 0.0);
    let drops: f64 = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("netbpf_packets_total{") && k.contains("drop=\"true\""))
        .map(|(_, v)| v)
        .sum();
    assert!(drops >= 1.0, "the ping to nobody was dropped");

    // Services and backends as `show services` has them.
    assert_eq!(services.len(), 1);
    let web = &services[0];
    assert_eq!(
        get(
            &metrics,
            "netbpf_service_info{service=\"web\",vip=\"198.18.200.10\",port=\"80\",protocol=\"tcp\",scheduler=\"rr\"}"
        ),
        1.0
    );
    let backends = web["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 2);
    let sum = |key: &str| backends.iter().map(|b| n(&b[key])).sum::<f64>();
    for (series, key) in [
        (
            "netbpf_service_connections_active{service=\"web\"}",
            "active",
        ),
        (
            "netbpf_service_connections_opened_total{service=\"web\"}",
            "opened",
        ),
        (
            "netbpf_service_packets_total{service=\"web\",direction=\"in\"}",
            "in_packets",
        ),
        (
            "netbpf_service_packets_total{service=\"web\",direction=\"out\"}",
            "out_packets",
        ),
        (
            "netbpf_service_bytes_total{service=\"web\",direction=\"in\"}",
            "in_bytes",
        ),
        (
            "netbpf_service_bytes_total{service=\"web\",direction=\"out\"}",
            "out_bytes",
        ),
    ] {
        assert_eq!(get(&metrics, series), sum(key), "{series}");
    }
    for b in backends {
        let labels = format!(
            "service=\"web\",backend=\"{}:{}\"",
            b["address"].as_str().expect("address"),
            b["port"]
        );
        for (name, key) in [
            ("netbpf_backend_weight", "weight"),
            ("netbpf_backend_connections_active", "active"),
            ("netbpf_backend_connections_inactive", "inactive"),
            ("netbpf_backend_connections_opened_total", "opened"),
        ] {
            assert_eq!(
                get(&metrics, &format!("{name}{{{labels}}}")),
                n(&b[key]),
                "{name} {labels}"
            );
        }
        for (name, key) in [
            ("netbpf_backend_packets_total", "packets"),
            ("netbpf_backend_bytes_total", "bytes"),
        ] {
            for direction in ["in", "out"] {
                assert_eq!(
                    get(
                        &metrics,
                        &format!("{name}{{{labels},direction=\"{direction}\"}}")
                    ),
                    n(&b[format!("{direction}_{key}")]),
                    "{name} {labels} {direction}"
                );
            }
        }
    }
    let b1 = format!("service=\"web\",backend=\"{B1}:8080\"");
    assert_eq!(
        get(
            &metrics,
            &format!("netbpf_backend_connections_opened_total{{{b1}}}")
        ),
        6.0
    );
    assert_eq!(
        get(
            &metrics,
            &format!("netbpf_backend_connections_active{{{b1}}}")
        ),
        1.0
    );
    assert!(
        get(
            &metrics,
            &format!("netbpf_backend_packets_total{{{b1},direction=\"in\"}}")
        ) > 0.0
    );

    // Conntrack: the entries `show conntrack` lists, against the table's capacity.
    assert!(!conntrack.is_empty(), "the open connection is tracked");
    assert_eq!(
        get(&metrics, "netbpf_conntrack_entries"),
        conntrack.len() as f64
    );
    assert_eq!(
        get(&metrics, "netbpf_conntrack_capacity"),
        f64::from(maps::MAX_CT)
    );
    assert_eq!(
        get(&metrics, "netbpf_conntrack_pressure"),
        conntrack.len() as f64 / f64::from(maps::MAX_CT)
    );

    // The agent's own figures, every map's memory, and a complete scrape.
    assert_eq!(get(&metrics, "netbpf_reconciles_total"), 1.0);
    assert_eq!(
        get(&metrics, "netbpf_reconcile_errors_total{kind=\"invalid\"}"),
        0.0
    );
    assert_eq!(
        get(&metrics, "netbpf_reconcile_errors_total{kind=\"failed\"}"),
        0.0
    );
    assert!(get(&metrics, "netbpf_reconcile_last_duration_seconds") > 0.0);
    assert!(get(&metrics, "netbpf_reconcile_last_success_timestamp_seconds") > 1.6e9);
    assert_eq!(
        get(&metrics, "netbpf_health_transitions_total{to=\"down\"}"),
        1.0
    );
    for map in maps::ALL {
        assert!(
            get(
                &metrics,
                &format!("netbpf_map_memory_bytes{{map=\"{map}\"}}")
            ) > 0.0,
            "{map}"
        );
        assert!(
            get(
                &metrics,
                &format!("netbpf_map_max_entries{{map=\"{map}\"}}")
            ) > 0.0
        );
    }
    assert_eq!(get(&metrics, "netbpf_scrape_errors"), 0.0);

    // An invalid file: refused, counted, logged; SIGTERM then ends the agent cleanly.
    dir.write("netbpf.toml", "[[network]]\nname = 7\n")
        .expect("write");
    let refused = wait_for(WAIT, || {
        let s = samples(&try_scrape(&lab.host)?);
        (s.get("netbpf_reconcile_errors_total{kind=\"invalid\"}") == Some(&1.0)).then_some(s)
    })
    .unwrap_or_else(|| panic!("the invalid file was not counted:\n{}", agent_log()));
    assert_eq!(get(&refused, "netbpf_reconciles_total"), 2.0);
    // SAFETY: signalling the agent this test started, by its PID.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, libc::SIGTERM) }, 0);
    let status = agent.wait().expect("agent exits");
    assert!(status.success(), "{status}");

    // Every line is a JSON object with a timestamp, a level and a message.
    let events = log_events(&log);
    for e in &events {
        let ts = e["ts"].as_str().expect("ts");
        assert!(ts.len() == 24 && ts.ends_with('Z'), "{e}");
        assert!(
            matches!(
                e["level"].as_str(),
                Some("error" | "warn" | "info" | "debug")
            ),
            "{e}"
        );
        assert!(e["msg"].is_string(), "{e}");
    }
    let event = |msg: &str| {
        logged(&log, msg).unwrap_or_else(|| panic!("no {msg:?} event in:\n{}", agent_log()))
    };
    let serving = event("serving metrics");
    assert_eq!(
        serving["address"],
        format!("{HOST_UPLINK_IP}:{METRICS_PORT}")
    );
    let reconciled = event("reconciled");
    assert_eq!(reconciled["level"], "info");
    for (field, value) in [
        ("networks", 1),
        ("containers_added", 3),
        ("containers_removed", 0),
        ("services", 1),
        ("services_written", 1),
        ("backends", 2),
    ] {
        assert_eq!(reconciled[field], value, "{field}: {reconciled}");
    }
    assert!(reconciled["duration_ms"].as_f64().expect("duration") > 0.0);
    let names = event("reconciled containers");
    assert_eq!(names["level"], "debug");
    let mut added: Vec<&str> = names["added"]
        .as_array()
        .expect("added")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    added.sort_unstable();
    assert_eq!(added, ["b1", "b2", "client"]);
    let down = event("backend down");
    assert_eq!(down["level"], "warn");
    assert_eq!(down["service"], "web");
    assert_eq!(down["frontend"], "TCP 198.18.200.10:80");
    assert_eq!(down["backend"], format!("{B2}:8080"));
    assert!(
        down["reason"]
            .as_str()
            .is_some_and(|r| r.contains("connect")),
        "{down}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["msg"] == "backend down" && e["backend"] == format!("{B1}:8080")),
        "b1 stayed up"
    );
    event("services rewritten after a health change");
    let refused = event("reload refused, kernel state unchanged");
    assert_eq!(refused["level"], "warn");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid definitions")),
        "{refused}"
    );
    assert_eq!(
        event("exiting, the datapath stays in place")["signal"],
        "SIGTERM"
    );
    // Nothing serves the metrics any more.
    assert!(try_scrape(&lab.host).is_none());
}
