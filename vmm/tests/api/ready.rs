//! Readiness: `ballast run` as the example systemd unit starts it (`Type=notify`), the line it
//! prints when the VM is up, and the warning for a limit nobody can reach.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;

use super::*;

const UNIT: &str = include_str!("../../../resources/systemd/ballast@.service");

/// The unit's ExecStart as systemd would run it for instance `vm`: `${VAR}` is one argument,
/// `$VAR` is split on whitespace, `%i` is the instance.
fn exec_start(env: &BTreeMap<&str, &str>, run_dir: &std::path::Path) -> Vec<String> {
    let line = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    let mut args = Vec::new();
    for word in line.split_whitespace() {
        let word = word
            .replace("/usr/local/bin/ballast", support::ballast_bin())
            .replace("/run/ballast", &run_dir.display().to_string())
            .replace("%i", "vm");
        if let Some(name) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            args.push(env[name].to_string());
        } else if let Some(name) = word.strip_prefix('$') {
            args.extend(env[name].split_whitespace().map(str::to_string));
        } else {
            args.push(word);
        }
    }
    args
}

#[test]
fn the_systemd_unit_starts_a_vm_that_says_when_it_is_up() {
    let dir = support::TempDir::new("ready");
    let kernel = dir.0.join("vmlinux");
    std::fs::write(&kernel, support::elf_kernel(&[0xf4, 0xeb, 0xfd])).unwrap();
    let initrd = dir.0.join("initrd");
    std::fs::write(&initrd, vec![0u8; 4096]).unwrap();
    let kernel = kernel.display().to_string();
    let initrd = initrd.display().to_string();
    let env = BTreeMap::from([
        ("KERNEL", kernel.as_str()),
        ("INITRD", initrd.as_str()),
        ("CMDLINE", "console=ttyS0 reboot=k panic=-1"),
        ("MEMORY", "64M"),
        ("VCPUS", "1"),
        ("LIMIT", "48M"),
        (
            "BALLAST_ARGS",
            "--balloon deflate_on_oom=on --sample-interval 0.5",
        ),
    ]);
    let args = exec_start(&env, &dir.0);
    // systemd's end of Type=notify.
    let notify_path = dir.0.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let child = Command::new(&args[0])
        .args(&args[1..])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = notify.recv(&mut buf).expect("READY=1 within 30 s");
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    // Ready means ready: the API answers the moment systemd hears it.
    let sock = dir.0.join("vm.sock");
    let vm = http(&sock, "GET", "/vm", None);
    assert_eq!(vm.status, 200, "{}", vm.body);
    assert_eq!(vm.json()["memory_mib"], 64);
    assert!(message.starts_with("READY=1\n"), "{message:?}");
    assert!(
        message.contains(&format!("MAINPID={}\n", child.id())),
        "{message:?}"
    );
    assert!(message.contains("STATUS=VM up: pid"), "{message:?}");

    // SIGTERM, as `systemctl stop` sends it: exit 0 and the one line on stderr.
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "ballast: VM up: pid {}, 1 vCPU, 64 MiB of memory, limit 48 MiB, API {}, vsock {}\n",
        message
            .lines()
            .find_map(|l| l.strip_prefix("MAINPID="))
            .unwrap(),
        sock.display(),
        dir.0.join("vm.vsock").display()
    );
    assert_eq!(stderr, expected, "one line, and no warning");
}

#[test]
fn a_limit_without_an_api_socket_is_warned_about() {
    let dir = support::TempDir::new("warn");
    let kernel = dir.0.join("vmlinux");
    std::fs::write(&kernel, support::elf_kernel(&[0xf4, 0xeb, 0xfd])).unwrap();
    let mut child = Command::new(support::ballast_bin())
        .arg("run")
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "64M", "--vcpus", "1", "--limit", "32M"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("no API socket\n") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "ballast ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(
        seen.contains("--limit 32 MiB without --api-sock: nobody can see or change this limit"),
        "{seen}"
    );
    assert!(seen.contains("limit 32 MiB, no API socket\n"), "{seen}");
}
