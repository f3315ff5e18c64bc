//! `sammen`: the broker's command line. It only wires crates together; every rule lives in a crate.
#![forbid(unsafe_code)]

mod validate;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sammen", version, about = "Sammen: MedCom message broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate messages: files or folders (recursive, *.xml). Exit 0 all valid, 1 any invalid, 2 usage/I/O error.
    Validate {
        /// Output format.
        #[arg(long, value_enum, default_value_t = validate::Format::Text)]
        format: validate::Format,
        /// Largest accepted message in bytes.
        #[arg(long, default_value_t = 10 * 1024 * 1024)]
        max_bytes: usize,
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run the conformance suite (manifests *.toml in DIR). Exit 0 when every case matches.
    Conformance {
        /// Suite directory.
        #[arg(default_value = "conformance")]
        dir: PathBuf,
        /// Print only failing cases and the summary.
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout with success, usage errors to stderr.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Validate {
            format,
            max_bytes,
            paths,
        } => validate::run(&paths, format, max_bytes),
        Command::Conformance { dir, quiet } => validate::conformance(&dir, quiet),
    }
}
