//! `ballast agent`: a host tool that reaches the guest agent through the VM's hybrid vsock
//! socket, as any program following Firecracker's convention would.

use std::process::ExitCode;
use std::time::Duration;

use ballast_agent::protocol::{DeactivateAnon, DeactivateFile, Request};
use ballast_agent::{AgentClient, ClientError};

use crate::cli::{AgentArgs, AgentCommand};

pub fn run(command: &AgentCommand, args: &AgentArgs) -> ExitCode {
    match call(command, args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("ballast: {message}");
            // 1: the agent answered with a refusal; 2: it could not be reached or understood.
            ExitCode::from(if message.starts_with("the guest agent refused") {
                1
            } else {
                2
            })
        }
    }
}

fn call(command: &AgentCommand, args: &AgentArgs) -> Result<String, String> {
    let path = args
        .vsock_sock
        .as_ref()
        .ok_or("give the VM's vsock socket with --vsock-sock PATH (or BALLAST_VSOCK_SOCK)")?;
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let mut client = AgentClient::connect_hybrid_vsock(path, args.port, timeout)
        .map_err(|e| {
            format!(
                "cannot reach the guest agent through {}: {e}",
                path.display()
            )
        })?
        .with_timeout(timeout);
    let request = match command {
        AgentCommand::Hello => Request::Hello {
            protocol_version: ballast_agent::PROTOCOL_VERSION,
        },
        AgentCommand::Stats => Request::Stats,
        AgentCommand::DeactivateFile { pages } => {
            Request::DeactivateFile(DeactivateFile::new(*pages))
        }
        AgentCommand::DeactivateAnon { pages, urgent } => {
            Request::DeactivateAnon(DeactivateAnon::new(*pages, *urgent))
        }
    };
    let response = client.request(&request).map_err(|e| match e {
        ClientError::Agent { .. } => e.to_string(),
        e => format!("the guest agent did not answer properly: {e}"),
    })?;
    serde_json::to_string_pretty(&response).map_err(|e| e.to_string())
}
