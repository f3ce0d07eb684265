//! Command-line interface: what the user said ([`Args`]), then what it means here ([`run`]).

mod render;
mod show;
mod table;

pub use show::ShowWhat;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use netbpf_common::stats::Hook;

use crate::{
    Result,
    agent::{self, reconcile},
    config,
    kernel::{self, datapath, netns, pins::PinDir},
    logging, monitor, plan,
};

#[derive(Debug, Parser)]
#[command(
    name = "netbpf",
    version,
    about = "eBPF data plane for the containers of a Linux host"
)]
pub struct Args {
    /// Operate inside this network namespace (a name under /run/netns, or a path).
    #[arg(long, global = true, value_name = "NAME")]
    pub netns: Option<String>,

    /// Pin directory on bpffs [default: /sys/fs/bpf/netbpf, or /sys/fs/bpf/netbpf-ns/NAME
    /// with --netns NAME].
    #[arg(long, global = true, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,

    /// How logs (the agent's events, a command's error) are written on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t = logging::Format::Text
    )]
    pub log_format: logging::Format,

    /// The least severe log events written.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "LEVEL",
        default_value_t = logging::Level::Info
    )]
    pub log_level: logging::Level,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a definitions file and print what it resolves to; changes nothing.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Make the datapath match a definitions file once, then exit (the datapath keeps
    /// running without any process).
    Apply {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Apply, then keep running: reload on SIGHUP and when the file changes; exit on
    /// SIGTERM, leaving the datapath in place. With --docker, also Docker's network driver.
    Agent {
        #[arg(short, long, value_name = "FILE", required_unless_present = "docker")]
        config: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR:PORT/metrics (bound in the namespace
        /// the agent manages).
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: Option<std::net::SocketAddr>,
        #[command(flatten)]
        docker: crate::docker::DockerArgs,
    },
    /// Attach the uplink programs to an interface (again: swap in the new programs).
    Attach {
        /// Interface to attach to.
        #[arg(long, value_name = "IFACE")]
        iface: String,
        /// Hooks to attach [default: tc and xdp].
        #[arg(long = "hook", value_enum, value_name = "HOOK")]
        hooks: Vec<HookArg>,
    },
    /// Show what the datapath holds.
    Show {
        #[command(subcommand)]
        what: ShowWhat,
    },
    /// Stream datapath events as they happen: drops with their reason (and, with --all,
    /// new translated flows), until interrupted.
    Monitor {
        /// New translated flows too.
        #[arg(long)]
        all: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<usize>,
    },
    /// Explain what the datapath would do with a packet, and why, from the pinned maps
    /// (changes nothing: no flow recorded, no counter counted).
    Explain(crate::explain::ExplainArgs),
    /// Remove everything netbpf made here: links, pins, veths, map entries.
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HookArg {
    /// tcx ingress (`from_uplink`)
    Tc,
    /// XDP (`xdp_uplink`)
    Xdp,
}

impl From<HookArg> for Hook {
    fn from(arg: HookArg) -> Hook {
        match arg {
            HookArg::Tc => Hook::FromUplink,
            HookArg::Xdp => Hook::XdpUplink,
        }
    }
}

/// Runs one command. Validation comes first, so a bad invocation changes nothing.
pub fn run(args: Args) -> Result<()> {
    logging::init(args.log_format, args.log_level);
    if let Command::Check { config } = &args.command {
        return check(config, &args);
    }
    kernel::require_root()?;
    let pins = resolve_pins(&args);
    if let Some(name) = &args.netns {
        match netns::enter(name) {
            // With its namespace gone, its links are gone too; `down` still removes the pins.
            Err(crate::Error::NetnsNotFound { .. }) if matches!(args.command, Command::Down) => {}
            other => other?,
        }
    }
    let netns_label = match &args.netns {
        Some(name) => format!("network namespace {name:?}"),
        None => "the current network namespace".to_owned(),
    };

    match args.command {
        Command::Check { .. } => unreachable!("handled above"),
        Command::Apply { config } => {
            let report = agent::apply(&config, &pins)?;
            print!("{}", render::report(&report));
        }
        Command::Agent {
            config,
            metrics,
            docker,
        } => match (docker.docker, config) {
            (true, config) => {
                let options = docker.options(args.netns.as_deref());
                let driver = crate::docker::Driver::new(config.as_deref(), &pins, options)?;
                agent::run(&driver, &pins, metrics)?;
            }
            (false, Some(config)) => {
                agent::run(&agent::source::FileSource::new(&config), &pins, metrics)?;
            }
            (false, None) => {
                return Err(crate::Error::BadArgument {
                    what: "agent".to_owned(),
                    message: "needs --config FILE or --docker".to_owned(),
                });
            }
        },
        Command::Attach { iface, hooks } => {
            let mut hooks: Vec<Hook> = if hooks.is_empty() {
                vec![Hook::FromUplink, Hook::XdpUplink]
            } else {
                hooks.into_iter().map(Hook::from).collect()
            };
            hooks.sort_by_key(|h| *h as u32);
            hooks.dedup();
            let attached = datapath::attach(&pins, &iface, &netns_label, &hooks)?;
            print!("{}", render::attached(&attached));
        }
        Command::Show { what } => show::run(what, &pins)?,
        Command::Monitor { all, output, count } => {
            let options = monitor::Options {
                flows: all,
                json: output == Output::Json,
                count,
            };
            monitor::run(&pins, &options, &mut std::io::stdout().lock())?;
        }
        Command::Explain(explain) => crate::explain::command(&pins, &explain)?,
        Command::Down => {
            // Veths first: their links go with them.
            let veths = reconcile::remove_veths()?;
            if !veths.is_empty() {
                println!(
                    "removed {} container veth(s): {}",
                    veths.len(),
                    veths.join(" ")
                );
            }
            if !pins.on_bpffs()? || !pins.path().exists() {
                println!("nothing to remove under {}", pins.path().display());
                return Ok(());
            }
            let removed = datapath::remove_all(&pins, true)?;
            print!("{}", render::removed(pins.path(), &removed));
        }
    }
    Ok(())
}

/// The pin directory: `--pin-dir`, else the definitions file's `[host] pin_dir`, else the
/// default for the namespace.
fn resolve_pins(args: &Args) -> PinDir {
    let from_file = match &args.command {
        Command::Apply { config }
        | Command::Check { config }
        | Command::Agent {
            config: Some(config),
            ..
        } => config::file::pin_dir_of(config),
        _ => None,
    };
    PinDir::resolve(
        args.pin_dir.as_deref().or(from_file.as_deref()),
        args.netns.as_deref(),
    )
}

/// `check`: needs no root; with it, addresses already allocated are taken into account.
fn check(config: &std::path::Path, args: &Args) -> Result<()> {
    let pins = resolve_pins(args);
    let previous = if kernel::require_root().is_ok() {
        agent::previous(&pins)
    } else {
        Default::default()
    };
    let model = config::load(config, &previous)?;
    print!(
        "{}",
        render::plan_summary(&model, &plan::plan(&model, &previous))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let args =
            Args::try_parse_from(["netbpf", "show", "stats", "-o", "json", "--netns", "lab"])
                .expect("parses");
        assert_eq!(args.netns.as_deref(), Some("lab"));
        assert!(matches!(
            args.command,
            Command::Show {
                what: ShowWhat::Stats {
                    output: Output::Json,
                    all: false
                }
            }
        ));
    }
}
