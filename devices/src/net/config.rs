//! A network device's launch options, as given on the command line: `--net
//! tap=NAME[,mac=MAC]`, and the guest's MAC address.

use std::fmt;
use std::str::FromStr;

use ballast_virtio::options::{self, OptionError};

/// An Ethernet address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A stable, locally administered unicast address derived from `seed` (the same seed gives
    /// the same address on every run and every build): the first six bytes of its FNV-1a hash,
    /// with the multicast bit cleared and the locally-administered bit set, so it never
    /// collides with a vendor's address.
    pub fn derived(seed: &str) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in seed.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let mut bytes = [0u8; 6];
        bytes.copy_from_slice(&hash.to_be_bytes()[..6]);
        bytes[0] = (bytes[0] & !0x01) | 0x02;
        MacAddr(bytes)
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = NetConfigError;

    /// Six two-digit hex bytes separated by colons; a multicast or all-zero address is refused
    /// (the guest could not use it as its own).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || NetConfigError::InvalidMac(s.to_string());
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(invalid)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        let mac = MacAddr(bytes);
        if mac.is_multicast() {
            return Err(NetConfigError::MulticastMac(s.to_string()));
        }
        if bytes == [0; 6] {
            return Err(NetConfigError::ZeroMac);
        }
        Ok(mac)
    }
}

/// One network device: the host TAP interface behind it and, optionally, the guest's MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The name of an existing TAP interface on the host.
    pub tap: String,
    /// The guest's MAC address; without one the VMM derives a stable one (see
    /// [`MacAddr::derived`]).
    pub mac: Option<MacAddr>,
}

impl NetConfig {
    pub fn new(tap: impl Into<String>) -> Self {
        NetConfig {
            tap: tap.into(),
            mac: None,
        }
    }

    /// The guest's MAC: the one given, or one derived from `vm` (what identifies the VM on
    /// this host) and the TAP's name, so a VM keeps its address across restarts.
    pub fn mac_or_derived(&self, vm: &str) -> MacAddr {
        self.mac
            .unwrap_or_else(|| MacAddr::derived(&format!("{vm}/{}", self.tap)))
    }
}

/// The longest interface name Linux takes (IFNAMSIZ less its NUL).
pub const MAX_IFNAME_LEN: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetConfigError {
    #[error("a network device needs a TAP interface, as in `tap=tap0` or `tap=tap0,mac=06:00:ac:10:00:02`")]
    MissingTap,
    #[error(
        "`{0}` is not a network interface name: 1 to {MAX_IFNAME_LEN} characters, without `/`, \
         `:` or blanks, and not `.` or `..`"
    )]
    InvalidTap(String),
    #[error(
        "`{0}` is not a MAC address: give six hex bytes separated by colons, as 06:00:ac:10:00:02"
    )]
    InvalidMac(String),
    #[error(
        "`{0}` is a multicast MAC address, which a guest cannot use as its own (the first byte \
         must be even, as in 06:00:ac:10:00:02)"
    )]
    MulticastMac(String),
    #[error("00:00:00:00:00:00 is not a usable MAC address")]
    ZeroMac,
    #[error("unknown network option `{0}` (known: tap, mac)")]
    UnknownKey(String),
    #[error("network option `{0}` needs a value, as in `tap=tap0`")]
    MissingValue(String),
    #[error("network option `{0}` is given twice")]
    Duplicate(String),
}

impl From<OptionError> for NetConfigError {
    fn from(e: OptionError) -> Self {
        match e {
            OptionError::MissingValue(option) => NetConfigError::MissingValue(option),
            OptionError::Duplicate(key) => NetConfigError::Duplicate(key),
        }
    }
}

/// Whether Linux would take `name` as an interface name (`dev_valid_name`).
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

const TAP: &str = "tap";
const MAC: &str = "mac";

impl FromStr for NetConfig {
    type Err = NetConfigError;

