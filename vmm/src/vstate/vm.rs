//! The KVM VM: in-kernel irqchip and PIT, guest RAM slots, ioeventfds and irqfds.

use ballast_virtio::GuestMemoryMmap;
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("/dev/kvm does not exist: this host has no KVM (load the kvm-intel or kvm-amd module, or enable virtualization in the firmware)")]
    NoKvm,
    #[error("no permission to open /dev/kvm: run as root or add your user to the 'kvm' group (sudo usermod -aG kvm $USER, then log in again)")]
    KvmPermission,
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (12 is required)")]
    KvmApiVersion(i32),
    #[error("KVM lacks a capability ballast needs: {0}")]
    MissingCap(&'static str),
    #[error("cannot {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// Opens /dev/kvm with an error the user can act on.
pub fn open_kvm() -> Result<Kvm, VmError> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT => VmError::NoKvm,
        libc::EACCES | libc::EPERM => VmError::KvmPermission,
        _ => VmError::OpenKvm(e),
    })?;
    let version = kvm.get_api_version();
    if version != kvm_bindings::KVM_API_VERSION as i32 {
        return Err(VmError::KvmApiVersion(version));
    }
    for (cap, name) in [
        (kvm_ioctls::Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (kvm_ioctls::Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
        (kvm_ioctls::Cap::Irqfd, "KVM_CAP_IRQFD"),
        (kvm_ioctls::Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (kvm_ioctls::Cap::Pit2, "KVM_CAP_PIT2"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmError::MissingCap(name));
        }
    }
    Ok(kvm)
}

pub struct Vm {
    fd: VmFd,
    /// (slot, guest_phys_addr, size, host address) of each guest RAM region.
    slots: Vec<kvm_userspace_memory_region>,
}

/// Where KVM puts the TSS and identity map it needs for real-mode emulation on Intel: just
/// below the IOAPIC, inside the MMIO gap where no RAM lives.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

impl Vm {
    pub fn new(kvm: &Kvm) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(kvm_err("create the VM"))?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
            .map_err(kvm_err("set the identity map address"))?;
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm_err("set the TSS address"))?;
        fd.create_irq_chip()
            .map_err(kvm_err("create the in-kernel irqchip"))?;
        // KVM_PIT_SPEAKER_DUMMY: the speaker port reads as present, so Linux's PIT probe passes.
        let pit = kvm_pit_config {
            flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit)
            .map_err(kvm_err("create the in-kernel PIT"))?;
        Ok(Self {
            fd,
            slots: Vec::new(),
        })
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Registers every guest RAM region as a KVM memory slot.
    pub fn register_memory(&mut self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let host = mem
                .get_host_address(region.start_addr())
                .expect("a region's start is inside guest memory");
            let entry = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the host range is a live mapping owned by `mem`, which outlives the VM
            // (the VMM keeps both until exit), and the slots do not overlap.
            unsafe { self.fd.set_user_memory_region(entry) }
                .map_err(kvm_err("register guest RAM with KVM"))?;
            self.slots.push(entry);
        }
        Ok(())
    }

    /// Turns KVM's dirty-page logging on or off for every guest RAM slot.
    pub fn set_dirty_logging(&mut self, on: bool) -> Result<(), VmError> {
        for entry in &mut self.slots {
            entry.flags = if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 };
            // SAFETY: the same mapping as registered before, only the flags change.
            unsafe { self.fd.set_user_memory_region(*entry) }
                .map_err(kvm_err("change dirty logging on a memory slot"))?;
        }
        Ok(())
    }

    /// The memory slots, in the order of the guest memory regions.
    pub fn memory_slots(&self) -> &[kvm_userspace_memory_region] {
        &self.slots
    }
}
