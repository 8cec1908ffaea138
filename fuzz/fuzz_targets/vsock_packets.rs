//! vsock packets and rx buffers as a guest can make them, through the device and its muxer,
//! with a host program listening on port 1234: a run of the loop always returns, and the
//! connections the guest holds stay under the cap.
#![no_main]

use std::cell::RefCell;
use std::os::unix::net::UnixListener;

use ballast_devices::vsock::{Vsock, VsockConfig};
use ballast_fuzz::{Input, Rig};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::tempdir::TempDir;

struct Host {
    rig: Rig<Vsock>,
    listener: UnixListener,
    _dir: TempDir,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new({
        let dir = TempDir::new_with_prefix("/tmp/ballast-fuzz-vsock-").unwrap();
        let path = dir.as_path().join("v.sock");
        let listener = UnixListener::bind(format!("{}_1234", path.display())).unwrap();
        listener.set_nonblocking(true).unwrap();
        let vsock = Vsock::new(VsockConfig {
            guest_cid: 3,
            uds_path: path,
        })
        .unwrap();
        Host {
            rig: Rig::new(vsock),
            listener,
            _dir: dir,
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    HOST.with(|host| {
        let host = &mut *host.borrow_mut();
        if host.rig.activate(&input) {
            host.rig.run(&input);
            // The host program takes what connected, and hangs up at once.
            while host.listener.accept().is_ok() {}
            host.rig.run(&input);
            let vsock = host.rig.device.lock().unwrap();
            assert!(vsock.guest_connection_count() <= 256);
        }
    });
});
