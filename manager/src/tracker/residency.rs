//! Which pages of a host mapping are resident, from `mincore`.
//!
//! `mincore` answers for the whole range in one call with one byte per host page; the tracker
//! keeps that vector between epochs, so an epoch allocates nothing for residency.
//!
//! A page that the VMM only ever read maps the kernel's shared zero page, which `mincore` reports
//! resident although it costs the host nothing. Guest reads do not do this (KVM faults guest pages
//! in writable), so the overcount is limited to VMM reads of never-written guest RAM.

use std::io;

/// Fills `vector` (one byte per 4 KiB page, bit 0 = resident) for `len` bytes from `addr`.
///
/// `addr` should be the page-aligned start of a live mapping of at least `len` bytes (the kernel
/// answers EINVAL or ENOMEM otherwise); `vector` must have one byte per page of `len`. Also
/// used by the API's `GET /vm/memory`, so both count residency the same way.
pub fn mincore(addr: *mut u8, len: usize, vector: &mut [u8]) -> io::Result<()> {
    assert!(vector.len() >= len.div_ceil(crate::pages::PAGE_SIZE as usize));
    if len == 0 {
        return Ok(());
    }
    // SAFETY: mincore reads no memory at `addr`, only the page tables of [addr, addr + len)
    // (any address is checked by the kernel), and writes at most one byte per page of that
    // range into `vector`, which the assertion above sized for it.
    let ret = unsafe { libc::mincore(addr.cast(), len, vector.as_mut_ptr()) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Resident pages in a `mincore` vector.
pub fn count_resident(vector: &[u8]) -> u64 {
    super::region::count_where(vector, |b| b & 1 != 0)
}
