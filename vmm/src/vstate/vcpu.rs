//! A vCPU: its CPUID, MSRs, local APIC and (for the boot vCPU) registers, and the thread that
//! runs it, dispatching port-I/O and MMIO exits to the buses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_msr_entry, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vm_memory::GuestAddress;

use super::exit::{ExitState, VmExit};
use super::regs;
use super::vm::{Vm, VmError};
use ballast_devices::bus::Bus;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back: without it Linux maps all RAM uncached.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// The signal that kicks a vCPU thread out of KVM_RUN when the VM stops.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
}

impl Vcpu {
    /// Creates and configures vCPU `id` of `num_vcpus`. The boot vCPU (0) enters the kernel at
    /// `entry`; the others wait in KVM for the kernel's INIT/SIPI. `tsc_deadline`: offer the
    /// TSC-deadline timer where KVM has it.
    pub fn new(
        kvm: &Kvm,
        vm: &Vm,
        id: u8,
        num_vcpus: u8,
        entry: GuestAddress,
        tsc_deadline: bool,
    ) -> Result<Self, VmError> {
        let err = |what| move |source| VmError::Kvm { what, source };
        let fd = vm
            .fd()
            .create_vcpu(u64::from(id))
            .map_err(err("create a vCPU"))?;
        let mut cpuid: CpuId = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(err("read the supported CPUID"))?;
        let options = super::cpuid::CpuidOptions {
            tsc_deadline: tsc_deadline && kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer),
        };
        super::cpuid::patch_cpuid(&mut cpuid, id, num_vcpus, options);
        fd.set_cpuid2(&cpuid).map_err(err("set the vCPU's CPUID"))?;

        let msrs = boot_msrs();
        let written = fd.set_msrs(&msrs).map_err(err("set the vCPU's MSRs"))?;
        if written != msrs.as_slice().len() {
            return Err(VmError::MissingCap("one of the boot MSRs is not writable"));
        }

        let mut lapic = fd.get_lapic().map_err(err("read the local APIC"))?;
        set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
        fd.set_lapic(&lapic).map_err(err("set the local APIC"))?;
        fd.set_fpu(&regs::boot_fpu())
            .map_err(err("set the FPU state"))?;

        if id == 0 {
            let sregs = fd.get_sregs().map_err(err("read special registers"))?;
            fd.set_sregs(&regs::long_mode_sregs(sregs))
                .map_err(err("set special registers"))?;
            fd.set_regs(&regs::boot_regs(entry))
                .map_err(err("set registers"))?;
        }
        Ok(Self { id, fd })
    }

    /// Starts the vCPU on its own thread, in a VM that is never paused.
    pub fn start(
        self,
        pio: Bus,
        mmio: Bus,
        exit: Arc<ExitState>,
    ) -> std::io::Result<JoinHandle<()>> {
        self.start_pausable(pio, mmio, exit, Arc::new(VcpuPause::new()))
    }

    /// Starts the vCPU on its own thread; it parks outside KVM_RUN while `pause` asks it to.
    pub fn start_pausable(
        self,
        pio: Bus,
        mmio: Bus,
        exit: Arc<ExitState>,
        pause: Arc<VcpuPause>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("vcpu{}", self.id))
            .spawn(move || {
                let id = self.id;
                // The vCPU is set up: from here it runs the guest under its filter.
                if let Err(e) = crate::seccomp::apply(crate::seccomp::ThreadKind::Vcpu) {
                    exit.request(VmExit::Failure(e.to_string()));
                    return;
                }
                if let Err(reason) = self.run(&pio, &mmio, &exit, &pause) {
                    exit.request(reason);
                }
                log::debug!("vCPU {id} stopped");
            })
    }

    /// Runs until the VM stops; returns the reason when this vCPU is the one that saw it.
    fn run(
        mut self,
        pio: &Bus,
        mmio: &Bus,
        exit: &ExitState,
        pause: &VcpuPause,
    ) -> Result<(), VmExit> {
        while !exit.is_stopping() {
            if pause.is_requested() {
                pause.park(exit);
                continue;
            }
            match self.fd.run() {
                Ok(VcpuExit::IoIn(port, data)) => {
                    if !pio.read(u64::from(port), data) {
                        log::debug!("vCPU {}: read of unclaimed port {port:#x}", self.id);
                    }
                }
                Ok(VcpuExit::IoOut(port, data)) => {
                    if !pio.write(u64::from(port), data) {
                        log::debug!("vCPU {}: write to unclaimed port {port:#x}", self.id);
                    }
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    if !mmio.read(addr, data) {
                        log::debug!("vCPU {}: read of unclaimed MMIO {addr:#x}", self.id);
                    }
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    if !mmio.write(addr, data) {
                        log::debug!("vCPU {}: write to unclaimed MMIO {addr:#x}", self.id);
                    }
                }
                // A triple fault: how Linux's `reboot=t` resets, and what a reset looks like on
                // nested SVM.
                Ok(VcpuExit::Shutdown) => {
                    // Also what a guest crash looks like: say so, since the exit status is 0.
                    log::warn!(
                        "vCPU {}: triple fault (KVM_EXIT_SHUTDOWN), the guest reset; vCPU state: {}",
                        self.id,
                        super::fault_dump::describe(&self.fd)
                    );
                    return Err(VmExit::Reset);
                }
                Ok(VcpuExit::SystemEvent(kind, _)) => {
                    return Err(match kind {
                        kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::Poweroff,
                        kvm_bindings::KVM_SYSTEM_EVENT_RESET => VmExit::Reset,
                        other => VmExit::Failure(format!(
                            "vCPU {} reported system event {other} (guest crash)",
                            self.id
                        )),
                    })
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    return Err(VmExit::Failure(format!(
                        "vCPU {} could not enter the guest on host CPU {cpu} (hardware reason {reason:#x})",
                        self.id
                    )))
                }
                Ok(VcpuExit::InternalError) => {
                    return Err(VmExit::Failure(self.internal_error()));
                }
                Ok(other) => {
                    return Err(VmExit::Failure(format!(
                        "vCPU {} stopped on an exit ballast does not handle: {other:?}",
                        self.id
                    )))
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                }
                Err(e) => {
                    return Err(VmExit::Failure(format!("vCPU {}: KVM_RUN failed: {e}", self.id)))
                }
            }
        }
        Ok(())
    }

    fn internal_error(&mut self) -> String {
        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
        // SAFETY: KVM filled the `internal` member of the exit union: the exit reason was
        // KVM_EXIT_INTERNAL_ERROR.
        let suberror = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
        let what = match suberror {
            kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "emulation failure",
            kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
            kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "failure to deliver an event",
            _ => "internal error",
        };
        format!(
            "KVM internal error on vCPU {} at rip {rip:#x}: {what} (suberror {suberror})",
            self.id
        )
    }
}

