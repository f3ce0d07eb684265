//! netbpf as a Docker network driver: `docker network create -d netbpf` and `docker run
//! --network ... -p ...` get netbpf's datapath, with no bridge, iptables rule or
//! docker-proxy. The driver speaks libnetwork's remote driver protocol ([`protocol`],
//! over [`http`] on a unix socket), keeps what Docker told it ([`state`]), and turns it into
//! definitions ([`source`]) that the agent validates, plans and reconciles as it does the
//! file's ([`driver`]). The Engine API ([`engine`]) supplies what the protocol leaves out:
//! the names Docker shows and the containers' labels.

pub mod driver;
pub mod engine;
pub mod http;
pub mod protocol;
pub mod source;
pub mod state;

use std::path::PathBuf;

pub use driver::Driver;

/// Where Docker looks for plugins: a socket here is the driver named after its file.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/netbpf.sock";
/// The Docker Engine API.
pub const DEFAULT_API: &str = "/var/run/docker.sock";
/// Where the driver keeps its state (`docker.json`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/netbpf/docker";

/// How the driver is reached and where it keeps things.
#[derive(Clone, Debug)]
pub struct Options {
    /// The unix socket the driver listens on. Docker finds it by its directory
    /// (/run/docker/plugins) or through `spec`; the driver's name is the file's stem.
    pub socket: PathBuf,
    /// A `.spec` file to write, pointing Docker at `socket` (for a socket elsewhere).
    pub spec: Option<PathBuf>,
    /// The Docker Engine API's socket (names and labels); `None`: never asked.
    pub api: Option<PathBuf>,
    /// The directory of the driver's state file.
    pub state_dir: PathBuf,
}

/// `netbpf agent --docker` and its settings.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DockerArgs {
    /// Also be Docker's `netbpf` network driver (libnetwork's remote driver protocol):
    /// `docker network create -d netbpf`, `docker run --network NAME -p ...`.
    #[arg(long)]
    pub docker: bool,
    /// The socket the driver listens on; Docker names the driver after the file
    /// [default: /run/docker/plugins/netbpf.sock].
    #[arg(long, value_name = "PATH", requires = "docker")]
    pub docker_socket: Option<PathBuf>,
    /// Also write a plugin .spec file pointing Docker at the socket (for a socket outside
    /// /run/docker/plugins), e.g. /etc/docker/plugins/netbpf.spec.
    #[arg(long, value_name = "FILE", requires = "docker")]
    pub docker_spec: Option<PathBuf>,
    /// The Docker Engine API socket, asked for container names and labels
    /// [default: /var/run/docker.sock].
    #[arg(long, value_name = "PATH", requires = "docker")]
    pub docker_api: Option<PathBuf>,
    /// Where the driver keeps Docker's networks and endpoints [default:
    /// /var/lib/netbpf/docker, or /var/lib/netbpf/docker-ns/NAME with --netns NAME].
    #[arg(long, value_name = "DIR", requires = "docker")]
    pub docker_state: Option<PathBuf>,
}

impl DockerArgs {
    /// The options these arguments stand for, defaults filled in.
    pub fn options(&self, netns: Option<&str>) -> Options {
        let state_dir = match (&self.docker_state, netns) {
            (Some(dir), _) => dir.clone(),
            (None, Some(name)) => PathBuf::from(DEFAULT_STATE_DIR)
                .with_file_name("docker-ns")
                .join(name.replace('/', "_")),
            (None, None) => PathBuf::from(DEFAULT_STATE_DIR),
        };
        Options {
            socket: self
                .docker_socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            spec: self.docker_spec.clone(),
            api: Some(
                self.docker_api
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_API)),
            ),
            state_dir,
        }
    }
}
