//! Test helpers: the guest driver's side of the three queues (on virtio-queue's mock), the
//! device on a real event loop, and host programs on real Unix sockets in a temporary folder.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::tempdir::TempDir;

use ballast_virtio::test_utils::{
    test_guest_memory, DriverQueue, RingLayout, TestDriver, TEST_RAM0_END,
};
use ballast_virtio::{ActivateError, GuestMemoryMmap, VirtioInterrupt};

use super::super::packet::{Header, HEADER_SIZE, OP_REQUEST, OP_RESPONSE, OP_RW, TYPE_STREAM};
use super::super::{Limits, Vsock, VsockConfig, HOST_CID, QUEUE_SIZE};

pub const MIB: u64 = 1 << 20;
pub const GUEST_CID: u64 = 3;
pub const WRITE: u16 = VRING_DESC_F_WRITE as u16;
pub const READ: u16 = 0;
/// The receive buffer the test guest advertises.
pub const GUEST_BUF_ALLOC: u32 = 256 * 1024;
/// How long a test waits for something before it fails.
const PATIENCE: Duration = Duration::from_secs(5);

/// Test guest RAM: `[0, 8 MiB)` and `[12 MiB, 16 MiB)`, with a 4 MiB hole. The queues live at
/// the bottom, driver buffers from 1 MiB.
pub const RAM0_END: u64 = TEST_RAM0_END;
pub const HOLE_START: u64 = RAM0_END;
const RAM_END: u64 = 16 * MIB;

/// Guest memory that lives as long as the test process: the mock queues borrow it.
pub fn guest_memory() -> &'static GuestMemoryMmap {
    test_guest_memory(RAM_END)
}

/// A guest packet header: stream type, guest CID to the host, the guest's full credit.
pub fn hdr(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        type_: TYPE_STREAM,
        op,
        buf_alloc: GUEST_BUF_ALLOC,
        ..Header::default()
    }
}

/// A packet the device gave the guest.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub hdr: Header,
    pub data: Vec<u8>,
    pub used_len: u32,
}

/// Where an rx buffer's parts are.
#[derive(Clone, Copy)]
struct RxBuffer {
    header: u64,
    data: u64,
}

/// The guest driver's side of an activated vsock device.
pub struct Guest {
    pub mem: &'static GuestMemoryMmap,
    pub interrupt: Arc<VirtioInterrupt>,
    /// The rx, tx and event queues, and the buffers.
    driver: TestDriver,
    rx_buffers: HashMap<u16, RxBuffer>,
    /// Rx buffers handed to the device and not yet used.
    pub rx_outstanding: usize,
    /// Each used rx buffer is replaced by a fresh one, as Linux's driver does.
    pub auto_refill: bool,
    /// The payload size of the buffers `refill` adds.
    pub rx_size: u32,
    /// Packets received and not yet looked at.
    pub inbox: VecDeque<Pkt>,
    /// How many tx chains the device has given back.
    pub tx_used: usize,
    pub rx_kick: EventFd,
    pub tx_kick: EventFd,
}

impl Guest {
    /// Acks `features` (all offered if `None`) and activates `vsock`, with `rx_buffers` rx
    /// buffers of 4 KiB posted.
    pub fn activate(
        vsock: &mut Vsock,
        features: Option<u64>,
        rx_buffers: usize,
    ) -> Result<Self, ActivateError> {
        let driver =
            TestDriver::activate(vsock, guest_memory(), features, 3, QUEUE_SIZE, RAM0_END)?
                .wrapping();
        let rx_kick = driver.queues[0].kick.try_clone().unwrap();
        let tx_kick = driver.queues[1].kick.try_clone().unwrap();
        let mut guest = Guest {
            mem: driver.mem,
            interrupt: driver.interrupt.clone(),
            driver,
            rx_buffers: HashMap::new(),
            rx_outstanding: 0,
            auto_refill: true,
            rx_size: 4096,
            inbox: VecDeque::new(),
            tx_used: 0,
            rx_kick,
            tx_kick,
        };
        for _ in 0..rx_buffers {
            guest.add_rx(guest.rx_size);
        }
        Ok(guest)
    }

