//! The `ballast` command line.

use std::path::PathBuf;

use ballast_devices::balloon::BalloonConfig;
use ballast_manager::pages;

use ballast_devices::block::BlockConfig;
use ballast_devices::net::NetConfig;
use ballast_devices::vsock::VsockConfig;
use clap::{Args, Parser, Subcommand};

use crate::config::{parse_size, parse_size_mib, VmConfig, DEFAULT_CMDLINE};
use crate::seccomp::SeccompMode;
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
    /// The guest's console (COM1) is ballast's stdin and stdout. On a terminal, stdin is in raw
    /// mode: every key goes to the guest, Ctrl-C included; type Ctrl-A x to stop the VM, Ctrl-A
    /// Ctrl-A to send the guest a Ctrl-A. Once the VM runs, one line on stderr says so (pid,
    /// sockets, memory, limit), and with NOTIFY_SOCKET set (systemd's Type=notify) ballast
    /// sends READY=1.
    ///
    /// Exit status: 0 when the guest powers off or reboots (ballast does not restart it) or when
    /// ballast is stopped (Ctrl-A x, SIGINT, SIGTERM, the API); 1 when a vCPU fails (the reason
    /// is printed); 2 when the VM cannot be set up.
    Run(Box<RunArgs>),
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
    /// Watch a running VM's memory live: limit, threshold, resident, working set and balloon
    /// over time, its memory state and the reclaim steps as they happen (`q` quits).
    Top(TopArgs),
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
    #[arg(long, default_value = "52", global = true, value_parser = parse_port)]
    pub port: u32,
    /// Seconds to wait for each answer (1 to 3600).
    #[arg(long, default_value = "5", global = true, value_parser = parse_timeout_s)]
    pub timeout_s: u64,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AgentCommand {
    /// The agent's version and what the guest can do (swap, memory.reclaim, cachestat).
    Hello,
    /// The guest's memory statistics (meminfo, vmstat, PSI).
    Stats,
    /// Drop clean page cache: big files first, then small ones, up to PAGES guest pages.
    DeactivateFile {
        #[arg(value_parser = parse_pages)]
        pages: u64,
    },
    /// Deactivate anonymous memory of big processes first, up to PAGES (only with swap).
    DeactivateAnon {
        #[arg(value_parser = parse_pages)]
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

/// `ballast top`: one VM, or every VM whose API socket is in a directory.
#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// The API socket of the VM to watch (its --api-sock).
    #[arg(long, env = "BALLAST_API_SOCK", conflicts_with = "dir")]
    pub api_sock: Option<PathBuf>,
    /// Watch every VM whose API socket is in DIR (its `*.sock` files); up and down choose the
    /// VM the chart shows.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Seconds between refreshes (0.1 to 60); the memory manager measures once an epoch
    /// (`ballast run --sample-interval`, default 1 s).
    #[arg(long, default_value = "1", value_parser = parse_refresh_interval)]
    pub interval: f64,
}

#[derive(Debug, Subcommand)]
pub enum LimitCommand {
    /// Set the limit to SIZE, in whole MiB: a number with a unit (B, K, M, G, T, or KiB, MiB,
    /// GiB, TiB: powers of 1024; KB, MB, GB, TB: powers of 1000); a bare number is MiB.
    Set {
        /// The new limit, e.g. 384M or 1.5G.
        #[arg(value_name = "SIZE", value_parser = parse_limit_arg)]
        size_mib: u64,
        /// Wait until resident guest RAM is at or under the threshold (the limit less an
        /// eighth), with a progress line; exit 1 if the VM ends `over_limit` or
        /// `guest_unresponsive`, or the wait times out.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (1 to 86400).
        #[arg(long, default_value = "300", requires = "wait", value_parser = parse_wait_s)]
        wait_timeout_s: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove the limit.
    Clear(ClientArgs),
}

#[derive(Debug, Subcommand)]
pub enum BalloonCommand {
    /// Set the balloon's target size to SIZE, in whole MiB (0 deflates it fully): a number
    /// with a unit (B, K, M, G, T, or KiB, ...: powers of 1024; KB, MB, ...: powers of 1000);
    /// a bare number is MiB.
    Set {
        /// The balloon's new target, e.g. 64M.
        #[arg(value_name = "SIZE", value_parser = parse_balloon_arg)]
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
    /// Guest RAM in whole MiB: a number with a unit (B, K, M, G, T, or KiB, MiB, GiB, TiB:
    /// powers of 1024; KB, MB, GB, TB: powers of 1000); a bare number is MiB.
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_memory_arg)]
    pub memory: u64,
    /// Number of vCPUs, one host thread each (1 to 254).
    #[arg(long, default_value = "2", value_parser = parse_vcpus)]
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
    /// A network device on an existing TAP interface of the host, tap=NAME[,mac=MAC]; repeat
    /// for more (the first is the guest's eth0). ballast does not create the TAP: make it with
    /// `ip tuntap add dev NAME mode tap user $USER`, then give it an address or a bridge and
    /// set it up. Without mac=, the guest gets a stable address derived from this host's name
    /// and the TAP's.
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC]")]
    pub net: Vec<NetConfig>,
    /// Unix socket of the guest's vsock device: a host program connects and writes
    /// `CONNECT <port>`; guest connections to the host's port P reach `PATH_P`.
    #[arg(long)]
    pub vsock_sock: Option<PathBuf>,
    /// The guest's vsock context ID (3 to 4294967294).
    #[arg(long, default_value = "3", requires = "vsock_sock", value_parser = parse_vsock_cid)]
    pub vsock_cid: u64,
    /// Memory limit, a size in whole MiB as for --memory: resident guest RAM is brought back
    /// to 12.5 % under it whenever it goes over — file cache first, then anon memory (with
    /// swap), then the balloon. Change it at run time with `ballast limit set` (which needs
    /// --api-sock).
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_arg)]
    pub limit: Option<u64>,
    /// Seconds between the memory manager's samples of residency and dirtiness (an epoch),
    /// 0.01 to 3600.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_sample_interval)]
    pub sample_interval: f64,
    /// Seconds resident guest RAM may stay above the limit before the VM is `over_limit`,
    /// whatever reclaim is doing or the guest agent says, and --host-enforce engages; 0 to
    /// 86400.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_over_limit_after)]
    pub over_limit_after: f64,
    /// Back the limit with the host's: ballast starts in a cgroup v2 of its own (PATH, or
    /// `ballast-<pid>` below its current cgroup under /sys/fs/cgroup), and once resident guest
    /// RAM has stayed above the limit for --over-limit-after seconds, sets the cgroup's
    /// memory.high to the limit plus --host-enforce-overhead. Where the host has no cgroup v2
    /// memory controller, ballast says so (log, `ballast status`) and runs without.
    #[arg(
        long,
        value_name = "PATH",
        num_args = 0..=1,
        require_equals = true
    )]
    pub host_enforce: Option<Option<PathBuf>>,
    /// What memory.high allows beyond the limit for ballast's own memory, page tables and the
    /// page cache of its disks: a size as for --memory, in bytes or more. Default 64M.
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
    /// seccomp filters, one per kind of thread: `on` (a system call outside a thread's list
    /// ends ballast with a message naming the thread and the call), `log` (the call goes
    /// through and the kernel logs it: `dmesg | grep type=1326`), or `off`.
    #[arg(long, value_enum, default_value_t = SeccompMode::On)]
    pub seccomp: SeccompMode,
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

