//! The VM and its memory: guest RAM registered with KVM, KVM's dirty log over it (for the memory
//! manager), and the kernel and initrd loaded into it.

use ballast_virtio::GuestMemoryMmap;
use kvm_ioctls::Kvm;
use vm_memory::GuestAddress;

use super::{io, RunError};
use crate::boot::{self, LoadedKernel};
use crate::config::VmConfig;
use crate::vstate::dirty_log::KvmDirtyLog;
use crate::vstate::memory::create_guest_memory_with;
use crate::vstate::vm::Vm;

pub(super) struct Guest {
    pub vm: Vm,
    pub mem: GuestMemoryMmap,
    /// Until the memory manager takes it.
    pub dirty_log: Option<KvmDirtyLog>,
    pub kernel: LoadedKernel,
    /// (address, size).
    pub initrd: Option<(GuestAddress, u64)>,
}

pub(super) fn build(kvm: &Kvm, config: &VmConfig) -> Result<Guest, RunError> {
    let mut vm = Vm::new(kvm)?;
    let mem = create_guest_memory_with(config.mem_size, config.thp)?;
    vm.register_memory(&mem)?;
    // The memory manager reads KVM's dirty log every epoch while a limit is set.
    let dirty_log = KvmDirtyLog::new(&vm).map_err(io("set up KVM's dirty log"))?;
    let kernel = boot::load_kernel(&mem, &config.kernel)?;
    let initrd = match &config.initrd {
        Some(path) => Some(boot::load_initrd(&mem, config.mem_size, &kernel, path)?),
        None => None,
    };
    Ok(Guest {
        vm,
        mem,
        dirty_log: Some(dirty_log),
        kernel,
        initrd,
    })
}
