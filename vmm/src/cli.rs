//! The `ballast` command line.

use std::path::PathBuf;

use ballast_devices::balloon::BalloonConfig;
use ballast_manager::pages;

use ballast_devices::block::BlockConfig;
use ballast_devices::vsock::VsockConfig;
use clap::{Args, Parser, Subcommand};

use crate::config::{parse_size, VmConfig, DEFAULT_CMDLINE};
use ballast_manager::host_enforce::{HostEnforceConfig, Target, DEFAULT_OVERHEAD};

#[derive(Debug, Parser)]
#[command(
    name = "ballast",
    version,
    about = "A KVM virtual machine monitor that keeps every VM inside a memory limit"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log level on stderr: error, warn, info, debug or trace (RUST_LOG, when set, wins).
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: log::LevelFilter,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a Linux guest and run it until it powers off or reboots.
    ///
    /// Exit status: 0 when the guest powers off or reboots (ballast does not restart it) or when
    /// ballast is stopped with Ctrl-C / SIGTERM; 1 when a vCPU fails (the reason is printed);
    /// 2 when the VM cannot be set up.
    Run(RunArgs),
    /// Show a running VM's state, memory and balloon.
    Status(ClientArgs),
    /// Print a running VM's metrics (`GET /metrics`, Prometheus text).
    Metrics(ClientArgs),
    /// Set or clear a running VM's memory limit.
    Limit {
        #[command(subcommand)]
        action: LimitCommand,
    },
    /// Resize a running VM's balloon.
    Balloon {
        #[command(subcommand)]
        action: BalloonCommand,
    },
    /// Pause a running VM: every vCPU leaves the guest until `ballast resume`.
    Pause(ClientArgs),
    /// Resume a paused VM.
    Resume(ClientArgs),
    /// Shut a VM down; its `ballast run` exits with status 0.
    Shutdown(ClientArgs),
    /// Talk to the guest agent directly, through the VM's hybrid vsock socket (`CONNECT 52`);
    /// prints the agent's reply as JSON.
    Agent {
        #[command(subcommand)]
        action: AgentCommand,
        #[command(flatten)]
        vsock: AgentArgs,
    },
}

/// How `ballast agent` reaches the guest agent.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The VM's --vsock-sock.
    #[arg(long, env = "BALLAST_VSOCK_SOCK", global = true)]
    pub vsock_sock: Option<PathBuf>,
    /// The agent's vsock port.
    #[arg(long, default_value_t = 52, global = true)]
    pub port: u32,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 5, global = true)]
    pub timeout_s: u64,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AgentCommand {
    /// The agent's version and what the guest can do (swap, memory.reclaim, cachestat).
    Hello,
    /// The guest's memory statistics (meminfo, vmstat, PSI).
    Stats,
    /// Drop clean page cache: big files first, then small ones, up to PAGES guest pages.
    DeactivateFile { pages: u64 },
    /// Deactivate anonymous memory of big processes first, up to PAGES (only with swap).
    DeactivateAnon {
        pages: u64,
        /// Page out now (MADV_PAGEOUT) rather than only deactivate (MADV_COLD).
        #[arg(long)]
        urgent: bool,
    },
}

