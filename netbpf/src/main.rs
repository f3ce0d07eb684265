//! The `netbpf` binary: parse, run, map the outcome to an exit code
//! (0 ok, 1 runtime failure, 2 invalid input or usage).

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = netbpf::cli::Args::parse();
    match netbpf::cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netbpf: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
