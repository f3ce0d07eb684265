//! netbpf as Docker's network driver, with a real dockerd (Debian's docker.io) that the
//! test starts inside its own namespace (see `netbpf_tests::dockerd`) and a busybox image
//! made with `docker import`: connectivity by address and by name, isolation between
//! networks, published ports from outside with the client's address, internal networks,
//! label-defined services, errors as Docker shows them, nothing left behind, and restarts
//! of the agent and of dockerd.

mod support;

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use netbpf_common::net::{EndpointInfo, name_str};
use netbpf_tests::{
    TEST_PREFIX, TempDir,
    dockerd::{self, Dockerd},
    lab::{HOST_UPLINK_IF, HOST_UPLINK_IP, Lab, OUTSIDE_IP},
    netbpf_bin,
    netns::Netns,
    process::{Background, wait_for},
    require_root,
};
use serde_json::Value;
use support::netbpf_ok;

const IMAGE: &str = "nbt-busybox";
const WAIT: Duration = Duration::from_secs(20);

/// Whether dockerd can run here; under CI it must (setup installs it).
fn docker_or_skip(test: &str) -> bool {
    if dockerd::available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: dockerd, docker and busybox must be installed under CI (cargo xtask setup)"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs {} and {} (apt install docker.io busybox-static)",
        dockerd::DOCKERD,
        dockerd::BUSYBOX
    );
    false
}

