//! The balloon, the memory limit, the metrics and --host-enforce, over the API.

use super::*;

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
    assert_bad_request(&too_big, "64 MiB");
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
    let answer = set_stats_interval(&with, 5);
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(with.json("/balloon")["stats_polling_interval_s"], 5);
    let disable = set_stats_interval(&with, 0);
    assert_bad_request(&disable, "cannot be disabled");
    assert_eq!(with.json("/balloon")["stats_polling_interval_s"], 5);

    let without = default_vm();
    let get = without.get("/balloon/statistics");
    assert_bad_request(&get, "not enabled");
    let enable = set_stats_interval(&without, 5);
    assert_bad_request(&enable, "cannot be enabled");
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

/// `PATCH /balloon/statistics` with a new interval.
fn set_stats_interval(b: &Ballast, seconds: u16) -> support::HttpAnswer {
    let body = format!(r#"{{"stats_polling_interval_s": {seconds}}}"#);
    b.send("PATCH", "/balloon/statistics", &body)
}