    /// A fresh buffer of `len` bytes in guest RAM (the allocator wraps around; tests keep few
    /// buffers outstanding).
    pub fn alloc(&mut self, len: usize) -> u64 {
        self.driver.alloc(len)
    }

    pub fn buffer_with(&mut self, bytes: &[u8]) -> u64 {
        self.driver.buffer_with(bytes)
    }

    fn rx(&mut self) -> &mut DriverQueue {
        &mut self.driver.queues[0]
    }

    fn tx(&mut self) -> &mut DriverQueue {
        &mut self.driver.queues[1]
    }

    /// Posts an rx buffer with room for `size` payload bytes, header and payload in one
    /// descriptor (as Linux 6.2 and later do).
    pub fn add_rx(&mut self, size: u32) -> u16 {
        let len = HEADER_SIZE as u32 + size;
        let addr = self.buffer_with(&vec![0xee; len as usize]);
        let head = self.rx().add_chain(&[(addr, len, WRITE)]);
        self.rx_buffers.insert(
            head,
            RxBuffer {
                header: addr,
                data: addr + HEADER_SIZE as u64,
            },
        );
        self.rx_outstanding += 1;
        head
    }

    /// Posts an rx buffer as a header descriptor and a data descriptor (older Linux).
    pub fn add_rx_split(&mut self, size: u32) -> u16 {
        let header = self.buffer_with(&[0xee; HEADER_SIZE]);
        let data = self.buffer_with(&vec![0xee; size as usize]);
        let head = self
            .rx()
            .add_chain(&[(header, HEADER_SIZE as u32, WRITE), (data, size, WRITE)]);
        self.rx_buffers.insert(head, RxBuffer { header, data });
        self.rx_outstanding += 1;
        head
    }

    /// Posts a raw rx chain (for hostile cases); when used, it shows in `inbox` with an empty
    /// header and its used length.
    pub fn add_rx_raw(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.rx().add_chain(descs);
        self.rx_buffers.remove(&head);
        self.rx_outstanding += 1;
        head
    }

    /// Where the rx queue's rings are, for a hostile vCPU thread.
    pub fn rx_layout(&self) -> RingLayout {
        self.driver.queues[0].layout()
    }

    pub fn kick_rx(&self) {
        self.rx_kick.write(1).unwrap();
    }

    /// Sends `hdr` (its `len` set to the payload's) with a header and a data descriptor.
    pub fn send(&mut self, mut hdr: Header, data: &[u8]) -> u16 {
        hdr.len = data.len() as u32;
        let h = self.buffer_with(&hdr.to_bytes());
        let mut descs = vec![(h, HEADER_SIZE as u32, READ)];
        if !data.is_empty() {
            let d = self.buffer_with(data);
            descs.push((d, data.len() as u32, READ));
        }
        self.send_raw(&descs)
    }

    /// Sends `hdr` and its payload in one descriptor (Linux 6.2 and later).
    pub fn send_single(&mut self, mut hdr: Header, data: &[u8]) -> u16 {
        hdr.len = data.len() as u32;
        let mut bytes = hdr.to_bytes().to_vec();
        bytes.extend_from_slice(data);
        let addr = self.buffer_with(&bytes);
        self.send_raw(&[(addr, bytes.len() as u32, READ)])
    }

    /// Sends a raw tx chain and kicks.
    pub fn send_raw(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.tx().add_chain(descs);
        self.tx_kick.write(1).unwrap();
        head
    }

    /// Puts `head` on the tx available ring as is, valid or not, and kicks.
    pub fn push_tx_head(&mut self, head: u16) {
        self.tx().push_avail_head(head);
        self.tx_kick.write(1).unwrap();
    }

    /// Overwrites the tx available index, as a hostile driver could.
    pub fn set_tx_avail_idx(&self, idx: u16) {
        self.driver.queues[1].set_avail_idx(idx);
        self.tx_kick.write(1).unwrap();
    }

