//! The GPU-write kickoff's ring: mapped pinned slots the GPU writes tickets into, each with the
//! job waiting for its ticket.
//!
//! A step reserves a ticket ([`reserve`]), the stream writes it with `cuStreamWriteValue64`, and
//! the notifier ([`Ring::scan`]) hands the job to a worker once it sees the ticket; a step whose
//! write could not be enqueued takes its job back ([`Ticket::cancel`]). The protocol is generic
//! over the job and the slot count, so the loom model (`loom_model.rs`) runs it on two slots.
//!
//! # What a pass costs
//!
//! A stream that enqueues far ahead holds hundreds of tickets at once, and the GPU writes them in
//! the order they were enqueued. The notifier therefore does not look at every pending ticket on
//! every pass: each ticket carries its stream (its *lane*), the notifier keeps each lane's pending
//! tickets in ticket order ([`Watch`]), and a pass checks the first [`LANE_WINDOW`] of each lane.
//! Tickets of one stream can leave the ticket order only when several threads enqueue on that
//! stream at once (a ticket is reserved before its write is enqueued), so every
//! [`FULL_PASS_EVERY`]th pass checks every pending ticket: no ticket is missed, whatever the
//! order, and a pass costs the same however deep the queues are.

use super::job::Job;
use super::notifier;
use crate::error::Result;
use crate::runtime::context::Context;
use crate::runtime::park::Sleepers;
use crate::runtime::pinned;
use crate::runtime::raw::CUdeviceptr;
use crate::runtime::sync;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

/// Slots of the kickoff ring (one cache line each): at most this many GPU-write steps in flight;
/// beyond that a step falls back to a host-function kickoff.
pub const RING_SLOTS: usize = 4096;
const SLOT_STRIDE: usize = 64;

/// Tickets of each lane checked on every pass (see the module docs).
pub(crate) const LANE_WINDOW: usize = 4;
/// Every this many passes, every pending ticket is checked.
pub(crate) const FULL_PASS_EVERY: u32 = 256;

/// One slot of the ring's mapped memory: the last ticket the GPU wrote there, alone on its cache
/// line.
#[repr(C)]
pub(crate) struct Slot {
    ticket: sync::atomic::AtomicU64,
    _line: [u8; SLOT_STRIDE - size_of::<u64>()],
}

// The GPU writes ticket t at byte (t % RING_SLOTS) * SLOT_STRIDE of the mapping, which needs no
// more alignment than a u64.
#[cfg(not(all(test, loom)))]
const _: () = assert!(size_of::<Slot>() == SLOT_STRIDE && align_of::<Slot>() == align_of::<u64>());

impl Slot {
    /// A slot holding no ticket yet.
    #[cfg(test)]
    pub(super) fn new() -> Slot {
        Slot {
            ticket: sync::atomic::AtomicU64::new(0),
            _line: [0; SLOT_STRIDE - size_of::<u64>()],
        }
    }
}

/// The kickoff ring: `N` slots, each with the job waiting for its ticket.
///
/// A step reserves ticket t (tickets count up from 1) and slot t % N, publishes its job there,
/// and enqueues the GPU's write of t into the slot. The notifier dispatches the job once it sees
/// t in the slot, and advances `low` past every ticket that is done (dispatched, or cancelled
/// because its write was never enqueued). A slot is reused only when its previous ticket is below
/// `low`, so a pending ticket's job is never overwritten.
pub(crate) struct Ring<J, const N: usize> {
    /// Mapped pinned memory: the GPU writes ticket t into slot t % N.
    pub(super) host: &'static [Slot],
    pub(super) dev: CUdeviceptr,
    /// The job waiting for slot i's ticket, and that ticket.
    pub(super) jobs: Box<[sync::atomic::AtomicPtr<J>]>,
    pub(super) tickets: Box<[sync::atomic::AtomicU64]>,
    /// The lane (stream) of slot i's ticket, published with the ticket.
    pub(super) lanes: Box<[sync::atomic::AtomicU64]>,
    /// The last ticket of slot i that was dispatched.
    pub(super) done: Box<[sync::atomic::AtomicU64]>,
    /// Next ticket to hand out (tickets start at 1; 0 is what fresh slots hold).
    pub(super) next: sync::atomic::AtomicU64,
    /// Every ticket below this was dispatched (the notifier advances it).
    pub(super) low: sync::atomic::AtomicU64,
    pub(super) sleepers: Sleepers,
    /// Whether the notifier is spinning (not parked).
    pub(super) awake: sync::atomic::AtomicBool,
}

