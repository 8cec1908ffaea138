//! The disk's I/O thread: one per disk, so a slow or stalled image stalls only its own
//! requests, never the event loop (which also serves the API, the other devices and the VM's
//! shutdown).
//!
//! The event loop validates each chain (`request.rs`) and sends the request here; this thread
//! reads or writes the image and guest memory, writes the status byte, and hands back the used
//! length through [`Completions`], whose eventfd wakes the loop to put the chain on the used
//! ring. One thread per disk also keeps the requests of one disk in order: a flush comes after
//! the writes before it, and a request's seek and transfer are never interleaved with another's.
//!
//! A device reset starts a new *generation*: requests of an older one still waiting here are
//! dropped unread, and the completion of one in progress is discarded by the loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::error;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use ballast_virtio::GuestMemoryMmap;

use super::io::{DiskImage, DiskIoError};
use super::metrics::{report, BlockMetrics, Counter};
use super::request::{byte_offset, Request, RequestType};
use super::VIRTIO_BLK_ID_BYTES;

/// Work for the I/O thread.
pub(super) struct Job {
    pub generation: u64,
    pub head: u16,
    pub mem: GuestMemoryMmap,
    pub request: Request,
}

/// A finished request: the chain `head` of `generation` goes on the used ring with `len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Done {
    pub generation: u64,
    pub head: u16,
    pub len: u32,
}

/// Finished requests waiting for the event loop, and the eventfd that wakes it.
pub(super) struct Completions {
    done: Mutex<Vec<Done>>,
    pub event: EventFd,
}

impl Completions {
    fn push(&self, done: Done) {
        self.done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(done);
        if let Err(e) = self.event.write(1) {
            // The loop also looks after every queue kick, so the chain is not lost for good.
            error!("virtio-blk: cannot wake the event loop for a finished request: {e}");
        }
    }

    /// Everything finished so far.
    pub(super) fn take(&self) -> Vec<Done> {
        let _ = self.event.read();
        std::mem::take(
            &mut *self
                .done
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The event loop's handle on a disk's I/O thread.
pub(super) struct WorkerHandle {
    /// `None` once dropping: closing it ends the thread.
    jobs: Option<Sender<Job>>,
    /// Disconnects when the thread has ended (and closed the image).
    ended: Receiver<()>,
    pub completions: Arc<Completions>,
    /// The generation requests are carried out for; older ones are dropped.
    generation: Arc<AtomicU64>,
}

/// What the I/O thread runs first, on itself, before any request: the VMM installs the thread's
/// seccomp filter there. An error ends the launch.
pub type WorkerSetup = crate::ThreadSetup;

impl WorkerHandle {
    /// Starts the I/O thread for `disk`, running `setup` on it first; fails if the thread
    /// cannot start or `setup` fails.
    pub(super) fn start(
        disk: DiskImage,
        metrics: Arc<BlockMetrics>,
        label: String,
        setup: Option<WorkerSetup>,
    ) -> std::io::Result<Self> {
        let (jobs, inbox) = mpsc::channel();
        let completions = Arc::new(Completions {
            done: Mutex::new(Vec::new()),
            event: EventFd::new(EFD_NONBLOCK)?,
        });
        let generation = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            disk,
            metrics,
            label,
            completions: completions.clone(),
            generation: generation.clone(),
        };
        let (ready, started) = mpsc::sync_channel(1);
        let (end_guard, ended) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("ballast-blk-io".into())
            .spawn(move || {
                let _end_guard = end_guard;
                let result = setup.map_or(Ok(()), |setup| setup());
                let ok = result.is_ok();
                let _ = ready.send(result);
                if ok {
                    worker.run(inbox);
                }
            })?;
        match started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(std::io::Error::other(why)),
            Err(_) => {
                return Err(std::io::Error::other(
                    "the disk's I/O thread ended at start",
                ))
            }
        }
        Ok(WorkerHandle {
            jobs: Some(jobs),
            ended,
            completions,
            generation,
        })
    }

    /// Hands a request to the I/O thread; gives it back if the thread is gone.
    pub(super) fn submit(&self, job: Job) -> Result<(), Job> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A reset: requests of the generation that ends are dropped.
    pub(super) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }
}

