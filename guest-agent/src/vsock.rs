//! AF_VSOCK stream sockets through libc (the standard library has none).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Listens on `port` of every local CID (`VMADDR_CID_ANY`): inside a guest, that is the
/// guest's own CID, which the host reaches through the vsock device.
pub fn listen(port: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket takes plain integers and returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot create a vsock socket: {e} (does the guest kernel have vsock and a virtio-vsock device?)"),
        ));
    }
    // SAFETY: the kernel just returned this descriptor, which nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain old data, for which all zeroes is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    // SAFETY: `addr` is a valid sockaddr_vm that lives across the call, and the length passed
    // is its size.
    let ret = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
            size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot bind vsock port {port}: {e}"),
        ));
    }
    // SAFETY: listen takes a descriptor we own and a backlog by value.
    if unsafe { libc::listen(socket.as_raw_fd(), 8) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// Accepts one connection on a listening socket (vsock or any other).
pub fn accept(listener: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers ask for no peer address; the descriptor is ours.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Shuts a connected socket down both ways, which wakes a thread blocked reading or writing it.
pub fn shutdown(socket: &OwnedFd) {
    // SAFETY: shutdown takes a descriptor we own and a constant by value.
    unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_RDWR) };
}
