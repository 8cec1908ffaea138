//! Step 2 of a round: the guest agent deactivates anon memory (big processes first), only with
//! swap that is not full and anon memory (shmem and tmpfs left out) above 1/64 of the limit,
//! and only for what the file step did not cover: cache is cheaper to lose. `urgent` (page out
//! now) once nothing has moved for a few rounds.

use super::episode::{Episode, Round};
use super::file_step::batch_request;
use super::record::Pending;
use super::{mib, Action, GuestView, Step, DEACTIVATE_BATCH_PAGES};

/// Asks for what the file step left of the round's need, or says why not in `round.idle`.
pub(super) fn anon_step(
    round: &mut Round<'_>,
    episode: &mut Episode,
    guest: &GuestView,
    limit: u64,
    urgent: bool,
) {
    let swap_free = guest.swap_total_pages.saturating_sub(guest.swap_used_pages);
    if guest.swap_total_pages == 0 {
        round.idle.push("no swap for anon memory".to_string());
    } else if swap_free < DEACTIVATE_BATCH_PAGES {
        round
            .idle
            .push(format!("swap full ({} MiB free)", mib(swap_free)));
    } else if let Some(ex) = &episode.anon {
        round.idle.push(format!("anon memory: {}", ex.why));
    } else if guest.anon_pages <= limit / 64 {
        round.idle.push(format!(
            "anon memory {} MiB, not above 1/64 of the limit",
            mib(guest.anon_pages)
        ));
    } else if round.remaining >= DEACTIVATE_BATCH_PAGES
        || (round.remaining > 0 && !round.asked_agent)
    {
        let pages = batch_request(round.remaining.min(guest.anon_pages).min(swap_free));
        round.actions.push(Action::DeactivateAnon { pages, urgent });
        if urgent {
            episode.fruitless_urgent += 1;
        }
        round.pending.push(Pending::Agent {
            step: Step::Anon,
            asked: pages,
            pool_pages: guest.anon_pages,
        });
        round.asked_agent = true;
    }
}
