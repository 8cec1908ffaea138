//! Network devices as a user meets them: `GET /vm` and `GET /metrics` list them, the MAC a
//! VM gets without `mac=` is the same on every start, and a TAP that is not there stops the
//! launch with how to make it. The tests that need a real TAP make one with `ip tuntap`
//! where the host lets them (root), and say so and pass elsewhere.

use super::*;

/// A TAP interface the test made, deleted when dropped.
struct TestTap(String);

impl TestTap {
    fn make(tag: &str) -> Option<TestTap> {
        let name = format!("bta{}{tag}", std::process::id() % 1_000_000);
        let made = Command::new("ip")
            .args(["tuntap", "add", "dev", &name, "mode", "tap"])
            .output();
        match made {
            Ok(out) if out.status.success() => Some(TestTap(name)),
            other => {
                eprintln!("skipped: cannot make a TAP interface here ({other:?})");
                None
            }
        }
    }

    /// `--net tap=NAME` and more, as the launch's arguments.
    fn args(&self, extra: &str) -> &'static [&'static str] {
        let value: &'static str = Box::leak(format!("tap={}{extra}", self.0).into_boxed_str());
        Box::leak(Box::new(["--net", value]))
    }
}

impl Drop for TestTap {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", "dev", &self.0])
            .output();
    }
}

#[test]
fn get_vm_and_the_metrics_list_the_network_devices() {
    let Some(tap) = TestTap::make("a") else {
        return;
    };
    let launch = |args| Launch {
        args,
        ..Launch::default()
    };
    let b = ballast(launch(tap.args("")));
    let net = b.json("/vm")["net"].clone();
    let devices = net.as_array().unwrap();
    assert_eq!(devices.len(), 1, "{net}");
    assert_eq!(devices[0]["tap"], tap.0.as_str());
    // This guest has no driver: the device waits for one.
    assert_eq!(devices[0]["active"], false);
    let mac = devices[0]["mac"].as_str().unwrap().to_string();
    let first: u8 = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(first & 0x03, 0x02, "locally administered unicast: {mac}");
    let metrics = b.get("/metrics").body;
    let series = format!("ballast_net_rx_packets_total{{tap=\"{}\"}} 0\n", tap.0);
    assert!(metrics.contains(&series), "{metrics}");
    assert!(metrics.contains("# TYPE ballast_net_tx_refused_chains_total counter\n"));
    drop(b);

    // The same VM on the same TAP gets the same address; a given one is kept.
    let again = ballast(launch(tap.args("")));
    assert_eq!(again.json("/vm")["net"][0]["mac"], mac.as_str());
    drop(again);
    let given = ballast(launch(tap.args(",mac=06:00:ac:10:00:02")));
    assert_eq!(given.json("/vm")["net"][0]["mac"], "06:00:ac:10:00:02");
}

#[test]
fn a_vm_without_network_devices_lists_none() {
    let b = default_vm();
    assert_eq!(b.json("/vm")["net"], serde_json::json!([]));
    assert!(!b.get("/metrics").body.contains("ballast_net_"));
}

#[test]
fn a_missing_tap_stops_the_launch_with_how_to_make_it() {
    let dir = support::TempDir::new("net");
    let kernel = dir.0.join("vmlinux");
    std::fs::write(&kernel, support::elf_kernel(&[0xf4, 0xeb, 0xfd])).unwrap();
    let out = Command::new(support::ballast_bin())
        .arg("run")
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "64M", "--net", "tap=btnowhere0"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("there is no network interface `btnowhere0`")
            && stderr.contains("ip tuntap add dev btnowhere0 mode tap"),
        "{stderr}"
    );
    let out = Command::new(support::ballast_bin())
        .args(["run", "--kernel", "/k", "--net", "tap=a/b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a network interface name"));
}
