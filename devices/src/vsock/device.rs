//! The vsock device: what it offers, its config space, activation and reset, and the API the VMM
//! uses to create it and to open in-process connections.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vmm_sys_util::timerfd::TimerFd;

use ballast_virtio::device_state::read_config;
use ballast_virtio::{
    exact_queues, ActivateError, ActivationEvents, DeviceState, GuestMemoryMmap, QueueEvent,
    VirtioDevice, VirtioInterrupt,
};

use super::host::{LocalConnector, LocalQueue};
use super::metrics::VsockMetrics;
use super::muxer::Muxer;
use super::{Limits, MAX_PKT_LEN, MIN_GUEST_CID, QUEUE_SIZE};
use crate::unix_socket::{self, BindError};

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The longest `_P` suffix of a guest connection's socket path (`_4294967295`).
const MAX_PORT_SUFFIX: usize = 11;

/// `--vsock-cid` and `--vsock-sock`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's CID (3 or more).
    pub guest_cid: u64,
    /// The host Unix socket host programs connect to; guest connections to host port P go to
    /// `<uds_path>_P`.
    pub uds_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error(
        "--vsock-cid {0} is reserved (0 is the hypervisor, 1 loopback, 2 the host); give the \
         guest 3 or more"
    )]
    ReservedCid(u64),
    #[error(
        "--vsock-cid {0} is too large: CIDs are 32-bit and {max} is the largest a guest can have",
        max = u32::MAX - 1
    )]
    CidTooLarge(u64),
    #[error(
        "--vsock-sock {} is {len} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH}: \
         choose a shorter path",
        path.display()
    )]
    PathTooLong { path: PathBuf, len: usize },
    #[error(
        "--vsock-sock {} is taken: another process (another ballast?) is listening on it; choose \
         another path",
        .0.display()
    )]
    SocketLive(PathBuf),
    #[error(
        "--vsock-sock {} exists and is not a socket; choose another path or remove it",
        .0.display()
    )]
    NotASocket(PathBuf),
    #[error("cannot remove the stale vsock socket {}: {source}", path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot create the vsock socket {}: {source} (does its directory exist and is it \
         writable?)",
        path.display()
    )]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the vsock device: cannot {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// `virtio_vsock_config` (virtio 1.2, 5.10.4): guest_cid, le64.
const CONFIG_SPACE_SIZE: usize = 8;

/// What the device owns between `activate` and `reset`.
pub(super) struct ActiveQueues {
    pub mem: GuestMemoryMmap,
    pub interrupt: Arc<VirtioInterrupt>,
    pub rx: QueueEvent,
    pub tx: QueueEvent,
    /// The event queue: the guest's buffers stay there, the device posts no events.
    pub event: QueueEvent,
}

/// A virtio-vsock device with a Unix socket backend (see the module documentation).
///
/// The VMM creates it with `Vsock::new`, wraps it in `Arc<Mutex<_>>`, registers that with the
/// event manager (which calls `init`) and hands it to the virtio-mmio transport. Everything
/// happens on the event loop, in `process` (see `event_handler.rs`).
pub struct Vsock {
    config: VsockConfig,
    pub(super) label: String,
    /// Features and the broken flag.
    pub(super) state: DeviceState,
    queue_sizes: [u16; 3],
    config_space: [u8; CONFIG_SPACE_SIZE],
    /// Wakes the event loop after `activate` or `reset` (both run on a vCPU thread) so it can
    /// register or unregister the queues' eventfds and the dropped connections' streams.
    pub(super) events: ActivationEvents,
    pub(super) active: Option<ActiveQueues>,
    pub(super) muxer: Muxer,
    pub(super) local: Arc<LocalQueue>,
    /// Fires at the muxer's next deadline (a timeout).
    pub(super) timer: TimerFd,
    /// What `timer` is armed for.
    pub(super) timer_deadline: Option<Instant>,
    pub(super) metrics: Arc<VsockMetrics>,
    /// A packet's payload on its way between guest memory and a host stream.
    pub(super) scratch: Vec<u8>,
}

impl Vsock {
    /// Checks the guest CID and binds the host socket at `config.uds_path` (mode 0600; a stale
    /// socket file is replaced, a live one or any other file refused). Errors say what the user
    /// can do about them.
    pub fn new(config: VsockConfig) -> Result<Self, VsockError> {
        Self::with_limits(config, Limits::default())
    }

    pub(crate) fn with_limits(config: VsockConfig, limits: Limits) -> Result<Self, VsockError> {
        if config.guest_cid < MIN_GUEST_CID {
            return Err(VsockError::ReservedCid(config.guest_cid));
        }
        // u32::MAX is VMADDR_CID_ANY.
        if config.guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::CidTooLarge(config.guest_cid));
        }
        let listener = bind(&config.uds_path)?;
        let setup = |what| move |source| VsockError::Setup { what, source };
        listener
            .set_nonblocking(true)
            .map_err(setup("make the socket non-blocking"))?;
        let local = Arc::new(LocalQueue::new().map_err(setup("create an eventfd"))?);
        let metrics = Arc::new(VsockMetrics::default());
        let muxer = Muxer::new(
            config.guest_cid,
            config.uds_path.clone(),
            listener,
            limits,
            metrics.clone(),
            local.clone(),
        );
        let label = muxer.label().to_string();
        info!(
            "{label}: guest CID {}; host programs connect here, guest connections to host port P \
             go to {}_P",
            config.guest_cid,
            config.uds_path.display()
        );
        Ok(Vsock {
            config_space: config.guest_cid.to_le_bytes(),
            config,
            label,
            state: DeviceState::new((1u64 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX)),
            queue_sizes: [QUEUE_SIZE; 3],
            events: ActivationEvents::new().map_err(setup("create an eventfd"))?,
            active: None,
            muxer,
            local,
            timer: TimerFd::new().map_err(|e| VsockError::Setup {
                what: "create a timerfd",
                source: e.into(),
            })?,
            timer_deadline: None,
            metrics,
            scratch: vec![0; MAX_PKT_LEN],
        })
    }

    pub fn config(&self) -> &VsockConfig {
        &self.config
    }

    pub fn guest_cid(&self) -> u64 {
        self.config.guest_cid
    }

    pub fn metrics(&self) -> &Arc<VsockMetrics> {
        &self.metrics
    }

    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// Open connections (host- and guest-initiated).
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// A handle that opens in-process connections to the guest from any thread, without this
    /// device's lock: what the VMM's agent client keeps. See [`LocalConnector`].
    pub fn local_connector(&self) -> LocalConnector {
        LocalConnector::new(self.local.clone())
    }

    /// Opens an in-process connection to the guest's listener on `port`: one end of a Unix
    /// stream pair that the device treats like a host program that connected to `--vsock-sock`
    /// and wrote `CONNECT <port>\n`. Read `OK <host port>\n` (the guest accepted) or EOF (it
    /// refused, did not answer within 2 s, or its driver is not up), then talk to the guest.
    /// The connection is set up on the event loop, which must be running.
    pub fn connect_local(&self, port: u32) -> io::Result<UnixStream> {
        self.local_connector().connect(port)
    }

    /// Stops processing after a failure that leaves a queue in an unknown state, and tells the
    /// driver through a config-change interrupt (virtio 1.2, 2.1.2).
    pub(super) fn mark_broken(&mut self, why: &dyn std::fmt::Display) {
        self.state.mark_broken(
            &self.label,
            why,
            self.active.as_ref().map(|active| &*active.interrupt),
            &self.metrics.queue_errors,
            &self.metrics.interrupt_errors,
        );
    }
}

