//! [`CompletionFlag`] and [`CompletionFlagRef`]: 8 bytes of pinned host memory mapped into every
//! device, through which the host gates GPU work and the GPU tells the host it got somewhere.

use crate::device::{Device, DeviceInner};
use crate::error::{Error, Result};
use crate::resource::{Addr, Keep, Placement, Resource};
use crate::runtime::gates::{HostWord, WaitCondition, flag_outcome};
use crate::runtime::park::{self, Rank, Ranked};
use crate::runtime::pinned;
use crate::runtime::reclaim;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Bytes between two flags: one cache line each, so that a GPU polling one flag and a host
/// writing its neighbour do not share a line.
const SLOT_STRIDE: usize = 64;
/// Bytes of one pinned slab of flags.
const SLAB_BYTES: usize = 4096;

/// One 8-byte slot in a pinned, portable, device-mapped slab.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    host: NonNull<AtomicU64>,
    dev: Addr,
}

// SAFETY: the slot is pinned, portable, mapped host memory, which belongs to the process (never
// freed while it runs) and is accessed only through `AtomicU64`: moving the pointer between
// threads moves nothing thread-bound.
unsafe impl Send for Slot {}

/// Pinned memory for flags is allocated in slabs and never returned to the driver while the
/// process runs: `cuMemFreeHost` would block behind any stream that waits on a host value
/// (docs/deadlocks.md). A dropped flag's slot comes back here once the GPU is past every use.
struct Pool {
    free: Mutex<Vec<Slot>>,
    slabs: AtomicUsize,
}

fn pool() -> &'static Pool {
    static P: OnceLock<Pool> = OnceLock::new();
    P.get_or_init(|| Pool {
        free: Mutex::new(Vec::new()),
        slabs: AtomicUsize::new(0),
    })
}

/// Flags currently handed out (for leak checks).
static LIVE_FLAGS: AtomicUsize = AtomicUsize::new(0);

impl Pool {
    fn take(&self, device: &Arc<DeviceInner>) -> Result<Slot> {
        if let Some(s) = Ranked::lock(Rank::Leaf, || {
            self.free.lock().unwrap_or_else(|p| p.into_inner())
        })
        .pop()
        {
            return Ok(s);
        }
        let host = pinned::alloc_mapped(&device.rt, SLAB_BYTES)?;
        // SAFETY: `host` is mapped pinned memory just allocated under the current context.
        let dev = unsafe { pinned::device_address(host) }?;
        if dev != host as u64 {
            // Without unified addressing the device address differs per device; a portable flag
            // could not have one `device_ptr` for all of them. Keep the slab (freeing could block).
            return Err(Error::Unsupported {
                ordinal: device.ordinal,
                name: String::new(),
                what: "unified addressing (host and device addresses of mapped memory differ)",
            });
        }
        self.slabs.fetch_add(1, Ordering::Relaxed);
        let mut free = Ranked::lock(Rank::Leaf, || {
            self.free.lock().unwrap_or_else(|p| p.into_inner())
        });
        for i in (1..SLAB_BYTES / SLOT_STRIDE).rev() {
            let off = i * SLOT_STRIDE;
            free.push(Slot {
                // SAFETY: `off` is inside the slab and 8-byte aligned (the slab is page-aligned).
                host: unsafe { NonNull::new_unchecked(host.cast::<u8>().add(off).cast()) },
                dev: Addr::new(dev + off as u64),
            });
        }
        Ok(Slot {
            // SAFETY: the slab's first slot; `host` is non-null (the driver succeeded).
            host: unsafe { NonNull::new_unchecked(host.cast()) },
            dev: Addr::new(dev),
        })
    }

    fn give_back(&self, s: Slot) {
        Ranked::lock(Rank::Leaf, || {
            self.free.lock().unwrap_or_else(|p| p.into_inner())
        })
        .push(s);
    }
}

