//! The REST API and the CLI against a real `ballast run` on a real Unix socket, with tiny
//! hand-made guests (see `support`): every route's success and errors, bad input, a stalled
//! client, the OpenAPI spec against the served routes, and the client subcommands.

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

const OPENAPI: &str = include_str!("../openapi.yaml");

fn ballast(launch: Launch) -> Ballast {
    Ballast::start(launch)
}

fn default_vm() -> Ballast {
    ballast(Launch::default())
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
    let ticks = b.stdout_len();
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
    let status = b.wait_exit(Duration::from_secs(10)).expect("ballast exits");
    assert_eq!(status.code(), Some(0), "{}", b.stderr_text());
    assert!(!b.sock.exists(), "the socket file is removed on exit");
}

#[test]
fn shutdown_of_a_paused_vm_ends_ballast_with_status_0() {
    let mut b = ballast(Launch {
        guest: Guest::Ticker,
        vcpus: 2,
        ..Launch::default()
    });
    assert_eq!(action(&b, "Pause").status, 204);
    assert_eq!(action(&b, "Shutdown").status, 204);
    let status = b.wait_exit(Duration::from_secs(10)).expect("ballast exits");
    assert_eq!(status.code(), Some(0), "{}", b.stderr_text());
}

#[test]
fn sigterm_while_paused_ends_ballast_with_status_0() {
    let mut b = ballast(Launch {
        guest: Guest::Ticker,
        vcpus: 2,
        ..Launch::default()
    });
    assert_eq!(action(&b, "Pause").status, 204);
    // SAFETY: kill(2) on the ballast child this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(b.pid() as i32, libc::SIGTERM) }, 0);
    let status = b.wait_exit(Duration::from_secs(10)).expect("ballast exits");
    assert_eq!(status.code(), Some(0), "{}", b.stderr_text());
}

