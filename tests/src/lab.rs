//! Lab topologies. The "host" is itself a namespace: nothing a lab does touches the
//! machine's own network namespace, and its addresses come from 198.18.0.0/15.
//!
//! ```text
//!   outside [eth0 198.18.0.2] ===veth=== [up0 198.18.0.1] host     containers: c0, c1, ...
//! ```

use std::{io, net::Ipv4Addr};

use crate::{netns::Netns, packet::Mac, unique_prefix};

/// The host's uplink interface (toward the outside namespace).
pub const HOST_UPLINK_IF: &str = "up0";
/// The outside client's interface.
pub const OUTSIDE_IF: &str = "eth0";
pub const HOST_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const UPLINK_PREFIX_LEN: u8 = 24;
pub const HOST_UPLINK_MAC: Mac = Mac([0x02, 0x00, 0xc6, 0x12, 0x00, 0x01]);
pub const OUTSIDE_MAC: Mac = Mac([0x02, 0x00, 0xc6, 0x12, 0x00, 0x02]);

/// A host, an outside client and `n` bare container namespaces (loopback only; whoever
/// wires containers creates their veths). Everything is removed when the lab drops.
#[derive(Debug)]
pub struct Lab {
    pub prefix: String,
    pub host: Netns,
    pub outside: Netns,
    pub containers: Vec<Netns>,
}

impl Lab {
    /// Builds the lab under a fresh `<base>-<pid>-<n>` prefix. The uplink has static
    /// neighbour entries on both sides, so no ARP runs: counters see only test traffic.
    pub fn new(base: &str, containers: usize) -> io::Result<Lab> {
        let prefix = unique_prefix(base);
        let host = Netns::create(&format!("{prefix}-host"))?;
        let outside = Netns::create(&format!("{prefix}-out"))?;
        let containers = (0..containers)
            .map(|i| Netns::create(&format!("{prefix}-c{i}")))
            .collect::<io::Result<Vec<_>>>()?;
        let lab = Lab {
            prefix,
            host,
            outside,
            containers,
        };
        veth_pair(
            (&lab.host, HOST_UPLINK_IF, HOST_UPLINK_MAC),
            (&lab.outside, OUTSIDE_IF, OUTSIDE_MAC),
        )?;
        for (ns, ifname, ip, peer_ip, peer_mac) in [
            (
                &lab.host,
                HOST_UPLINK_IF,
                HOST_UPLINK_IP,
                OUTSIDE_IP,
                OUTSIDE_MAC,
            ),
            (
                &lab.outside,
                OUTSIDE_IF,
                OUTSIDE_IP,
                HOST_UPLINK_IP,
                HOST_UPLINK_MAC,
            ),
        ] {
            ns.ip(&[
                "addr",
                "add",
                &format!("{ip}/{UPLINK_PREFIX_LEN}"),
                "dev",
                ifname,
            ])?;
            ns.ip(&["link", "set", ifname, "up"])?;
            ns.ip(&[
                "neigh",
                "replace",
                &peer_ip.to_string(),
                "lladdr",
                &peer_mac.to_string(),
                "dev",
                ifname,
                "nud",
                "permanent",
            ])?;
        }
        Ok(lab)
    }
}

/// Creates a veth pair whose ends are born inside their namespaces (never in the
/// machine's own), with fixed MACs, both down.
pub fn veth_pair(a: (&Netns, &str, Mac), b: (&Netns, &str, Mac)) -> io::Result<()> {
    let (a_ns, a_if, a_mac) = a;
    let (b_ns, b_if, b_mac) = b;
    a_ns.ip(&[
        "link",
        "add",
        a_if,
        "address",
        &a_mac.to_string(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "address",
        &b_mac.to_string(),
        "netns",
        b_ns.name(),
    ])
}
