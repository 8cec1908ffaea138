//! /proc/pressure/memory (pressure stall information).

use std::io;
use std::path::Path;

use super::read_bounded;
use crate::protocol::{MemoryPressure, Pressure};

/// Reads /proc/pressure/memory; `None` when the kernel has no PSI (the file is missing, or
/// reading it fails with EOPNOTSUPP when booted with `psi=0`).
pub fn read() -> io::Result<Option<MemoryPressure>> {
    match read_bounded(Path::new("/proc/pressure/memory"), 4096) {
        Ok(content) => Ok(parse(&content)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Parses the content; `None` without a `some` line.
pub fn parse(content: &[u8]) -> Option<MemoryPressure> {
    let text = String::from_utf8_lossy(content);
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let mut pressure = Pressure::default();
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            match key {
                "avg10" => pressure.avg10 = percent(value),
                "avg60" => pressure.avg60 = percent(value),
                "avg300" => pressure.avg300 = percent(value),
                "total" => pressure.total_us = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        *slot = Some(pressure);
    }
    Some(MemoryPressure { some: some?, full })
}

/// A percentage; anything that is not a finite number in 0..=100 reads as 0, so the JSON
/// stays valid (JSON has no NaN).
fn percent(value: &str) -> f64 {
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=100.0).contains(&v) => v,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_sample() {
        let psi = parse(
            b"some avg10=1.25 avg60=0.50 avg300=0.10 total=123456\n\
              full avg10=0.75 avg60=0.00 avg300=0.00 total=6543\n",
        )
        .unwrap();
        assert_eq!(psi.some.avg10, 1.25);
        assert_eq!(psi.some.avg60, 0.5);
        assert_eq!(psi.some.total_us, 123456);
        let full = psi.full.unwrap();
        assert_eq!(full.avg10, 0.75);
        assert_eq!(full.total_us, 6543);
    }

    #[test]
    fn some_only() {
        let psi = parse(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        assert!(psi.full.is_none());
    }

    #[test]
    fn garbage_does_not_panic() {
        assert!(parse(b"").is_none());
        assert!(parse(b"full avg10=1.00").is_none());
        for content in [
            &b"some"[..],
            b"some avg10=NaN avg60=inf avg300=-1 total=-5",
            b"some avg10 avg60== total=99999999999999999999999",
            b"\xff some avg10=1",
        ] {
            if let Some(psi) = parse(content) {
                assert!(psi.some.avg10.is_finite());
                assert!(serde_json::to_string(&psi).is_ok());
            }
        }
    }

    #[test]
    fn reads_this_machine() {
        read().unwrap();
    }
}