#[test]
fn balloon_target_is_set_and_checked() {
    let b = ballast(Launch {
        balloon: "deflate_on_oom=on,free_page_reporting=on",
        ..Launch::default()
    });
    let balloon = b.json("/balloon");
    assert_eq!(
        balloon,
        serde_json::json!({
            "amount_mib": 0,
            "deflate_on_oom": true,
            "stats_polling_interval_s": 0,
            "free_page_reporting": true,
            "actual_mib": 0,
            "actual_pages": 0,
        })
    );

    assert_eq!(
        b.send("PATCH", "/balloon", r#"{"amount_mib": 32}"#).status,
        204
    );
    assert_eq!(b.json("/balloon")["amount_mib"], 32);
    assert_eq!(b.json("/vm/memory")["balloon_target_mib"], 32);

    let too_big = b.send("PATCH", "/balloon", r#"{"amount_mib": 65}"#);
    assert_eq!(too_big.status, 400);
    assert!(too_big.fault().contains("64 MiB"), "{}", too_big.body);
    for bad in [
        r#"{"amount_mib": -1}"#,
        r#"{"amount_mib": 1.5}"#,
        r#"{"amount_mib": 4294967296}"#,
        r#"{}"#,
    ] {
        let answer = b.send("PATCH", "/balloon", bad);
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
    }
    assert_eq!(
        b.json("/balloon")["amount_mib"],
        32,
        "refusals change nothing"
    );
}

#[test]
fn balloon_statistics_follow_firecracker() {
    let with = ballast(Launch {
        balloon: "stats_polling_interval_s=1",
        ..Launch::default()
    });
    assert_eq!(
        with.send("PATCH", "/balloon", r#"{"amount_mib": 2}"#)
            .status,
        204
    );
    // No guest driver, so no guest statistics yet: only the sizes.
    assert_eq!(
        with.json("/balloon/statistics"),
        serde_json::json!({
            "target_pages": 512,
            "actual_pages": 0,
            "target_mib": 2,
            "actual_mib": 0,
        })
    );
    let answer = with.send(
        "PATCH",
        "/balloon/statistics",
        r#"{"stats_polling_interval_s": 5}"#,
    );
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(with.json("/balloon")["stats_polling_interval_s"], 5);
    let disable = with.send(
        "PATCH",
        "/balloon/statistics",
        r#"{"stats_polling_interval_s": 0}"#,
    );
    assert_eq!(disable.status, 400);
    assert!(
        disable.fault().contains("cannot be disabled"),
        "{}",
        disable.body
    );
    assert_eq!(with.json("/balloon")["stats_polling_interval_s"], 5);

    let without = default_vm();
    let get = without.get("/balloon/statistics");
    assert_eq!(get.status, 400);
    assert!(get.fault().contains("not enabled"), "{}", get.body);
    let enable = without.send(
        "PATCH",
        "/balloon/statistics",
        r#"{"stats_polling_interval_s": 5}"#,
    );
    assert_eq!(enable.status, 400);
    assert!(
        enable.fault().contains("cannot be enabled"),
        "{}",
        enable.body
    );
    assert_eq!(without.json("/balloon")["stats_polling_interval_s"], 0);
}

#[test]
fn memory_limit_is_validated_and_reported() {
    // ballast copies the 8 MiB initramfs into guest RAM: that much is resident on the host.
    let b = ballast(Launch {
        initrd_bytes: 8 << 20,
        ..Launch::default()
    });
    let memory = b.json("/vm/memory");
    assert_eq!(memory["memory_mib"], 64);
    assert_eq!(memory["limit_mib"], Value::Null);
    let resident = memory["resident_bytes"].as_u64().unwrap();
    assert!(
        (8 << 20..64 << 20).contains(&resident),
        "resident {resident}"
    );
    assert_eq!(memory["state"], "within_limit");
    // No agent without a vsock device; the manager's figures are numbers once it sampled.
    for absent in ["guest", "state_reason", "agent"] {
        assert_eq!(memory[absent], Value::Null, "{absent}");
    }
    for sampled in ["dirty_rate_bytes_per_s", "working_set_bytes"] {
        assert!(
            memory[sampled].is_null() || memory[sampled].is_u64(),
            "{sampled}"
        );
    }

    assert_eq!(
        b.send("PUT", "/vm/memory/limit", r#"{"limit_mib": 4}"#)
            .status,
        204
    );
    let memory = b.json("/vm/memory");
    assert_eq!(memory["limit_mib"], 4);
    // Over the limit: the manager is reclaiming, or (this guest has no balloon driver) gives up.
    let state = memory["state"].as_str().unwrap();
    assert!(
        ["reclaiming", "over_limit", "guest_unresponsive"].contains(&state),
        "{memory}"
    );

    assert_eq!(
        b.send("PUT", "/vm/memory/limit", r#"{"limit_mib": 32}"#)
            .status,
        204
    );
    // Within the limit again once the manager's next epoch has seen it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while b.json("/vm/memory")["state"] != "within_limit" {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            b.json("/vm/memory")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    for (bad, why) in [
        (r#"{"limit_mib": 0}"#, "more than 0"),
        (r#"{"limit_mib": 65}"#, "more than the guest's 64 MiB"),
        (r#"{}"#, "missing field `limit_mib`"),
        (r#"{"limit_mib": "32"}"#, "invalid type"),
        (r#"{"limit_mib": -5}"#, "invalid value"),
    ] {
        let answer = b.send("PUT", "/vm/memory/limit", bad);
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        assert!(answer.fault().contains(why), "{bad}: {}", answer.body);
    }
    assert_eq!(
        b.json("/vm/memory")["limit_mib"],
        32,
        "refusals change nothing"
    );

    assert_eq!(
        b.send("PUT", "/vm/memory/limit", r#"{"limit_mib": null}"#)
            .status,
        204
    );
    assert_eq!(b.json("/vm/memory")["limit_mib"], Value::Null);
}

/// `GET /metrics`, checked line by line: each series (name and labels as written) and its value.
fn metrics(b: &Ballast) -> BTreeMap<String, f64> {
    let answer = b.get("/metrics");
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut typed = BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in answer.body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(kind == "gauge" || kind == "counter", "{line}");
            assert!(kind == "gauge" || name.ends_with("_total"), "{line}");
            assert!(typed.insert(name.to_string()), "{name} typed twice");
        } else if !line.starts_with("# HELP ") {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            let family = series.split('{').next().unwrap();
            assert!(typed.contains(family), "{family} has no TYPE line");
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "{series} twice"
            );
        }
    }
    samples
}

#[test]
fn metrics_are_prometheus_text() {
    let b = default_vm();
    assert_eq!(b.get("/vm").status, 200);
    assert_eq!(b.get("/no/such/route").status, 404);
    assert_eq!(
        b.send("PUT", "/vm/memory/limit", r#"{"limit_mib": 16}"#)
            .status,
        204
    );
    let samples = metrics(&b);
    assert_eq!(samples["ballast_vm_state{state=\"running\"}"], 1.0);
    assert_eq!(samples["ballast_memory_limit_bytes"], (16 << 20) as f64);
    assert!(samples["ballast_memory_resident_bytes"] > 0.0);
    assert_eq!(samples["ballast_memory_guest_bytes"], (64 << 20) as f64);
    assert_eq!(samples["ballast_balloon_inflate_pfns_total"], 0.0);
    // The start-up check's GET /vm was answered too.
    assert!(
        samples["ballast_api_requests_total{method=\"GET\",route=\"/vm\",status=\"200\"}"] >= 2.0
    );
    assert_eq!(
        samples["ballast_api_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"],
        1.0
    );
    assert_eq!(
        samples
            ["ballast_api_requests_total{method=\"PUT\",route=\"/vm/memory/limit\",status=\"204\"}"],
        1.0
    );
}

/// A guest with no balloon driver over a limit it cannot meet: the memory manager inflates,
/// the balloon never moves, and with no agent either the guest is unresponsive. Every figure of
/// that state is in the metrics.
#[test]
fn metrics_follow_a_guest_that_ignores_its_balloon() {
    let b = ballast(Launch {
        initrd_bytes: 8 << 20,
        args: &["--limit", "4M", "--sample-interval", "0.05"],
        ..Launch::default()
    });
    assert!(
        eventually(Duration::from_secs(20), || b.json("/vm/memory")["state"]
            == "guest_unresponsive"),
        "{}",
        b.json("/vm/memory")
    );
    let m = metrics(&b);
    assert_eq!(m["ballast_memory_limit_bytes"], 4.0 * MIB);
    assert_eq!(m["ballast_memory_threshold_bytes"], 3.5 * MIB);
    assert!(m["ballast_memory_resident_bytes"] >= 8.0 * MIB);
    assert_eq!(m["ballast_memory_over_limit"], 1.0);
    for (cause, on) in [
        ("guest_unresponsive", 1.0),
        ("balloon_at_cap", 0.0),
        ("balloon_stuck", 0.0),
        ("starved", 0.0),
    ] {
        let series = format!("ballast_memory_over_limit_cause{{cause=\"{cause}\"}}");
        assert_eq!(m[&series], on, "{series}");
    }
    assert_eq!(m["ballast_memory_state{state=\"guest_unresponsive\"}"], 1.0);
    assert_eq!(m["ballast_memory_reclaim_episodes_total"], 1.0);
    assert!(m["ballast_memory_epochs_total"] >= 10.0);
    // The balloon was asked for what is over the threshold, up to its cap, and got nothing,
    // however long it waited; no agent, so no file or anon step.
    let step = |family: &str, step: &str| m[&format!("{family}{{step=\"{step}\"}}")];
    assert!(step("ballast_memory_reclaim_steps_total", "inflate") >= 1.0);
    assert!(step("ballast_memory_reclaim_asked_bytes_total", "inflate") >= 4.5 * MIB);
    assert_eq!(
        step("ballast_memory_reclaim_obtained_bytes_total", "inflate"),
        0.0
    );
    assert!(step("ballast_memory_reclaim_seconds_total", "inflate") > 0.0);
    for s in ["file", "anon", "deflate"] {
        assert_eq!(step("ballast_memory_reclaim_steps_total", s), 0.0, "{s}");
        assert_eq!(step("ballast_memory_reclaim_seconds_total", s), 0.0, "{s}");
    }
    assert_eq!(
        m["ballast_balloon_target_bytes"],
        step("ballast_memory_reclaim_asked_bytes_total", "inflate")
    );
    assert_eq!(m["ballast_balloon_actual_bytes"], 0.0);
    // With a limit, KVM's dirty log runs: a dirty rate, and a working set after a few epochs.
    assert!(m["ballast_memory_dirty_rate_bytes_per_second"] >= 0.0);
    assert_eq!(m["ballast_memory_working_set_known"], 1.0);
    assert!(m.contains_key("ballast_memory_working_set_bytes"));
    assert_eq!(m["ballast_host_enforce_state{state=\"off\"}"], 1.0);
    assert!(!m.contains_key("ballast_host_enforce_memory_high_bytes"));

    // No limit: no threshold, no dirty log, nothing over.
    assert_eq!(
        b.send("PUT", "/vm/memory/limit", r#"{"limit_mib": null}"#)
            .status,
        204
    );
    assert!(eventually(Duration::from_secs(10), || {
        metrics(&b)["ballast_memory_over_limit"] == 0.0
    }));
    let m = metrics(&b);
    for absent in [
        "ballast_memory_limit_bytes",
        "ballast_memory_threshold_bytes",
        "ballast_memory_working_set_bytes",
        "ballast_memory_dirty_rate_bytes_per_second",
    ] {
        assert!(!m.contains_key(absent), "{absent}");
    }
    assert_eq!(m["ballast_memory_working_set_known"], 0.0);
    // The cleared limit deflates the balloon the manager had inflated.
    assert!(eventually(Duration::from_secs(10), || {
        metrics(&b)["ballast_memory_reclaim_steps_total{step=\"deflate\"}"] >= 1.0
    }));
}

/// `--host-enforce` where the host has no cgroup v2 memory controller (the build machines are
/// cgroup v1 hosts): ballast runs, warns once, and says why in the API, the CLI and the metrics.
#[test]
fn host_enforce_says_where_it_stands() {
    let b = ballast(Launch {
        initrd_bytes: 8 << 20,
        args: &[
            "--host-enforce",
            "--limit",
            "4M",
            "--sample-interval",
            "0.05",
        ],
        ..Launch::default()
    });
    let memory = b.json("/vm/memory");
    let enforce = &memory["host_enforce"];
    assert_eq!(enforce["overhead_bytes"], 64 << 20);
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        // Placed (standby, then active once the guest is unresponsive), or refused with a reason.
        let state = enforce["state"].as_str().unwrap();
        assert!(
            ["standby", "active"].contains(&state) || enforce["reason"].is_string(),
            "{enforce}"
        );
        return;
    }
    assert_eq!(enforce["state"], "unavailable", "{enforce}");
    let reason = enforce["reason"].as_str().unwrap();
    assert!(reason.contains("not in a cgroup v2 hierarchy"), "{reason}");
    if std::path::Path::new("/sys/fs/cgroup/memory").exists() {
        assert!(reason.contains("this host uses cgroup v1"), "{reason}");
    }
    assert_eq!(enforce["cgroup"], Value::Null);
    assert_eq!(enforce["memory_high_bytes"], Value::Null);

    // It stays so while the guest ignores its balloon, and the warning came once.
    assert!(eventually(Duration::from_secs(20), || b.json("/vm/memory")
        ["state"]
        == "guest_unresponsive"));
    assert_eq!(b.json("/vm/memory")["host_enforce"]["state"], "unavailable");
    let warnings = b.stderr_text().matches("host enforce: unavailable").count();
    assert_eq!(warnings, 1, "{}", b.stderr_text());
    let m = metrics(&b);
    assert_eq!(m["ballast_host_enforce_state{state=\"unavailable\"}"], 1.0);
    assert_eq!(m["ballast_host_enforce_state{state=\"active\"}"], 0.0);

    let out = cli(&b, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("host enforce: unavailable (") && text.contains("cgroup v2"),
        "{text}"
    );
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let b = default_vm();
    let huge = format!(r#"{{"limit_mib": 1, "pad": "{}"}}"#, "x".repeat(70_000));
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        (
            "PUT",
            "/vm/memory/limit",
            Some("{"),
            400,
            "EOF while parsing",
        ),
        ("PUT", "/vm/memory/limit", Some("not json"), 400, "expected"),
        (
            "PUT",
            "/vm/memory/limit",
            Some(""),
            400,
            "EOF while parsing",
        ),
        (
            "PUT",
            "/vm/memory/limit",
            Some(r#"{"limit_mib": 1, "extra": true}"#),
            400,
            "unknown field `extra`",
        ),
        (
            "PATCH",
            "/balloon",
            Some(r#"{"amount_mib": "8"}"#),
            400,
            "invalid type: string \"8\", expected u32",
        ),
        (
            "PUT",
            "/vm/actions",
            Some(r#"{"action_type": "Reboot"}"#),
            400,
            "unknown variant `Reboot`",
        ),
        (
            "PUT",
            "/vm/actions",
            Some(r#"["Pause"]"#),
            400,
            "expected a JSON object, not an array",
        ),
        (
            "PUT",
            "/vm/actions",
            Some(r#"{"action_type": 1}"#),
            400,
            "invalid type: integer `1`",
        ),
        ("POST", "/vm", None, 405, "POST is not allowed on /vm"),
        ("DELETE", "/balloon", None, 405, "DELETE is not allowed"),
        ("GET", "/vm/actions", None, 405, "GET is not allowed"),
        ("PUT", "/metrics", Some("{}"), 405, "PUT is not allowed"),
        ("GET", "/nope", None, 404, "no such resource: /nope"),
        ("GET", "/vm/", None, 404, "no such resource"),
        ("GET", "/", None, 404, "no such resource"),
        (
            "PUT",
            "/vm/memory/limit",
            Some(&huge),
            413,
            "larger than 65536 bytes",
        ),
    ];
    for (method, path, body, status, why) in cases {
        let answer = http(&b.sock, method, path, body.map(str::as_bytes));
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.body);
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert!(
            answer.fault().contains(why),
            "{method} {path}: {:?} lacks {why:?}",
            answer.fault()
        );
    }
    let allow = http(&b.sock, "POST", "/balloon", None);
    assert_eq!(allow.header("allow"), Some("GET,HEAD,PATCH"));

    // A chunked body has no Content-Length to refuse early: it is cut off at the limit.
    let mut chunked =
        b"PUT /vm/memory/limit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", 30_000).as_bytes());
        chunked.extend_from_slice(&[b' '; 30_000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(&b.sock, &chunked);
    assert_eq!(answer.status, 413, "{}", answer.body);

    // Nothing above changed anything.
    assert_eq!(b.json("/vm/memory")["limit_mib"], Value::Null);
    assert_eq!(b.json("/balloon")["amount_mib"], 0);
    assert_eq!(b.json("/vm")["state"], "running");
}

#[test]
fn a_stalled_client_does_not_hold_up_the_others() {
    let b = default_vm();
    // Half a request line and headers, then nothing.
    let mut half_headers = UnixStream::connect(&b.sock).unwrap();
    half_headers
        .write_all(b"GET /vm HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Complete headers, a third of the body, then nothing.
    let mut half_body = UnixStream::connect(&b.sock).unwrap();
    half_body
        .write_all(
            b"PUT /vm/memory/limit HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n{\"limit",
        )
        .unwrap();
    // Connects and says nothing at all.
    let mut silent = UnixStream::connect(&b.sock).unwrap();

    let start = Instant::now();
    for _ in 0..50 {
        let one = Instant::now();
        assert_eq!(b.get("/vm/memory").status, 200);
        assert!(
            one.elapsed() < Duration::from_secs(2),
            "a request took {:?} beside the stalled clients",
            one.elapsed()
        );
    }
    assert!(start.elapsed() < Duration::from_secs(10));

    // The stalled ones are let go: the body is answered 408, the others are closed.
    for stream in [&mut half_headers, &mut half_body, &mut silent] {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
    }
    let mut raw = Vec::new();
    half_body.read_to_end(&mut raw).unwrap();
    let answer = parse_answer(&raw);
    assert_eq!(answer.status, 408);
    assert!(answer.fault().contains("did not arrive within 5 s"));
    for stream in [&mut half_headers, &mut silent] {
        let mut rest = Vec::new();
        // EOF (or a 408 from hyper) within the header timeout, not the 15 s read timeout.
        let read = stream.read_to_end(&mut rest);
        assert!(
            read.is_ok(),
            "the stalled connection was not closed: {read:?}"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(14));
    assert_eq!(b.json("/vm/memory")["limit_mib"], Value::Null);
}

/// The spec as JSON.
fn spec() -> Value {
    serde_yaml_ng::from_str(OPENAPI).expect("openapi.yaml parses")
}

fn spec_routes(spec: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

/// Resolves a `$ref` (or returns the schema itself).
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &spec["components"]["schemas"][name]
        }
        None => schema,
    }
}

#[test]
fn openapi_routes_are_the_served_routes() {
    let spec = spec();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let described = spec_routes(&spec);
    let b = default_vm();
    // Every path the spec names, and paths a user might guess.
    let mut paths: BTreeSet<String> = described.iter().map(|(_, p)| p.clone()).collect();
    for guess in [
        "/",
        "/vm/info",
        "/vm/pause",
        "/vm/memory/limits",
        "/actions",
        "/machine-config",
        "/balloon/stats",
        "/metrics/",
    ] {
        paths.insert(guess.to_string());
    }
    let mut served = BTreeSet::new();
    for path in &paths {
        for method in ["GET", "PUT", "PATCH", "POST", "DELETE"] {
            // A body no route accepts (unknown field): probing never changes the VM.
            let body = (method != "GET").then_some(&br#"{"probe": true}"#[..]);
            let answer = http(&b.sock, method, path, body);
            if answer.status != 404 && answer.status != 405 {
                if method != "GET" {
                    assert_eq!(answer.status, 400, "{method} {path}: {}", answer.body);
                }
                served.insert((method.to_string(), path.clone()));
            }
        }
    }
    assert_eq!(
        served, described,
        "served routes (left) vs openapi.yaml (right)"
    );
    assert_eq!(b.json("/vm")["state"], "running");

    // Every operation has an id, and every JSON body and answer has an example.
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["operationId"].is_string(), "{method} {path}");
            if let Some(body) = op.get("requestBody") {
                let examples = body["content"]["application/json"]["examples"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{method} {path}: no request examples"));
                assert!(!examples.is_empty());
            }
            let ok = op["responses"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(code, _)| code.starts_with('2'))
                .unwrap_or_else(|| panic!("{method} {path}: no success answer"))
                .1;
            if let Some(content) = ok.get("content") {
                let (_, media) = content.as_object().unwrap().iter().next().unwrap();
                assert!(media.get("example").is_some(), "{method} {path}");
            }
        }
    }
}

#[test]
fn openapi_examples_are_accepted_and_answers_match_the_schemas() {
    let spec = spec();
    // Big enough for every example (limit 256 MiB, balloon 64 MiB), with statistics on.
    let mut b = ballast(Launch {
        memory: "512M",
        balloon: "stats_polling_interval_s=1",
        ..Launch::default()
    });

    // The JSON answers have exactly the fields their schemas describe, and so do the examples.
    for (path, item) in spec["paths"].as_object().unwrap() {
        let Some(op) = item.get("get") else { continue };
        let media = &op["responses"]["200"]["content"]["application/json"];
        if media.is_null() {
            continue;
        }
        let schema = resolve(&spec, &media["schema"]);
        let properties: BTreeSet<&String> =
            schema["properties"].as_object().unwrap().keys().collect();
        let required: BTreeSet<String> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        let answer = b.json(path);
        let fields: BTreeSet<&String> = answer.as_object().unwrap().keys().collect();
        assert!(
            fields.is_subset(&properties),
            "GET {path}: {fields:?} vs {properties:?}"
        );
        for field in &required {
            assert!(answer.get(field).is_some(), "GET {path} lacks {field}");
        }
        let example: BTreeSet<&String> = media["example"].as_object().unwrap().keys().collect();
        assert!(
            example.is_subset(&properties),
            "GET {path} example: {example:?}"
        );
    }

    // Every request example is accepted; the VM actions go last, in the order that makes sense.
    let mut actions = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(examples) =
                op["requestBody"]["content"]["application/json"]["examples"].as_object()
            else {
                continue;
            };
            for (name, example) in examples {
                let body = serde_json::to_string(&example["value"]).unwrap();
                if path == "/vm/actions" {
                    actions.push((name.clone(), body));
                    continue;
                }
                let answer = b.send(&method.to_uppercase(), path, &body);
                assert_eq!(
                    answer.status / 100,
                    2,
                    "{method} {path} example {name} ({body}): {}",
                    answer.body
                );
            }
        }
    }
    let names: Vec<&str> = actions.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["pause", "resume", "shutdown"]);
    for (name, body) in &actions {
        let answer = b.send("PUT", "/vm/actions", body);
        assert_eq!(answer.status, 204, "action example {name}: {}", answer.body);
    }
    let status = b
        .wait_exit(Duration::from_secs(10))
        .expect("Shutdown ends ballast");
    assert_eq!(status.code(), Some(0));
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

#[test]
fn cli_subcommands_talk_to_the_socket() {
    let mut b = ballast(Launch {
        initrd_bytes: 8 << 20,
        ..Launch::default()
    });

    let out = cli(&b, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "state:        running\n",
        "vcpus:        1\n",
        "memory:       64 MiB\n",
        "limit:        none\n",
        "memory state: within_limit\n",
        "balloon:      target 0 MiB, guest holds 0 MiB\n",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    let out = cli(&b, &["status", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["vm"]["state"], "running");
    assert_eq!(json["memory"]["limit_mib"], Value::Null);
    assert_eq!(json["balloon"]["amount_mib"], 0);

    let out = cli(&b, &["limit", "set", "32M"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("memory limit: 32 MiB (resident "),
        "{}",
        stdout(&out)
    );
    let out = cli(&b, &["limit", "set", "4M", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["limit_mib"], 4);
    assert_ne!(json["state"], "within_limit");

    let out = cli(&b, &["limit", "set", "1G"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "ballast: a memory limit of 1024 MiB is more than the guest's 64 MiB of memory\n"
    );
    let out = cli(&b, &["limit", "set", "1G", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let fault: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(fault["fault_message"].as_str().unwrap().contains("1024"));
    let out = cli(&b, &["limit", "set", "1536K"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&out).contains("whole number of MiB"),
        "{}",
        stderr(&out)
    );

    // The socket may come from the environment instead of --api-sock.
    let out = Command::new(support::ballast_bin())
        .args(["limit", "clear"])
        .env("BALLAST_API_SOCK", &b.sock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("memory limit removed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(b.json("/vm/memory")["limit_mib"], Value::Null);

    let out = cli(&b, &["balloon", "set", "16M"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "balloon target: 16 MiB (the guest holds 0 MiB now)\n"
    );
    let out = cli(&b, &["balloon", "set", "20M", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["amount_mib"], 20);
    let out = cli(&b, &["balloon", "set", "100M"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("more than the guest's 64 MiB"));

    let out = cli(&b, &["pause"]);
    assert_eq!(stdout(&out), "the VM is paused\n", "{}", stderr(&out));
    let out = cli(&b, &["pause"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "ballast: the VM is already paused\n");
    let out = cli(&b, &["resume", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["state"], "running");

    // No ballast on the other end: a different failure, exit status 2.
    let out = Command::new(support::ballast_bin())
        .args(["status", "--api-sock"])
        .arg(b.dir.0.join("nobody.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot connect to the ballast API"),
        "{}",
        stderr(&out)
    );

    let out = cli(&b, &["shutdown"]);
    assert_eq!(
        stdout(&out),
        "the VM is shutting down\n",
        "{}",
        stderr(&out)
    );
    let status = b.wait_exit(Duration::from_secs(10)).expect("ballast exits");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_socket_is_private_and_not_shared() {
    let b = default_vm();
    let mode = std::fs::metadata(&b.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second ballast on the same socket is refused before it builds a VM.
    let kernel = b.dir.0.join("vmlinux");
    let out = Command::new(support::ballast_bin())
        .arg("run")
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "64M", "--api-sock"])
        .arg(&b.sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is taken"), "{}", stderr(&out));
    assert_eq!(b.json("/vm")["state"], "running");
}
