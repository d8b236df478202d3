//! The command line: parse what the user typed ([`args`]), resolve it into a
//! [`Config`], run one command ([`commands`]) and turn the outcome into an
//! exit code (0 success, 1 any error, 2 `plan --detailed-exitcode` with
//! changes).
//!
//! This is an edge: it reads files, the environment and the clock, opens the
//! store and prints; the work is in the pure core (spec, plan, apply).

pub mod args;
mod commands;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Parser;

pub use args::Cli;

use crate::model::Timestamp;

/// The resolved options every command takes.
#[derive(Clone, Debug)]
pub struct Config {
    pub specs: PathBuf,
    /// `--state` as given: a folder, a dump file, or a URL.
    pub state: String,
    /// `DEED_NOW`, or the clock.
    pub now: Timestamp,
    /// Colour on standard output.
    pub color: bool,
}

/// How a command ended.
pub enum Outcome {
    Success,
    /// `plan --detailed-exitcode` found changes.
    Changes,
}

/// Parses the command line, runs the command, returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
        }
    };
    init_logging(&cli.command);
    let config = match resolve(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error:#}");
            return 1;
        }
    };
    match commands::run(&cli.command, &config) {
        Ok(Outcome::Success) => 0,
        Ok(Outcome::Changes) => 2,
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    }
}

fn resolve(cli: &Cli) -> anyhow::Result<Config> {
    let now = match std::env::var("DEED_NOW") {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse::<Timestamp>()
            .map_err(|error| anyhow::anyhow!("DEED_NOW={text}: not an RFC 3339 time ({error})"))?,
        _ => Timestamp::now(),
    };
    // Whole seconds: plans print times, and the same input must print the same.
    let now = now.round(jiff::Unit::Second).unwrap_or(now);
    let color = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    Ok(Config {
        specs: cli.specs.clone(),
        state: cli.state.clone(),
        now,
        color,
    })
}

/// Logs go to standard error; `DEED_LOG` filters them (default `warn`; for
/// the daemon `info`, as text or, with `--log-format json`, JSON lines).
fn init_logging(command: &args::Command) {
    let (default_filter, json) = match command {
        args::Command::Daemon(daemon) => {
            ("warn,deed=info", daemon.log_format == args::LogFormat::Json)
        }
        _ => ("warn", false),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init()
    };
}
