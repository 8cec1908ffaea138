//! The event loop only takes and completes requests: a disk that stops answering stalls its own
//! requests and nothing else, and a guest cannot make one wake-up take more than a budget of
//! chains.
//!
//! The stalled disk is a real stall inside a real `read`: the guest buffer the image is read
//! into is registered with a userfaultfd, so the kernel's copy into it blocks until the test
//! lets it go (as a read from a hung disk blocks until the disk answers).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_virtio::GuestMemoryMmap;
use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;

#[test]
fn heads_naming_no_descriptor_count_against_the_budget() {
    let (mut block, driver, _image) = activated(false);
    block.chains_per_run = 8;
    for _ in 0..32 {
        driver.push_avail_head(QUEUE_SIZE + 9);
    }
    block.process_queue();
    assert_eq!(block.metrics().snapshot().invalid_requests, 8);
    // The rest waits for the next wake-up, which the device asked for.
    assert_eq!(driver.kick.read().unwrap(), 1);
    block.run_queue();
    block.run_queue();
    block.run_queue();
    assert_eq!(block.metrics().snapshot().invalid_requests, 32);
    assert!(!block.needs_reset());
}

#[test]
fn an_indirect_chain_is_refused_when_not_negotiated() {
    let (mut block, _image) = block(false);
    let acked = block.avail_features() & !bit(VIRTIO_RING_F_INDIRECT_DESC);
    let mut driver = Driver::activate(&mut block, Some(acked)).unwrap();
    let req = driver.indirect_read(0, 2);
    block.run_queue();
    assert_eq!(driver.status(&req), UNANSWERED);
    assert_eq!(driver.used(0), (u32::from(req.head), 0));
    assert_eq!(block.metrics().snapshot().invalid_requests, 1);
    assert_eq!(block.metrics().snapshot().read_count, 0);
}

/// Something else the loop serves (the API, in ballast): counts its wake-ups.
struct Ping {
    event: EventFd,
    seen: Arc<Mutex<u64>>,
}

impl MutEventSubscriber for Ping {
    fn init(&mut self, ops: &mut EventOps) {
        ops.add(Events::new(&self.event, EventSet::IN)).unwrap();
    }

    fn process(&mut self, _: Events, _: &mut EventOps) {
        let _ = self.event.read();
        *self.seen.lock().unwrap() += 1;
    }
}

/// Guest RAM whose host pages block whoever touches them first, until `release`.
struct StalledRange {
    uffd: Option<OwnedFd>,
}

const UFFD_API: u64 = 0xaa;
/// `_IOWR(0xaa, 0x3f, struct uffdio_api)` and `_IOWR(0xaa, 0x00, struct uffdio_register)`.
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

impl StalledRange {
    fn new(mem: &GuestMemoryMmap, addr: u64, len: u64) -> Self {
        let host = mem.get_host_address(GuestAddress(addr)).unwrap() as u64;
        // SAFETY: a plain system call that returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
        assert!(fd >= 0, "userfaultfd: {}", std::io::Error::last_os_error());
        // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = [UFFD_API, 0, 0];
        // SAFETY: UFFDIO_API reads and writes a `struct uffdio_api` (three u64s): `api`.
        let ret = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, api.as_mut_ptr()) };
        assert_eq!(ret, 0, "UFFDIO_API: {}", std::io::Error::last_os_error());
        let mut register = [host, len, UFFDIO_REGISTER_MODE_MISSING, 0];
        // SAFETY: UFFDIO_REGISTER reads and writes a `struct uffdio_register` (range start and
        // length, mode, ioctls: four u64s): `register`. The range is test guest RAM that this
        // process mapped and has not touched.
        let ret = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, register.as_mut_ptr()) };
        assert_eq!(
            ret,
            0,
            "UFFDIO_REGISTER: {}",
            std::io::Error::last_os_error()
        );
        StalledRange { uffd: Some(uffd) }
    }

    /// Closing the userfaultfd lets every blocked access go on (the pages fault in as usual).
    fn release(&mut self) {
        self.uffd = None;
    }
}

#[test]
fn a_stalled_disk_does_not_stall_the_event_loop() {
    let (block, _image) = block(false);
    let block = Arc::new(Mutex::new(block));
    let mut manager = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    manager.add_subscriber(block.clone());
    let ping = EventFd::new(EFD_NONBLOCK).unwrap();
    let seen = Arc::new(Mutex::new(0));
    manager.add_subscriber(Arc::new(Mutex::new(Ping {
        event: ping.try_clone().unwrap(),
        seen: seen.clone(),
    })));
    let mut driver = Driver::activate(&mut block.lock().unwrap(), None).unwrap();
    manager.run_with_timeout(0).unwrap();

    // A read into guest pages that stall whoever writes them first.
    let target = 12 * MIB;
    let stall = Arc::new(Mutex::new(StalledRange::new(driver.mem, target, 64 * 1024)));
    // If the loop itself is stuck in that read, only this lets it go: after 5 s.
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let give_up = {
        let stall = stall.clone();
        std::thread::spawn(move || {
            let _ = wait.recv_timeout(Duration::from_secs(5));
            stall.lock().unwrap().release();
        })
    };
    let header = driver.header(VIRTIO_BLK_T_IN, 0);
    let status = driver.status_byte();
    driver.add_chain(&[
        (header, 16, READ),
        (target, 4096, WRITE),
        (status, 1, WRITE),
    ]);
    driver.kick.write(1).unwrap();

    let started = Instant::now();
    manager.run_with_timeout(100).unwrap();
    ping.write(1).unwrap();
    assert!(run_until(&mut manager, Duration::from_secs(10), || {
        *seen.lock().unwrap() == 1
    }));
    let answered_after = started.elapsed();
    assert!(
        answered_after < Duration::from_secs(2),
        "the loop answered only after {answered_after:?}, with the disk stalled"
    );
    assert_eq!(
        driver.used_count(),
        0,
        "the stalled read cannot have finished"
    );

    // The disk answers: the read completes with the image's bytes.
    let _ = done.send(());
    assert!(run_until(&mut manager, Duration::from_secs(5), || {
        driver.used_count() == 1
    }));
    assert_eq!(driver.used(0).1, 4096 + 1);
    assert_eq!(driver.guest_bytes(target, 4096), pattern(0, 4096));
    give_up.join().unwrap();
}
