//! The anon passes against a real process: a copy of this test binary that holds 64 MiB of
//! anonymous memory. Run through the library with swap not required (this machine has none)
//! and only the child's PID, so that no other process on the machine is advised.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ballast_agent::protocol::DeactivateAnon;
use ballast_agent::reclaim::anon::{deactivate_anon, AnonOptions};

const CHILD_ENV: &str = "BALLAST_AGENT_TEST_ANON_CHILD";
const CHILD_MIB: usize = 64;
const READY: &str = "anon-child-ready";

/// Not a test of its own: the body of the child process.
#[test]
fn child_holding_anon_memory() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let memory = vec![0x11u8; CHILD_MIB << 20]; // every page written: resident anon
                                                // libtest may print "test ... " on the same line first.
    println!("{READY}");
    std::io::stdout().flush().unwrap();
    // Until the parent closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    std::hint::black_box(&memory);
}

/// The child, and its stdout kept open so that libtest can still write its summary there.
struct AnonChild(Child, BufReader<std::process::ChildStdout>);

impl AnonChild {
    fn start() -> AnonChild {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_holding_anon_memory",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap() > 0 {
            if line.trim_end().ends_with(READY) {
                return AnonChild(child, stdout);
            }
            line.clear();
        }
        let _ = child.wait();
        panic!("the child exited before allocating");
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for AnonChild {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = std::io::copy(&mut self.1, &mut std::io::sink());
        let _ = self.0.wait();
    }
}

fn options(pids: Vec<i32>) -> AnonOptions {
    AnonOptions {
        pids: Some(pids),
        require_swap: false,
    }
}

#[test]
fn cold_advice_reaches_the_process_in_batches_and_stops_at_the_target() {
    let child = AnonChild::start();
    let report = deactivate_anon(
        &DeactivateAnon::new(1000, false),
        &options(vec![child.pid()]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(report.skipped, None);
    assert_eq!(report.big.processes_touched, 1, "{report:?}");
    assert_eq!(report.processes_failed, 0);
    assert_eq!(report.deactivated_pages, 1000, "{report:?}");
    assert_eq!(report.big.batches, 1);

    let all = deactivate_anon(
        &DeactivateAnon::new(10_000_000, false),
        &options(vec![child.pid()]),
        Duration::from_secs(10),
    )
    .unwrap();
    let child_pages = (CHILD_MIB << 20) as u64 / ballast_agent::page_size();
    assert!(all.deactivated_pages >= child_pages, "{all:?}");
    assert!(all.big.batches >= child_pages / 1000, "{all:?}");
    // MADV_COLD frees nothing by itself and swaps nothing.
    assert_eq!(all.swapped_pages, 0);
}

#[test]
fn a_process_that_is_gone_is_counted_as_failed() {
    let child = AnonChild::start();
    let pid = child.pid();
    drop(child);
    let report = deactivate_anon(
        &DeactivateAnon::new(1000, false),
        &options(vec![pid]),
        Duration::from_secs(10),
    )
    .unwrap();
    // Either /proc/PID is already gone (not a candidate) or the advice failed: never touched.
    assert_eq!(
        report.big.processes_touched + report.small.processes_touched,
        0
    );
}