/// Pausing the VM: every vCPU thread leaves KVM_RUN (kicked by `kick_signal()`) and waits on a
/// condition variable until the VM is resumed or stops.
#[derive(Debug, Default)]
pub struct VcpuPause {
    /// Read by the vCPU threads after every exit, without the lock.
    requested: AtomicBool,
    state: Mutex<PauseState>,
    /// The vCPUs wait on it while parked.
    resume: Condvar,
    /// The pauser waits on it for the vCPUs to park.
    parked_changed: Condvar,
}

#[derive(Debug, Default)]
struct PauseState {
    paused: bool,
    parked: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PauseError {
    #[error("the VM is already paused")]
    AlreadyPaused,
    #[error("the VM is not paused")]
    NotPaused,
    #[error(
        "only {parked} of {total} vCPUs stopped within {waited_ms} ms; the VM was left running"
    )]
    Timeout {
        parked: usize,
        total: usize,
        waited_ms: u128,
    },
}

/// How long a parked vCPU sleeps between checks that the VM is still alive, in case a stop's
/// wake-up is missed.
const PARK_RECHECK: Duration = Duration::from_millis(200);
/// How often the pauser kicks the vCPUs that have not parked yet: a kick that lands just before
/// a thread enters KVM_RUN is lost, so it is repeated.
const KICK_INTERVAL: Duration = Duration::from_millis(2);

impl VcpuPause {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, PauseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Whether a pause has completed and no resume came since.
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Asks every vCPU thread in `threads` to park, kicks them out of KVM_RUN, and waits up to
    /// `timeout` for all of them. On a timeout the vCPUs are resumed: a failed pause changes
    /// nothing.
    pub fn pause(&self, threads: &[libc::pthread_t], timeout: Duration) -> Result<(), PauseError> {
        let mut state = self.lock();
        if state.paused {
            return Err(PauseError::AlreadyPaused);
        }
        state.paused = true;
        self.requested.store(true, Ordering::SeqCst);
        let start = Instant::now();
        while state.parked < threads.len() {
            if start.elapsed() >= timeout {
                let parked = state.parked;
                drop(state);
                // Undo the request; it cannot fail, the pause was recorded above.
                let _ = self.resume();
                return Err(PauseError::Timeout {
                    parked,
                    total: threads.len(),
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            for &thread in threads {
                // SAFETY: `thread` belongs to a vCPU thread that is not joined yet (the runner
                // joins them only after the event loop, which runs this, has ended); a thread
                // that has already returned is still a valid target until it is joined.
                unsafe { libc::pthread_kill(thread, kick_signal()) };
            }
            state = self
                .parked_changed
                .wait_timeout(state, KICK_INTERVAL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    /// Lets the parked vCPUs go back to the guest.
    pub fn resume(&self) -> Result<(), PauseError> {
        let mut state = self.lock();
        if !state.paused {
            return Err(PauseError::NotPaused);
        }
        state.paused = false;
        self.requested.store(false, Ordering::SeqCst);
        self.resume.notify_all();
        Ok(())
    }

    /// Wakes the parked vCPUs when the VM stops, so they see the stop and end.
    pub fn release_for_stop(&self) {
        let _ = self.resume();
    }

    /// Called by a vCPU thread outside KVM_RUN: waits while the VM is paused and not stopping.
    fn park(&self, exit: &ExitState) {
        let mut state = self.lock();
        state.parked += 1;
        self.parked_changed.notify_all();
        while state.paused && !exit.is_stopping() {
            state = self
                .resume
                .wait_timeout(state, PARK_RECHECK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.parked -= 1;
    }
}

fn boot_msrs() -> Msrs {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    Msrs::from_entries(&[
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ])
    .expect("a fixed list below the FAM limit")
}

/// Sets the delivery mode (bits 8..10) of a local APIC LVT register.
fn set_lvt_mode(regs: &mut [std::os::raw::c_char; 1024], offset: usize, mode: u32) {
    let mut bytes = [0u8; 4];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = regs[offset + i] as u8;
    }
    let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *b as std::os::raw::c_char;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_mode_keeps_other_bits() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        regs[APIC_LVT0] = 0x30;
        regs[APIC_LVT0 + 1] = 0x07;
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_NMI);
        assert_eq!(regs[APIC_LVT0] as u8, 0x30);
        assert_eq!(regs[APIC_LVT0 + 1] as u8, 0x04);
    }
}
