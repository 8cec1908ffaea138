//! The REST API as a client can use it: raw bytes on the real API socket, through the real
//! HTTP server and the real request handler (on its own event loop, over a VM with a balloon
//! and no vCPUs). Every answer is a well-formed HTTP answer below 500, and an error carries a
//! `fault_message`.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ballast::api::handler::{ApiHandler, VmHandles};
use ballast::api::server::ApiServer;
use ballast::vstate::exit::ExitState;
use ballast::vstate::vcpu::VcpuPause;
use ballast_devices::balloon::{Balloon, BalloonConfig};
use ballast_devices::unix_socket;
use ballast_manager::ManagerHandle;
use event_manager::{EventManager, SubscriberOps};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::tempdir::TempDir;

struct Api {
    sock: PathBuf,
    _dir: TempDir,
    _server: ApiServer,
}

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let dir = TempDir::new_with_prefix("/tmp/ballast-fuzz-api-").unwrap();
        let sock = dir.as_path().join("api.sock");
        let bound = unix_socket::bind(&sock).unwrap();
        let (sender, receiver) = ballast::api::channel().unwrap();
        let mem = ballast_fuzz::guest_memory();
        let mem_size = ballast_fuzz::RAM_SIZE as u64;
        let vm = VmHandles {
            exit: Arc::new(ExitState::new().unwrap()),
            pause: Arc::new(VcpuPause::new()),
            vcpu_threads: Vec::new(),
            mem,
            mem_size,
            balloon: Arc::new(Mutex::new(
                Balloon::new(BalloonConfig {
                    deflate_on_oom: false,
                    free_page_reporting: false,
                    stats_polling_interval_s: 1,
                })
                .unwrap(),
            )),
            started: Instant::now(),
            agent: None,
            manager: ManagerHandle::without_driver(mem_size / 4096),
            net: Vec::new(),
        };
        let handler = Arc::new(Mutex::new(ApiHandler::new(receiver, vm)));
        std::thread::spawn(move || {
            let mut events = EventManager::<Arc<Mutex<ApiHandler>>>::new().unwrap();
            events.add_subscriber(handler);
            loop {
                let _ = events.run_with_timeout(100);
            }
        });
        let server = ApiServer::start(bound.listener, bound.file, sender).unwrap();
        Api {
            sock,
            _dir: dir,
            _server: server,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let api = api();
    let mut stream = UnixStream::connect(&api.sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may answer and close before it read everything: a failed write is fine.
    let _ = stream.write_all(data);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    if answer.is_empty() {
        // Bytes that are not HTTP at all: the server hangs up.
        return;
    }
    let text = String::from_utf8_lossy(&answer);
    // An HTTP/1.0 request gets an HTTP/1.0 answer.
    assert!(
        text.starts_with("HTTP/1.1 ") || text.starts_with("HTTP/1.0 "),
        "{text}"
    );
    let status: u16 = text[9..12].parse().expect("a status code");
    assert!((200..500).contains(&status), "{text}");
    if status >= 400 && text.contains("application/json") {
        assert!(text.contains("\"fault_message\""), "{text}");
    }
});
