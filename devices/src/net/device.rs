//! The network device: what it offers, its config space, activation and reset, and what the
//! API shows of it.

use std::sync::Arc;

use log::info;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use ballast_virtio::{
    ActivateError, Activation, DeviceCore, DeviceErrors, GuestMemoryMmap, QueueEvent, VirtioDevice,
    VirtioInterrupt,
};

use super::config::MacAddr;
use super::metrics::NetMetrics;
use super::rx::RxState;
use super::tap::{Tap, TapError};
use super::tx::TxState;
use super::{NetConfig, QUEUE_SIZE};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("cannot create the network device's eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// What the device owns between `activate` and `reset`.
pub(super) struct ActiveQueues {
    pub mem: GuestMemoryMmap,
    pub interrupt: Arc<VirtioInterrupt>,
    pub rx: QueueEvent,
    pub tx: QueueEvent,
    /// Whether the TAP's offloads follow this activation's features yet (set on the event
    /// loop, which owns the TAP, before the first frame is read).
    pub offloads_set: bool,
}

/// What `GET /vm` shows of a network device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetInfo {
    pub tap: String,
    pub mac: MacAddr,
    /// Whether the guest's driver has set the device up.
    pub active: bool,
}

/// A virtio-net device backed by a TAP interface.
///
/// The VMM creates it with `Net::new`, wraps it in `Arc<Mutex<_>>`, registers that with the
/// event manager (which calls `init`) and hands it to the virtio-mmio transport. Frames move
/// only on the event loop, in `process` (see `event_handler.rs`).
pub struct Net {
    mac: MacAddr,
    pub(super) tap: Tap,
    /// Type, queues, features, config space (the MAC), the broken flag and the activation
    /// eventfd; its label (`virtio-net <tap>`) names the device in log messages.
    pub(super) core: DeviceCore,
    pub(super) active: Option<ActiveQueues>,
    pub(super) rx: RxState,
    pub(super) tx: TxState,
    /// Whether the TAP is in the epoll set for writing too (while `tx.blocked`).
    pub(super) tap_watched_for_writing: bool,
    pub(super) metrics: Arc<NetMetrics>,
}

/// Every feature the device offers.
pub(super) fn offered_features() -> u64 {
    [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_MRG_RXBUF,
    ]
    .iter()
    .fold(0, |features, bit| features | 1 << bit)
}

impl Net {
    /// Attaches to the TAP interface `config` names; the guest's MAC is `mac` (the caller
    /// resolves a missing one, see `NetConfig::mac_or_derived`). Errors say what the user can
    /// do about them (a missing interface, no permission, a TAP in use).
    pub fn new(config: &NetConfig, mac: MacAddr) -> Result<Self, NetError> {
        let tap = Tap::open(&config.tap)?;
        info!("virtio-net {}: guest MAC {mac}", config.tap);
        Self::with_tap(tap, mac)
    }

    pub(super) fn with_tap(tap: Tap, mac: MacAddr) -> Result<Self, NetError> {
        let metrics = Arc::new(NetMetrics::default());
        let errors = DeviceErrors::sharing(
            &metrics.queue_errors,
            &metrics.interrupt_errors,
            &metrics.event_errors,
        );
        let core = DeviceCore::new(
            format!("virtio-net {}", tap.name()),
            VIRTIO_ID_NET,
            vec![QUEUE_SIZE, QUEUE_SIZE],
            offered_features(),
            // `virtio_net_config` (virtio 1.2, 5.1.4) up to the field MAC offers: the guest's
            // address. The fields after it belong to features not offered and read as zero.
            mac.0.to_vec(),
            errors,
        )
        .map_err(NetError::EventFd)?;
        Ok(Net {
            mac,
            tap,
            core,
            active: None,
            rx: RxState::new(),
            tx: TxState::new(),
            tap_watched_for_writing: false,
            metrics,
        })
    }

    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    pub fn metrics(&self) -> &Arc<NetMetrics> {
        &self.metrics
    }

    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    pub fn info(&self) -> NetInfo {
        NetInfo {
            tap: self.tap.name().to_string(),
            mac: self.mac,
            active: self.is_activated(),
        }
    }

    /// The acked feature bits.
    pub(super) fn acked(&self) -> u64 {
        self.core.acked_features()
    }
}

impl VirtioDevice for Net {
    fn core(&self) -> &DeviceCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }

    // The MAC is the device's (CTRL_MAC_ADDR is not offered): the default `write_config`
    // ignores the driver's writes.

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let (mem, interrupt, [rx, tx]) =
            activation.take_queues(&self.core, "network device", ["rx", "tx"])?;
        self.active = Some(ActiveQueues {
            mem,
            interrupt: interrupt.clone(),
            rx,
            tx,
            offloads_set: false,
        });
        self.core.activated(&interrupt)
    }

    fn reset(&mut self) -> bool {
        let retired = self
            .active
            .take()
            .map(|active| [active.rx.event, active.tx.event]);
        // Buffers held for the old queues belong to nobody now; a frame read for them is lost.
        if self.rx.forget_queue() {
            self.metrics.rx_dropped.inc();
        }
        self.tx.forget_queue();
        self.core.reset(retired.into_iter().flatten(), false);
        true
    }
}
