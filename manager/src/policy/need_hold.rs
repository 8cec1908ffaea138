//! What the guest needs, held while the balloon holds pages: the largest working set and kernel
//! memory the guest showed since the balloon began taking pages, so the balloon's cap never
//! rises because the balloon itself squeezed those figures down.
//!
//! Why: the guest's active lists shrink as the balloon squeezes it (its reclaim deactivates hot
//! pages to refill the inactive lists), and host residency falls as the balloon's pages are
//! released — both bound the working set the cap leaves. A cap computed from the squeezed
//! figures inflates further, which squeezes them again. Seen in `limit-hot-file` under 96 MiB,
//! a limit below the hot file: the target went 396 → 397 → 419 MiB of a 512 MiB guest about
//! 4.5 s after the cut, once the figures from before the squeeze had left the driver's 8-epoch
//! window, and the guest's OOM killer panicked it.
//!
//! Each figure is held as the cap used it when it was seen — bounded then by what the host held
//! resident — so the bound is the resident of before the squeeze, not the squeezed one. The
//! hold starts afresh from the current figures whenever the balloon is empty (target and actual
//! 0: nothing squeezes the guest, so what it shows is what it needs) and is let go when the
//! limit is cleared. A raised limit does not let go: while the balloon still holds pages the
//! guest's figures are still squeezed, and a raised limit still below its need would squeeze it
//! again. The price: a guest whose need really fell while the balloon held pages keeps its old
//! cap until the balloon empties.

use super::Observation;

/// What the cap leaves the guest beside the reserve, as the policy measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Need {
    /// The working set (or, before the dirty log has one, its stand-in: the guest's anon
    /// pages), bounded by resident.
    pub(crate) working_set: u64,
    /// The guest's active lists as it reported them (for the reason text).
    pub(crate) guest_hot: Option<u64>,
    /// The guest's memory off the LRU lists, bounded by resident.
    pub(crate) kernel: u64,
}

impl Need {
    pub(crate) fn pages(self) -> u64 {
        self.working_set.saturating_add(self.kernel)
    }

    fn max(self, other: Need) -> Need {
        Need {
            working_set: self.working_set.max(other.working_set),
            guest_hot: self.guest_hot.max(other.guest_hot),
            kernel: self.kernel.max(other.kernel),
        }
    }
}

/// The largest [`Need`] since the balloon began taking pages.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NeedHold {
    held: Option<Need>,
}

impl NeedHold {
    /// Notes this epoch's `need` (`None` when nothing says what the guest needs: no working set
    /// and no agent).
    pub(crate) fn note(&mut self, obs: &Observation, need: Option<Need>) {
        let balloon_empty = obs.balloon_target_pages == 0 && obs.balloon_actual_pages == 0;
        self.held = match (self.held, need) {
            _ if balloon_empty => need,
            (Some(held), Some(now)) => Some(held.max(now)),
            (held, now) => held.or(now),
        };
    }

    pub(crate) fn held(&self) -> Option<Need> {
        self.held
    }

    /// The limit was cleared: the balloon deflates to nothing, no squeeze to remember.
    pub(crate) fn clear(&mut self) {
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(working_set: u64, kernel: u64) -> Option<Need> {
        Some(Need {
            working_set,
            guest_hot: Some(working_set),
            kernel,
        })
    }

    fn balloon(target: u64, actual: u64) -> Observation {
        Observation {
            balloon_target_pages: target,
            balloon_actual_pages: actual,
            ..Observation::default()
        }
    }

    #[test]
    fn the_largest_need_is_held_while_the_balloon_holds_pages() {
        let mut hold = NeedHold::default();
        // Balloon empty: what the guest shows is what it needs, up or down.
        hold.note(&balloon(0, 0), need(900, 100));
        hold.note(&balloon(0, 0), need(800, 90));
        assert_eq!(hold.held(), need(800, 90));
        // The balloon takes pages: the squeezed figures never lower what is held, for however
        // many epochs, nor does a silent agent; a larger figure raises it.
        hold.note(&balloon(5000, 0), need(800, 90));
        for _ in 0..100 {
            hold.note(&balloon(5000, 5000), need(200, 60));
            hold.note(&balloon(5000, 5000), None);
        }
        assert_eq!(hold.held(), need(800, 90));
        hold.note(&balloon(5000, 5000), need(100, 120));
        assert_eq!(hold.held().map(Need::pages), Some(920));
        // A balloon on its way down still holds pages; empty, the hold starts afresh.
        hold.note(&balloon(0, 10), need(300, 50));
        assert_eq!(hold.held().map(Need::pages), Some(920));
        hold.note(&balloon(0, 0), need(300, 50));
        assert_eq!(hold.held(), need(300, 50));
        hold.clear();
        assert_eq!(hold.held(), None);
    }

    #[test]
    fn hostile_figures_saturate() {
        let mut hold = NeedHold::default();
        hold.note(&balloon(1, 1), need(u64::MAX, u64::MAX));
        assert_eq!(hold.held().map(Need::pages), Some(u64::MAX));
    }
}
