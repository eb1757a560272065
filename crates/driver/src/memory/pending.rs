//! The copies enqueued on a host buffer that host access must wait for: one entry per stream.
//!
//! A copy is noted before it is enqueued ([`Pending::note`]), so that whatever happens next a
//! waiter sees it; after the enqueue ([`Pending::enqueued`]) the entry's event is recorded on the
//! stream, behind the copy. A waiter takes a [`snapshot`](Pending::snapshot) of what to wait on
//! (the entry's event once every noted copy has its record, else the whole stream), waits without
//! holding the lock, and then [`clear`](Pending::clear)s what it waited for. An entry stays if a
//! copy was noted on it since the snapshot (its generation moved), or if at the snapshot a noted
//! copy was not yet enqueued: the stream wait did not cover that copy, and only the record after
//! it will.
//!
//! The set is generic over the stream and event handles so that the loom model in
//! `memory/pending/loom_model.rs` runs it against copies and waiters without a GPU.

use crate::error::Result;
use crate::runtime::park::{Rank, Ranked};
use crate::runtime::sync;

/// Copies enqueued on one stream that involve the buffer.
struct Entry<S, E> {
    /// The stream's identity (never reused).
    id: u64,
    /// The stream (kept for the fallback wait).
    stream: S,
    /// Recorded after the stream's latest copy of the buffer.
    event: E,
    /// Whether any of those copies writes the host memory (device to host).
    writes: bool,
    /// Copies noted whose event record has not happened yet.
    unrecorded: u32,
    /// An event record failed after a copy was enqueued: waits fall back to the whole stream.
    failed: bool,
    /// Bumped by every note, so a waiter clears only what it waited for.
    generation: u64,
}

/// What a waiter waits on for one entry, and the entry's generation at the time.
pub(crate) struct WaitFor<S, E> {
    id: u64,
    generation: u64,
    /// Every copy noted had been enqueued and recorded (or its record had failed): the wait
    /// covers them all, so the entry may be cleared after it.
    settled: bool,
    pub(crate) on: Waitable<S, E>,
}

/// What covers an entry's copies.
pub(crate) enum Waitable<S, E> {
    /// The event recorded after the latest copy.
    Event(E),
    /// Everything enqueued on the stream so far.
    Stream(S),
}

/// The pending copies of one host buffer. Locked only for bookkeeping, never across a wait.
pub(crate) struct Pending<S, E> {
    entries: sync::Mutex<Vec<Entry<S, E>>>,
}

impl<S: Clone, E: Clone> Pending<S, E> {
    pub(crate) fn new() -> Self {
        Pending {
            entries: sync::Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> Ranked<sync::MutexGuard<'_, Vec<Entry<S, E>>>> {
        // Each critical section is a push, a field update or a retain: a panic inside cannot
        // leave the list inconsistent, so a poisoned lock is used as is.
        Ranked::lock(Rank::Pending, || {
            self.entries.lock().unwrap_or_else(|p| p.into_inner())
        })
    }

    /// Notes a copy on stream `id` (writing the host memory if `writes`) before it is enqueued;
    /// the stream's first note makes its handle and event with `make`.
    ///
    /// # Errors
    ///
    /// What `make` returns; nothing is noted then.
    pub(crate) fn note(
        &self,
        id: u64,
        writes: bool,
        make: impl FnOnce() -> Result<(S, E)>,
    ) -> Result<()> {
        let mut p = self.lock();
        let i = match p.iter().position(|e| e.id == id) {
            Some(i) => i,
            None => {
                let (stream, event) = make()?;
                p.push(Entry {
                    id,
                    stream,
                    event,
                    writes: false,
                    unrecorded: 0,
                    failed: false,
                    generation: 0,
                });
                p.len() - 1
            }
        };
        let e = &mut p[i];
        e.writes |= writes;
        e.unrecorded += 1;
        e.generation += 1;
        Ok(())
    }

    /// After the enqueue of a copy noted on stream `id` (whether it succeeded or not): records the
    /// entry's event behind it with `record` (outside the lock; `false`: the record failed, and
    /// waiters fall back to the whole stream).
    pub(crate) fn enqueued(&self, id: u64, record: impl FnOnce(&E) -> bool) {
        let event = self
            .lock()
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.event.clone());
        let recorded = event.map(|e| record(&e));
        let mut p = self.lock();
        if let Some(e) = p.iter_mut().find(|e| e.id == id) {
            // Every enqueue follows a note on the same entry, which stays until this runs.
            debug_assert!(e.unrecorded > 0, "a copy was enqueued without a note");
            e.unrecorded = e.unrecorded.saturating_sub(1);
            if recorded != Some(true) {
                e.failed = true;
            }
        }
    }

    /// What to wait on (copies that write the host memory only, or all), without holding the lock
    /// afterwards.
    pub(crate) fn snapshot(&self, writes_only: bool) -> Vec<WaitFor<S, E>> {
        self.lock()
            .iter()
            .filter(|p| p.writes || !writes_only)
            .map(|p| WaitFor {
                id: p.id,
                generation: p.generation,
                settled: p.unrecorded == 0,
                on: if p.unrecorded == 0 && !p.failed {
                    Waitable::Event(p.event.clone())
                } else {
                    Waitable::Stream(p.stream.clone())
                },
            })
            .collect()
    }

    /// Forgets the entries a waiter saw complete: those that were settled at its snapshot and
    /// had no copy noted since.
    pub(crate) fn clear(&self, done: &[WaitFor<S, E>]) {
        self.lock().retain(|p| {
            !done
                .iter()
                .any(|w| w.settled && w.id == p.id && w.generation == p.generation)
        });
    }
}

#[cfg(all(test, loom))]
mod loom_model;
