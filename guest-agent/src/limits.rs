//! The agent's bounds on itself. It runs in a guest that is short of memory, on behalf of a
//! host that wants that memory back: it must cost little and never grow.
//!
//! - Memory: `RLIMIT_AS` (address space, default 256 MiB) makes a runaway allocation fail
//!   inside the agent instead of pushing the guest into reclaim or the OOM killer; glibc is
//!   told to keep at most two malloc arenas, since each thread's arena reserves 64 MiB of
//!   address space; connection threads have 512 KiB stacks, and there are few of them.
//! - CPU: `nice` 10 while idle (statistics), normal priority while it carries out a reclaim
//!   request ([`NormalPriority`]): the host asks for memory exactly when the guest may be busy,
//!   and a request starved of CPU would fall back to coarse whole-guest reclaim. Each
//!   request's work is bounded (walk budget in CPU time, request budget), and reclaim requests
//!   run one at a time.
//! - Every input is bounded: request lines (64 KiB), /proc reads, files examined per request.

use std::io;

use log::warn;

/// Applies the bounds; `max_address_space` of 0 leaves the address space unlimited.
/// Failures are logged, not fatal: an agent with looser bounds beats no agent.
pub fn apply(max_address_space: u64, nice: i32) {
    if max_address_space > 0 {
        if let Err(e) = limit_address_space(max_address_space) {
            warn!("cannot limit the agent's address space: {e}");
        }
    }
    limit_malloc_arenas();
    if nice != 0 {
        // SAFETY: setpriority takes plain integers; 0 means this process.
        let ret = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        if ret != 0 {
            warn!(
                "cannot lower the agent's priority: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// The calling thread at nice 0 while it lives, back at its own nice value after (Linux nice
/// values are per thread). Raising a priority needs root, which the agent is; without it the
/// thread simply keeps its nice value.
pub struct NormalPriority {
    tid: libc::id_t,
    was: Option<i32>,
}

impl NormalPriority {
    pub fn enter() -> NormalPriority {
        // SAFETY: gettid takes no arguments and cannot fail.
        let tid = unsafe { libc::gettid() } as libc::id_t;
        // SAFETY: getpriority/setpriority take plain integers. -1 is also a valid nice value,
        // so errno tells a failure apart; it is reset first.
        let was = unsafe {
            *libc::__errno_location() = 0;
            let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
            (*libc::__errno_location() == 0
                && nice > 0
                && libc::setpriority(libc::PRIO_PROCESS, tid, 0) == 0)
                .then_some(nice)
        };
        NormalPriority { tid, was }
    }
}

impl Drop for NormalPriority {
    fn drop(&mut self) {
        if let Some(nice) = self.was {
            // SAFETY: as in `enter`.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, self.tid, nice) };
        }
    }
}

fn limit_address_space(bytes: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: `limit` is a valid rlimit that lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt changes a malloc tunable; called before other threads exist.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
