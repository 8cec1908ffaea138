//! Test helpers: the guest driver's side of the rx and tx queues (on virtio-queue's mock), the
//! host's side of the device's TAP (a `SOCK_SEQPACKET` socket pair keeps frame boundaries as
//! a TAP does, and shows the header the device writes), and the device on a real event loop.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

pub use ballast_virtio::test_utils::run_until;
use ballast_virtio::test_utils::{test_guest_memory, TestDriver, TEST_RAM0_END};
use ballast_virtio::{ActivateError, GuestMemoryMmap, VirtioDevice, VirtioInterrupt};

use super::super::header::VnetHeader;
use super::super::tap::Tap;
use super::super::{MacAddr, Net, QUEUE_SIZE, VNET_HDR_LEN};

pub const MIB: u64 = 1 << 20;
pub const WRITE: u16 = VRING_DESC_F_WRITE as u16;
pub const READ: u16 = 0;
pub const RX: usize = 0;
pub const TX: usize = 1;
/// Test guest RAM: `[0, 8 MiB)` and `[12 MiB, 16 MiB)`, with a 4 MiB hole. The queues live at
/// the bottom, driver buffers from 1 MiB.
pub const RAM0_END: u64 = TEST_RAM0_END;
pub const HOLE_START: u64 = RAM0_END;
const RAM_END: u64 = 16 * MIB;
pub const MAC: MacAddr = MacAddr([0x06, 0, 0xac, 0x10, 0, 2]);
const PATIENCE: Duration = Duration::from_secs(5);

pub fn guest_memory() -> &'static GuestMemoryMmap {
    test_guest_memory(RAM_END)
}

/// The host's end of the device's stand-in TAP.
pub struct Host(OwnedFd);

impl Host {
    /// Sends one frame with `header` in front, as the host kernel would through the TAP.
    pub fn send(&self, header: VnetHeader, frame: &[u8]) {
        let mut packet = header.to_bytes().to_vec();
        packet.extend_from_slice(frame);
        // SAFETY: send reads `packet.len()` bytes from `packet`, which lives across the call.
        let n = unsafe { libc::send(self.0.as_raw_fd(), packet.as_ptr().cast(), packet.len(), 0) };
        assert_eq!(
            n,
            packet.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }

    /// The next frame the device wrote to the TAP, split into its header and frame; `None`
    /// when there is none.
    pub fn recv(&self) -> Option<(VnetHeader, Vec<u8>)> {
        let mut buf = vec![0u8; 70_000];
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return None;
        }
        let n = n as usize;
        assert!(n >= VNET_HDR_LEN, "a {n}-byte packet from the device");
        let header = VnetHeader::parse(buf[..VNET_HDR_LEN].try_into().unwrap());
        Some((header, buf[VNET_HDR_LEN..n].to_vec()))
    }
}

fn set_send_buffer(fd: i32, size: libc::c_int) {
    // SAFETY: setsockopt reads one int through the pointer, which lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

impl Host {
    /// Makes the device's end send buffer as small as the kernel allows, so that a few frames
    /// fill its "TAP".
    pub fn shrink_peer_send_buffer(&self, net: &Net) {
        set_send_buffer(net.tap.as_raw_fd(), 0);
    }
}

/// A device on a stand-in TAP, and the host's end of it.
pub fn device() -> (Net, Host) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into `fds`.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: both descriptors are new and ours alone.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Room for a few hundred small frames each way, as a TAP's queue has.
    for fd in [&ours, &theirs] {
        set_send_buffer(fd.as_raw_fd(), 1 << 20);
    }
    let net = Net::with_tap(Tap::from_socket(ours, "test0"), MAC).unwrap();
    (net, Host(theirs))
}

/// An Ethernet frame of `len` bytes whose bytes say where they are (`seed` tells frames apart).
pub fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed ^ (i >> 8) as u8)
        .collect()
}

/// A frame as the guest received it.
#[derive(Debug)]
pub struct Received {
    pub header: VnetHeader,
    pub frame: Vec<u8>,
    /// The used length of each buffer it took.
    pub used: Vec<u32>,
}

/// The guest driver's side of an activated network device.
pub struct Guest {
    pub mem: &'static GuestMemoryMmap,
    pub interrupt: Arc<VirtioInterrupt>,
    pub driver: TestDriver,
    /// Where each posted rx buffer's descriptors are.
    rx_buffers: HashMap<u16, Vec<(u64, u32)>>,
}

impl Guest {
    /// Acks `acked` (all offered features if `None`) and activates `net` with its two queues.
    pub fn activate(net: &mut Net, acked: Option<u64>) -> Result<Self, ActivateError> {
        let driver = TestDriver::activate(net, guest_memory(), acked, 2, QUEUE_SIZE, RAM0_END)?;
        Ok(Guest {
            mem: driver.mem,
            interrupt: driver.interrupt.clone(),
            driver: driver.wrapping(),
            rx_buffers: HashMap::new(),
        })
    }

    /// Posts an rx buffer of `len` bytes (one descriptor); returns its head.
    pub fn post_rx(&mut self, len: u32) -> u16 {
        let addr = self.driver.buffer(len as usize, 0xee);
        self.post_rx_chain(&[(addr, len, WRITE)])
    }

    /// Posts an rx chain as given.
    pub fn post_rx_chain(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.driver.queues[RX].add_chain(descs);
        let parts = descs.iter().map(|&(addr, len, _)| (addr, len)).collect();
        self.rx_buffers.insert(head, parts);
        head
    }

