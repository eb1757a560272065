//! [`DeviceFlag`]: 8 bytes of one GPU's memory through which GPUs gate each other without a host
//! round trip.

use crate::device::Device;
use crate::error::Result;
use crate::resource::{Addr, Keep, Placement, Resource};
use crate::runtime::guard;
use crate::runtime::park::{Rank, Ranked};
use crate::runtime::raw::{self, CUdeviceptr};
use crate::runtime::reclaim::{self, Garbage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Device flags handed out and not yet returned to the pool (for leak checks).
static LIVE_DEVICE_FLAGS: AtomicUsize = AtomicUsize::new(0);
/// Device memory slabs the pool holds.
static SLABS: AtomicUsize = AtomicUsize::new(0);
/// Bytes between two flags: one cache line each, so that a poller of one flag and a writer of its
/// neighbour do not share a line.
const SLOT_STRIDE: u64 = 64;
/// Bytes of one slab (`cuMemAlloc` hands out at least this much anyway).
const SLAB_BYTES: u64 = 4096;

/// Free slots by device ordinal. Slabs are never freed while the process runs: `cuMemFree` does
/// not return while any stream waits on a value (docs/deadlocks.md), so a slot of a dropped flag
/// comes back here, after a fence, instead.
fn pool() -> &'static Mutex<HashMap<usize, Vec<CUdeviceptr>>> {
    static P: OnceLock<Mutex<HashMap<usize, Vec<CUdeviceptr>>>> = OnceLock::new();
    P.get_or_init(Default::default)
}

fn take_slot(device: &Device) -> Result<CUdeviceptr> {
    let ordinal = device.ordinal();
    if let Some(p) = Ranked::lock(Rank::Leaf, || {
        pool().lock().unwrap_or_else(|p| p.into_inner())
    })
    .get_mut(&ordinal)
    .and_then(Vec::pop)
    {
        return Ok(p);
    }
    device.inner.bind_checked()?;
    // SAFETY: the device's context is current.
    let base = unsafe { raw::mem_alloc(SLAB_BYTES as usize) }?;
    SLABS.fetch_add(1, Ordering::Relaxed);
    let mut pool = Ranked::lock(Rank::Leaf, || {
        pool().lock().unwrap_or_else(|p| p.into_inner())
    });
    pool.entry(ordinal)
        .or_default()
        .extend((1..SLAB_BYTES / SLOT_STRIDE).map(|i| base + i * SLOT_STRIDE));
    Ok(base)
}

/// An 8-byte flag in the memory of one device (its *home*), for GPU → GPU gating.
///
/// A stream of any device writes it ([`DeviceStream::write_value`](crate::DeviceStream::write_value),
/// `cuStreamWriteValue64`) and a stream of any device waits on it
/// ([`DeviceStream::wait_value`](crate::DeviceStream::wait_value), by the driver's wait or
/// the polling gate). A [`CompletionFlag`](crate::CompletionFlag) does the same through pinned
/// host memory; a device flag keeps the signal on the GPUs' own link (NVLink or PCIe peer to peer).
/// Over NVLink a relay through a device flag beats one through pinned host memory, and a polling
/// gate on the waiting side is faster still (measured figures: `docs/hardware-facts.md` in the repository, "Several GPUs").
/// See `docs/multi-gpu.md`.
///
/// ```no_run
/// use ferrocuda_driver::{CompletionFlag, Device, DeviceFlag, GateStrategy, WaitCondition};
/// # fn main() -> ferrocuda_driver::Result<()> {
/// let (gpu0, gpu1) = (Device::new(0)?, Device::new(1)?);
/// gpu0.enable_peer_access(&gpu1)?; // before any wait is enqueued
/// let (s0, s1) = (gpu0.new_stream()?, gpu1.new_stream()?);
/// let relay = DeviceFlag::new(&gpu1)?; // in GPU1's memory
/// let host = CompletionFlag::new(&gpu0)?;
/// s0.wait_for_host_value_ge(&host, 1)?;
/// // ... GPU0's work ...
/// s0.write_value(&relay, 1)?; // GPU0 writes GPU1's memory
/// s1.wait_value(&relay, 1, WaitCondition::GreaterOrEqual, GateStrategy::DriverWait)?;
/// // ... GPU1's work, after GPU0's ...
/// host.signal(1);
/// s1.synchronize()?;
/// # Ok(()) }
/// ```
///
/// # Peer access
///
/// A stream of another device than the home reaches the flag through peer access, which the crate
/// enables on first use ([`Device::enable_peer_access`]; [`Error::Unsupported`](crate::Error::Unsupported)
/// where the hardware says no). Enable it yourself before enqueueing waits: whether
/// `cuCtxEnablePeerAccess` returns while a stream waits on a value has not been checked.
///
/// # Lifetime
///
/// A shared handle (clones are the same 8 bytes). The memory is ordinary `cuMemAlloc` memory (pool
/// memory from `cuMemAllocAsync` is not reachable by peers through peer access), in 4 KiB slabs of
/// 64 flags, one per cache line, kept by the crate for reuse (`cuMemFree` blocks behind a waiting
/// stream; docs/deadlocks.md). When the last handle drops, the slot returns to the pool once every
/// stream of every device is past the work enqueued so far.
#[derive(Clone)]
pub struct DeviceFlag {
    inner: Arc<DeviceFlagInner>,
}

