//! Requests the server refuses, and clients that misbehave.

use super::*;

// Long on purpose: a table of bad requests against one VM, each checked to change nothing.
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
    assert_eq!(allow.header("allow"), Some("GET,HEAD,PATCH,PUT"));

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
