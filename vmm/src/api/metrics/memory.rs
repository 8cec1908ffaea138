//! The memory manager's families of `GET /metrics` (what it measures, its state, and a counter
//! set per step of the over-limit handler), and `--host-enforce`'s.

use ballast_manager::pages::PAGE_SIZE;
use ballast_manager::policy::{threshold_for, ManagerState, OverLimitCause, Step, StepCounters};
use ballast_manager::{HostEnforceState, HostEnforceStatus, ManagerView};

use super::text::{counter, flag, gauge, state_gauge, Family};

/// The `cause` label of `ballast_memory_over_limit_cause`: the policy's causes, and a guest
/// that answers neither its agent nor its balloon.
fn cause(state: &ManagerState) -> Option<&'static str> {
    match state {
        ManagerState::OverLimit { cause, .. } => Some(cause.as_str()),
        ManagerState::GuestUnresponsive { .. } => Some(GUEST_UNRESPONSIVE),
        _ => None,
    }
}

const GUEST_UNRESPONSIVE: &str = "guest_unresponsive";

pub fn manager(out: &mut String, view: &ManagerView) {
    if let Some(limit) = view.limit_pages {
        gauge(
            out,
            "ballast_memory_threshold_bytes",
            "Where reclaim stops: the limit less an eighth (absent without a limit).",
            threshold_for(limit).saturating_mul(PAGE_SIZE),
        );
    }
    gauge(
        out,
        "ballast_memory_working_set_known",
        "1 when the working-set estimate is known (a limit is set and KVM's dirty log has a few \
         epochs of history), else 0.",
        flag(view.working_set_pages.is_some()),
    );
    if let Some(pages) = view.working_set_pages {
        gauge(
            out,
            "ballast_memory_working_set_bytes",
            "The working set the memory manager keeps: the larger of its sources (absent while \
             unknown).",
            pages.saturating_mul(PAGE_SIZE),
        );
    }
    let mut sources = Family::new(
        out,
        "ballast_memory_working_set_source_bytes",
        "gauge",
        "Each source of the working set, while known: dirty_log (guest pages written in the \
         last 8 epochs), guest_active (the guest's active LRU lists, reads included).",
    );
    for (source, pages) in [
        ("dirty_log", view.dirty_working_set_pages),
        ("guest_active", view.guest_active_pages),
    ] {
        if let Some(pages) = pages {
            sources.sample(&[("source", source)], pages.saturating_mul(PAGE_SIZE));
        }
    }
    gauge(
        out,
        "ballast_memory_host_idle_page_tracking",
        "1 when this host's kernel has idle page tracking (/sys/kernel/mm/page_idle), else 0.",
        flag(view.host_idle_tracking),
    );
    if let Some(rate) = view.dirty_rate_pages_per_s {
        gauge(
            out,
            "ballast_memory_dirty_rate_bytes_per_second",
            "Guest RAM dirtied per second in the last epoch (absent without dirty logging, i.e. \
             without a limit).",
            rate * PAGE_SIZE as f64,
        );
    }

    let current = cause(&view.state);
    gauge(
        out,
        "ballast_memory_over_limit",
        "1 when the VM is over its limit and the memory manager can take nothing more \
         (over_limit or guest_unresponsive), else 0.",
        flag(current.is_some()),
    );
    let mut causes = Family::new(
        out,
        "ballast_memory_over_limit_cause",
        "gauge",
        "1 for why the VM is over its limit with nothing more to take, 0 for the other causes.",
    );
    let names = OverLimitCause::ALL
        .iter()
        .map(|c| c.as_str())
        .chain([GUEST_UNRESPONSIVE]);
    for name in names {
        causes.sample(&[("cause", name)], flag(current == Some(name)));
    }

    gauge(
        out,
        "ballast_memory_over_limit_epochs",
        "Epochs in a row, up to the last, with resident guest RAM above the limit.",
        view.counters.over_limit_epochs,
    );
    gauge(
        out,
        "ballast_memory_max_overshoot_bytes",
        "The most resident guest RAM was above the limit at one epoch since the limit was last \
         set.",
        view.counters.max_overshoot_pages.saturating_mul(PAGE_SIZE),
    );
    counter(
        out,
        "ballast_balloon_resident_violations_total",
        "Balloon pages the host found resident again (touched by the guest after it gave them \
         to the balloon) and released again, summed over epochs.",
        view.counters.balloon_violation_pages,
    );
    counter(
        out,
        "ballast_balloon_violation_epochs_total",
        "Epochs in which balloon pages were found resident again.",
        view.counters.balloon_violation_epochs,
    );
    counter(
        out,
        "ballast_memory_working_set_backoffs_total",
        "Times the guest refaulted or stalled with pages in the balloon and got a step back.",
        view.counters.working_set_backoffs,
    );
    counter(
        out,
        "ballast_balloon_oom_deflates_total",
        "Times the guest took pages back from the balloon on its own (deflate on OOM).",
        view.counters.balloon_oom_deflates,
    );
    file_passes(out, view);
    counter(
        out,
        "ballast_memory_reclaim_episodes_total",
        "Times resident guest RAM went over the limit and reclaim started.",
        view.counters.episodes,
    );
    counter(
        out,
        "ballast_memory_epochs_total",
        "Samples of residency and dirtiness the memory manager took.",
        view.epochs,
    );
    gauge(
        out,
        "ballast_memory_sample_seconds",
        "Time the last sample of residency and dirtiness took.",
        view.sample_cost.as_secs_f64(),
    );
    steps(out, view);
}

