//! The `ballast` subcommands that talk to a running ballast, and the socket they use.

use super::*;

// Long on purpose: one VM driven through every subcommand in turn, as a user would.
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
        stderr(&out).contains("'1536K' is 1.50 MiB, and this takes whole MiB: use 1M or 2M"),
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

#[test]
fn at_exit_a_socket_bound_there_since_by_someone_else_stays() {
    let mut b = default_vm();
    // Another program took the path over (after removing ballast's socket file).
    std::fs::remove_file(&b.sock).unwrap();
    let other = std::os::unix::net::UnixListener::bind(&b.sock).unwrap();
    // SAFETY: a plain signal to the child this test started.
    assert_eq!(unsafe { libc::kill(b.pid() as i32, libc::SIGTERM) }, 0);
    let status = b.wait_exit(Duration::from_secs(10)).expect("ballast exits");
    assert_eq!(status.code(), Some(0), "{}", b.stderr_text());
    assert!(
        b.sock.exists(),
        "ballast removed a socket that was not its own"
    );
    UnixStream::connect(&b.sock).unwrap();
    drop(other);
}

#[test]
fn metrics_prints_the_prometheus_text() {
    let b = default_vm();
    let out = cli(&b, &["metrics"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("# TYPE ballast_memory_reclaim_steps_total counter\n"),
        "{text}"
    );
    assert!(text.contains("ballast_memory_resident_bytes "), "{text}");
}
