//! What the user asked for, validated before any KVM object exists.

use std::path::PathBuf;

use ballast_devices::balloon::BalloonConfig;
use ballast_devices::block::BlockConfig;
use ballast_devices::net::NetConfig;
use ballast_devices::vsock::VsockConfig;
use ballast_manager::host_enforce::HostEnforceConfig;
use ballast_manager::{limit, pages, LimitError};

/// The command line Linux gets unless the user gives one: the console on COM1, reboot through the
/// i8042 (which ballast turns into a clean exit), and no waiting after a panic.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub mem_size: u64,
    pub vcpus: u64,
    pub api_sock: Option<PathBuf>,
    pub balloon: BalloonConfig,
    /// Disks in the order the guest sees them (/dev/vda first).
    pub disks: Vec<BlockConfig>,
    pub vsock: Option<VsockConfig>,
    /// Network devices in the order the guest sees them (eth0 first).
    pub net: Vec<NetConfig>,
    /// The memory limit in guest pages: resident guest RAM is kept at or under it.
    pub limit_pages: Option<u64>,
    /// How often the memory manager samples residency and dirtiness.
    pub sample_interval: std::time::Duration,
    /// `--over-limit-after`: how long resident may stay above the limit before the VM is
    /// `over_limit` and the host backstop engages.
    pub over_limit_after: std::time::Duration,
    /// `--host-enforce`: a cgroup v2 `memory.high` behind the limit.
    pub host_enforce: HostEnforceConfig,
    /// `--tsc-deadline`: offer the local APIC's TSC-deadline timer (where KVM has it).
    pub tsc_deadline: bool,
    /// `--thp`: transparent huge pages for guest RAM.
    pub thp: bool,
    /// `--seccomp`: the filters the threads run under.
    pub seccomp: crate::seccomp::SeccompMode,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(transparent)]
    Size(#[from] SizeError),
    #[error("--memory must be more than 0")]
    ZeroMemory,
    #[error("--memory {asked} MiB is more than this host's {host} MiB of RAM")]
    MoreThanHost { asked: u64, host: u64 },
    #[error("--memory {0} MiB is below the 16 MiB a Linux guest needs to boot")]
    TooLittleMemory(u64),
    #[error("--limit: {0}")]
    Limit(#[from] LimitError),
    #[error("--vcpus must be at least 1")]
    ZeroVcpus,
    #[error("--vcpus {asked} is more than the {max} this host's KVM allows")]
    TooManyVcpus { asked: u64, max: u64 },
}

/// The units a size may carry, as the help text lists them.
pub const SIZE_UNITS_HELP: &str = "B, K, M, G, T (powers of 1024; KiB, MiB, GiB, TiB too) or \
     KB, MB, GB, TB (powers of 1000); a bare number is MiB";

/// Why a size on the command line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error(
        "'{0}' is not a size: give a number with a unit ({SIZE_UNITS_HELP}), e.g. 512M or 1.5G"
    )]
    Invalid(String),
    #[error("'{0}' is not a whole number of bytes")]
    NotWholeBytes(String),
    #[error("'{0}' is more than 16 EiB")]
    TooLarge(String),
    #[error("'{given}' is {mib} MiB, and this takes whole MiB: use {nearest}")]
    NotWholeMib {
        given: String,
        /// The size in MiB, to two decimals.
        mib: String,
        /// The nearest valid sizes, as the user would type them.
        nearest: String,
    },
    #[error("the size must be more than 0")]
    Zero,
}

/// Parses a size into bytes: a whole or decimal number, then an optional unit, case-insensitive:
/// `B`; `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB` (powers of 1024, as QEMU and Firecracker
/// count memory); `KB`, `MB`, `GB`, `TB` (powers of 1000, as disk vendors do). A bare number is
/// MiB, as QEMU's `-m`. `1.5G` is allowed; a size that comes to a fraction of a byte is not.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let invalid = || SizeError::Invalid(s.to_string());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" => 1 << 20,
        "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
        return Err(invalid());
    }
    // Exact arithmetic: the number as an integer over 10^(fraction digits).
    let too_large = || SizeError::TooLarge(s.to_string());
    if whole.len() + fraction.len() > 30 {
        return Err(too_large());
    }
    let scaled: u128 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| invalid())?;
    let denominator = 10u128.pow(fraction.len() as u32);
    let numerator = scaled.checked_mul(unit).ok_or_else(too_large)?;
    if numerator % denominator != 0 {
        return Err(SizeError::NotWholeBytes(s.to_string()));
    }
    u64::try_from(numerator / denominator).map_err(|_| too_large())
}

