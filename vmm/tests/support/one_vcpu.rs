//! What the real-vCPU tests share: a power-off port, and running one vCPU to its end.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast::layout::HIMEM_START;
use ballast::vstate::exit::{ExitState, VmExit};
use ballast::vstate::vcpu::Vcpu;
use ballast::vstate::vm::Vm;
use ballast_devices::bus::{Bus, BusDevice};
use kvm_ioctls::Kvm;
use vm_memory::GuestAddress;

/// A port where any write is a power-off, as the guest's ACPI S5 write would be.
pub struct PowerOff(pub Arc<ExitState>);

impl BusDevice for PowerOff {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _: u64, _: &[u8]) {
        self.0.request(VmExit::Poweroff);
    }
}

/// Adds a `PowerOff` at `port` to `pio`, runs vCPU 0 from `HIMEM_START` in long mode with it,
/// and waits (at most 60 s) for its thread to end. Returns how the VM ended.
pub fn run_one_vcpu(kvm: &Kvm, vm: &Vm, mut pio: Bus, port: u64) -> Option<VmExit> {
    let exit = Arc::new(ExitState::new().unwrap());
    pio.insert(Arc::new(Mutex::new(PowerOff(exit.clone()))), port, 1)
        .unwrap();
    let vcpu = Vcpu::new(kvm, vm, 0, 1, GuestAddress(HIMEM_START), true).unwrap();
    let handle = vcpu.start(pio, Bus::new(), exit.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(handle.is_finished(), "payload did not finish");
    handle.join().expect("the vCPU thread");
    exit.reason()
}
