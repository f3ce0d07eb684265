//! Development tasks: `cargo xtask <task>` (or `./x <task>` on a fresh machine).

mod bench;
mod cmd;
mod demo;
mod ebpf;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "netbpf development tasks")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building and testing need (Debian packages, bpf-linker, bpffs); a
    /// second run changes nothing.
    Setup,
    /// Build the kernel object for bpftool / llvm-objdump (target/bpf/netbpf.o).
    BuildEbpf,
    /// Set up, then run every test (unit, BPF_PROG_TEST_RUN fixtures, namespaces), rustfmt
    /// and clippy (userspace and BPF target).
    Test,
    /// Set up, then build a lab, attach the programs, send real traffic, print the
    /// counters, and tear everything down.
    Demo,
    /// Set up, then measure netbpf against the kernel-native path in the same run
    /// (report in target/bench/).
    Bench {
        /// Fewer, shorter rounds.
        #[arg(long)]
        quick: bool,
        /// One scenario: east-west, north-south, hairpin, host-localhost, vip, services,
        /// ports, prog-cost, resources, inspect or docker.
        #[arg(long, value_name = "SCENARIO")]
        only: Option<String>,
    },
    /// The bench's userspace TCP proxy (docker-proxy's way), run by `bench` inside a lab's
    /// host namespace: LISTEN -> TO until killed.
    #[command(hide = true)]
    BenchProxy {
        listen: std::net::SocketAddrV4,
        to: std::net::SocketAddrV4,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().task {
        Task::Setup => setup::run(),
        Task::BuildEbpf => ebpf::build().map(|path| println!("{}", path.display())),
        Task::Test => test::run(),
        Task::Demo => demo::run(),
        Task::Bench { quick, only } => bench::run(bench::Options { quick, only }),
        Task::BenchProxy { listen, to } => bench::serve_proxy(listen, to),
    }
}
