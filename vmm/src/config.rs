//! What the user asked for, validated before any KVM object exists.

use std::path::PathBuf;

use ballast_devices::balloon::BalloonConfig;
use ballast_devices::block::BlockConfig;
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
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid size '{0}': use a number with an optional K, M or G suffix (a bare number is MiB), e.g. 512M")]
    BadSize(String),
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

/// Parses `512M`, `2G`, `65536K`, `1024` (MiB, as QEMU's `-m`) into bytes.
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadSize(s.to_string());
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        Some((i, 'T' | 't')) => (&t[..i], 40),
        Some(_) => (t, 20),
        None => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
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
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("65536K"), Ok(64 << 20));
        assert_eq!(parse_size("256"), Ok(256 << 20));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        for bad in ["", "M", "12X", "-1M", "1.5G", "99999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
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
