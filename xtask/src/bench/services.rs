//! The `services` scenario: a container to a virtual IP, at 1, 100, 1,000 and 10,000 services of
//! three backends each. The baseline is kube-proxy's iptables mode on the Linux-bridge lab
//! (its nat chains: KUBE-SERVICES matching each VIP and port, a KUBE-SVC chain per service
//! choosing an endpoint with `statistic --mode random`, a KUBE-SEP chain per endpoint with
//! the DNAT; br_netfilter on, so that the backends' replies, bridged straight to the
//! client, meet conntrack's reverse NAT); netbpf is the same containers with the services
//! in its definitions file. Also measured: the time to apply 10,000 services, and to
//! change one service's backend with them in place.
//!
//! Every service has the same three backends (the three server containers, port 80): what
//! grows with the count is what a new connection's path may have to search (KUBE-SERVICES'
//! rules, netbpf's service hash) and what an apply writes (30,000 KUBE-SEP chains, 30,000
//! backend entries), not the servers. The VIP measured is the last one added, the last
//! rule of KUBE-SERVICES.

use std::{
    fmt::Write as _,
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use netbpf_common::stats::{Hook, Outcome};
use netbpf_tests::{TempDir, lab::Lab, netns::Netns, unique_prefix};

use super::{
    BENCH_PREFIX, Derived, Measured, Metric, Scenario, check_counters, labs, progress,
    tools::{self, HTTP_PORT},
};
use crate::cmd;

pub const SERVICES: Scenario = Scenario {
    id: "services",
    title: "Container to a virtual service (VIP)",
    about: "A client container opens connections to a VIP:80 spread over three server \
            containers (nginx on port 80), with 1, 100, 1,000 or 10,000 services defined (each over \
            the same three servers; the VIP measured is the last one added). `iptables` is \
            kube-proxy's iptables mode on a Linux bridge: nat PREROUTING -> KUBE-SERVICES \
            (one rule per service matching its VIP and port) -> KUBE-SVC-<hash> (`-m statistic \
            --mode random --probability 1/k` over its endpoints) -> KUBE-SEP-<hash> (DNAT), \
            with kube-proxy's filter and postrouting chains and br_netfilter on (the servers' \
            replies are bridged to the client and reverse-translated by conntrack), written \
            by iptables-restore (the system's iptables, nf_tables backend); `netbpf` is the \
            same containers wired by netbpf with the services in its definitions file \
            (scheduler `random`, as kube-proxy's). Each service count has a lab of its own \
            per target, so that every round measures every count, the targets alternating.",
    targets: &["iptables", "netbpf"],
    baseline: "iptables",
    contenders: &["netbpf"],
    floor: None,
};

/// The service counts measured.
pub const COUNTS: [usize; 4] = [1, 100, 1000, 10_000];
/// The largest, where applying and changing are timed.
const MOST: usize = COUNTS[3];

const SERVERS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 10, 3),
    Ipv4Addr::new(198, 18, 10, 4),
    Ipv4Addr::new(198, 18, 10, 5),
];
const SERVER_NAMES: [&str; 3] = ["s1", "s2", "s3"];
/// The backend that replaces the measured service's third when one backend changes (an
/// address of the network no container holds: the change is timed, not used).
const SPARE: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 6);
const SUBNET: &str = "198.18.10.0/24";
/// kube-proxy's masquerade mark.
const MASQ_MARK: &str = "0x4000";

/// Service `i`'s VIP: 198.19.x.y, 200 to a /24.
pub fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (i / 200) as u8, (10 + i % 200) as u8)
}

/// The VIP measured among `count` services: the last added.
fn measured_vip(count: usize) -> SocketAddrV4 {
    SocketAddrV4::new(vip(count - 1), HTTP_PORT)
}

fn label(count: usize) -> String {
    match count {
        1 => "1 service".to_owned(),
        n if n >= 1000 => format!("{},{:03} services", n / 1000, n % 1000),
        n => format!("{n} services"),
    }
}

