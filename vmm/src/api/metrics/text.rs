//! The Prometheus text exposition format (version 0.0.4): a writer for metric families, and a
//! strict reader, with which the tests check the whole `GET /metrics` body and `ballast top`
//! and `ballast limit set --wait` read the step counters.

use std::fmt::{Display, Write};

/// Writes one metric family: its HELP and TYPE lines, then its samples.
pub struct Family<'a> {
    out: &'a mut String,
    name: String,
}

impl<'a> Family<'a> {
    pub fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family {
            out,
            name: name.to_string(),
        }
    }

    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) -> &mut Self {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A family with one unlabelled sample.
pub fn gauge(out: &mut String, name: &str, help: &str, value: impl Display) {
    Family::new(out, name, "gauge", help).sample(&[], value);
}

pub fn counter(out: &mut String, name: &str, help: &str, value: impl Display) {
    Family::new(out, name, "counter", help).sample(&[], value);
}

/// `1` or `0`.
pub fn flag(on: bool) -> u8 {
    u8::from(on)
}

/// A gauge family with one sample per state, labelled `state`: 1 for `current`, 0 for the others.
pub fn state_gauge<T: PartialEq>(
    out: &mut String,
    name: &str,
    help: &str,
    current: &T,
    states: &[(T, &str)],
) {
    let mut family = Family::new(out, name, "gauge", help);
    for (state, label) in states {
        family.sample(&[("state", label)], flag(state == current));
    }
}

/// One sample read back: the series (name and labels as written) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub family: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

fn name_ok(name: &str, colon: bool) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !name_ok(name, false) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((name.to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(out)
}

/// A sample's value as Prometheus reads it.
fn sample_value(value: &str) -> Option<f64> {
    match value {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        // Rust would also read "inf" or "infinity", which Prometheus does not.
        v if v
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            v.parse().ok()
        }
        _ => None,
    }
}

/// Reads an exposition strictly: every line a HELP, a TYPE or a sample; names and label names
/// valid; each family's HELP and TYPE once, before its samples, its samples together; counters
/// named `_total`; no series twice; values numbers.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    use std::collections::BTreeSet;
    let mut samples = Vec::new();
    let mut helped = BTreeSet::new();
    let mut typed = std::collections::BTreeMap::new();
    let mut done = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let err = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        let comment = line
            .strip_prefix("# HELP ")
            .map(|r| ("HELP", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)));
        if let Some((kind, rest)) = comment {
            let (name, what) = rest.split_once(' ').ok_or_else(|| err("no text".into()))?;
            if !name_ok(name, true) {
                return Err(err(format!("bad metric name {name:?}")));
            }
            if done.contains(name) || current.as_deref() == Some(name) && kind == "HELP" {
                return Err(err(format!("{name} again after its samples")));
            }
            if let Some(previous) = current.replace(name.to_string()) {
                if previous != name {
                    done.insert(previous);
                }
            }
            let fresh = if kind == "HELP" {
                helped.insert(name.to_string())
            } else {
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&what) {
                    return Err(err(format!("unknown type {what}")));
                }
                if what == "counter" && !name.ends_with("_total") {
                    return Err(err(format!("counter {name} is not named _total")));
                }
                typed.insert(name.to_string(), what.to_string()).is_none()
            };
            if !fresh {
                return Err(err(format!("second {kind} for {name}")));
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            return Err(err("not a HELP, TYPE or sample line".into()));
        }
        let (head, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| err("no value".into()))?;
        let value = sample_value(value).ok_or_else(|| err(format!("value {value:?}")))?;
        let (family, labels) = match head.split_once('{') {
            Some((name, rest)) => (
                name,
                labels(rest.strip_suffix('}').ok_or_else(|| err("no }".into()))?).map_err(err)?,
            ),
            None => (head, Vec::new()),
        };
        if current.as_deref() != Some(family) || !typed.contains_key(family) {
            return Err(err(format!("{family} has no TYPE line right before it")));
        }
        if !series.insert(head.to_string()) {
            return Err(err("the same series twice".into()));
        }
        samples.push(Sample {
            family: family.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn what_is_written_reads_back() {
        let mut out = String::new();
        Family::new(&mut out, "x_total", "counter", "Help with \\ and\nnewline.")
            .sample(&[("a", "1\"\n\\")], 3)
            .sample(&[("a", "2")], 4);
        gauge(&mut out, "y_bytes", "A gauge.", 1.5);
        let samples = parse(&out).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(
            samples[0].labels,
            [("a".to_string(), "1\"\n\\".to_string())]
        );
        assert_eq!(samples[2].value, 1.5);
    }

    #[test]
    fn malformed_expositions_are_refused() {
        for (bad, why) in [
            ("x 1\n", "no TYPE"),
            ("# TYPE x gauge\nx one\n", "value"),
            ("# TYPE x gauge\nx inf\n", "value"),
            ("# TYPE x counter\nx 1\n", "not named _total"),
            ("# TYPE x gauge\n# TYPE x gauge\n", "second TYPE"),
            ("# TYPE x gauge\nx 1\nx 2\n", "same series"),
            (
                "# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\n# TYPE x gauge\n",
                "after its samples",
            ),
            ("# TYPE 1x gauge\n", "bad metric name"),
            ("# TYPE x gauge\nx{1a=\"v\"} 1\n", "bad label name"),
            ("# TYPE x gauge\nx{a=\"v} 1\n", "unterminated"),
            ("# TYPE x gauge\nx{a=\"\\t\"} 1\n", "bad escape"),
            ("# TYPE x gauge\n\n", "not a HELP"),
            ("# TYPE x thing\n", "unknown type"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
