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

/// Accepts one connection on a listening socket (vsock or any other). A vsock connection from
/// anywhere but the host (another guest, or this guest itself) is closed at once and refused
/// with `PermissionDenied`: only the host's VMM may talk to the agent.
pub fn accept(listener: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: sockaddr_vm is plain old data, for which all zeroes is a valid value.
    let mut peer: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes of the peer's address into `peer`, which
    // lives across the call; the descriptor is ours.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            &mut peer as *mut libc::sockaddr_vm as *mut libc::sockaddr,
            &mut len,
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, which nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    if !from_host(&peer) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refused a connection from CID {}: only the host (CID {}) may connect",
                peer.svm_cid,
                libc::VMADDR_CID_HOST
            ),
        ));
    }
    Ok(socket)
}

/// Whether an accepted peer may talk to the agent: any non-vsock peer (the tests' Unix
/// sockets), or the host.
fn from_host(peer: &libc::sockaddr_vm) -> bool {
    i32::from(peer.svm_family) != libc::AF_VSOCK || peer.svm_cid == libc::VMADDR_CID_HOST
}

/// Shuts a connected socket down both ways, which wakes a thread blocked reading or writing it.
pub fn shutdown(socket: &OwnedFd) {
    // SAFETY: shutdown takes a descriptor we own and a constant by value.
    unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_RDWR) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(cid: u32) -> libc::sockaddr_vm {
        // SAFETY: sockaddr_vm is plain old data, for which all zeroes is a valid value.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_cid = cid;
        addr
    }

    #[test]
    fn only_the_host_may_connect() {
        assert!(from_host(&peer(libc::VMADDR_CID_HOST)));
        // Another guest, this guest itself (loopback), the hypervisor.
        for cid in [3, 42, libc::VMADDR_CID_LOCAL, libc::VMADDR_CID_HYPERVISOR] {
            assert!(!from_host(&peer(cid)), "CID {cid}");
        }
        // A Unix socket (the tests' listener) has no CID.
        // SAFETY: as above.
        let unix: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        assert!(from_host(&unix));
    }
}
