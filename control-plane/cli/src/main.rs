//! `weftctl`: Weft's command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Weft service mesh command-line tool.
#[derive(Debug, Parser)]
#[command(name = "weftctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Translate Gateway API and Weft YAML (files or directories) and print
    /// the generated Weft objects and the status of every input object: a dry
    /// run of what the control plane would do.
    Translate(cmd::translate::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Translate(args) => cmd::translate::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