/// Where the agent's `deactivate_file` answers say their pages came from.
fn file_passes(out: &mut String, view: &ManagerView) {
    let p = &view.file_passes;
    let mut freed = Family::new(
        out,
        "ballast_agent_file_freed_bytes_total",
        "counter",
        "Page cache the guest agent says its deactivate_file passes freed: big files, small \
         files, and the whole-guest fallback.",
    );
    for (pass, pages) in [
        ("big", p.big_pages),
        ("small", p.small_pages),
        ("fallback", p.fallback_pages),
    ] {
        freed.sample(&[("pass", pass)], pages.saturating_mul(PAGE_SIZE));
    }
    counter(
        out,
        "ballast_agent_file_fallbacks_total",
        "deactivate_file requests in which the agent ran its whole-guest fallback.",
        p.fallbacks,
    );
}

/// One counter family per measure, one sample per step.
fn steps(out: &mut String, view: &ManagerView) {
    let per_step = |out: &mut String, name, help, value: &dyn Fn(&StepCounters) -> String| {
        let mut family = Family::new(out, name, "counter", help);
        for step in Step::ALL {
            family.sample(&[("step", step.as_str())], value(view.counters.step(step)));
        }
    };
    let bytes = |pages: u64| pages.saturating_mul(PAGE_SIZE).to_string();
    per_step(
        out,
        "ballast_memory_reclaim_steps_total",
        "Actions of each step of the over-limit handler: file (agent drops page cache), anon \
         (agent deactivates anon memory), inflate and deflate (balloon targets).",
        &|c| c.taken.to_string(),
    );
    per_step(
        out,
        "ballast_memory_reclaim_asked_bytes_total",
        "Guest memory each step asked for.",
        &|c| bytes(c.asked_pages),
    );
    per_step(
        out,
        "ballast_memory_reclaim_obtained_bytes_total",
        "Guest memory each step obtained, as the host measured it: the fall in resident guest \
         RAM over the agent's rounds, up to what it claimed (file, anon); what the balloon grew \
         (inflate) or shrank (deflate) by.",
        &|c| bytes(c.obtained_pages),
    );
    per_step(
        out,
        "ballast_memory_reclaim_claimed_bytes_total",
        "Guest memory the guest agent said each of its steps freed (file) or deactivated \
         (anon), shown beside what was measured; 0 for the balloon's steps.",
        &|c| bytes(c.claimed_pages),
    );
    per_step(
        out,
        "ballast_memory_reclaim_failures_total",
        "Agent requests of each step that failed.",
        &|c| c.failed.to_string(),
    );
    per_step(
        out,
        "ballast_memory_reclaim_seconds_total",
        "Time spent per step: the agent's requests (file, anon); the balloon moving towards its \
         target, to the epoch (inflate, deflate).",
        &|c| c.time.as_secs_f64().to_string(),
    );
}

pub fn host_enforce(out: &mut String, status: &HostEnforceStatus) {
    state_gauge(
        out,
        "ballast_host_enforce_state",
        "1 for --host-enforce's state, 0 for the others: off (not asked), unavailable (the host \
         has no cgroup v2 memory controller for ballast), standby (in its cgroup, memory.high \
         max), active (memory.high at the limit plus the overhead allowance).",
        &status.state,
        &[
            (HostEnforceState::Off, "off"),
            (HostEnforceState::Unavailable, "unavailable"),
            (HostEnforceState::Standby, "standby"),
            (HostEnforceState::Active, "active"),
        ],
    );
    if let Some(high) = status.memory_high_bytes {
        gauge(
            out,
            "ballast_host_enforce_memory_high_bytes",
            "memory.high of ballast's cgroup (absent unless active).",
            high,
        );
    }
    if let Some(current) = status.memory_current_bytes {
        gauge(
            out,
            "ballast_host_enforce_memory_current_bytes",
            "memory.current of ballast's cgroup: all it is charged for (absent outside one).",
            current,
        );
    }
}
