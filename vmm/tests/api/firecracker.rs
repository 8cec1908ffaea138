//! Firecracker's clients against ballast: the requests of Firecracker's published API
//! (`src/firecracker/swagger/firecracker.yaml`) for what ballast has — written here from that
//! spec, shaped as firecracker-go-sdk sends them — and the answers that spec allows.

use super::*;

/// One request of Firecracker's API and the statuses its spec lists for it.
struct FcRequest {
    operation: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    allowed: &'static [u16],
}

/// Sends it as a Firecracker client does (JSON in, JSON accepted), checks the status is one
/// Firecracker's spec lists and that an error has a `fault_message`.
fn send_fc(b: &Ballast, r: &FcRequest) -> support::HttpAnswer {
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n",
        r.method, r.path
    );
    if let Some(body) = r.body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    let answer = raw_exchange(&b.sock, request.as_bytes());
    assert!(
        r.allowed.contains(&answer.status),
        "{} ({} {} {:?}): {} {}",
        r.operation,
        r.method,
        r.path,
        r.body,
        answer.status,
        answer.body
    );
    if answer.status >= 400 {
        assert!(!answer.fault().is_empty());
    }
    answer
}

fn fc(
    operation: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    allowed: &'static [u16],
) -> FcRequest {
    FcRequest {
        operation,
        method,
        path,
        body,
        allowed,
    }
}

/// Every field Firecracker's schema requires is in the answer.
fn has_fields(answer: &support::HttpAnswer, required: &[&str]) {
    let json = answer.json();
    for field in required {
        assert!(
            json.get(field).is_some(),
            "{field} missing in {}",
            answer.body
        );
    }
}

// Long on purpose: one VM driven as firecracker-go-sdk drives a running microVM.
#[test]
fn firecracker_requests_get_firecracker_answers() {
    let mut b = ballast(Launch {
        guest: Guest::Ticker,
        ..Launch::default()
    });
    // describeBalloonConfig: Balloon requires amount_mib and deflate_on_oom.
    let balloon = send_fc(
        &b,
        &fc(
            "describeBalloonConfig",
            "GET",
            "/balloon",
            None,
            &[200, 400],
        ),
    );
    has_fields(&balloon, &["amount_mib", "deflate_on_oom"]);
    // patchBalloon, as UpdateBalloon sends it.
    let patch = fc(
        "patchBalloon",
        "PATCH",
        "/balloon",
        Some(r#"{"amount_mib":8}"#),
        &[204],
    );
    send_fc(&b, &patch);
    assert_eq!(b.json("/balloon")["amount_mib"], 8);
    // putBalloon after boot: 400, as Firecracker ("not supported after starting the microVM").
    let put = send_fc(
        &b,
        &fc(
            "putBalloon",
            "PUT",
            "/balloon",
            Some(r#"{"amount_mib":16,"deflate_on_oom":true,"stats_polling_interval_s":1}"#),
            &[400],
        ),
    );
    assert!(
        put.fault().contains("after starting the microVM"),
        "{}",
        put.body
    );
    assert_eq!(
        b.json("/balloon")["amount_mib"],
        8,
        "the refused PUT changed nothing"
    );
    // patchBalloonStatsInterval with the interval the balloon has (0: no statistics) is a
    // no-op; turning statistics on after boot is refused.
    for (body, status) in [
        (r#"{"stats_polling_interval_s":0}"#, 204),
        (r#"{"stats_polling_interval_s":5}"#, 400),
    ] {
        let stats = fc(
            "patchBalloonStatsInterval",
            "PATCH",
            "/balloon/statistics",
            Some(body),
            &[204, 400],
        );
        assert_eq!(send_fc(&b, &stats).status, status, "{body}");
    }
    send_fc(
        &b,
        &fc(
            "describeBalloonStats",
            "GET",
            "/balloon/statistics",
            None,
            &[400],
        ),
    );

    // patchVm, as PauseVM and ResumeVM send it; each twice, as Firecracker allows.
    let paused = r#"{"state":"Paused"}"#;
    let resumed = r#"{"state":"Resumed"}"#;
    for _ in 0..2 {
        send_fc(&b, &fc("patchVm", "PATCH", "/vm", Some(paused), &[204]));
        assert_eq!(b.json("/vm")["state"], "paused");
    }
    let ticks = b.settled_stdout_len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.stdout_len(), ticks, "the guest ran while paused");
    for _ in 0..2 {
        send_fc(&b, &fc("patchVm", "PATCH", "/vm", Some(resumed), &[204]));
        assert_eq!(b.json("/vm")["state"], "running");
    }
    assert!(
        eventually(Duration::from_secs(10), || b.stdout_len() > ticks),
        "the guest did not run again"
    );
    send_fc(
        &b,
        &fc(
            "patchVm",
            "PATCH",
            "/vm",
            Some(r#"{"state":"Stopped"}"#),
            &[400],
        ),
    );

    // createSyncAction: the three action types of Firecracker's InstanceActionInfo.
    let action = |body| {
        fc(
            "createSyncAction",
            "PUT",
            "/actions",
            Some(body),
            &[204, 400],
        )
    };
    let flush = send_fc(&b, &action(r#"{"action_type":"FlushMetrics"}"#));
    assert_eq!(flush.status, 204);
    let start = send_fc(&b, &action(r#"{"action_type":"InstanceStart"}"#));
    assert_eq!(start.status, 400);
    assert!(start.fault().contains("already running"), "{}", start.body);
    assert_eq!(b.json("/vm")["state"], "running");
    // Shutdown, as the go SDK does it.
    let shutdown = send_fc(&b, &action(r#"{"action_type":"SendCtrlAltDel"}"#));
    assert_eq!(shutdown.status, 204);
    assert_exits_0(&mut b);
}
