//! [`DeviceBuffer`] (device memory, stream-ordered) and [`HostBuffer`] (pinned host memory).

mod pending;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::resource::{Access, Addr, Keep, Placement, Resource, UnderCapture};
use crate::runtime::guard;
use crate::runtime::handles::RawEvent;
use crate::runtime::park::{self, Rank};
use crate::runtime::pinned::{self, HostPtr};
use crate::runtime::raw::{self, CUdeviceptr, CaptureState};
use crate::runtime::reclaim::{self, FencedStream, Garbage};
use crate::stream::{DeviceStream, StreamHandle, StreamInner};
use bytemuck::Pod;
use pending::{Pending, Waitable};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn byte_len<T>(len: usize) -> Result<usize> {
    len.checked_mul(size_of::<T>())
        .ok_or_else(|| Error::InvalidArgument(format!("{len} elements overflow")))
}

// ---------------------------------------------------------------------------------------------
// Device memory

/// One stream-ordered device allocation. Shared by its buffer and by graphs that use it; freed
/// when the last owner drops.
pub(crate) struct DevAlloc {
    addr: Addr,
    home: Arc<StreamHandle>,
    /// Set once work on another stream than `home` used the memory.
    foreign: AtomicBool,
}

impl Drop for DevAlloc {
    fn drop(&mut self) {
        let ptr = self.addr.released();
        if ptr == 0 {
            return;
        }
        if !guard::must_defer()
            && (!self.foreign.load(Ordering::Acquire)
                || reclaim::only_live_stream_is(&(self.home.0.clone() as Arc<dyn FencedStream>)))
        {
            // The home stream's capture lock (shared, never waited for: a drop does not block)
            // keeps a capture from beginning between the check and the free.
            let _rank = park::ranked_try(Rank::Capture);
            if let Ok(_shared) = self.home.capture.try_read()
                // SAFETY: the home stream is live (held by `home`).
                && matches!(unsafe { raw::stream_capture_state(self.home.raw) }, Ok(CaptureState::None))
            {
                // Every use was enqueued on the home stream, so a free ordered after it is safe.
                // SAFETY: `ptr` came from cuMemAllocAsync and is freed once.
                match unsafe { raw::mem_free_async(ptr, self.home.raw) } {
                    Ok(()) => return,
                    Err(err) => tracing::debug!(%err, "stream-ordered free failed; deferring"),
                }
            }
        }
        reclaim::defer(Garbage::DevicePtr {
            ctx: self.home.device.inner.rt.clone(),
            ptr,
        });
    }
}

