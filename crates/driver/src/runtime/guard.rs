//! The call guard: the one way into the CUDA driver, for this crate and its siblings.
//!
//! Every public operation that may reach the driver starts with [`enter`], and every driver call
//! goes through [`call`]. Together they keep three rules in one place:
//!
//! 1. **No driver call inside a host function.** CUDA forbids it (the call may deadlock: the
//!    driver's callback thread is the one that would complete it). A thread running a host
//!    function (a `cuLaunchHostFunc` callback or a graph host node) is marked; [`enter`] refuses
//!    there with [`Error::CalledFromHostFunc`] naming the *public operation* the user called
//!    (`"HostBuffer::new"`, not the driver entry point it would have reached first).
//! 2. **No call behind a stuck module load.** After a module load gave up behind a stream that
//!    waits on a host value, the loader thread stays inside `cuModuleLoadData` until that wait
//!    passes, and the driver holds a lock that other calls (`cuMemHostAlloc` among them, measured on
//!    an H200) block on. While that is so, [`enter`] refuses with [`Error::DriverHeld`] instead of
//!    letting the user's thread — possibly the one that would signal the flag — block. Drops that
//!    would call the driver hand their release to the crate's reclaimer instead (`must_defer`).
//! 3. **Tracing.** [`enter`] opens a `trace` span named `op` with the operation's name, [`call`] one
//!    named `cu` with the driver call's name; a failed call is a `debug` event keeping the call,
//!    its code, name and message ([`DriverError`]).
//!
//! The module is public (hidden from the docs) so that ferrocuda-graph, ferrocuda-kernels and
//! ferrocuda-nccl reach the driver only through it; it is not part of the supported API.

use crate::error::{DriverError, Error, Result};
use ferrocuda_sys::{CUresult, Driver};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

thread_local! {
    /// Set while a host function (a driver callback) runs user code on this thread.
    static IN_HOST_FUNC: Cell<bool> = const { Cell::new(false) };
    /// The public operation running on this thread (innermost), for error messages.
    static CURRENT_OP: Cell<Option<&'static str>> = const { Cell::new(None) };
    /// Set on the crate's reclaimer thread, which is where deferred releases run (and may block).
    static RECLAIMER: Cell<bool> = const { Cell::new(false) };
    /// Set on the crate's own threads (reclaimer, waiter, loader, notifier, workers), whose driver
    /// calls the exit handler waits for.
    static CRATE_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Set once the process is exiting (see [`quiesce`]): driver calls fail from then on.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);
/// Driver calls in progress on the crate's own threads.
static IN_DRIVER: AtomicUsize = AtomicUsize::new(0);
/// Driver calls made through the guard so far, by every thread.
static CALLS: AtomicU64 = AtomicU64::new(0);

/// How many driver calls ferrocuda (and the sibling crates, which call through this guard) made
/// in this process so far, on every thread. A relaxed counter: read it before and after some work
/// to see how many calls that work cost (the gated device loop's benchmark counts the calls per
/// step this way).
pub fn driver_calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

/// Marks the current thread as one of the crate's own.
pub(crate) fn mark_crate_thread() {
    CRATE_THREAD.with(|c| c.set(true));
}

/// At process exit: stops the crate's threads from calling the driver while the process tears it
/// down. Waits (bounded) for their driver calls in progress, then makes every later call fail
/// with [`Error::Shutdown`]. Without this, a crate thread still releasing something (a retired
/// stream, a fence query) could call into the driver during its teardown; under
/// compute-sanitizer that ended test processes with a segmentation fault after every test passed.
pub(crate) fn quiesce() {
    SHUTDOWN.store(true, Ordering::SeqCst);
    // Bounded: a call that does not return in time is left to the process's teardown.
    let _ = super::park::wait_until(
        "crate threads' driver calls at exit",
        HELD_GRACE * 4,
        || Ok((IN_DRIVER.load(Ordering::SeqCst) == 0).then_some(())),
    );
}

/// Marks the current thread as the crate's reclaimer (one of the crate's threads).
pub(crate) fn mark_reclaimer_thread() {
    RECLAIMER.with(|c| c.set(true));
    mark_crate_thread();
}

/// Module loads whose caller gave up while the loader thread was still inside the driver.
static STUCK_LOADS: AtomicUsize = AtomicUsize::new(0);

/// Marks the current thread as running inside a driver callback until the scope drops.
pub(crate) struct HostFuncScope {
    was: bool,
}

