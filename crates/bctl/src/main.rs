//! bctl: the pgbalancer control CLI.
//!
//! This version has the commands that need no running daemon:
//! `check-config` and `password-hash`. The REST-backed commands (status,
//! nodes, pools, reload, token ...) come with the admin API.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgbalancer_config::Config;

#[derive(Parser, Debug)]
#[command(name = "bctl", version, about = "Control pgbalancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a pgbalancer.yml: prints OK, or every problem with its key.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Print a SCRAM-SHA-256 verifier for the `users:` list. The password
    /// is read from standard input (never from the command line, where
    /// `ps` would show it).
    PasswordHash,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                for w in c.warnings() {
                    eprintln!("warning: {}: {w}", file.display());
                }
                for w in Config::file_warnings(&file) {
                    eprintln!("warning: {w}");
                }
                println!("OK: {}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::PasswordHash => {
            if std::io::stdin().is_terminal() {
                eprintln!("password (input is echoed; pipe it in to avoid that):");
            }
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim_end_matches(['\r', '\n']).is_empty() {
                eprintln!("bctl password-hash: no password on standard input");
                return ExitCode::FAILURE;
            }
            let password = line.trim_end_matches(['\r', '\n']);
            println!("{}", postgres_protocol::password::scram_sha_256(password.as_bytes()));
            ExitCode::SUCCESS
        }
    }
}
