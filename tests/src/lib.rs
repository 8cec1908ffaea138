//! Runs scenario folders through the harness and checks their results.
//!
//! `tests/harness/run-scenario.sh` boots the guest (directly, or inside the nested
//! L1 test host) and prints one stream of JSON lines per scenario; this crate parses
//! the streams into [`Outcome`]s and checks them against each scenario's
//! `expect.json`:
//!
//! ```json
//! {"ballast_exit": 0, "results": {"nproc": 2, "memtotal_kib": {"min": 200000, "max": 262144}}}
//! ```
//!
//! Top-level keys other than `results` are checked against what the harness
//! reports (`ballast_exit`, `l1_kvm`, ...); `results` against what the guest
//! printed on `BALLAST-RESULT` lines. A value is matched exactly, except an
//! object made of only `min` and/or `max`, which is an inclusive numeric range.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// What the harness reported about one scenario run.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub scenario: String,
    /// `direct` or `nested`.
    pub mode: String,
    pub console_log: Option<PathBuf>,
    /// Facts from the harness: `ballast_exit`, `console_log`, `harness_*` (`harness_timeout`,
    /// `harness_error`, `harness_seconds`, `harness_guest_poweroff`, `harness_stalled_s`,
    /// `harness_guest_stall_reports`), `l1_*` (nested mode:
    /// the L1 test host).
    pub harness: Map<String, Value>,
    /// Everything the guest printed as `BALLAST-RESULT {json}`, merged (later wins).
    pub results: Map<String, Value>,
}

fn is_harness_key(key: &str) -> bool {
    matches!(key, "ballast_exit" | "console_log")
        || key.starts_with("harness_")
        || key.starts_with("l1_")
}

/// Splits the harness's stdout into one [`Outcome`] per scenario. Each stream
/// starts with a line holding `harness_mode`.
pub fn parse_streams(stdout: &str) -> Result<Vec<Outcome>, String> {
    let mut outcomes: Vec<Outcome> = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let obj = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(obj)) => obj,
            _ => {
                // A result line garbled on the console (say, cut by a kernel
                // message) must not pass silently: it becomes a harness error.
                if let Some(o) = outcomes.last_mut() {
                    o.harness.insert(
                        "harness_error".into(),
                        format!("not a JSON object: {line}").into(),
                    );
                    continue;
                }
                return Err(format!(
                    "harness output does not start with a JSON object: {line}"
                ));
            }
        };
        if let Some(mode) = obj.get("harness_mode") {
            outcomes.push(Outcome {
                mode: mode.as_str().unwrap_or_default().to_owned(),
                scenario: obj
                    .get("scenario")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                ..Outcome::default()
            });
            continue;
        }
        let Some(o) = outcomes.last_mut() else {
            return Err(format!(
                "harness output does not start with harness_mode: {line}"
            ));
        };
        for (k, v) in obj {
            if k == "console_log" {
                o.console_log = v.as_str().map(PathBuf::from);
            }
            if is_harness_key(&k) {
                o.harness.insert(k, v);
            } else {
                o.results.insert(k, v);
            }
        }
    }
    Ok(outcomes)
}

/// Whether `actual` satisfies `expected`: equal, or inside a `{min, max}` range.
pub fn value_matches(expected: &Value, actual: &Value) -> bool {
    if let Value::Object(range) = expected {
        let is_range = !range.is_empty() && range.keys().all(|k| k == "min" || k == "max");
        if is_range {
            let Some(x) = actual.as_f64() else {
                return false;
            };
            let ok = |k: &str, cmp: fn(f64, f64) -> bool| {
                range
                    .get(k)
                    .and_then(Value::as_f64)
                    .is_none_or(|b| cmp(x, b))
            };
            return ok("min", |x, b| x >= b) && ok("max", |x, b| x <= b);
        }
    }
    match (expected.as_f64(), actual.as_f64()) {
        (Some(e), Some(a)) => e == a, // 1 and 1.0 are the same number
        _ => expected == actual,
    }
}

