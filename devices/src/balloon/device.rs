//! The balloon device: what it offers, its config space, activation and reset, and the target the
//! host sets.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use log::{error, info, warn};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vmm_sys_util::timerfd::TimerFd;

use ballast_virtio::device_state::read_config;
use ballast_virtio::{
    ActivateError, ActivationEvents, DeviceState, GuestMemoryMmap, QueueEvent, VirtioDevice,
    VirtioInterrupt,
};

use super::queue::{negotiated_queues, ActiveQueues};
use super::{
    BalloonBitmap, BalloonConfig, BalloonMetrics, BalloonStats, PAGES_PER_MIB, QUEUE_SIZE,
    VIRTIO_BALLOON_F_DEFLATE_ON_OOM, VIRTIO_BALLOON_F_REPORTING, VIRTIO_BALLOON_F_STATS_VQ,
};

/// The balloon's name in log messages.
pub(super) const LABEL: &str = "balloon";

#[derive(Debug, thiserror::Error)]
pub enum BalloonError {
    #[error("cannot create the balloon's eventfd: {0}")]
    EventFd(#[source] io::Error),
    #[error("cannot create or arm the balloon's statistics timer: {0}")]
    Timer(#[source] io::Error),
    #[error("a balloon of {mib} MiB is more 4 KiB pages than the 32-bit target can hold")]
    TargetTooLarge { mib: u32 },
    #[error(
        "the balloon was created without statistics (stats_polling_interval_s=0), so the guest \
         has no statistics queue to poll"
    )]
    StatsDisabled,
}

/// The driver-visible config space (virtio 1.2, 5.5.4): `num_pages` is the target the host sets,
/// `actual` the number of pages the driver says the balloon holds. The later fields
/// (free_page_hint_cmd_id, poison_val) belong to features not offered, so they read as zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ConfigSpace {
    num_pages: u32,
    actual: u32,
}

const CONFIG_SPACE_SIZE: usize = 8;
const ACTUAL_OFFSET: usize = 4;

impl ConfigSpace {
    fn to_bytes(self) -> [u8; CONFIG_SPACE_SIZE] {
        let mut bytes = [0; CONFIG_SPACE_SIZE];
        bytes[..ACTUAL_OFFSET].copy_from_slice(&self.num_pages.to_le_bytes());
        bytes[ACTUAL_OFFSET..].copy_from_slice(&self.actual.to_le_bytes());
        bytes
    }
}

/// The virtio-balloon device.
///
/// The VMM creates it, wraps it in `Arc<Mutex<_>>`, registers that with the event manager (which
/// calls `init`) and hands it to the virtio-mmio transport. Queues are processed only on the
/// event loop, in `process` (see `event_handler.rs`).
pub struct Balloon {
    config: BalloonConfig,
    /// Features and the broken flag.
    pub(super) state: DeviceState,
    queue_sizes: Vec<u16>,
    config_space: ConfigSpace,
    /// Wakes the event loop after `activate` or `reset` (both run on a vCPU thread) so it can
    /// register or unregister the queues' eventfds.
    pub(super) events: ActivationEvents,
    /// Present only when STATS_VQ is offered.
    pub(super) stats_timer: Option<TimerFd>,
    pub(super) stats_interval_s: u16,
    pub(super) timer_registered: bool,
    pub(super) active: Option<ActiveQueues>,
    pub(super) pages: BalloonBitmap,
    pub(super) latest_stats: Option<BalloonStats>,
    /// The stats buffer the device holds until it wants fresh statistics.
    pub(super) held_stats_buffer: Option<u16>,
    pub(super) metrics: Arc<BalloonMetrics>,
}

