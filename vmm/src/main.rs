use std::process::ExitCode;

use ballast::builder;
use ballast::cli::{Cli, Command, RunArgs};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(cli.log_level.as_str()),
    )
    .format_timestamp_millis()
    .init();
    match cli.command {
        Command::Run(args) => run_vm(*args),
        // Every other subcommand talks to a running ballast over its API socket.
        command => ballast::client::commands::run(command).unwrap_or(ExitCode::FAILURE),
    }
}

fn run_vm(args: RunArgs) -> ExitCode {
    let config = args.into_config();
    for warning in ballast::ready::warnings(&config) {
        log::warn!("{warning}");
    }
    // The console in raw mode for the VM's life (on a terminal); restored when `_raw` drops.
    let _raw = ballast::console::raw_mode();
    match builder::run(config) {
        Ok(exit) => {
            if let ballast::vstate::exit::VmExit::Failure(reason) = &exit {
                eprintln!("ballast: the VM failed: {reason}");
            }
            ExitCode::from(exit.exit_code() as u8)
        }
        Err(e) => {
            eprintln!("ballast: error: {e}");
            ExitCode::from(2)
        }
    }
}
