//! libnetwork's remote network driver protocol, as Docker Engine 20.10 speaks it: the JSON
//! bodies of `POST /Plugin.Activate` and `POST /NetworkDriver.*`. The external contract
//! only; what the options mean to netbpf is decided in [`super::driver`].

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ports::Proto;

/// The content type Docker's plugin client expects in answers.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// Option keys Docker sets.
pub const OPT_GENERIC: &str = "com.docker.network.generic";
pub const OPT_INTERNAL: &str = "com.docker.network.internal";
pub const OPT_ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
pub const OPT_PORTMAP: &str = "com.docker.network.portmap";
pub const OPT_EXPOSED: &str = "com.docker.network.endpoint.exposedports";

/// Options of a call: free-form JSON keyed by option name.
pub type Options = BTreeMap<String, Value>;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivateResponse {
    pub implements: Vec<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapabilitiesResponse {
    /// "local": networks exist on this host only.
    pub scope: &'static str,
    /// The same, for Docker's connectivity checks.
    pub connectivity_scope: &'static str,
}

/// One IPv4 (or IPv6) pool Docker's IPAM gave a network.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    #[serde(default)]
    pub address_space: String,
    /// The subnet, as CIDR.
    #[serde(default)]
    pub pool: String,
    /// The gateway, as CIDR (address/prefix of the pool).
    #[serde(default)]
    pub gateway: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(default)]
    pub options: Options,
    #[serde(rename = "IPv4Data", default)]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", default)]
    pub ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// The addresses of an endpoint: what Docker's IPAM gave (as CIDR) and, if the user asked
/// for one, the MAC.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInterface {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(default)]
    pub interface: Option<EndpointInterface>,
    #[serde(default)]
    pub options: Options,
}

/// Only the fields Docker left empty: an address echoed back is an error to Docker.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

/// DeleteEndpoint, EndpointOperInfo, Leave, RevokeExternalConnectivity.
#[derive(Clone, Debug, Deserialize)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInfoResponse {
    pub value: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The sandbox's network namespace (a bind mount Docker makes, maybe only later).
    #[serde(default)]
    pub sandbox_key: String,
    #[serde(default)]
    pub options: Options,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    /// The interface, in Docker's namespace, that Docker moves into the sandbox.
    pub src_name: String,
    /// Docker names it this prefix and a number there (`eth0`).
    pub dst_prefix: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    /// The default route's next hop; empty for internal networks (no default route).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    pub disable_gateway_service: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExternalConnectivityRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(default)]
    pub options: Options,
}

/// Every answer: empty on success, `Err` on failure (Docker shows it as `remote: ...`).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorResponse {
    pub err: String,
}

/// One `-p`/`-P` binding (`com.docker.network.portmap`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    /// IP protocol number: 6 TCP, 17 UDP, 132 SCTP.
    pub proto: u8,
    /// The container port.
    pub port: u16,
    /// Empty or 0.0.0.0: every host address; `::` and other IPv6 addresses are skipped.
    #[serde(rename = "HostIP", default)]
    pub host_ip: String,
    /// 0: netbpf picks one.
    #[serde(default)]
    pub host_port: u16,
    /// Above `host_port`: any one free port of the range.
    #[serde(default)]
    pub host_port_end: u16,
}

/// What a published port asks for, in netbpf's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedPort {
    /// `None`: every host address.
    pub host_ip: Option<Ipv4Addr>,
    /// `(first, last)`: one free port of the range; `None`: any free port.
    pub host_ports: Option<(u16, u16)>,
    pub container_port: u16,
    pub proto: Proto,
}

/// The IPv4 bindings of a `com.docker.network.portmap` option. Bindings on an IPv6 host
/// address are skipped (netbpf is IPv4 only); an unknown protocol or a bad address is an
/// error that names the binding.
pub fn port_bindings(options: &Options) -> Result<Vec<WantedPort>, String> {
    let Some(value) = options.get(OPT_PORTMAP) else {
        return Ok(Vec::new());
    };
    if value.is_null() {
        return Ok(Vec::new());
    }
    let bindings: Vec<PortBinding> = serde_json::from_value(value.clone())
        .map_err(|e| format!("{OPT_PORTMAP}: not a list of port bindings ({e})"))?;
    let mut out = Vec::new();
    for b in bindings {
        let what = format!("port {}/{}", b.port, b.proto);
        let proto = Proto::from_number(b.proto)
            .ok_or_else(|| format!("{what}: protocol {} is neither tcp nor udp", b.proto))?;
        let what = format!("port {}/{proto}", b.port);
        let host_ip = match b.host_ip.as_str() {
            "" => None,
            text if text.contains(':') => continue,
            text => match text.parse::<Ipv4Addr>() {
                Ok(ip) if ip.is_unspecified() => None,
                Ok(ip) => Some(ip),
                Err(_) => return Err(format!("{what}: host address {text:?} is not IPv4")),
            },
        };
        if b.port == 0 {
            return Err(format!("{what}: no container port"));
        }
        let host_ports = match (b.host_port, b.host_port_end) {
            (0, _) => None,
            (first, last) if last > first => Some((first, last)),
            (port, _) => Some((port, port)),
        };
        let wanted = WantedPort {
            host_ip,
            host_ports,
            container_port: b.port,
            proto,
        };
        if !out.contains(&wanted) {
            out.push(wanted);
        }
    }
    Ok(out)
}

