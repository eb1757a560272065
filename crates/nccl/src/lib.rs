//! NCCL collectives on [ferrocuda](https://github.com/ferrocuda/ferrocuda) streams: one process
//! drives every GPU of a host, and a host flag gates an all-reduce on every GPU at once.
//!
//! ```no_run
//! use ferrocuda_driver::{CompletionFlag, Device, WaitCondition};
//! use ferrocuda_nccl::{Communicators, ReduceOp};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let devices = (0..Device::count()?).map(Device::new).collect::<Result<Vec<_>, _>>()?;
//! let comms = Communicators::init_all(&devices)?; // before any stream waits on a value
//! let streams = devices.iter().map(Device::new_stream).collect::<Result<Vec<_>, _>>()?;
//! let send = streams.iter().map(|s| s.alloc_zeroed::<f32>(1 << 20)).collect::<Result<Vec<_>, _>>()?;
//! let mut recv = streams.iter().map(|s| s.alloc::<f32>(1 << 20)).collect::<Result<Vec<_>, _>>()?;
//! comms.all_reduce(&send, &mut recv, ReduceOp::Sum, &streams)?; // one ungated warm-up
//!
//! let go = CompletionFlag::new(&devices[0])?; // host → every GPU
//! let done = devices.iter().map(CompletionFlag::new).collect::<Result<Vec<_>, _>>()?; // GPU → host
//! for step in 1..=100u64 {
//!     for s in &streams {
//!         s.wait_for_host_value_ge(&go, step)?; // every GPU waits for the host
//!     }
//!     comms.all_reduce(&send, &mut recv, ReduceOp::Sum, &streams)?;
//!     for (s, d) in streams.iter().zip(&done) {
//!         s.write_host_value(d, step)?; // each GPU reports its part done
//!     }
//!     // ... the host prepares the step's input ...
//!     go.signal(step);
//!     for d in &done {
//!         d.wait(WaitCondition::GreaterOrEqual, step, Duration::from_secs(5))?;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # What to know
//!
//! * **NCCL is loaded at run time** from `libnccl.so.2` (then `libnccl.so`); without it every call
//!   returns [`Error::Load`]. [`version`] says which NCCL was found.
//! * **Set `NCCL_NVLS_ENABLE=0`** in the environment before [`Communicators::init_all`] on machines
//!   where NVLink multicast is off (the project's GPU test machines): NCCL reads it at init.
//! * **Create communicators and run one collective before the first wait.** NCCL allocates memory
//!   and, through the CUDA runtime it carries, loads its kernels; both block while any stream of
//!   the context waits on a value nobody has signalled yet (docs/deadlocks.md). After that, an
//!   all-reduce enqueue only launches kernels.
//! * **Keep-alive.** The buffers are marked as used by their streams
//!   ([`DeviceBuffer::record_use`]), so dropping them never frees memory an enqueued all-reduce
//!   still reads; a dropped [`Communicators`] is destroyed on ferrocuda's reclaimer thread once
//!   every stream is past the work enqueued before the drop.
//! * NCCL switches the thread's current device; this crate tells ferrocuda so
//!   ([`ferrocuda_driver::forget_current_context`]) after every NCCL call.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

// The README's examples are doctests: compiled always, run where they need no GPU (`no_run`
// marks the others). Only rustdoc's test collection sees this item; the docs stay the ones above.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod sys;

use bytemuck::Pod;
use ferrocuda_driver::{Device, DeviceBuffer, DeviceStream};
use std::ffi::{CStr, c_int};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NCCL could not be loaded.
    #[error("NCCL could not be loaded ({0}); install NCCL 2 (libnccl.so.2 on the library path)")]
    Load(String),
    /// An NCCL call failed.
    #[error("{call} failed: {name} ({message})")]
    Nccl {
        /// The NCCL function.
        call: &'static str,
        /// The `ncclResult_t` value.
        code: i32,
        /// Its name in `nccl.h`.
        name: &'static str,
        /// NCCL's message for it.
        message: String,
    },
    /// A ferrocuda driver call failed.
    #[error(transparent)]
    Driver(#[from] ferrocuda_driver::Error),
    /// Arguments that do not fit together (counts, lengths, devices); the message says what.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn lib() -> Result<&'static sys::Nccl> {
    sys::nccl().map_err(Error::Load)
}