/// A size in whole MiB, more than 0, as bytes.
fn parse_memory_arg(s: &str) -> Result<u64, String> {
    parse_size_mib(s)
        .map(|mib| mib << 20)
        .map_err(|e| e.to_string())
}

/// `limit set`: whole MiB, more than 0, with the way to remove a limit named.
fn parse_limit_arg(s: &str) -> Result<u64, String> {
    parse_size_mib(s).map_err(|e| match e {
        crate::config::SizeError::Zero => {
            "a limit must be more than 0; `ballast limit clear` removes it".to_string()
        }
        e => e.to_string(),
    })
}

/// `balloon set`: whole MiB, 0 included (a fully deflated balloon).
fn parse_balloon_arg(s: &str) -> Result<u32, String> {
    if parse_size(s) == Ok(0) {
        return Ok(0);
    }
    let mib = parse_size_mib(s).map_err(|e| e.to_string())?;
    u32::try_from(mib).map_err(|_| format!("'{s}' is too large for a balloon"))
}

/// A whole number in `range`, refused in words the user can act on.
fn parse_whole(s: &str, range: std::ops::RangeInclusive<u64>, what: &str) -> Result<u64, String> {
    let refuse = || {
        format!(
            "'{s}' is not {what}: give a whole number from {} to {}",
            range.start(),
            range.end()
        )
    };
    let n: u64 = s.trim().parse().map_err(|_| refuse())?;
    range.contains(&n).then_some(n).ok_or_else(refuse)
}

