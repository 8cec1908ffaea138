//! The host side of a network device: an existing TAP interface, attached through
//! `/dev/net/tun` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` and a 12-byte virtio header
//! (`TUNSETVNETHDRSZ`), non-blocking. Every read gives one frame, every write sends one.
//!
//! ballast does not create interfaces: attaching to a name that does not exist would make a
//! new TAP (for a process allowed to), so the name is looked up first and a missing one is an
//! error that says how to make it.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use log::warn;

use super::config::MAX_IFNAME_LEN;
use super::VNET_HDR_LEN;

const TUN_PATH: &str = "/dev/net/tun";

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (the rest of the 40 bytes
/// is a union the call does not use).
#[repr(C)]
struct IfReq {
    name: [u8; MAX_IFNAME_LEN + 1],
    flags: libc::c_short,
    _union_rest: [u8; 22],
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "there is no network interface `{0}`: ballast does not create TAP interfaces; make one \
         with `ip tuntap add dev {0} mode tap user $USER`, give it an address (`ip addr add \
         192.168.100.1/24 dev {0}`) and `ip link set {0} up`"
    )]
    NotFound(String),
    #[error(
        "cannot open {TUN_PATH} to attach to `{tap}`: {source} (is the tun module loaded? \
         `modprobe tun`; may this user open {TUN_PATH}?)"
    )]
    OpenTun {
        tap: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "no permission to attach to the TAP interface `{0}`: make it for this user (`ip tuntap \
         add dev {0} mode tap user $USER`) or run ballast with CAP_NET_ADMIN"
    )]
    Permission(String),
    #[error(
        "the TAP interface `{0}` is in use by another process (a TAP serves one VM; make one \
         per VM)"
    )]
    Busy(String),
    #[error(
        "the network interface `{0}` is not a single-queue TAP interface (a TUN, a multi-queue \
         TAP, or not a tun/tap device at all): make one with `ip tuntap add dev NAME mode tap`"
    )]
    NotATap(String),
    #[error("cannot attach to the TAP interface `{tap}`: {source}")]
    Attach {
        tap: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the TAP interface `{tap}` ({what}): {source}")]
    Setup {
        tap: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What the TAP's file descriptor is: a real TAP, or (in tests) a socket that keeps frame
/// boundaries and has no offload switch.
#[derive(Debug)]
enum Kind {
    Tap,
    #[cfg(test)]
    Socket,
}

/// An attached TAP interface.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    kind: Kind,
}

impl Tap {
    /// Attaches to the existing TAP interface `name`, non-blocking, with a 12-byte virtio
    /// header on every frame and no offloads until the driver negotiates them.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let c_name = std::ffi::CString::new(name).map_err(|_| TapError::NotFound(name.into()))?;
        // SAFETY: if_nametoindex reads the NUL-terminated string `c_name` owns.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            return Err(TapError::NotFound(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|source| TapError::OpenTun {
                tap: name.to_string(),
                source,
            })?;
        let mut req = IfReq {
            name: [0; MAX_IFNAME_LEN + 1],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _union_rest: [0; 22],
        };
        let bytes = name.as_bytes();
        if bytes.len() > MAX_IFNAME_LEN {
            return Err(TapError::NotFound(name.to_string()));
        }
        req.name[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: TUNSETIFF reads (and may write back) a `struct ifreq`; `req` has its layout
        // and size and lives across the call.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            let source = io::Error::last_os_error();
            let tap = name.to_string();
            return Err(match source.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => TapError::Permission(tap),
                Some(libc::EBUSY) => TapError::Busy(tap),
                Some(libc::EINVAL) => TapError::NotATap(tap),
                _ => TapError::Attach { tap, source },
            });
        }
        let tap = Tap {
            fd: OwnedFd::from(file),
            name: name.to_string(),
            kind: Kind::Tap,
        };
        let size = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which lives across the call.
        if unsafe { libc::ioctl(tap.fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) } < 0 {
            return Err(tap.setup_error("the virtio header size"));
        }
        tap.set_offloads(0)
            .map_err(|_| tap.setup_error("its offloads"))?;
        if !interface_is_up(name) {
            warn!(
                "the TAP interface `{name}` is down: the guest's frames are dropped until it is \
                 up (`ip link set {name} up`)"
            );
        }
        Ok(tap)
    }

    fn setup_error(&self, what: &'static str) -> TapError {
        TapError::Setup {
            tap: self.name.clone(),
            what,
            source: io::Error::last_os_error(),
        }
    }

    /// A socket standing in for a TAP in unit tests: it keeps frame boundaries (a
    /// `SOCK_SEQPACKET` pair) and has no offload switch.
    #[cfg(test)]
    pub(super) fn from_socket(fd: OwnedFd, name: &str) -> Tap {
        Tap {
            fd,
            name: name.to_string(),
            kind: Kind::Socket,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tells the host kernel which offloads the guest takes (`TUN_F_*`): frames it sends the
    /// guest then carry partial checksums and segments only as far as these allow.
    pub fn set_offloads(&self, flags: libc::c_uint) -> io::Result<()> {
        match self.kind {
            // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no memory of ours.
            Kind::Tap => match unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    libc::TUNSETOFFLOAD,
                    flags as libc::c_ulong,
                )
            } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            },
            #[cfg(test)]
            Kind::Socket => Ok(()),
        }
    }

    /// Reads one frame (with its header) into `buf`; `WouldBlock` when none is waiting.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: read writes at most `buf.len()` bytes into `buf`, which we borrow mutably.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends one frame (with its header) gathered from `iovs`.
    ///
    /// # Safety
    /// Every iovec must point to memory that is readable for its length during the call.
    pub unsafe fn writev(&self, iovs: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: the caller vouches for the iovecs; writev only reads through them.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iovs.as_ptr(), iovs.len() as i32) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Whether the interface is administratively up (IFF_UP in its sysfs flags); true when that
/// cannot be read, so a doubt never warns.
fn interface_is_up(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/flags"))
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .is_none_or(|flags| flags & libc::IFF_UP as u32 != 0)
}
