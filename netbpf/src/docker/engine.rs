//! Questions to the Docker Engine API that the plugin protocol leaves open: the names
//! Docker gave a network and a container, and the container's labels (services). Asked
//! while Docker waits in a Join: only calls that take none of the locks a starting
//! container holds (network inspect, the container list's snapshot).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use super::http;

/// How long one question may take (Docker answers these in milliseconds).
const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub struct Engine {
    socket: PathBuf,
}

/// A network as Docker describes it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInfo {
    pub name: String,
    /// Keyed by container id (or `ep-<endpoint id>` before the container joined).
    #[serde(default)]
    pub containers: BTreeMap<String, EndpointInfo>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInfo {
    /// The container's name (the endpoint is named after it).
    pub name: String,
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
}

/// A container as the list shows it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInfo {
    pub id: String,
    /// With Docker's leading `/`.
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

impl Engine {
    pub fn new(socket: &Path) -> Engine {
        Engine {
            socket: socket.to_owned(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<Option<T>, String> {
        let (status, body) = http::get(&self.socket, path, TIMEOUT)
            .map_err(|e| format!("Docker API {}: {e}", self.socket.display()))?;
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| format!("Docker API GET {path}: {e}")),
            404 => Ok(None),
            other => Err(format!(
                "Docker API GET {path}: status {other}: {}",
                String::from_utf8_lossy(&body).trim()
            )),
        }
    }

    /// A network by id; `None` if Docker does not know it (any more).
    pub fn network(&self, id: &str) -> Result<Option<NetworkInfo>, String> {
        if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("{id:?} is not a Docker id"));
        }
        self.get(&format!("/networks/{id}"))
    }

    /// The container named `name` (without the leading `/`), from the list (which reads a
    /// snapshot, so it answers while that container is being started).
    pub fn container_named(&self, name: &str) -> Result<Option<ContainerInfo>, String> {
        let pattern = format!("^/{}$", name.replace('.', "\\."));
        let filters = serde_json::json!({ "name": [pattern] }).to_string();
        let path = format!(
            "/containers/json?all=1&filters={}",
            percent_encode(&filters)
        );
        let list: Option<Vec<ContainerInfo>> = self.get(&path)?;
        Ok(list.and_then(|l| {
            l.into_iter()
                .find(|c| c.names.iter().any(|n| n.trim_start_matches('/') == name))
        }))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_encoded() {
        assert_eq!(
            percent_encode(r#"{"name":["^/a\.b$"]}"#),
            "%7B%22name%22%3A%5B%22%5E%2Fa%5C.b%24%22%5D%7D"
        );
    }

    #[test]
    fn network_inspect_during_a_join_names_the_endpoint() {
        // What Docker 20.10 answered while it waited in Join (the key is `ep-<id>` until
        // the join is stored).
        let body = r#"{"Name":"testnet","Id":"d42d","Containers":{"ep-bb14":{"Name":"web3","EndpointID":"bb14","MacAddress":"02:42:c6:12:32:02","IPv4Address":"198.18.50.2/24","IPv6Address":""}},"Options":{"netbpf.icc":"false"},"Labels":{}}"#;
        let info: NetworkInfo = serde_json::from_str(body).expect("parses");
        assert_eq!(info.name, "testnet");
        let ep = info.containers.values().next().expect("one endpoint");
        assert_eq!(
            (ep.name.as_str(), ep.endpoint_id.as_str()),
            ("web3", "bb14")
        );
    }
}
