//! HTTP itself: clients that half-close, leave before their answer, send what is not HTTP, or
//! repeat a JSON field.

use std::net::Shutdown;

use super::*;

/// Sends `request`, shuts down the sending side (as socat does), and reads the answer.
fn half_closed(sock: &std::path::Path, request: &[u8]) -> Option<support::HttpAnswer> {
    let mut stream = UnixStream::connect(sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    (!raw.is_empty()).then(|| parse_answer(&raw))
}

#[test]
fn half_closed_clients_get_their_answers() {
    let b = default_vm();
    let get = b"GET /vm/memory HTTP/1.1\r\nHost: x\r\n\r\n";
    let answered = (0..40)
        .filter(|_| half_closed(&b.sock, get).is_some_and(|a| a.status == 200))
        .count();
    assert_eq!(answered, 40);

    let body = br#"{"amount_mib": 12}"#;
    let mut patch = format!(
        "PATCH /balloon HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    patch.extend_from_slice(body);
    let answer = half_closed(&b.sock, &patch).expect("an answer");
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(b.json("/balloon")["amount_mib"], 12);
}

#[test]
fn a_request_whose_client_left_is_carried_out_once() {
    let b = default_vm();
    for amount in [3, 5, 7] {
        let body = format!(r#"{{"amount_mib": {amount}}}"#);
        let request = format!(
            "PATCH /balloon HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // Sent whole, then the client is gone before any answer.
        let mut stream = UnixStream::connect(&b.sock).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        drop(stream);
        assert!(
            eventually(Duration::from_secs(10), || b.json("/balloon")["amount_mib"]
                == amount),
            "PATCH to {amount} MiB was not carried out"
        );
    }
    // Each was counted once, as answered (204) or not: the request counter says how many ran.
    let metrics = b.get("/metrics").body;
    let patched: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("ballast_api_requests_total{method=\"PATCH\",route=\"/balloon\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(patched, 3.0, "{metrics}");
}

#[test]
fn requests_that_are_not_http_get_a_fault_message() {
    let b = default_vm();
    let many_headers: String = (0..120).map(|i| format!("X-Header-{i}: v\r\n")).collect();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            b"GET /vm HTTP/1.1\r\nHo st: x\r\n\r\n".to_vec(),
            400,
            "cannot be parsed",
        ),
        (
            b"GET /vm HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
            400,
            "cannot be parsed",
        ),
        (
            b"G\x01T /vm HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "cannot be parsed",
        ),
        (
            b"GET /vm HTTP/9.9\r\n\r\n".to_vec(),
            400,
            "cannot be parsed",
        ),
        (
            format!("GET /vm HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            431,
            "headers are too many or too large",
        ),
        (
            format!("GET /vm HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(300_000)).into_bytes(),
            431,
            "headers are too many or too large",
        ),
    ];
    for (request, status, why) in cases {
        let answer = raw_exchange(&b.sock, &request);
        let shown = String::from_utf8_lossy(&request[..request.len().min(40)]).into_owned();
        assert_eq!(answer.status, status, "{shown:?}: {}", answer.body);
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert!(answer.fault().contains(why), "{shown:?}: {}", answer.body);
    }
    assert_eq!(b.json("/vm")["state"], "running");
}

#[test]
fn a_field_given_twice_is_refused() {
    let b = default_vm();
    for (method, path, body) in [
        (
            "PATCH",
            "/balloon",
            r#"{"amount_mib": 8, "amount_mib": 16}"#,
        ),
        (
            "PUT",
            "/vm/memory/limit",
            r#"{"limit_mib": 32, "limit_mib": null}"#,
        ),
        (
            "PUT",
            "/vm/actions",
            r#"{"action_type": "Pause", "action_type": "Resume"}"#,
        ),
        ("PATCH", "/vm", r#"{"state": "Paused", "state": "Paused"}"#),
    ] {
        let answer = b.send(method, path, body);
        assert_bad_request(&answer, "duplicate field");
    }
    assert_eq!(b.json("/balloon")["amount_mib"], 0);
    assert_eq!(b.json("/vm/memory")["limit_mib"], Value::Null);
    assert_eq!(b.json("/vm")["state"], "running");
}