/// The process's ring.
pub(crate) type KickRing = Ring<Job, RING_SLOTS>;

impl<J: Send, const N: usize> Ring<J, N> {
    /// A ring over `host` (N slots, zero: no ticket yet) that the GPU reaches at `dev`.
    pub(super) fn new(host: &'static [Slot], dev: CUdeviceptr) -> Self {
        let atomics = |v: u64| {
            (0..N)
                .map(|_| sync::atomic::AtomicU64::new(v))
                .collect::<Box<[_]>>()
        };
        Ring {
            host,
            dev,
            jobs: (0..N)
                .map(|_| sync::atomic::AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            tickets: atomics(0),
            lanes: atomics(0),
            done: atomics(0),
            next: sync::atomic::AtomicU64::new(1),
            low: sync::atomic::AtomicU64::new(1),
            sleepers: Sleepers::new(),
            awake: sync::atomic::AtomicBool::new(true),
        }
    }

    pub(super) fn index(t: u64) -> usize {
        (t % N as u64) as usize
    }

    pub(super) fn slot(&self, i: usize) -> &sync::atomic::AtomicU64 {
        &self.host[i].ticket
    }

    /// The notifier's pass (see the module docs): takes the tickets reserved since the last pass
    /// into their lanes, hands the job of every checked ticket the GPU wrote to `dispatch`
    /// (exactly once: the swap makes the caller its only owner), forgets tickets that are done,
    /// and advances `low` to the lowest ticket not known to be done. Returns whether it
    /// dispatched.
    pub(crate) fn scan(&self, w: &mut Watch, mut dispatch: impl FnMut(Box<J>)) -> bool {
        self.take_new(w);
        w.passes = w.passes.wrapping_add(1);
        let window = if w.passes.is_multiple_of(FULL_PASS_EVERY) {
            usize::MAX
        } else {
            LANE_WINDOW
        };
        let mut dispatched = false;
        for (_, lane) in &mut w.lanes {
            let mut k = 0;
            while k < lane.len() && k < window {
                let t = lane[k];
                let i = Self::index(t);
                if self.done[i].load(Ordering::Acquire) == t {
                    // Cancelled by its enqueuer.
                    lane.remove(k);
                    continue;
                }
                #[cfg(test)]
                {
                    w.checks += 1;
                }
                if self.slot(i).load(Ordering::Acquire) == t {
                    let p = self.jobs[i].swap(std::ptr::null_mut(), Ordering::AcqRel);
                    self.done[i].store(t, Ordering::Release);
                    if !p.is_null() {
                        // SAFETY: the pointer is the Box `reserve` published for ticket t; the
                        // swap made this the only owner.
                        dispatch(unsafe { Box::from_raw(p) });
                        dispatched = true;
                    }
                    lane.remove(k);
                    continue;
                }
                k += 1;
            }
        }
        w.lanes.retain(|(_, l)| !l.is_empty());
        let low = w
            .lanes
            .iter()
            .filter_map(|(_, l)| l.front().copied())
            .fold(w.seen, u64::min);
        self.low.store(low, Ordering::Release);
        dispatched
    }

    /// Takes the tickets published since the last pass into their lanes, in ticket order; stops at
    /// the first ticket whose reserve has not published it yet.
    fn take_new(&self, w: &mut Watch) {
        let hi = self.next.load(Ordering::Acquire);
        while w.seen < hi {
            let t = w.seen;
            let i = Self::index(t);
            if self.tickets[i].load(Ordering::Acquire) != t {
                break;
            }
            let lane = self.lanes[i].load(Ordering::Relaxed);
            match w.lanes.iter_mut().find(|(l, _)| *l == lane) {
                Some((_, q)) => q.push_back(t),
                None => w.lanes.push((lane, std::collections::VecDeque::from([t]))),
            }
            w.seen += 1;
        }
    }

    /// Whether a ticket was handed out that is not known to be done.
    pub(super) fn pending(&self) -> bool {
        self.low.load(Ordering::Acquire) < self.next.load(Ordering::SeqCst)
    }

    /// Whether the next pass has work: tickets reserved since the last, or a ticket in a lane's
    /// window that the GPU wrote or its enqueuer cancelled.
    pub(super) fn ready(&self, w: &Watch) -> bool {
        w.seen < self.next.load(Ordering::Acquire)
            || w.lanes.iter().any(|(_, lane)| {
                lane.iter().take(LANE_WINDOW).any(|&t| {
                    let i = Self::index(t);
                    self.slot(i).load(Ordering::Acquire) == t
                        || self.done[i].load(Ordering::Acquire) == t
                })
            })
    }
}

/// The notifier's own view of the ring (see the module docs): each lane's pending tickets, in
/// ticket order.
#[derive(Default)]
pub(crate) struct Watch {
    /// Tickets below this were taken into a lane.
    seen: u64,
    /// (lane, its pending tickets in increasing order); no lane is empty after a pass.
    lanes: Vec<(u64, std::collections::VecDeque<u64>)>,
    passes: u32,
    /// Tickets checked against their slot, for the tests of what a pass costs.
    #[cfg(test)]
    pub(super) checks: u64,
}

impl Watch {
    /// A view of a ring whose first ticket is 1.
    pub(crate) fn new() -> Watch {
        Watch {
            seen: 1,
            ..Watch::default()
        }
    }
}

pub(super) static RING: OnceLock<Result<&'static KickRing>> = OnceLock::new();

/// The ring, allocated on first use under `ctx` (`cuMemHostAlloc` returns at once even while
/// streams wait; it is never freed), with the notifier thread that watches it.
pub(crate) fn ring(ctx: &Context) -> Result<&'static KickRing> {
    RING.get_or_init(|| {
        if cfg!(all(test, loom)) {
            // A slot holds loom's atomic then: only the models' own rings may exist.
            panic!("no mapped kickoff ring under loom");
        }
        let bytes = RING_SLOTS * SLOT_STRIDE;
        let host = pinned::alloc_mapped(ctx, bytes)?;
        // SAFETY: fresh pinned memory of `bytes` bytes; zero is "no ticket yet".
        unsafe { std::ptr::write_bytes(host.cast::<u8>(), 0, bytes) };
        // SAFETY: `host` is mapped pinned memory of the current context.
        let dev = unsafe { pinned::device_address(host) }?;
        // SAFETY: the allocation holds RING_SLOTS slots of SLOT_STRIDE bytes (a `Slot` is one
        // atomic u64 padded to exactly that), aligned at least for a u64 (the driver's pinned
        // allocations are page-aligned), zeroed (a valid `Slot`), and kept for the life of the
        // process; it is accessed only through the atomics.
        let slots: &'static [Slot] =
            unsafe { std::slice::from_raw_parts(host.cast_const().cast::<Slot>(), RING_SLOTS) };
        let r: &'static KickRing = Box::leak(Box::new(Ring::new(slots, dev)));
        let spawned = std::thread::Builder::new()
            .name("ferrocuda-notifier".into())
            .spawn(move || {
                crate::runtime::guard::mark_crate_thread();
                notifier(r)
            });
        if let Err(e) = spawned {
            tracing::warn!(%e, "could not start the ferrocuda notifier thread");
        }
        Ok(r)
    })
    .clone()
}