fn check(call: &'static str, rc: sys::ncclResult_t) -> Result<()> {
    if rc == sys::ncclResult_t::SUCCESS {
        return Ok(());
    }
    let message = lib()
        .ok()
        .map(|l| {
            // SAFETY: ncclGetErrorString returns a static NUL-terminated string (or null).
            let p = unsafe { (l.ncclGetErrorString)(rc) };
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: non-null, NUL-terminated, static.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        })
        .unwrap_or_default();
    tracing::debug!(call, code = rc.0, name = rc.name(), "NCCL call failed");
    Err(Error::Nccl {
        call,
        code: rc.0,
        name: rc.name(),
        message,
    })
}

/// The loaded NCCL's version code, e.g. `22803` for 2.28.3.
///
/// # Errors
///
/// [`Error::Load`] without NCCL.
pub fn version() -> Result<i32> {
    let l = lib()?;
    let mut v: c_int = 0;
    let _span = tracing::trace_span!("nccl", call = "ncclGetVersion").entered();
    // SAFETY: `v` is a valid out-pointer.
    check("ncclGetVersion", unsafe { (l.ncclGetVersion)(&mut v) })?;
    Ok(v)
}

/// Element types NCCL reduces (sealed).
pub trait NcclType: Pod + private::Sealed {
    /// The `ncclDataType_t`.
    const DATA_TYPE: sys::ncclDataType_t;
}

mod private {
    pub trait Sealed {}
}

macro_rules! nccl_type {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl private::Sealed for $t {}
        impl NcclType for $t {
            const DATA_TYPE: sys::ncclDataType_t = sys::data_type::$v;
        }
    )*};
}

nccl_type!(i8 => INT8, u8 => UINT8, i32 => INT32, u32 => UINT32, i64 => INT64, u64 => UINT64,
    f32 => FLOAT32, f64 => FLOAT64);

/// A reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// `ncclSum`.
    Sum,
    /// `ncclProd`.
    Prod,
    /// `ncclMax`.
    Max,
    /// `ncclMin`.
    Min,
    /// `ncclAvg`.
    Avg,
}

impl ReduceOp {
    fn raw(self) -> sys::ncclRedOp_t {
        match self {
            ReduceOp::Sum => sys::red_op::SUM,
            ReduceOp::Prod => sys::red_op::PROD,
            ReduceOp::Max => sys::red_op::MAX,
            ReduceOp::Min => sys::red_op::MIN,
            ReduceOp::Avg => sys::red_op::AVG,
        }
    }
}

/// A communicator handle, destroyed on ferrocuda's reclaimer thread (it may block).
struct RawComm(sys::ncclComm_t);

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
// concurrent; this crate only destroys it (once) on another thread, after its last use.
unsafe impl Send for RawComm {}

impl Drop for RawComm {
    fn drop(&mut self) {
        let Ok(l) = lib() else { return };
        // SAFETY: the handle came from ncclCommInitAll and is destroyed once, after every stream
        // passed the work enqueued on it (the caller defers this drop behind a fence).
        let rc = unsafe { (l.ncclCommDestroy)(self.0) };
        ferrocuda_driver::forget_current_context();
        if let Err(err) = check("ncclCommDestroy", rc) {
            tracing::warn!(%err, "ncclCommDestroy failed");
        }
    }
}

/// `init_all`'s argument checks, on the devices' ordinals by rank: at least one, none twice.
fn check_ranks(list: &[c_int]) -> Result<()> {
    if list.is_empty() {
        return Err(Error::InvalidArgument("no devices".into()));
    }
    if (1..list.len()).any(|i| list[..i].contains(&list[i])) {
        return Err(Error::InvalidArgument(format!(
            "a device is listed twice: {list:?}"
        )));
    }
    Ok(())
}

/// One NCCL communicator per device, created together by one process (`ncclCommInitAll`): rank
/// `i` is `devices[i]`.
///
/// `Send` but not `Sync`: NCCL forbids concurrent calls on one communicator, so share it behind a
/// `Mutex`.
pub struct Communicators {
    comms: Vec<RawComm>,
    devices: Vec<Device>,
}

