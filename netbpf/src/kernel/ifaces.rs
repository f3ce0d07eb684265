//! Interfaces and addresses, through iproute2: the veth pairs that connect containers, the
//! addresses and routes on both ends. Commands for a container's namespace run in it (the
//! child enters it before exec); everything else runs in the namespace netbpf runs in.

use std::{
    fs::File,
    io,
    net::Ipv4Addr,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::Path,
    process::Command,
};

use serde::Deserialize;

use crate::{Error, Result};

/// The alias netbpf gives the host end of every veth it makes: `netbpf:<container>`.
/// `down` and the reconciler find their veths by it.
pub const ALIAS_PREFIX: &str = "netbpf:";

/// A host-side veth netbpf made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedVeth {
    pub ifname: String,
    pub ifindex: u32,
    pub container: String,
}

#[derive(Deserialize)]
struct IpLink {
    ifindex: u32,
    ifname: String,
    #[serde(default)]
    ifalias: Option<String>,
    #[serde(default)]
    address: Option<String>,
}

/// Runs `ip ARGS...`, in `netns` if given; an error quotes the command and its stderr.
fn ip(netns: Option<&Path>, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_in(&mut cmd, netns)
}

fn run_in(cmd: &mut Command, netns: Option<&Path>) -> Result<String> {
    let ns_file = netns
        .map(|path| {
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))
        })
        .transpose()?;
    if let Some(file) = &ns_file {
        let fd = file.as_raw_fd();
        // SAFETY: between fork and exec the child only calls setns, which is
        // async-signal-safe; the fd stays open in the parent until the child has run.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let described = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .output()
        .map_err(|e| Error::io(format!("running {described}"), e))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: described,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn links(netns: Option<&Path>) -> Result<Vec<IpLink>> {
    let json = ip(netns, &["-j", "link", "show"])?;
    serde_json::from_str(&json)
        .map_err(|e| Error::io("parsing `ip -j link show`", io::Error::other(e)))
}

/// The veths netbpf made in this namespace, found by their alias.
pub fn owned_veths() -> Result<Vec<OwnedVeth>> {
    Ok(links(None)?
        .into_iter()
        .filter_map(|l| {
            let container = l.ifalias?.strip_prefix(ALIAS_PREFIX)?.to_owned();
            Some(OwnedVeth {
                ifname: l.ifname,
                ifindex: l.ifindex,
                container,
            })
        })
        .collect())
}

/// The host end's name for a container: `nb` and a hash of the container's name, so it
/// fits the kernel's 15 characters whatever the name.
pub fn host_ifname(container: &str) -> String {
    format!("nb{:08x}", crate::plan::fnv1a(container.as_bytes()))
}

/// What wiring one container needs to know.
#[derive(Clone, Debug)]
pub struct VethSpec<'a> {
    pub container: &'a str,
    pub host_ifname: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: &'a str,
    pub gateway: Ipv4Addr,
    /// No default route (internal networks).
    pub internal: bool,
    /// The container end stays in this namespace, named `ifname`, for someone else (the
    /// Docker engine) to move into `netns` and configure there.
    pub handover: bool,
}

/// Creates the veth pair, the container end born in the container's namespace with its
/// name and MAC (or, handed over, left here); both ends stay down. Returns the host end's
/// ifindex and MAC.
pub fn create_veth(spec: &VethSpec<'_>) -> Result<(u32, [u8; 6])> {
    let netns = spec.netns.to_str().ok_or_else(|| {
        Error::io(
            format!("namespace path {}", spec.netns.display()),
            io::Error::new(io::ErrorKind::InvalidInput, "not UTF-8"),
        )
    })?;
    let mut args = vec![
        "link",
        "add",
        spec.host_ifname,
        "type",
        "veth",
        "peer",
        "name",
        spec.ifname,
        "address",
        spec.mac,
    ];
    if !spec.handover {
        args.extend(["netns", netns]);
    }
    ip(None, &args)?;
    let result = alias_and_address(spec);
    if result.is_err() {
        // Without its alias nobody would ever find this veth again.
        let _ = delete_veth(spec.host_ifname);
    }
    result
}

fn alias_and_address(spec: &VethSpec<'_>) -> Result<(u32, [u8; 6])> {
    let alias = format!("{ALIAS_PREFIX}{}", spec.container);
    ip(None, &["link", "set", spec.host_ifname, "alias", &alias])?;
    let link = links(None)?
        .into_iter()
        .find(|l| l.ifname == spec.host_ifname)
        .ok_or_else(|| {
            Error::io(
                format!("veth {}", spec.host_ifname),
                io::ErrorKind::NotFound.into(),
            )
        })?;
    let mac = link.address.as_deref().and_then(parse_mac).ok_or_else(|| {
        Error::io(
            format!("MAC of {}", spec.host_ifname),
            io::ErrorKind::InvalidData.into(),
        )
    })?;
    Ok((link.ifindex, mac))
}