/// A GPU-write kickoff prepared for a step: enqueue `cuStreamWriteValue64(addr, ticket)`.
pub(crate) struct Ticket<J: 'static, const N: usize> {
    pub(crate) addr: CUdeviceptr,
    pub(crate) ticket: u64,
    pub(super) slot: usize,
    pub(super) ring: &'static Ring<J, N>,
}

/// Reserves a ring slot for `job`, a step of `lane` (its stream), and publishes it to the
/// notifier; `Err(job)` when the ring is full (the caller falls back to a host-function kickoff).
pub(crate) fn reserve<J: Send, const N: usize>(
    r: &'static Ring<J, N>,
    lane: u64,
    job: Box<J>,
) -> std::result::Result<Ticket<J, N>, Box<J>> {
    let mut t = r.next.load(Ordering::SeqCst);
    loop {
        // `low` lags behind, so this is conservative: a slot is never reused while its last
        // ticket may still be pending. `t` may be stale and below `low` (others took and finished
        // tickets since it was read): then the exchange below fails and `t` is read again.
        if t.saturating_sub(r.low.load(Ordering::Acquire)) >= N as u64 {
            return Err(job);
        }
        match r
            .next
            .compare_exchange_weak(t, t + 1, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => break,
            Err(cur) => t = cur,
        }
    }
    let slot = Ring::<J, N>::index(t);
    // The lane before the ticket, the ticket before the job: the notifier reads a ticket's lane
    // once it sees the ticket (`take_new`), and its job once the GPU wrote it.
    r.lanes[slot].store(lane, Ordering::Relaxed);
    r.tickets[slot].store(t, Ordering::Release);
    r.jobs[slot].store(Box::into_raw(job), Ordering::Release);
    if !r.awake.load(Ordering::SeqCst) {
        r.sleepers.wake_one();
    }
    Ok(Ticket {
        addr: r.dev + (slot * SLOT_STRIDE) as u64,
        ticket: t,
        slot,
        ring: r,
    })
}

