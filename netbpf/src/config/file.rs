//! The definitions file as written (TOML). Unknown fields are errors; values stay strings
//! here so that validation can say exactly which one is wrong and why.

use std::path::PathBuf;

use serde::Deserialize;

use super::Problem;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionsFile {
    #[serde(default)]
    pub host: HostDef,
    #[serde(default)]
    pub network: Vec<NetworkDef>,
    #[serde(default)]
    pub container: Vec<ContainerDef>,
    #[serde(default)]
    pub service: Vec<ServiceDef>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDef {
    /// The interface toward the outside (north-south).
    pub uplink: Option<String>,
    /// Where the uplink translates: "tc", "xdp", or "auto" (XDP on a physical NIC, tc on
    /// a virtual device such as a veth, where XDP costs more and loses partial checksums).
    pub uplink_mode: Option<String>,
    pub pin_dir: Option<PathBuf>,
    /// The cgroup (v2) of the host's processes: socket programs there let them reach
    /// published ports (127.0.0.1, localhost, host addresses) without a proxy.
    pub cgroup: Option<PathBuf>,
    /// Idle timeouts of translated flows.
    #[serde(default)]
    pub conntrack: ConntrackDef,
}

/// `[host.conntrack]`: how long a translated flow may stay idle, per protocol and state.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackDef {
    pub tcp_syn: Option<String>,
    pub tcp_established: Option<String>,
    pub tcp_closing: Option<String>,
    pub udp: Option<String>,
    pub icmp: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDef {
    pub name: String,
    pub subnet: String,
    pub gateway: Option<String>,
    pub icc: Option<bool>,
    pub internal: Option<bool>,
    pub masquerade: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerDef {
    pub name: String,
    /// A network namespace path...
    pub netns: Option<PathBuf>,
    /// ...or the PID of a process in it.
    pub pid: Option<u32>,
    /// A network name, or "none" (loopback only).
    pub network: String,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub ifname: Option<String>,
    /// Published ports, Docker's `-p` grammar.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Like `-P`: publish every `expose` port on a free host port.
    #[serde(default)]
    pub publish_all: bool,
    #[serde(default)]
    pub expose: Vec<Expose>,
    /// Set by a source other than the file (the Docker driver): the veth is made in the
    /// host namespace and its container end handed to whoever moves it into `netns` and
    /// configures it there; `netns` is then not checked (it may not exist yet).
    #[serde(skip)]
    pub handover: bool,
}

/// A `[[service]]` entry: a virtual IP and port spread over backends (IPVS's virtual
/// service). Numbers stay wide here so that validation can say which one is out of range.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    pub name: String,
    pub vip: String,
    pub port: i64,
    /// "tcp" (the default) or "udp".
    pub protocol: Option<String>,
    /// rr | wrr | lc | wlc | sh | dh | mh | random (default wlc, as ipvsadm).
    pub scheduler: Option<String>,
    /// How long a client stays on its backend after its last new connection (ipvsadm -p).
    pub persistence: Option<String>,
    /// The part of the client's address that persistence keys on (ipvsadm -M).
    pub persistence_netmask: Option<String>,
    /// Also reachable from outside through the uplink.
    pub external: Option<bool>,
    pub health: Option<HealthDef>,
    #[serde(default)]
    pub backends: Vec<BackendDef>,
}

/// A service's health check, run by the agent against each backend.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthDef {
    /// "tcp" (connect) or "http" (GET `path`, expect status `expect`).
    pub kind: String,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub path: Option<String>,
    pub expect: Option<i64>,
}

/// One backend (IPVS's real server): a container by name, or an address in a network.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendDef {
    pub container: Option<String>,
    pub address: Option<String>,
    /// Default: the service's port.
    pub port: Option<i64>,
    /// Default 1; 0 drains (no new connections).
    pub weight: Option<i64>,
}

/// An `expose` entry: a TCP port number, or `"port[-end][/proto]"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Expose {
    Port(u16),
    Text(String),
}

/// The `[host] pin_dir` of a file, if it parses far enough to tell (validation reports
/// what is wrong with it).
pub fn pin_dir_of(path: &std::path::Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    parse(&text).ok()?.host.pin_dir
}

/// Parses the TOML; an error names its line and column, and the entry it is in.
pub fn parse(text: &str) -> Result<DefinitionsFile, Problem> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_col(text, span.start))
            .unwrap_or((1, 1));
        let place = match entry_at(text, line) {
            Some(entry) => format!("line {line}, column {column} ({entry})"),
            None => format!("line {line}, column {column}"),
        };
        Problem {
            place,
            field: None,
            message: e.message().trim().to_owned(),
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, str::len) + 1;
    (line, column)
}

/// The table a line belongs to: `[host]`, or `container #N` for the Nth `[[container]]`.
fn entry_at(text: &str, line: usize) -> Option<String> {
    let mut current = None;
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    for l in text.lines().take(line) {
        let l = l.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            let n = counts.entry(name.trim()).or_default();
            *n += 1;
            current = Some(format!("{} #{n}", name.trim()));
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = Some(format!("[{}]", name.trim()));
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_names_line_entry_and_field() {
        let text = "[[network]]\nname = \"a\"\nsubnet = \"198.18.10.0/24\"\n\n[[container]]\nname = \"x\"\nnetwork = \"a\"\ncolour = \"red\"\n";
        let problem = parse(text).expect_err("unknown field");
        assert_eq!(problem.place, "line 8, column 1 (container #1)");
        assert!(
            problem.message.contains("unknown field `colour`"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn defaults_are_empty() {
        let file = parse("").expect("empty file is valid");
        assert!(file.network.is_empty() && file.container.is_empty());
        assert!(file.host.uplink.is_none());
    }
}
