//! The REST API and the CLI against a real `ballast run` on a real Unix socket, with tiny
//! hand-made guests (see `support`): every route's success and errors, bad input, a stalled
//! client, the OpenAPI spec against the served routes, and the client subcommands.

mod console;
mod firecracker;
mod http;
mod memory;
mod net;
mod openapi;
mod ready;
mod refusals;
mod subcommands;
mod watching;

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{http, parse_answer, raw_exchange, Ballast, Guest, Launch};

const MIB: f64 = (1 << 20) as f64;

const OPENAPI: &str = include_str!("../../openapi.yaml");

fn ballast(launch: Launch) -> Ballast {
    Ballast::start(launch)
}

fn default_vm() -> Ballast {
    ballast(Launch::default())
}

/// A two-vCPU VM with a busy guest, paused.
fn paused_busy_vm() -> Ballast {
    let b = ballast(Launch {
        guest: Guest::Ticker,
        vcpus: 2,
        ..Launch::default()
    });
    assert_eq!(action(&b, "Pause").status, 204);
    b
}

/// ballast exits, with status 0, within 10 s.
fn assert_exits_0(b: &mut Ballast) {
    let status = b.wait_exit(Duration::from_secs(10)).expect("ballast exits");
    assert_eq!(status.code(), Some(0), "{}", b.stderr_text());
}

/// The answer is a 400 whose fault message contains `why`.
fn assert_bad_request(answer: &support::HttpAnswer, why: &str) {
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.fault().contains(why), "{}", answer.body);
}

/// Waits until `cond` holds, for at most `timeout`.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn action(b: &Ballast, action: &str) -> support::HttpAnswer {
    b.send(
        "PUT",
        "/vm/actions",
        &format!(r#"{{"action_type": "{action}"}}"#),
    )
}

#[test]
fn get_vm_describes_the_running_vm() {
    let b = ballast(Launch {
        vcpus: 2,
        ..Launch::default()
    });
    let answer = b.get("/vm");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let vm = answer.json();
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["vcpus"], 2);
    assert_eq!(vm["memory_mib"], 64);
    assert_eq!(vm["ballast_version"], env!("CARGO_PKG_VERSION"));
    let first = vm["uptime_ms"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let later = b.json("/vm")["uptime_ms"].as_u64().unwrap();
    assert!(later >= first + 100, "{first} -> {later}");
}

#[test]
fn pause_parks_every_vcpu_until_resume() {
    // The ticker guest prints a '.' every few milliseconds while its vCPU runs.
    let b = ballast(Launch {
        guest: Guest::Ticker,
        vcpus: 2,
        ..Launch::default()
    });
    assert!(
        eventually(Duration::from_secs(30), || b.stdout_len() >= 3),
        "the guest never ticked"
    );

    let answer = action(&b, "Pause");
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(b.json("/vm")["state"], "paused");
    let ticks = b.settled_stdout_len();
    let cpu = support::thread_cpu_ticks(b.pid(), "vcpu");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(b.stdout_len(), ticks, "the guest ran while paused");
    let cpu_paused = support::thread_cpu_ticks(b.pid(), "vcpu") - cpu;
    // Parked threads sleep on a condition variable: at most a tick of rounding.
    assert!(
        cpu_paused <= 2,
        "vCPU threads used {cpu_paused} ticks while paused"
    );

    let again = action(&b, "Pause");
    assert_eq!(again.status, 409);
    assert_eq!(again.fault(), "the VM is already paused");
    assert_eq!(b.json("/vm")["state"], "paused");

    assert_eq!(action(&b, "Resume").status, 204);
    assert_eq!(b.json("/vm")["state"], "running");
    assert!(
        eventually(Duration::from_secs(30), || b.stdout_len() > ticks),
        "the guest did not run again after Resume"
    );
    let again = action(&b, "Resume");
    assert_eq!(again.status, 409);
    assert_eq!(again.fault(), "the VM is not paused");
}

#[test]
fn shutdown_ends_ballast_with_status_0() {
    let mut b = default_vm();
    let answer = action(&b, "Shutdown");
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_exits_0(&mut b);
    assert!(!b.sock.exists(), "the socket file is removed on exit");
}

#[test]
fn shutdown_of_a_paused_vm_ends_ballast_with_status_0() {
    let mut b = paused_busy_vm();
    assert_eq!(action(&b, "Shutdown").status, 204);
    assert_exits_0(&mut b);
}

#[test]
fn sigterm_while_paused_ends_ballast_with_status_0() {
    let mut b = paused_busy_vm();
    // SAFETY: kill(2) on the ballast child this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(b.pid() as i32, libc::SIGTERM) }, 0);
    assert_exits_0(&mut b);
}

fn cli(b: &Ballast, args: &[&str]) -> Output {
    Command::new(support::ballast_bin())
        .args(args)
        .arg("--api-sock")
        .arg(&b.sock)
        .env_remove("BALLAST_API_SOCK")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
