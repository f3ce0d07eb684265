//! The validated, resolved definitions: every address allocated, every MAC derived, every
//! network numbered. What the planner turns into kernel state.

use std::{net::Ipv4Addr, path::PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    pub uplink: Option<String>,
    pub uplink_mode: UplinkMode,
    pub pin_dir: Option<PathBuf>,
    /// The cgroup (v2) whose processes reach published ports through socket programs.
    pub cgroup: Option<PathBuf>,
    pub timeouts: Timeouts,
    pub networks: Vec<Network>,
    pub containers: Vec<Container>,
    pub services: Vec<Service>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// Stable across reloads; never 0.
    pub id: u32,
    pub name: String,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub icc: bool,
    pub internal: bool,
    pub masquerade: bool,
}

impl Network {
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix_len) == u32::from(self.subnet)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) | !mask(self.prefix_len))
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", self.subnet, self.prefix_len)
    }
}

pub fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    /// The container's network namespace (a path; `pid = N` resolves to /proc/N/ns/net).
    pub netns: PathBuf,
    /// `None` for `network = "none"`: loopback only, nothing to wire.
    pub attachment: Option<Attachment>,
    /// The veth's container end is handed over in the host namespace (named `ifname`)
    /// instead of being created in `netns` and configured there (the Docker driver).
    pub handover: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub network: String,
    pub network_id: u32,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The interface name inside the container.
    pub ifname: String,
    pub ports: Vec<Published>,
}

/// One published port, resolved: the host port chosen, ranges unrolled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// 0.0.0.0: every address of the host.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: super::ports::Proto,
}

/// Docker's derivation: 02:42 followed by the four address bytes.
pub fn mac_from_ip(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Idle timeouts of translated flows (the agent removes flows idle for longer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn: std::time::Duration,
    pub tcp_established: std::time::Duration,
    pub tcp_closing: std::time::Duration,
    pub udp: std::time::Duration,
    pub icmp: std::time::Duration,
}

impl Default for Timeouts {
    /// Close to Linux conntrack's: a half-open TCP flow 2 minutes, an established one 5
    /// days, a closing one 10 seconds, UDP 2 minutes, ICMP 30 seconds.
    fn default() -> Self {
        use std::time::Duration;
        Timeouts {
            tcp_syn: Duration::from_secs(120),
            tcp_established: Duration::from_secs(5 * 86400),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
        }
    }
}

/// Where the uplink's translation runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UplinkMode {
    Tc,
    Xdp,
    /// XDP on a physical NIC, tc on a virtual device.
    #[default]
    Auto,
}

/// A virtual service (IPVS's virtual server), resolved: ids given, backends' addresses
/// known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Stable across reloads (kept by VIP, port and protocol); 1..MAX_SERVICES.
    pub id: u32,
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: super::ports::Proto,
    pub scheduler: netbpf_common::service::Scheduler,
    /// Persistence timeout in whole seconds (0: none).
    pub persistence_secs: u32,
    pub persistence_mask: Ipv4Addr,
    pub external: bool,
    pub health: Option<HealthCheck>,
    /// In the order written (rr, wrr and the least-connection tie-break follow it).
    pub backends: Vec<ServiceBackend>,
}

impl Service {
    /// `TCP 198.18.200.10:80`, as ipvsadm names a service.
    pub fn label(&self) -> String {
        format!(
            "{} {}:{}",
            self.proto.to_string().to_uppercase(),
            self.vip,
            self.port
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceBackend {
    /// Stable across reloads (kept by service, address and port); 1..MAX_BACKENDS.
    pub id: u32,
    pub addr: Ipv4Addr,
    pub port: u16,
    /// IPVS weight; 0 drains.
    pub weight: u16,
    /// The container it was named by, if it was.
    pub container: Option<String>,
}

/// How the agent checks a service's backends (keepalived's checkers, HAProxy's rise/fall).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: HealthKind,
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    /// Consecutive successes that bring a backend back.
    pub rise: u32,
    /// Consecutive failures that take it out.
    pub fall: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthKind {
    /// A TCP connection to the backend's port opens.
    Tcp,
    /// `GET path` answers with status `expect`.
    Http { path: String, expect: u16 },
}

impl HealthKind {
    pub fn name(&self) -> &'static str {
        match self {
            HealthKind::Tcp => "tcp",
            HealthKind::Http { .. } => "http",
        }
    }
}