fn bind(path: &Path) -> Result<UnixListener, VsockError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(VsockError::PathTooLong {
            path: path.into(),
            len,
        });
    }
    if len + MAX_PORT_SUFFIX > MAX_SOCKET_PATH {
        warn!(
            "--vsock-sock {} is {len} bytes: guest connections to high host ports would need \
             socket paths longer than {MAX_SOCKET_PATH} bytes and fail; a shorter path avoids it",
            path.display()
        );
    }
    // The socket rules the API socket follows too: a stale file is replaced, a live socket or another file refused.
    unix_socket::bind(path).map_err(|e| match e {
        BindError::Live(path) => VsockError::SocketLive(path),
        BindError::NotASocket(path) => VsockError::NotASocket(path),
        BindError::RemoveStale { path, source } => VsockError::RemoveStale { path, source },
        BindError::Bind { path, source } => VsockError::Bind { path, source },
    })
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        self.state.avail_features()
    }

    fn set_acked_features(&mut self, features: u64) {
        self.state.set_acked_features(&self.label, features);
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config(&self.config_space, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // guest_cid is the device's.
        self.state
            .ignore_config_write(&self.label, offset, data.len());
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<QueueEvent>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::Backend(
                "the vsock device is already active".to_string(),
            ));
        }
        let [mut rx, mut tx, mut event] = exact_queues(queues)?;
        let event_idx = self.state.has_acked(VIRTIO_RING_F_EVENT_IDX);
        for (name, queue) in [("rx", &mut rx), ("tx", &mut tx), ("event", &mut event)] {
            queue.prepare(&mem, event_idx, format_args!("the {name} queue"))?;
        }
        self.state.activated();
        self.active = Some(ActiveQueues {
            mem,
            interrupt,
            rx,
            tx,
            event,
        });
        self.muxer.set_active(true);
        // The event loop registers the queues' eventfds; this thread is a vCPU's.
        self.events.activated()
    }

    fn reset(&mut self) -> bool {
        if let Some(active) = self.active.take() {
            self.events
                .retire([active.rx.event, active.tx.event, active.event.event]);
        }
        // The guest's sockets went with its driver; the host programs read EOF.
        self.muxer.drop_all();
        self.state.reset();
        // Always: the loop also unregisters the dropped connections' streams.
        self.events
            .wake_after_reset(&self.label, &self.metrics.event_errors);
        true
    }

    fn needs_reset(&self) -> bool {
        self.state.is_broken()
    }
}

#[cfg(test)]
impl Vsock {
    pub(super) fn muxer(&self) -> &Muxer {
        &self.muxer
    }
}