/// `len` elements of `T` in device memory, allocated stream-ordered on a stream (its *home*).
///
/// Created by [`DeviceStream::alloc`], [`DeviceStream::alloc_zeroed`] or
/// [`DeviceStream::clone_htod`]. Dropping it never blocks and never frees memory that enqueued
/// work may still touch: the memory is freed with `cuMemFreeAsync` in its home stream's order when
/// only that stream used it (the common case, as cheap as the raw call), or once every stream is
/// past its last use otherwise. Every use through this crate (copies, memsets, launches, graph
/// nodes, NCCL) is recorded; work you enqueue yourself with the raw address must record its use
/// with [`record_use`](Self::record_use), which also returns the address.
///
/// ```no_run
/// use ferrocuda_driver::Device;
/// # fn main() -> ferrocuda_driver::Result<()> {
/// let stream = Device::new(0)?.default_stream()?;
/// let buf = stream.clone_htod(&[1.0f32, 2.0, 3.0])?;
/// let mut back = vec![0.0f32; 3];
/// stream.copy_dtoh(&buf, &mut back)?;
/// assert_eq!(back, [1.0, 2.0, 3.0]);
/// # Ok(()) }
/// ```
pub struct DeviceBuffer<T: Pod> {
    mem: Arc<DevAlloc>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> DeviceBuffer<T> {
    pub(crate) fn alloc(stream: &DeviceStream, len: usize) -> Result<Self> {
        let bytes = byte_len::<T>(len)?;
        let op = stream.inner.begin(
            "DeviceStream::alloc",
            UnderCapture::Refuse(
                "memory allocated under capture belongs to the graph's launches, not to a buffer: \
                 allocate before the capture begins",
            ),
        )?;
        let ptr = if bytes == 0 {
            0
        } else {
            stream.inner.bind()?;
            op.enqueue(|s| {
                // SAFETY: the stream is live and its context current.
                unsafe { raw::mem_alloc_async(bytes, s) }
            })?
        };
        Ok(DeviceBuffer {
            mem: Arc::new(DevAlloc {
                addr: Addr::new(ptr),
                home: stream.inner.clone(),
                foreign: AtomicBool::new(false),
            }),
            len,
            _t: PhantomData,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size in bytes.
    pub fn byte_len(&self) -> usize {
        self.len * size_of::<T>()
    }

    /// The device address of the first element (0 for an empty buffer), for display and raw
    /// driver calls. Work you enqueue with it yourself is not tracked: use
    /// [`record_use`](Self::record_use), which returns the same address and records the use.
    pub fn device_ptr(&self) -> CUdeviceptr {
        self.mem.addr.shown()
    }

    /// The device the memory is on.
    pub fn device(&self) -> &Device {
        &self.mem.home.device
    }

    /// The stream it was allocated on.
    pub fn home_stream(&self) -> DeviceStream {
        DeviceStream {
            inner: self.mem.home.clone(),
        }
    }

    /// Records that work you enqueue on `stream` yourself from now on (a raw launch, cuBLAS,
    /// NCCL...) uses the buffer, and returns its device address for that work: the buffer's memory
    /// is then freed only after `stream` is past that work. If `stream` captures a graph, the graph
    /// takes ownership of the memory instead (it stays allocated while the graph or an executable
    /// of it exists).
    ///
    /// # Errors
    ///
    /// [`Error::DeviceMismatch`] for a stream of another device; [`Error::Driver`] if the driver
    /// cannot say whether the stream captures.
    pub fn record_use(&self, stream: &DeviceStream) -> Result<CUdeviceptr> {
        let mut op = stream
            .inner
            .begin("DeviceBuffer::record_use", UnderCapture::Record)?;
        let a = op.address(self, Access::Write)?;
        op.enqueue(|_| Ok(()))?;
        Ok(a)
    }
}

impl<T: Pod> Resource for DeviceBuffer<T> {
    fn what(&self) -> &'static str {
        "the device buffer"
    }

    fn placement(&self) -> Placement<'_> {
        Placement::Device(&self.mem.home.device)
    }

    fn addr(&self) -> Option<&Addr> {
        Some(&self.mem.addr)
    }

    #[inline]
    fn record_use(&self, stream: &Arc<StreamInner>, _access: Access) -> Result<()> {
        if stream.id != self.mem.home.id && !self.mem.foreign.load(Ordering::Relaxed) {
            self.mem.foreign.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn keep(&self) -> Option<Keep> {
        Some(Box::new(self.mem.clone()))
    }
}

impl<T: Pod> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("ptr", &format_args!("{:#x}", self.mem.addr.shown()))
            .field("len", &self.len)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Pinned host memory

/// One pinned, portable, device-mapped host allocation (a block of the cache). Shared by its
/// buffer and by graphs and copies that use it; back to the cache, after a fence, when the last
/// owner drops.
pub(crate) struct HostAlloc {
    /// The address copies and kernels use (host and device addresses agree: unified addressing).
    addr: Addr,
    /// The same memory, for host access.
    host: NonNull<u8>,
    /// The block's size.
    bytes: usize,
}

// SAFETY: pinned host memory belongs to the process, not to a thread; the driver lets any thread
// copy from or to it (CUDA Driver API, `cuMemHostAlloc` with `CU_MEMHOSTALLOC_PORTABLE`).
// `HostAlloc` itself only hands it back to the cache (once, in `Drop`); host access goes through
// the owning `HostBuffer`, whose `T` decides whether that may cross threads.
unsafe impl Send for HostAlloc {}
// SAFETY: as above; `&HostAlloc` gives nothing but the addresses.
unsafe impl Sync for HostAlloc {}

impl HostAlloc {
    /// At least `bytes` bytes of pinned memory (a cached block, or a new one allocated under
    /// `device`'s context), zeroed if `zeroed`.
    pub(crate) fn new(device: &Device, bytes: usize, zeroed: bool) -> Result<Arc<HostAlloc>> {
        let (p, size) = pinned::take_block(&device.inner, bytes)?;
        if zeroed {
            // SAFETY: the block holds `size >= bytes` writable bytes, and no one else uses it.
            unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, bytes) };
        }
        Ok(Arc::new(HostAlloc {
            addr: Addr::new(p as u64),
            // SAFETY: the driver returned a non-null pointer on success; cached blocks came from it.
            host: unsafe { NonNull::new_unchecked(p.cast()) },
            bytes: size,
        }))
    }

    /// The host pointer, for host-side reads and writes by the owner.
    pub(crate) fn host_ptr(&self) -> *mut u8 {
        self.host.as_ptr()
    }
}

impl Drop for HostAlloc {
    fn drop(&mut self) {
        // Back to the cache once no copy still queued can touch it (a fence), never to the driver.
        let (ptr, size) = (HostPtr(self.host.as_ptr().cast()), self.bytes);
        reclaim::defer(Garbage::Callback(Box::new(move || {
            pinned::give_back_block(ptr, size);
        })));
    }
}

/// A pinned allocation used as the source or destination of one copy.
pub(crate) struct Staging(pub(crate) Arc<HostAlloc>);

impl Resource for Staging {
    fn what(&self) -> &'static str {
        "the staging buffer"
    }
    fn placement(&self) -> Placement<'_> {
        Placement::Host
    }
    fn addr(&self) -> Option<&Addr> {
        Some(&self.0.addr)
    }
    fn keep(&self) -> Option<Keep> {
        Some(Box::new(self.0.clone()))
    }
}