/// The backends of service `i` of `count`: the three servers, or (`changed`, the last
/// service only) the first two and the spare.
fn backends(i: usize, count: usize, changed: bool) -> [Ipv4Addr; 3] {
    if changed && i == count - 1 {
        [SERVERS[0], SERVERS[1], SPARE]
    } else {
        SERVERS
    }
}

// ---------------------------------------------------------------------------------------
// kube-proxy's rules

/// A chain name as kube-proxy makes them: a prefix and 16 base32 characters of a hash of
/// what the chain is for (kube-proxy hashes with SHA-256; any stable hash names alike).
fn chain(prefix: &str, of: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv = |seed: u64| {
        of.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    let bits = (u128::from(a) << 64) | u128::from(b);
    let name: String = (0..16)
        .map(|i| ALPHABET[((bits >> (5 * i)) & 31) as usize] as char)
        .collect();
    format!("{prefix}-{name}")
}

/// Service `i`'s port name, as kube-proxy's comments show it.
fn port_name(i: usize) -> String {
    format!("default/svc-{i}:http")
}

fn svc_chain(i: usize) -> String {
    chain("KUBE-SVC", &format!("{}tcp", port_name(i)))
}

fn sep_chain(i: usize, endpoint: Ipv4Addr) -> String {
    chain(
        "KUBE-SEP",
        &format!("{}tcp{endpoint}:{HTTP_PORT}", port_name(i)),
    )
}

/// Service `i`'s KUBE-SERVICES rule.
fn services_rule(i: usize) -> String {
    format!(
        "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp \
         --dport {HTTP_PORT} -j {}\n",
        vip(i),
        port_name(i),
        svc_chain(i)
    )
}

/// Service `i`'s own chains (declarations, then rules), as kube-proxy writes them: the
/// KUBE-SVC chain marks traffic from outside the cluster CIDR for masquerade and picks an
/// endpoint (the n-th of k left with probability 1/(k-n)); each KUBE-SEP chain marks the
/// endpoint's own traffic (hairpin) and DNATs.
fn service_chains(i: usize, endpoints: &[Ipv4Addr], decls: &mut String, rules: &mut String) {
    let (name, svc) = (port_name(i), svc_chain(i));
    let _ = writeln!(decls, ":{svc} - [0:0]");
    let _ = writeln!(
        rules,
        "-A {svc} ! -s {SUBNET} -d {}/32 -p tcp -m comment --comment \"{name} cluster IP\" \
         -m tcp --dport {HTTP_PORT} -j KUBE-MARK-MASQ",
        vip(i)
    );
    for (n, ep) in endpoints.iter().enumerate() {
        let sep = sep_chain(i, *ep);
        let left = endpoints.len() - n;
        let statistic = if left > 1 {
            format!(
                "-m statistic --mode random --probability {:.10} ",
                1.0 / left as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            rules,
            "-A {svc} -m comment --comment \"{name} -> {ep}:{HTTP_PORT}\" {statistic}-j {sep}"
        );
    }
    for ep in endpoints {
        let sep = sep_chain(i, *ep);
        let _ = writeln!(decls, ":{sep} - [0:0]");
        let _ = writeln!(
            rules,
            "-A {sep} -s {ep}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ\n\
             -A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination \
             {ep}:{HTTP_PORT}"
        );
    }
}

/// The filter table's chains kube-proxy fills on every sync (declarations and rules).
fn filter_sync() -> (&'static str, String) {
    (
        ":KUBE-EXTERNAL-SERVICES - [0:0]\n:KUBE-FORWARD - [0:0]\n:KUBE-NODEPORTS - [0:0]\n\
         :KUBE-PROXY-FIREWALL - [0:0]\n:KUBE-SERVICES - [0:0]\n",
        format!(
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
             -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark \
             --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT\n\
             -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m \
             conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        ),
    )
}

/// The nat table's chains kube-proxy fills on every sync, but for KUBE-SERVICES' per
/// service rules (declarations, rules before KUBE-SERVICES', the rule after them).
fn nat_sync() -> (&'static str, String, &'static str) {
    (
        ":KUBE-MARK-MASQ - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
         :KUBE-SERVICES - [0:0]\n",
        format!(
            "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}\n\
             -A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN\n\
             -A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}\n\
             -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring \
             SNAT\" -j MASQUERADE --random-fully\n"
        ),
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must \
         be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    )
}

/// The whole ruleset of `count` services for `iptables-restore`: kube-proxy's chains and
/// the jumps into them from the built-in chains (which kube-proxy adds one by one at
/// start; here in the same file).
pub fn kube_rules(count: usize, changed: bool) -> String {
    let (filter_decls, filter_rules) = filter_sync();
    let (nat_decls, nat_rules, nat_last) = nat_sync();
    let mut decls = String::new();
    let mut services = String::new();
    let mut chains = String::new();
    for i in 0..count {
        services.push_str(&services_rule(i));
        service_chains(i, &backends(i, count, changed), &mut decls, &mut chains);
    }
    format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{filter_decls}\
         -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer \
         firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A INPUT -m comment --comment \"kubernetes health check service ports\" -j \
         KUBE-NODEPORTS\n\
         -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally \
         visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer \
         firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service \
         portals\" -j KUBE-SERVICES\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally \
         visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
         -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer \
         firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service \
         portals\" -j KUBE-SERVICES\n\
         {filter_rules}COMMIT\n\
         *nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n{nat_decls}{decls}\
         -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j \
         KUBE-POSTROUTING\n\
         {nat_rules}{services}{nat_last}{chains}COMMIT\n"
    )
}

/// What kube-proxy (1.28 on, partial syncs) gives `iptables-restore --noflush` when one
/// endpoint of the last service changes: every top-level chain declared (so flushed) and
/// rewritten whole, KUBE-SERVICES with its rule for every service; of the service chains
/// only the changed service's KUBE-SVC and its new endpoint's KUBE-SEP; the gone
/// endpoint's chain flushed and deleted.
pub fn kube_change(count: usize, changed: bool) -> String {
    let (filter_decls, filter_rules) = filter_sync();
    let (nat_decls, nat_rules, nat_last) = nat_sync();
    let last = count - 1;
    let (from, to) = (
        backends(last, count, !changed),
        backends(last, count, changed),
    );
    let mut decls = String::new();
    let mut chains = String::new();
    service_chains(last, &to, &mut decls, &mut chains);
    // Only the new endpoint's chain is written: the others are unchanged.
    let kept: Vec<String> = from
        .iter()
        .filter(|ep| to.contains(ep))
        .map(|ep| sep_chain(last, *ep))
        .collect();
    let drop_kept = |text: String| -> String {
        text.lines()
            .filter(|l| !kept.iter().any(|k| l.starts_with(&format!("-A {k} "))))
            .filter(|l| !kept.iter().any(|k| l.starts_with(&format!(":{k} "))))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let (mut decls, chains) = (drop_kept(decls), drop_kept(chains));
    // A chain that goes is declared (so flushed: iptables deletes only empty chains), then
    // deleted.
    let mut gone = String::new();
    for ep in from.iter().filter(|ep| !to.contains(ep)) {
        let sep = sep_chain(last, *ep);
        let _ = writeln!(decls, ":{sep} - [0:0]");
        let _ = writeln!(gone, "-X {sep}");
    }
    let services: String = (0..count).map(services_rule).collect();
    format!(
        "*filter\n{filter_decls}{filter_rules}COMMIT\n\
         *nat\n{nat_decls}{decls}{nat_rules}{services}{nat_last}{chains}{gone}COMMIT\n"
    )
}

// ---------------------------------------------------------------------------------------
// netbpf's definitions

/// The containers (client and servers) of a netbpf lab.
fn netbpf_containers(lab: &Lab) -> String {
    let mut text = format!("[[network]]\nname = \"front\"\nsubnet = \"{SUBNET}\"\n\n");
    let names = std::iter::once("client").chain(SERVER_NAMES);
    let ips = std::iter::once(labs::CLIENT_IP).chain(SERVERS);
    for ((name, ip), ns) in names.zip(ips).zip(&lab.containers) {
        let _ = write!(
            text,
            "[[container]]\nname = \"{name}\"\nnetns = \"{}\"\nnetwork = \"front\"\n\
             ip = \"{ip}\"\n\n",
            ns.path().display()
        );
    }
    text
}

/// `count` services for netbpf (the last one's third backend the spare when `changed`).
pub fn netbpf_services(count: usize, changed: bool) -> String {
    let mut text = String::new();
    for i in 0..count {
        let backends: Vec<String> = backends(i, count, changed)
            .iter()
            .map(|ip| match SERVERS.iter().position(|s| s == ip) {
                Some(n) => format!("{{ container = \"{}\" }}", SERVER_NAMES[n]),
                None => format!("{{ address = \"{ip}\" }}"),
            })
            .collect();
        let _ = write!(
            text,
            "[[service]]\nname = \"svc-{i}\"\nvip = \"{}\"\nport = {HTTP_PORT}\n\
             scheduler = \"random\"\nbackends = [{}]\n\n",
            vip(i),
            backends.join(", ")
        );
    }
    text
}

// ---------------------------------------------------------------------------------------
// The labs

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Iptables,
    Netbpf,
}

/// One target at one service count: the client (container 0) and the three servers.
struct Target {
    kind: Kind,
    count: usize,
    lab: Lab,
    dir: PathBuf,
}

impl Target {
    fn client(&self) -> &Netns {
        &self.lab.containers[0]
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Iptables => "iptables",
            Kind::Netbpf => "netbpf",
        }
    }

    /// Runs `netbpf apply` with `text` (written to `file` in the target's directory);
    /// returns the wall time of the process (s).
    fn netbpf_apply(&self, netbpf_bin: &Path, file: &str, text: &str) -> anyhow::Result<f64> {
        let path = self.dir.join(file);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let started = Instant::now();
        cmd::output(
            Command::new(netbpf_bin)
                .args(["--netns", self.lab.host.name(), "apply", "-c"])
                .arg(&path),
        )?;
        Ok(started.elapsed().as_secs_f64())
    }

    /// Runs `iptables-restore ARGS FILE` in the lab's host namespace with `text`; returns
    /// the wall time of the process (s).
    fn iptables_restore(&self, args: &[&str], file: &str, text: &str) -> anyhow::Result<f64> {
        let path = self.dir.join(file);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let path = path.display().to_string();
        let mut line = args.to_vec();
        line.push(&path);
        let started = Instant::now();
        // In the lab's host namespace, never the machine's.
        self.lab.host.exec("iptables-restore", &line)?;
        Ok(started.elapsed().as_secs_f64())
    }

    /// Empties the lab's filter and nat tables (kube-proxy's chains gone).
    fn iptables_clear(&self) -> anyhow::Result<()> {
        self.iptables_restore(
            &[],
            "empty.rules",
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n\
             *nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\nCOMMIT\n",
        )
        .map(drop)
    }

    /// Puts `count` services in place (the initial state); returns the time it took.
    fn apply_services(&self, netbpf_bin: &Path, changed: bool) -> anyhow::Result<f64> {
        match self.kind {
            Kind::Iptables => {
                self.iptables_restore(&[], "kube.rules", &kube_rules(self.count, changed))
            }
            Kind::Netbpf => self.netbpf_apply(
                netbpf_bin,
                "netbpf.toml",
                &(netbpf_containers(&self.lab) + &netbpf_services(self.count, changed)),
            ),
        }
    }

    /// Removes every service (the containers stay).
    fn remove_services(&self, netbpf_bin: &Path) -> anyhow::Result<()> {
        match self.kind {
            Kind::Iptables => self.iptables_clear(),
            Kind::Netbpf => self
                .netbpf_apply(netbpf_bin, "netbpf.toml", &netbpf_containers(&self.lab))
                .map(drop),
        }
    }

    /// Changes the last service's third backend (to the spare, or back); returns the time
    /// it took.
    fn change_backend(&self, netbpf_bin: &Path, changed: bool) -> anyhow::Result<f64> {
        match self.kind {
            Kind::Iptables => self.iptables_restore(
                &["--noflush"],
                "kube-change.rules",
                &kube_change(self.count, changed),
            ),
            Kind::Netbpf => self.apply_services(netbpf_bin, changed),
        }
    }
}

