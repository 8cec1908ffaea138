//! Keeping the event loop's epoll set in line with what the host socket and each host stream
//! wait for.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events};

use super::super::connection::Reset;
use super::super::event_handler::{LISTENER, STREAM};
use super::Muxer;

impl Muxer {
    /// Brings the epoll set in line: registers new streams, changes what each connection waits
    /// for, and unregisters (then closes) the streams of ended connections. Runs on the event
    /// loop after every event.
    pub fn sync(&mut self, ops: &mut EventOps) {
        let watch_listener = self.accept_paused_until.is_none();
        if watch_listener != self.listener_registered {
            let result = if watch_listener {
                ops.add(Events::with_data(&self.listener, LISTENER, EventSet::IN))
            } else {
                ops.remove(Events::empty(&self.listener))
            };
            match result {
                Ok(()) => self.listener_registered = watch_listener,
                Err(e) => self.report(
                    |m| &m.event_errors,
                    format_args!("cannot (un)watch the host socket: {e}"),
                ),
            }
        }

        let mut failed = Vec::new();
        for (key, entry) in &mut self.conns {
            let fd = entry.conn.stream().as_raw_fd();
            let want = entry.conn.interest();
            let result = match (entry.registered, want) {
                (None, Some(events)) => ops.add(Events::with_data_raw(fd, STREAM, events)),
                (Some(old), Some(events)) if old != events => {
                    ops.modify(Events::with_data_raw(fd, STREAM, events))
                }
                (Some(_), None) => ops.remove(Events::empty_raw(fd)),
                _ => continue,
            };
            match result {
                Ok(()) => entry.registered = want,
                Err(e) => failed.push((*key, e)),
            }
        }
        for (key, e) in failed {
            self.account(key, &Reset::Event(e.to_string()));
            self.end(key, true);
        }

        let mut unwatchable = Vec::new();
        for (fd, handshake) in &mut self.handshakes {
            if handshake.registered {
                continue;
            }
            match ops.add(Events::with_data(&handshake.stream, STREAM, EventSet::IN)) {
                Ok(()) => handshake.registered = true,
                Err(e) => unwatchable.push((*fd, e)),
            }
        }
        for (fd, e) in unwatchable {
            self.report(
                |m| &m.event_errors,
                format_args!("cannot watch a host connection; closed it: {e}"),
            );
            self.handshakes.remove(&fd);
        }

        for retired in std::mem::take(&mut self.retired) {
            if retired.registered {
                if let Err(e) = ops.remove(Events::empty(&retired.stream)) {
                    self.report(
                        |m| &m.event_errors,
                        format_args!("cannot stop watching a closed host stream: {e}"),
                    );
                }
            }
        }
    }
}