/// A host buffer's pending copies, on the crate's streams and events.
type PendingCopies = Pending<Arc<StreamInner>, Arc<RawEvent>>;

impl Waitable<Arc<StreamInner>, Arc<RawEvent>> {
    fn is_done(&self) -> Result<bool> {
        match self {
            // SAFETY: the event is live (owned by the Arc).
            Waitable::Event(e) => unsafe { raw::event_query(e.0) },
            // SAFETY: the stream is live (owned by the Arc).
            Waitable::Stream(s) => unsafe { raw::stream_query(s.raw) },
        }
    }

    fn block(&self) -> Result<()> {
        match self {
            // SAFETY: the event is live.
            Waitable::Event(e) => unsafe { raw::event_synchronize(e.0) },
            // SAFETY: the stream is live.
            Waitable::Stream(s) => unsafe { raw::stream_synchronize(s.raw) },
        }
    }
}

/// `len` elements of `T` in pinned (page-locked), portable, device-mapped host memory.
///
/// The fast path for host↔device copies ([`DeviceStream::copy_htod_async`],
/// [`DeviceStream::copy_dtoh_async`]). Host access goes through [`as_slice`](Self::as_slice) and
/// [`as_mut_slice`](Self::as_mut_slice), which first wait for the copies enqueued on it that could
/// conflict (copies into it for `as_slice`, every copy for `as_mut_slice`), so the host never reads
/// memory a DMA engine is writing; [`is_ready`](Self::is_ready) and
/// [`try_as_slice`](Self::try_as_slice) never block, [`synchronize_timeout`](Self::synchronize_timeout)
/// bounds the wait. No lock is held while waiting, so other threads keep enqueueing copies from
/// the buffer meanwhile. Dropping it never blocks: the memory goes back to the crate's pinned cache
/// once the GPU is past every copy.
///
/// `HostBuffer<T>` is `Send` when `T` is, and `Sync` when `T` is: a `Pod` type that carries a
/// `!Send` marker does not cross threads in a host buffer either.
///
/// ```compile_fail,E0277
/// # use ferrocuda_driver::HostBuffer;
/// #[derive(Clone, Copy)]
/// #[repr(transparent)]
/// struct Local(std::marker::PhantomData<std::rc::Rc<()>>);
/// // SAFETY: a zero-sized marker.
/// unsafe impl bytemuck::Zeroable for Local {}
/// // SAFETY: as above.
/// unsafe impl bytemuck::Pod for Local {}
/// fn send<T: Send>() {}
/// send::<HostBuffer<Local>>();
/// ```
///
/// ```
/// # use ferrocuda_driver::HostBuffer;
/// fn both<T: Send + Sync>() {}
/// both::<HostBuffer<f32>>();
/// ```
///
/// ```no_run
/// use ferrocuda_driver::{Device, HostBuffer};
/// # fn main() -> ferrocuda_driver::Result<()> {
/// let device = Device::new(0)?;
/// let stream = device.new_stream()?;
/// let src = HostBuffer::from_slice(&device, &[1u32, 2, 3, 4])?;
/// let mut dev = stream.alloc::<u32>(4)?;
/// stream.copy_htod_async(&src, &mut dev)?;
/// let mut dst = HostBuffer::<u32>::new(&device, 4)?;
/// stream.copy_dtoh_async(&dev, &mut dst)?;
/// assert_eq!(dst.as_slice()?, &[1, 2, 3, 4]); // waits for the copy
/// # Ok(()) }
/// ```
pub struct HostBuffer<T: Pod> {
    mem: Arc<HostAlloc>,
    len: usize,
    device: Device,
    /// The copies involving this buffer that host access waits for, by stream.
    pending: PendingCopies,
    _t: PhantomData<T>,
}