/// How the client subcommands reach a running ballast.
///
/// Exit status: 0 on success; 1 when ballast refused or failed the request (its message is
/// printed); 2 when ballast could not be reached.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The API socket of the `ballast run` to talk to (its --api-sock).
    #[arg(long, env = "BALLAST_API_SOCK")]
    pub api_sock: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum LimitCommand {
    /// Set the limit: a size with a K, M or G suffix (a bare number is MiB), in whole MiB.
    Set {
        #[arg(value_parser = parse_mib_arg)]
        size_mib: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove the limit.
    Clear(ClientArgs),
}

#[derive(Debug, Subcommand)]
pub enum BalloonCommand {
    /// Set the balloon's target size: a size with a K, M or G suffix (a bare number is MiB), in
    /// whole MiB.
    Set {
        #[arg(value_parser = parse_balloon_arg)]
        size_mib: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The guest's memory statistics as the balloon last reported them (needs
    /// `--balloon stats_polling_interval_s=N` on `ballast run`).
    Stats(ClientArgs),
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
    /// Unix socket for the REST API (created with mode 0600; the routes are in vmm/openapi.yaml,
    /// and `ballast status`, `ballast limit`, ... talk to it).
    #[arg(long)]
    pub api_sock: Option<PathBuf>,
    /// Balloon options: deflate_on_oom=on|off,free_page_reporting=on|off,stats_polling_interval_s=N
    #[arg(long, default_value = "")]
    pub balloon: BalloonConfig,
    /// A raw disk image, PATH[,readonly=on]; repeat for more disks. The first is /dev/vda.
    #[arg(long = "disk", value_name = "PATH[,readonly=on]")]
    pub disks: Vec<BlockConfig>,
    /// Unix socket of the guest's vsock device: a host program connects and writes
    /// `CONNECT <port>`; guest connections to the host's port P reach `PATH_P`.
    #[arg(long)]
    pub vsock_sock: Option<PathBuf>,
    /// The guest's vsock context ID (3 or more).
    #[arg(long, default_value_t = 3, requires = "vsock_sock")]
    pub vsock_cid: u64,
    /// Memory limit (K, M, G suffix; a bare number is MiB): resident guest RAM is brought back
    /// to 12.5 % under it whenever it goes over — file cache first, then anon memory (with
    /// swap), then the balloon. Change it at run time with `ballast limit set`.
    #[arg(long, value_parser = parse_size_arg)]
    pub limit: Option<u64>,
    /// Seconds between the memory manager's samples of residency and dirtiness (an epoch).
    #[arg(long, default_value_t = 1.0)]
    pub sample_interval: f64,
    /// Seconds resident guest RAM may stay above the limit before the VM is `over_limit`,
    /// whatever reclaim is doing or the guest agent says, and --host-enforce engages.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub over_limit_after: f64,
    /// Back the limit with the host's: ballast starts in a cgroup v2 of its own (PATH, or
    /// `ballast-<pid>` below its current cgroup under /sys/fs/cgroup), and once resident guest
    /// RAM has stayed above the limit for --over-limit-after seconds, sets the cgroup's
    /// memory.high to the limit plus --host-enforce-overhead. Where the host has no cgroup v2 memory controller, ballast says
    /// so (log, `ballast status`) and runs without.
    #[arg(
        long,
        value_name = "PATH",
        num_args = 0..=1,
        require_equals = true
    )]
    pub host_enforce: Option<Option<PathBuf>>,
    /// What memory.high allows beyond the limit for ballast's own memory, page tables and the
    /// page cache of its disks (K, M, G suffix; a bare number is MiB). Default 64M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg, requires = "host_enforce")]
    pub host_enforce_overhead: Option<u64>,
    /// Offer the guest the local APIC's TSC-deadline timer where KVM emulates it (as Firecracker
    /// and Cloud Hypervisor do). `off` leaves the guest the APIC's one-shot mode: the test
    /// harness uses it under nested TCG, where TSC-deadline guests crashed far more often.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub tsc_deadline: Switch,
    /// Back guest RAM with transparent huge pages (`on`, as Cloud Hypervisor's `thp=on`): fewer
    /// page faults and TLB misses for the guest, but a page the balloon releases splits its huge
    /// page, and khugepaged may collapse it back into a resident 2 MiB page behind the memory
    /// manager's back, so resident can creep over the limit. `off` (the default) keeps every
    /// released page released.
    #[arg(long, value_enum, default_value_t = Switch::Off)]
    pub thp: Switch,
}

/// An on/off command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// A size in whole MiB: the API's unit.
pub fn parse_mib_arg(s: &str) -> Result<u64, String> {
    let bytes = parse_size_arg(s)?;
    if bytes % (1 << 20) != 0 {
        return Err(format!(
            "{s} is not a whole number of MiB; sizes are set in MiB (e.g. 512M, 1G)"
        ));
    }
    Ok(bytes >> 20)
}

