//! The client subcommands: each sends its request, then prints what the VM looks like after it,
//! as text for people or, with `--json`, as the API's JSON.

use std::fmt::Write;
use std::process::ExitCode;
use std::time::Duration;

use hyper::Method;
use serde::Serialize;

use super::wait::{self, WaitEnd};
use super::watch::{mib, Snapshot};
use super::{ApiClient, ClientError};
use crate::api::{
    BalloonInfo, BalloonStatistics, BalloonUpdate, HostEnforceState, HostEnforceStatus, MemoryInfo,
    MemoryLimitUpdate, VmAction, VmActionBody, VmInfo,
};
use crate::cli::{BalloonCommand, ClientArgs, Command, LimitCommand};

/// Runs one client subcommand; `None` for `run`, which is not one.
pub fn run(command: Command) -> Option<ExitCode> {
    let (args, result) = match command {
        Command::Run(_) => return None,
        Command::Top(args) => return Some(super::top::run(&args)),
        Command::Agent { action, vsock } => return Some(super::agent::run(&action, &vsock)),
        Command::Status(args) => {
            let r = status(&args);
            (args, r)
        }
        Command::Metrics(args) => {
            let r = metrics(&args);
            (args, r)
        }
        Command::Limit {
            action:
                LimitCommand::Set {
                    size_mib,
                    wait,
                    wait_timeout_s,
                    client,
                },
        } => {
            let r = if wait {
                set_limit_and_wait(&client, size_mib, Duration::from_secs(wait_timeout_s))
            } else {
                set_limit(&client, Some(size_mib))
            };
            (client, r)
        }
        Command::Limit {
            action: LimitCommand::Clear(client),
        } => {
            let r = set_limit(&client, None);
            (client, r)
        }
        Command::Balloon {
            action: BalloonCommand::Set { size_mib, client },
        } => {
            let r = set_balloon(&client, size_mib);
            (client, r)
        }
        Command::Balloon {
            action: BalloonCommand::Stats(client),
        } => {
            let r = balloon_stats(&client);
            (client, r)
        }
        Command::Pause(args) => {
            let r = action(&args, VmAction::Pause);
            (args, r)
        }
        Command::Resume(args) => {
            let r = action(&args, VmAction::Resume);
            (args, r)
        }
        Command::Shutdown(args) => {
            let r = action(&args, VmAction::Shutdown);
            (args, r)
        }
    };
    Some(match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            if args.json {
                eprintln!("{}", serde_json::json!({ "fault_message": e.to_string() }));
            } else {
                eprintln!("ballast: {e}");
            }
            // 1: ballast refused; 2: ballast could not be reached or understood.
            ExitCode::from(if e.is_server_refusal() { 1 } else { 2 })
        }
    })
}

fn client(args: &ClientArgs) -> ApiClient {
    ApiClient::new(&args.api_sock)
}

fn to_json<T: Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("API types always serialize");
    text.push('\n');
    text
}

/// The Prometheus text as the API serves it (`--json` changes nothing: it is not JSON).
fn metrics(args: &ClientArgs) -> Result<String, ClientError> {
    let answer = client(args).call(Method::GET, "/metrics", None)?;
    Ok(String::from_utf8_lossy(&answer.body).into_owned())
}

fn status(args: &ClientArgs) -> Result<String, ClientError> {
    let api = client(args);
    let vm: VmInfo = api.get("/vm")?;
    let memory: MemoryInfo = api.get("/vm/memory")?;
    let balloon: BalloonInfo = api.get("/balloon")?;
    if args.json {
        return Ok(to_json(&serde_json::json!({
            "vm": vm,
            "memory": memory,
            "balloon": balloon,
        })));
    }
    Ok(format_status(&vm, &memory, &balloon))
}

fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m {sec:02}s"),
        (h, min, sec) => format!("{h}h {min:02}m {sec:02}s"),
    }
}

fn vm_state(state: crate::api::VmState) -> &'static str {
    match state {
        crate::api::VmState::Running => "running",
        crate::api::VmState::Paused => "paused",
        crate::api::VmState::Stopped => "stopped",
    }
}