    /// Makes a tx chain of `header` and `frame` available, cut into descriptors at `cuts`
    /// (offsets into header and frame together).
    pub fn send_cut(&mut self, header: VnetHeader, frame: &[u8], cuts: &[usize]) -> u16 {
        let mut packet = header.to_bytes().to_vec();
        packet.extend_from_slice(frame);
        let mut descs = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([packet.len()].iter()) {
            let addr = self.driver.buffer_with(&packet[start..end]);
            descs.push((addr, (end - start) as u32, READ));
            start = end;
        }
        self.driver.queues[TX].add_chain(&descs)
    }

    /// Makes a tx chain of `header` and `frame` available, the header in a descriptor of its
    /// own (as Linux sends it).
    pub fn send(&mut self, header: VnetHeader, frame: &[u8]) -> u16 {
        self.send_cut(header, frame, &[VNET_HDR_LEN])
    }

    /// Makes a chain available through one indirect descriptor whose table holds `descs`.
    pub fn add_indirect(&mut self, queue: usize, descs: &[(u64, u32, u16)]) -> u16 {
        let mut table = Vec::with_capacity(descs.len() * 16);
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let (flags, next) = match i + 1 == descs.len() {
                true => (flags, 0),
                false => (flags | VRING_DESC_F_NEXT as u16, i as u16 + 1),
            };
            table.extend_from_slice(&addr.to_le_bytes());
            table.extend_from_slice(&len.to_le_bytes());
            table.extend_from_slice(&flags.to_le_bytes());
            table.extend_from_slice(&next.to_le_bytes());
        }
        let at = self.driver.buffer_with(&table);
        let indirect = VRING_DESC_F_INDIRECT as u16;
        self.driver.queues[queue].add_chain(&[(at, table.len() as u32, indirect)])
    }

    /// A buffer in guest RAM with `bytes`; its address.
    pub fn buffer_with(&mut self, bytes: &[u8]) -> u64 {
        self.driver.buffer_with(bytes)
    }

    pub fn kick(&self, queue: usize) {
        self.driver.queues[queue].kick.write(1).unwrap();
    }

    /// The used elements of `queue` since the last call.
    pub fn used(&mut self, queue: usize) -> Vec<(u16, u32)> {
        self.driver.queues[queue].take_used()
    }

    /// The frames the device put in the rx buffers since the last call, reassembled from
    /// their buffers as a merging driver does (the first buffer's `num_buffers` says how many).
    pub fn received(&mut self) -> Vec<Received> {
        let used = self.used(RX);
        let mut out = Vec::new();
        let mut i = 0;
        while i < used.len() {
            let mut bytes = self.read_rx(used[i]);
            assert!(
                bytes.len() >= VNET_HDR_LEN,
                "a used length of {}",
                used[i].1
            );
            let header = VnetHeader::parse(bytes[..VNET_HDR_LEN].try_into().unwrap());
            let count = usize::from(header.num_buffers);
            assert!(count >= 1 && i + count <= used.len(), "num_buffers {count}");
            for &element in &used[i + 1..i + count] {
                bytes.extend(self.read_rx(element));
            }
            out.push(Received {
                header,
                frame: bytes[VNET_HDR_LEN..].to_vec(),
                used: used[i..i + count].iter().map(|&(_, len)| len).collect(),
            });
            i += count;
        }
        out
    }

    /// The first `len` bytes of the rx buffer `head`.
    fn read_rx(&mut self, (head, len): (u16, u32)) -> Vec<u8> {
        let parts = self.rx_buffers.remove(&head).expect("a posted rx buffer");
        let mut bytes = Vec::new();
        let mut left = len as usize;
        for (addr, part_len) in parts {
            let n = left.min(part_len as usize);
            let mut chunk = vec![0u8; n];
            self.mem.read_slice(&mut chunk, GuestAddress(addr)).unwrap();
            bytes.extend(chunk);
            left -= n;
        }
        assert_eq!(left, 0, "used length beyond the buffer");
        bytes
    }

    /// Whether the device raised an interrupt since the last call (and acknowledges it).
    pub fn interrupted(&self) -> bool {
        let fired = self.interrupt.irqfd().read().is_ok();
        self.interrupt.ack(self.interrupt.status());
        fired
    }
}

/// The device on a real event loop.
pub struct Looped {
    pub net: Arc<Mutex<Net>>,
    pub manager: EventManager<Arc<Mutex<Net>>>,
}

impl Looped {
    pub fn new(net: Net) -> Self {
        let net = Arc::new(Mutex::new(net));
        let mut manager = EventManager::<Arc<Mutex<Net>>>::new().unwrap();
        manager.add_subscriber(net.clone());
        Looped { net, manager }
    }

    /// Runs the loop until `done` holds; fails the test after a while.
    pub fn until(&mut self, what: &str, mut done: impl FnMut(&Net) -> bool) {
        let net = self.net.clone();
        let ok = run_until(&mut self.manager, PATIENCE, || done(&net.lock().unwrap()));
        assert!(ok, "timed out waiting for {what}");
    }

    /// Runs the loop for as long as it has events.
    pub fn settle(&mut self) {
        while self.manager.run_with_timeout(20).unwrap() > 0 {}
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Net> {
        self.net.lock().unwrap()
    }
}

/// Activates `net` with `acked`; for tests that drive the device by hand, also what the event
/// loop does on activation (the TAP's offloads).
pub fn activated(acked: Option<u64>) -> (Net, Host, Guest) {
    let (mut net, host) = device();
    let guest = Guest::activate(&mut net, acked).unwrap();
    net.apply_offloads();
    (net, host, guest)
}

/// The offered features with `bits` taken away.
pub fn offered_without(bits: &[u32]) -> u64 {
    let (net, _host) = device();
    bits.iter()
        .fold(net.avail_features(), |f, bit| f & !(1u64 << bit))
}
