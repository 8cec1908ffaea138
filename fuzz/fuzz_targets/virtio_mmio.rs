//! The virtio-mmio register interface as a hostile driver drives it: any access, any size, any
//! order, with a balloon behind it (whose activation takes the queues the driver set up).
//! Nothing panics, and reads always fill the whole buffer.
#![no_main]

use std::sync::{Arc, Mutex};

use ballast_devices::balloon::{Balloon, BalloonConfig};
use ballast_virtio::{MmioTransport, VirtioDevice, VirtioInterrupt};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Each access: kind (bit 0: write), offset (two bytes, the window is 0x200), size code, value.
const ACCESS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let (ram, ops) = data.split_at(data.len().min(1024));
    let mem = ballast_fuzz::guest_memory();
    mem.write_slice(ram, GuestAddress(0)).unwrap();
    let balloon = Balloon::new(BalloonConfig {
        deflate_on_oom: true,
        free_page_reporting: true,
        stats_polling_interval_s: 1,
    })
    .unwrap();
    let queues = balloon.queue_max_sizes().len();
    let device: Arc<Mutex<dyn VirtioDevice>> = Arc::new(Mutex::new(balloon));
    let interrupt = Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let events = (0..queues)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let mut transport = MmioTransport::new(mem, device, interrupt, events);
    for op in ops.chunks_exact(ACCESS) {
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]]) % 0x200);
        let len = [1usize, 2, 4, 8][usize::from(op[3] % 4)];
        if op[0] & 1 == 1 {
            transport.write(offset, &op[4..4 + len.min(4)]);
        } else {
            let mut buf = [0xa5u8; 8];
            transport.read(offset, &mut buf[..len]);
            if offset < 0x100 && len != 4 {
                // A refused register read leaves no stale bytes behind.
                assert!(buf[..len].iter().all(|&b| b == 0));
            }
        }
    }
});