fn memory_state(memory: &MemoryInfo) -> String {
    let state = serde_json::to_value(memory.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    match &memory.state_reason {
        Some(reason) => format!("{state} ({reason})"),
        None => state,
    }
}

fn host_enforce(status: &HostEnforceStatus) -> String {
    let cgroup = status
        .cgroup
        .as_ref()
        .map_or_else(String::new, |c| format!(" in {}", c.display()));
    let current = status
        .memory_current_bytes
        .map_or_else(String::new, |c| format!(", charged {}", mib(c)));
    match status.state {
        HostEnforceState::Off => "off".to_string(),
        HostEnforceState::Unavailable => format!(
            "unavailable ({})",
            status.reason.as_deref().unwrap_or("no reason known")
        ),
        HostEnforceState::Standby => format!("standby{cgroup}: memory.high max{current}"),
        HostEnforceState::Active => format!(
            "active{cgroup}: memory.high {} (limit + {}){current}",
            mib(status.memory_high_bytes.unwrap_or(0)),
            mib(status.overhead_bytes)
        ),
    }
}

pub fn format_status(vm: &VmInfo, memory: &MemoryInfo, balloon: &BalloonInfo) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "{:<14}{value}", format!("{key}:"));
    };
    line("state", vm_state(vm.state).to_string());
    line("vcpus", vm.vcpus.to_string());
    line("memory", format!("{} MiB", vm.memory_mib));
    line("uptime", uptime(vm.uptime_ms));
    line("version", vm.ballast_version.clone());
    line(
        "limit",
        memory
            .limit_mib
            .map_or_else(|| "none".to_string(), |l| format!("{l} MiB")),
    );
    line("resident", mib(memory.resident_bytes));
    line("memory state", memory_state(memory));
    if let Some(ws) = memory.working_set_bytes {
        line("working set", mib(ws));
    }
    if let Some(rate) = memory.dirty_rate_bytes_per_s {
        line("dirty rate", format!("{}/s", mib(rate)));
    }
    if let Some(agent) = &memory.agent {
        let reason = agent
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        line("guest agent", format!("{}{reason}", agent.state));
    }
    if let Some(guest) = &memory.guest {
        line(
            "guest memory",
            format!(
                "file {}, anon {}, free {}, swap {}",
                mib(guest.file_bytes),
                mib(guest.anon_bytes),
                mib(guest.free_bytes),
                mib(guest.swap_total_bytes)
            ),
        );
    }
    line(
        "balloon",
        format!(
            "target {} MiB, guest holds {} MiB",
            balloon.amount_mib, balloon.actual_mib
        ),
    );
    line("host enforce", host_enforce(&memory.host_enforce));
    for net in &vm.net {
        let waiting = if net.active {
            ""
        } else {
            " (the guest's driver has not set it up)"
        };
        line(
            "net",
            format!("{}, guest MAC {}{waiting}", net.tap, net.mac),
        );
    }
    out
}

fn set_limit(args: &ClientArgs, limit_mib: Option<u64>) -> Result<String, ClientError> {
    let api = client(args);
    api.send(
        Method::PUT,
        "/vm/memory/limit",
        &MemoryLimitUpdate { limit_mib },
    )?;
    let memory: MemoryInfo = api.get("/vm/memory")?;
    if args.json {
        return Ok(to_json(&memory));
    }
    Ok(match memory.limit_mib {
        Some(limit) => format!(
            "memory limit: {limit} MiB (resident {}, {})\n",
            mib(memory.resident_bytes),
            memory_state(&memory)
        ),
        None => format!(
            "memory limit removed (resident {})\n",
            mib(memory.resident_bytes)
        ),
    })
}

/// Sets the limit, then waits for the VM to be within it (see `client::wait`).
fn set_limit_and_wait(
    args: &ClientArgs,
    limit_mib: u64,
    timeout: Duration,
) -> Result<String, ClientError> {
    let api = client(args);
    let before = Snapshot::take(&api)?;
    api.send(
        Method::PUT,
        "/vm/memory/limit",
        &MemoryLimitUpdate {
            limit_mib: Some(limit_mib),
        },
    )?;
    let end = wait::follow(&api, &before, timeout, &mut std::io::stderr())?;
    let (message, ok) = wait::outcome(&end);
    if !ok {
        return Err(ClientError::Unmet(message));
    }
    let WaitEnd::Within(snapshot) = end else {
        unreachable!("only Within is ok")
    };
    Ok(if args.json {
        to_json(&snapshot.memory)
    } else {
        format!("{message}\n")
    })
}

fn set_balloon(args: &ClientArgs, amount_mib: u32) -> Result<String, ClientError> {
    let api = client(args);
    api.send(Method::PATCH, "/balloon", &BalloonUpdate { amount_mib })?;
    let balloon: BalloonInfo = api.get("/balloon")?;
    if args.json {
        return Ok(to_json(&balloon));
    }
    Ok(format!(
        "balloon target: {} MiB (the guest holds {} MiB now)\n",
        balloon.amount_mib, balloon.actual_mib
    ))
}

