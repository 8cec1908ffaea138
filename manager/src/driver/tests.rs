//! The driver against fakes of every port: guest RAM whose residency the test sets, a balloon
//! that moves when told, a dirty log, and an agent that answers (or fails) as the test says.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_agent::protocol::{MemInfo, Stats};
use ballast_agent::{AgentError, ClientError};

use super::ports::{
    AgentAnswer, AgentReply, AgentRequest, BalloonControl, BalloonPages, DirtyLog, GuestAgent,
    GuestRam, ResidentBalloonPages,
};
use super::*;
use crate::host_enforce::HostEnforcer;
use crate::pages::from_mib;
use crate::policy::{ManagerState, PolicyConfig};
use crate::tracker::RamRegion;
use crate::{HostEnforceStatus, ManagerHandle, ManagerView, MemoryManager};

/// Everything the fakes share with the test.
#[derive(Default)]
struct Guest {
    /// Resident guest pages, from PFN 0 up.
    resident: u64,
    balloon_target: u64,
    balloon_actual: u64,
    logging: Vec<bool>,
    dirty_log_fails: bool,
    /// The agent's statistics and their age; `None`: the agent is not ready.
    stats: Option<(Stats, Duration)>,
    /// What the agent answers, in order; an empty queue answers "freed all".
    answers: Vec<Result<u64, AgentError>>,
    /// Requests the agent got: ("file" | "anon", pages, urgent).
    requests: Vec<(&'static str, u64, bool)>,
}

type Shared = Arc<Mutex<Guest>>;

fn lock(guest: &Shared) -> std::sync::MutexGuard<'_, Guest> {
    guest.lock().unwrap()
}

/// One region of `pages` guest pages at PFN 0.
struct FakeRam(Shared, u64);

impl GuestRam for FakeRam {
    fn regions(&self) -> Vec<RamRegion> {
        vec![RamRegion {
            first_pfn: 0,
            pages: self.1,
        }]
    }

    fn residency(&self, _region: usize, vector: &mut [u8]) -> io::Result<()> {
        let resident = lock(&self.0).resident as usize;
        for (i, byte) in vector.iter_mut().enumerate() {
            *byte = u8::from(i < resident);
        }
        Ok(())
    }

    fn take_vmm_writes(&self, _region: usize) -> Vec<u64> {
        Vec::new()
    }
}

struct FakeBalloon(Shared);

impl BalloonControl for FakeBalloon {
    fn target_pages(&self) -> u64 {
        lock(&self.0).balloon_target
    }
    fn actual_pages(&self) -> u64 {
        lock(&self.0).balloon_actual
    }
    fn set_target_pages(&mut self, pages: u64) -> u64 {
        lock(&self.0).balloon_target = pages;
        pages
    }
    fn ballooned_pages(&self) -> BalloonPages {
        BalloonPages::new()
    }
    fn release_resident(&mut self, _runs: &[(u64, u64)]) -> ResidentBalloonPages {
        ResidentBalloonPages::default()
    }
}

struct FakeDirtyLog(Shared);

impl DirtyLog for FakeDirtyLog {
    fn take_dirty(&mut self, _region: usize, pages: u64) -> io::Result<Vec<u64>> {
        if lock(&self.0).dirty_log_fails {
            return Err(io::Error::other("KVM_GET_DIRTY_LOG failed"));
        }
        Ok(vec![0; pages.div_ceil(64) as usize])
    }

    fn set_logging(&mut self, on: bool) -> io::Result<()> {
        lock(&self.0).logging.push(on);
        Ok(())
    }
}

struct FakeAgent(Shared);

impl FakeAgent {
    fn answer(&mut self, what: &'static str, pages: u64, urgent: bool) -> Result<u64, AgentError> {
        let mut guest = lock(&self.0);
        guest.requests.push((what, pages, urgent));
        if guest.answers.is_empty() {
            Ok(pages)
        } else {
            guest.answers.remove(0)
        }
    }
}

impl GuestAgent for FakeAgent {
    fn latest_stats(&self) -> Option<(Stats, Instant)> {
        let (stats, age) = lock(&self.0).stats.clone()?;
        Some((stats, Instant::now().checked_sub(age)?))
    }
    fn start(&mut self, request: AgentRequest) -> AgentReply {
        let result = match request {
            AgentRequest::File { pages } => self.answer("file", pages, false),
            AgentRequest::Anon { pages, urgent } => self.answer("anon", pages, urgent),
        };
        AgentReply::ready(result.map(AgentAnswer::claimed))
    }
}

