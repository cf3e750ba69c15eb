//! The `tabagent` binary: parse the command line, run, map errors to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    match tabagent::cli::parse(std::env::args_os().skip(1)) {
        Ok(args) => tabagent::run::run(args),
        Err(message) => {
            eprintln!("tabagent: {message}\nTry 'tabagent --help'.");
            ExitCode::from(2)
        }
    }
}
