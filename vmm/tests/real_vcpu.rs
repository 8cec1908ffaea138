//! Layer 2: real KVM vCPUs running tiny hand-made payloads (no guest kernel). On the project's
//! machines ring-0 guest code is emulated instruction by instruction, so payloads stay tiny.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast::layout::{COM1_PORT, HIMEM_START};
use ballast::vstate::exit::{ExitState, VmExit};
use ballast::vstate::memory::create_guest_memory;
use ballast::vstate::regs::write_boot_structures;
use ballast::vstate::vcpu::Vcpu;
use ballast::vstate::vm::{open_kvm, Vm};
use ballast_devices::bus::{Bus, BusDevice};
use ballast_devices::legacy::serial::SerialDevice;
use ballast_devices::legacy::EventFdTrigger;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);
impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Port 0x600: any write is a power-off, as the guest's ACPI S5 write would be.
struct PowerOff(Arc<ExitState>);
impl BusDevice for PowerOff {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _: u64, _: &[u8]) {
        self.0.request(VmExit::Poweroff);
    }
}

/// Boots `payload` at 1 MiB in long mode on one vCPU; returns the exit and the serial output.
fn run_payload(payload: &[u8]) -> (VmExit, Vec<u8>) {
    let kvm = open_kvm().expect("/dev/kvm");
    let mut vm = Vm::new(&kvm).unwrap();
    let mem = create_guest_memory(16 << 20).unwrap();
    vm.register_memory(&mem).unwrap();
    write_boot_structures(&mem).unwrap();
    mem.write_slice(payload, GuestAddress(HIMEM_START)).unwrap();

    let exit = Arc::new(ExitState::new().unwrap());
    let sink = Sink::default();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let mut pio = Bus::new();
    pio.insert(
        Arc::new(Mutex::new(SerialDevice::new(
            EventFdTrigger(irq),
            EventFd::new(EFD_NONBLOCK).unwrap(),
            Box::new(sink.clone()),
        ))),
        COM1_PORT,
        8,
    )
    .unwrap();
    pio.insert(Arc::new(Mutex::new(PowerOff(exit.clone()))), 0x600, 1)
        .unwrap();

    let vcpu = Vcpu::new(&kvm, &vm, 0, 1, GuestAddress(HIMEM_START), true).unwrap();
    let handle = vcpu.start(pio, Bus::new(), exit.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(handle.is_finished(), "payload did not finish");
    handle.join().unwrap();
    let out = sink.0.lock().unwrap().clone();
    (exit.reason().expect("an exit reason"), out)
}

#[test]
fn payload_writes_to_com1_and_powers_off() {
    let payload = [
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'O', 0xee, // mov al, 'O'; out dx, al
        0xb0, b'K', 0xee, // mov al, 'K'; out dx, al
        0x66, 0xba, 0x00, 0x06, // mov dx, 0x600
        0xb0, 0x34, 0xee, // mov al, SLP_TYP 5 | SLP_EN; out dx, al
        0xeb, 0xfe, // jmp $ (the VMM stops the vCPU)
    ];
    let (exit, out) = run_payload(&payload);
    assert_eq!(exit, VmExit::Poweroff);
    assert_eq!(out, b"OK");
}

#[test]
fn triple_fault_is_a_reset() {
    // ud2 with an empty IDT: #UD, then #DF, then a triple fault.
    let (exit, out) = run_payload(&[0x0f, 0x0b]);
    assert_eq!(exit, VmExit::Reset);
    assert!(out.is_empty());
}
