//! The collectors of graph captures whose owner keeps what the capture's operations use itself
//! (`CaptureKeeps`, for ferrocuda-graph's `Graph::capture`), by graph handle.
//!
//! An operation recorded into a capture offers its keep-alive references here first: to the
//! graph's collector if it has one, else they come back and the operation moves them into the
//! graph as a CUDA user object. The owner closes the collection once the capture has ended and
//! takes what was collected. One lock covers the lookup and the push, so an offer racing the close
//! lands either in what the owner takes or back with the operation, never in a list nobody reads
//! (the loom model below checks that).

use super::park::{Rank, Ranked};
use super::sync::{HashMap, Mutex, MutexGuard};

/// Open collections, by graph handle.
pub(crate) struct Sinks<T> {
    map: Mutex<HashMap<usize, Vec<T>>>,
}

impl<T> Sinks<T> {
    pub(crate) fn new() -> Self {
        Sinks {
            map: Mutex::new(HashMap::default()),
        }
    }

    fn lock(&self) -> Ranked<MutexGuard<'_, HashMap<usize, Vec<T>>>> {
        Ranked::lock(Rank::Leaf, || {
            self.map.lock().unwrap_or_else(|p| p.into_inner())
        })
    }

    /// Starts collecting for graph `g`; false if it already has a collector.
    pub(crate) fn open(&self, g: usize) -> bool {
        let mut map = self.lock();
        if map.contains_key(&g) {
            return false;
        }
        map.insert(g, Vec::new());
        true
    }

    /// Gives `items` to `g`'s collector (`None`), or returns them where `g` has none.
    pub(crate) fn offer(&self, g: usize, mut items: Vec<T>) -> Option<Vec<T>> {
        match self.lock().get_mut(&g) {
            Some(list) => {
                list.append(&mut items);
                None
            }
            None => Some(items),
        }
    }

    /// Ends `g`'s collection and returns what was collected (nothing if it was not open).
    pub(crate) fn close(&self, g: usize) -> Vec<T> {
        let taken = self.lock().remove(&g);
        taken.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_land_in_the_open_collection_and_come_back_after_it_closed() {
        let s = Sinks::new();
        assert_eq!(s.offer(1, vec![10]), Some(vec![10]), "nothing open yet");
        assert!(s.open(1));
        assert!(!s.open(1), "one collector per graph");
        assert!(s.open(2));
        assert_eq!(s.offer(1, vec![11, 12]), None);
        assert_eq!(s.offer(2, vec![20]), None);
        assert_eq!(s.close(1), vec![11, 12]);
        assert_eq!(s.offer(1, vec![13]), Some(vec![13]), "closed");
        assert_eq!(s.close(1), Vec::<i32>::new());
        assert_eq!(s.close(2), vec![20]);
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;

    /// Two operations offer while the owner closes the collection: each item ends exactly once,
    /// in what the owner took or back with its operation (which then makes a user object).
    #[test]
    fn loom_capture_sinks_every_offer_lands_exactly_once() {
        loom::model(|| {
            let s = Arc::new(Sinks::<u32>::new());
            assert!(s.open(7));
            let offer = |item: u32| {
                let s = s.clone();
                loom::thread::spawn(move || s.offer(7, vec![item]))
            };
            let (a, b) = (offer(1), offer(2));
            let mut all = s.close(7);
            all.extend(a.join().unwrap().unwrap_or_default());
            all.extend(b.join().unwrap().unwrap_or_default());
            all.sort_unstable();
            assert_eq!(all, vec![1, 2]);
            assert_eq!(
                s.offer(7, vec![3]),
                Some(vec![3]),
                "a closed collection takes nothing"
            );
        });
    }
}