impl Drop for WorkerHandle {
    /// Ends the thread and waits a little for it, so the image (and its lock) is closed when the
    /// device is gone; a thread stuck on a hung disk is left behind rather than waited for.
    fn drop(&mut self) {
        self.jobs = None;
        let _ = self.ended.recv_timeout(Duration::from_secs(1));
    }
}

struct Worker {
    disk: DiskImage,
    metrics: Arc<BlockMetrics>,
    label: String,
    completions: Arc<Completions>,
    generation: Arc<AtomicU64>,
}

impl Worker {
    /// Until the device is dropped (its end of the channel closes).
    fn run(mut self, inbox: Receiver<Job>) {
        while let Ok(job) = inbox.recv() {
            if job.generation != self.generation.load(Ordering::Acquire) {
                continue;
            }
            let (status, written) = self.execute(&job.mem, &job.request);
            let len = answer(&job.mem, job.request.status, status, written);
            self.completions.push(Done {
                generation: job.generation,
                head: job.head,
                len,
            });
        }
    }

    /// Returns the status byte and how many data bytes were written to guest memory.
    fn execute(&mut self, mem: &GuestMemoryMmap, request: &Request) -> (u8, u32) {
        let offset = byte_offset(request.sector);
        let result = match request.kind {
            RequestType::In => self.disk.read_into(mem, offset, &request.data).map(|()| {
                self.metrics.read_count.inc();
                self.metrics.read_bytes.add(request.data_len);
                request.data_len
            }),
            RequestType::Out => self.disk.write_from(mem, offset, &request.data).map(|()| {
                self.metrics.write_count.inc();
                self.metrics.write_bytes.add(request.data_len);
                0
            }),
            RequestType::Flush => self.disk.flush().map(|()| {
                self.metrics.flush_count.inc();
                0
            }),
            RequestType::GetId => write_id(mem, self.disk.serial(), request)
                .inspect(|_| self.metrics.get_id_count.inc()),
        };
        match result {
            // At most SEG_MAX * SIZE_MAX bytes, which fits: the chain iterator refuses chains of
            // 4 GiB or more.
            Ok(written) => (
                VIRTIO_BLK_S_OK as u8,
                u32::try_from(written).unwrap_or(u32::MAX),
            ),
            Err(e) => {
                let (counter, what): (&Counter, _) = match e {
                    DiskIoError::Host(_) => (&self.metrics.io_errors, "failed on the host"),
                    DiskIoError::Guest(_) => (&self.metrics.invalid_requests, "was refused"),
                };
                report(
                    counter,
                    &self.label,
                    format_args!(
                        "a {} of {} bytes at sector {} {what}: {e}",
                        request.kind, request.data_len, request.sector
                    ),
                );
                (VIRTIO_BLK_S_IOERR as u8, 0)
            }
        }
    }
}

/// Writes the device ID into the GET_ID buffers (as much of its 20 bytes as they hold).
fn write_id(
    mem: &GuestMemoryMmap,
    serial: &[u8; VIRTIO_BLK_ID_BYTES],
    request: &Request,
) -> Result<u64, DiskIoError> {
    let mut rest: &[u8] = serial;
    for segment in &request.data {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(segment.len as usize);
        mem.write_slice(&rest[..n], segment.addr)
            .map_err(DiskIoError::Guest)?;
        rest = &rest[n..];
    }
    Ok((VIRTIO_BLK_ID_BYTES - rest.len()) as u64)
}

/// Writes the status byte; returns the used length (the data written plus the status byte, or
/// just the data if the status byte could not be written).
pub(super) fn answer(
    mem: &GuestMemoryMmap,
    status_addr: GuestAddress,
    status: u8,
    data_written: u32,
) -> u32 {
    match mem.write_obj(status, status_addr) {
        Ok(()) => data_written.saturating_add(1),
        // Checked to be in guest memory when the chain was parsed; this cannot happen.
        Err(_) => data_written,
    }
}
