//! Layer 2: real KVM vCPUs running tiny hand-made payloads (no guest kernel). On the project's
//! machines ring-0 guest code is emulated instruction by instruction, so payloads stay tiny.

use std::io::Write;
use std::sync::{Arc, Mutex};

use ballast::layout::{COM1_PORT, HIMEM_START};
use ballast::vstate::exit::VmExit;
use ballast::vstate::memory::create_guest_memory;
use ballast::vstate::regs::write_boot_structures;
use ballast::vstate::vm::{open_kvm, Vm};
use ballast_devices::bus::Bus;
use ballast_devices::legacy::serial::SerialDevice;
use ballast_devices::legacy::EventFdTrigger;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[path = "support/one_vcpu.rs"]
mod one_vcpu;
use one_vcpu::run_one_vcpu;

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

/// Boots `payload` at 1 MiB in long mode on one vCPU; returns the exit and the serial output.
fn run_payload(payload: &[u8]) -> (VmExit, Vec<u8>) {
    let kvm = open_kvm().expect("/dev/kvm");
    let mut vm = Vm::new(&kvm).unwrap();
    let mem = create_guest_memory(16 << 20).unwrap();
    vm.register_memory(&mem).unwrap();
    write_boot_structures(&mem).unwrap();
    mem.write_slice(payload, GuestAddress(HIMEM_START)).unwrap();

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
    // Port 0x600: the payload's power-off.
    let exit = run_one_vcpu(&kvm, &vm, pio, 0x600);
    let out = sink.0.lock().unwrap().clone();
    (exit.expect("an exit reason"), out)
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