fn parse_vcpus(s: &str) -> Result<u64, String> {
    // APIC IDs are 8 bits wide in the MADT; the host's KVM may allow fewer (checked at start).
    parse_whole(s, 1..=254, "a vCPU count")
}

fn parse_vsock_cid(s: &str) -> Result<u64, String> {
    // 0-2 are the hypervisor's, the local and the host's; u32::MAX is VMADDR_CID_ANY.
    parse_whole(s, 3..=u64::from(u32::MAX - 1), "a guest context ID")
}

fn parse_port(s: &str) -> Result<u32, String> {
    parse_whole(s, 1..=u64::from(u32::MAX), "a vsock port").map(|p| p as u32)
}

fn parse_pages(s: &str) -> Result<u64, String> {
    // The agent bounds its own work; a billion pages (4 TiB) is already past any guest.
    parse_whole(s, 1..=1 << 30, "a number of guest pages")
}

fn parse_timeout_s(s: &str) -> Result<u64, String> {
    parse_whole(s, 1..=3600, "a number of seconds")
}

fn parse_wait_s(s: &str) -> Result<u64, String> {
    parse_whole(s, 1..=86_400, "a number of seconds")
}

/// Seconds as a decimal number within `range` (no NaN, infinity or negative).
fn parse_seconds(s: &str, range: std::ops::RangeInclusive<f64>) -> Result<f64, String> {
    let refuse = || {
        format!(
            "'{s}' is not a number of seconds from {} to {}",
            range.start(),
            range.end()
        )
    };
    let secs: f64 = s.trim().parse().map_err(|_| refuse())?;
    (secs.is_finite() && range.contains(&secs))
        .then_some(secs)
        .ok_or_else(refuse)
}

fn parse_sample_interval(s: &str) -> Result<f64, String> {
    parse_seconds(s, 0.01..=3600.0)
}

fn parse_over_limit_after(s: &str) -> Result<f64, String> {
    parse_seconds(s, 0.0..=86_400.0)
}