fn parse_balloon_arg(s: &str) -> Result<u32, String> {
    let mib = parse_mib_arg(s)?;
    u32::try_from(mib).map_err(|_| format!("{s} is too large for a balloon"))
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
            disks: self.disks,
            vsock: self.vsock_sock.map(|uds_path| VsockConfig {
                guest_cid: self.vsock_cid,
                uds_path,
            }),
            // Bytes on the command line, guest pages from here on.
            limit_pages: self.limit.map(pages::from_bytes),
            // 10 ms to an hour; anything else is a typo.
            sample_interval: std::time::Duration::from_secs_f64(
                self.sample_interval.clamp(0.01, 3600.0),
            ),
            // Up to a day; NaN and negatives are no time at all.
            over_limit_after: std::time::Duration::from_secs_f64(
                self.over_limit_after.clamp(0.0, 86_400.0),
            ),
            host_enforce: HostEnforceConfig {
                target: self
                    .host_enforce
                    .map(|path| path.map_or(Target::Auto, Target::At)),
                overhead_bytes: self.host_enforce_overhead.unwrap_or(DEFAULT_OVERHEAD),
            },
            tsc_deadline: self.tsc_deadline == Switch::On,
            thp: self.thp == Switch::On,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_sizes_are_whole_mib() {
        assert_eq!(parse_mib_arg("512M"), Ok(512));
        assert_eq!(parse_mib_arg("1G"), Ok(1024));
        assert_eq!(parse_mib_arg("256"), Ok(256));
        assert_eq!(parse_mib_arg("2048K"), Ok(2));
        assert!(parse_mib_arg("1536K")
            .unwrap_err()
            .contains("whole number of MiB"));
        assert!(parse_mib_arg("lots").is_err());
        assert!(parse_balloon_arg("8192T")
            .unwrap_err()
            .contains("too large"));
    }

    fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut args = vec!["ballast", "run", "--kernel", "/k"];
        args.extend_from_slice(extra);
        match Cli::try_parse_from(args)?.command {
            Command::Run(run) => Ok(run),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn thp_is_off_unless_switched_on() {
        assert!(!run_args(&[]).unwrap().into_config().thp);
        assert!(run_args(&["--thp", "on"]).unwrap().into_config().thp);
        assert!(run_args(&["--thp", "yes"]).is_err());
    }

    #[test]
    fn tsc_deadline_is_on_unless_switched_off() {
        assert!(run_args(&[]).unwrap().into_config().tsc_deadline);
        let off = run_args(&["--tsc-deadline", "off"]).unwrap().into_config();
        assert!(!off.tsc_deadline);
        assert!(run_args(&["--tsc-deadline", "maybe"]).is_err());
    }

    #[test]
    fn host_enforce_takes_an_optional_path() {
        let off = run_args(&[]).unwrap().into_config().host_enforce;
        assert_eq!(off, HostEnforceConfig::default());
        assert_eq!(off.target, None);

        let auto = run_args(&["--host-enforce", "--limit", "256M"]).unwrap();
        assert_eq!(auto.limit, Some(256 << 20));
        let config = auto.into_config().host_enforce;
        assert_eq!(config.target, Some(Target::Auto));
        assert_eq!(config.overhead_bytes, 64 << 20);

        let at = run_args(&[
            "--host-enforce=/sys/fs/cgroup/vm1",
            "--host-enforce-overhead=32M",
        ])
        .unwrap()
        .into_config()
        .host_enforce;
        assert_eq!(
            at.target,
            Some(Target::At(PathBuf::from("/sys/fs/cgroup/vm1")))
        );
        assert_eq!(at.overhead_bytes, 32 << 20);

        let err = run_args(&["--host-enforce-overhead", "32M"]).unwrap_err();
        assert!(err.to_string().contains("--host-enforce"), "{err}");
    }

    #[test]
    fn subcommands_parse() {
        let cli =
            Cli::try_parse_from(["ballast", "limit", "set", "512M", "--api-sock", "/s"]).unwrap();
        match cli.command {
            Command::Limit {
                action: LimitCommand::Set { size_mib, client },
            } => {
                assert_eq!(size_mib, 512);
                assert_eq!(client.api_sock, PathBuf::from("/s"));
                assert!(!client.json);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["ballast", "pause", "--api-sock", "/s", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Pause(ClientArgs { json: true, .. })
        ));
    }
}