impl<T: Pod> HostBuffer<T> {
    /// `len` zeroed elements of pinned memory.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if pinned memory cannot be allocated.
    pub fn new(device: &Device, len: usize) -> Result<Self> {
        let _op = guard::enter("HostBuffer::new")?;
        let mem = HostAlloc::new(device, byte_len::<T>(len)?, true)?;
        Ok(HostBuffer {
            mem,
            len,
            device: device.clone(),
            pending: Pending::new(),
            _t: PhantomData,
        })
    }

    /// Pinned memory holding a copy of `data`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn from_slice(device: &Device, data: &[T]) -> Result<Self> {
        let mut b = Self::new(device, data.len())?;
        b.as_mut_slice()?.copy_from_slice(data);
        Ok(b)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device the memory was allocated under (every device can use it).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The address the GPU can use for this memory (zero-copy access from kernels), for display
    /// and raw driver calls: work you enqueue with it yourself is not tracked.
    pub fn device_ptr(&self) -> CUdeviceptr {
        self.mem.addr.shown()
    }

    /// Waits for the copies `writes_only` selects, up to `limit`.
    fn wait(&self, op: &'static str, writes_only: bool, limit: Option<Duration>) -> Result<()> {
        let _op = guard::enter(op)?;
        let waits = self.pending.snapshot(writes_only);
        if waits.is_empty() {
            return Ok(());
        }
        match limit {
            None => {
                for w in &waits {
                    w.on.block()?;
                }
            }
            Some(limit) => {
                let start = Instant::now();
                for w in &waits {
                    let left = limit.saturating_sub(start.elapsed());
                    crate::event::poll_until(op, left, || w.on.is_done()).map_err(|e| match e {
                        Error::Timeout { what, .. } => Error::Timeout {
                            what,
                            timeout: limit,
                        },
                        e => e,
                    })?;
                }
            }
        }
        self.pending.clear(&waits);
        Ok(())
    }

    fn ready(&self, op: &'static str, writes_only: bool) -> Result<bool> {
        let _op = guard::enter(op)?;
        let waits = self.pending.snapshot(writes_only);
        for w in &waits {
            if !w.on.is_done()? {
                return Ok(false);
            }
        }
        self.pending.clear(&waits);
        Ok(true)
    }

    /// Waits until every copy enqueued on this buffer has run (as long as it takes).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if a copy failed; [`Error::CalledFromHostFunc`] inside a host function.
    pub fn synchronize(&self) -> Result<()> {
        self.wait("HostBuffer::synchronize", false, None)
    }

