//! The balloon's four queues (inflate, deflate, stats, free page reporting) against whatever a
//! guest puts in its rings: the device never panics, and one wake-up of the loop does bounded
//! work.
#![no_main]

use std::cell::RefCell;

use ballast_devices::balloon::{Balloon, BalloonConfig};
use ballast_fuzz::{Input, Rig};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static RIG: RefCell<Rig<Balloon>> = RefCell::new(Rig::new(
        Balloon::new(BalloonConfig {
            deflate_on_oom: true,
            free_page_reporting: true,
            stats_polling_interval_s: 1,
        })
        .unwrap(),
    ));
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    RIG.with(|rig| {
        let mut rig = rig.borrow_mut();
        if rig.activate(&input) {
            rig.run(&input);
            let balloon = rig.device.lock().unwrap();
            // Never more pages in the balloon than guest RAM has.
            assert!(balloon.ballooned_pages() <= (ballast_fuzz::RAM_SIZE / 4096) as u64);
        }
    });
});
