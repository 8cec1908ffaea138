//! The services around the VM: the guest agent service (when the VM has a vsock device), the
//! memory manager, and the API (its channel made before the vCPUs run, its server started
//! last).

use std::sync::{Arc, Mutex};

use ballast_devices::balloon::Balloon;
use ballast_devices::net::Net;
use ballast_devices::unix_socket::BoundSocket;
use ballast_devices::vsock::LocalConnector;
use ballast_manager::host_enforce::HostEnforcer;
use ballast_manager::policy::PolicyConfig;
use ballast_manager::{ManagerConfig, ManagerParts, MemoryManager};
use event_manager::{EventManager, SubscriberOps};

use super::memory::Guest;
use super::vcpus::Vcpus;
use super::{io, RunError, Subscriber};
use crate::agent::{AgentService, AgentTimings, VsockDialer, AGENT_PORT};
use crate::api::handler::{ApiHandler, VmHandles};
use crate::api::server::ApiServer;
use crate::api::{ApiReceiver, ApiSender};
use crate::config::VmConfig;
use crate::ports::BalloonPort;
use crate::seccomp::{self, ThreadKind};
use crate::vstate::exit::{ExitState, VmExit};

/// The API's socket and both ends of its channel, ready before the vCPUs run.
pub(super) struct Api {
    socket: BoundSocket,
    sender: ApiSender,
    receiver: ApiReceiver,
}

/// Makes the API's channel, so failing to make it fails the launch rather than a running VM.
pub(super) fn prepare_api(socket: Option<BoundSocket>) -> Result<Option<Api>, RunError> {
    match socket {
        Some(socket) => {
            let (sender, receiver) = crate::api::channel().map_err(io("create the API channel"))?;
            Ok(Some(Api {
                socket,
                sender,
                receiver,
            }))
        }
        None => Ok(None),
    }
}

/// What the services are built from.
pub(super) struct Parts<'a> {
    pub config: &'a VmConfig,
    pub guest: &'a mut Guest,
    pub balloon: &'a Arc<Mutex<Balloon>>,
    pub net: &'a [Arc<Mutex<Net>>],
    pub agent_connector: Option<LocalConnector>,
    pub host_enforcer: HostEnforcer,
    pub api: Option<Api>,
    pub vcpus: &'a Vcpus,
    pub exit: &'a Arc<ExitState>,
}

/// The running services, stopped in this order: the API server, the memory manager (which
/// may be waiting on the agent), the agent service.
pub(super) struct Services {
    api_server: Option<ApiServer>,
    _manager: MemoryManager,
    _agent: Option<AgentService>,
}

impl Services {
    pub fn stop(self) {
        if let Some(server) = self.api_server {
            server.shutdown();
        }
        // The manager and the agent service end as they drop, in field order.
    }
}

pub(super) fn start(
    parts: Parts<'_>,
    events: &mut EventManager<Subscriber>,
) -> Result<Services, RunError> {
    let agent = match parts.agent_connector {
        Some(connector) => Some(
            AgentService::start(
                VsockDialer {
                    connector,
                    port: AGENT_PORT,
                },
                AgentTimings::default(),
            )
            .map_err(io("start the guest agent service"))?,
        ),
        None => None,
    };
    let dirty_log = parts.guest.dirty_log.take().expect("taken once");
    let manager = MemoryManager::start_with(
        ManagerParts {
            ram: Box::new(parts.guest.mem.clone()),
            balloon: Box::new(BalloonPort::new(
                parts.balloon.clone(),
                parts.guest.mem.clone(),
            )),
            dirty_log: Box::new(dirty_log),
            agent: agent.as_ref().map(|a| Box::new(a.handle()) as _),
            host_enforcer: parts.host_enforcer,
        },
        ManagerConfig {
            sample_interval: parts.config.sample_interval,
            limit_pages: parts.config.limit_pages,
            policy: PolicyConfig::default(),
            over_limit_after: parts.config.over_limit_after,
        },
        || seccomp::apply_or_exit(ThreadKind::Manager),
    )
    .map_err(io("start the memory manager"))?;
    let api_server = parts.api.and_then(|api| {
        let vm = VmHandles {
            exit: parts.exit.clone(),
            pause: parts.vcpus.pause.clone(),
            vcpu_threads: parts.vcpus.threads(),
            mem: parts.guest.mem.clone(),
            mem_size: parts.config.mem_size,
            balloon: parts.balloon.clone(),
            net: parts.net.to_vec(),
            started: parts.vcpus.started,
            agent: agent.as_ref().map(AgentService::handle),
            manager: manager.handle(),
        };
        events.add_subscriber(Arc::new(Mutex::new(ApiHandler::new(api.receiver, vm))));
        ApiServer::start(api.socket.listener, api.socket.file, api.sender)
            .map_err(|source| {
                parts.exit.request(VmExit::Failure(format!(
                    "cannot start the API server: {source}"
                )))
            })
            .ok()
    });
    Ok(Services {
        api_server,
        _manager: manager,
        _agent: agent,
    })
}