impl Balloon {
    pub fn new(config: BalloonConfig) -> Result<Self, BalloonError> {
        let mut avail_features = 1u64 << VIRTIO_F_VERSION_1;
        let mut queues = 2;
        if config.deflate_on_oom {
            avail_features |= 1 << VIRTIO_BALLOON_F_DEFLATE_ON_OOM;
        }
        let stats_timer = if config.stats_polling_interval_s > 0 {
            avail_features |= 1 << VIRTIO_BALLOON_F_STATS_VQ;
            queues += 1;
            Some(nonblocking_timer().map_err(BalloonError::Timer)?)
        } else {
            None
        };
        if config.free_page_reporting {
            avail_features |= 1 << VIRTIO_BALLOON_F_REPORTING;
            queues += 1;
        }
        Ok(Balloon {
            config,
            state: DeviceState::new(avail_features),
            queue_sizes: vec![QUEUE_SIZE; queues],
            config_space: ConfigSpace::default(),
            events: ActivationEvents::new().map_err(BalloonError::EventFd)?,
            stats_timer,
            stats_interval_s: config.stats_polling_interval_s,
            timer_registered: false,
            active: None,
            pages: BalloonBitmap::default(),
            latest_stats: None,
            held_stats_buffer: None,
            metrics: Arc::new(BalloonMetrics::default()),
        })
    }

    pub fn config(&self) -> BalloonConfig {
        self.config
    }

    /// Sets the balloon's target size in 4 KiB guest pages. Once the driver is running it gets a
    /// config-change interrupt and moves towards the target; before that the driver reads the
    /// target when it starts.
    pub fn set_target_pages(&mut self, pages: u32) {
        self.config_space.num_pages = pages;
        if let Some(active) = &self.active {
            match active.interrupt.signal_config_change() {
                Ok(()) => self.metrics.config_changes.inc(),
                Err(e) => {
                    self.metrics.interrupt_errors.inc();
                    error!(
                        "balloon: cannot raise the config-change interrupt for a new target: {e}"
                    );
                }
            }
        }
    }

    /// `set_target_pages` in MiB.
    pub fn set_target_mib(&mut self, mib: u32) -> Result<(), BalloonError> {
        let pages = mib
            .checked_mul(PAGES_PER_MIB)
            .ok_or(BalloonError::TargetTooLarge { mib })?;
        self.set_target_pages(pages);
        Ok(())
    }

    /// The target the host set, in 4 KiB guest pages.
    pub fn target_pages(&self) -> u32 {
        self.config_space.num_pages
    }

    /// The balloon's size as the driver reports it in config space (`actual`), in 4 KiB pages.
    pub fn actual_pages(&self) -> u32 {
        self.config_space.actual
    }

    /// Guest pages the device saw go into the balloon and not come out.
    pub fn ballooned_pages(&self) -> u64 {
        self.pages.len()
    }

    /// Whether the guest page `pfn` (4 KiB units) is in the balloon.
    pub fn is_ballooned(&self, pfn: u64) -> bool {
        self.pages.contains(pfn)
    }

    /// The set of guest pages in the balloon (empty before activation).
    pub fn ballooned(&self) -> &BalloonBitmap {
        &self.pages
    }

    /// The statistics the guest sent last, if any.
    pub fn latest_stats(&self) -> Option<&BalloonStats> {
        self.latest_stats.as_ref()
    }

    /// Changes how often the guest is asked for statistics; 0 stops asking until a later
    /// non-zero interval. Only a device created with statistics has a statistics queue.
    pub fn set_stats_interval(&mut self, seconds: u16) -> Result<(), BalloonError> {
        if self.stats_timer.is_none() {
            return Err(BalloonError::StatsDisabled);
        }
        self.stats_interval_s = seconds;
        if self.timer_registered {
            self.arm_stats_timer().map_err(BalloonError::Timer)?;
        }
        Ok(())
    }

    pub fn stats_interval(&self) -> u16 {
        self.stats_interval_s
    }

    pub fn metrics(&self) -> &Arc<BalloonMetrics> {
        &self.metrics
    }

    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// The device hit a queue error it cannot recover from: the transport should set
    /// DEVICE_NEEDS_RESET in the status register (a config-change interrupt was raised to tell
    /// the driver). Cleared by `reset`.
    pub fn needs_reset(&self) -> bool {
        self.state.is_broken()
    }