/// An 8-byte completion flag in pinned host memory mapped into the address space of every device.
///
/// A host thread signals a GPU stream (or the GPU the host) by writing a 64-bit value that both
/// see. Mirrors MAX's `max.driver.CompletionFlag`; pair it with
/// [`DeviceStream::wait_for_host_value`](crate::DeviceStream::wait_for_host_value) to gate GPU
/// work on a host-produced result "without a second stream or a blocking host callback".
///
/// ```no_run
/// use ferrocuda_driver::{CompletionFlag, Device};
/// # fn main() -> ferrocuda_driver::Result<()> {
/// let accel = Device::new(0)?;
/// let flag = CompletionFlag::new(&accel)?;
/// assert_eq!(flag.load(), 0); // initialized to zero
/// // actually use the flag's device pointer:
/// let _addr: u64 = flag.device_ptr();
/// # Ok(()) }
/// ```
///
/// # Protocol
///
/// * [`signal`](Self::signal) is a release store, [`load`](Self::load) an acquire load; the GPU's
///   `cuStreamWaitValue64` reads the same 8 bytes. Data written before `signal` is visible to GPU
///   work that the signal released.
/// * Prefer monotonically increasing values with [`WaitCondition::GreaterOrEqual`]: a replay, or a
///   waiter that arrives late, still passes.
/// * [`abort`](Self::abort) stores [`ABORTED`](Self::ABORTED) (`2^63 - 1`): every
///   greater-or-equal wait passes, host waits return [`Error::Aborted`]. It is the way out when the
///   producer failed. Equality waits are released only by their own value.
///
/// # Lifetime
///
/// `CompletionFlag` is a shared handle (clones refer to the same 8 bytes). When the last one drops,
/// the slot is recycled only after the GPU is past every operation enqueued on it so far, so
/// dropping a flag that a stream still waits on is safe. The pinned memory itself stays with the
/// crate's pool (freeing it could block behind a waiting stream).
#[derive(Clone)]
pub struct CompletionFlag {
    pub(crate) inner: Arc<FlagInner>,
}

pub(crate) struct FlagInner {
    slot: Slot,
    device: Device,
    /// Bit `d` set: work on device `d` (ordinals below 64) was enqueued that may write the flag. A
    /// fault of one of those devices, or of the flag's own, fails the flag's futures.
    producers: AtomicU64,
    /// How long its futures waited, for the waiter's predicted spin.
    history: crate::runtime::waiter::WaitHistory,
}

// SAFETY: the slot is process-wide pinned memory accessed only through `AtomicU64` (see `Slot`),
// so `&FlagInner` shares nothing but an atomic; `Device` is Send + Sync.
unsafe impl Send for FlagInner {}
// SAFETY: as above.
unsafe impl Sync for FlagInner {}

impl Drop for FlagInner {
    fn drop(&mut self) {
        let slot = self.slot;
        // No driver call here (this may run inside a host function or on a worker): the
        // reclaimer records the fence and returns the slot to the pool once it has passed.
        reclaim::defer(reclaim::Garbage::Callback(Box::new(move || {
            pool().give_back(slot);
            LIVE_FLAGS.fetch_sub(1, Ordering::AcqRel);
        })));
    }
}

impl CompletionFlag {
    /// The value [`abort`](Self::abort) stores: it releases every greater-or-equal wait.
    ///
    /// It is `i64::MAX`, not `u64::MAX`: the driver's greater-or-equal wait compares cyclically,
    /// `(flag - value) as i64 >= 0`, so `i64::MAX` passes for every epoch `value < 2^63` while
    /// `u64::MAX` would pass for none.
    pub const ABORTED: u64 = crate::runtime::gates::ABORTED;

    /// Allocates a flag, initialised to 0, visible to every device of the process.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if the device cannot map host memory or lacks unified addressing;
    /// [`Error::Driver`] if pinned memory cannot be allocated.
    pub fn new(device: &Device) -> Result<CompletionFlag> {
        let _op = crate::runtime::guard::enter("CompletionFlag::new")?;
        if !device.inner.can_map_host_memory {
            return Err(device.unsupported("mapping pinned host memory (completion flags)"));
        }
        if !device.inner.unified_addressing {
            return Err(device.unsupported("unified addressing (completion flags)"));
        }
        let slot = pool().take(&device.inner).map_err(|e| match e {
            Error::Unsupported { what, .. } => device.unsupported(what),
            e => e,
        })?;
        // SAFETY: the slot is valid pinned memory for the life of the process.
        unsafe { slot.host.as_ref() }.store(0, Ordering::Release);
        LIVE_FLAGS.fetch_add(1, Ordering::AcqRel);
        Ok(CompletionFlag {
            inner: Arc::new(FlagInner {
                slot,
                device: device.clone(),
                producers: AtomicU64::new(0),
                history: Default::default(),
            }),
        })
    }

