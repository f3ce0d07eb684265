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
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // No command at all: the help, on stderr, as a usage error.
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            // One line, like every other error: clap's message (its first paragraph, the
            // missing arguments or possible values included), without its prefix.
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            let message = message.join(" ");
            eprintln!(
                "netbpf: {} (see netbpf --help)",
                message.trim_start_matches("error: ")
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
            let code = err.exit_code();
            match netbpf::logging::format() {
                netbpf::logging::Format::Text => eprintln!("netbpf: {message}"),
                netbpf::logging::Format::Json => {
                    netbpf::logging::error(&message, &[("exit_code", code.into())])
                }
            }
            ExitCode::from(code)
        }
    }
}
