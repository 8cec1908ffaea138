//! Step 1 of a round: the guest agent drops clean file cache while the cache is above its floor
//! — half the limit (the patch's) or the guest's file working set (its active file list),
//! whichever is larger — and never below it; and how every agent request is sized.

use super::episode::Round;
use super::record::Pending;
use super::{mib, Action, GuestView, Step, DEACTIVATE_BATCH_PAGES, FRUITLESS_PERCENT};

/// An agent request for `pages`: rounded down to whole batches so it never asks much more than
/// is needed, but at least one batch, the smallest unit the agent works in.
pub(crate) fn batch_request(pages: u64) -> u64 {
    if pages == 0 {
        0
    } else {
        (pages / DEACTIVATE_BATCH_PAGES * DEACTIVATE_BATCH_PAGES).max(DEACTIVATE_BATCH_PAGES)
    }
}

/// Whether a request obtained less than [`FRUITLESS_PERCENT`] of what it asked.
pub(crate) fn fruitless(asked: u64, obtained: u64) -> bool {
    // In u128: the product of two guest-reported u64s cannot overflow there.
    u128::from(obtained) * 100 < u128::from(asked) * u128::from(FRUITLESS_PERCENT)
}

/// The cache the file step leaves: half the limit, or the guest's active file list if more.
pub(crate) fn file_floor(guest: &GuestView, limit: u64) -> u64 {
    (limit / 2).max(guest.active_file_pages)
}

/// Asks for `need` pages of file cache (at most the cache), or says why not in `round.idle`.
pub(super) fn file_step(
    round: &mut Round<'_>,
    exhausted_why: Option<&str>,
    guest: &GuestView,
    limit: u64,
) {
    if let Some(why) = exhausted_why {
        round.idle.push(format!("file cache: {why}"));
    } else if guest.file_pages < file_floor(guest, limit).saturating_add(DEACTIVATE_BATCH_PAGES) {
        round.idle.push(if guest.active_file_pages > limit / 2 {
            format!(
                "file cache {} MiB, not above its working set ({} MiB active)",
                mib(guest.file_pages),
                mib(guest.active_file_pages)
            )
        } else {
            format!(
                "file cache {} MiB, not above half the limit",
                mib(guest.file_pages)
            )
        });
    } else {
        let above_floor = guest.file_pages - file_floor(guest, limit);
        let pages = batch_request(round.need.min(above_floor));
        round.actions.push(Action::DeactivateFile { pages });
        round.pending.push(Pending::Agent {
            step: Step::File,
            asked: pages,
            pool_pages: guest.file_pages,
        });
        round.remaining = round.remaining.saturating_sub(pages);
        round.asked_agent = true;
    }
}
