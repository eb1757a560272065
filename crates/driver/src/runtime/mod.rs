//! The runtime side of the driver: the machinery under the api side's types.
//!
//! The api side (`device`, `stream`, `event`, `flag`, `device_flag`, `memory`, `module`,
//! `future`, `resource`, `callback`) is what users see. It uses the modules here; nothing here
//! imports the api side. The runtime side sees raw handles ([`raw`]'s `CUstream`, `CUevent`,
//! `CUdeviceptr`, [`context::Context`]) and narrow traits the api side implements
//! ([`gates::HostWord`] for a flag's 8 bytes, [`reclaim::FencedStream`] for a stream the fences
//! cover), never an api type. The test
//! `crates/driver/tests/sides.rs` enforces the direction.
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`raw`] | one `unsafe fn` per driver entry point, each through [`guard`] |
//! | [`guard`] | the call guard (host-function check, driver-held check, tracing span, error mapping), exported to sibling crates |
//! | [`context`] | a device's primary context: binding it to the calling thread, the crate's reclaim stream |
//! | [`handles`] | owned event and stream handles whose release never blocks |
//! | [`pinned`] | mapped pinned allocations and their byte count |
//! | [`gates`] | the gate kernels' PTX, names and argument layout; wait conditions and their mem-op flags; the abort value |
//! | [`park`] | the one spin / sleep / park policy of every waiting loop, and the lock order |
//! | [`reclaim`] | releases behind fences, on the reclaimer thread |
//! | [`waiter`] | the thread that wakes futures |
//! | [`trampoline`] | host jobs, the worker pool, the GPU-write kickoff ring and its notifier |
//! | [`sync`] | `std::sync` or loom's, for the models |

pub(crate) mod capture_sinks;
pub(crate) mod context;
pub mod gates;
pub mod guard;
pub(crate) mod handles;
pub(crate) mod park;
pub(crate) mod pinned;
pub(crate) mod raw;
pub(crate) mod reclaim;
pub(crate) mod sync;
pub(crate) mod trampoline;
pub(crate) mod waiter;