impl HostFuncScope {
    pub(crate) fn enter() -> Self {
        HostFuncScope {
            was: IN_HOST_FUNC.with(|c| c.replace(true)),
        }
    }
}

impl Drop for HostFuncScope {
    fn drop(&mut self) {
        IN_HOST_FUNC.with(|c| c.set(self.was));
    }
}

/// Whether the current thread runs a host function right now, where CUDA calls are forbidden:
/// this crate's operations return [`Error::CalledFromHostFunc`] there.
pub fn in_host_function() -> bool {
    IN_HOST_FUNC.with(Cell::get)
}

/// Whether a module load that timed out is still inside the driver (see the module docs).
pub fn driver_held() -> bool {
    STUCK_LOADS.load(Ordering::Acquire) > 0
}

/// How long an operation waits for a stuck module load to return before it is refused: a load
/// returns moments after the awaited value is signalled, so a thread that has just signalled is
/// not refused, while one that would signal only afterwards gets its error quickly.
pub const HELD_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

/// Waits up to [`HELD_GRACE`] for [`driver_held`] to clear; whether it did.
fn wait_unheld() -> bool {
    super::park::wait_until("a held driver", HELD_GRACE, || {
        Ok((!driver_held()).then_some(()))
    })
    .is_ok()
}

/// Whether a release that calls the driver must be handed to the crate's reclaimer instead of
/// running on this thread: inside a host function, or while a stuck module load holds the driver.
pub(crate) fn must_defer() -> bool {
    in_host_function() || (driver_held() && !RECLAIMER.with(Cell::get))
}

/// A module load timed out with the loader still inside the driver; [`load_unstuck`] when it
/// returns.
pub(crate) fn load_stuck() {
    STUCK_LOADS.fetch_add(1, Ordering::AcqRel);
}

/// The stuck load of [`load_stuck`] returned from the driver.
pub(crate) fn load_unstuck() {
    STUCK_LOADS.fetch_sub(1, Ordering::AcqRel);
}

/// One public operation in progress on this thread (see [`enter`]). Not `Send`: it lives on the
/// thread that entered.
#[must_use = "the operation's guard must live as long as the operation"]
pub struct Op {
    prev: Option<&'static str>,
    _span: tracing::span::EnteredSpan,
}

impl Drop for Op {
    fn drop(&mut self) {
        CURRENT_OP.with(|c| c.set(self.prev));
    }
}

/// Starts the public operation `op` (e.g. `"DeviceStream::copy_htod"`): refuses inside a host
/// function and behind a stuck module load, names the operation for errors and opens its span.
///
/// # Errors
///
/// [`Error::CalledFromHostFunc`] inside a host function; [`Error::DriverHeld`] while a timed-out
/// module load is still inside the driver.
#[inline]
pub fn enter(op: &'static str) -> Result<Op> {
    if in_host_function() {
        tracing::debug!(op, "operation refused inside a host function");
        return Err(Error::CalledFromHostFunc { op });
    }
    if driver_held() && !wait_unheld() {
        tracing::debug!(op, "operation refused behind a stuck module load");
        return Err(Error::DriverHeld { op });
    }
    let prev = CURRENT_OP.with(|c| c.replace(Some(op)));
    Ok(Op {
        prev,
        _span: tracing::trace_span!("op", name = op).entered(),
    })
}

/// The public operation running on this thread, if any.
pub(crate) fn current_op() -> Option<&'static str> {
    CURRENT_OP.with(Cell::get)
}

/// Makes one driver call: refuses inside a host function (naming the public operation in
/// progress, or `call` outside any), opens a `trace` span named `cu`, and turns the `CUresult`
/// into a [`Result`]. `f` receives the loaded driver.
///
/// # Errors
///
/// [`Error::CalledFromHostFunc`], [`Error::Load`] without a driver, [`Error::Driver`] when the
/// call fails.
#[inline]
pub fn call(call: &'static str, f: impl FnOnce(&'static Driver) -> CUresult) -> Result<()> {
    let d = prologue(call)?;
    let _span = tracing::trace_span!("cu", call).entered();
    let rc = in_driver(|| f(d))?;
    check(call, rc)
}

/// Runs one driver call, counted on the crate's own threads and refused once the process exits.
#[inline]
fn in_driver(f: impl FnOnce() -> CUresult) -> Result<CUresult> {
    CALLS.fetch_add(1, Ordering::Relaxed);
    if !CRATE_THREAD.with(Cell::get) {
        if SHUTDOWN.load(Ordering::Relaxed) {
            return Err(Error::Shutdown);
        }
        return Ok(f());
    }
    IN_DRIVER.fetch_add(1, Ordering::SeqCst);
    let rc = if SHUTDOWN.load(Ordering::SeqCst) {
        Err(Error::Shutdown)
    } else {
        Ok(f())
    };
    IN_DRIVER.fetch_sub(1, Ordering::SeqCst);
    rc
}

