//! The one policy every waiting loop of the crate follows: spin, then sleep, then park.
//!
//! A loop that waits for something the GPU or another thread will do goes through three phases:
//!
//! 1. **Spin** for a window after the last progress, with `spin_loop` hints: a signal that comes
//!    within microseconds is seen within a fraction of one (a sleeping thread takes tens of
//!    microseconds to run again).
//! 2. **Sleep** with pauses that double from a first to a longest one: a long wait costs little
//!    CPU, and its wake-up is late by at most the longest pause.
//! 3. **Park** (crate threads with nothing to watch): no CPU at all until a wake-up, which is a
//!    futex call made by the thread that brings work, and only when a thread is parked
//!    ([`Sleepers`]).
//!
//! [`Policy`] names the three phases' lengths; [`Backoff`] runs the first two; [`wait_until`] is
//! the host-side deadline loop built on them (flag and event waits); [`Sleepers`] is the third.
//!
//! | loop | policy |
//! | --- | --- |
//! | host waits with a deadline (`CompletionFlag::wait`, `DeviceEvent::synchronize_timeout`, stream waits with a limit), and the call guard's bounded waits (a held driver, the exit handler) | [`HOST_WAIT`], no park |
//! | the waiter thread (futures) | spin window [`crate::waiter_spin`], sleeps from [`WAITER`], parks when nothing is pending |
//! | the trampoline's notifier and workers | spin [`TRAMPOLINE`] after the last step in flight, then park |
//! | the reclaimer | [`RECLAIMER`]: sleeps while releases are pending, parks when none are |
//!
//! # Lock order
//!
//! The crate's locks, in the order a thread may take them ([`Rank`]): a thread that holds one
//! blocks only on locks further down. None is held across a driver call that can wait for the
//! GPU, and no lock is held while a value of the user's is dropped. Debug builds check the order
//! at every blocking acquisition ([`ranked`]); a `try_` acquisition, which cannot deadlock, is
//! recorded but not checked.
//!
//! 0. a graph host node's closure lock ([`Rank::HostNode`]): held while the user's closure runs,
//!    which may call anything below;
//! 1. the device-opening lock ([`Rank::Opening`]; held across the gate kernels' bounded load);
//! 2. the streams' capture locks ([`Rank::Capture`]): shared by an operation from its capture
//!    check to its enqueue, exclusive by a capture transition;
//! 3. a host buffer's pending set ([`Rank::Pending`]);
//! 4. the fences' stream registry ([`Rank::Fences`]). A module unload holds it, takes every
//!    stream's capture lock in stream-id order without waiting, and unloads only if every
//!    stream is idle: so the unload, the one driver call made under a lock that could wait for
//!    the GPU, has nothing to wait for, and no stream can be created and given work meanwhile;
//! 5. the reclaimer's hand-off queue and its idle lock ([`Rank::Reclaimer`]), never both;
//! 6. the leaf locks ([`Rank::Leaf`]), each taken alone: the waiter's registry, the flag and
//!    device-flag pools, the pinned-block cache, the trampoline's sleepers and graph-kick list, a
//!    panic sink.

use crate::error::{Error, Result};
use crate::runtime::sync;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How a loop waits: a spin window after the last progress, then sleeps from `sleep_min`
/// doubling to `sleep_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// How long after the last progress the loop spins.
    pub(crate) spin: Duration,
    /// The first pause of the sleeping phase.
    pub(crate) sleep_min: Duration,
    /// The longest pause (the worst added latency of a long wait).
    pub(crate) sleep_max: Duration,
}

/// Host-side waits with a deadline: 100 µs of spinning, then 5 µs doubling to 500 µs.
pub(crate) const HOST_WAIT: Policy = Policy {
    spin: Duration::from_micros(100),
    sleep_min: Duration::from_micros(5),
    sleep_max: Duration::from_micros(500),
};

/// The waiter thread's sleeping phase (its spin window is [`crate::waiter_spin`]): 20 µs doubling
/// to 200 µs, which bounds the wake-up latency of a long wait; after [`WAITER_LONG_IDLE`] with
/// nothing happening, pauses of [`WAITER_LONG_PAUSE`] (the waiter's own loop applies those two).
pub(crate) const WAITER: Policy = Policy {
    spin: Duration::from_micros(100),
    sleep_min: Duration::from_micros(20),
    sleep_max: Duration::from_micros(200),
};

/// After this long with futures pending and nothing happening, the waiter sleeps
/// [`WAITER_LONG_PAUSE`] between checks: a wake-up every 200 µs costs a few % of a core.
pub(crate) const WAITER_LONG_IDLE: Duration = Duration::from_millis(5);
/// The waiter's pause once idle for [`WAITER_LONG_IDLE`].
pub(crate) const WAITER_LONG_PAUSE: Duration = Duration::from_micros(500);