fn balloon_stats(args: &ClientArgs) -> Result<String, ClientError> {
    let stats: BalloonStatistics = client(args).get("/balloon/statistics")?;
    if args.json {
        return Ok(to_json(&stats));
    }
    // The JSON names are the text too: one `name: value` line each, as Firecracker names them.
    let mut out = String::new();
    if let serde_json::Value::Object(fields) = serde_json::to_value(&stats).unwrap_or_default() {
        for (name, value) in fields.iter().filter(|(_, v)| !v.is_null()) {
            let _ = writeln!(out, "{name}: {value}");
        }
    }
    Ok(out)
}

fn action(args: &ClientArgs, action_type: VmAction) -> Result<String, ClientError> {
    let api = client(args);
    api.send(Method::PUT, "/vm/actions", &VmActionBody { action_type })?;
    if action_type == VmAction::Shutdown {
        // The VM is going away: there is nothing left to ask.
        return Ok(if args.json {
            "{}\n".to_string()
        } else {
            "the VM is shutting down\n".to_string()
        });
    }
    let vm: VmInfo = api.get("/vm")?;
    if args.json {
        return Ok(to_json(&vm));
    }
    Ok(format!("the VM is {}\n", vm_state(vm.state)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MemoryState, NetDeviceInfo, VmState};

    #[test]
    fn uptime_reads_naturally() {
        assert_eq!(uptime(5_400), "5s");
        assert_eq!(uptime(83_000), "1m 23s");
        assert_eq!(uptime(3_723_000), "1h 02m 03s");
    }

    #[test]
    fn status_text() {
        let vm = VmInfo {
            state: VmState::Paused,
            vcpus: 2,
            memory_mib: 512,
            uptime_ms: 61_000,
            ballast_version: "0.1.0".into(),
            net: vec![NetDeviceInfo {
                tap: "tap0".into(),
                mac: "06:00:ac:10:00:02".into(),
                active: true,
            }],
        };
        let memory = MemoryInfo {
            memory_mib: 512,
            limit_mib: Some(256),
            resident_bytes: 300 << 20,
            state: MemoryState::OverLimit,
            state_reason: Some("why".into()),
            host_enforce: HostEnforceStatus::off(),
            ..Default::default()
        };
        let balloon = BalloonInfo {
            amount_mib: 64,
            deflate_on_oom: false,
            stats_polling_interval_s: 0,
            free_page_reporting: false,
            actual_mib: 32,
            actual_pages: 8192,
        };
        let text = format_status(&vm, &memory, &balloon);
        assert!(text.contains("state:        paused\n"), "{text}");
        assert!(text.contains("uptime:       1m 01s\n"), "{text}");
        assert!(text.contains("limit:        256 MiB\n"), "{text}");
        assert!(text.contains("resident:     300.0 MiB\n"), "{text}");
        assert!(text.contains("memory state: over_limit (why)\n"), "{text}");
        assert!(text.contains("balloon:      target 64 MiB, guest holds 32 MiB\n"));
        assert!(text.contains("host enforce: off\n"), "{text}");
        assert!(
            text.contains("net:          tap0, guest MAC 06:00:ac:10:00:02\n"),
            "{text}"
        );
        assert!(!text.contains("working set"));
    }

    #[test]
    fn host_enforce_text() {
        let mut status = HostEnforceStatus {
            state: HostEnforceState::Active,
            reason: None,
            cgroup: Some("/sys/fs/cgroup/ballast-9".into()),
            memory_high_bytes: Some(320 << 20),
            memory_current_bytes: Some(300 << 20),
            overhead_bytes: 64 << 20,
        };
        assert_eq!(
            host_enforce(&status),
            "active in /sys/fs/cgroup/ballast-9: memory.high 320.0 MiB (limit + 64.0 MiB), \
             charged 300.0 MiB"
        );
        status.state = HostEnforceState::Standby;
        status.memory_high_bytes = None;
        assert_eq!(
            host_enforce(&status),
            "standby in /sys/fs/cgroup/ballast-9: memory.high max, charged 300.0 MiB"
        );
        let unavailable = HostEnforceStatus {
            state: HostEnforceState::Unavailable,
            reason: Some("no cgroup v2".into()),
            ..HostEnforceStatus::off()
        };
        assert_eq!(host_enforce(&unavailable), "unavailable (no cgroup v2)");
    }
}