/// Like [`call`], but `CUDA_ERROR_NOT_READY` is `Ok(false)` and success `Ok(true)` (queries).
///
/// # Errors
///
/// As [`call`].
#[inline]
pub fn query(call: &'static str, f: impl FnOnce(&'static Driver) -> CUresult) -> Result<bool> {
    let d = prologue(call)?;
    let _span = tracing::trace_span!("cu", call).entered();
    match in_driver(|| f(d))? {
        CUresult::CUDA_ERROR_NOT_READY => Ok(false),
        rc => check(call, rc).map(|()| true),
    }
}

#[inline]
fn prologue(call: &'static str) -> Result<&'static Driver> {
    if in_host_function() {
        let op = current_op().unwrap_or(call);
        tracing::debug!(op, call, "driver call refused inside a host function");
        return Err(Error::CalledFromHostFunc { op });
    }
    ferrocuda_sys::driver().map_err(Error::Load)
}

#[inline]
fn check(call: &'static str, rc: CUresult) -> Result<()> {
    if rc == CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        let e = DriverError::new(call, rc);
        tracing::debug!(call, code = rc.0, name = e.name, "CUDA driver call failed");
        Err(e.into())
    }
}

/// Runs `f` (user code on a crate thread or in a driver callback) and contains a panic: the panic
/// is returned as its message, and a payload whose own `Drop` panics is leaked rather than allowed
/// to unwind. Nothing escapes, so a crate thread survives any user code, and nothing unwinds into
/// the driver.
pub(crate) fn contain<R>(f: impl FnOnce() -> R) -> std::result::Result<R, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Ok(r),
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            drop_payload(payload);
            Err(msg)
        }
    }
}

/// A user value (a closure and its captures) that a crate thread may drop: its drop runs under
/// [`contain`], so a panicking `Drop` is logged and the dropping thread goes on.
pub(crate) struct Contained<T>(Option<T>);

impl<T> Contained<T> {
    pub(crate) fn new(value: T) -> Self {
        Contained(Some(value))
    }
}

impl<T> std::ops::Deref for Contained<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // `None` only inside `drop`.
        self.0
            .as_ref()
            .expect("a contained value is present until dropped")
    }
}

impl<T> Drop for Contained<T> {
    fn drop(&mut self) {
        if let Some(v) = self.0.take()
            && let Err(msg) = contain(|| drop(v))
        {
            tracing::debug!(%msg, "dropping a user closure panicked");
        }
    }
}

/// Drops a panic payload; if its `Drop` panics in turn, that second payload is leaked.
pub(crate) fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    if let Err(again) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(payload))) {
        std::mem::forget(again);
    }
}

/// The text of a panic payload (`&str` and `String` payloads; others get a placeholder).
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_function_refusal_names_the_operation_in_progress() {
        let _scope = HostFuncScope::enter();
        assert!(matches!(
            enter("HostBuffer::new"),
            Err(Error::CalledFromHostFunc {
                op: "HostBuffer::new"
            })
        ));
        // A raw call outside any operation names the driver entry point.
        let r = call("cuCtxGetCurrent", |_| CUresult::CUDA_SUCCESS);
        assert!(
            matches!(
                r,
                Err(Error::CalledFromHostFunc {
                    op: "cuCtxGetCurrent"
                })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn nested_operations_restore_the_outer_name() {
        let outer = enter("outer").unwrap();
        {
            let _inner = enter("inner").unwrap();
            assert_eq!(current_op(), Some("inner"));
        }
        assert_eq!(current_op(), Some("outer"));
        drop(outer);
        assert_eq!(current_op(), None);
    }

    #[test]
    fn contain_survives_a_panic_whose_payload_panics_on_drop() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("the payload's drop panics too");
            }
        }
        let r: std::result::Result<(), String> = contain(|| std::panic::panic_any(Bomb));
        assert_eq!(r.unwrap_err(), "<non-string panic payload>");
        assert_eq!(contain(|| 7).unwrap(), 7);
        let r: std::result::Result<(), String> = contain(|| panic!("plain {}", 1));
        assert_eq!(r.unwrap_err(), "plain 1");
    }
}
