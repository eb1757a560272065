//! Loom model of the reclaimer's loop: a thread dropping (and then waiting for the releases, as
//! [`wait_for_releases`](super::wait_for_releases) does) against the reclaimer's turns and a GPU
//! that passes the enqueued work in its own time.
//!
//! Covered: the real [`Reclaimer`] (`defer`, the reclaimer's `take` and its condvar, the
//! outstanding count and the idle wait with its condvar) and [`Sweeper::turn`] (sorting, releasing
//! at once, batching behind one fence recorded after the drops, polling the batches). The fence
//! here is one counter of enqueued work and the GPU one counter of finished work (that a fence
//! covers every stream is `fence::tests::fences_cover_every_stream_that_may_have_work`). Not
//! covered: the driver calls behind the [`Driver`](super::Driver) backend, stream retirement (no
//! item retires a stream here), the pause between turns, and the deadline of the idle wait
//! (loom's timed wait never times out).

use super::{Backend, Reclaimer, Sort, Sweeper};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use loom::thread;
use std::convert::Infallible;
use std::time::Duration;

/// Items the model drops.
const ITEMS: usize = 3;

/// The GPU: work enqueued so far, and work finished (in order).
#[derive(Default)]
struct Gpu {
    enqueued: AtomicU64,
    done: AtomicU64,
}

/// A dropped resource: `needs` is the point the GPU must pass before it may be released (`None`:
/// released at once, as an event handle is).
struct Item {
    id: usize,
    needs: Option<u64>,
}

/// The model's backend: a fence is the count of work enqueued when it was recorded.
struct Model {
    gpu: Arc<Gpu>,
    released: Arc<[AtomicUsize; ITEMS]>,
    total: Arc<AtomicUsize>,
}

impl Backend for Model {
    type Item = Item;
    type Fence = u64;
    type Retiring = Infallible;

    fn sort(&self, g: Item) -> Sort<Item, Infallible> {
        match g.needs {
            Some(_) => Sort::Fenced(g),
            None => Sort::Now(g),
        }
    }

    fn release(&self, g: Item) {
        if let Some(p) = g.needs {
            let at = self.gpu.done.load(SeqCst);
            assert!(at >= p, "item {} released at {at}, before point {p}", g.id);
        }
        self.released[g.id].fetch_add(1, SeqCst);
        self.total.fetch_add(1, SeqCst);
    }

    fn retire(&self, s: Infallible) -> Result<(), Infallible> {
        match s {}
    }

    fn fence(&self) -> u64 {
        self.gpu.enqueued.load(SeqCst)
    }

    fn passed(&self, f: &mut u64) -> bool {
        self.gpu.done.load(SeqCst) >= *f
    }
}

/// The dropping thread enqueues work, drops a resource it used, drops an event handle, enqueues
/// more work and drops a second resource, then waits for the releases; the GPU finishes the two
/// pieces of work in its own time; the reclaimer (the model's main thread) turns until all three
/// are released.
///
/// Checked: each item is released exactly once, and a fenced one only once the GPU passed the
/// work enqueued before its drop; the idle wait returns (a lost notification would leave it
/// blocked, which loom reports as a deadlock) and only once all three are released; the
/// outstanding count is back to zero.
#[test]
fn loom_reclaimer_releases_each_item_once_after_its_fence_and_wakes_the_waiter() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let r = Arc::new(Reclaimer::<Item>::new());
        let gpu = Arc::new(Gpu::default());
        let released: Arc<[AtomicUsize; ITEMS]> = Arc::new(Default::default());
        let total = Arc::new(AtomicUsize::new(0));

        let dropper = {
            let (r, gpu, released) = (r.clone(), gpu.clone(), released.clone());
            thread::spawn(move || {
                let p = gpu.enqueued.fetch_add(1, SeqCst) + 1;
                r.defer(Item {
                    id: 0,
                    needs: Some(p),
                });
                r.defer(Item { id: 1, needs: None });
                let p = gpu.enqueued.fetch_add(1, SeqCst) + 1;
                r.defer(Item {
                    id: 2,
                    needs: Some(p),
                });
                r.wait_idle(Duration::from_secs(3600))
                    .expect("loom's timed wait never times out");
                for (id, n) in released.iter().enumerate() {
                    assert_eq!(n.load(SeqCst), 1, "the wait returned before item {id}");
                }
            })
        };
        let device = {
            let gpu = gpu.clone();
            thread::spawn(move || {
                loop {
                    let at = gpu.done.load(SeqCst);
                    if at == 2 {
                        break;
                    }
                    if at < gpu.enqueued.load(SeqCst) {
                        gpu.done.store(at + 1, SeqCst);
                    }
                    thread::yield_now();
                }
            })
        };

        let mut sweeper = Sweeper::new(Model {
            gpu,
            released: released.clone(),
            total: total.clone(),
        });
        while total.load(SeqCst) < ITEMS {
            if sweeper.turn(&r).waiting {
                thread::yield_now();
            }
        }

        dropper.join().expect("dropping thread");
        device.join().expect("GPU");
        assert_eq!(r.outstanding(), 0);
        for (id, n) in released.iter().enumerate() {
            assert_eq!(
                n.load(SeqCst),
                1,
                "item {id} released {} times",
                n.load(SeqCst)
            );
        }
    });
}
