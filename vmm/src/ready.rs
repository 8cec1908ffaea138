//! Telling the world the VM is up: one line on stderr (stdout is the guest's console) with
//! what a user needs to reach it, and `READY=1` to systemd when it started ballast as a
//! `Type=notify` service (`NOTIFY_SOCKET`). And the warning for a limit nobody can reach.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use ballast_manager::pages;

use crate::config::VmConfig;

/// The line `ballast run` prints once the vCPUs run and the API answers.
pub fn ready_line(config: &VmConfig, pid: u32) -> String {
    let mut line = format!(
        "ballast: VM up: pid {pid}, {} vCPU{}, {} MiB of memory, limit {}",
        config.vcpus,
        if config.vcpus == 1 { "" } else { "s" },
        config.mem_size >> 20,
        config.limit_pages.map_or_else(
            || "none".to_string(),
            |l| format!("{} MiB", pages::to_mib(l))
        )
    );
    match &config.api_sock {
        Some(api) => line.push_str(&format!(", API {}", api.display())),
        None => line.push_str(", no API socket"),
    }
    if let Some(vsock) = &config.vsock {
        line.push_str(&format!(", vsock {}", vsock.uds_path.display()));
    }
    for net in &config.net {
        line.push_str(&format!(", TAP {}", net.tap));
    }
    line
}

/// Prints the ready line and tells systemd, when it is listening.
pub fn announce(config: &VmConfig) {
    let pid = std::process::id();
    let line = ready_line(config, pid);
    eprintln!("{line}");
    if let Some(socket) = std::env::var_os("NOTIFY_SOCKET") {
        let status = line.trim_start_matches("ballast: ");
        let message = format!("READY=1\nMAINPID={pid}\nSTATUS={status}\n");
        if let Err(e) = notify(&socket.to_string_lossy(), message.as_bytes()) {
            log::warn!(
                "cannot tell systemd the VM is up through NOTIFY_SOCKET={}: {e}",
                socket.to_string_lossy()
            );
        }
    }
}

/// Sends one datagram to systemd's notification socket: a path, or an abstract name written
/// with a leading `@` (sd_notify(3)).
pub fn notify(socket: &str, message: &[u8]) -> std::io::Result<()> {
    let addr = match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(socket)?,
    };
    let sender = UnixDatagram::unbound()?;
    sender.send_to_addr(message, &addr)?;
    Ok(())
}

/// What the user should hear about before the VM starts: warnings, one line each.
pub fn warnings(config: &VmConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(limit), None) = (config.limit_pages, &config.api_sock) {
        out.push(format!(
            "--limit {} MiB without --api-sock: nobody can see or change this limit while the VM \
             runs (give --api-sock PATH to use `ballast status`, `ballast limit` and `ballast top`)",
            pages::to_mib(limit)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config() -> VmConfig {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "ballast", "run", "--kernel", "/k", "--memory", "256M", "--limit", "192M",
        ])
        .unwrap();
        match cli.command {
            crate::cli::Command::Run(run) => (*run).into_config(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_ready_line_says_how_to_reach_the_vm() {
        let mut c = config();
        assert_eq!(
            ready_line(&c, 42),
            "ballast: VM up: pid 42, 2 vCPUs, 256 MiB of memory, limit 192 MiB, no API socket"
        );
        assert_eq!(warnings(&c).len(), 1);
        assert!(warnings(&c)[0].starts_with("--limit 192 MiB without --api-sock"));
        c.api_sock = Some(PathBuf::from("/run/vm.sock"));
        assert!(warnings(&c).is_empty());
        assert!(ready_line(&c, 42).ends_with("limit 192 MiB, API /run/vm.sock"));
    }

    #[test]
    fn notify_reaches_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("ballast-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        notify(path.to_str().unwrap(), b"READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
        let name = format!("ballast-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_listener = UnixDatagram::bind_addr(&addr).unwrap();
        notify(&format!("@{name}"), b"READY=1\n").unwrap();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
