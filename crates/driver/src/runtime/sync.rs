//! The synchronisation types of the state that the crate's loom models check: loom's when the
//! crate's tests are built with `--cfg loom` (`cargo xtask test` does, in a target directory of
//! its own), std's otherwise, so that the normal build is plain std.
//!
//! Only the state a model drives goes through here (the waiter's registry and its counters, the
//! kickoff ring, the trampoline's worker pool and its parking, the reclaimer's handoff, a host
//! buffer's pending copies, the capture collections); everything else uses std directly.

#[cfg(all(test, loom))]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

/// Atomics, as in `std::sync::atomic`.
pub(crate) mod atomic {
    #[cfg(all(test, loom))]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, fence};
    #[cfg(not(all(test, loom)))]
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, fence};
}

/// Threads' parking, as in `std::thread` (the worker pool's model parks and unparks).
pub(crate) mod thread {
    #[cfg(all(test, loom))]
    pub(crate) use loom::thread::{Thread, current, park};
    #[cfg(not(all(test, loom)))]
    pub(crate) use std::thread::{Thread, current, park};
}

/// The spin hint, as in `std::hint`; loom's yields to its scheduler, so that a modelled spin
/// loop lets the other threads run.
pub(crate) mod hint {
    #[cfg(all(test, loom))]
    pub(crate) use loom::hint::spin_loop;
    #[cfg(not(all(test, loom)))]
    pub(crate) use std::hint::spin_loop;
}

/// `std::collections::HashMap`; under loom with a fixed hasher, because loom replays every
/// execution and needs the same iteration order each time (std's default hasher is seeded at
/// random per map).
#[cfg(not(all(test, loom)))]
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V>;
/// `std::collections::HashMap`; under loom with a fixed hasher, because loom replays every
/// execution and needs the same iteration order each time (std's default hasher is seeded at
/// random per map).
#[cfg(all(test, loom))]
pub(crate) type HashMap<K, V> = std::collections::HashMap<
    K,
    V,
    std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
>;
