//! [`DeviceBuffer`] (device memory, stream-ordered) and [`HostBuffer`] (pinned host memory).

use crate::device::Device;
use crate::error::{Error, Result};
use crate::event::RawEvent;
use crate::raw::{self, CUdeviceptr};
use crate::reclaim::{self, Garbage, HostPtr};
use crate::stream::{DeviceStream, StreamInner};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bytes of pinned host memory the crate holds (buffers and flag slabs), for leak checks.
pub(crate) static PINNED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes of pinned host memory this crate currently holds (host buffers not yet released, and
/// the completion-flag pool's slabs).
pub fn pinned_bytes() -> usize {
    PINNED_BYTES.load(Ordering::Acquire)
}

/// `len` elements of `T` in device memory, allocated stream-ordered on a stream (its *home*).
///
/// Created by [`DeviceStream::alloc`], [`DeviceStream::alloc_zeroed`] or
/// [`DeviceStream::clone_htod`]. Dropping it never blocks: the memory is freed with
/// `cuMemFreeAsync` in its home stream's order when only that stream used it (the common case,
/// as cheap as the raw call), or once every stream is past its last use otherwise, so no kernel
/// or copy can see freed memory. Uses are tracked through this crate's copies and through
/// [`LaunchArgs::arg`](crate::LaunchArgs::arg); an address passed to a kernel as a plain integer
/// ([`device_ptr`](Self::device_ptr)) is not tracked.
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
    pub(crate) ptr: CUdeviceptr,
    len: usize,
    home: Arc<StreamInner>,
    /// Set once work on another stream than `home` used the buffer (through this crate's API).
    foreign: AtomicBool,
    _t: PhantomData<T>,
}

impl<T: Pod> DeviceBuffer<T> {
    pub(crate) fn alloc(stream: &DeviceStream, len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| Error::InvalidArgument(format!("{len} elements overflow")))?;
        let ptr = if bytes == 0 {
            0
        } else {
            stream.inner.device.inner.bind()?;
            // SAFETY: the stream is live and its context current.
            unsafe { raw::mem_alloc_async(bytes, stream.inner.raw) }?
        };
        Ok(DeviceBuffer {
            ptr,
            len,
            home: stream.inner.clone(),
            foreign: AtomicBool::new(false),
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

    /// The device address of the first element (0 for an empty buffer).
    pub fn device_ptr(&self) -> CUdeviceptr {
        self.ptr
    }

    /// The device the memory is on.
    pub fn device(&self) -> &Device {
        &self.home.device
    }

    /// The stream it was allocated on.
    pub fn home_stream(&self) -> DeviceStream {
        DeviceStream {
            inner: self.home.clone(),
        }
    }

    /// Records that work enqueued on `stream` up to now uses the buffer through a library this
    /// crate does not wrap (NCCL, cuBLAS, a raw launch with [`device_ptr`](Self::device_ptr)):
    /// when that stream is not the home stream, the drop then frees only after a fence past every
    /// stream's work, instead of in the home stream's order.
    pub fn record_use(&self, stream: &DeviceStream) {
        self.note_use(&stream.inner);
    }

    pub(crate) fn home_and_marker(&self) -> (&Arc<StreamInner>, &AtomicBool) {
        (&self.home, &self.foreign)
    }

    /// Records that work on `stream` uses the buffer: a use off the home stream makes the drop
    /// fence every stream instead of freeing in the home stream's order.
    #[inline]
    pub(crate) fn note_use(&self, stream: &StreamInner) {
        mark_foreign(&self.home, &self.foreign, stream);
    }
}

#[inline]
pub(crate) fn mark_foreign(home: &Arc<StreamInner>, foreign: &AtomicBool, stream: &StreamInner) {
    if !std::ptr::eq(Arc::as_ptr(home), stream) && !foreign.load(Ordering::Relaxed) {
        foreign.store(true, Ordering::Release);
    }
}

impl<T: Pod> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        if self.ptr == 0 {
            return;
        }
        let (ptr, device) = (self.ptr, self.home.device.inner.clone());
        if !raw::in_host_func()
            && (!self.foreign.load(Ordering::Acquire) || reclaim::only_live_stream_is(&self.home))
        {
            // Every use was enqueued on the home stream, so a free ordered after it is safe.
            // SAFETY: `ptr` came from cuMemAllocAsync and is freed once.
            match unsafe { raw::mem_free_async(ptr, self.home.raw) } {
                Ok(()) => return,
                Err(err) => tracing::debug!(%err, "stream-ordered free failed; deferring"),
            }
        }
        reclaim::defer(Garbage::DevicePtr { device, ptr });
    }
}

impl<T: Pod> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("ptr", &format_args!("{:#x}", self.ptr))
            .field("len", &self.len)
            .finish()
    }
}

