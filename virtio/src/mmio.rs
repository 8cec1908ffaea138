//! The virtio-mmio transport, version 2 (modern virtio 1.x, spec §4.2.2).
//!
//! `MmioTransport` is the register file a driver sees in a device's MMIO window. It owns the
//! queue configuration until the driver sets DRIVER_OK, then hands the ready queues to the
//! `VirtioDevice`. The VMM forwards MMIO exits to `read` and `write` (through its bus-device
//! trait, so this crate stays free of KVM) and registers each of `queue_events()` as a KVM
//! ioeventfd on `NOTIFY_REG_OFFSET` with datamatch = the queue index.
//!
//! Every value the guest writes is untrusted: wrong access sizes, unknown registers, bad queue
//! sizes or addresses, out-of-range selectors and writes in the wrong state are ignored,
//! counted (`refused_accesses`) and logged, never a panic.

mod refusals;
pub mod regs;
mod status;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use log::{info, warn};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use crate::interrupt::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use crate::{
    ActivateError, Activation, GuestMemoryMmap, QueueEvent, VirtioDevice, VirtioInterrupt,
};
use refusals::{refuse, Refusals};
use status::{StatusChange, DRIVER_OK, FEATURES_OK, FEATURE_NEGOTIATION, NEEDS_RESET, QUEUE_SETUP};

/// The QueueNotify register, where the VMM places each queue's ioeventfd.
pub const NOTIFY_REG_OFFSET: u64 = regs::QUEUE_NOTIFY;

/// Errors building a transport: a mismatch between the device and what the VMM gave it.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("the device has {queues} queues but {events} queue events were given")]
    QueueEventCount { queues: usize, events: usize },
    #[error("queue {index}: maximum size {size} is not a power of two between 1 and 32768")]
    QueueMaxSize { index: usize, size: u16 },
}

/// Why DRIVER_OK did not bring the device up.
#[derive(Debug, thiserror::Error)]
enum ActivationError {
    #[error("queue {0} lies outside guest memory")]
    InvalidQueue(usize),
    #[error("queue {index} could not be handed over: {source}")]
    CopyQueue {
        index: usize,
        source: virtio_queue::Error,
    },
    #[error("could not duplicate the eventfd of queue {index}: {source}")]
    CloneEvent { index: usize, source: io::Error },
    #[error(transparent)]
    Device(#[from] ActivateError),
}

pub struct MmioTransport {
    mem: GuestMemoryMmap,
    device: Arc<Mutex<dyn VirtioDevice>>,
    interrupt: Arc<VirtioInterrupt>,
    /// The transport's view of each queue. After activation the device works on copies; these
    /// stay behind so QueueReady still reads back what the driver set.
    queues: Vec<Queue>,
    queue_events: Vec<EventFd>,
    /// Cached: the device type never changes, and logging should not need the device lock.
    device_type: u32,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    config_generation: u32,
    /// The device owns the queues (activate succeeded and no reset since).
    activated: bool,
    refusals: Refusals,
}

impl MmioTransport {
    /// The QueueNotify register, where the VMM places each queue's ioeventfd.
    pub const NOTIFY_REG_OFFSET: u64 = NOTIFY_REG_OFFSET;

    /// Builds the transport for `device`, with one eventfd per queue.
    ///
    /// # Panics
    ///
    /// If the device and the VMM disagree (see `try_new`); that is a bug in the VMM or the
    /// device model, never something a guest can cause.
    pub fn new(
        mem: GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
        interrupt: Arc<VirtioInterrupt>,
        queue_events: Vec<EventFd>,
    ) -> Self {
        match Self::try_new(mem, device, interrupt, queue_events) {
            Ok(transport) => transport,
            Err(e) => panic!("virtio-mmio transport: {e}"),
        }
    }

    /// Builds the transport, failing if the number of queue events differs from the device's
    /// queue count or a queue's maximum size is not one virtio allows.
    pub fn try_new(
        mem: GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
        interrupt: Arc<VirtioInterrupt>,
        queue_events: Vec<EventFd>,
    ) -> Result<Self, MmioError> {
        let (device_type, max_sizes) = {
            let device = lock(&device);
            (device.device_type(), device.queue_max_sizes().to_vec())
        };
        if max_sizes.len() != queue_events.len() {
            return Err(MmioError::QueueEventCount {
                queues: max_sizes.len(),
                events: queue_events.len(),
            });
        }
        let queues = max_sizes
            .iter()
            .enumerate()
            .map(|(index, &size)| {
                Queue::new(size).map_err(|_| MmioError::QueueMaxSize { index, size })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            mem,
            device,
            interrupt,
            queues,
            queue_events,
            device_type,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            config_generation: 0,
            activated: false,
            refusals: Refusals::new(device_type),
        })
    }

