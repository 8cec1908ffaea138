//! KVM's dirty log of guest RAM, for the memory manager's tracker (`ballast_manager`'s
//! [`DirtyLog`]).
//!
//! Two ways to read it, chosen when the log is made:
//! - [`ClearMode::Manual`], where the kernel has `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`: `KVM_GET_DIRTY_LOG`
//!   only copies the slot's bitmap out, and `KVM_CLEAR_DIRTY_LOG` then clears and write-protects
//!   again just the pages that were dirty, a chunk at a time. Chunks with no dirty page cost no
//!   call, and KVM's MMU lock is held for one chunk at a time rather than for the whole slot.
//! - [`ClearMode::OnGet`], the fallback: `KVM_GET_DIRTY_LOG` clears and write-protects the whole
//!   slot itself.
//!
//! kvm-ioctls 0.25 has `VmFd::get_dirty_log` and `VmFd::enable_cap` but no `KVM_CLEAR_DIRTY_LOG`,
//! and a `VmFd` cannot be shared or cloned. So [`KvmDirtyLog`] owns a duplicate of the VM's file
//! descriptor (the same KVM VM) and issues both ioctls on it itself: it borrows nothing, can
//! live in the event loop next to the tracker, and works on any thread. The slots are copied
//! when it is made, so make it after `Vm::register_memory`. Pages are logged only while
//! `Vm::set_dirty_logging(true)` is on; before that, `take_dirty` fails with `ENOENT`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use ballast_manager::tracker::DirtyLog;
use kvm_bindings::{
    kvm_clear_dirty_log, kvm_clear_dirty_log__bindgen_ty_1, kvm_dirty_log,
    kvm_dirty_log__bindgen_ty_1, kvm_enable_cap, kvm_userspace_memory_region, KVMIO,
    KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
    KVM_MEM_LOG_DIRTY_PAGES,
};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::{ioctl_iow_nr, ioctl_iowr_nr};

use super::memory::PAGE_SIZE;
use super::vm::Vm;

ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_dirty_log);
ioctl_iowr_nr!(KVM_CLEAR_DIRTY_LOG, KVMIO, 0xc0, kvm_clear_dirty_log);
ioctl_iow_nr!(
    KVM_SET_USER_MEMORY_REGION,
    KVMIO,
    0x46,
    kvm_userspace_memory_region
);

/// Pages per `KVM_CLEAR_DIRTY_LOG` call: 128 MiB of guest RAM, a 4 KiB piece of the bitmap. KVM
/// wants chunks that start at a multiple of 64 pages and are a multiple of 64 pages long (or
/// end at the end of the slot).
const CLEAR_CHUNK_PAGES: u64 = 32 * 1024;
const CLEAR_CHUNK_WORDS: usize = (CLEAR_CHUNK_PAGES / 64) as usize;

/// How the pages read from the log are made clean again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearMode {
    /// `KVM_GET_DIRTY_LOG` clears the whole slot.
    OnGet,
    /// `KVM_CLEAR_DIRTY_LOG` clears only the pages read dirty, in chunks.
    Manual,
}

/// One KVM memory slot: its number and its pages.
#[derive(Debug, Clone, Copy)]
struct Slot {
    slot: u32,
    pages: u64,
}

/// The KVM dirty log of one VM's guest RAM slots, region `i` being slot `i` as
/// `Vm::register_memory` made them.
#[derive(Debug)]
pub struct KvmDirtyLog {
    vm: OwnedFd,
    slots: Vec<Slot>,
    mode: ClearMode,
    /// The slots as registered, to switch `KVM_MEM_LOG_DIRTY_PAGES` on and off.
    regions: Vec<kvm_userspace_memory_region>,
}

impl KvmDirtyLog {
    /// Reads the log in [`ClearMode::Manual`] where the kernel can, else [`ClearMode::OnGet`].
    /// Make one per VM: the mode is the VM's, not the log's.
    pub fn new(vm: &Vm) -> io::Result<Self> {
        let mode = if supports_manual_protect(vm) {
            ClearMode::Manual
        } else {
            ClearMode::OnGet
        };
        Self::with_clear_mode(vm, mode)
    }