/// Brings both ends up: the host end with the gateway address (so the host answers for
/// it) and a route to the container; the container end with its address and a default
/// route via the gateway. IPv6 is off on both before they go up, so no router or neighbour
/// solicitation ever reaches the datapath.
pub fn bring_up(spec: &VethSpec<'_>) -> Result<()> {
    let host = spec.host_ifname;
    disable_ipv6(None, host)?;
    ip(
        None,
        &["addr", "add", &format!("{}/32", spec.gateway), "dev", host],
    )?;
    ip(None, &["link", "set", host, "up"])?;
    let ip_str = spec.ip.to_string();
    ip(
        None,
        &[
            "route",
            "replace",
            &format!("{ip_str}/32"),
            "dev",
            host,
            "src",
            &spec.gateway.to_string(),
        ],
    )?;
    ip(
        None,
        &[
            "neigh",
            "replace",
            &ip_str,
            "lladdr",
            spec.mac,
            "dev",
            host,
            "nud",
            "permanent",
        ],
    )?;

    if spec.handover {
        // Its new owner addresses it and brings it up; GRO (see below) stays set when the
        // device moves.
        let mut gro = Command::new("ethtool");
        gro.args(["-K", spec.ifname, "gro", "on"]);
        let _ = run_in(&mut gro, None);
        return Ok(());
    }
    let ns = Some(spec.netns);
    disable_ipv6(ns, spec.ifname)?;
    ip(
        ns,
        &[
            "addr",
            "add",
            &format!("{ip_str}/{}", spec.prefix_len),
            "dev",
            spec.ifname,
        ],
    )?;
    ip(ns, &["link", "set", spec.ifname, "up"])?;
    // XDP_REDIRECT into a veth is dropped unless the receiving end has NAPI: GRO gives it
    // one (what the XDP uplink path needs). Best effort: without ethtool, tc mode works.
    let mut gro = Command::new("ethtool");
    gro.args(["-K", spec.ifname, "gro", "on"]);
    let _ = run_in(&mut gro, ns);
    ip(ns, &["link", "set", "lo", "up"])?;
    if !spec.internal {
        ip(
            ns,
            &[
                "route",
                "replace",
                "default",
                "via",
                &spec.gateway.to_string(),
                "dev",
                spec.ifname,
            ],
        )?;
    }
    Ok(())
}

fn disable_ipv6(netns: Option<&Path>, ifname: &str) -> Result<()> {
    let mut cmd = Command::new("sysctl");
    cmd.args([
        "-q",
        "-w",
        &format!("net.ipv6.conf.{ifname}.disable_ipv6=1"),
    ]);
    match run_in(&mut cmd, netns) {
        // A kernel without IPv6 has nothing to disable.
        Err(Error::Command { stderr, .. }) if stderr.contains("No such file") => Ok(()),
        other => other.map(drop),
    }
}

/// Deletes a veth pair by its host end (the container end goes with it).
pub fn delete_veth(host_ifname: &str) -> Result<()> {
    match ip(None, &["link", "del", host_ifname]) {
        Err(Error::Command { stderr, .. }) if stderr.contains("Cannot find device") => Ok(()),
        other => other.map(drop),
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The IPv4 addresses of this namespace's interfaces (where a port can be published).
pub fn host_addresses() -> Result<Vec<Ipv4Addr>> {
    addresses(None)
}

/// The IPv4 addresses of one interface, primary first.
pub fn addresses_of(ifname: &str) -> Result<Vec<Ipv4Addr>> {
    addresses(Some(ifname))
}

fn addresses(dev: Option<&str>) -> Result<Vec<Ipv4Addr>> {
    #[derive(Deserialize)]
    struct Link {
        #[serde(default)]
        addr_info: Vec<AddrInfo>,
    }
    #[derive(Deserialize)]
    struct AddrInfo {
        family: String,
        local: String,
    }
    let mut args = vec!["-j", "-4", "addr", "show"];
    if let Some(dev) = dev {
        args.extend(["dev", dev]);
    }
    let json = ip(None, &args)?;
    let links: Vec<Link> = serde_json::from_str(&json)
        .map_err(|e| Error::io("parsing `ip -j addr show`", io::Error::other(e)))?;
    Ok(links
        .iter()
        .flat_map(|l| &l.addr_info)
        .filter(|a| a.family == "inet")
        .filter_map(|a| a.local.parse().ok())
        .collect())
}

/// The kernel's ip_local_port_range in this namespace.
pub fn local_port_range() -> Result<(u16, u16)> {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(low)), Some(Ok(high))) if low <= high => Ok((low, high)),
        _ => Err(Error::io(
            format!("parsing {path}"),
            io::ErrorKind::InvalidData.into(),
        )),
    }
}

/// The index of an interface of this namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let unknown = || Error::UnknownInterface {
        iface: name.to_owned(),
        netns: "the host namespace".to_owned(),
    };
    let c_name = std::ffi::CString::new(name).map_err(|_| unknown())?;
    // SAFETY: a NUL-terminated name; 0 means "no such interface".
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(unknown()),
        index => Ok(index),
    }
}

/// The cookie of this thread's network namespace (SO_NETNS_COOKIE, Linux 5.14).
pub fn netns_cookie() -> Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: a new socket we own, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io(
            "socket for the netns cookie",
            io::Error::last_os_error(),
        ));
    }
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: a valid fd and an out buffer of the size given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    let error = io::Error::last_os_error();
    // SAFETY: the fd is ours.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(Error::io("reading the netns cookie", error));
    }
    Ok(cookie)
}

/// Whether an interface is a virtual device (veth, bridge...: it has a link kind) rather
/// than a physical NIC.
pub fn is_virtual(name: &str) -> Result<bool> {
    let json = ip(None, &["-j", "-d", "link", "show", "dev", name])?;
    let links: Vec<serde_json::Value> = serde_json::from_str(&json)
        .map_err(|e| Error::io("parsing `ip -j -d link show`", io::Error::other(e)))?;
    Ok(links
        .first()
        .is_some_and(|l| l["linkinfo"]["info_kind"].is_string()))
}