/// The trampoline's notifier and workers: spin for 200 µs after the last step, then park.
pub(crate) const TRAMPOLINE: Policy = Policy {
    spin: Duration::from_micros(200),
    sleep_min: Duration::ZERO,
    sleep_max: Duration::ZERO,
};

/// The reclaimer while releases are pending: no spinning, 20 µs doubling to 1 ms.
pub(crate) const RECLAIMER: Policy = Policy {
    spin: Duration::ZERO,
    sleep_min: Duration::from_micros(20),
    sleep_max: Duration::from_millis(1),
};

/// What [`Backoff::idle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idle {
    /// Spun once (inside the spin window).
    Spun,
    /// Slept for this long.
    Slept(Duration),
}

/// One loop's place in its [`Policy`].
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: Policy,
    since: Instant,
    pause: Duration,
    /// Spins since the clock was last read (read once per 64 spins: `Instant::now` costs more
    /// than a spin).
    spins: u32,
    spinning: bool,
}

impl Backoff {
    /// At the start of the spin window.
    pub(crate) fn new(policy: Policy) -> Backoff {
        Backoff {
            policy,
            since: Instant::now(),
            pause: policy.sleep_min,
            spins: 0,
            spinning: true,
        }
    }

    /// Something happened: back to the start of the spin window.
    pub(crate) fn progress(&mut self) {
        self.since = Instant::now();
        self.pause = self.policy.sleep_min;
        self.spins = 0;
        self.spinning = true;
    }

    /// How long since the last progress (the start of the spin window).
    pub(crate) fn idle_for(&self) -> Duration {
        self.since.elapsed()
    }

    /// Changes the spin window (the waiter's is set at run time); the phase is not reset.
    pub(crate) fn set_spin(&mut self, spin: Duration) {
        self.policy.spin = spin;
    }

    /// Whether the loop is still inside its spin window.
    pub(crate) fn spinning(&mut self) -> bool {
        if self.spinning {
            self.spins += 1;
            if self.spins.is_multiple_of(64) || self.policy.spin.is_zero() {
                self.spinning = self.since.elapsed() < self.policy.spin;
            }
        }
        self.spinning
    }

    /// The next pause of the sleeping phase (and doubles the one after, up to the longest).
    pub(crate) fn next_pause(&mut self) -> Duration {
        let p = self.pause;
        self.pause = (self.pause * 2).min(self.policy.sleep_max);
        p
    }

    /// One idle step: a spin hint inside the spin window, else a sleep of the next pause, cut to
    /// `limit` when given.
    pub(crate) fn idle(&mut self, limit: Option<Duration>) -> Idle {
        if self.spinning() {
            std::hint::spin_loop();
            return Idle::Spun;
        }
        let mut p = self.next_pause();
        if let Some(l) = limit {
            p = p.min(l);
        }
        std::thread::sleep(p);
        Idle::Slept(p)
    }
}

/// Calls `poll` until it returns a value, following [`HOST_WAIT`]; [`Error::Timeout`] naming
/// `what` once `timeout` has passed without one.
pub(crate) fn wait_until<T>(
    what: &'static str,
    timeout: Duration,
    mut poll: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut backoff = Backoff::new(HOST_WAIT);
    let mut n = 0u32;
    loop {
        if let Some(v) = poll()? {
            return Ok(v);
        }
        n = n.wrapping_add(1);
        // Inside the spin window the deadline is checked once per 64 polls.
        if backoff.spinning() && !n.is_multiple_of(64) {
            std::hint::spin_loop();
            continue;
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(Error::Timeout { what, timeout });
        }
        backoff.idle(Some(timeout - elapsed));
    }
}

/// Threads of one kind that park when idle; [`wake_one`](Self::wake_one) unparks one (a syscall
/// only if one is parked).
///
/// The worker pool's loom model (`trampoline/pool.rs`) runs it with loom's parking.
pub(crate) struct Sleepers {
    list: sync::Mutex<Vec<sync::thread::Thread>>,
    count: sync::atomic::AtomicUsize,
    /// Threads unparked by [`wake_one`](Self::wake_one) so far (each one a futex call on the
    /// waking thread): how tests see that a hot path makes none.
    woken: sync::atomic::AtomicUsize,
}

impl Sleepers {
    /// No thread parked.
    #[cfg(not(all(test, loom)))]
    pub(crate) const fn new() -> Self {
        Sleepers {
            list: sync::Mutex::new(Vec::new()),
            count: sync::atomic::AtomicUsize::new(0),
            woken: sync::atomic::AtomicUsize::new(0),
        }
    }