    /// Reads the log in `mode`; `Manual` fails where the kernel lacks it.
    pub fn with_clear_mode(vm: &Vm, mode: ClearMode) -> io::Result<Self> {
        if mode == ClearMode::Manual {
            if !supports_manual_protect(vm) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2",
                ));
            }
            // Without KVM_DIRTY_LOG_INITIALLY_SET: the log starts clean, as in OnGet mode.
            vm.fd().enable_cap(&kvm_enable_cap {
                cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                args: [u64::from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0, 0, 0],
                ..Default::default()
            })?;
        }
        // SAFETY: `vm` owns this open VM file descriptor for at least this call, and the
        // borrow only lives long enough to duplicate it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(vm.fd().as_raw_fd()) };
        Ok(KvmDirtyLog {
            vm: borrowed.try_clone_to_owned()?,
            slots: vm
                .memory_slots()
                .iter()
                .map(|s| Slot {
                    slot: s.slot,
                    pages: s.memory_size / PAGE_SIZE as u64,
                })
                .collect(),
            mode,
            regions: vm.memory_slots().to_vec(),
        })
    }

    pub fn clear_mode(&self) -> ClearMode {
        self.mode
    }

    /// `KVM_GET_DIRTY_LOG`: the slot's bitmap (cleared by KVM too in `OnGet` mode).
    fn get(&self, slot: Slot) -> io::Result<Vec<u64>> {
        let mut bitmap = vec![0u64; slot.pages.div_ceil(64) as usize];
        let log = kvm_dirty_log {
            slot: slot.slot,
            padding1: 0,
            __bindgen_anon_1: kvm_dirty_log__bindgen_ty_1 {
                dirty_bitmap: bitmap.as_mut_ptr().cast(),
            },
        };
        // SAFETY: `self.vm` is a KVM VM fd; KVM writes one bit per page of the slot, which
        // `bitmap` has room for, and reads only `log`.
        let ret = unsafe { ioctl_with_ref(&self.vm, KVM_GET_DIRTY_LOG(), &log) };
        if ret == 0 {
            return Ok(bitmap);
        }
        let err = io::Error::last_os_error();
        Err(if err.raw_os_error() == Some(libc::ENOENT) {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("dirty logging is off on KVM memory slot {}", slot.slot),
            )
        } else {
            err
        })
    }

    /// `KVM_CLEAR_DIRTY_LOG` for the pages set in `bitmap`, one chunk at a time, skipping chunks
    /// where the guest dirtied nothing. A page written again between the GET and its CLEAR is not
    /// reported next epoch; it was reported in this one, so its age is at most one epoch high.
    fn clear(&self, slot: Slot, bitmap: &[u64]) -> io::Result<()> {
        for (index, chunk) in bitmap.chunks(CLEAR_CHUNK_WORDS).enumerate() {
            if chunk.iter().all(|&w| w == 0) {
                continue;
            }
            let first_page = index as u64 * CLEAR_CHUNK_PAGES;
            let num_pages = CLEAR_CHUNK_PAGES.min(slot.pages - first_page);
            let clear = kvm_clear_dirty_log {
                slot: slot.slot,
                num_pages: num_pages as u32,
                first_page,
                __bindgen_anon_1: kvm_clear_dirty_log__bindgen_ty_1 {
                    // KVM only reads this bitmap.
                    dirty_bitmap: chunk.as_ptr().cast_mut().cast(),
                },
            };
            // SAFETY: `self.vm` is a KVM VM fd; KVM reads `num_pages` bits from `chunk`, which
            // holds them, and writes nothing back.
            let ret = unsafe { ioctl_with_ref(&self.vm, KVM_CLEAR_DIRTY_LOG(), &clear) };
            if ret != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl DirtyLog for KvmDirtyLog {
    fn set_logging(&mut self, on: bool) -> io::Result<()> {
        for region in &mut self.regions {
            region.flags = if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 };
            // SAFETY: the same slot, guest range and host mapping KVM already has (the VMM keeps
            // guest RAM mapped for the VM's life); only the dirty-logging flag changes.
            let ret = unsafe { ioctl_with_ref(&self.vm, KVM_SET_USER_MEMORY_REGION(), &*region) };
            if ret != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn take_dirty(&mut self, region: usize, pages: u64) -> io::Result<Vec<u64>> {
        let slot = *self.slots.get(region).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("guest RAM region {region} has no KVM memory slot"),
            )
        })?;
        if slot.pages != pages {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "guest RAM region {region} has {pages} pages but its KVM slot {}",
                    slot.pages
                ),
            ));
        }
        let bitmap = self.get(slot)?;
        if self.mode == ClearMode::Manual {
            self.clear(slot, &bitmap)?;
        }
        Ok(bitmap)
    }
}

fn supports_manual_protect(vm: &Vm) -> bool {
    let flags = vm
        .fd()
        .check_extension_raw(libc::c_ulong::from(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2));
    flags > 0 && flags as u32 & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE != 0
}