/// Checks an outcome against an `expect.json` value. On failure the message names
/// the scenario, the mode, every mismatch and the console log to read.
pub fn check(expect: &Value, outcome: &Outcome) -> Result<(), String> {
    let Some(expect) = expect.as_object() else {
        return Err("expect.json must hold a JSON object".into());
    };
    let mut failures = Vec::new();
    for key in ["harness_timeout", "harness_error"] {
        if let Some(v) = outcome.harness.get(key) {
            failures.push(format!("{key}: {v}"));
        }
    }
    // ballast exits 0 on a guest reset too (a reboot, or a triple fault when the guest
    // crashes): a guest that exits without the kernel's "reboot: Power down" fails the
    // scenario, unless expect.json says `"harness_guest_poweroff": false`.
    if !expect.contains_key("harness_guest_poweroff")
        && outcome.harness.get("harness_guest_poweroff") == Some(&Value::Bool(false))
        && outcome.harness.get("ballast_exit") == Some(&Value::from(0))
    {
        failures.push(
            "the guest never powered off (no \"reboot: Power down\" on its console): it reset \
             or crashed (ballast exits 0 on a guest reset, a triple fault included), or something \
             stopped ballast"
                .into(),
        );
    }
    let mut compare = |what: &str, key: &str, want: &Value, got: Option<&Value>| match got {
        None => failures.push(format!("{what} {key}: missing (expected {want})")),
        Some(got) if !value_matches(want, got) => {
            failures.push(format!("{what} {key}: got {got}, expected {want}"))
        }
        Some(_) => {}
    };
    for (key, want) in expect {
        if key == "results" {
            let Some(results) = want.as_object() else {
                return Err("expect.json: \"results\" must be an object".into());
            };
            for (k, w) in results {
                compare("result", k, w, outcome.results.get(k));
            }
        } else {
            compare("harness", key, want, outcome.harness.get(key));
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    // Evidence beside the failure: a stall of the environment (nested TCG) is not
    // ballast's doing, and the reader should not have to dig for it.
    let count = |key: &str| {
        outcome
            .harness
            .get(key)
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let stalled = count("harness_stalled_s");
    if stalled > 0 {
        failures.push(format!(
            "(the environment stalled for {stalled} s in all: nothing ran on the scenario's CPU; \
             the bounds left that time out)"
        ));
    }
    let guest_stalls = count("harness_guest_stall_reports");
    if guest_stalls > 0 {
        failures.push(format!(
            "(the guest kernel reported {guest_stalls} stall(s): soft lockup or RCU stall lines \
             on its console)"
        ));
    }
    let log = outcome
        .console_log
        .as_ref()
        .map_or("(none)".into(), |p| p.display().to_string());
    Err(format!(
        "scenario {} ({} mode) failed:\n  {}\nconsole log: {log}",
        outcome.scenario,
        outcome.mode,
        failures.join("\n  ")
    ))
}

/// The e2e tests need VM images and a ballast that boots; they run only with
/// `BALLAST_E2E=1` (`make test` sets it).
pub fn e2e_enabled() -> bool {
    if std::env::var("BALLAST_E2E").is_ok_and(|v| v == "1") {
        return true;
    }
    eprintln!("skipped: set BALLAST_E2E=1 (make test does)");
    false
}

/// The built-in scenarios: `tests/scenarios/`.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Every scenario folder (one with a `guest.sh`) directly under `dir`, sorted.
pub fn scenario_folders(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("guest.sh").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Reads a scenario's `expect.json`.
pub fn read_expect(dir: &Path) -> Result<Value, String> {
    let path = dir.join("expect.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs the harness on `dirs` (in one L1 boot when nested) and returns one
/// outcome per folder, in order. `BALLAST_E2E_BALLAST` names a ballast binary to
/// use instead of the one the harness builds (a relative path is taken from the
/// workspace root, where `make` runs).
pub fn run_harness(dirs: &[PathBuf]) -> Result<Vec<Outcome>, String> {
    // One VM run at a time: the L1 test host under TCG wants both cores, and two
    // of them side by side would only make each slower and nearer its timeout.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/run-scenario.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script);
    if let Some(bin) = std::env::var_os("BALLAST_E2E_BALLAST") {
        cmd.arg("--ballast")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(bin));
    }
    cmd.args(dirs);
    // stderr goes straight to the terminal: build and boot progress stays visible.
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\n{stdout}",
            script.display(),
            out.status
        ));
    }
    let outcomes = parse_streams(&stdout)?;
    if outcomes.len() != dirs.len() {
        return Err(format!(
            "expected {} scenario streams, got {}:\n{stdout}",
            dirs.len(),
            outcomes.len()
        ));
    }
    Ok(outcomes)
}

/// Runs scenario folders and checks each against its `expect.json`; all
/// failures are reported together.
pub fn run_and_check(dirs: &[PathBuf]) -> Result<(), String> {
    let expects = dirs
        .iter()
        .map(|d| read_expect(d))
        .collect::<Result<Vec<_>, _>>()?;
    let outcomes = run_harness(dirs)?;
    let mut failures = Vec::new();
    for (expect, outcome) in expects.iter().zip(&outcomes) {
        let log = outcome
            .console_log
            .as_ref()
            .map_or("-".into(), |p| p.display().to_string());
        let secs = outcome
            .harness
            .get("harness_seconds")
            .map_or("?".into(), Value::to_string);
        eprintln!(
            "[e2e] {}: {} mode, ran {secs} s, console log {log}",
            outcome.scenario, outcome.mode
        );
        if let Err(e) = check(expect, outcome) {
            // CI keeps only the test's output: the console's last lines carry the evidence
            // (a triple fault's vCPU state, an RCU stall, the scenario's last step).
            let tail = outcome
                .console_log
                .as_deref()
                .map(|p| console_tail(p, CONSOLE_TAIL_LINES))
                .unwrap_or_default();
            failures.push(format!("{e}{tail}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// How much of a failed scenario's console its test failure shows.
const CONSOLE_TAIL_LINES: usize = 30;

/// The last `lines` lines of a console log, indented under a heading; empty if unreadable.
fn console_tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = format!("\n  the console's last {} lines:", all.len() - start);
    for line in &all[start..] {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
}

/// Runs one built-in scenario (a folder under `tests/scenarios/`) and panics
/// with the mismatches if it fails. Does nothing unless `BALLAST_E2E=1`. One boot:
/// a scenario that fails is never run again (a pass on a rerun would hide a guest that
/// dies now and then; `tests/soak/nested.sh` is the tool for counting such deaths).
pub fn run_builtin(name: &str) {
    if !e2e_enabled() {
        return;
    }
    if let Err(e) = run_and_check(&[scenarios_dir().join(name)]) {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const STREAM: &str = r#"
{"harness_mode":"nested","scenario":"boot-2-vcpus"}
{"console_log":"/tmp/x/console.log"}
{"l1_kvm":true}
{"nproc":2}
{"memtotal_kib":480000}
{"ballast_exit":0}
{"harness_mode":"nested","scenario":"other"}
{"console_log":"/tmp/y/console.log"}
{"harness_timeout":true}
"#;

    #[test]
    fn parses_one_outcome_per_stream() {
        let o = parse_streams(STREAM).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].scenario, "boot-2-vcpus");
        assert_eq!(o[0].mode, "nested");
        assert_eq!(
            o[0].console_log.as_deref(),
            Some(Path::new("/tmp/x/console.log"))
        );
        assert_eq!(
            o[0].results,
            json!({"nproc": 2, "memtotal_kib": 480000})
                .as_object()
                .unwrap()
                .clone()
        );
        assert_eq!(o[0].harness["ballast_exit"], json!(0));
        assert_eq!(o[0].harness["l1_kvm"], json!(true));
        assert_eq!(o[1].harness["harness_timeout"], json!(true));
    }

    #[test]
    fn garbled_line_becomes_an_error() {
        let o =
            parse_streams("{\"harness_mode\":\"direct\"}\n{\"nproc\":[    1.2] oops\n").unwrap();
        assert!(o[0].harness["harness_error"]
            .as_str()
            .unwrap()
            .contains("oops"));
        assert!(parse_streams("garbage").is_err());
        assert!(parse_streams("{\"nproc\":1}").is_err());
    }

    #[test]
    fn later_results_win() {
        let o = parse_streams("{\"harness_mode\":\"direct\"}\n{\"a\":1}\n{\"a\":2,\"b\":true}\n")
            .unwrap();
        assert_eq!(o[0].results["a"], json!(2));
        assert_eq!(o[0].results["b"], json!(true));
    }

    #[test]
    fn exact_values_and_ranges() {
        assert!(value_matches(&json!(2), &json!(2)));
        assert!(value_matches(&json!(2), &json!(2.0)));
        assert!(!value_matches(&json!(2), &json!(3)));
        assert!(!value_matches(&json!(2), &json!("2")));
        assert!(value_matches(&json!(true), &json!(true)));
        assert!(!value_matches(&json!(true), &json!(false)));
        assert!(value_matches(&json!("6.1"), &json!("6.1")));
        let r = json!({"min": 200000, "max": 262144});
        assert!(value_matches(&r, &json!(200000)));
        assert!(value_matches(&r, &json!(262144)));
        assert!(!value_matches(&r, &json!(199999)));
        assert!(!value_matches(&r, &json!(262145)));
        assert!(!value_matches(&r, &json!("250000")));
        assert!(value_matches(&json!({"min": 1}), &json!(1e9)));
        assert!(value_matches(&json!({"max": 1.5}), &json!(-3)));
        // An object that is not a range is compared as it is.
        assert!(value_matches(&json!({"a": 1}), &json!({"a": 1})));
        assert!(!value_matches(&json!({"a": 1}), &json!({"a": 2})));
        assert!(!value_matches(&json!({}), &json!(5)));
    }

    #[test]
    fn check_passes_and_reports_every_failure() {
        let o = &parse_streams(STREAM).unwrap()[0];
        let ok = json!({"ballast_exit": 0, "results": {"nproc": 2, "memtotal_kib": {"min": 400000, "max": 524288}}});
        assert_eq!(check(&ok, o), Ok(()));

        let bad = json!({"ballast_exit": 1, "results": {"nproc": 1, "virtio_balloon_bound": true}});
        let e = check(&bad, o).unwrap_err();
        assert!(e.contains("harness ballast_exit: got 0, expected 1"), "{e}");
        assert!(e.contains("result nproc: got 2, expected 1"), "{e}");
        assert!(e.contains("result virtio_balloon_bound: missing"), "{e}");
        assert!(e.contains("console log: /tmp/x/console.log"), "{e}");
        assert!(e.contains("nested mode"), "{e}");
    }

    #[test]
    fn a_guest_that_never_powered_off_fails() {
        let stream = "{\"harness_mode\":\"nested\",\"scenario\":\"s\"}\n{\"nproc\":2}\n\
                      {\"harness_guest_poweroff\":false}\n{\"ballast_exit\":0}\n";
        let o = &parse_streams(stream).unwrap()[0];
        let e = check(&json!({"ballast_exit": 0, "results": {"nproc": 2}}), o).unwrap_err();
        assert!(e.contains("never powered off"), "{e}");
        // A scenario that means it says so.
        let ok = json!({"ballast_exit": 0, "harness_guest_poweroff": false});
        assert_eq!(check(&ok, o), Ok(()));
        // A failing ballast says enough by itself.
        let stream = stream.replace("\"ballast_exit\":0", "\"ballast_exit\":1");
        let o = &parse_streams(&stream).unwrap()[0];
        let e = check(&json!({"ballast_exit": 0}), o).unwrap_err();
        assert!(!e.contains("never powered off"), "{e}");
        // Powered off: fine.
        let stream = "{\"harness_mode\":\"direct\"}\n{\"harness_guest_poweroff\":true}\n{\"ballast_exit\":0}\n";
        let o = &parse_streams(stream).unwrap()[0];
        assert_eq!(check(&json!({"ballast_exit": 0}), o), Ok(()));
    }

    #[test]
    fn a_failure_names_the_stalls_beside_it() {
        let stream = "{\"harness_mode\":\"nested\",\"scenario\":\"s\"}\n\
                      {\"harness_stalled_s\":208}\n{\"harness_guest_stall_reports\":1}\n\
                      {\"harness_guest_poweroff\":true}\n{\"ballast_exit\":0}\n";
        let o = parse_streams(stream).unwrap();
        assert!(check(&json!({"ballast_exit": 0}), &o[0]).is_ok());
        let e = check(&json!({"ballast_exit": 1}), &o[0]).unwrap_err();
        assert!(e.contains("stalled for 208 s"), "{e}");
        assert!(e.contains("reported 1 stall(s)"), "{e}");
    }

    #[test]
    fn timeout_and_missing_exit_fail() {
        let o = &parse_streams(STREAM).unwrap()[1];
        let e = check(&json!({"ballast_exit": 0}), o).unwrap_err();
        assert!(e.contains("harness_timeout: true"), "{e}");
        assert!(e.contains("harness ballast_exit: missing"), "{e}");
        assert!(check(&json!([1]), o).is_err());
        assert!(check(&json!({"results": 3}), o).is_err());
    }
}
