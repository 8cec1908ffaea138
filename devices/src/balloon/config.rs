//! The balloon's launch options, as given on the command line:
//! `--balloon deflate_on_oom=on,free_page_reporting=on,stats_polling_interval_s=1`.

use std::fmt;
use std::str::FromStr;

use ballast_virtio::options::{self, switch_str, OptionError};

/// What the balloon device offers the guest. Fixed at creation: features are negotiated once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BalloonConfig {
    /// Offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM: the guest takes pages back from the balloon
    /// instead of OOM-killing.
    pub deflate_on_oom: bool,
    /// Offer VIRTIO_BALLOON_F_REPORTING: the guest reports free pages, which the host releases.
    pub free_page_reporting: bool,
    /// Seconds between statistics refreshes; 0 means no statistics queue at all.
    pub stats_polling_interval_s: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalloonConfigError {
    #[error(
        "unknown balloon option `{0}` (known: deflate_on_oom, free_page_reporting, \
         stats_polling_interval_s)"
    )]
    UnknownKey(String),
    #[error("balloon option `{0}` needs a value, as in `{0}=on`")]
    MissingValue(String),
    #[error("balloon option `{key}` must be `on` or `off`, not `{value}`")]
    InvalidSwitch { key: String, value: String },
    #[error("balloon option `{key}` must be a number of seconds from 0 to 65535, not `{value}`")]
    InvalidInterval { key: String, value: String },
    #[error("balloon option `{0}` is given twice")]
    Duplicate(String),
}

const DEFLATE_ON_OOM: &str = "deflate_on_oom";
const FREE_PAGE_REPORTING: &str = "free_page_reporting";
const STATS_POLLING_INTERVAL_S: &str = "stats_polling_interval_s";

impl From<OptionError> for BalloonConfigError {
    fn from(e: OptionError) -> Self {
        match e {
            OptionError::MissingValue(option) => BalloonConfigError::MissingValue(option),
            OptionError::Duplicate(key) => BalloonConfigError::Duplicate(key),
        }
    }
}

fn parse_switch(key: &str, value: &str) -> Result<bool, BalloonConfigError> {
    options::switch(value).ok_or_else(|| BalloonConfigError::InvalidSwitch {
        key: key.to_string(),
        value: value.to_string(),
    })
}

impl FromStr for BalloonConfig {
    type Err = BalloonConfigError;

    /// Comma-separated `key=value` options; options not given keep their default (off, no
    /// statistics). An empty string is the default configuration.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut config = BalloonConfig::default();
        for option in options::parse(s) {
            let (key, value) = option?;
            match key {
                DEFLATE_ON_OOM => config.deflate_on_oom = parse_switch(key, value)?,
                FREE_PAGE_REPORTING => config.free_page_reporting = parse_switch(key, value)?,
                STATS_POLLING_INTERVAL_S => {
                    config.stats_polling_interval_s =
                        value
                            .parse()
                            .map_err(|_| BalloonConfigError::InvalidInterval {
                                key: key.to_string(),
                                value: value.to_string(),
                            })?
                }
                _ => return Err(BalloonConfigError::UnknownKey(key.to_string())),
            }
        }
        Ok(config)
    }
}

impl fmt::Display for BalloonConfig {
    /// The command-line form, which `from_str` reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{DEFLATE_ON_OOM}={},{FREE_PAGE_REPORTING}={},{STATS_POLLING_INTERVAL_S}={}",
            switch_str(self.deflate_on_oom),
            switch_str(self.free_page_reporting),
            self.stats_polling_interval_s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_example() {
        let config: BalloonConfig =
            "deflate_on_oom=on,free_page_reporting=on,stats_polling_interval_s=1"
                .parse()
                .unwrap();
        assert_eq!(
            config,
            BalloonConfig {
                deflate_on_oom: true,
                free_page_reporting: true,
                stats_polling_interval_s: 1
            }
        );
    }

    #[test]
    fn missing_options_keep_their_defaults() {
        assert_eq!(
            "".parse::<BalloonConfig>().unwrap(),
            BalloonConfig::default()
        );
        let config: BalloonConfig = "stats_polling_interval_s=5".parse().unwrap();
        assert_eq!(config.stats_polling_interval_s, 5);
        assert!(!config.deflate_on_oom && !config.free_page_reporting);
        let config: BalloonConfig = " deflate_on_oom = off , free_page_reporting=true ,"
            .parse()
            .unwrap();
        assert!(!config.deflate_on_oom && config.free_page_reporting);
    }

    #[test]
    fn display_round_trips() {
        let config = BalloonConfig {
            deflate_on_oom: true,
            free_page_reporting: false,
            stats_polling_interval_s: 65535,
        };
        assert_eq!(config.to_string().parse::<BalloonConfig>().unwrap(), config);
    }

    #[test]
    fn errors_name_the_bad_key_and_value() {
        let err = "deflate_on_oom=maybe".parse::<BalloonConfig>().unwrap_err();
        assert_eq!(
            err,
            BalloonConfigError::InvalidSwitch {
                key: "deflate_on_oom".into(),
                value: "maybe".into()
            }
        );
        assert!(err.to_string().contains("deflate_on_oom") && err.to_string().contains("maybe"));

        let err = "stats_polling_interval_s=70000"
            .parse::<BalloonConfig>()
            .unwrap_err();
        assert_eq!(
            err,
            BalloonConfigError::InvalidInterval {
                key: "stats_polling_interval_s".into(),
                value: "70000".into()
            }
        );
        assert!(matches!(
            "stats_polling_interval_s=-1".parse::<BalloonConfig>(),
            Err(BalloonConfigError::InvalidInterval { .. })
        ));
        assert_eq!(
            "amount_mib=64".parse::<BalloonConfig>().unwrap_err(),
            BalloonConfigError::UnknownKey("amount_mib".into())
        );
        assert_eq!(
            "deflate_on_oom".parse::<BalloonConfig>().unwrap_err(),
            BalloonConfigError::MissingValue("deflate_on_oom".into())
        );
        assert_eq!(
            "deflate_on_oom=on,deflate_on_oom=off"
                .parse::<BalloonConfig>()
                .unwrap_err(),
            BalloonConfigError::Duplicate("deflate_on_oom".into())
        );
    }
}