impl Communicators {
    /// Creates a communicator for each of `devices` (rank `i` is `devices[i]`).
    ///
    /// Call it before any stream waits on a value (see the crate docs), with `NCCL_NVLS_ENABLE`
    /// set as the machine needs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for no devices or one listed twice (checked first, with or
    /// without NCCL); [`Error::Load`] without NCCL; [`Error::Nccl`] if NCCL refuses.
    pub fn init_all(devices: &[Device]) -> Result<Communicators> {
        let list: Vec<c_int> = devices.iter().map(|d| d.ordinal() as c_int).collect();
        check_ranks(&list)?;
        // NCCL allocates memory and loads kernels here: refused inside a host function and
        // behind a stuck module load, like every driver operation.
        let _op = ferrocuda_driver::guard::enter("Communicators::init_all")?;
        let l = lib()?;
        let mut raw: Vec<sys::ncclComm_t> = vec![std::ptr::null_mut(); list.len()];
        let _span = tracing::trace_span!("nccl", call = "ncclCommInitAll").entered();
        // SAFETY: `raw` has room for `list.len()` handles; `list` holds that many ordinals.
        let rc =
            unsafe { (l.ncclCommInitAll)(raw.as_mut_ptr(), list.len() as c_int, list.as_ptr()) };
        ferrocuda_driver::forget_current_context();
        check("ncclCommInitAll", rc)?;
        Ok(Communicators {
            comms: raw.into_iter().map(RawComm).collect(),
            devices: devices.to_vec(),
        })
    }

    /// How many ranks (devices).
    pub fn len(&self) -> usize {
        self.comms.len()
    }

    /// Whether there are none (never true for a created set).
    pub fn is_empty(&self) -> bool {
        self.comms.is_empty()
    }

    /// The devices, by rank.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Enqueues an all-reduce of `send[i]` into `recv[i]` on `streams[i]` for every rank `i`, as one
    /// NCCL group. Each stream's work before this call (a gate, say) runs first; work enqueued
    /// after it sees the result. The host does not wait.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] unless there is one send buffer, one receive buffer and one
    /// stream per rank, all of the rank's device, and every buffer has the same length;
    /// [`Error::Nccl`] if NCCL refuses.
    pub fn all_reduce<T: NcclType>(
        &self,
        send: &[DeviceBuffer<T>],
        recv: &mut [DeviceBuffer<T>],
        op: ReduceOp,
        streams: &[DeviceStream],
    ) -> Result<()> {
        let n = self.len();
        if send.len() != n || recv.len() != n || streams.len() != n {
            return Err(Error::InvalidArgument(format!(
                "{n} ranks need {n} send buffers, receive buffers and streams (got {}, {}, {})",
                send.len(),
                recv.len(),
                streams.len()
            )));
        }
        let count = send[0].len();
        for (i, dev) in self.devices.iter().enumerate() {
            let (s, r, st) = (&send[i], &recv[i], &streams[i]);
            if s.len() != count || r.len() != count {
                return Err(Error::InvalidArgument(format!(
                    "rank {i}: buffers of {} and {} elements, rank 0 sends {count}",
                    s.len(),
                    r.len()
                )));
            }
            if s.device() != dev || r.device() != dev || st.device() != dev {
                return Err(Error::InvalidArgument(format!(
                    "rank {i}: buffers and stream must be on device {}",
                    dev.ordinal()
                )));
            }
        }
        let _op = ferrocuda_driver::guard::enter("Communicators::all_reduce")?;
        let l = lib()?;
        // One external operation per rank's stream, from the addresses to ncclGroupEnd (where NCCL
        // enqueues): the buffers' uses are recorded on their streams, and a stream that captures
        // a graph is refused (the graph would outlive the communicators' bookkeeping).
        let mut ops = Vec::with_capacity(n);
        let mut addrs = Vec::with_capacity(n);
        for i in 0..n {
            let mut ext = streams[i].external_op(
                "Communicators::all_reduce",
                Some("NCCL collectives are not captured into ferrocuda graphs: enqueue them outside the capture"),
            )?;
            addrs.push((ext.buffer(&send[i])?, ext.buffer(&recv[i])?));
            ops.push(ext);
        }
        let _span = tracing::trace_span!("nccl", call = "ncclAllReduce").entered();
        // SAFETY: no arguments.
        check("ncclGroupStart", unsafe { (l.ncclGroupStart)() })?;
        let mut result = Ok(());
        for i in 0..n {
            let (s, r) = addrs[i];
            // SAFETY: both buffers hold `count` elements of `T` on the communicator's device
            // (checked above) and stay allocated until the stream is past this (their uses are
            // recorded on it); the stream is live and of that device.
            let rc = unsafe {
                (l.ncclAllReduce)(
                    s as *const std::ffi::c_void,
                    r as *mut std::ffi::c_void,
                    count,
                    T::DATA_TYPE,
                    op.raw(),
                    self.comms[i].0,
                    ops[i].raw().cast(),
                )
            };
            result = check("ncclAllReduce", rc);
            if result.is_err() {
                break;
            }
        }
        // Every ncclGroupStart needs its ncclGroupEnd, also after a failure inside the group.
        // SAFETY: no arguments.
        let end = check("ncclGroupEnd", unsafe { (l.ncclGroupEnd)() });
        ferrocuda_driver::forget_current_context();
        drop(ops);
        result.and(end)
    }

