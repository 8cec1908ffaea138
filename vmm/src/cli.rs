//! The `ballast` command line.

use std::path::PathBuf;

use ballast_balloon::BalloonConfig;
use clap::{Args, Parser, Subcommand};

use crate::config::{parse_size, VmConfig, DEFAULT_CMDLINE};

#[derive(Debug, Parser)]
#[command(
    name = "ballast",
    version,
    about = "A KVM virtual machine monitor that keeps every VM inside a memory limit"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a Linux guest and run it until it powers off or reboots.
    ///
    /// Exit status: 0 when the guest powers off or reboots (ballast does not restart it) or when
    /// ballast is stopped with Ctrl-C / SIGTERM; 1 when a vCPU fails (the reason is printed);
    /// 2 when the VM cannot be set up.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Guest kernel: a bzImage or an uncompressed ELF vmlinux.
    #[arg(long)]
    pub kernel: PathBuf,
    /// Initramfs to hand to the kernel.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Guest RAM, with a K, M or G suffix (a bare number is MiB).
    #[arg(long, default_value = "512M", value_parser = parse_size_arg)]
    pub memory: u64,
    /// Number of vCPUs, one host thread each.
    #[arg(long, default_value_t = 2)]
    pub vcpus: u64,
    /// Unix socket for the REST API (created with mode 0600).
    #[arg(long)]
    pub api_sock: Option<PathBuf>,
    /// Balloon options: deflate_on_oom=on|off,free_page_reporting=on|off,stats_polling_interval_s=N
    #[arg(long, default_value = "")]
    pub balloon: BalloonConfig,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

impl RunArgs {
    /// The VM configuration; memory and vCPUs are range-checked against the host later.
    pub fn into_config(self) -> VmConfig {
        VmConfig {
            kernel: self.kernel,
            initrd: self.initrd,
            cmdline: self.cmdline,
            mem_size: self.memory,
            vcpus: self.vcpus,
            api_sock: self.api_sock,
            balloon: self.balloon,
        }
    }
}