    /// The queues' notification eventfds, in queue order, for the VMM to register as
    /// ioeventfds on `NOTIFY_REG_OFFSET` with datamatch = the index.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// Whether the device currently owns its queues (DRIVER_OK succeeded, no reset since).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// How many guest accesses were ignored (wrong sizes, unknown registers, bad values,
    /// writes in the wrong state, refused FEATURES_OK) plus failed activations.
    pub fn refused_accesses(&self) -> u64 {
        self.refusals.count()
    }

    /// Tells the driver the device configuration changed: a driver that reads ConfigGeneration
    /// before and after a multi-part config read retries if it moved. Call it whenever the
    /// device's config space changes (before signalling the config-change interrupt).
    pub fn bump_config_generation(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
    }

    /// A guest read of `data.len()` bytes at `offset` in the device's MMIO window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= regs::CONFIG {
            lock(&self.device).read_config(offset - regs::CONFIG, data);
            return;
        }
        // Whatever happens below, the guest must not see stale bytes from the VMM's buffer.
        data.fill(0);
        if data.len() != regs::REGISTER_SIZE {
            let len = data.len();
            refuse!(
                self,
                "{len}-byte read of register {offset:#x}; registers are 4 bytes"
            );
            return;
        }
        if offset == regs::STATUS {
            self.note_device_breakage();
        }
        match self.read_register(offset) {
            Some(value) => data.copy_from_slice(&value.to_le_bytes()),
            None => refuse!(self, "read of unknown or write-only register {offset:#x}"),
        }
    }

    /// A guest write of `data` at `offset` in the device's MMIO window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::CONFIG {
            lock(&self.device).write_config(offset - regs::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; regs::REGISTER_SIZE]>::try_from(data) else {
            let len = data.len();
            refuse!(
                self,
                "{len}-byte write to register {offset:#x}; registers are 4 bytes"
            );
            return;
        };
        let value = u32::from_le_bytes(bytes);
        if let Some(reg) = QueueReg::at(offset) {
            self.write_queue_register(reg, value);
            return;
        }
        match offset {
            regs::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            regs::DRIVER_FEATURES => self.write_driver_features(value),
            regs::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            // Any selector is accepted; an out-of-range one makes the queue registers inert.
            regs::QUEUE_SEL => self.queue_sel = value,
            regs::QUEUE_NOTIFY => self.notify(value),
            regs::INTERRUPT_ACK => self
                .interrupt
                .ack(value & (VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG)),
            regs::STATUS => self.write_status(value),
            // There are no shared memory regions, so selecting one has no effect.
            regs::SHM_SEL => {}
            _ => refuse!(
                self,
                "write of {value:#x} to unknown or read-only register {offset:#x}"
            ),
        }
    }

    /// A device that broke while running (a corrupt queue) asks for a reset; the driver learns
    /// it from DEVICE_NEEDS_RESET in Status (the device raised the config interrupt itself).
    fn note_device_breakage(&mut self) {
        if self.status & DRIVER_OK != 0 && lock(&self.device).needs_reset() {
            self.status |= NEEDS_RESET;
        }
    }

    fn read_register(&self, offset: u64) -> Option<u32> {
        let value = match offset {
            regs::MAGIC_VALUE => regs::MAGIC,
            regs::VERSION => regs::MMIO_VERSION,
            regs::DEVICE_ID => self.device_type,
            regs::VENDOR_ID => regs::VENDOR,
            regs::DEVICE_FEATURES => {
                let features = lock(&self.device).avail_features();
                // Words past the second hold feature bits 64 and up, which nobody offers.
                match self.device_features_sel {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            // A missing queue reads as size 0, which is how the driver learns it is not there.
            regs::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            regs::QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            regs::INTERRUPT_STATUS => self.interrupt.status(),
            regs::STATUS => self.status,
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH | regs::SHM_BASE_LOW | regs::SHM_BASE_HIGH => {
                regs::SHM_ABSENT
            }
            regs::CONFIG_GENERATION => self.config_generation,
            _ => return None,
        };
        Some(value)
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    fn write_driver_features(&mut self, value: u32) {
        let status = self.status;
        if status != FEATURE_NEGOTIATION {
            refuse!(
                self,
                "DriverFeatures written in status {status:#x}, outside negotiation"
            );
            return;
        }
        let value = u64::from(value);
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (value << 32),
            // Nothing is offered there, so only zeros are acceptable; FEATURES_OK judges the
            // rest.
            _ if value == 0 => {}
            sel => refuse!(
                self,
                "driver acked {value:#x} in feature word {sel}, never offered"
            ),
        }
    }

    fn write_queue_register(&mut self, reg: QueueReg, value: u32) {
        let status = self.status;
        if status != QUEUE_SETUP {
            // Queues are set up between FEATURES_OK and DRIVER_OK (§3.1.1); after DRIVER_OK
            // the device owns them.
            refuse!(self, "Queue{reg:?} written in status {status:#x}");
            return;
        }
        let sel = self.queue_sel;
        let Some(queue) = self.queues.get_mut(sel as usize) else {
            refuse!(self, "Queue{reg:?} written for missing queue {sel}");
            return;
        };
        if let Err(e) = configure_queue(queue, reg, value) {
            refuse!(self, "queue {sel}: {value:#x} written to Queue{reg:?}: {e}");
        }
    }

    fn notify(&mut self, value: u32) {
        // The ioeventfd path does not look at the device status either; a notification before
        // DRIVER_OK only wakes a device that finds nothing to do.
        match self.queue_events.get(value as usize) {
            Some(event) => {
                if let Err(e) = event.write(1) {
                    warn!(
                        "virtio-mmio (device type {}): notify queue {value}: {e}",
                        self.device_type
                    );
                }
            }
            None => refuse!(self, "notification for missing queue {value}"),
        }
    }

    fn write_status(&mut self, value: u32) {
        let current = self.status;
        match status::classify(current, value) {
            StatusChange::Reset => self.reset(),
            StatusChange::Unchanged => {}
            StatusChange::Set(bit) => self.status |= bit,
            StatusChange::FeaturesOk => self.features_ok(),
            StatusChange::DriverOk => self.driver_ok(),
            StatusChange::Refused(why) => {
                refuse!(self, "status {current:#x} -> {value:#x} refused: {why}")
            }
        }
    }

    /// Checks the driver's features; FEATURES_OK stays clear if they are refused, which the
    /// driver sees when it reads Status back.
    fn features_ok(&mut self) {
        let offered = lock(&self.device).avail_features();
        let acked = self.driver_features;
        let unoffered = acked & !offered;
        if unoffered != 0 {
            refuse!(
                self,
                "FEATURES_OK refused: driver acked {unoffered:#x}, never offered"
            );
            return;
        }
        if acked & (1 << VIRTIO_F_VERSION_1) == 0 {
            // Version 2 of the transport is virtio 1.x only: a legacy driver cannot drive it.
            refuse!(
                self,
                "FEATURES_OK refused: driver did not ack VIRTIO_F_VERSION_1"
            );
            return;
        }
        lock(&self.device).set_acked_features(acked);
        let event_idx = acked & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        for queue in &mut self.queues {
            queue.set_event_idx(event_idx);
        }
        self.status |= FEATURES_OK;
    }

    fn driver_ok(&mut self) {
        self.status |= DRIVER_OK;
        match self.activate() {
            Ok(()) => {
                self.activated = true;
                info!("virtio-mmio (device type {}): activated", self.device_type);
            }
            Err(e) => {
                refuse!(self, "activation failed: {e}");
                // §2.1.2: with DRIVER_OK set, NEEDS_RESET must come with a config-change
                // notification so the driver looks at Status.
                self.status |= NEEDS_RESET;
                if let Err(e) = self.interrupt.signal_config_change() {
                    warn!(
                        "virtio-mmio (device type {}): config interrupt: {e}",
                        self.device_type
                    );
                }
            }
        }
    }

    /// Hands the ready queues, in index order, to the device with a duplicate of each one's
    /// eventfd (the original stays registered as the ioeventfd).
    ///
    /// Queues the driver left unready are skipped: drivers number the queues they use densely
    /// (Linux skips unused ones when it assigns indices), so the device gets exactly those.
    fn activate(&self) -> Result<(), ActivationError> {
        let mut handed = Vec::new();
        for (index, (queue, event)) in self.queues.iter().zip(&self.queue_events).enumerate() {
            if !queue.ready() {
                continue;
            }
            if !queue.is_valid(&self.mem) {
                return Err(ActivationError::InvalidQueue(index));
            }
            // Queue is not Clone; going through its state revalidates what the driver wrote.
            let queue = Queue::try_from(queue.state())
                .map_err(|source| ActivationError::CopyQueue { index, source })?;
            let event = event
                .try_clone()
                .map_err(|source| ActivationError::CloneEvent { index, source })?;
            handed.push(QueueEvent { queue, event });
        }
        lock(&self.device).activate(Activation::new(
            self.mem.clone(),
            self.interrupt.clone(),
            handed,
        ))?;
        Ok(())
    }

    /// Status 0: back to the state right after construction.
    fn reset(&mut self) {
        if self.activated && !lock(&self.device).reset() {
            // The device still owns its queues. The driver waits for Status to read 0 and can
            // only retry the reset; everything else is refused while NEEDS_RESET is set.
            warn!(
                "virtio-mmio (device type {}): the device could not be reset",
                self.device_type
            );
            self.status = NEEDS_RESET;
            return;
        }
        self.activated = false;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for queue in &mut self.queues {
            queue.reset();
        }
        // A reset device has nothing pending for the driver.
        self.interrupt.ack(u32::MAX);
    }
}

/// The registers that configure the queue QueueSel selects.
#[derive(Debug, Clone, Copy)]
enum QueueReg {
    Num,
    Ready,
    DescLow,
    DescHigh,
    DriverLow,
    DriverHigh,
    DeviceLow,
    DeviceHigh,
}

impl QueueReg {
    fn at(offset: u64) -> Option<Self> {
        Some(match offset {
            regs::QUEUE_NUM => Self::Num,
            regs::QUEUE_READY => Self::Ready,
            regs::QUEUE_DESC_LOW => Self::DescLow,
            regs::QUEUE_DESC_HIGH => Self::DescHigh,
            regs::QUEUE_DRIVER_LOW => Self::DriverLow,
            regs::QUEUE_DRIVER_HIGH => Self::DriverHigh,
            regs::QUEUE_DEVICE_LOW => Self::DeviceLow,
            regs::QUEUE_DEVICE_HIGH => Self::DeviceHigh,
            _ => return None,
        })
    }
}

/// Applies one queue-register write to a queue that is being set up.
fn configure_queue(queue: &mut Queue, reg: QueueReg, value: u32) -> Result<(), QueueWriteError> {
    if let QueueReg::Ready = reg {
        match value {
            0 => queue.set_ready(false),
            1 => queue.set_ready(true),
            _ => return Err(QueueWriteError::ReadyValue),
        }
        return Ok(());
    }
    // §4.2.3.2: the driver configures a queue only while it is not ready (it checks that
    // QueueReady reads 0 first).
    if queue.ready() {
        return Err(QueueWriteError::Ready);
    }
    match reg {
        QueueReg::Num => u16::try_from(value)
            .map_err(|_| virtio_queue::Error::InvalidSize)
            .and_then(|size| queue.try_set_size(size))?,
        QueueReg::DescLow => queue.try_set_desc_table_address(low(queue.desc_table(), value))?,
        QueueReg::DescHigh => queue.try_set_desc_table_address(high(queue.desc_table(), value))?,
        QueueReg::DriverLow => queue.try_set_avail_ring_address(low(queue.avail_ring(), value))?,
        QueueReg::DriverHigh => {
            queue.try_set_avail_ring_address(high(queue.avail_ring(), value))?
        }
        QueueReg::DeviceLow => queue.try_set_used_ring_address(low(queue.used_ring(), value))?,
        QueueReg::DeviceHigh => queue.try_set_used_ring_address(high(queue.used_ring(), value))?,
        QueueReg::Ready => {}
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum QueueWriteError {
    #[error("QueueReady takes 0 or 1")]
    ReadyValue,
    #[error("the queue is ready; its configuration is frozen")]
    Ready,
    /// A size that is 0, not a power of two or above QueueNumMax; or a misaligned address.
    #[error(transparent)]
    Value(#[from] virtio_queue::Error),
}

/// `address` with its low 32 bits replaced. The addresses a queue holds are always aligned, so
/// only the low word decides whether the result is.
fn low(address: u64, value: u32) -> GuestAddress {
    GuestAddress((address & !0xffff_ffff) | u64::from(value))
}

/// `address` with its high 32 bits replaced.
fn high(address: u64, value: u32) -> GuestAddress {
    GuestAddress((address & 0xffff_ffff) | (u64::from(value) << 32))
}

/// Locks the device. A device that panicked while holding its lock leaves it poisoned; the
/// vCPU still needs an answer, and the poisoned state is no worse than any other device bug.
fn lock<'a>(
    device: &'a Mutex<dyn VirtioDevice + 'static>,
) -> MutexGuard<'a, dyn VirtioDevice + 'static> {
    device.lock().unwrap_or_else(PoisonError::into_inner)
}