/// A target's lab: the bridge and kube-proxy's rules, or netbpf's containers; services
/// applied.
/// Returns the target and the time its services took to apply (the containers in place).
fn build(kind: Kind, count: usize, netbpf_bin: &Path, dir: &Path) -> anyhow::Result<(Target, f64)> {
    let dir = dir.join(format!(
        "{}-{count}",
        if kind == Kind::Iptables {
            "iptables"
        } else {
            "netbpf"
        }
    ));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ips = [labs::CLIENT_IP, SERVERS[0], SERVERS[1], SERVERS[2]];
    let lab = match kind {
        Kind::Iptables => {
            let lab = labs::bridged(BENCH_PREFIX, &ips)?;
            lab.host.sysctl("net.bridge.bridge-nf-call-iptables", "1")?;
            lab.host.sysctl("net.ipv4.ip_forward", "1")?;
            lab
        }
        Kind::Netbpf => Lab::new(BENCH_PREFIX, ips.len()).context("netbpf lab")?,
    };
    let target = Target {
        kind,
        count,
        lab,
        dir,
    };
    if kind == Kind::Netbpf {
        // The containers first, so that the services' apply is timed alone.
        target.remove_services(netbpf_bin)?;
    }
    let took = target.apply_services(netbpf_bin, false)?;
    Ok((target, took))
}

