//! The vCPU threads: made, started (pausable, for the API's pause), and stopped at teardown.

use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ballast_devices::bus::Bus;
use vmm_sys_util::signal::Killable;

use kvm_ioctls::Kvm;

use super::memory::Guest;
use super::RunError;
use crate::config::VmConfig;
use crate::vstate::exit::{ExitState, VmExit};
use crate::vstate::vcpu::{kick_signal, Vcpu, VcpuPause};

pub(super) struct Vcpus {
    pub pause: Arc<VcpuPause>,
    handles: Vec<JoinHandle<()>>,
    /// When they started.
    pub started: Instant,
}

impl Vcpus {
    /// The threads, to kick them out of KVM_RUN on a pause.
    pub fn threads(&self) -> Vec<libc::pthread_t> {
        self.handles.iter().map(|h| h.as_pthread_t()).collect()
    }

    /// Kicks every vCPU thread out of KVM_RUN until it has seen the stop and ended.
    pub fn stop(self) {
        // Parked vCPUs wait on the pause, not in KVM_RUN: wake them so they see the stop.
        self.pause.release_for_stop();
        for handle in self.handles {
            while !handle.is_finished() {
                // The thread may be between its stop check and KVM_RUN; so kick until it is gone.
                let _ = handle.kill(kick_signal());
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = handle.join();
        }
    }
}

/// Makes every vCPU (an error fails the launch), then starts them; a thread that cannot start
/// stops the VM with a failure instead.
pub(super) fn start(
    config: &VmConfig,
    kvm: &Kvm,
    num_vcpus: u8,
    guest: &Guest,
    buses: (&Bus, &Bus),
    exit: &Arc<ExitState>,
) -> Result<Vcpus, RunError> {
    let (pio, mmio) = buses;
    let vcpus = (0..num_vcpus)
        .map(|id| {
            Vcpu::new(
                kvm,
                &guest.vm,
                id,
                num_vcpus,
                guest.kernel.entry,
                config.tsc_deadline,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pause = Arc::new(VcpuPause::new());
    let started = Instant::now();
    let mut handles = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        match vcpu.start_pausable(pio.clone(), mmio.clone(), exit.clone(), pause.clone()) {
            Ok(h) => handles.push(h),
            Err(source) => {
                exit.request(VmExit::Failure(format!(
                    "cannot start a vCPU thread: {source}"
                )));
                break;
            }
        }
    }
    Ok(Vcpus {
        pause,
        handles,
        started,
    })
}
