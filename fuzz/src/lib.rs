//! What the device targets share: a guest whose first 64 KiB of RAM (queue rings, descriptor
//! tables, buffers) the fuzzer writes, the device's queues set up at fixed places in it, and the
//! device on a real event loop, kicked and run for a few rounds.
//!
//! An input is `[features (2 bytes, le), kicks, rounds, guest RAM...]`: the features the driver
//! acks (bits 0-11 are the device's own feature bits 0-11; bit 12 EVENT_IDX, bit 13
//! INDIRECT_DESC, bit 14 clear for VERSION_1), a bit mask of the queues kicked each round, how
//! many rounds (1 to 4), then the bytes copied to guest RAM from address 0. Queue `i`'s descriptor table is at `i * 0x1000`, its available ring at
//! `+0x400`, its used ring at `+0x800`; 16 entries each. Buffers go anywhere else below 64 KiB
//! (or anywhere in the 1 MiB of guest RAM, with what is there).

use std::sync::{Arc, Mutex};

use ballast_virtio::{Activation, GuestMemoryMmap, QueueEvent, VirtioDevice, VirtioInterrupt};
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub const RAM_SIZE: usize = 1 << 20;
/// What the input may write.
pub const WRITABLE: usize = 64 << 10;
pub const QUEUE_SIZE: u16 = 16;
const QUEUE_STRIDE: u64 = 0x1000;

/// Guest RAM: one region of 1 MiB at 0.
pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM_SIZE)]).expect("guest memory")
}

/// An input split into its header and the guest RAM image.
pub struct Input<'a> {
    pub features: u64,
    pub kicks: u8,
    pub rounds: usize,
    pub ram: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let [f0, f1, kicks, rounds, ram @ ..] = data else {
            return None;
        };
        let bits = u16::from_le_bytes([*f0, *f1]);
        let mut acked = u64::from(bits & 0xfff);
        if bits & (1 << 12) != 0 {
            acked |= 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
        }
        if bits & (1 << 13) != 0 {
            acked |= 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
        }
        if bits & (1 << 14) == 0 {
            acked |= 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
        }
        Some(Input {
            features: acked,
            kicks: *kicks,
            rounds: usize::from(rounds % 4) + 1,
            ram: &ram[..ram.len().min(WRITABLE)],
        })
    }
}

/// A device on its own event loop, activated against the fuzzer's guest RAM.
pub struct Rig<D: VirtioDevice + MutEventSubscriber + Send + 'static> {
    pub device: Arc<Mutex<D>>,
    pub events: EventManager<Arc<Mutex<D>>>,
    pub mem: GuestMemoryMmap,
    pub kicks: Vec<EventFd>,
    pub interrupt: Arc<VirtioInterrupt>,
}

impl<D: VirtioDevice + MutEventSubscriber + Send + 'static> Rig<D> {
    pub fn new(device: D) -> Self {
        let device = Arc::new(Mutex::new(device));
        let mut events = EventManager::new().expect("event manager");
        events.add_subscriber(device.clone());
        Rig {
            device,
            events,
            mem: guest_memory(),
            kicks: Vec::new(),
            interrupt: Arc::new(VirtioInterrupt::new(
                EventFd::new(EFD_NONBLOCK).expect("eventfd"),
            )),
        }
    }

    /// Resets the device (from the last input), lays out guest RAM from `input`, and activates
    /// the device with every queue it has.
    pub fn activate(&mut self, input: &Input<'_>) -> bool {
        {
            let mut device = self.device.lock().unwrap();
            device.reset();
        }
        // The reset's eventfds leave the epoll set.
        let _ = self.events.run_with_timeout(0);
        let zeros = vec![0u8; WRITABLE];
        self.mem.write_slice(&zeros, GuestAddress(0)).unwrap();
        self.mem.write_slice(input.ram, GuestAddress(0)).unwrap();

        let mut device = self.device.lock().unwrap();
        let count = device.queue_max_sizes().len();
        let mut queues = Vec::with_capacity(count);
        self.kicks.clear();
        for i in 0..count as u64 {
            let mut queue = Queue::new(QUEUE_SIZE).unwrap();
            let base = i * QUEUE_STRIDE;
            queue
                .try_set_desc_table_address(GuestAddress(base))
                .unwrap();
            queue
                .try_set_avail_ring_address(GuestAddress(base + 0x400))
                .unwrap();
            queue
                .try_set_used_ring_address(GuestAddress(base + 0x800))
                .unwrap();
            queue.set_ready(true);
            let event = EventFd::new(EFD_NONBLOCK).unwrap();
            self.kicks.push(event.try_clone().unwrap());
            queues.push(QueueEvent { queue, event });
        }
        device.set_acked_features(input.features);
        let activation = Activation::new(self.mem.clone(), self.interrupt.clone(), queues);
        let activated = device.activate(activation).is_ok();
        drop(device);
        let _ = self.events.run_with_timeout(0);
        activated
    }

    /// Kicks the queues `input.kicks` names and runs the loop, `input.rounds` times. Every run
    /// of the loop must return: a device that keeps it shows as a libFuzzer timeout.
    pub fn run(&mut self, input: &Input<'_>) {
        for _ in 0..input.rounds {
            for (i, kick) in self.kicks.iter().enumerate() {
                if input.kicks & (1 << (i % 8)) != 0 {
                    kick.write(1).unwrap();
                }
            }
            // Bounded: a device that kicks itself to continue is served again, up to 8 times.
            for _ in 0..8 {
                if self.events.run_with_timeout(0).unwrap_or(0) == 0 {
                    break;
                }
            }
            let _ = self.interrupt.irqfd().read();
        }
    }
}