    /// No thread parked (loom's types cannot be built in a constant).
    #[cfg(all(test, loom))]
    pub(crate) fn new() -> Self {
        Sleepers {
            list: sync::Mutex::new(Vec::new()),
            count: sync::atomic::AtomicUsize::new(0),
            woken: sync::atomic::AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> Ranked<sync::MutexGuard<'_, Vec<sync::thread::Thread>>> {
        Ranked::lock(Rank::Leaf, || {
            self.list.lock().unwrap_or_else(|p| p.into_inner())
        })
    }

    /// Parks the current thread unless `has_work()` after registering (no lost wake-ups: a wake
    /// between the check and the park leaves the thread's park token set).
    ///
    /// The waker stores its work (a queued job, a step in flight), then calls
    /// [`wake_one`](Self::wake_one), which loads the count; this thread stores the count, then
    /// loads the work in `has_work`. A sequentially consistent fence on each side between the
    /// store and the load makes at least one of them see the other's store: the waker sees this
    /// thread registered, or this thread sees the work.
    pub(crate) fn park_unless(&self, has_work: impl Fn() -> bool) {
        {
            let mut l = self.lock();
            l.push(sync::thread::current());
            self.count.store(l.len(), Ordering::SeqCst);
        }
        sync::atomic::fence(Ordering::SeqCst);
        if !has_work() {
            sync::thread::park();
        }
        let me = sync::thread::current().id();
        let mut l = self.lock();
        l.retain(|t| t.id() != me);
        self.count.store(l.len(), Ordering::SeqCst);
    }

    /// Unparks one parked thread, if any. Call it after storing the work the thread is woken
    /// for (see [`park_unless`](Self::park_unless) for the fence).
    pub(crate) fn wake_one(&self) {
        sync::atomic::fence(Ordering::SeqCst);
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some(t) = self.lock().pop() {
            self.woken.fetch_add(1, Ordering::Relaxed);
            t.unpark();
        }
    }

    /// How many threads are parked (or about to park) now.
    #[cfg(test)]
    pub(crate) fn parked(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// How many threads [`wake_one`](Self::wake_one) unparked so far.
    pub(crate) fn woken(&self) -> usize {
        self.woken.load(Ordering::Relaxed)
    }
}

/// Spins while `busy()`, and for `policy.spin` after it stopped being busy; returns `true` as
/// soon as `ready()`, `false` when it is time to park.
pub(crate) fn spin_while(
    policy: Policy,
    busy: impl Fn() -> bool,
    ready: impl Fn() -> bool,
) -> bool {
    let mut idle_since: Option<Instant> = None;
    loop {
        if ready() {
            return true;
        }
        if busy() {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= policy.spin {
            return false;
        }
        sync::hint::spin_loop();
    }
}

/// A lock's place in the lock order (the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rank {
    /// A graph host node's closure lock.
    HostNode = 0,
    /// The device-opening lock.
    Opening = 1,
    /// A stream's capture lock.
    Capture = 2,
    /// A host buffer's pending set.
    Pending = 3,
    /// The fences' stream registry.
    Fences = 4,
    /// The reclaimer's queue or idle lock.
    Reclaimer = 5,
    /// A lock taken alone.
    Leaf = 6,
}

#[cfg(all(debug_assertions, not(loom)))]
thread_local! {
    /// The ranks of the locks this thread holds, in the order taken.
    static HELD: std::cell::RefCell<Vec<Rank>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Proof that this thread recorded taking a lock of a rank; dropping it records the release.
/// Declare it before the lock's guard (or hold both in a [`Ranked`]), so that it outlives it.
#[must_use]
pub(crate) struct RankGuard {
    #[cfg(all(debug_assertions, not(loom)))]
    rank: Rank,
}

/// Records a blocking acquisition of a lock of `rank`; in debug builds, panics if this thread
/// holds a lock of the same or a later rank (the order of the module docs).
pub(crate) fn ranked(rank: Rank) -> RankGuard {
    // `try_with`: during `exit` (the crate's exit handler takes locks) the thread-local may be
    // gone already; the order is then not checked.
    #[cfg(all(debug_assertions, not(loom)))]
    let _ = HELD.try_with(|h| {
        let mut h = h.borrow_mut();
        if let Some(&held) = h.iter().max() {
            assert!(
                held < rank,
                "lock order: a {rank:?} lock taken while this thread holds a {held:?} one \
                 (crates/driver/src/runtime/park.rs, \"Lock order\")"
            );
        }
        h.push(rank);
    });
    #[cfg(not(all(debug_assertions, not(loom))))]
    let _ = rank;
    RankGuard {
        #[cfg(all(debug_assertions, not(loom)))]
        rank,
    }
}

/// Records a `try_` acquisition of a lock of `rank` (it cannot deadlock: not checked).
pub(crate) fn ranked_try(rank: Rank) -> RankGuard {
    #[cfg(all(debug_assertions, not(loom)))]
    let _ = HELD.try_with(|h| h.borrow_mut().push(rank));
    #[cfg(not(all(debug_assertions, not(loom))))]
    let _ = rank;
    RankGuard {
        #[cfg(all(debug_assertions, not(loom)))]
        rank,
    }
}

impl Drop for RankGuard {
    fn drop(&mut self) {
        #[cfg(all(debug_assertions, not(loom)))]
        let _ = HELD.try_with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|&r| r == self.rank) {
                h.remove(i);
            }
        });
    }
}

