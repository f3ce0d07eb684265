//! The `netbpf` binary: parse, run, map the outcome to an exit code
//! (0 ok, 1 runtime failure, 2 invalid input or usage).

use std::process::ExitCode;

use clap::{Parser as _, error::ErrorKind};

fn main() -> ExitCode {
    let args = match netbpf::cli::Args::try_parse() {
        Ok(args) => args,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, like every other error: clap's first line, without its prefix.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid usage");
            eprintln!(
                "netbpf: {} (see netbpf --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match netbpf::cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain: aya's syscall errors keep the OS error as their source.
            let mut message = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !message.contains(&text) {
                    message = format!("{message}: {text}");
                }
                source = cause.source();
            }
            eprintln!("netbpf: {message}");
            ExitCode::from(err.exit_code())
        }
    }
}
