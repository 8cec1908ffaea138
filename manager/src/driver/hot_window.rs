//! The guest's own figures for what it must keep — its active lists and its memory off the LRU
//! lists — held at their largest over the last few epochs, as the dirty log's working set is.
//!
//! Why: the lists move from epoch to epoch; their recent largest is a steadier figure for
//! what the guest uses than one reading. A window alone does not survive a squeeze that lasts
//! longer than it (`limit-hot-file` under 96 MiB: the figures from before the squeeze left the
//! window and the cap rose until the guest's OOM killer panicked it): while the balloon holds
//! pages the policy holds the largest need since it began taking them (`policy/need_hold.rs`).

use std::collections::VecDeque;

use crate::policy::GuestView;

/// One epoch's figures.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: u64,
    active_file: u64,
    active_anon: u64,
    kernel: u64,
}

/// The last `epochs` epochs' figures.
#[derive(Debug)]
pub(super) struct HotWindow {
    epochs: u64,
    seen: VecDeque<Held>,
}

impl HotWindow {
    pub fn new(epochs: u64) -> Self {
        Self {
            epochs: epochs.max(1),
            seen: VecDeque::new(),
        }
    }

    /// `view` with its active lists and kernel memory raised to their largest within the
    /// window ending at `epoch`. The figures stay the guest's word: the policy still believes
    /// them only up to what the host holds resident.
    pub fn hold(&mut self, epoch: u64, mut view: GuestView) -> GuestView {
        while self
            .seen
            .front()
            .is_some_and(|h| h.epoch.saturating_add(self.epochs) <= epoch)
        {
            self.seen.pop_front();
        }
        // Several observations in one epoch (an answer or a limit change runs one at once)
        // keep one entry, the largest.
        let now = Held {
            epoch,
            active_file: view.active_file_pages,
            active_anon: view.active_anon_pages,
            kernel: view.kernel_pages,
        };
        match self.seen.back_mut() {
            Some(last) if last.epoch == epoch => {
                last.active_file = last.active_file.max(now.active_file);
                last.active_anon = last.active_anon.max(now.active_anon);
                last.kernel = last.kernel.max(now.kernel);
            }
            _ => self.seen.push_back(now),
        }
        for h in &self.seen {
            view.active_file_pages = view.active_file_pages.max(h.active_file);
            view.active_anon_pages = view.active_anon_pages.max(h.active_anon);
            view.kernel_pages = view.kernel_pages.max(h.kernel);
        }
        view
    }

    /// Forgets what it held (the limit was cleared: no squeeze to remember).
    pub fn clear(&mut self) {
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(active_file: u64, active_anon: u64, kernel: u64) -> GuestView {
        GuestView {
            active_file_pages: active_file,
            active_anon_pages: active_anon,
            kernel_pages: kernel,
            ..GuestView::default()
        }
    }

    #[test]
    fn a_shrinking_active_list_is_held_for_the_window_then_let_go() {
        let mut w = HotWindow::new(8);
        let v = w.hold(10, view(1000, 500, 300));
        assert_eq!((v.active_file_pages, v.active_anon_pages), (1000, 500));
        // Squeezed: the guest's lists shrink; the window keeps the largest.
        let v = w.hold(11, view(200, 100, 250));
        assert_eq!(
            (v.active_file_pages, v.active_anon_pages, v.kernel_pages),
            (1000, 500, 300)
        );
        let v = w.hold(17, view(200, 100, 250));
        assert_eq!(v.active_file_pages, 1000);
        // Eight epochs on, the old figures have left the window.
        let v = w.hold(18, view(200, 100, 250));
        assert_eq!(
            (v.active_file_pages, v.active_anon_pages, v.kernel_pages),
            (200, 100, 250)
        );
    }

    #[test]
    fn a_growing_list_is_seen_at_once_and_repeated_epochs_keep_one_entry() {
        let mut w = HotWindow::new(8);
        w.hold(1, view(100, 0, 0));
        assert_eq!(w.hold(2, view(900, 0, 0)).active_file_pages, 900);
        w.hold(2, view(50, 0, 0));
        w.hold(2, view(60, 0, 0));
        assert_eq!(w.seen.len(), 2);
        w.clear();
        assert_eq!(w.hold(3, view(60, 0, 0)).active_file_pages, 60);
    }
}
