//! API load benchmark: 8 concurrent clients send 10 000 `GET /vm/memory` requests in total to a
//! real `ballast run` (512 MiB guest) while its guest runs, and the guest's progress under that
//! load is compared with its progress beside an idle API.
//!
//! Run: `cargo bench -p ballast --bench api_load`. Without `--bench` (as `cargo test
//! --all-targets` runs it) it makes a short smoke run instead.
//!
//! The guest is the tests' "ticker" (see `tests/support`): a ring-0 loop that writes one byte to
//! the serial port every 4096 iterations, so the bytes on ballast's stdout count the guest's
//! work. The vCPU threads' CPU time (from /proc) is reported beside it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use support::{thread_cpu_ticks, Ballast, Guest, Launch};

const CLIENTS: usize = 8;
const REQUESTS: usize = 10_000;
const PATH: &str = "/vm/memory";

/// What one window of wall time saw.
#[derive(Debug, Clone, Copy)]
struct Window {
    wall: Duration,
    guest_bytes: usize,
    vcpu_ticks: u64,
    api_ticks: u64,
    loop_ticks: u64,
}

impl Window {
    fn guest_rate(&self) -> f64 {
        self.guest_bytes as f64 / self.wall.as_secs_f64()
    }
    /// CPU seconds per wall second.
    fn share(ticks: u64, wall: Duration) -> f64 {
        ticks as f64 / clock_ticks_per_s() / wall.as_secs_f64()
    }
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

struct Probe<'a> {
    b: &'a Ballast,
    start: Instant,
    bytes: usize,
    vcpu: u64,
    api: u64,
    event_loop: u64,
}

impl<'a> Probe<'a> {
    fn start(b: &'a Ballast) -> Self {
        Self {
            b,
            start: Instant::now(),
            bytes: b.stdout_len(),
            vcpu: thread_cpu_ticks(b.pid(), "vcpu"),
            api: thread_cpu_ticks(b.pid(), "api"),
            // The main thread (named after the binary) runs the event loop.
            event_loop: thread_cpu_ticks(b.pid(), "ballast"),
        }
    }

    fn stop(self) -> Window {
        let pid = self.b.pid();
        Window {
            wall: self.start.elapsed(),
            guest_bytes: self.b.stdout_len() - self.bytes,
            vcpu_ticks: thread_cpu_ticks(pid, "vcpu") - self.vcpu,
            api_ticks: thread_cpu_ticks(pid, "api") - self.api,
            loop_ticks: thread_cpu_ticks(pid, "ballast") - self.event_loop,
        }
    }
}

fn idle(b: &Ballast, wall: Duration) -> Window {
    let probe = Probe::start(b);
    std::thread::sleep(wall);
    probe.stop()
}

/// One client: a keep-alive connection sending `count` requests one after the other.
async fn client(sock: Arc<std::path::PathBuf>, count: usize) -> Vec<Duration> {
    let stream = tokio::net::UnixStream::connect(&*sock)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let request = Request::get(PATH)
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let start = Instant::now();
        sender.ready().await.expect("connection ready");
        let response = sender.send_request(request).await.expect("answer");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        latencies.push(start.elapsed());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

// Long on purpose: the benchmark reads top to bottom as the README describes it (boot, load,
// measure, print the table).
fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: then a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let (requests, idle_wall) = if full {
        (REQUESTS, Duration::from_secs(3))
    } else {
        (CLIENTS * 50, Duration::from_millis(300))
    };
    let b = Ballast::start(Launch {
        guest: Guest::Ticker,
        memory: "512M",
        vcpus: 1,
        // Some resident guest RAM, so mincore has pages to find.
        initrd_bytes: 64 << 20,
        ..Launch::default()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.stdout_len() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(b.stdout_len() >= 10, "the guest does not tick");
    let resident = b.json(PATH)["resident_bytes"].as_u64().unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sock = Arc::new(b.sock.clone());

    // Warm-up, then idle / loaded / idle, so drift in the machine's load shows.
    runtime.block_on(client(sock.clone(), requests / 50));
    let before = idle(&b, idle_wall);
    let probe = Probe::start(&b);
    let started = Instant::now();
    let latencies: Vec<Duration> = runtime.block_on(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(client(sock.clone(), requests / CLIENTS)))
            .collect();
        let mut all = Vec::with_capacity(REQUESTS);
        for task in tasks {
            all.extend(task.await.expect("client task"));
        }
        all
    });
    let elapsed = started.elapsed();
    let loaded = probe.stop();
    let after = idle(&b, loaded.wall.max(idle_wall));

    let mut sorted = latencies.clone();
    sorted.sort();
    let throughput = latencies.len() as f64 / elapsed.as_secs_f64();
    let idle_rate = (before.guest_rate() + after.guest_rate()) / 2.0;
    let idle_vcpu = (Window::share(before.vcpu_ticks, before.wall)
        + Window::share(after.vcpu_ticks, after.wall))
        / 2.0;

    println!("API load: {CLIENTS} clients, {} x GET {PATH}, guest 512 MiB ({:.0} MiB resident), 1 vCPU running the ticker guest", latencies.len(), resident as f64 / (1 << 20) as f64);
    println!();
    println!("| measure | value |");
    println!("| --- | --- |");
    println!("| wall time | {:.2} s |", elapsed.as_secs_f64());
    println!("| throughput | {throughput:.0} requests/s |");
    println!(
        "| latency p50 | {:.0} µs |",
        percentile(&sorted, 0.50).as_secs_f64() * 1e6
    );
    println!(
        "| latency p99 | {:.0} µs |",
        percentile(&sorted, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "| latency max | {:.0} µs |",
        sorted.last().unwrap().as_secs_f64() * 1e6
    );
    println!(
        "| guest progress, idle API | {idle_rate:.1} ticks/s (before {:.1}, after {:.1}) |",
        before.guest_rate(),
        after.guest_rate()
    );
    println!(
        "| guest progress, loaded API | {:.1} ticks/s = {:.0} % of idle |",
        loaded.guest_rate(),
        100.0 * loaded.guest_rate() / idle_rate
    );
    println!(
        "| vCPU thread CPU, idle / loaded | {:.2} / {:.2} CPU-s per s |",
        idle_vcpu,
        Window::share(loaded.vcpu_ticks, loaded.wall)
    );
    println!(
        "| ballast API thread / event loop CPU under load | {:.2} / {:.2} CPU-s per s |",
        Window::share(loaded.api_ticks, loaded.wall),
        Window::share(loaded.loop_ticks, loaded.wall)
    );
    println!(
        "| machine | {} CPUs, load average (1 min) at the end {} |",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
    );
}
