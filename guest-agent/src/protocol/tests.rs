//! The protocol's wire format: requests and replies both ways, and what a hostile peer may send.

use super::*;

fn roundtrip(request: Request) {
    let line = encode_request(42, &request);
    assert_eq!(line.last(), Some(&b'\n'));
    let (id, parsed) = parse_request(&line[..line.len() - 1]).unwrap();
    assert_eq!(id, 42);
    assert_eq!(parsed, request);
}

#[test]
fn requests_round_trip() {
    roundtrip(Request::Hello {
        protocol_version: 1,
    });
    roundtrip(Request::Stats);
    roundtrip(Request::DeactivateFile(DeactivateFile::new(8192)));
    roundtrip(Request::DeactivateFile(DeactivateFile {
        target_pages: 1,
        budget_ms: Some(300),
        allow_fallback: false,
    }));
    roundtrip(Request::DeactivateAnon(DeactivateAnon::new(1000, true)));
}

#[test]
fn request_wire_format_is_flat() {
    let line = encode_request(7, &Request::DeactivateAnon(DeactivateAnon::new(5, false)));
    let value: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"id":7,"type":"deactivate_anon","target_pages":5,"urgent":false})
    );
}

#[test]
fn defaults_and_unknown_fields_are_accepted() {
    let (id, request) =
        parse_request(br#"{"id":3,"type":"deactivate_file","target_pages":10,"future":1}"#)
            .unwrap();
    assert_eq!(id, 3);
    assert_eq!(request, Request::DeactivateFile(DeactivateFile::new(10)));
    let (_, request) = parse_request(br#"{"type":"hello","id":0}"#).unwrap();
    assert_eq!(
        request,
        Request::Hello {
            protocol_version: PROTOCOL_VERSION
        }
    );
    let (_, request) = parse_request(br#"{"id":1,"type":"stats","extra":[1,2]}"#).unwrap();
    assert_eq!(request, Request::Stats);
}

#[test]
fn unknown_request_keeps_its_id() {
    let err = parse_request(br#"{"id":9,"type":"frobnicate"}"#).unwrap_err();
    assert_eq!(err.id, Some(9));
    assert_eq!(err.error.kind, ErrorKind::UnknownRequest);
    assert!(err.error.message.contains("deactivate_file"));
}

#[test]
fn bad_parameters_are_invalid_requests() {
    for line in [
        &br#"{"id":1,"type":"deactivate_file"}"#[..],
        br#"{"id":1,"type":"deactivate_file","target_pages":-1}"#,
        br#"{"id":1,"type":"deactivate_anon","target_pages":"lots"}"#,
        br#"{"id":1}"#,
        br#"{"id":1,"type":7}"#,
    ] {
        let err = parse_request(line).unwrap_err();
        assert_eq!(err.id, Some(1), "{}", String::from_utf8_lossy(line));
        assert_eq!(err.error.kind, ErrorKind::InvalidRequest);
    }
}

#[test]
fn malformed_lines_have_no_id() {
    for line in [
        &b"not json"[..],
        b"{\"id\":1,",
        b"[1,2,3]",
        b"\"hello\"",
        br#"{"id":-1,"type":"stats"}"#,
        br#"{"id":1.5,"type":"stats"}"#,
        br#"{"id":"1","type":"stats"}"#,
        br#"{"type":"stats"}"#,
        b"\xff\xfe{}",
        b"",
    ] {
        let err = parse_request(line).unwrap_err();
        assert_eq!(err.id, None, "{}", String::from_utf8_lossy(line));
        assert_eq!(err.error.kind, ErrorKind::Malformed);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let mut line = b"{\"id\":1,\"type\":\"stats\",\"x\":".to_vec();
    line.extend(std::iter::repeat_n(b'[', 20_000));
    assert_eq!(
        parse_request(&line).unwrap_err().error.kind,
        ErrorKind::Malformed
    );
}

#[test]
fn replies_round_trip() {
    let replies = [
        Reply {
            id: Some(1),
            outcome: Outcome::Result(Response::Hello(Hello {
                protocol_version: 1,
                agent_version: "0.1.0".into(),
                page_size: 4096,
                capabilities: Capabilities {
                    kernel_version: "6.12.0".into(),
                    swap: false,
                    memory_reclaim: true,
                    cachestat: true,
                    process_madvise: true,
                },
            })),
        },
        Reply {
            id: Some(2),
            outcome: Outcome::Result(Response::Stats(Stats {
                psi: Some(MemoryPressure {
                    some: Pressure {
                        avg10: 1.5,
                        avg60: 0.25,
                        avg300: 0.0,
                        total_us: 12345,
                    },
                    full: None,
                }),
                ..Stats::default()
            })),
        },
        Reply {
            id: Some(3),
            outcome: Outcome::Result(Response::DeactivateAnon(AnonReport {
                skipped: Some("no swap".into()),
                target_pages: 10,
                ..AnonReport::default()
            })),
        },
        Reply {
            id: None,
            outcome: Outcome::Error(ErrorBody::new(ErrorKind::Malformed, "x")),
        },
    ];
    for reply in replies {
        let line = encode_reply(&reply);
        assert_eq!(parse_reply(&line[..line.len() - 1]).unwrap(), reply);
    }
}

#[test]
fn reply_wire_format() {
    let line = encode_reply(&Reply {
        id: Some(3),
        outcome: Outcome::Result(Response::DeactivateAnon(AnonReport {
            skipped: Some("no swap".into()),
            ..AnonReport::default()
        })),
    });
    let value: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(value["id"], 3);
    assert_eq!(value["result"]["type"], "deactivate_anon");
    assert_eq!(value["result"]["skipped"], "no swap");
    let line = encode_reply(&Reply {
        id: None,
        outcome: Outcome::Error(ErrorBody::new(ErrorKind::LineTooLong, "too long")),
    });
    assert_eq!(
        String::from_utf8(line).unwrap(),
        "{\"id\":null,\"error\":{\"kind\":\"line_too_long\",\"message\":\"too long\"}}\n"
    );
}

#[test]
fn unknown_error_kinds_read_as_other() {
    let reply = parse_reply(br#"{"id":1,"error":{"kind":"brand_new","message":"m"}}"#).unwrap();
    assert_eq!(
        reply.outcome,
        Outcome::Error(ErrorBody::new(ErrorKind::Other, "m"))
    );
}