/// Parses a size that must come to a whole number of MiB, more than 0 (the API's unit for
/// memory, limits and balloons). A size between two MiB is refused with both neighbours.
pub fn parse_size_mib(s: &str) -> Result<u64, SizeError> {
    const MIB: u64 = 1 << 20;
    let bytes = parse_size(s)?;
    if bytes == 0 {
        return Err(SizeError::Zero);
    }
    if bytes % MIB != 0 {
        let (below, above) = (bytes / MIB, bytes / MIB + 1);
        let nearest = if below == 0 {
            format!("{above}M")
        } else {
            format!("{below}M or {above}M")
        };
        return Err(SizeError::NotWholeMib {
            given: s.trim().to_string(),
            mib: format!("{:.2}", bytes as f64 / MIB as f64),
            nearest,
        });
    }
    Ok(bytes / MIB)
}

/// Total RAM of this host, from /proc/meminfo.
pub fn host_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn validate_memory(mem_size: u64, host: Option<u64>) -> Result<(), ConfigError> {
    if mem_size == 0 {
        return Err(ConfigError::ZeroMemory);
    }
    if mem_size < 16 << 20 {
        return Err(ConfigError::TooLittleMemory(mem_size >> 20));
    }
    if let Some(host) = host {
        if mem_size > host {
            return Err(ConfigError::MoreThanHost {
                asked: mem_size >> 20,
                host: host >> 20,
            });
        }
    }
    Ok(())
}

/// The memory manager's one validation of a limit, before any KVM object exists.
pub fn validate_limit(limit_pages: Option<u64>, mem_size: u64) -> Result<(), ConfigError> {
    limit::validate(limit_pages, pages::from_bytes(mem_size))?;
    Ok(())
}

pub fn validate_vcpus(vcpus: u64, max: u64) -> Result<u8, ConfigError> {
    // APIC IDs are 8 bits wide in the MADT entries ballast writes.
    let max = max.min(254);
    match vcpus {
        0 => Err(ConfigError::ZeroVcpus),
        n if n > max => Err(ConfigError::TooManyVcpus { asked: n, max }),
        n => Ok(n as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("65536K"), Ok(64 << 20));
        assert_eq!(parse_size("65536 kib"), Ok(64 << 20));
        assert_eq!(parse_size("256"), Ok(256 << 20));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size(".5M"), Ok(1 << 19));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in [
            "", "M", ".", "12X", "-1M", "1..5G", "1.5.G", "nan", "inf", "1 0M", "M1",
        ] {
            assert_eq!(
                parse_size(bad),
                Err(SizeError::Invalid(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_size("0.1K"),
            Err(SizeError::NotWholeBytes("0.1K".into()))
        );
        for huge in ["99999999999999999G", "16777216T", &"9".repeat(40)] {
            assert!(
                matches!(parse_size(huge), Err(SizeError::TooLarge(_))),
                "{huge}"
            );
        }
    }

    #[test]
    fn mib_sizes_are_whole_and_refused_with_their_neighbours() {
        assert_eq!(parse_size_mib("512M"), Ok(512));
        assert_eq!(parse_size_mib("1G"), Ok(1024));
        assert_eq!(parse_size_mib("2048K"), Ok(2));
        assert_eq!(parse_size_mib("1.5G"), Ok(1536));
        assert_eq!(parse_size_mib("0"), Err(SizeError::Zero));
        let err = parse_size_mib("20000K").unwrap_err();
        assert_eq!(
            err.to_string(),
            "'20000K' is 19.53 MiB, and this takes whole MiB: use 19M or 20M"
        );
        let err = parse_size_mib("100K").unwrap_err();
        assert_eq!(
            err.to_string(),
            "'100K' is 0.10 MiB, and this takes whole MiB: use 1M"
        );
        assert!(parse_size_mib("512MB")
            .unwrap_err()
            .to_string()
            .contains("488M or 489M"));
    }

    #[test]
    fn memory_and_vcpu_limits() {
        assert_eq!(validate_memory(0, None), Err(ConfigError::ZeroMemory));
        assert!(validate_memory(1 << 20, None).is_err());
        assert!(matches!(
            validate_memory(4 << 30, Some(2 << 30)),
            Err(ConfigError::MoreThanHost { .. })
        ));
        assert!(validate_memory(512 << 20, Some(2 << 30)).is_ok());
        assert_eq!(validate_vcpus(0, 8), Err(ConfigError::ZeroVcpus));
        assert!(validate_vcpus(9, 8).is_err());
        assert_eq!(validate_vcpus(2, 8), Ok(2));
        assert!(validate_vcpus(255, 1024).is_err());
    }
}
