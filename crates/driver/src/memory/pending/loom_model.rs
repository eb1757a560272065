//! Loom model of a host buffer's pending copies ([`Pending`]): two threads copying the buffer on
//! one stream against a waiter, in every interleaving loom explores (within a preemption bound).
//!
//! Covered: the real `note`, `enqueued`, `snapshot` and `clear` (the lock, the unrecorded count,
//! the failed flag, the generations). The stream is a count of copies enqueued and the position
//! of the event's latest record, under one lock (the driver orders a stream's enqueues and
//! records); the GPU completes the stream's work at once, so a wait covers everything its
//! handle covered when it was made. Not covered: the waiting itself (`cuEventSynchronize`,
//! `cuStreamSynchronize`, their deadlines), copies on several streams (entries of other streams
//! are independent), and the `&mut` rules that keep copies into the buffer apart from host reads.

use super::{Pending, Waitable};
use crate::error::Result;
use loom::sync::{Arc, Mutex};
use loom::thread;

/// The stream's id in the set.
const STREAM: u64 = 1;

/// One stream: copies enqueued on it so far, and how many of them the event's latest record
/// follows.
#[derive(Default)]
struct Stream(Mutex<(u64, u64)>);

impl Stream {
    /// Enqueues a copy; returns its position.
    fn enqueue(&self) -> u64 {
        let mut s = self.0.lock().expect("stream");
        s.0 += 1;
        s.0
    }

    /// Records the event behind everything enqueued so far (`ok`), or fails to.
    fn record(&self, ok: bool) -> bool {
        if ok {
            let mut s = self.0.lock().expect("stream");
            s.1 = s.0;
        }
        ok
    }

    /// The copies a wait on `on` covers (all of them complete once it returns).
    fn covered(on: &Waitable<Arc<Stream>, Arc<Stream>>) -> u64 {
        match on {
            Waitable::Event(e) => e.0.lock().expect("stream").1,
            Waitable::Stream(s) => s.0.lock().expect("stream").0,
        }
    }
}

type Set = Pending<Arc<Stream>, Arc<Stream>>;

/// A copy involving the buffer, as the use path makes it: noted, enqueued, then recorded.
fn copy(set: &Set, stream: &Arc<Stream>, record_ok: bool) {
    let s = stream.clone();
    set.note(STREAM, false, move || -> Result<_> { Ok((s.clone(), s)) })
        .expect("the model's note cannot fail");
    stream.enqueue();
    set.enqueued(STREAM, |e| e.record(record_ok));
}

/// A waiter: snapshot, wait (without the lock), clear. Returns how many copies its wait covered.
fn wait(set: &Set) -> u64 {
    let waits = set.snapshot(false);
    let covered = waits.iter().map(|w| Stream::covered(&w.on)).max();
    set.clear(&waits);
    covered.unwrap_or(0)
}

/// Two threads copy the buffer on one stream while a third waits for its copies; the second
/// copy's event record fails when `second_record_fails`. Afterwards a last waiter (host access
/// after every copy call returned) waits.
///
/// Checked: every copy is complete once one of the two waits returns (the racing waiter's, or the
/// last one's): a waiter never forgets a copy it did not wait for, whether it was noted after its
/// snapshot (the generation) or noted before it and not yet enqueued; a failed record makes the
/// wait fall back to the whole stream; every entry left has no unrecorded copy.
fn copies_racing_a_waiter(second_record_fails: bool) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(move || {
        let set = Arc::new(Set::new());
        let stream = Arc::new(Stream::default());
        let copiers: Vec<_> = [true, !second_record_fails]
            .into_iter()
            .map(|ok| {
                let (set, stream) = (set.clone(), stream.clone());
                thread::spawn(move || copy(&set, &stream, ok))
            })
            .collect();
        let waiter = {
            let set = set.clone();
            thread::spawn(move || wait(&set))
        };
        for c in copiers {
            c.join().expect("copy");
        }
        let early = waiter.join().expect("waiter");
        let last = wait(&set);
        assert_eq!(
            early.max(last),
            2,
            "a copy was forgotten: the racing wait covered {early}, the last {last}"
        );
        for e in set.lock().iter() {
            assert_eq!(e.unrecorded, 0, "an entry kept an unrecorded copy");
        }
    });
}

#[test]
fn loom_pending_copies_are_never_forgotten_by_a_racing_waiter() {
    copies_racing_a_waiter(false);
}

#[test]
fn loom_pending_copies_fall_back_to_the_stream_after_a_failed_record() {
    copies_racing_a_waiter(true);
}
