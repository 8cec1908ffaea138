//! The vsock device: what it offers, its config space, activation and reset, and the API the VMM
//! uses to create it and to open in-process connections.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use log::info;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vmm_sys_util::timerfd::TimerFd;

use ballast_virtio::{
    ActivateError, Activation, DeviceCore, DeviceErrors, GuestMemoryMmap, QueueEvent, VirtioDevice,
    VirtioInterrupt,
};

use super::config::{bind, VsockConfig, VsockError};
use super::host::{LocalConnector, LocalQueue};
use super::metrics::VsockMetrics;
use super::muxer::Muxer;
use super::{Limits, MAX_PKT_LEN, MIN_GUEST_CID, QUEUE_SIZE};

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
    /// Type, queues, features, config space (`virtio_vsock_config`, virtio 1.2, 5.10.4: the
    /// guest CID, le64), the broken flag and the activation eventfd (which also has the loop
    /// unregister the dropped connections' streams after a reset).
    pub(super) core: DeviceCore,
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
        let socket = bind(&config.uds_path)?;
        let setup = |what| move |source| VsockError::Setup { what, source };
        socket
            .listener
            .set_nonblocking(true)
            .map_err(setup("make the socket non-blocking"))?;
        let local = Arc::new(LocalQueue::new().map_err(setup("create an eventfd"))?);
        let metrics = Arc::new(VsockMetrics::default());
        let muxer = Muxer::new(
            config.guest_cid,
            config.uds_path.clone(),
            socket,
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
        let core = DeviceCore::new(
            label,
            VIRTIO_ID_VSOCK,
            vec![QUEUE_SIZE; 3],
            (1u64 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX),
            config.guest_cid.to_le_bytes().to_vec(),
            DeviceErrors::sharing(
                &metrics.queue_errors,
                &metrics.interrupt_errors,
                &metrics.event_errors,
            ),
        )
        .map_err(setup("create an eventfd"))?;
        Ok(Vsock {
            config,
            core,
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

    /// Open guest-initiated connections (at most `Limits::max_guest_connections`).
    pub fn guest_connection_count(&self) -> usize {
        self.muxer.guest_connection_count()
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
}

impl VirtioDevice for Vsock {
    fn core(&self) -> &DeviceCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }

    // guest_cid is the device's: the default `write_config` ignores the driver's writes.

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let (mem, interrupt, [rx, tx, event]) =
            activation.take_queues(&self.core, "vsock device", ["rx", "tx", "event"])?;
        self.active = Some(ActiveQueues {
            mem,
            interrupt: interrupt.clone(),
            rx,
            tx,
            event,
        });
        self.muxer.set_active(true);
        self.core.activated(&interrupt)
    }

    fn reset(&mut self) -> bool {
        let retired = self
            .active
            .take()
            .map(|active| [active.rx.event, active.tx.event, active.event.event]);
        // The guest's sockets went with its driver; the host programs read EOF.
        self.muxer.drop_all();
        // Always wake the loop: it also unregisters the dropped connections' streams.
        self.core.reset(retired.into_iter().flatten(), true);
        true
    }
}

#[cfg(test)]
impl Vsock {
    pub(super) fn muxer(&self) -> &Muxer {
        &self.muxer
    }
}
