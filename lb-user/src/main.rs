//! `pglb`: the control-plane binary. Parses the command line and hands each subcommand to its
//! module under `cli/`; the work itself is the library's.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, `outer: inner: innermost`.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