/// Guest statistics of `file_mib` page cache and `anon_mib` anon memory, without swap.
fn stats(file_mib: u64, anon_mib: u64) -> Stats {
    let kib = |mib: u64| Some(mib << 10);
    Stats {
        meminfo: MemInfo {
            active_file_kib: kib(0),
            inactive_file_kib: kib(file_mib),
            active_anon_kib: kib(anon_mib),
            inactive_anon_kib: kib(0),
            mem_free_kib: kib(0),
            swap_total_kib: kib(0),
            ..Default::default()
        },
        ..Default::default()
    }
}

const GUEST_MIB: u64 = 64;

/// A driver over a 64 MiB fake guest, with or without an agent.
fn driver(guest: &Shared, agent: bool, limit_mib: Option<u64>) -> Driver {
    let parts = parts(guest, agent);
    let limit_pages = limit_mib.map(from_mib);
    let shared = crate::Shared::new(ManagerView::new(
        from_mib(GUEST_MIB),
        limit_pages,
        HostEnforceStatus::off(),
    ));
    Driver::new(parts, config(limit_pages), shared)
}

fn parts(guest: &Shared, agent: bool) -> ManagerParts {
    ManagerParts {
        ram: Box::new(FakeRam(guest.clone(), from_mib(GUEST_MIB))),
        balloon: Box::new(FakeBalloon(guest.clone())),
        dirty_log: Box::new(FakeDirtyLog(guest.clone())),
        agent: agent.then(|| Box::new(FakeAgent(guest.clone())) as Box<dyn GuestAgent>),
        host_enforcer: HostEnforcer::off(),
    }
}

fn config(limit_pages: Option<u64>) -> ManagerConfig {
    ManagerConfig {
        sample_interval: Duration::from_secs(3600),
        limit_pages,
        policy: PolicyConfig::default(),
        // Ten epochs of the hour-long interval.
        over_limit_after: Duration::from_secs(36_000),
    }
}

/// 48 MiB resident, 24 MiB of it page cache (the agent's statistics `age` old): over a 32 MiB
/// limit.
fn over_limit_guest(age: Duration) -> Shared {
    let guest = Shared::default();
    {
        let mut g = lock(&guest);
        g.resident = from_mib(48);
        g.stats = Some((stats(24, 8), age));
    }
    guest
}

fn view(driver: &Driver) -> ManagerView {
    driver.shared.view().clone()
}

#[test]
fn an_epoch_over_the_limit_asks_the_agent_then_the_balloon_and_publishes() {
    let guest = over_limit_guest(Duration::ZERO);
    let mut driver = driver(&guest, true, Some(32));
    driver.epoch();

    let g = lock(&guest);
    // need = 48 − 28 MiB = 20 MiB; the file request takes the cache down to half the limit
    // (24 − 16 MiB), in whole batches. It is under way: the balloon waits for its answer.
    assert_eq!(g.requests, vec![("file", 2000, false)]);
    assert_eq!(g.balloon_target, 0);
    assert_eq!(
        g.logging,
        vec![true],
        "dirty logging goes on with the limit"
    );
    drop(g);
    let v = view(&driver);
    assert_eq!(v.epochs, 1);
    assert_eq!(v.resident_pages, Some(from_mib(48)));
    assert_eq!(v.threshold_pages, Some(from_mib(28)));
    assert_eq!(v.state, ManagerState::Reclaiming);
    assert_eq!(v.counters.episodes, 1);
    assert!(
        v.dirty_working_set_pages.is_none(),
        "no dirty-log working set before a few epochs of the log"
    );
    // The guest's active lists are a source at once: its 8 MiB of active anon memory.
    assert_eq!(v.guest_active_pages, Some(from_mib(8)));
    assert_eq!(v.working_set_pages, Some(from_mib(8)));
    assert!(v.dirty_rate_pages_per_s.is_some());

    // The answer is collected at the next epoch, and the balloon moves.
    driver.epoch();
    assert!(
        lock(&guest).balloon_target > 0,
        "the balloon inflates after the file step"
    );
    let v = view(&driver);
    assert_eq!(v.counters.file.taken, 1);
    assert_eq!(v.counters.file.claimed_pages, 2000);
    // Nothing was measured yet: resident has not moved.
    assert_eq!(v.counters.file.obtained_pages, 0);
}

