//! The `eps-studio` binary: parse the command line, run it, print any error.

use std::process::ExitCode;

use clap::Parser as _;
use eps_studio::cli::{Cli, run};

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