/// The services scenario: labs for every count and target, apply and change times at
/// the largest count, then the connection rates round by round.
pub fn run(
    netbpf_bin: &Path,
    quick: bool,
    rounds: usize,
    wrk_seconds: u32,
) -> anyhow::Result<Measured> {
    progress(
        "services: building kube-proxy's iptables labs and netbpf's, at 1, 100, 1,000 and 10,000 services",
    );
    let dir = TempDir::new(&unique_prefix(BENCH_PREFIX)).context("bench temp dir")?;
    let mut targets = Vec::new();
    let mut built = Vec::new();
    for count in COUNTS {
        for kind in [Kind::Iptables, Kind::Netbpf] {
            let (target, took) = build(kind, count, netbpf_bin, dir.path())?;
            if count == MOST {
                built.push((target.name(), took));
            }
            targets.push(target);
        }
    }
    let _servers = targets
        .iter()
        .flat_map(|t| {
            t.lab.containers[1..]
                .iter()
                .zip(SERVERS)
                .zip(SERVER_NAMES)
                .map(|((ns, ip), name)| (ns, ip, t.dir.join(name)))
        })
        .map(|(ns, ip, d)| {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            tools::start_web(ns, ip, &d)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut metrics: Vec<Metric> = COUNTS
        .iter()
        .map(|count| {
            let target = match count {
                1 => Some(1.3),
                n if *n == MOST => Some(2.0),
                _ => None,
            };
            Metric::new(
                leak(format!(
                    "new connections (HTTP) to a VIP, {}",
                    label(*count)
                )),
                "wrk -t1 -c16 to the last VIP added, `Connection: close`: one request per \
                 connection, nginx on the three backends",
                "conn/s",
                true,
                target,
            )
        })
        .collect();

    // Applying and changing, at the largest count, the targets taking turns (a quick run
    // takes one sample of each: an iptables sample alone takes seconds).
    let most: Vec<&Target> = targets.iter().filter(|t| t.count == MOST).collect();
    let samples = if quick { 1 } else { rounds };
    let mut apply = Metric::new(
        "apply 10,000 services (3 backends each)",
        "wall time of `netbpf apply -c FILE` of the whole definitions file, the containers \
         already applied and no service yet / of `iptables-restore` of kube-proxy's whole \
         ruleset into empty tables; the targets taking turns, one sample each per round (one \
         round in a quick run)",
        "s",
        false,
        None,
    )
    .with_limit(2.0);
    let mut change = Metric::new(
        "change one service's backend, 10,000 in place",
        "wall time of `netbpf apply -c FILE` of the file with the last service's third backend \
         replaced (every service read and compared, only that one written) / of \
         `iptables-restore --noflush` of what kube-proxy's partial sync writes (KUBE-SERVICES \
         rewritten whole with its 10,000 rules, the changed KUBE-SVC chain, the new KUBE-SEP \
         chain, the old one deleted); there and back each round (one in a quick run), both \
         timed",
        "s",
        false,
        None,
    );
    for (name, took) in built {
        apply.values.entry(name).or_default().push(took);
    }
    for round in 1..=samples {
        for t in &most {
            progress(&format!(
                "services: round {round}/{samples}, {}: applying 10,000 services, changing one",
                t.name()
            ));
            // The first sample is the labs' own first apply.
            if round > 1 {
                t.remove_services(netbpf_bin)?;
                let took = t.apply_services(netbpf_bin, false)?;
                apply.values.entry(t.name()).or_default().push(took);
            }
            for changed in [true, false] {
                let took = t.change_backend(netbpf_bin, changed)?;
                change.values.entry(t.name()).or_default().push(took);
            }
        }
    }

    let mut flow_cost =
        tools::syn_cost_metrics(COUNTS.iter().map(|c| format!("to a VIP, {}", label(*c))));

    // Connection rates and new-flow costs: every count and target in every round, the counts in a rotating
    // order (each count first in one round, last in another) so that no count always
    // follows the same neighbour.
    for round in 1..=rounds {
        for k in 0..COUNTS.len() {
            let n = (k + round - 1) % COUNTS.len();
            let count = &COUNTS[n];
            for t in targets.iter().filter(|t| t.count == *count) {
                progress(&format!(
                    "services: round {round}/{rounds}, {}, {}",
                    label(*count),
                    t.name()
                ));
                let (rate, cost) = tools::new_flow_figures(
                    t.client(),
                    labs::CLIENT_IP,
                    measured_vip(*count),
                    round,
                    wrk_seconds,
                )
                .with_context(|| format!("services: {} at {}", t.name(), label(*count)))?;
                metrics[n].values.entry(t.name()).or_default().push(rate);
                flow_cost[n].values.entry(t.name()).or_default().push(cost);
            }
        }
    }

    for t in &targets {
        match t.kind {
            Kind::Netbpf => check_counters(
                netbpf_bin,
                &format!("netbpf at {}", label(t.count)),
                &t.lab,
                &[
                    (Hook::FromContainer, Outcome::Service),
                    (Hook::FromContainer, Outcome::ServiceReply),
                ],
                &[(Hook::FromContainer, Outcome::ServiceReset)],
            )?,
            Kind::Iptables => check_dnat(t)?,
        }
    }

    let flat = |target: &'static str| {
        let at_most = metrics[COUNTS.len() - 1].of(target);
        let at_one = metrics[0].of(target);
        at_most
            .iter()
            .zip(at_one)
            .map(|(m, o)| m / o)
            .collect::<Vec<f64>>()
    };
    let derived = vec![
        Derived {
            name: "netbpf's new connections/s at 10,000 services / at 1 service",
            how: "the two rates above, each round's pair (measured in the same round)",
            per_round: flat("netbpf"),
            target: Some(0.95),
            higher_is_better: true,
        },
        Derived {
            name: "iptables' new connections/s at 10,000 services / at 1 service",
            how: "the same for the baseline",
            per_round: flat("iptables"),
            target: None,
            higher_is_better: true,
        },
    ];
    metrics.push(apply);
    metrics.push(change);
    metrics.extend(flow_cost);
    Ok(Measured {
        scenario: &SERVICES,
        metrics,
        derived,
    })
}

/// An iptables target's traffic went through the measured service's DNAT: every one of
/// its KUBE-SVC chain's jumps to an endpoint counted packets.
fn check_dnat(t: &Target) -> anyhow::Result<()> {
    let svc = svc_chain(t.count - 1);
    let out = t
        .lab
        .host
        .exec("iptables", &["-t", "nat", "-L", &svc, "-n", "-v", "-x"])
        .context("reading the measured service's chain")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let jumps: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("KUBE-SEP-"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    if jumps.len() != 3 || jumps.contains(&0) {
        bail!(
            "iptables at {}: the measured service's endpoints were not all reached \
             (packets per endpoint jump: {jumps:?}):\n{text}",
            label(t.count)
        );
    }
    Ok(())
}

/// A metric name made at run time (metrics name themselves with `&'static str`).
pub(super) fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vips_are_distinct_and_in_the_benchmark_range() {
        let all: std::collections::BTreeSet<Ipv4Addr> = (0..MOST).map(vip).collect();
        assert_eq!(all.len(), MOST);
        for v in &all {
            assert_eq!(v.octets()[..2], [198, 19]);
            assert!(v.octets()[3] >= 10 && v.octets()[3] < 210, "{v}");
        }
    }

    #[test]
    fn kube_rules_have_kube_proxys_shape() {
        let rules = kube_rules(2, false);
        let svc = svc_chain(1);
        assert!(svc.starts_with("KUBE-SVC-") && svc.len() == 25, "{svc}");
        assert!(rules.contains(&format!(
            "-A KUBE-SERVICES -d 198.19.0.11/32 -p tcp -m comment --comment \
             \"default/svc-1:http cluster IP\" -m tcp --dport 80 -j {svc}\n"
        )));
        let jumps: Vec<&str> = rules
            .lines()
            .filter(|l| l.starts_with(&format!("-A {svc} -m comment")))
            .collect();
        assert_eq!(jumps.len(), 3);
        assert!(jumps[0].contains("--probability 0.3333333333 -j KUBE-SEP-"));
        assert!(jumps[1].contains("--probability 0.5000000000 -j KUBE-SEP-"));
        assert!(!jumps[2].contains("statistic"));
        let sep = sep_chain(1, SERVERS[2]);
        assert!(rules.contains(&format!(
            "-A {sep} -p tcp -m comment --comment \"default/svc-1:http\" -m tcp -j DNAT \
             --to-destination 198.18.10.5:80\n"
        )));
        // Every chain used is declared, once.
        for name in [svc.as_str(), sep.as_str()] {
            assert_eq!(rules.matches(&format!(":{name} - [0:0]")).count(), 1);
        }
        // KUBE-SERVICES: the services' rules, then the nodeports rule last.
        let services: Vec<&str> = rules
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES"))
            .collect();
        assert_eq!(services.len(), 3);
        assert!(services[2].contains("KUBE-NODEPORTS"));
    }

    #[test]
    fn a_change_rewrites_kube_services_and_one_service() {
        let count = 3;
        let change = kube_change(count, true);
        let (svc, gone, new) = (
            svc_chain(count - 1),
            sep_chain(count - 1, SERVERS[2]),
            sep_chain(count - 1, SPARE),
        );
        assert!(change.contains(&format!(":{svc} - [0:0]\n")));
        assert!(change.contains(&format!(":{new} - [0:0]\n")));
        assert!(change.contains(&format!(":{gone} - [0:0]\n")));
        assert!(change.contains(&format!("-X {gone}\n")));
        assert!(change.contains(&format!("--to-destination {SPARE}:80")));
        // The kept endpoints' chains are left alone; other services' chains too.
        let kept = sep_chain(count - 1, SERVERS[0]);
        assert!(change.contains(&format!("-j {kept}\n")));
        assert!(!change.contains(&format!(":{kept} ")) && !change.contains(&format!("-A {kept} ")));
        let other = svc_chain(0);
        assert!(
            !change.contains(&format!(":{other} ")) && !change.contains(&format!("-A {other} "))
        );
        assert_eq!(
            change
                .lines()
                .filter(|l| l.starts_with("-A KUBE-SERVICES -d"))
                .count(),
            count
        );
        // And back.
        let back = kube_change(count, false);
        assert!(back.contains(&format!("-X {new}\n")));
        assert!(back.contains(&format!(":{gone} - [0:0]\n")));
    }

    #[test]
    fn netbpf_services_name_their_backends() {
        let text = netbpf_services(2, true);
        assert!(text.contains(
            "name = \"svc-0\"\nvip = \"198.19.0.10\"\nport = 80\nscheduler = \"random\"\n\
             backends = [{ container = \"s1\" }, { container = \"s2\" }, { container = \"s3\" }]"
        ));
        assert!(text.contains(
            "backends = [{ container = \"s1\" }, { container = \"s2\" }, { address = \
             \"198.18.10.6\" }]"
        ));
    }
}
