//! What a vCPU was doing when the guest triple-faulted (`KVM_EXIT_SHUTDOWN`), in one line for the
//! log: registers, control registers, descriptor tables and the pending or injected events.
//!
//! On Intel (VMX) KVM leaves the vCPU as the fault found it. On AMD (SVM) KVM re-initialises the
//! vCPU on a shutdown intercept (the VMCB is undefined afterwards), so the state read back is the
//! reset state; the line says so, and the nested harness records KVM's `kvm_exit` trace events in
//! the L1 test host, whose shutdown exit carries the guest's RIP (tests/harness/l1-init).

use kvm_bindings::{kvm_regs, kvm_sregs, kvm_vcpu_events};
use kvm_ioctls::VcpuFd;

/// A one-line description of the vCPU's state, or of why it could not be read.
pub fn describe(fd: &VcpuFd) -> String {
    let regs = fd.get_regs();
    let sregs = fd.get_sregs();
    let events = fd.get_vcpu_events();
    match (regs, sregs) {
        (Ok(regs), Ok(sregs)) => format_state(&regs, &sregs, events.ok().as_ref()),
        (Err(e), _) | (_, Err(e)) => format!("registers unreadable: {e}"),
    }
}

/// Whether the state is what a reset leaves (real mode at the reset vector), not the fault's.
fn is_reset_state(regs: &kvm_regs, sregs: &kvm_sregs) -> bool {
    regs.rip == 0xfff0 && sregs.cs.base == 0xffff_0000 && sregs.cr0 & 1 == 0
}

fn format_state(regs: &kvm_regs, sregs: &kvm_sregs, events: Option<&kvm_vcpu_events>) -> String {
    let mut line = format!(
        "rip {:#x} rsp {:#x} rflags {:#x} rax {:#x} cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} \
         efer {:#x} cs {:#x}/{:#x} idt {:#x}+{:#x} gdt {:#x}+{:#x} tr {:#x}",
        regs.rip,
        regs.rsp,
        regs.rflags,
        regs.rax,
        sregs.cr0,
        sregs.cr2,
        sregs.cr3,
        sregs.cr4,
        sregs.efer,
        sregs.cs.selector,
        sregs.cs.base,
        sregs.idt.base,
        sregs.idt.limit,
        sregs.gdt.base,
        sregs.gdt.limit,
        sregs.tr.base,
    );
    if let Some(ev) = events {
        line.push_str(&format!(
            "; exception injected {} pending {} nr {} error code {}; nmi injected {} pending {}; \
             interrupt injected {} nr {}",
            ev.exception.injected,
            ev.exception.pending,
            ev.exception.nr,
            if ev.exception.has_error_code != 0 {
                format!("{:#x}", ev.exception.error_code)
            } else {
                "none".into()
            },
            ev.nmi.injected,
            ev.nmi.pending,
            ev.interrupt.injected,
            ev.interrupt.nr,
        ));
    }
    if is_reset_state(regs, sregs) {
        line.push_str(
            " (this is the reset state: KVM re-initialises a vCPU on a shutdown on AMD SVM, \
             so what the guest was doing is lost here)",
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_state_is_shown_as_it_is() {
        let regs = kvm_regs {
            rip: 0xffff_ffff_8100_0000,
            rsp: 0x1000,
            ..Default::default()
        };
        let mut sregs = kvm_sregs {
            cr0: 0x8000_0011,
            cr2: 0xdead_b000,
            ..Default::default()
        };
        sregs.idt.base = 0xffff_fe00_0000_0000;
        let mut events = kvm_vcpu_events::default();
        events.exception.injected = 1;
        events.exception.nr = 14;
        events.exception.has_error_code = 1;
        events.exception.error_code = 2;
        let line = format_state(&regs, &sregs, Some(&events));
        assert!(
            line.starts_with("rip 0xffffffff81000000 rsp 0x1000"),
            "{line}"
        );
        assert!(line.contains("cr2 0xdeadb000"), "{line}");
        assert!(line.contains("idt 0xfffffe0000000000+0x0"), "{line}");
        assert!(
            line.contains("exception injected 1 pending 0 nr 14 error code 0x2"),
            "{line}"
        );
        assert!(!line.contains("reset state"), "{line}");
    }

    #[test]
    fn the_reset_state_is_called_so() {
        let regs = kvm_regs {
            rip: 0xfff0,
            ..Default::default()
        };
        let mut sregs = kvm_sregs::default();
        sregs.cs.base = 0xffff_0000;
        sregs.cr0 = 0x6000_0010;
        let line = format_state(&regs, &sregs, None);
        assert!(line.contains("this is the reset state"), "{line}");
        assert!(!line.contains("exception"), "{line}");
    }
}