    /// A non-owning, copyable view of this flag (what kernels and graph ops take). Named apart
    /// from [`AsRef::as_ref`], which it is not: it returns a view by value.
    pub fn as_flag_ref(&self) -> CompletionFlagRef<'_> {
        CompletionFlagRef {
            host: self.inner.slot.host,
            dev: self.inner.slot.dev,
            owner: Some(&self.inner),
            _flag: PhantomData,
        }
    }

    /// The device the flag was created for (any device can use it).
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// Acquire-ordered load of the current value.
    #[inline]
    pub fn load(&self) -> u64 {
        self.as_flag_ref().load()
    }

    /// Release-ordered store of `value`: GPU work waiting for it may start, and sees what this
    /// thread wrote before.
    ///
    /// Its main use is priming at setup (so the first graph replay's wait passes before any async
    /// kickoff ran); on the hot path, let the async host-function trampoline signal.
    #[inline]
    pub fn signal(&self, value: u64) {
        self.as_flag_ref().signal(value);
        // A future of this process may wait for it: restart the waiter's spin if it sleeps (one
        // atomic load when no future is pending).
        crate::runtime::waiter::kick();
    }

    /// Clears the flag to 0 with a relaxed store. Safe before any consumer has observed the address.
    #[inline]
    pub fn reset(&self) {
        self.as_flag_ref().reset()
    }

    /// Stores [`ABORTED`](Self::ABORTED), releasing every greater-or-equal waiter (GPU or host);
    /// host waits and [`wait_async`](Self::wait_async) futures (any condition) return
    /// [`Error::Aborted`].
    pub fn abort(&self) {
        self.signal(Self::ABORTED)
    }

    /// The device-visible 64-bit address of the 8-byte slot (the same on every device), for
    /// display and raw driver calls. The crate's own operations keep the flag alive while work
    /// uses it; work you enqueue with this address yourself must keep the flag alive itself.
    #[inline]
    pub fn device_ptr(&self) -> u64 {
        self.inner.slot.dev.shown()
    }

    /// Waits on the host until the flag satisfies `cond` for `value` (GPU → host, after
    /// [`write_host_value`](crate::DeviceStream::write_host_value)); returns the value seen.
    ///
    /// Spins for the first tens of microseconds (the GPU's write usually lands within a few), then
    /// sleeps with a growing pause.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] after `timeout`; [`Error::Aborted`] if the flag was aborted (unless
    /// `value` is itself `ABORTED`).
    pub fn wait(&self, cond: WaitCondition, value: u64, timeout: Duration) -> Result<u64> {
        self.as_flag_ref().wait(cond, value, timeout)
    }

    /// A future that resolves once the flag satisfies `cond` for `value`: the async form of
    /// [`wait`](Self::wait), for GPU → host signals
    /// ([`write_host_value`](crate::DeviceStream::write_host_value)) and for the async
    /// trampoline's completion (after
    /// [`enqueue_async_host_func`](crate::DeviceStream::enqueue_async_host_func)`(&flag, v, f)`,
    /// `flag.wait_async(WaitCondition::GreaterOrEqual, v)` resolves once `f` ran and signalled).
    ///
    /// ```no_run
    /// use ferrocuda_driver::{CompletionFlag, Device, WaitCondition};
    /// # async fn job() -> ferrocuda_driver::Result<()> {
    /// let device = Device::new(0)?;
    /// let stream = device.new_stream()?;
    /// let done = CompletionFlag::new(&device)?;
    /// // ... enqueue work ...
    /// stream.write_host_value(&done, 1)?;
    /// done.wait_async(WaitCondition::GreaterOrEqual, 1).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// The future is `'static` (it holds the flag) and checks the flag when first polled; if not
    /// there yet, the crate's waiter thread watches it (one load from pinned memory per check) and
    /// wakes the task, one pass over the pending checks after the GPU's write while it spins
    /// ([`waiter_spin`](crate::waiter_spin)). Cancel-safe: dropping it deregisters it, so
    /// `tokio::time::timeout` bounds a wait that may never be satisfied. Its output is the value
    /// seen, or [`Error::Aborted`] once the flag holds [`ABORTED`](Self::ABORTED) (unless that is
    /// the awaited value) — [`abort`](Self::abort) releases every such future. See docs/async.md.
    pub fn wait_async(&self, cond: WaitCondition, value: u64) -> crate::FlagWait {
        crate::FlagWait::new(crate::runtime::waiter::Cond::Flag {
            flag: self.inner.clone(),
            cond,
            value,
        })
    }

    pub(crate) fn inner(&self) -> &Arc<FlagInner> {
        &self.inner
    }

    /// Flags handed out and not yet returned to the pool (for leak checks).
    pub fn live_count() -> usize {
        LIVE_FLAGS.load(Ordering::Acquire)
    }

    /// Pinned 4 KiB slabs the flag pool holds (64 flags each); they are kept for reuse.
    pub fn pool_slabs() -> usize {
        pool().slabs.load(Ordering::Relaxed)
    }
}