    /// `tap=NAME[,mac=MAC]`, in any order.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tap = None;
        let mut mac = None;
        for option in options::parse(s) {
            let (key, value) = option?;
            match key {
                TAP if valid_ifname(value) => tap = Some(value.to_string()),
                TAP => return Err(NetConfigError::InvalidTap(value.to_string())),
                MAC => mac = Some(value.parse()?),
                _ => return Err(NetConfigError::UnknownKey(key.to_string())),
            }
        }
        Ok(NetConfig {
            tap: tap.ok_or(NetConfigError::MissingTap)?,
            mac,
        })
    }
}

impl fmt::Display for NetConfig {
    /// The command-line form, which `from_str` reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TAP}={}", self.tap)?;
        if let Some(mac) = self.mac {
            write!(f, ",{MAC}={mac}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_and_an_optional_mac() {
        let config: NetConfig = "tap=tap0".parse().unwrap();
        assert_eq!(config, NetConfig::new("tap0"));
        let config: NetConfig = " mac = 06:00:AC:10:00:02 , tap=vm-web.0,".parse().unwrap();
        assert_eq!(config.tap, "vm-web.0");
        assert_eq!(config.mac, Some(MacAddr([6, 0, 0xac, 0x10, 0, 2])));
        assert_eq!(config.to_string(), "tap=vm-web.0,mac=06:00:ac:10:00:02");
        assert_eq!(config.to_string().parse::<NetConfig>().unwrap(), config);
    }

    #[test]
    fn errors_name_the_bad_part() {
        let err = |s: &str| s.parse::<NetConfig>().unwrap_err();
        assert_eq!(err(""), NetConfigError::MissingTap);
        assert_eq!(err("mac=06:00:00:00:00:01"), NetConfigError::MissingTap);
        for bad in ["a/b", "a:b", "a b", ".", "..", "sixteen-chars-xx"] {
            assert_eq!(
                err(&format!("tap={bad}")),
                NetConfigError::InvalidTap(bad.into()),
                "{bad}"
            );
        }
        assert!(matches!(err("tap="), NetConfigError::InvalidTap(_)));
        assert_eq!(err("tap=t,q=1"), NetConfigError::UnknownKey("q".into()));
        assert_eq!(err("tap"), NetConfigError::MissingValue("tap".into()));
        assert_eq!(err("tap=a,tap=b"), NetConfigError::Duplicate("tap".into()));
        for bad in [
            "06:00:00:00:00",
            "06:00:00:00:00:01:02",
            "06-00-00-00-00-01",
            "6:0:0:0:0:1",
            "0g:00:00:00:00:01",
            "+6:00:00:00:00:01",
        ] {
            assert_eq!(
                err(&format!("tap=t,mac={bad}")),
                NetConfigError::InvalidMac(bad.into()),
                "{bad}"
            );
        }
        assert_eq!(
            err("tap=t,mac=01:00:5e:00:00:01"),
            NetConfigError::MulticastMac("01:00:5e:00:00:01".into())
        );
        assert_eq!(err("tap=t,mac=00:00:00:00:00:00"), NetConfigError::ZeroMac);
        assert!(err("tap=t,mac=x").to_string().contains("06:00:ac:10:00:02"));
    }

    #[test]
    fn derived_macs_are_stable_local_unicast_and_differ_by_seed() {
        let a = NetConfig::new("tap0").mac_or_derived("host-a");
        assert_eq!(a, NetConfig::new("tap0").mac_or_derived("host-a"));
        assert_ne!(a, NetConfig::new("tap1").mac_or_derived("host-a"));
        assert_ne!(a, NetConfig::new("tap0").mac_or_derived("host-b"));
        // Fixed for good: a VM must keep its address across ballast versions.
        assert_eq!(MacAddr::derived("").to_string(), "ca:f2:9c:e4:84:22");
        for seed in ["", "a", "host/tap0", "x/y/z"] {
            let mac = MacAddr::derived(seed);
            assert!(!mac.is_multicast() && mac.0[0] & 0x02 != 0, "{mac}");
        }
        let given = MacAddr([6, 0, 0, 0, 0, 1]);
        let config = NetConfig {
            tap: "tap0".into(),
            mac: Some(given),
        };
        assert_eq!(config.mac_or_derived("host-a"), given);
    }
}
