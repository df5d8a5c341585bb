//! `weftctl translate PATH...`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weft_k8s_api::k8s_openapi::jiff::Timestamp;
use weft_translate::{load, render};

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// Arguments of `weftctl translate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories of YAML (directories are read recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    output: Format,
    /// Print the translation of the documents that loaded even when others
    /// failed (the exit code still reports the failure).
    #[arg(long)]
    partial: bool,
    /// Timestamp for condition transition times (RFC 3339); defaults to now.
    /// Fixing it makes the output reproducible.
    #[arg(long)]
    now: Option<Timestamp>,
}

/// Runs the command. Exit code 1 when some input could not be loaded.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (snapshot, report) = load::load_paths(&args.paths);
    for error in &report.errors {
        eprintln!("error: {error}");
    }
    for (kind, count) in &report.ignored_kinds {
        eprintln!("note: ignored {count} {kind} object(s): Weft does not read this kind");
    }
    if !report.errors.is_empty() && !args.partial {
        eprintln!(
            "{} document(s) could not be loaded; nothing translated (use --partial to translate the rest)",
            report.errors.len()
        );
        return Ok(ExitCode::from(1));
    }
    let now = Time(args.now.unwrap_or_else(Timestamp::now));
    let output = weft_translate::translate(&snapshot, &now);
    let docs = render::documents(&snapshot, &output);
    let text = match args.output {
        Format::Yaml => render::to_yaml(&docs),
        Format::Json => render::to_json(&docs) + "\n",
    };
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing output")?;
    Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
