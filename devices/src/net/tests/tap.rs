//! The device on a real TAP interface, where the host lets the test make one (root, or
//! CAP_NET_ADMIN, and `/dev/net/tun`); elsewhere these tests say so and pass. The test makes
//! a persistent TAP of its own (as `ip tuntap add` does), sets it up, and talks to it through
//! a packet socket bound to it: what the device writes to the TAP arrives there, what is sent
//! there comes out of the TAP.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use ballast_virtio::VirtioDevice;

use super::super::header::VnetHeader;
use super::super::tap::{Tap, TapError};
use super::super::{MacAddr, Net, NetConfig};
use super::util::*;

/// A local experimental EtherType, so the test's frames stand out from the IPv6 chatter of
/// an interface that has just come up.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _rest: [u8; 22],
}

fn ifreq(name: &str, flags: i32) -> IfReq {
    let mut req = IfReq {
        name: [0; 16],
        flags: flags as libc::c_short,
        _rest: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    req
}

fn check(rc: libc::c_int) -> io::Result<()> {
    match rc {
        0.. => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A persistent TAP the test made, deleted when dropped.
struct TestTap(String);

impl TestTap {
    /// Makes a TAP, or `None` when this host does not let the test.
    fn make() -> Option<TestTap> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "btn{}x{}",
            std::process::id() % 1_000_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        match Self::persist(&name, true) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("skipped: cannot make a TAP interface here ({e})");
                return None;
            }
        }
        let tap = TestTap(name);
        tap.set_up().expect("set the test TAP up");
        Some(tap)
    }

    /// Attaches to `name` (making it if needed) and sets or clears its persistence.
    fn persist(name: &str, on: bool) -> io::Result<()> {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let mut req = ifreq(name, libc::IFF_TAP | libc::IFF_NO_PI);
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is laid out as.
        check(unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) })?;
        // SAFETY: TUNSETPERSIST takes its argument by value.
        check(unsafe {
            libc::ioctl(
                tun.as_raw_fd(),
                libc::TUNSETPERSIST,
                libc::c_ulong::from(on),
            )
        })
    }

    fn set_up(&self) -> io::Result<()> {
        // SAFETY: a new socket, closed by the OwnedFd.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        check(sock)?;
        // SAFETY: `sock` is a new descriptor of ours.
        let sock = unsafe { OwnedFd::from_raw_fd(sock) };
        let mut req = ifreq(&self.0, 0);
        // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write a `struct ifreq`.
        check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
        req.flags |= libc::IFF_UP as libc::c_short;
        // SAFETY: as above.
        check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) })
    }
}

impl Drop for TestTap {
    fn drop(&mut self) {
        let _ = Self::persist(&self.0, false);
    }
}

/// A packet socket on an interface: the host side of the TAP.
struct Wire(OwnedFd);

impl Wire {
    fn on(name: &str) -> Wire {
        let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
        // SAFETY: a new socket, closed by the OwnedFd.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        check(fd).unwrap();
        // SAFETY: `fd` is a new descriptor of ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let index = std::ffi::CString::new(name).unwrap();
        // SAFETY: reads the NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(index.as_ptr()) } as libc::c_int;
        // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto as u16;
        addr.sll_ifindex = ifindex;
        // SAFETY: bind reads a sockaddr_ll of the size given.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        })
        .unwrap();
        Wire(fd)
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: send reads `frame.len()` bytes of `frame`.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
    }

    /// The next frame of the test's EtherType, waiting up to a second.
    fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 70_000];
        for _ in 0..100 {
            // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
            let n = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            let got = &buf[..n as usize];
            if got.len() >= 14 && got[12..14] == ETHERTYPE {
                return Some(got.to_vec());
            }
        }
        None
    }
}

/// An Ethernet frame of the test's EtherType, from `src` to everyone.
fn test_frame(src: MacAddr, len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETHERTYPE);
    f.extend(frame(len - 14, seed));
    f
}

#[test]
fn a_missing_interface_is_not_made_but_explained() {
    let err = Tap::open("btn-none-here").unwrap_err();
    assert!(matches!(err, TapError::NotFound(_)));
    let text = err.to_string();
    assert!(
        text.contains("ip tuntap add dev btn-none-here mode tap"),
        "{text}"
    );
    assert!(std::fs::metadata("/sys/class/net/btn-none-here").is_err());
}

#[test]
fn only_a_free_tap_is_attached() {
    let Some(tap) = TestTap::make() else { return };
    match Tap::open("lo") {
        Err(TapError::NotATap(name)) => assert_eq!(name, "lo"),
        other => panic!("{other:?}"),
    }
    let first = Net::new(&NetConfig::new(tap.0.clone()), MAC).unwrap();
    let err = Net::new(&NetConfig::new(tap.0.clone()), MAC).err().unwrap();
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    drop(first);
    Net::new(&NetConfig::new(tap.0.clone()), MAC).unwrap();
}

#[test]
fn frames_cross_a_real_tap_both_ways_with_every_offload_negotiated() {
    let Some(tap) = TestTap::make() else { return };
    let mut net = Net::new(&NetConfig::new(tap.0.clone()), MAC).unwrap();
    let wire = Wire::on(&tap.0);
    let mut guest = Guest::activate(&mut net, None).unwrap();
    let mut looped = Looped::new(net);
    looped.settle();
    assert!(!looped.lock().needs_reset(), "the TAP took the offloads");

    // Guest to host.
    let out = test_frame(MAC, 1000, 1);
    guest.send(VnetHeader::default(), &out);
    guest.kick(TX);
    looped.until("the frame sent", |n| n.metrics().snapshot().tx_packets == 1);
    assert_eq!(wire.recv().expect("the guest's frame on the wire"), out);

    // Host to guest, among whatever else the interface sends as it comes up.
    for _ in 0..64 {
        guest.post_rx(1526);
    }
    guest.kick(RX);
    let back = test_frame(MacAddr([2, 0, 0, 0, 0, 9]), 700, 2);
    wire.send(&back);
    let mut found = None;
    for _ in 0..50 {
        looped.manager.run_with_timeout(20).unwrap();
        found = guest
            .received()
            .into_iter()
            .find(|r| r.frame.get(12..14) == Some(&ETHERTYPE));
        if found.is_some() {
            break;
        }
    }
    let got = found.expect("the host's frame in the guest");
    assert_eq!(got.frame, back);
    assert_eq!(got.header.num_buffers, 1);
    let m = looped.lock().metrics().snapshot();
    assert_eq!((m.tx_dropped, m.rx_dropped, m.tap_errors), (0, 0, 0));
}
