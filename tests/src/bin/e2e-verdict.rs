//! Judges a harness run: `run-scenario.sh DIR... | e2e-verdict DIR...` prints one JSON line per
//! scenario run, in order: `{"scenario", "pass", "failure", "console_log", "seconds"}`, where
//! `failure` is what [`ballast_e2e::check`] says against the folder's `expect.json`. The soak
//! (`tests/soak/nested.sh`) counts deaths with it; the exit status is 0 whenever the stream
//! could be read.

use std::io::Read;
use std::path::PathBuf;

use ballast_e2e::{check, parse_streams, read_expect};
use serde_json::{json, Value};

fn main() {
    let dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let mut stream = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut stream) {
        eprintln!("e2e-verdict: cannot read the harness output: {e}");
        std::process::exit(2);
    }
    let outcomes = match parse_streams(&stream) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("e2e-verdict: {e}");
            std::process::exit(2);
        }
    };
    if outcomes.len() != dirs.len() {
        eprintln!(
            "e2e-verdict: {} scenario folders but {} streams",
            dirs.len(),
            outcomes.len()
        );
        std::process::exit(2);
    }
    for (dir, outcome) in dirs.iter().zip(&outcomes) {
        let verdict = read_expect(dir).and_then(|expect| check(&expect, outcome));
        let line = json!({
            "scenario": outcome.scenario,
            "pass": verdict.is_ok(),
            "failure": verdict.err(),
            "console_log": outcome.console_log,
            "seconds": outcome.harness.get("harness_seconds").cloned().unwrap_or(Value::Null),
        });
        println!("{line}");
    }
}