/// The bit of device `ordinal` in a device mask (ordinals from 63 up share the last bit).
fn device_bit(ordinal: usize) -> u64 {
    1 << ordinal.min(63)
}

impl HostWord for FlagInner {
    fn devices(&self) -> u64 {
        device_bit(self.device.ordinal()) | self.producers.load(Ordering::Relaxed)
    }

    fn history(&self) -> &crate::runtime::waiter::WaitHistory {
        &self.history
    }

    fn load(&self) -> u64 {
        // SAFETY: the slot is valid pinned memory for the life of the process.
        unsafe { self.slot.host.as_ref() }.load(Ordering::Acquire)
    }

    fn signal_unless_aborted(&self, value: u64) {
        // SAFETY: the slot is valid pinned memory for the life of the process. Only the host writes the word with atomics (the GPU reads it or
        // stores to it), so a host compare-and-swap on pinned memory is sound; a GPU store racing
        // with it lands before or after, as a plain store would.
        let word = unsafe { self.slot.host.as_ref() };
        let mut cur = word.load(Ordering::Relaxed);
        while cur != crate::runtime::gates::ABORTED {
            match word.compare_exchange_weak(cur, value, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(seen) => cur = seen,
            }
        }
        crate::runtime::waiter::kick();
    }
}

impl std::fmt::Debug for CompletionFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionFlag")
            .field(
                "device_ptr",
                &format_args!("{:#x}", self.inner.slot.dev.shown()),
            )
            .field("value", &self.load())
            .finish()
    }
}

/// A non-owning, `Copy` handle to a completion flag's slot (mirrors Mojo's `CompletionFlag`).
///
/// Borrowed safely from a [`CompletionFlag`] (`flag.as_flag_ref()` or `(&flag).into()`), or built
/// unsafely from an address, e.g. one unpacked from a kernel or graph payload.
#[derive(Clone, Copy)]
pub struct CompletionFlagRef<'a> {
    host: NonNull<AtomicU64>,
    dev: Addr,
    /// The flag this borrows from (`None` when built from an address): what a graph keeps.
    owner: Option<&'a Arc<FlagInner>>,
    _flag: PhantomData<&'a AtomicU64>,
}

// SAFETY: a CompletionFlagRef is a shared reference to an AtomicU64 in pinned memory (and
// optionally to the `Arc<FlagInner>` that owns it, which is Sync): `&AtomicU64` is Send and Sync,
// and pinned memory is accessible from every thread of the process.
unsafe impl Send for CompletionFlagRef<'_> {}
// SAFETY: as above.
unsafe impl Sync for CompletionFlagRef<'_> {}

impl<'a> From<&'a CompletionFlag> for CompletionFlagRef<'a> {
    fn from(f: &'a CompletionFlag) -> Self {
        f.as_flag_ref()
    }
}

