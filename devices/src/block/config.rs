//! A disk's launch options, as given on the command line: `--disk PATH[,readonly=on|off]`.
//!
//! Everything before the first comma is the image path (so a path containing a comma cannot be
//! given); the rest are `key=value` options.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use ballast_virtio::options::{self, switch_str, OptionError};

/// One disk: a raw image file (or host block device) and how the guest may use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// The raw disk image. Its size, rounded down to whole 512-byte sectors, is the disk's size.
    pub path: PathBuf,
    /// Open the image read-only and offer VIRTIO_BLK_F_RO: the guest sees a read-only disk and
    /// any write it sends anyway is refused.
    pub read_only: bool,
}

impl BlockConfig {
    /// A writable disk backed by `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        BlockConfig {
            path: path.into(),
            read_only: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockConfigError {
    #[error("a disk needs an image path, as in `disk.img` or `disk.img,readonly=on`")]
    MissingPath,
    #[error("unknown disk option `{0}` (known: readonly)")]
    UnknownKey(String),
    #[error("disk option `{0}` needs a value, as in `{0}=on`")]
    MissingValue(String),
    #[error("disk option `{key}` must be `on` or `off`, not `{value}`")]
    InvalidSwitch { key: String, value: String },
    #[error("disk option `{0}` is given twice")]
    Duplicate(String),
}

const READONLY: &str = "readonly";

impl From<OptionError> for BlockConfigError {
    fn from(e: OptionError) -> Self {
        match e {
            OptionError::MissingValue(option) => BlockConfigError::MissingValue(option),
            OptionError::Duplicate(key) => BlockConfigError::Duplicate(key),
        }
    }
}

impl FromStr for BlockConfig {
    type Err = BlockConfigError;

    /// `PATH[,readonly=on|off]`. The path is taken as written (no trimming); options may carry
    /// spaces around them, and empty options (a trailing comma) are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (path, rest) = s.split_once(',').unwrap_or((s, ""));
        if path.trim().is_empty() {
            return Err(BlockConfigError::MissingPath);
        }
        let mut config = BlockConfig::new(path);
        for option in options::parse(rest) {
            let (key, value) = option?;
            match key {
                READONLY => {
                    config.read_only =
                        options::switch(value).ok_or_else(|| BlockConfigError::InvalidSwitch {
                            key: key.to_string(),
                            value: value.to_string(),
                        })?
                }
                _ => return Err(BlockConfigError::UnknownKey(key.to_string())),
            }
        }
        Ok(config)
    }
}

impl fmt::Display for BlockConfig {
    /// The command-line form, which `from_str` reads back (for paths without commas).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{READONLY}={}",
            self.path.display(),
            switch_str(self.read_only)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_path_is_a_writable_disk() {
        let config: BlockConfig = "/var/lib/images/root.img".parse().unwrap();
        assert_eq!(config, BlockConfig::new("/var/lib/images/root.img"));
        assert!(!config.read_only);
        // Relative paths and spaces inside the path are kept as written.
        let config: BlockConfig = "my disk.img".parse().unwrap();
        assert_eq!(config.path, PathBuf::from("my disk.img"));
    }

    #[test]
    fn readonly_on_and_off() {
        let config: BlockConfig = "data.img,readonly=on".parse().unwrap();
        assert_eq!(config.path, PathBuf::from("data.img"));
        assert!(config.read_only);
        let config: BlockConfig = "data.img,readonly=off".parse().unwrap();
        assert!(!config.read_only);
        let config: BlockConfig = "data.img, readonly = true ,".parse().unwrap();
        assert!(config.read_only);
        let config: BlockConfig = "data.img,".parse().unwrap();
        assert!(!config.read_only);
    }

    #[test]
    fn display_round_trips() {
        for read_only in [false, true] {
            let config = BlockConfig {
                path: "/tmp/disk.img".into(),
                read_only,
            };
            assert_eq!(config.to_string().parse::<BlockConfig>().unwrap(), config);
        }
    }

    #[test]
    fn errors_name_the_bad_part() {
        assert_eq!(
            "".parse::<BlockConfig>().unwrap_err(),
            BlockConfigError::MissingPath
        );
        assert_eq!(
            ",readonly=on".parse::<BlockConfig>().unwrap_err(),
            BlockConfigError::MissingPath
        );

        let err = "d.img,readonly=yes".parse::<BlockConfig>().unwrap_err();
        assert_eq!(
            err,
            BlockConfigError::InvalidSwitch {
                key: "readonly".into(),
                value: "yes".into()
            }
        );
        assert!(err.to_string().contains("readonly") && err.to_string().contains("yes"));

        let err = "d.img,cache=none".parse::<BlockConfig>().unwrap_err();
        assert_eq!(err, BlockConfigError::UnknownKey("cache".into()));
        assert!(err.to_string().contains("`cache`"));

        assert_eq!(
            "d.img,readonly".parse::<BlockConfig>().unwrap_err(),
            BlockConfigError::MissingValue("readonly".into())
        );
        assert_eq!(
            "d.img,readonly=on,readonly=off"
                .parse::<BlockConfig>()
                .unwrap_err(),
            BlockConfigError::Duplicate("readonly".into())
        );
    }
}