/// `len` elements of `T` in pinned (page-locked), portable, device-mapped host memory.
///
/// The fast path for host↔device copies ([`DeviceStream::copy_htod_async`],
/// [`DeviceStream::copy_dtoh_async`]). Host access goes through [`as_slice`](Self::as_slice) and
/// [`as_mut_slice`](Self::as_mut_slice), which first wait for the copies enqueued on it, so the
/// host never reads memory a DMA engine is writing. Dropping it never blocks: the memory is freed
/// by the crate's reclaimer once the GPU is past every copy.
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
    ptr: NonNull<T>,
    len: usize,
    device: Device,
    /// One event per stream that has copies involving this buffer, recorded after the last one.
    pending: Mutex<Vec<(usize, RawEvent)>>,
}

// SAFETY: the buffer owns its pinned memory; T: Pod is Send + Sync; the event list is behind a mutex.
unsafe impl<T: Pod> Send for HostBuffer<T> {}
// SAFETY: shared access only reads the memory (after waiting for DMA) or locks `pending`.
unsafe impl<T: Pod> Sync for HostBuffer<T> {}

impl<T: Pod> HostBuffer<T> {
    /// `len` zeroed elements of pinned memory.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if pinned memory cannot be allocated.
    pub fn new(device: &Device, len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| Error::InvalidArgument(format!("{len} elements overflow")))?;
        device.inner.bind_checked()?;
        let flags =
            ferrocuda_sys::CU_MEMHOSTALLOC_PORTABLE | ferrocuda_sys::CU_MEMHOSTALLOC_DEVICEMAP;
        // SAFETY: the device's context is current. A zero-byte request still gets a real block.
        let p = unsafe { raw::mem_host_alloc(bytes.max(1), flags) }?;
        PINNED_BYTES.fetch_add(bytes.max(1), Ordering::AcqRel);
        // SAFETY: the allocation holds `bytes` writable bytes; zero bytes are a valid T (Pod).
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, bytes) };
        Ok(HostBuffer {
            // SAFETY: the driver returned a non-null pointer on success.
            ptr: unsafe { NonNull::new_unchecked(p.cast()) },
            len,
            device: device.clone(),
            pending: Mutex::new(Vec::new()),
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

    /// The address the GPU can use for this memory (zero-copy access from kernels).
    pub fn device_ptr(&self) -> CUdeviceptr {
        self.ptr.as_ptr() as CUdeviceptr
    }

    /// Waits until every copy enqueued on this buffer has run (as long as it takes).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if a copy failed.
    pub fn synchronize(&self) -> Result<()> {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (_, e) in p.iter() {
            // SAFETY: the event is live.
            unsafe { raw::event_synchronize(e.0) }?;
        }
        p.clear();
        Ok(())
    }

    /// Like [`synchronize`](Self::synchronize) but gives up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when a copy has not run in time.
    pub fn synchronize_timeout(&self, timeout: Duration) -> Result<()> {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        crate::event::poll_until("HostBuffer::synchronize_timeout", timeout, || {
            p.iter().try_fold(true, |all, (_, e)| {
                // SAFETY: the events are live (owned by `p`).
                let done = unsafe { raw::event_query(e.0) }?;
                Ok(all && done)
            })
        })?;
        p.clear();
        Ok(())
    }

    /// The elements, after waiting for the copies enqueued on the buffer.
    ///
    /// # Errors
    ///
    /// As [`synchronize`](Self::synchronize).
    pub fn as_slice(&self) -> Result<&[T]> {
        self.synchronize()?;
        // SAFETY: no copy is pending, so nothing writes the memory while the borrow lives (new
        // copies into it need `&mut self`).
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) })
    }

    /// The elements, mutably, after waiting for the copies enqueued on the buffer.
    ///
    /// # Errors
    ///
    /// As [`synchronize`](Self::synchronize).
    pub fn as_mut_slice(&mut self) -> Result<&mut [T]> {
        self.synchronize()?;
        // SAFETY: as in `as_slice`, and `&mut self` excludes every other access.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) })
    }

    pub(crate) fn raw_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// Records that `stream` has a copy involving this buffer enqueued up to now.
    pub(crate) fn note_copy(&self, stream: &DeviceStream) -> Result<()> {
        let key = Arc::as_ptr(&stream.inner) as usize;
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let idx = match p.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                p.push((key, RawEvent::new_untimed(&stream.inner.device)?));
                p.len() - 1
            }
        };
        // SAFETY: the event and the stream are live and of the same context.
        unsafe { raw::event_record(p[idx].1.0, stream.inner.raw) }
    }
}

impl<T: Pod> Drop for HostBuffer<T> {
    fn drop(&mut self) {
        // cuMemFreeHost blocks while any stream waits on a host value: always deferred.
        reclaim::defer(Garbage::HostAlloc {
            device: self.device.inner.clone(),
            ptr: HostPtr(self.ptr.as_ptr().cast()),
            bytes: (self.len * size_of::<T>()).max(1),
        });
    }
}

impl<T: Pod> std::fmt::Debug for HostBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBuffer")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}
