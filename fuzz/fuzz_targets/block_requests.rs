//! virtio-blk requests as a guest can make them, against a real image file: refused or carried
//! out, never a panic, and nothing outside the image or guest RAM touched.
#![no_main]

use std::cell::RefCell;

use ballast_devices::block::{Block, BlockConfig};
use ballast_fuzz::{Input, Rig};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::tempfile::TempFile;

const IMAGE_SIZE: u64 = 64 << 10;

thread_local! {
    static RIG: RefCell<(Rig<Block>, TempFile)> = RefCell::new({
        let image = TempFile::new_with_prefix("/tmp/ballast-fuzz-blk-").unwrap();
        image.as_file().set_len(IMAGE_SIZE).unwrap();
        let block = Block::new(BlockConfig::new(image.as_path())).unwrap();
        (Rig::new(block), image)
    });
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    RIG.with(|rig| {
        let (rig, image) = &mut *rig.borrow_mut();
        if rig.activate(&input) {
            rig.run(&input);
            // Requests finish on the disk's I/O thread; let them complete before the next input
            // resets the device (a reset drops what is still in flight, which is fine too).
            std::thread::sleep(std::time::Duration::from_micros(50));
            let _ = rig.events.run_with_timeout(0);
        }
        // The image never grows: nothing is written past its end.
        assert_eq!(image.as_file().metadata().unwrap().len(), IMAGE_SIZE);
    });
});
