use std::process::ExitCode;

use ballast::cli::{Cli, Command};
use ballast::runner;
use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => match runner::run(args.into_config()) {
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
        },
    }
}