impl<J, const N: usize> Ticket<J, N> {
    /// The enqueue of the GPU write failed: take the job back (nothing will write the ticket).
    pub(crate) fn cancel(self) -> Option<Box<J>> {
        let p = self.ring.jobs[self.slot].swap(std::ptr::null_mut(), Ordering::AcqRel);
        self.ring.done[self.slot].store(self.ticket, Ordering::Release);
        // SAFETY: a non-null pointer here is the Box this ticket published and nobody took.
        (!p.is_null()).then(|| unsafe { Box::from_raw(p) })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ring of `N` slots in ordinary memory (leaked: tickets borrow it for `'static`).
    fn ring<const N: usize>() -> &'static Ring<u64, N> {
        let slots: &'static [Slot] = Box::leak((0..N).map(|_| Slot::new()).collect::<Box<[_]>>());
        Box::leak(Box::new(Ring::new(slots, 0)))
    }

    /// The GPU reaches the enqueued write of `t`.
    fn gpu_writes<const N: usize>(r: &Ring<u64, N>, t: &Ticket<u64, N>) {
        r.slot(t.slot).store(t.ticket, Ordering::Release);
    }

    /// A stream that enqueued far ahead: a pass checks a few of its tickets, not all of them, so
    /// the notifier sees the GPU's next write as soon with a thousand steps queued as with one.
    #[test]
    fn a_pass_checks_a_few_tickets_however_deep_the_queue() {
        let r = ring::<2048>();
        let tickets: Vec<_> = (0..1000u64)
            .map(|n| reserve(r, 7, Box::new(n)).unwrap_or_else(|_| panic!("ring full")))
            .collect();
        let mut w = Watch::new();
        let mut got = Vec::new();
        for (n, t) in tickets.iter().enumerate().take(20) {
            gpu_writes(r, t);
            let before = w.checks;
            assert!(r.ready(&w) || n == 0, "ticket {n} written but not ready");
            assert!(r.scan(&mut w, |j| got.push(*j)));
            // The written ticket, then a few behind it (the window).
            assert!(
                w.checks - before <= 8,
                "a pass checked {} tickets with {} queued",
                w.checks - before,
                1000 - n
            );
        }
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert_eq!(r.low.load(Ordering::Acquire), 21);
        for t in tickets.into_iter().skip(20) {
            assert!(t.cancel().is_some());
        }
        r.scan(&mut w, |_| panic!("a cancelled job was dispatched"));
        assert!(!r.pending());
    }

