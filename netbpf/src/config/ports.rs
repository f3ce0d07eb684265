//! Docker's `-p` grammar: `[host_ip:][host_port[-end]:]container_port[-end][/tcp|/udp]`,
//! and `expose` entries (`port[-end][/proto]`). Parsing only; checks against the host and
//! the other containers are in `validate`.

use std::{fmt, net::Ipv4Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One `ports` entry as written, ranges unrolled later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// `None`: every host address (0.0.0.0).
    pub host_ip: Option<Ipv4Addr>,
    /// `None`: a free port chosen by netbpf.
    pub host_ports: Option<(u16, u16)>,
    pub container_ports: (u16, u16),
    pub proto: Proto,
}

impl PortSpec {
    /// (host port or None, container port) for every port of the entry.
    pub fn pairs(&self) -> Vec<(Option<u16>, u16)> {
        let (first, last) = self.container_ports;
        (first..=last)
            .enumerate()
            .map(|(i, port)| (self.host_ports.map(|(h, _)| h + i as u16), port))
            .collect()
    }
}

fn port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{text:?} is not a port (1-65535)")),
        Ok(p) => Ok(p),
    }
}

fn range(text: &str) -> Result<(u16, u16), String> {
    match text.split_once('-') {
        None => port(text).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(format!("range {text:?} ends before it starts"));
            }
            Ok((a, b))
        }
    }
}

fn proto(text: Option<&str>) -> Result<Proto, String> {
    match text {
        None | Some("tcp") => Ok(Proto::Tcp),
        Some("udp") => Ok(Proto::Udp),
        Some(other) => Err(format!("protocol {other:?} is neither tcp nor udp")),
    }
}

/// Parses one `ports` entry.
pub fn parse_port_spec(text: &str) -> Result<PortSpec, String> {
    let (body, proto_text) = match text.split_once('/') {
        Some((body, p)) => (body, Some(p)),
        None => (text, None),
    };
    let proto = proto(proto_text)?;
    if body.starts_with('[') {
        return Err("IPv6 host addresses are not supported yet".to_owned());
    }
    let parts: Vec<&str> = body.split(':').collect();
    let (host_ip, host_ports, container) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [ip, h, c] => (Some(*ip), (!h.is_empty()).then_some(*h), *c),
        _ => {
            return Err(
                "expected [host_ip:][host_port[-end]:]container_port[-end][/tcp|/udp]".to_owned(),
            );
        }
    };
    let host_ip = host_ip
        .map(|ip| {
            ip.parse::<Ipv4Addr>()
                .map_err(|_| format!("{ip:?} is not an IPv4 address"))
        })
        .transpose()?
        .filter(|ip| !ip.is_unspecified());
    let container_ports = range(container)?;
    let host_ports = host_ports.map(range).transpose()?;
    if let Some((a, b)) = host_ports {
        let (c, d) = container_ports;
        if b - a != d - c {
            return Err(format!(
                "range length mismatch: {} host port(s) for {} container port(s)",
                b - a + 1,
                d - c + 1
            ));
        }
    }
    Ok(PortSpec {
        host_ip,
        host_ports,
        container_ports,
        proto,
    })
}

/// Parses one `expose` entry: `port[-end][/proto]` (a bare number is a TCP port).
pub fn parse_expose(text: &str) -> Result<((u16, u16), Proto), String> {
    let (body, p) = match text.split_once('/') {
        Some((body, p)) => (body, Some(p)),
        None => (text, None),
    };
    Ok((range(body)?, proto(p)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_forms() {
        let spec = |t: &str| parse_port_spec(t).expect(t);
        assert_eq!(
            spec("80"),
            PortSpec {
                host_ip: None,
                host_ports: None,
                container_ports: (80, 80),
                proto: Proto::Tcp
            }
        );
        assert_eq!(spec("8080:80").host_ports, Some((8080, 8080)));
        let s = spec("198.18.0.1:8443:443/tcp");
        assert_eq!(
            (s.host_ip, s.host_ports, s.container_ports),
            (
                Some(Ipv4Addr::new(198, 18, 0, 1)),
                Some((8443, 8443)),
                (443, 443)
            )
        );
        let s = spec("127.0.0.1:5353:53/udp");
        assert_eq!(
            (s.host_ip, s.proto),
            (Some(Ipv4Addr::LOCALHOST), Proto::Udp)
        );
        let s = spec("9000-9002:9000-9002");
        assert_eq!(
            s.pairs(),
            vec![(Some(9000), 9000), (Some(9001), 9001), (Some(9002), 9002)]
        );
        let s = spec("127.0.0.1::80");
        assert_eq!((s.host_ip, s.host_ports), (Some(Ipv4Addr::LOCALHOST), None));
        assert_eq!(spec("0.0.0.0:8080:80").host_ip, None);
        assert_eq!(spec("80-81").pairs(), vec![(None, 80), (None, 81)]);
    }

    #[test]
    fn malformed() {
        for (text, why) in [
            ("", "is not a port"),
            ("0", "is not a port"),
            ("70000", "is not a port"),
            ("8080:80/sctp", "neither tcp nor udp"),
            ("1.2.3:8080:80", "is not an IPv4 address"),
            (
                "9000-9002:9000",
                "range length mismatch: 3 host port(s) for 1 container port(s)",
            ),
            ("90-80", "ends before it starts"),
            ("a:b:c:d", "expected [host_ip:]"),
            ("[::1]:80:80", "IPv6"),
        ] {
            let err = parse_port_spec(text).expect_err(text);
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn expose_entries() {
        assert_eq!(parse_expose("80").expect("80"), ((80, 80), Proto::Tcp));
        assert_eq!(
            parse_expose("53/udp").expect("53/udp"),
            ((53, 53), Proto::Udp)
        );
        assert!(parse_expose("x/udp").is_err());
    }
}