    /// Checks every communicator for an asynchronous error (`ncclCommGetAsyncError`), e.g. after a
    /// peer failed.
    ///
    /// # Errors
    ///
    /// The first rank's [`Error::Nccl`].
    pub fn check_async_errors(&self) -> Result<()> {
        let _op = ferrocuda_driver::guard::enter("Communicators::check_async_errors")?;
        let l = lib()?;
        for c in &self.comms {
            let mut async_rc = sys::ncclResult_t::SUCCESS;
            // SAFETY: a live communicator and a valid out-pointer.
            check("ncclCommGetAsyncError", unsafe {
                (l.ncclCommGetAsyncError)(c.0, &mut async_rc)
            })?;
            if async_rc != sys::ncclResult_t::IN_PROGRESS {
                check("ncclCommGetAsyncError (async)", async_rc)?;
            }
        }
        Ok(())
    }
}

impl Drop for Communicators {
    fn drop(&mut self) {
        // ncclCommDestroy frees device memory, which blocks behind a waiting stream: destroy on
        // ferrocuda's reclaimer thread once every stream is past what was enqueued so far.
        for c in self.comms.drain(..) {
            ferrocuda_driver::defer_drop(c);
        }
    }
}

impl std::fmt::Debug for Communicators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Communicators")
            .field(
                "devices",
                &self.devices.iter().map(Device::ordinal).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arguments are checked before NCCL is loaded: no devices is the same error with or
    /// without NCCL on the machine.
    #[test]
    fn init_all_without_devices_is_an_invalid_argument_everywhere() {
        match Communicators::init_all(&[]) {
            Err(Error::InvalidArgument(m)) => assert_eq!(m, "no devices"),
            other => panic!("expected InvalidArgument(\"no devices\"), got {other:?}"),
        }
    }

    #[test]
    fn a_device_listed_twice_is_an_invalid_argument() {
        for list in [&[0, 0][..], &[0, 1, 0], &[3, 1, 2, 1]] {
            match check_ranks(list) {
                Err(Error::InvalidArgument(m)) => {
                    assert!(m.starts_with("a device is listed twice"), "{m}")
                }
                other => panic!("{list:?}: expected InvalidArgument, got {other:?}"),
            }
        }
        assert!(check_ranks(&[0]).is_ok());
        assert!(check_ranks(&[1, 0, 2]).is_ok());
    }

    /// Where NCCL is installed, all eight entry points resolve and the version is NCCL 2's
    /// (ncclGetVersion needs no GPU). Elsewhere the error is `Load`, and its message names
    /// `libnccl.so.2` and says to install NCCL. With `FERROCUDA_EXPECT_NCCL=1` (the GPU bundle's
    /// `run` sets it where `libnccl.so.2` is on the library path) a missing NCCL fails the test.
    #[test]
    fn nccl_loads_where_installed() {
        let expected = std::env::var("FERROCUDA_EXPECT_NCCL").as_deref() == Ok("1");
        match version() {
            Ok(v) => {
                println!("NCCL {v}");
                assert!(
                    (20000..30000).contains(&v),
                    "not an NCCL 2 version code: {v}"
                );
            }
            Err(e) => {
                assert!(
                    !expected,
                    "FERROCUDA_EXPECT_NCCL=1, but NCCL did not load: {e}"
                );
                assert!(matches!(e, Error::Load(_)), "{e:?}");
                let message = e.to_string();
                assert!(message.contains("libnccl.so.2"), "{message}");
                assert!(message.contains("install NCCL"), "{message}");
            }
        }
    }

    #[test]
    fn result_names_follow_nccl_h() {
        assert_eq!(sys::ncclResult_t(0).name(), "ncclSuccess");
        assert_eq!(sys::ncclResult_t(5).name(), "ncclInvalidUsage");
        assert_eq!(<f32 as NcclType>::DATA_TYPE, 7);
        assert_eq!(ReduceOp::Avg.raw(), 4);
    }
}
