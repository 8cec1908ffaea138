//! The KVM side of the VM: guest memory, the VM file descriptor, the vCPUs.

pub mod cpuid;
pub mod dirty_log;
pub mod exit;
pub mod fault_dump;
pub mod memory;
pub mod regs;
pub mod vcpu;
pub mod vm;