struct DeviceFlagInner {
    ptr: Addr,
    device: Device,
}

impl Drop for DeviceFlagInner {
    fn drop(&mut self) {
        // No driver call here (this may run inside a host function): the slot returns to the
        // pool once every stream of every device is past the work enqueued so far.
        let (ordinal, ptr) = (self.device.ordinal(), self.ptr.released());
        reclaim::defer(Garbage::Callback(Box::new(move || {
            Ranked::lock(Rank::Leaf, || {
                pool().lock().unwrap_or_else(|p| p.into_inner())
            })
            .entry(ordinal)
            .or_default()
            .push(ptr);
            LIVE_DEVICE_FLAGS.fetch_sub(1, Ordering::AcqRel);
        })));
    }
}

impl DeviceFlag {
    /// 8 bytes of `device`'s memory, zeroed before this returns.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`](crate::Error::Driver) if memory cannot be allocated or cleared.
    pub fn new(device: &Device) -> Result<DeviceFlag> {
        let _op = guard::enter("DeviceFlag::new")?;
        let ptr = take_slot(device)?;
        LIVE_DEVICE_FLAGS.fetch_add(1, Ordering::AcqRel);
        // From here on the drop returns the slot.
        let flag = DeviceFlag {
            inner: Arc::new(DeviceFlagInner {
                ptr: Addr::new(ptr),
                device: device.clone(),
            }),
        };
        // Zeroed on the crate's own stream, which never waits on a value, so the synchronize
        // returns as soon as the memset ran. The memset acts on the current context: the device's
        // (a pooled slot may be handed out while another device's context is current).
        let s = device.inner.reclaim_stream()?;
        device.inner.bind_checked()?;
        // SAFETY: `ptr` holds 8 bytes of this device's memory, not yet handed to anyone; the
        // stream is live.
        unsafe { raw::memset_d8_async(ptr, 0, 8, s) }?;
        // SAFETY: the stream is live.
        unsafe { raw::stream_synchronize(s) }?;
        Ok(flag)
    }

    /// The device whose memory holds the flag.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// The flag's device address (unified addressing: the same for every device that has peer
    /// access to the home device), for display and raw driver calls. The crate's own operations
    /// keep the flag alive while work uses it; pass the flag itself as a kernel argument.
    pub fn device_ptr(&self) -> u64 {
        self.inner.ptr.shown()
    }

    /// The current value, read with a copy on the crate's own stream of the home device (for
    /// tests and diagnostics; the GPU may change it at any time).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`](crate::Error::Driver) if the copy fails.
    pub fn read(&self) -> Result<u64> {
        let _op = guard::enter("DeviceFlag::read")?;
        let s = self.inner.device.inner.reclaim_stream()?;
        self.inner.device.inner.bind_checked()?;
        let mut v = 0u64;
        // SAFETY: `v` is 8 writable bytes, not read until the synchronize below returned; the flag
        // is live (borrowed). This reads the crate's own slot for the host, not for GPU work.
        unsafe { raw::memcpy_dtoh_async((&raw mut v).cast(), self.inner.ptr.shown(), 8, s) }?;
        // SAFETY: the stream is live.
        unsafe { raw::stream_synchronize(s) }?;
        Ok(v)
    }

    /// Device flags handed out and not yet returned to the pool (for leak checks).
    pub fn live_count() -> usize {
        LIVE_DEVICE_FLAGS.load(Ordering::Acquire)
    }

    /// Device-memory slabs of 4 KiB (64 flags each) the pool holds; they are kept for reuse.
    pub fn pool_slabs() -> usize {
        SLABS.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for DeviceFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceFlag")
            .field("device", &self.inner.device.ordinal())
            .field("device_ptr", &format_args!("{:#x}", self.inner.ptr.shown()))
            .finish()
    }
}

impl Resource for DeviceFlag {
    fn what(&self) -> &'static str {
        "the device flag"
    }

    fn placement(&self) -> Placement<'_> {
        // Ordinary device memory: its own device, and peers with peer access.
        Placement::Peer(&self.inner.device)
    }

    fn addr(&self) -> Option<&Addr> {
        Some(&self.inner.ptr)
    }

    fn keep(&self) -> Option<Keep> {
        Some(Box::new(self.inner.clone()))
    }
}