/// `-o key=value` options of a network (`com.docker.network.generic`), as strings.
pub fn generic_options(options: &Options) -> Result<BTreeMap<String, String>, String> {
    let Some(value) = options.get(OPT_GENERIC) else {
        return Ok(BTreeMap::new());
    };
    let Some(map) = value.as_object() else {
        return Ok(BTreeMap::new());
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Bool(b) => Ok((k.clone(), b.to_string())),
            Value::Number(n) => Ok((k.clone(), n.to_string())),
            other => Err(format!("option {k}: {other} is not a plain value")),
        })
        .collect()
}

/// A boolean option Docker sets itself (`com.docker.network.internal`).
pub fn flag(options: &Options, key: &str) -> bool {
    match options.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_endpoint_as_docker_20_10_sends_it() {
        let body = r#"{"NetworkID":"d42d","EndpointID":"e7fa","Interface":{"Address":"198.18.50.2/24","AddressIPv6":"","MacAddress":""},"Options":{"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":90},{"Proto":6,"Port":80},{"Proto":17,"Port":53}],"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080},{"Proto":17,"IP":"","Port":53,"HostIP":"","HostPort":0,"HostPortEnd":0},{"Proto":6,"IP":"","Port":80,"HostIP":"::","HostPort":8080,"HostPortEnd":8080}]}}"#;
        let req: CreateEndpointRequest = serde_json::from_str(body).expect("parses");
        assert_eq!(req.network_id, "d42d");
        assert_eq!(req.interface.expect("interface").address, "198.18.50.2/24");
        let ports = port_bindings(&req.options).expect("valid bindings");
        assert_eq!(
            ports,
            vec![
                WantedPort {
                    host_ip: None,
                    host_ports: Some((8080, 8080)),
                    container_port: 80,
                    proto: Proto::Tcp
                },
                WantedPort {
                    host_ip: None,
                    host_ports: None,
                    container_port: 53,
                    proto: Proto::Udp
                },
            ],
            "the IPv6 binding is skipped"
        );
    }

    #[test]
    fn bad_bindings_name_the_port() {
        let options: Options = serde_json::from_str(
            r#"{"com.docker.network.portmap":[{"Proto":132,"Port":80,"HostPort":80}]}"#,
        )
        .expect("parses");
        let err = port_bindings(&options).expect_err("SCTP is not supported");
        assert_eq!(err, "port 80/132: protocol 132 is neither tcp nor udp");
    }

    #[test]
    fn a_range_of_host_ports_asks_for_one_of_them() {
        let options: Options = serde_json::from_str(
            r#"{"com.docker.network.portmap":[{"Proto":17,"Port":53,"HostIP":"198.18.0.1","HostPort":8000,"HostPortEnd":8010}]}"#,
        )
        .expect("parses");
        let ports = port_bindings(&options).expect("valid");
        assert_eq!(ports[0].host_ports, Some((8000, 8010)));
        assert_eq!(ports[0].host_ip, Some(Ipv4Addr::new(198, 18, 0, 1)));
    }

    #[test]
    fn answers_have_docker_field_names() {
        let join = JoinResponse {
            interface_name: InterfaceName {
                src_name: "nbc0011".into(),
                dst_prefix: "eth".into(),
            },
            gateway: String::new(),
            disable_gateway_service: false,
        };
        assert_eq!(
            serde_json::to_string(&join).expect("serializes"),
            r#"{"InterfaceName":{"SrcName":"nbc0011","DstPrefix":"eth"},"DisableGatewayService":false}"#
        );
        let created = CreateEndpointResponse {
            interface: Some(EndpointInterface {
                mac_address: "02:42:c6:12:32:02".into(),
                ..Default::default()
            }),
        };
        assert_eq!(
            serde_json::to_string(&created).expect("serializes"),
            r#"{"Interface":{"MacAddress":"02:42:c6:12:32:02"}}"#
        );
    }

    #[test]
    fn generic_options_are_strings() {
        let options: Options = serde_json::from_str(
            r#"{"com.docker.network.generic":{"netbpf.icc":"false"},"com.docker.network.internal":true}"#,
        )
        .expect("parses");
        assert_eq!(
            generic_options(&options).expect("strings"),
            [("netbpf.icc".to_owned(), "false".to_owned())].into()
        );
        assert!(flag(&options, OPT_INTERNAL));
        assert!(!flag(&options, OPT_ENABLE_IPV6));
    }
}
