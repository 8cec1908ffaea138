//! The agent over its socket: the protocol, errors, reconnection.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use ballast_agent::protocol::{DeactivateAnon, PROTOCOL_VERSION};
use common::Agent;
use serde_json::Value;

/// Sends raw bytes, reads one reply line as JSON.
fn raw_exchange(reader: &mut BufReader<std::os::unix::net::UnixStream>, bytes: &[u8]) -> Value {
    reader.get_mut().write_all(bytes).unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.ends_with('\n'), "reply {line:?} is not one line");
    serde_json::from_str(&line).unwrap()
}

fn meminfo_swap_kib() -> u64 {
    ballast_agent::proc::meminfo::read()
        .unwrap()
        .swap_total_kib
        .unwrap_or(0)
}

#[test]
fn hello_and_stats() {
    let agent = Agent::start(&[]);
    let mut client = agent.client();
    let hello = client.hello().unwrap();
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.page_size, common::PAGE);
    assert!(!hello.capabilities.kernel_version.is_empty());
    assert_eq!(hello.capabilities.swap, meminfo_swap_kib() > 0);
    assert!(hello.capabilities.process_madvise);
    eprintln!("hello: {hello:?}");

    let stats = client.stats().unwrap();
    assert!(stats.meminfo.mem_total_kib.unwrap() > 0);
    assert!(stats.meminfo.file_kib().is_some());
    assert!(stats.vmstat.pgmajfault.is_some());
    if std::fs::read("/proc/pressure/memory").is_ok() {
        assert!(stats.psi.is_some());
    }
}

#[test]
fn errors_keep_the_connection_up() {
    let agent = Agent::start(&[]);
    let mut conn = BufReader::new(agent.connect());

    let reply = raw_exchange(&mut conn, b"{\"id\":5,\"type\":\"defragment\"}\n");
    assert_eq!(reply["id"], 5);
    assert_eq!(reply["error"]["kind"], "unknown_request");

    let reply = raw_exchange(&mut conn, b"{\"id\":6,\"type\":\"deactivate_file\"}\n");
    assert_eq!(reply["id"], 6);
    assert_eq!(reply["error"]["kind"], "invalid_request");

    let reply = raw_exchange(&mut conn, b"{this is not json\n");
    assert_eq!(reply["id"], Value::Null);
    assert_eq!(reply["error"]["kind"], "malformed");

    let mut long = vec![b'{'; 70 * 1024];
    long.push(b'\n');
    let reply = raw_exchange(&mut conn, &long);
    assert_eq!(reply["id"], Value::Null);
    assert_eq!(reply["error"]["kind"], "line_too_long");

    // Still serving, on the same connection.
    let reply = raw_exchange(&mut conn, b"{\"id\":7,\"type\":\"stats\"}\n");
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["result"]["type"], "stats");
}

#[test]
fn a_host_can_disconnect_and_reconnect() {
    let mut agent = Agent::start(&[]);
    {
        // Half a request, then gone.
        let mut conn = agent.connect();
        conn.write_all(b"{\"id\":1,\"ty").unwrap();
    }
    {
        let mut client = agent.client();
        client.stats().unwrap();
    }
    let mut client = agent.client();
    assert_eq!(client.hello().unwrap().protocol_version, PROTOCOL_VERSION);
    assert!(agent.is_running());
}

#[test]
fn a_new_connection_beyond_the_limit_closes_the_oldest() {
    let agent = Agent::start(&["--max-connections", "2"]);
    let mut oldest = agent.connect();
    let mut first = agent.client();
    first.stats().unwrap();
    let mut second = agent.client();
    second.stats().unwrap();
    // The oldest was shut down to make room; the others work.
    oldest
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(oldest.read(&mut buf).unwrap(), 0);
    first.stats().unwrap();
    second.stats().unwrap();
}

#[test]
fn deactivate_anon_without_swap_is_skipped() {
    if meminfo_swap_kib() > 0 {
        eprintln!("skipped: this machine has swap, and the test must not page out its processes");
        return;
    }
    let agent = Agent::start(&[]);
    let report = agent
        .client()
        .deactivate_anon(DeactivateAnon::new(100_000, true))
        .unwrap();
    assert_eq!(report.skipped.as_deref(), Some("no swap"));
    assert_eq!(report.deactivated_pages, 0);
    assert_eq!(
        report.big.processes_touched + report.small.processes_touched,
        0
    );
}