fn parse_refresh_interval(s: &str) -> Result<f64, String> {
    parse_seconds(s, 0.1..=60.0)
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
            net: self.net,
            // Bytes on the command line, guest pages from here on.
            limit_pages: self.limit.map(pages::from_bytes),
            // Checked to be 10 ms to an hour when parsed.
            sample_interval: std::time::Duration::from_secs_f64(self.sample_interval),
            // Checked to be at most a day when parsed.
            over_limit_after: std::time::Duration::from_secs_f64(self.over_limit_after),
            host_enforce: HostEnforceConfig {
                target: self
                    .host_enforce
                    .map(|path| path.map_or(Target::Auto, Target::At)),
                overhead_bytes: self.host_enforce_overhead.unwrap_or(DEFAULT_OVERHEAD),
            },
            tsc_deadline: self.tsc_deadline == Switch::On,
            thp: self.thp == Switch::On,
            seccomp: self.seccomp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_sizes_are_whole_mib() {
        assert_eq!(parse_limit_arg("512M"), Ok(512));
        assert_eq!(parse_limit_arg("1G"), Ok(1024));
        assert_eq!(parse_limit_arg("256"), Ok(256));
        assert_eq!(parse_limit_arg("2048K"), Ok(2));
        assert!(parse_limit_arg("1536K")
            .unwrap_err()
            .contains("use 1M or 2M"));
        assert!(parse_limit_arg("lots").is_err());
        assert_eq!(
            parse_limit_arg("0").unwrap_err(),
            "a limit must be more than 0; `ballast limit clear` removes it"
        );
        assert_eq!(parse_balloon_arg("0"), Ok(0));
        assert_eq!(parse_balloon_arg("0M"), Ok(0));
        assert!(parse_balloon_arg("8192T")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn numeric_flags_refuse_nan_infinity_and_negatives() {
        for bad in ["nan", "inf", "-inf", "-5", "0", "0.001", "3601", "1e9", ""] {
            let flag = format!("--sample-interval={bad}");
            let err = run_args(&[&flag]).unwrap_err().to_string();
            assert!(
                err.contains("is not a number of seconds from 0.01 to 3600"),
                "{bad}: {err}"
            );
        }
        let ok = run_args(&["--sample-interval", "0.25"])
            .unwrap()
            .into_config();
        assert_eq!(ok.sample_interval, std::time::Duration::from_millis(250));
        for bad in ["0", "-1", "255", "two"] {
            let flag = format!("--vcpus={bad}");
            let err = run_args(&[&flag]).unwrap_err().to_string();
            assert!(
                err.contains("give a whole number from 1 to 254"),
                "{bad}: {err}"
            );
        }
        let err = run_args(&["--vsock-sock", "/v", "--vsock-cid", "2"]).unwrap_err();
        assert!(err.to_string().contains("from 3 to 4294967294"), "{err}");
        let err = run_args(&["--memory", "20000K"]).unwrap_err().to_string();
        assert!(err.contains("use 19M or 20M"), "{err}");
        let err = run_args(&["--memory", "100K"]).unwrap_err().to_string();
        assert!(err.contains("use 1M"), "{err}");
        assert_eq!(run_args(&["--memory", "1.5G"]).unwrap().memory, 1536 << 20);
        assert_eq!(
            run_args(&["--limit", "384MiB"]).unwrap().limit,
            Some(384 << 20)
        );
        for bad in ["-5", "0", "1.5", "4294967296000"] {
            let args = [
                "ballast",
                "agent",
                "--vsock-sock",
                "/v",
                "deactivate-file",
                "--",
                bad,
            ];
            let err = Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(
                err.contains("is not a number of guest pages"),
                "{bad}: {err}"
            );
        }
        let top = Cli::try_parse_from(["ballast", "top", "--api-sock", "/s", "--interval", "nan"]);
        assert!(top.unwrap_err().to_string().contains("from 0.1 to 60"));
    }

    fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut args = vec!["ballast", "run", "--kernel", "/k"];
        args.extend_from_slice(extra);
        match Cli::try_parse_from(args)?.command {
            Command::Run(run) => Ok(*run),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn net_devices_come_in_order_and_bad_ones_are_refused_with_the_reason() {
        let config = run_args(&[
            "--net",
            "tap=tap0",
            "--net",
            "tap=tap1,mac=06:00:00:00:00:01",
        ])
        .unwrap()
        .into_config();
        let taps: Vec<_> = config.net.iter().map(|n| n.tap.as_str()).collect();
        assert_eq!(taps, ["tap0", "tap1"]);
        assert_eq!(config.net[1].mac.unwrap().to_string(), "06:00:00:00:00:01");
        assert!(run_args(&[]).unwrap().into_config().net.is_empty());
        for (bad, why) in [
            ("tap0", "needs a value"),
            ("mac=06:00:00:00:00:01", "needs a TAP interface"),
            ("tap=tap0,mac=01:00:00:00:00:01", "multicast"),
            ("tap=tap0,queues=2", "unknown network option `queues`"),
        ] {
            let err = run_args(&["--net", bad]).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
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
                action:
                    LimitCommand::Set {
                        size_mib, client, ..
                    },
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
