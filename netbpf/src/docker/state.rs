//! What the driver remembers of Docker's networks and endpoints, persisted as JSON (Docker
//! never replays CreateNetwork, and skips Leave and DeleteEndpoint when it dies): enough
//! to build the same model again after a restart of the agent or of Docker.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The layout version written; a file of another version is refused, not guessed at.
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    /// By Docker's network id.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkState>,
    /// By Docker's endpoint id.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointState>,
    /// Next creation number: networks and endpoints keep the order Docker made them in.
    #[serde(default)]
    pub next_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkState {
    pub seq: u64,
    /// The name in netbpf's model: Docker's name once known (fixed from then on), until
    /// then Docker's short id.
    pub name: String,
    /// Whether `name` is Docker's name.
    pub named: bool,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
    /// Seconds since the epoch (Docker stores a network only after the driver made it:
    /// until a while after this, the Engine API not knowing it means nothing).
    #[serde(default)]
    pub created: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointState {
    pub seq: u64,
    /// Docker's network id.
    pub network: String,
    pub ip: Ipv4Addr,
    /// xx:xx:xx:xx:xx:xx
    pub mac: String,
    /// Seconds since the epoch.
    pub created: u64,
    /// `-p`/`-P` as netbpf's port specs (`[ip:][host_port]:port/proto`), in effect while
    /// `published`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Set by Join, cleared by Leave.
    #[serde(default)]
    pub join: Option<Joined>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Joined {
    /// The container's name in netbpf's model (and `show`): Docker's container name, made
    /// unique.
    pub name: String,
    /// Docker's container id and name, when the Engine API told them.
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub container_name: Option<String>,
    /// The container's `netbpf.*` labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Docker's sandbox key (the container's network namespace).
    pub sandbox: PathBuf,
    /// The veth end handed to Docker, by the name it has in the host namespace.
    pub ifname: String,
    /// When Join was answered (seconds since the epoch).
    pub at: u64,
    /// The veth was seen after Join: from then on, its absence means the sandbox is gone.
    #[serde(default)]
    pub wired: bool,
    /// ProgramExternalConnectivity: the ports are published.
    #[serde(default)]
    pub published: bool,
}

impl State {
    /// Reads the state file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<State> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: VERSION,
                    ..State::default()
                });
            }
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let state: State = serde_json::from_str(&text).map_err(|e| {
            Error::io(
                format!("parsing {}", path.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        if state.version != VERSION {
            return Err(Error::io(
                format!("reading {}", path.display()),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "state version {} (this netbpf reads {VERSION})",
                        state.version
                    ),
                ),
            ));
        }
        Ok(state)
    }

    /// Writes the state file whole: a temporary file beside it, synced, renamed over it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| io("serializing", std::io::Error::other(e)))?;
        let mut file = std::fs::File::create(&tmp).map_err(|e| io("writing", e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|e| io("writing", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("replacing", e))
    }

    /// The next creation number.
    pub fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Joined endpoints in creation order.
    pub fn joined(&self) -> impl Iterator<Item = (&String, &EndpointState, &Joined)> {
        let mut list: Vec<_> = self
            .endpoints
            .iter()
            .filter_map(|(id, ep)| ep.join.as_ref().map(|j| (id, ep, j)))
            .collect();
        list.sort_by_key(|(_, ep, _)| ep.seq);
        list.into_iter()
    }
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_round_trip_through_its_file() {
        let dir = std::env::temp_dir().join(format!("netbpf-state-{}", std::process::id()));
        let path = dir.join("docker.json");
        assert_eq!(
            State::load(&path).expect("missing is empty"),
            State {
                version: VERSION,
                ..State::default()
            }
        );
        let mut state = State {
            version: VERSION,
            ..State::default()
        };
        let seq = state.seq();
        state.networks.insert(
            "d42d".into(),
            NetworkState {
                seq,
                name: "front".into(),
                named: true,
                subnet: Ipv4Addr::new(198, 18, 50, 0),
                prefix_len: 24,
                gateway: Ipv4Addr::new(198, 18, 50, 1),
                internal: false,
                icc: true,
                masquerade: true,
                created: 0,
            },
        );
        state.save(&path).expect("saves");
        assert_eq!(State::load(&path).expect("loads"), state);
        std::fs::write(&path, "{\"version\": 99}").expect("writes");
        let err = State::load(&path).expect_err("another version");
        assert!(err.to_string().contains("state version 99"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