    /// Reads what the device put in the used rings: packets go to `inbox`.
    pub fn collect(&mut self) {
        self.tx_used += self.tx().take_used().len();
        for (head, used_len) in self.rx().take_used() {
            self.rx_outstanding -= 1;
            match self.rx_buffers.remove(&head) {
                Some(buffer) if used_len as usize >= HEADER_SIZE => {
                    let mut bytes = [0u8; HEADER_SIZE];
                    self.mem
                        .read_slice(&mut bytes, GuestAddress(buffer.header))
                        .unwrap();
                    let hdr = Header::from_bytes(&bytes);
                    let mut data = vec![0u8; hdr.len as usize];
                    self.mem
                        .read_slice(&mut data, GuestAddress(buffer.data))
                        .unwrap();
                    self.inbox.push_back(Pkt {
                        hdr,
                        data,
                        used_len,
                    });
                }
                // A raw or unusable buffer, given back empty or not.
                _ => self.inbox.push_back(Pkt {
                    hdr: Header::default(),
                    data: Vec::new(),
                    used_len,
                }),
            }
            if self.auto_refill {
                self.add_rx(self.rx_size);
                self.kick_rx();
            }
        }
    }
}

/// The device on an event loop, a guest driving it, and a temporary folder for its sockets.
pub struct Harness {
    pub vsock: Arc<Mutex<Vsock>>,
    pub manager: Manager,
    pub guest: Guest,
    pub path: PathBuf,
    /// Holds the sockets; removed with the harness.
    _dir: TempDir,
}

impl Harness {
    /// An activated device (all features, 32 rx buffers) with the default limits.
    pub fn new() -> Self {
        Self::with(Limits::default(), None, 32)
    }

    pub fn with(limits: Limits, features: Option<u64>, rx_buffers: usize) -> Self {
        let (vsock, manager, path, dir) = device(limits);
        let guest = Guest::activate(&mut vsock.lock().unwrap(), features, rx_buffers).unwrap();
        let mut h = Harness {
            vsock,
            manager,
            guest,
            path,
            _dir: dir,
        };
        h.settle();
        h
    }

    /// `PATH_port`.
    pub fn port_path(&self, port: u32) -> PathBuf {
        PathBuf::from(format!("{}_{port}", self.path.display()))
    }

    /// Runs the event loop once, briefly, and collects what the guest got.
    pub fn step(&mut self) {
        self.manager.run_with_timeout(5).unwrap();
        self.guest.collect();
    }

    /// Runs the event loop until it has been idle for a few rounds.
    pub fn settle(&mut self) {
        let mut idle = 0;
        let start = Instant::now();
        while idle < 3 && start.elapsed() < PATIENCE {
            if self.manager.run_with_timeout(2).unwrap() == 0 {
                idle += 1;
            } else {
                idle = 0;
            }
            self.guest.collect();
        }
    }

    /// Runs the event loop until `done` holds; fails the test after a few seconds.
    pub fn wait(&mut self, what: &str, mut done: impl FnMut(&mut Guest) -> bool) {
        let start = Instant::now();
        loop {
            self.step();
            if done(&mut self.guest) {
                return;
            }
            assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        }
    }

    /// The next packet the guest gets.
    pub fn next_packet(&mut self, what: &str) -> Pkt {
        self.wait(what, |g| !g.inbox.is_empty());
        self.guest.inbox.pop_front().unwrap()
    }

    /// Asserts the guest gets nothing more (after the loop settles).
    pub fn assert_quiet(&mut self) {
        self.settle();
        assert!(
            self.guest.inbox.is_empty(),
            "unexpected packets: {:?}",
            self.guest.inbox
        );
    }

    /// A host program connected to the device's socket that wrote `CONNECT port`.
    pub fn host_connect(&mut self, port: u32) -> Host {
        let mut host = Host::connect_raw(&self.path);
        host.write(format!("CONNECT {port}\n").as_bytes());
        host
    }

