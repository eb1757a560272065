//! The GPU-write kickoff's ring: mapped pinned slots the GPU writes tickets into, each with the
//! job waiting for its ticket.
//!
//! A step reserves a ticket ([`reserve`]), the stream writes it with `cuStreamWriteValue64`, and
//! the notifier ([`Ring::scan`]) hands the job to a worker once it sees the ticket; a step whose
//! write could not be enqueued takes its job back ([`Ticket::cancel`]). The protocol is generic
//! over the job and the slot count, so the loom model (`loom_model.rs`) runs it on two slots.

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
    #[cfg(all(test, loom))]
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

    /// The notifier's pass over the tickets handed out and not yet known to be done: hands the
    /// job of every ticket the GPU wrote to `dispatch` (exactly once: the swap makes the caller
    /// its only owner), then advances `low` past the done prefix. Returns whether it dispatched.
    pub(crate) fn scan(&self, mut dispatch: impl FnMut(Box<J>)) -> bool {
        let hi = self.next.load(Ordering::Acquire);
        let start = self.low.load(Ordering::Relaxed);
        let mut low = start;
        let mut prefix = true;
        let mut dispatched = false;
        for t in start..hi {
            let i = Self::index(t);
            if self.done[i].load(Ordering::Acquire) != t
                && self.tickets[i].load(Ordering::Acquire) == t
                && self.slot(i).load(Ordering::Acquire) == t
            {
                let p = self.jobs[i].swap(std::ptr::null_mut(), Ordering::AcqRel);
                self.done[i].store(t, Ordering::Release);
                if !p.is_null() {
                    // SAFETY: the pointer is the Box `reserve` published for ticket t; the swap
                    // made this the only owner.
                    dispatch(unsafe { Box::from_raw(p) });
                    dispatched = true;
                }
            }
            if prefix && self.done[i].load(Ordering::Acquire) == t {
                low = t + 1;
            } else {
                prefix = false;
            }
        }
        self.low.store(low, Ordering::Release);
        dispatched
    }

    /// Whether a ticket was handed out that is not known to be done.
    pub(super) fn pending(&self) -> bool {
        self.low.load(Ordering::Acquire) < self.next.load(Ordering::SeqCst)
    }

    /// Whether the GPU wrote a ticket whose job is not dispatched yet.
    pub(super) fn ready(&self) -> bool {
        let (lo, hi) = (
            self.low.load(Ordering::Acquire),
            self.next.load(Ordering::Acquire),
        );
        (lo..hi).any(|t| {
            let i = Self::index(t);
            self.slot(i).load(Ordering::Acquire) == t && self.done[i].load(Ordering::Acquire) != t
        })
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

/// Reserves a ring slot for `job` and publishes it to the notifier; `Err(job)` when the ring is
/// full (the caller falls back to a host-function kickoff).
pub(crate) fn reserve<J: Send, const N: usize>(
    r: &'static Ring<J, N>,
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
    r.tickets[slot].store(t, Ordering::Relaxed);
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