    pub(super) fn arm_stats_timer(&mut self) -> io::Result<()> {
        let Some(timer) = self.stats_timer.as_mut() else {
            return Ok(());
        };
        if self.stats_interval_s == 0 {
            return timer.clear().map_err(io::Error::from);
        }
        let interval = Duration::from_secs(u64::from(self.stats_interval_s));
        timer
            .reset(interval, Some(interval))
            .map_err(io::Error::from)
    }

    /// Stops processing the queues after a failure that leaves them in an unknown state, and
    /// tells the driver through a config-change interrupt (virtio 1.2, 2.1.2).
    pub(super) fn mark_broken(&mut self, why: &dyn std::fmt::Display) {
        self.state.mark_broken(
            LABEL,
            why,
            self.active.as_ref().map(|active| &*active.interrupt),
            &self.metrics.queue_errors,
            &self.metrics.interrupt_errors,
        );
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        self.state.avail_features()
    }

    fn set_acked_features(&mut self, features: u64) {
        self.state.set_acked_features(LABEL, features);
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config(&self.config_space.to_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` is the driver's to write; `num_pages` is the host's.
        let mut actual = self.config_space.actual.to_le_bytes();
        for (i, &byte) in data.iter().enumerate() {
            match offset
                .checked_add(i as u64)
                .and_then(|p| usize::try_from(p).ok())
            {
                Some(pos) if (ACTUAL_OFFSET..CONFIG_SPACE_SIZE).contains(&pos) => {
                    actual[pos - ACTUAL_OFFSET] = byte
                }
                _ => {
                    warn!("balloon: the driver wrote read-only config byte at offset {offset}+{i}")
                }
            }
        }
        self.config_space.actual = u32::from_le_bytes(actual);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<QueueEvent>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::Backend(
                "the balloon is already active".to_string(),
            ));
        }
        let layout = negotiated_queues(self.state.acked_features());
        if queues.len() < layout.len() {
            return Err(ActivateError::QueueCount {
                want: layout.len(),
                got: queues.len(),
            });
        }
        if queues.len() > layout.len() {
            // The transport may hand over every queue it offered; the ones past the negotiated
            // features were not set up by the driver.
            info!(
                "balloon: using {} of {} queues for the negotiated features",
                layout.len(),
                queues.len()
            );
        }
        let event_idx = self.state.has_acked(VIRTIO_RING_F_EVENT_IDX);
        let mut active = ActiveQueues::new(mem, interrupt);
        for (index, (which, mut queue)) in layout.into_iter().zip(queues).enumerate() {
            queue.prepare(&active.mem, event_idx, format_args!("queue {index}"))?;
            active.insert(which, queue);
        }
        self.pages = BalloonBitmap::new(&active.mem);
        self.held_stats_buffer = None;
        self.state.activated();
        self.active = Some(active);
        // The event loop registers the queues' eventfds; this thread is a vCPU's.
        self.events.activated()
    }

    fn needs_reset(&self) -> bool {
        self.state.is_broken()
    }

    fn reset(&mut self) -> bool {
        if let Some(active) = self.active.take() {
            self.events.retire(active.into_events());
        }
        if let Some(timer) = self.stats_timer.as_mut() {
            if let Err(e) = timer.clear() {
                warn!("balloon: cannot stop the statistics timer: {e}");
            }
        }
        self.state.reset();
        self.config_space.actual = 0;
        // The driver forgot its balloon: all guest pages are the guest's again.
        self.pages = BalloonBitmap::default();
        self.held_stats_buffer = None;
        if self.events.has_retired() || self.timer_registered {
            self.events
                .wake_after_reset(LABEL, &self.metrics.event_errors);
        }
        true
    }
}

/// A timerfd that never blocks the event loop: the host may re-arm it (clearing a pending
/// expiry) between epoll reporting it readable and the loop reading it.
fn nonblocking_timer() -> io::Result<TimerFd> {
    let timer = TimerFd::new().map_err(io::Error::from)?;
    let fd = timer.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns; F_GETFL/F_SETFL touch no memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(timer)
}