/// A lock guard with its rank recorded: the guard drops first, then the record.
pub(crate) struct Ranked<G> {
    guard: G,
    _rank: RankGuard,
}

impl<G> Ranked<G> {
    /// Takes a lock of `rank` with `lock` (blocking), checking the order first.
    pub(crate) fn lock(rank: Rank, lock: impl FnOnce() -> G) -> Ranked<G> {
        let r = ranked(rank);
        Ranked {
            guard: lock(),
            _rank: r,
        }
    }
}

impl<G: Deref> Deref for Ranked<G> {
    type Target = G::Target;
    fn deref(&self) -> &G::Target {
        &self.guard
    }
}

impl<G: DerefMut> DerefMut for Ranked<G> {
    fn deref_mut(&mut self) -> &mut G::Target {
        &mut self.guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_spins_then_sleeps_with_doubling_capped_pauses() {
        let policy = Policy {
            spin: Duration::from_micros(200),
            sleep_min: Duration::from_micros(5),
            sleep_max: Duration::from_micros(30),
        };
        let mut b = Backoff::new(policy);
        assert_eq!(b.idle(None), Idle::Spun);
        std::thread::sleep(Duration::from_micros(300));
        // The clock is read once per 64 spins: the window ends within that many steps.
        let mut steps = 0;
        while b.idle(None) == Idle::Spun {
            steps += 1;
            assert!(steps <= 64, "still spinning after the window");
        }
        let pauses: Vec<_> = (0..4).map(|_| b.next_pause().as_micros()).collect();
        assert_eq!(pauses, [10, 20, 30, 30]);
        b.progress();
        assert_eq!(b.idle(None), Idle::Spun);
        assert_eq!(b.next_pause(), Duration::from_micros(5));
    }

    #[test]
    fn a_zero_spin_window_sleeps_at_once() {
        let mut b = Backoff::new(RECLAIMER);
        assert_eq!(b.idle(None), Idle::Slept(Duration::from_micros(20)));
        assert_eq!(b.idle(None), Idle::Slept(Duration::from_micros(40)));
    }

    #[test]
    fn wait_until_returns_the_value_or_times_out_naming_the_wait() {
        let mut n = 0;
        let v = wait_until("counting", Duration::from_secs(5), || {
            n += 1;
            Ok((n == 1000).then_some(n))
        });
        assert_eq!(v.unwrap(), 1000);
        let t = Instant::now();
        let r: Result<()> = wait_until("never", Duration::from_millis(20), || Ok(None));
        assert!(
            matches!(r, Err(Error::Timeout { what: "never", .. })),
            "{r:?}"
        );
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let e: Result<()> = wait_until("failing", Duration::from_secs(5), || Err(Error::Aborted));
        assert!(matches!(e, Err(Error::Aborted)));
    }

    #[cfg(not(loom))]
    #[test]
    fn a_woken_sleeper_returns_and_a_ready_one_does_not_park() {
        static S: Sleepers = Sleepers::new();
        // Work already there: no park.
        S.park_unless(|| true);
        let t = std::thread::spawn(|| S.park_unless(|| false));
        while S.count.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        S.wake_one();
        t.join().unwrap();
        assert_eq!(S.count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_lock_order_is_checked_in_debug_builds() {
        let outer = ranked(Rank::Capture);
        let inner = ranked(Rank::Leaf);
        drop(inner);
        drop(outer);
        // After the releases, any rank may be taken again.
        let _again = ranked(Rank::Opening);
        let out_of_order = std::thread::spawn(|| {
            let _leaf = ranked(Rank::Leaf);
            let _fences = ranked(Rank::Fences);
        })
        .join();
        assert_eq!(out_of_order.is_err(), cfg!(debug_assertions));
        let same_rank_twice = std::thread::spawn(|| {
            let _a = ranked(Rank::Leaf);
            let _b = ranked(Rank::Leaf);
        })
        .join();
        assert_eq!(same_rank_twice.is_err(), cfg!(debug_assertions));
        // A try acquisition is recorded, not checked.
        std::thread::spawn(|| {
            let _a = ranked_try(Rank::Capture);
            let _b = ranked_try(Rank::Capture);
            let _c = ranked(Rank::Fences);
        })
        .join()
        .unwrap();
    }
}