#[test]
fn a_failed_agent_request_is_counted_and_the_balloon_still_moves() {
    let guest = over_limit_guest(Duration::ZERO);
    lock(&guest).answers = vec![Err(AgentError::Client(ClientError::Closed))];
    let mut driver = driver(&guest, true, Some(32));
    driver.epoch();
    driver.epoch();
    let v = view(&driver);
    assert_eq!((v.counters.file.taken, v.counters.file.failed), (1, 1));
    assert!(lock(&guest).balloon_target > 0);
}

#[test]
fn without_an_agent_or_fresh_statistics_the_balloon_alone_answers() {
    for (agent, age) in [(false, Duration::ZERO), (true, STATS_FRESH * 2)] {
        let guest = over_limit_guest(age);
        let mut driver = driver(&guest, agent, Some(32));
        driver.epoch();
        let g = lock(&guest);
        assert!(g.requests.is_empty(), "agent {agent}, age {age:?}");
        // Straight to the balloon, by resident − threshold (48 − 28 MiB).
        assert_eq!(g.balloon_target, from_mib(20));
    }
}

#[test]
fn dirty_logging_follows_the_limit() {
    let guest = Shared::default();
    lock(&guest).resident = from_mib(8);
    let mut driver = driver(&guest, false, None);
    driver.epoch();
    assert!(lock(&guest).logging.is_empty(), "no limit, no logging");
    assert_eq!(view(&driver).dirty_rate_pages_per_s, None);

    driver.policy.set_limit(Some(from_mib(32)));
    for _ in 0..WORKING_SET_EPOCHS + 1 {
        driver.epoch();
    }
    assert_eq!(lock(&guest).logging, vec![true]);
    let v = view(&driver);
    assert_eq!(v.state, ManagerState::WithinLimit);
    assert_eq!(
        v.working_set_pages,
        Some(0),
        "a working set once the log has history"
    );

    driver.policy.set_limit(None);
    driver.epoch();
    assert_eq!(lock(&guest).logging, vec![true, false]);
    assert_eq!(view(&driver).working_set_pages, None);
}

#[test]
fn a_failed_sample_publishes_nothing() {
    let guest = Shared::default();
    {
        let mut g = lock(&guest);
        g.resident = from_mib(48);
        g.dirty_log_fails = true;
    }
    let mut driver = driver(&guest, false, Some(32));
    driver.epoch();
    assert_eq!(view(&driver).epochs, 0);
    assert_eq!(lock(&guest).balloon_target, 0, "nothing decided");
}

#[test]
fn a_moving_balloon_is_charged_to_its_step() {
    let guest = Shared::default();
    lock(&guest).resident = from_mib(48);
    let mut driver = driver(&guest, false, Some(32));
    driver.epoch();
    assert!(matches!(driver.balloon_moving, Some((Step::Inflate, _))));
    std::thread::sleep(Duration::from_millis(20));
    driver.epoch();
    assert!(view(&driver).counters.inflate.time >= Duration::from_millis(20));
}

#[test]
fn a_limit_set_through_the_handle_wakes_the_thread_at_once() {
    let guest = Shared::default();
    lock(&guest).resident = from_mib(48);
    let manager = MemoryManager::start(parts(&guest, false), config(None)).unwrap();
    let handle: ManagerHandle = manager.handle();
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.view().epochs < 1 {
        assert!(Instant::now() < deadline, "no first epoch");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        handle.set_limit(Some(0)),
        Err(crate::LimitError::TooSmall),
        "refused, and nothing changes"
    );
    handle.set_limit(Some(from_mib(32))).unwrap();
    // The sample interval is an hour: only the limit change can run the next epoch.
    while handle.view().threshold_pages.is_none() {
        assert!(
            Instant::now() < deadline,
            "the limit did not wake the driver"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let v = handle.view();
    assert_eq!(v.limit_pages, Some(from_mib(32)));
    assert_eq!(v.epochs, 2);
    drop(manager);
}
