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

use ballast_virtio::{ActivateError, Activation, DeviceCore, DeviceErrors, VirtioDevice};

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

/// The driver-visible config space (virtio 1.2, 5.5.4): `num_pages` (le32) is the target the
/// host sets, `actual` (le32) the number of pages the driver says the balloon holds. The later
/// fields (free_page_hint_cmd_id, poison_val) belong to features not offered, so they read as
/// zero.
const CONFIG_SPACE_SIZE: usize = 8;
const NUM_PAGES_OFFSET: usize = 0;
const ACTUAL_OFFSET: usize = 4;

/// The virtio-balloon device.
///
/// The VMM creates it, wraps it in `Arc<Mutex<_>>`, registers that with the event manager (which
/// calls `init`) and hands it to the virtio-mmio transport. Queues are processed only on the
/// event loop, in `process` (see `event_handler.rs`).
pub struct Balloon {
    config: BalloonConfig,
    /// Type, queues, features, config space, the broken flag and the activation eventfd.
    pub(super) core: DeviceCore,
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
        let metrics = Arc::new(BalloonMetrics::default());
        let errors = DeviceErrors::sharing(
            &metrics.queue_errors,
            &metrics.interrupt_errors,
            &metrics.event_errors,
        );
        Ok(Balloon {
            config,
            core: DeviceCore::new(
                LABEL,
                VIRTIO_ID_BALLOON,
                vec![QUEUE_SIZE; queues],
                avail_features,
                vec![0; CONFIG_SPACE_SIZE],
                errors,
            )
            .map_err(BalloonError::EventFd)?,
            stats_timer,
            stats_interval_s: config.stats_polling_interval_s,
            timer_registered: false,
            active: None,
            pages: BalloonBitmap::default(),
            latest_stats: None,
            held_stats_buffer: None,
            metrics,
        })
    }

    pub fn config(&self) -> BalloonConfig {
        self.config
    }

    /// Sets the balloon's target size in 4 KiB guest pages. Once the driver is running it gets a
    /// config-change interrupt and moves towards the target; before that the driver reads the
    /// target when it starts.
    pub fn set_target_pages(&mut self, pages: u32) {
        self.core.config_space[NUM_PAGES_OFFSET..ACTUAL_OFFSET]
            .copy_from_slice(&pages.to_le_bytes());
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
        self.config_field(NUM_PAGES_OFFSET)
    }

    /// The balloon's size as the driver reports it in config space (`actual`), in 4 KiB pages.
    pub fn actual_pages(&self) -> u32 {
        self.config_field(ACTUAL_OFFSET)
    }

    fn config_field(&self, offset: usize) -> u32 {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(&self.core.config_space[offset..offset + 4]);
        u32::from_le_bytes(bytes)
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
        // Arm first: a failure leaves the interval (and the timer) as they were.
        let previous = std::mem::replace(&mut self.stats_interval_s, seconds);
        if self.timer_registered {
            if let Err(e) = self.arm_stats_timer() {
                self.stats_interval_s = previous;
                return Err(BalloonError::Timer(e));
            }
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
        self.core.is_broken()
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
}

impl VirtioDevice for Balloon {
    fn core(&self) -> &DeviceCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` is the driver's to write; `num_pages` is the host's.
        let mut refused = false;
        for (i, &byte) in data.iter().enumerate() {
            match offset
                .checked_add(i as u64)
                .and_then(|p| usize::try_from(p).ok())
            {
                Some(pos) if (ACTUAL_OFFSET..CONFIG_SPACE_SIZE).contains(&pos) => {
                    self.core.config_space[pos] = byte
                }
                _ => refused = true,
            }
        }
        if refused {
            // Counted; warned about only the first few times.
            self.core.ignore_config_write(offset, data.len());
        }
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let (mem, interrupt, queues) = activation.into_parts();
        self.core.ensure_inactive("balloon")?;
        let layout = negotiated_queues(self.core.acked_features());
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
        let event_idx = self.core.has_acked(VIRTIO_RING_F_EVENT_IDX);
        let mut active = ActiveQueues::new(mem, interrupt.clone());
        for (index, (which, mut queue)) in layout.into_iter().zip(queues).enumerate() {
            queue.prepare(&active.mem, event_idx, format_args!("queue {index}"))?;
            active.insert(which, queue);
        }
        self.pages = BalloonBitmap::new(&active.mem);
        self.held_stats_buffer = None;
        self.active = Some(active);
        self.core.activated(&interrupt)
    }

    fn reset(&mut self) -> bool {
        let retired = self.active.take().map(ActiveQueues::into_events);
        if let Some(timer) = self.stats_timer.as_mut() {
            if let Err(e) = timer.clear() {
                warn!("balloon: cannot stop the statistics timer: {e}");
            }
        }
        self.core.config_space[ACTUAL_OFFSET..].fill(0);
        // The driver forgot its balloon: all guest pages are the guest's again.
        self.pages = BalloonBitmap::default();
        self.held_stats_buffer = None;
        // The loop also unregisters the statistics timer.
        let wake = self.timer_registered;
        self.core.reset(retired.into_iter().flatten(), wake);
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
