//! The harness's own plumbing, without a VM: tests/harness/run-one.sh runs a stand-in
//! for ballast (a shell script that plays a guest on its console) with a scenario's
//! host.sh beside it, as it does in the L1 test host and in direct mode.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh scratch folder under the target directory's tmp space.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ballast-harness-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The stand-in: prints its arguments, a few console lines with CRs, answers each line of
/// stdin until `quit`, and exits 3.
const FAKE_BALLAST: &str = r#"#!/bin/sh
[ "$1" = run ] || { echo "usage: ballast run ..."; exit 2; }
shift
echo "fake ballast: $*"
printf 'guest line\r\n'
printf 'BALLAST-RESULT {"guest":1}\r\n'
echo "BALLAST-SYNC ready"
while read -r l; do printf 'guest got: %s\r\n' "$l"; [ "$l" = quit ] && break; done
echo "on stderr" >&2
exit 3
"#;

/// Runs run-one.sh on a scenario folder holding `host_sh` (if any); returns its stdout
/// and exit status.
fn run_one(name: &str, host_sh: Option<&str>, extra_env: &[(&str, &str)]) -> (String, i32) {
    let dir = scratch(name);
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    write(&bin.join("ballast"), FAKE_BALLAST, 0o755);
    let s = dir.join("scenario");
    std::fs::create_dir_all(&s).unwrap();
    write(&s.join("initrd.cpio.gz"), "", 0o644);
    write(&s.join("args"), "--vcpus 1 --memory 256M ", 0o644);
    write(&s.join("cmdline"), "ballast.mount=/dev/vda:/mnt", 0o644);
    write(
        &s.join("disks"),
        "/tmp/a.img\n/tmp/b.img,readonly=on\n",
        0o644,
    );
    if let Some(h) = host_sh {
        write(&s.join("host.sh"), h, 0o644);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/run-one.sh");
    let out = Command::new("sh")
        .arg(&script)
        .args(["--ballast", bin.join("ballast").to_str().unwrap()])
        .args([
            "--kernel",
            "/k",
            "--cmdline",
            "console=ttyS0",
            "--timeout",
            "60",
        ])
        .args(["--tmp", dir.join("tmp").to_str().unwrap(), "07"])
        .arg(&s)
        .envs(extra_env.iter().copied())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn without_host_script() {
    let (out, rc) = run_one("plain", None, &[]);
    assert_eq!(rc, 3, "{out}");
    assert!(out.starts_with("\nBALLAST-BEGIN 07\n"), "{out}");
    // Arguments in order: the scenario's, then its disks; its cmdline words appended.
    assert!(
        out.contains(
            "fake ballast: --kernel /k --initrd "
        ) && out.contains(
            "--cmdline console=ttyS0 ballast.mount=/dev/vda:/mnt --vcpus 1 --memory 256M --disk /tmp/a.img --disk /tmp/b.img,readonly=on\n"
        ),
        "{out}"
    );
    assert!(!out.contains("--api-sock"), "{out}");
    assert!(out.contains("\nguest line\n"), "carriage returns go: {out}");
    assert!(out.contains("\non stderr\n"), "{out}");
    assert!(!out.contains("host_exit"), "{out}");
    let last = out.trim_end().lines().last().unwrap();
    assert!(last.starts_with("BALLAST-EXIT 07 3 "), "{out}");
}

#[test]
fn host_script_drives_the_guest() {
    let host = r#"
echo "pid $BALLAST_PID sock ${BALLAST_API_SOCK##*/}"
wait_console '^BALLAST-SYNC ready$' 20 || exit 1
[ "$(ballast_rss_kib)" -gt 0 ] && host_result host_rss_ok true
command -v ballast >/dev/null && host_result host_ballast_on_path true
send_guest "hello there"
wait_console 'guest got: hello' 20 || exit 1
host_result host_line "$(console_line 'guest got')"
host_result host_quoted 'a "b" \c'
send_guest quit
"#;
    let (out, rc) = run_one("host", Some(host), &[]);
    assert_eq!(rc, 3, "{out}");
    assert!(out.contains("--api-sock "), "{out}");
    assert!(out.contains("[host] pid "), "{out}");
    assert!(out.contains(" sock api.sock\n"), "{out}");
    assert!(
        out.contains("[host] BALLAST-RESULT {\"host_rss_ok\":true}\n"),
        "{out}"
    );
    assert!(
        out.contains("[host] BALLAST-RESULT {\"host_ballast_on_path\":true}\n"),
        "{out}"
    );
    assert!(out.contains("\nguest got: hello there\n"), "{out}");
    assert!(
        out.contains("[host] BALLAST-RESULT {\"host_line\":\"guest got: hello there\"}\n"),
        "{out}"
    );
    assert!(
        out.contains(r#"[host] BALLAST-RESULT {"host_quoted":"a \"b\" \\c"}"#),
        "{out}"
    );
    assert!(out.contains("BALLAST-RESULT {\"host_exit\":0}\n"), "{out}");
    let last = out.trim_end().lines().last().unwrap();
    assert!(last.starts_with("BALLAST-EXIT 07 3 "), "{out}");
    // host.sh's lines all come before the exit marker and its host_exit.
    assert!(out.find("host_exit").unwrap() > out.find("host_line").unwrap());
}

#[test]
fn failed_host_script_stops_ballast() {
    // The guest waits for a line that never comes: once host.sh has failed, ballast is stopped.
    let host = "wait_console '^BALLAST-SYNC ready$' 20\necho giving up\nexit 4\n";
    let (out, rc) = run_one("fail", Some(host), &[("BALLAST_HOST_FAIL_GRACE_S", "1")]);
    assert!(out.contains("[host] giving up\n"), "{out}");
    assert!(out.contains("[harness] host.sh exited 4;"), "{out}");
    assert!(
        out.contains("[harness] stopping ballast (SIGTERM)"),
        "{out}"
    );
    assert!(out.contains("BALLAST-RESULT {\"host_exit\":4}\n"), "{out}");
    assert_eq!(rc, 143, "{out}");
}

/// Runs `script` with tests/harness/host-lib.sh and resources/guest/guest-lib.sh sourced
/// (POSIX sh), `input` on its stdin; returns its stdout.
fn with_libs(script: &str, input: &str) -> String {
    use std::io::Write as _;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let host_lib = root.join("harness/host-lib.sh");
    let guest_lib = root.join("../resources/guest/guest-lib.sh");
    let mut child = Command::new("sh")
        .args(["-c", &format!(". \"$1\" && . \"$2\" && {script}"), "sh"])
        .arg(&host_lib)
        .arg(&guest_lib)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `ballast status --json` as serde_json pretty-prints it, with "state" in four objects.
const STATUS: &str = r#"{
  "vm": {
    "state": "running",
    "vcpus": 2
  },
  "memory": {
    "guest": {
      "file_bytes": 1234
    },
    "host_enforce_first": {
      "state": "standby"
    },
    "state": "reclaiming",
    "agent": {
      "state": "ready"
    },
    "host_enforce": {
      "state": "active",
      "cgroup": "/sys/fs/cgroup/ballast-42"
    }
  },
  "balloon": {
    "amount_mib": 64,
    "actual_mib": 60
  }
}
"#;

#[test]
fn json_helpers_read_the_field_of_the_right_object() {
    let out = with_libs(
        r#"json=$(cat)
j() { printf '%s\n' "$json"; }
echo "$(j | json_object vm | json_field state)"
echo "$(j | json_object memory | json_field state)"
echo "$(j | json_object agent | json_field state)"
echo "$(j | json_object host_enforce | json_field cgroup)"
echo "$(j | json_object memory | json_field file_bytes)"
echo "$(j | json_object balloon | json_field actual_mib)"
echo "[$(j | json_field missing)]""#,
        STATUS,
    );
    assert_eq!(
        out,
        "running\nreclaiming\nready\n/sys/fs/cgroup/ballast-42\n1234\n60\n[]\n"
    );
}

#[test]
fn wait_until_retries_until_success_or_timeout() {
    // BALLAST_PID is this shell: "ballast" is alive while it waits.
    let out = with_libs(
        r#"BALLAST_PID=$$
n=0
third() { n=$((n + 1)); [ "$n" -ge 3 ]; }
wait_until 10 third && echo "ok after $n"
never() { false; }
wait_until 1 never || echo "gave up"
BALLAST_PID=999999999
wait_until 60 never || echo "ballast gone""#,
        "",
    );
    assert_eq!(out, "ok after 3\ngave up\nballast gone\n");
}

#[test]
fn sync_host_announces_and_waits_for_the_host() {
    let out = with_libs(
        r#"sync_host filled "free=12"; echo "host said: $host_line"
n=0
third() { n=$((n + 1)); [ "$n" -ge 3 ]; }
wait_for 10 third && echo "ok after $n""#,
        "go on\n",
    );
    assert_eq!(
        out,
        "BALLAST-SYNC filled free=12\nhost said: go on\nok after 3\n"
    );
}