impl CompletionFlagRef<'_> {
    /// A handle to the 8-byte slot at `address`: its host address, which is also its device
    /// address (unified addressing).
    ///
    /// # Safety
    ///
    /// `address` is an 8-byte aligned slot of pinned host memory mapped into the devices that will
    /// use it (for example [`CompletionFlag::device_ptr`] of a live flag), and it stays allocated
    /// while this handle, and any GPU work enqueued with it, may use it.
    ///
    /// # Panics
    ///
    /// If `address` is 0 or not 8-byte aligned (a broken promise caught before it is used).
    pub unsafe fn from_address(address: u64) -> Self {
        assert!(
            address != 0 && address.is_multiple_of(8),
            "CompletionFlagRef::from_address({address:#x}): not an 8-byte aligned, non-null slot"
        );
        let host = NonNull::new(address as usize as *mut AtomicU64)
            // Invariant: checked non-zero just above.
            .expect("non-null address");
        CompletionFlagRef {
            host,
            dev: Addr::new(address),
            owner: None,
            _flag: PhantomData,
        }
    }

    #[inline]
    fn slot(&self) -> &AtomicU64 {
        // SAFETY: a safely built ref borrows a live flag; an unsafely built one is valid by the
        // caller's promise in `from_address`.
        unsafe { self.host.as_ref() }
    }

    /// Acquire-ordered load of the current value.
    #[inline]
    pub fn load(&self) -> u64 {
        self.slot().load(Ordering::Acquire)
    }

    /// Release-ordered store of `value`.
    #[inline]
    pub fn signal(&self, value: u64) {
        self.slot().store(value, Ordering::Release)
    }

    /// Relaxed store of 0.
    #[inline]
    pub fn reset(&self) {
        self.slot().store(0, Ordering::Relaxed)
    }

    /// The device-visible address of the slot, for display and raw driver calls (see
    /// [`CompletionFlag::device_ptr`]).
    #[inline]
    pub fn device_ptr(&self) -> u64 {
        self.dev.shown()
    }

    /// As [`CompletionFlag::wait`].
    ///
    /// # Errors
    ///
    /// As [`CompletionFlag::wait`].
    pub fn wait(&self, cond: WaitCondition, value: u64, timeout: Duration) -> Result<u64> {
        wait_host(|| self.load(), cond, value, timeout)
    }
}

impl Resource for CompletionFlagRef<'_> {
    fn what(&self) -> &'static str {
        "the completion flag"
    }

    fn placement(&self) -> Placement<'_> {
        // Pinned, portable and mapped: every device of the process reaches it.
        Placement::Host
    }

    fn addr(&self) -> Option<&Addr> {
        Some(&self.dev)
    }

    fn written_on(&self, device: &Device) {
        if let Some(o) = self.owner {
            o.producers
                .fetch_or(device_bit(device.ordinal()), Ordering::Relaxed);
        }
    }

    fn keep(&self) -> Option<Keep> {
        // A reference built from an address has no owner: its creator promised the lifetime.
        self.owner.map(|o| Box::new(o.clone()) as Keep)
    }
}

impl Resource for CompletionFlag {
    fn what(&self) -> &'static str {
        "the completion flag"
    }

    fn placement(&self) -> Placement<'_> {
        Placement::Host
    }

    fn addr(&self) -> Option<&Addr> {
        Some(&self.inner.slot.dev)
    }

    fn written_on(&self, device: &Device) {
        self.inner
            .producers
            .fetch_or(device_bit(device.ordinal()), Ordering::Relaxed);
    }

    fn keep(&self) -> Option<Keep> {
        Some(Box::new(self.inner.clone()))
    }
}