    /// Like [`synchronize`](Self::synchronize) but gives up after `timeout`, also while other
    /// threads wait on the same buffer.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when a copy has not run in time; as `synchronize`.
    pub fn synchronize_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait("HostBuffer::synchronize_timeout", false, Some(timeout))
    }

    /// Whether every copy enqueued on this buffer has run (never blocks).
    ///
    /// # Errors
    ///
    /// As [`synchronize`](Self::synchronize).
    pub fn is_ready(&self) -> Result<bool> {
        self.ready("HostBuffer::is_ready", false)
    }

    /// The elements, after waiting for the copies enqueued into the buffer (device to host).
    ///
    /// # Errors
    ///
    /// As [`synchronize`](Self::synchronize).
    pub fn as_slice(&self) -> Result<&[T]> {
        self.wait("HostBuffer::as_slice", true, None)?;
        // SAFETY: no copy into the buffer is pending, and none can be enqueued while the borrow
        // lives (copies into it need `&mut self`); copies out of it only read. The memory holds
        // `len` initialised `T` (zeroed at allocation; `T: Pod` makes any bytes valid).
        Ok(unsafe { std::slice::from_raw_parts(self.mem.host_ptr().cast(), self.len) })
    }

    /// The elements, if no copy into the buffer is pending (never blocks): `Ok(None)` otherwise.
    ///
    /// # Errors
    ///
    /// As [`synchronize`](Self::synchronize).
    pub fn try_as_slice(&self) -> Result<Option<&[T]>> {
        if !self.ready("HostBuffer::try_as_slice", true)? {
            return Ok(None);
        }
        // SAFETY: as in `as_slice`.
        Ok(Some(unsafe {
            std::slice::from_raw_parts(self.mem.host_ptr().cast(), self.len)
        }))
    }

    /// The elements, mutably, after waiting for every copy enqueued on the buffer.
    ///
    /// # Errors
    ///
    /// As [`synchronize`](Self::synchronize).
    pub fn as_mut_slice(&mut self) -> Result<&mut [T]> {
        self.wait("HostBuffer::as_mut_slice", false, None)?;
        // SAFETY: as in `as_slice`, and `&mut self` excludes every other access and every new copy.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.mem.host_ptr().cast(), self.len) })
    }

    /// The elements, mutably, if no copy of the buffer is pending (never blocks): `Ok(None)`
    /// otherwise.
    ///
    /// # Errors
    ///
    /// As [`synchronize`](Self::synchronize).
    pub fn try_as_mut_slice(&mut self) -> Result<Option<&mut [T]>> {
        if !self.ready("HostBuffer::try_as_mut_slice", false)? {
            return Ok(None);
        }
        // SAFETY: as in `as_mut_slice`.
        Ok(Some(unsafe {
            std::slice::from_raw_parts_mut(self.mem.host_ptr().cast(), self.len)
        }))
    }
}

impl<T: Pod> Resource for HostBuffer<T> {
    fn what(&self) -> &'static str {
        "the host buffer"
    }

    fn placement(&self) -> Placement<'_> {
        Placement::Host
    }

    fn addr(&self) -> Option<&Addr> {
        Some(&self.mem.addr)
    }

    /// Notes the copy before it is enqueued: whatever happens next, host access waits for it
    /// (on the event recorded after it, or on the whole stream if that record fails).
    fn record_use(&self, stream: &Arc<StreamInner>, access: Access) -> Result<()> {
        self.pending.note(stream.id, access == Access::Write, || {
            Ok((
                stream.clone(),
                Arc::new(RawEvent::new_untimed(&stream.device.inner)?),
            ))
        })
    }

    fn needs_enqueued(&self) -> bool {
        true
    }

    fn enqueued(&self, stream: &Arc<StreamInner>) {
        self.pending.enqueued(stream.id, |e| {
            // SAFETY: event and stream are live and of one context.
            unsafe { raw::event_record(e.0, stream.raw) }.is_ok()
        });
    }

    fn keep(&self) -> Option<Keep> {
        Some(Box::new(self.mem.clone()))
    }
}

impl<T: Pod> std::fmt::Debug for HostBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBuffer")
            .field("ptr", &format_args!("{:#x}", self.mem.addr.shown()))
            .field("len", &self.len)
            .finish()
    }
}