/// The machine's own namespace as the test found it: links, addresses, routes, rules and
/// firewall. dockerd must change none of it.
fn root_namespace() -> String {
    let run = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let mut out = String::new();
    for cmd in [
        &["ip", "-br", "link"][..],
        &["ip", "-br", "addr"],
        &["ip", "route", "show", "table", "all"],
        &["ip", "rule"],
        &["iptables-save"],
        &["nft", "list", "ruleset"],
    ] {
        out.push_str(&format!("== {cmd:?}\n"));
        for line in run(cmd).lines() {
            // iptables-save stamps its output with the time.
            if !line.starts_with('#') {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The test's world: a lab (host namespace with an uplink to an outside namespace), a
/// dockerd in the host namespace, and netbpf's agent serving it.
struct World {
    // Dropped in this order: agent, dockerd (and its containers), then the namespaces and
    // the directory.
    agent: Option<Background>,
    docker: Dockerd,
    lab: Lab,
    dir: TempDir,
    file: PathBuf,
    log: PathBuf,
}

impl World {
    fn new(definitions: &str, dockerd_args: &[&str]) -> World {
        let lab = Lab::new(TEST_PREFIX, 0).expect("lab");
        let dir = TempDir::new(&format!("{}-docker", lab.prefix)).expect("temp dir");
        let file = dir
            .write(
                "netbpf.toml",
                &format!("[host]\nuplink = \"{HOST_UPLINK_IF}\"\n{definitions}"),
            )
            .expect("definitions");
        let docker =
            Dockerd::start(&lab.host, &dir.path().join("d"), dockerd_args).expect("dockerd starts");
        docker.import_busybox(IMAGE).expect("busybox image");
        let log = dir.path().join("agent.log");
        let mut world = World {
            agent: None,
            docker,
            lab,
            dir,
            file,
            log,
        };
        world.start_agent();
        world
    }

    fn socket(&self) -> PathBuf {
        self.docker.plugins_dir().join("netbpf.sock")
    }

    fn start_agent(&mut self) {
        let mut cmd = Command::new(netbpf_bin());
        cmd.args(["--netns", self.lab.host.name(), "agent", "-c"])
            .arg(&self.file)
            .arg("--docker")
            .arg("--docker-socket")
            .arg(self.socket())
            .arg("--docker-api")
            .arg(self.docker.api_socket())
            .arg("--docker-state")
            .arg(self.dir.path().join("state"))
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .expect("log"),
            );
        let before = self.agent_log().matches("serving Docker").count();
        self.agent = Some(Background::spawn(cmd).expect("agent starts"));
        let serving = wait_for(WAIT, || {
            (self.agent_log().matches("serving Docker").count() > before).then_some(())
        });
        assert!(
            serving.is_some(),
            "agent never served:\n{}",
            self.agent_log()
        );
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn netbpf_json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = netbpf_ok(&self.lab.host, &all);
        serde_json::from_str(&text).expect("JSON")
    }

    /// The containers netbpf has wired, by name.
    fn wired(&self) -> Vec<String> {
        self.netbpf_json(&["show", "containers"])
            .iter()
            .map(|c| c["name"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// `docker run -d --name NAME ARGS... IMAGE CMD...`.
    fn run(&self, name: &str, args: &[&str], cmd: &[&str]) {
        let mut all = vec!["run", "-d", "--name", name];
        all.extend(args);
        all.push(IMAGE);
        all.extend(cmd);
        self.docker.docker_ok(&all);
    }

    /// `docker exec NAME sh -c SCRIPT`: (success, stdout); stderr goes to the test's.
    fn exec(&self, name: &str, script: &str) -> (bool, String) {
        let out = self.docker.docker(&["exec", name, "sh", "-c", script]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            eprintln!("docker exec {name} {script:?}: {}", stderr.trim());
        }
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    }

    /// The PID of a container's first process (its network namespace is /proc/PID/ns/net).
    fn pid(&self, name: &str) -> u32 {
        self.docker
            .docker_ok(&["inspect", "-f", "{{.State.Pid}}", name])
            .parse()
            .expect("a PID")
    }

    /// The host ends of netbpf's veths in the host namespace.
    fn veths(&self) -> Vec<String> {
        let out = self
            .lab
            .host
            .exec("ip", &["-br", "link", "show"])
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(['@', ' ']).next())
            .filter(|name| name.starts_with("nb"))
            .map(str::to_owned)
            .collect()
    }
}

/// Runs `f` on a thread inside the network namespace of process `pid` (a container's).
fn in_netns_of<T: Send>(pid: u32, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("netns of pid");
            // SAFETY: a valid namespace fd; only this thread moves.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0,
                "setns"
            );
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// An HTTP GET from the outside namespace; the body.
fn http_get(outside: &Netns, to: SocketAddrV4, path: &str) -> std::io::Result<String> {
    outside.run(|| {
        let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        // The first blank line ends the headers (a CGI's may end in bare newlines).
        let end = [text.find("\r\n\r\n"), text.find("\n\n")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(text.len());
        Ok(text[end..].trim().to_owned())
    })
}

/// (Debian's static busybox crashes in `wget -T`: callers use `timeout N wget`.)
/// A busybox httpd serving `name` at / and the client's address at /cgi-bin/ip.
fn web_server(name: &str) -> Vec<String> {
    let script = format!(
        "mkdir -p /www/cgi-bin && echo {name} > /www/index.html && \
         printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip && \
         chmod +x /www/cgi-bin/ip && exec httpd -f -p 80 -h /www"
    );
    vec!["sh".into(), "-c".into(), script]
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn docker_network_driver() {
    require_root!();
    if !docker_or_skip("docker_network_driver") {
        return;
    }
    let root_before = root_namespace();
    let w = World::new(
        "\n[[network]]\nname = \"filenet\"\nsubnet = \"198.18.70.0/24\"\n",
        &[],
    );
    let d = &w.docker;

    // Networks: Docker's IPAM picks addresses in the subnets given.
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        "netbpf",
        "--subnet",
        "198.18.60.0/24",
        "front",
    ]);
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        "netbpf",
        "--subnet",
        "198.18.61.0/24",
        "back",
    ]);
    w.run(
        "web1",
        &["--network", "front", "-p", "8080:80", "-p", "53/udp"],
        &as_strs(&web_server("web1")),
    );
    w.run("web2", &["--network", "front"], &["sleep", "1000000"]);
    w.run("other", &["--network", "back"], &["sleep", "1000000"]);

    // Same network: by address and by name (Docker's embedded DNS, 127.0.0.11).
    let (ok, _) = w.exec("web2", "ping -c 3 -W 2 198.18.60.2");
    assert!(ok, "web2 pings web1 by address");
    let (ok, body) = w.exec("web2", "timeout 5 wget -q -O - http://web1/");
    assert!(ok, "web2 fetches from web1 by name");
    assert_eq!(body, "web1");
    let (_, resolv) = w.exec("web2", "cat /etc/resolv.conf");
    assert!(resolv.contains("127.0.0.11"), "{resolv}");
    // Another network: nothing gets through.
    let (ok, _) = w.exec("other", "ping -c 2 -W 1 198.18.60.2");
    assert!(!ok, "a container of another network reaches web1");
    let (ok, _) = w.exec("other", "timeout 2 wget -q -O - http://198.18.60.2/");
    assert!(!ok, "a container of another network fetches from web1");
    // Connected to that network too, web2 reaches it there, under a name of its own.
    d.docker_ok(&["network", "connect", "back", "web2"]);
    let (ok, _) = w.exec("web2", "ping -c 2 -W 2 other");
    assert!(ok, "web2 reaches other once on its network");
    assert!(
        w.wired().contains(&"web2.back".to_owned()),
        "{:?}",
        w.wired()
    );
    d.docker_ok(&["network", "disconnect", "back", "web2"]);
    assert!(
        !w.wired().contains(&"web2.back".to_owned()),
        "{:?}",
        w.wired()
    );
    let (ok, _) = w.exec("web2", "ping -c 2 -W 1 198.18.61.2");
    assert!(!ok, "web2 still reaches other after leaving its network");

    // Published ports, as `docker port` would show them, by container name.
    let ports = w.netbpf_json(&["show", "ports"]);
    let row = |port: u16| {
        ports
            .iter()
            .find(|p| p["container"] == "web1" && p["container_port"] == port)
            .unwrap_or_else(|| panic!("web1 {port} not published: {ports:?}"))
            .clone()
    };
    assert_eq!(row(80)["host_port"], 8080);
    assert_eq!(row(80)["proto"], "tcp");
    let udp_port = u16::try_from(row(53)["host_port"].as_u64().expect("a port")).expect("a port");
    assert!(udp_port > 0);
    // From outside, to the host's address: the server sees the client's address.
    let to = SocketAddrV4::new(HOST_UPLINK_IP, 8080);
    assert_eq!(http_get(&w.lab.outside, to, "/").expect("HTTP"), "web1");
    let client = http_get(&w.lab.outside, to, "/cgi-bin/ip").expect("HTTP");
    let client = client
        .trim_matches(['[', ']'])
        .trim_start_matches("::ffff:");
    assert_eq!(
        client,
        OUTSIDE_IP.to_string(),
        "the server sees the client's address"
    );
    // UDP on the port netbpf picked, answered by a server in web1's namespace.
    let server = in_netns_of(w.pid("web1"), || {
        UdpSocket::bind("0.0.0.0:53").expect("binds in web1")
    });
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let answer = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = server.recv_from(&mut buf).expect("a datagram");
        server.send_to(&buf[..n], from).expect("answers");
        from
    });
    let echoed = w.lab.outside.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").expect("binds");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.send_to(b"ping", SocketAddrV4::new(HOST_UPLINK_IP, udp_port))
            .expect("sends");
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf).expect("the answer");
        buf[..n].to_vec()
    });
    assert_eq!(echoed, b"ping");
    let from = answer.join().expect("server thread");
    assert_eq!(from.ip().to_string(), OUTSIDE_IP.to_string());

    // Out through the uplink, masqueraded.
    let (ok, _) = w.exec("web2", "ping -c 2 -W 2 198.18.0.2");
    assert!(ok, "web2 reaches outside");
    // -o netbpf.icc=false: containers of the network do not reach each other.
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        "netbpf",
        "--subnet",
        "198.18.65.0/24",
        "-o",
        "netbpf.icc=false",
        "quiet",
    ]);
    w.run("q1", &["--network", "quiet"], &["sleep", "1000000"]);
    w.run("q2", &["--network", "quiet"], &["sleep", "1000000"]);
    let (ok, _) = w.exec("q1", "ping -c 2 -W 1 198.18.65.3");
    assert!(!ok, "icc=false: q1 reaches q2");
    let (ok, _) = w.exec("q1", "ping -c 1 -W 2 198.18.65.1");
    assert!(ok, "icc=false: q1 still reaches its gateway");

    // An internal network: no default route, no way out, nothing published.
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        "netbpf",
        "--internal",
        "--subnet",
        "198.18.62.0/24",
        "intern",
    ]);
    w.run(
        "hidden",
        &["--network", "intern", "-p", "9090:80"],
        &as_strs(&web_server("hidden")),
    );
    let (_, routes) = w.exec("hidden", "ip route");
    assert!(!routes.contains("default"), "{routes}");
    let (ok, _) = w.exec("hidden", "ping -c 2 -W 1 198.18.0.2");
    assert!(!ok, "an internal container reaches outside");
    assert!(
        http_get(&w.lab.outside, SocketAddrV4::new(HOST_UPLINK_IP, 9090), "/").is_err(),
        "an internal container's port is reachable from outside"
    );
    assert!(
        !w.netbpf_json(&["show", "ports"])
            .iter()
            .any(|p| p["container"] == "hidden"),
        "an internal container's port is published"
    );

    // Driver errors, as Docker shows them.
    let err = d.docker_err(&[
        "network",
        "create",
        "-d",
        "netbpf",
        "--subnet",
        "198.18.63.0/24",
        "-o",
        "netbpf.icc=maybe",
        "bad1",
    ]);
    assert!(
        err.contains("netbpf: option netbpf.icc: \"maybe\" is neither true nor false"),
        "{err}"
    );
    let err = d.docker_err(&[
        "network",
        "create",
        "-d",
        "netbpf",
        "--subnet",
        "198.18.70.0/24",
        "bad2",
    ]);
    assert!(
        err.contains("subnet: 198.18.70.0/24 overlaps network \"filenet\" (198.18.70.0/24)"),
        "{err}"
    );
    let err = d.docker_err(&[
        "run",
        "--rm",
        "--network",
        "front",
        "-l",
        "netbpf.service=web",
        IMAGE,
        "true",
    ]);
    assert!(
        err.contains("label netbpf.service: \"web\" is not NAME:PORT"),
        "{err}"
    );
    let err = d.docker_err(&[
        "run",
        "--rm",
        "--network",
        "front",
        "-p",
        "8080:81",
        IMAGE,
        "true",
    ]);
    assert!(
        err.contains("host port 8080/tcp on 0.0.0.0 is already published"),
        "{err}"
    );
    let networks: Vec<String> = d
        .docker_ok(&["network", "ls", "--format", "{{.Name}}"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        !networks.iter().any(|n| n.starts_with("bad")),
        "{networks:?}"
    );

    // A service from labels: rr over three containers, exactly a third each.
    for name in ["b1", "b2", "b3"] {
        w.run(
            name,
            &[
                "--network",
                "front",
                "-l",
                "netbpf.service=web:80",
                "-l",
                "netbpf.service.vip=198.18.200.10",
                "-l",
                "netbpf.service.scheduler=rr",
            ],
            &as_strs(&web_server(name)),
        );
    }
    let services = w.netbpf_json(&["show", "services"]);
    assert_eq!(services.len(), 1, "{services:?}");
    let (ok, served) = w.exec(
        "web2",
        "for i in $(seq 30); do timeout 5 wget -q -O - http://198.18.200.10/ || echo failed; done",
    );
    assert!(ok);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in served.lines() {
        *counts.entry(line).or_default() += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([("b1", 10), ("b2", 10), ("b3", 10)]),
        "{served}"
    );

    // Stop, start and remove: nothing left behind.
    d.docker_ok(&["stop", "-t", "1", "web2"]);
    assert!(!w.wired().contains(&"web2".to_owned()));
    d.docker_ok(&["start", "web2"]);
    let (ok, body) = w.exec("web2", "timeout 5 wget -q -O - http://web1/");
    assert!(ok && body == "web1", "web2 works again after a restart");
    let all = d.docker_ok(&["ps", "-aq"]);
    let mut rm = vec!["rm", "-f"];
    rm.extend(all.lines());
    d.docker_ok(&rm);
    // dockerd may still be releasing a removed container's endpoints for a moment ("has
    // active endpoints"): wait for that, and only that.
    for net in ["front", "back", "intern", "quiet"] {
        let removed = wait_for(WAIT, || {
            let out = d.docker(&["network", "rm", net]);
            let busy = String::from_utf8_lossy(&out.stderr).contains("active endpoints");
            (out.status.success() || !busy).then_some(out)
        });
        let out = removed.unwrap_or_else(|| {
            panic!(
                "network {net} kept active endpoints; the agent's log:\n{}",
                w.agent_log()
            )
        });
        assert!(
            out.status.success(),
            "docker network rm {net}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    assert_eq!(w.wired(), Vec::<String>::new());
    assert_eq!(w.veths(), Vec::<String>::new());
    assert_eq!(w.netbpf_json(&["show", "ports"]), Vec::<Value>::new());
    assert_eq!(w.netbpf_json(&["show", "services"]), Vec::<Value>::new());
    let networks: Vec<String> = w
        .netbpf_json(&["show", "networks"])
        .iter()
        .map(|n| n["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(networks, ["filenet"]);
    let links = Path::new(netbpf_common::pin_paths::NETNS_PIN_ROOT)
        .join(w.lab.host.name())
        .join("links");
    let pinned: Vec<String> = std::fs::read_dir(&links)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.contains(HOST_UPLINK_IF))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(pinned, Vec::<String>::new(), "link pins left behind");

    drop(w);
    assert_eq!(
        root_namespace(),
        root_before,
        "the machine's namespace changed"
    );
}

#[test]
fn docker_and_agent_restarts() {
    require_root!();
    if !docker_or_skip("docker_and_agent_restarts") {
        return;
    }
    let mut w = World::new("", &["--live-restore"]);
    w.docker.docker_ok(&[
        "network",
        "create",
        "-d",
        "netbpf",
        "--subnet",
        "198.18.64.0/24",
        "front",
    ]);
    w.run(
        "web1",
        &["--network", "front", "-p", "8081:80"],
        &as_strs(&web_server("web1")),
    );
    w.run("web2", &["--network", "front"], &["sleep", "1000000"]);

    // The agent killed and started again while web2 pings web1 every 10 ms: no ping lost,
    // and the agent serves Docker again from what it saved.
    let mut ping = Command::new(dockerd::DOCKER);
    ping.arg("-H")
        .arg(format!("unix://{}", w.docker.api_socket().display()))
        .args([
            "exec", "web2", "ping", "-q", "-i", "0.01", "-c", "300", "web1",
        ])
        .stdout(Stdio::piped());
    let mut ping = Background::spawn_reading(ping).expect("ping starts");
    std::thread::sleep(Duration::from_millis(500));
    drop(w.agent.take()); // SIGKILL
    std::thread::sleep(Duration::from_millis(300));
    w.start_agent();
    let mut summary = String::new();
    ping.stdout()
        .expect("ping's stdout")
        .read_to_string(&mut summary)
        .expect("ping's summary");
    assert!(
        summary.contains("300 packets transmitted, 300 packets received"),
        "{summary}"
    );
    w.run("web3", &["--network", "front"], &["sleep", "1000000"]);
    let (ok, body) = w.exec("web3", "timeout 5 wget -q -O - http://web1/");
    assert!(
        ok && body == "web1",
        "the restarted agent wires new containers"
    );
    assert_eq!(
        http_get(&w.lab.outside, SocketAddrV4::new(HOST_UPLINK_IP, 8081), "/")
            .expect("published port after the restart"),
        "web1"
    );

    // A netbpf that describes web1 differently (as an upgrade might: the hash of its
    // definition changes) keeps its veth, whose container end only Docker could move in
    // again: the entry is rewritten in place and web1 keeps talking.
    let veth_of = |name: &str| {
        w.netbpf_json(&["show", "containers"])
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| (c["host_interface"].clone(), c["ifindex"].clone()))
            .unwrap_or_else(|| panic!("{name} is not wired"))
    };
    let veth_before = veth_of("web1");
    let pin = Path::new(netbpf_common::pin_paths::NETNS_PIN_ROOT)
        .join(w.lab.host.name())
        .join("maps")
        .join(netbpf_common::maps::ENDPOINTS);
    let data = aya::maps::MapData::from_pin(&pin).expect("pinned NB_ENDPOINTS");
    let map = aya::maps::Map::from_map_data(data).expect("map");
    let mut endpoints: aya::maps::HashMap<_, u32, EndpointInfo> =
        aya::maps::HashMap::try_from(map).expect("hash map");
    let (key, mut web1) = endpoints
        .iter()
        .filter_map(Result::ok)
        .find(|(_, ep)| name_str(&ep.name) == "web1")
        .expect("web1's endpoint");
    web1.spec ^= 0x5a5a_5a5a;
    endpoints.insert(&key, &web1, 0).expect("rewritten");
    w.run("web4", &["--network", "front"], &["sleep", "1000000"]);
    assert_eq!(veth_of("web1"), veth_before, "web1's veth was made again");
    let (ok, body) = w.exec("web4", "timeout 5 wget -q -O - http://web1/");
    assert!(
        ok && body == "web1",
        "web1 answers after its entry was rewritten"
    );
    let after = endpoints.get(&key, 0).expect("web1's entry");
    assert_ne!(after.spec, web1.spec, "the entry was rewritten as planned");

    // dockerd killed and started again with live-restore, while web2 pings web1 (from its
    // namespace, by a ping of the host's: `docker exec` dies with dockerd): the containers
    // keep running and talking, and stay wired.
    let mut ping = Command::new("nsenter");
    ping.arg(format!("--net=/proc/{}/ns/net", w.pid("web2")))
        .args(["ping", "-q", "-i", "0.01", "-c", "300", "198.18.64.2"])
        .stdout(Stdio::piped());
    let mut ping = Background::spawn_reading(ping).expect("ping starts");
    std::thread::sleep(Duration::from_millis(300));
    w.docker.stop_daemon(libc::SIGKILL);
    w.docker.start_daemon().expect("dockerd starts again");
    let mut summary = String::new();
    ping.stdout()
        .expect("ping's stdout")
        .read_to_string(&mut summary)
        .expect("ping's summary");
    assert!(
        summary.contains("300 packets transmitted, 300 received"),
        "{summary}"
    );
    let mut wired = w.wired();
    wired.sort();
    assert_eq!(wired, ["web1", "web2", "web3", "web4"]);
    let (ok, body) = w.exec("web2", "timeout 5 wget -q -O - http://web1/");
    assert!(ok && body == "web1", "containers work after a live restore");

    // dockerd killed with its containers running, then started again without
    // live-restore: it stops them without telling the driver (no Leave, no
    // DeleteEndpoint); the agent forgets them.
    w.docker.set_args(&[]);
    w.docker.stop_daemon(libc::SIGKILL);
    w.docker.start_daemon().expect("dockerd starts again");
    let forgotten = wait_for(Duration::from_secs(60), || {
        (w.wired().is_empty() && w.veths().is_empty()).then_some(())
    });
    assert!(
        forgotten.is_some(),
        "endpoints Docker forgot are still wired: {:?} {:?}\n{}",
        w.wired(),
        w.veths(),
        w.agent_log()
    );
    assert!(w.agent_log().contains("forgot a Docker endpoint"));
    // The network is still Docker's and netbpf's: the containers start again.
    w.docker.docker_ok(&["start", "web1", "web2"]);
    let (ok, body) = w.exec("web2", "timeout 5 wget -q -O - http://web1/");
    assert!(
        ok && body == "web1",
        "containers work after dockerd's restart"
    );
}