/// The host-side wait, over any `load` (so it can be tested without a GPU), following the
/// crate's one waiting policy (`runtime/park.rs`).
pub(crate) fn wait_host(
    load: impl Fn() -> u64,
    cond: WaitCondition,
    value: u64,
    timeout: Duration,
) -> Result<u64> {
    park::wait_until("CompletionFlag::wait", timeout, || {
        flag_outcome(load(), cond, value).transpose()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    proptest! {
        /// The comparison the GPU makes, on random epochs (below 2^62): equality is exact;
        /// greater-or-equal agrees with `>=` and is monotone (once it holds for v it holds for
        /// every later, larger value); the abort value releases every epoch.
        #[test]
        fn wait_condition_matches_the_drivers_comparison(cur in 0u64..1 << 62, val in 0u64..1 << 62, later in 0u64..1 << 62) {
            prop_assert_eq!(WaitCondition::Equal.holds(cur, val), cur == val);
            prop_assert_eq!(WaitCondition::GreaterOrEqual.holds(cur, val), cur >= val);
            if WaitCondition::GreaterOrEqual.holds(cur, val) {
                prop_assert!(WaitCondition::GreaterOrEqual.holds(cur + later, val));
            }
            prop_assert!(WaitCondition::GreaterOrEqual.holds(CompletionFlag::ABORTED, val));
        }

        /// Cyclic like the driver's: a value just past a wrap-around still counts as reached.
        #[test]
        fn greater_or_equal_is_cyclic(val in any::<u64>(), ahead in 0u64..1 << 62) {
            prop_assert!(WaitCondition::GreaterOrEqual.holds(val.wrapping_add(ahead), val));
            prop_assert!(!WaitCondition::GreaterOrEqual.holds(val.wrapping_sub(ahead + 1), val));
        }

        /// A producer thread signals increasing epochs; a host waiter for epoch k always returns a
        /// value >= k and never misses a signal, whatever the interleaving.
        #[test]
        fn host_wait_sees_monotone_epochs(steps in 1u64..200, target_frac in 0.0f64..1.0) {
            let cell = Arc::new(AtomicU64::new(0));
            let target = ((steps as f64 * target_frac) as u64).max(1);
            let producer = {
                let cell = cell.clone();
                std::thread::spawn(move || for e in 1..=steps { cell.store(e, Ordering::Release); })
            };
            let seen = wait_host(|| cell.load(Ordering::Acquire), WaitCondition::GreaterOrEqual, target, Duration::from_secs(10));
            producer.join().unwrap();
            let seen = seen.unwrap();
            prop_assert!(seen >= target && seen <= steps);
        }
    }

    #[test]
    fn host_wait_times_out_and_reports_abort() {
        let cell = AtomicU64::new(3);
        let e = wait_host(
            || cell.load(Ordering::Acquire),
            WaitCondition::Equal,
            4,
            Duration::from_millis(20),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        cell.store(CompletionFlag::ABORTED, Ordering::Release);
        let e = wait_host(
            || cell.load(Ordering::Acquire),
            WaitCondition::Equal,
            4,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Aborted), "{e}");
        // Also for a greater-or-equal wait, which the abort value satisfies (it releases the
        // GPU's waits): the host waiter learns of the abort.
        let e = wait_host(
            || cell.load(Ordering::Acquire),
            WaitCondition::GreaterOrEqual,
            4,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Aborted), "{e}");
        // Waiting for the abort value itself is not an abort.
        assert_eq!(
            wait_host(
                || cell.load(Ordering::Acquire),
                WaitCondition::Equal,
                CompletionFlag::ABORTED,
                Duration::from_secs(1)
            )
            .unwrap(),
            CompletionFlag::ABORTED
        );
    }

    #[test]
    #[should_panic(expected = "not an 8-byte aligned, non-null slot")]
    fn a_null_flag_address_is_refused_before_it_is_used() {
        // SAFETY: deliberately broken promise: the constructor must catch it.
        let _ = unsafe { CompletionFlagRef::from_address(0) };
    }

    #[test]
    #[should_panic(expected = "not an 8-byte aligned, non-null slot")]
    fn a_misaligned_flag_address_is_refused() {
        // SAFETY: as above.
        let _ = unsafe { CompletionFlagRef::from_address(0x1004) };
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the address getter is what is tested
    fn from_address_round_trips_through_a_local_slot() {
        let slot = AtomicU64::new(0);
        let addr = &slot as *const AtomicU64 as u64;
        // SAFETY: `slot` outlives `r` and is 8-byte aligned.
        let r = unsafe { CompletionFlagRef::from_address(addr) };
        r.signal(41);
        assert_eq!(slot.load(Ordering::Acquire), 41);
        assert_eq!(r.load(), 41);
        assert_eq!(r.device_ptr(), addr);
        r.reset();
        assert_eq!(r.load(), 0);
    }
}
