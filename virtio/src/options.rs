//! The `key=value,...` options every device takes on the command line (`--balloon
//! deflate_on_oom=on,stats_polling_interval_s=1`, `--disk PATH,readonly=on`): one syntax, one
//! parser. Each device's `config.rs` says which keys it knows and what their values mean, and
//! words the errors with its own name.

/// An option that breaks the syntax, whatever the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionError {
    /// `key` without `=value`.
    MissingValue(String),
    /// `key` given a second time.
    Duplicate(String),
}

/// The options of `s` in order, as `(key, value)`: comma-separated, spaces around keys and values
/// trimmed, empty options (a trailing comma) skipped. An option without `=`, or a key seen
/// before, is an error at its place, so a caller stopping at the first error reports the first
/// problem in the string.
pub fn parse(s: &str) -> impl Iterator<Item = Result<(&str, &str), OptionError>> {
    let mut seen: Vec<&str> = Vec::new();
    s.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(move |option| {
            let (key, value) = option
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| OptionError::MissingValue(option.to_string()))?;
            if seen.contains(&key) {
                return Err(OptionError::Duplicate(key.to_string()));
            }
            seen.push(key);
            Ok((key, value))
        })
}

/// An on/off value: `on` or `true`, `off` or `false`.
pub fn switch(value: &str) -> Option<bool> {
    match value {
        "on" | "true" => Some(true),
        "off" | "false" => Some(false),
        _ => None,
    }
}

/// `on` or `off`, as the options are written back.
pub fn switch_str(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_in_order_trimmed_and_checked() {
        let all: Vec<_> = parse(" a = on ,b=1,, c=x=y ,").collect();
        assert_eq!(all, vec![Ok(("a", "on")), Ok(("b", "1")), Ok(("c", "x=y"))]);
        let all: Vec<_> = parse("a=1,b,a=2").collect();
        assert_eq!(
            all,
            vec![
                Ok(("a", "1")),
                Err(OptionError::MissingValue("b".into())),
                Err(OptionError::Duplicate("a".into()))
            ]
        );
        assert_eq!(parse("").count(), 0);
    }

    #[test]
    fn switches() {
        assert_eq!(switch("on"), Some(true));
        assert_eq!(switch("true"), Some(true));
        assert_eq!(switch("off"), Some(false));
        assert_eq!(switch("false"), Some(false));
        assert_eq!(switch("yes"), None);
        assert_eq!(switch_str(true), "on");
    }
}