    /// A host connection to guest port `port`, through the handshake: returns the host program
    /// and the host port the device picked.
    pub fn established_host(&mut self, port: u32, guest_port_buf_alloc: u32) -> (Host, u32) {
        let mut host = self.host_connect(port);
        let request = self.next_packet("the REQUEST");
        assert_eq!(request.hdr.op, OP_REQUEST);
        let local = request.hdr.src_port;
        let mut response = hdr(OP_RESPONSE, port, local);
        response.buf_alloc = guest_port_buf_alloc;
        self.guest.send(response, &[]);
        let ok = format!("OK {local}\n");
        self.wait("the OK line", |_| {
            host.poll();
            host.got.len() >= ok.len()
        });
        assert_eq!(host.take(), ok.as_bytes());
        (host, local)
    }

    /// A guest connection from guest port `guest_port` to host port `port`, accepted by a host
    /// listener at `PATH_port`. Returns the listener and the host's end.
    pub fn established_guest(&mut self, guest_port: u32, port: u32) -> (UnixListener, Host) {
        let listener = UnixListener::bind(self.port_path(port)).unwrap();
        self.guest.send(hdr(OP_REQUEST, guest_port, port), &[]);
        let response = self.next_packet("the RESPONSE");
        assert_eq!(response.hdr.op, OP_RESPONSE, "{:?}", response.hdr);
        let (stream, _) = listener.accept().unwrap();
        (listener, Host::from_stream(stream))
    }

    /// Data from the guest on a connection (`src` guest port, `dst` host port).
    pub fn guest_write(&mut self, src: u32, dst: u32, data: &[u8]) {
        self.guest.send(hdr(OP_RW, src, dst), data);
    }

    pub fn metrics(&self) -> super::super::VsockMetricsSnapshot {
        self.vsock.lock().unwrap().metrics().snapshot()
    }

    pub fn connections(&self) -> usize {
        self.vsock.lock().unwrap().connection_count()
    }
}

pub type Manager = EventManager<Arc<Mutex<Vsock>>>;

/// A device registered with a fresh event loop, not activated, its socket in a temporary
/// folder.
pub fn device(limits: Limits) -> (Arc<Mutex<Vsock>>, Manager, PathBuf, TempDir) {
    let dir = TempDir::new_with_prefix("/tmp/ballast-vsock-").unwrap();
    let path = dir.as_path().join("v.sock");
    let config = VsockConfig {
        guest_cid: GUEST_CID,
        uds_path: path.clone(),
    };
    let vsock = Arc::new(Mutex::new(Vsock::with_limits(config, limits).unwrap()));
    let mut manager = Manager::new().unwrap();
    manager.add_subscriber(vsock.clone());
    (vsock, manager, path, dir)
}

/// A host program's end of a connection, read without blocking (the event loop runs on the
/// test's thread).
pub struct Host {
    pub stream: UnixStream,
    /// Everything read and not yet taken.
    pub got: Vec<u8>,
    pub eof: bool,
    /// The read error that ended the stream, if it was not a plain EOF.
    pub error: Option<ErrorKind>,
}

impl Host {
    pub fn connect_raw(path: &Path) -> Self {
        Self::from_stream(UnixStream::connect(path).unwrap())
    }

    pub fn from_stream(stream: UnixStream) -> Self {
        stream.set_nonblocking(true).unwrap();
        Host {
            stream,
            got: Vec::new(),
            eof: false,
            error: None,
        }
    }

    /// Reads whatever is there.
    pub fn poll(&mut self) {
        let mut buf = [0u8; 65536];
        while !self.eof {
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.eof = true;
                    self.error = Some(e.kind());
                }
            }
        }
    }

    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.got)
    }

    /// Writes all of `data` (small amounts: the socket takes them at once).
    pub fn write(&mut self, data: &[u8]) {
        self.stream.write_all(data).unwrap();
    }

    /// Writes as much of `data` as the socket takes now.
    pub fn try_write(&mut self, data: &[u8]) -> usize {
        match self.stream.write(data) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(e) => panic!("host write failed: {e}"),
        }
    }
}

/// A test payload that shows misordered or misplaced bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31) ^ ((i / 251) as u8).rotate_left(3))
        .collect()
}