    /// Threads that enqueue on one stream at once can have its GPU write a later ticket while
    /// earlier ones are not written yet, and the stream may then wait for that later step's
    /// closure: the full pass finds the ticket however far behind the window it is.
    #[test]
    fn a_written_ticket_behind_unwritten_ones_of_its_stream_is_found() {
        let r = ring::<64>();
        let mut tickets: Vec<_> = (0..10u64)
            .map(|n| reserve(r, 3, Box::new(n)).unwrap_or_else(|_| panic!("ring full")))
            .collect();
        gpu_writes(r, &tickets[9]);
        let mut w = Watch::new();
        let mut got = Vec::new();
        for _ in 0..FULL_PASS_EVERY {
            r.scan(&mut w, |j| got.push(*j));
        }
        assert_eq!(got, [9]);
        for t in tickets.drain(..9) {
            gpu_writes(r, &t);
        }
        r.scan(&mut w, |j| got.push(*j));
        r.scan(&mut w, |j| got.push(*j));
        r.scan(&mut w, |j| got.push(*j));
        got.sort_unstable();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert!(!r.pending());
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Stream `lane` reserves a ticket; its write is enqueued, or fails (`cancel`).
        Reserve { lane: u64, fails: bool },
        /// The GPU writes the oldest enqueued ticket of `lane`, or one `skip` places behind it
        /// (threads enqueuing on one stream at once).
        Write { lane: u64, skip: usize },
        /// The notifier makes a pass.
        Scan,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3u64, proptest::bool::weighted(0.1))
                .prop_map(|(lane, fails)| Op::Reserve { lane, fails }),
            (0..3u64, prop_oneof![4 => Just(0usize), 1 => 1..8usize])
                .prop_map(|(lane, skip)| Op::Write { lane, skip }),
            Just(Op::Scan),
        ]
    }

    proptest! {
        /// Random reserves on three streams, failed enqueues, GPU writes in each stream's order
        /// (now and then one from further back, as when threads enqueue on one stream) and passes
        /// in between: every enqueued job is dispatched exactly once, no handed-back job is, and once
        /// everything was written the ring drains (`low` reaches `next`).
        #[test]
        fn every_ticket_is_dispatched_exactly_once_in_any_order(
            ops in proptest::collection::vec(op(), 1..400),
        ) {
            let r = ring::<64>();
            let mut w = Watch::new();
            let mut enqueued: Vec<Vec<Ticket<u64, 64>>> = vec![Vec::new(), Vec::new(), Vec::new()];
            let mut expected = Vec::new();
            let mut got = Vec::new();
            let mut n = 0u64;
            for op in ops {
                match op {
                    Op::Reserve { lane, fails } => {
                        n += 1;
                        match reserve(r, lane, Box::new(n)) {
                            Ok(t) if fails => {
                                prop_assert_eq!(t.cancel().map(|j| *j), Some(n));
                            }
                            Ok(t) => {
                                expected.push(n);
                                enqueued[lane as usize].push(t);
                            }
                            // Full: handed back, the step would take a host function.
                            Err(j) => prop_assert_eq!(*j, n),
                        }
                    }
                    Op::Write { lane, skip } => {
                        let q = &mut enqueued[lane as usize];
                        let k = skip.min(q.len().saturating_sub(1));
                        if !q.is_empty() {
                            let t = q.remove(k);
                            gpu_writes(r, &t);
                        }
                    }
                    Op::Scan => {
                        r.scan(&mut w, |j| got.push(*j));
                    }
                }
            }
            for q in &mut enqueued {
                for t in q.drain(..) {
                    gpu_writes(r, &t);
                }
            }
            for _ in 0..FULL_PASS_EVERY {
                r.scan(&mut w, |j| got.push(*j));
            }
            got.sort_unstable();
            prop_assert_eq!(got, expected);
            prop_assert!(!r.pending());
            prop_assert_eq!(r.low.load(Ordering::Acquire), r.next.load(Ordering::Acquire));
        }
    }
}
