//! Memory operations of [`DeviceStream`]: allocation, copies and memsets.

use super::DeviceStream;
use crate::error::{Error, Result};
use crate::memory::{DeviceBuffer, HostAlloc, HostBuffer, Staging};
use crate::resource::{Access, UnderCapture};
use crate::runtime::raw;
use bytemuck::Pod;
use std::time::Duration;

/// Why a copy that borrows host memory only for the call cannot be captured.
const BORROWED_HOST: &str = "the host slice is borrowed only for this call, and a replay would \
     touch it after that: copy through a HostBuffer (copy_htod_async), or copy outside the capture";

fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            actual,
        })
    }
}

impl DeviceStream {
    /// `len` uninitialised-on-the-GPU elements, allocated stream-ordered (`cuMemAllocAsync`):
    /// usable by work enqueued on this stream after this call. (The contents are whatever the
    /// memory held; `T: Pod` makes any bytes a valid `T`.)
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] when device memory runs out; [`Error::NotAllowedUnderCapture`] while the
    /// stream captures a graph.
    pub fn alloc<T: Pod>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        DeviceBuffer::alloc(self, len)
    }

    /// `len` zeroed elements, allocated and cleared on this stream.
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc).
    pub fn alloc_zeroed<T: Pod>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        let mut b = self.alloc(len)?;
        self.memset_zero(&mut b)?;
        Ok(b)
    }

    /// A device copy of `data` (the host data may be reused as soon as this returns).
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc).
    pub fn clone_htod<T: Pod>(&self, data: &[T]) -> Result<DeviceBuffer<T>> {
        let mut b = self.alloc(data.len())?;
        self.copy_htod(data, &mut b)?;
        Ok(b)
    }

    /// Copies host memory to the device, in stream order. `src` may be reused as soon as this
    /// returns, and the call never waits for the GPU: the data is first copied into a pinned
    /// staging buffer of the crate's, from which the DMA runs when the stream gets there (the
    /// driver's own copy from pageable memory may wait for the stream, and one from pinned memory
    /// would read `src` only then). For large or repeated uploads, copy from a [`HostBuffer`]
    /// with [`copy_htod_async`](Self::copy_htod_async), which skips the extra host copy.
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`], [`Error::DeviceMismatch`], [`Error::NotAllowedUnderCapture`],
    /// [`Error::Driver`].
    pub fn copy_htod<T: Pod>(&self, src: &[T], dst: &mut DeviceBuffer<T>) -> Result<()> {
        // Declared before the operation, which borrows it until it ends.
        let staging_slot: Option<Staging>;
        let mut op = self.inner.begin(
            "DeviceStream::copy_htod",
            UnderCapture::Refuse(BORROWED_HOST),
        )?;
        check_len("copy_htod", dst.len(), src.len())?;
        let d = op.address(dst, Access::Write)?;
        let bytes = size_of_val(src);
        if bytes == 0 {
            return Ok(());
        }
        // After the capture check: allocating pinned memory is not allowed on a capturing thread.
        staging_slot = Some(Staging(HostAlloc::new(self.device(), bytes, false)?));
        let Some(staging) = &staging_slot else {
            unreachable!("just set")
        };
        // SAFETY: the staging block holds at least `bytes` bytes, `src` as many; they are distinct.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr().cast::<u8>(), staging.0.host_ptr(), bytes)
        };
        let s = op.address(staging, Access::Read)? as *const std::ffi::c_void;
        self.inner.bind()?;
        // SAFETY: `dst` holds `bytes` bytes and stays allocated until the GPU is past the copy;
        // the staging memory is pinned (the call returns at once) and goes back to the crate's
        // cache only after a fence past this copy.
        op.enqueue(|stream| unsafe { raw::memcpy_htod_async(d, s, bytes, stream) })
    }

    /// Copies device memory into host memory and waits until the copy (and everything before it
    /// on this stream) has completed.
    ///
    /// Waits as long as it takes, like [`synchronize`](Self::synchronize);
    /// [`copy_dtoh_timeout`](Self::copy_dtoh_timeout) gives up instead. The data comes through a
    /// pinned staging buffer of the crate's (see [`copy_htod`](Self::copy_htod)).
    ///
    /// # Errors
    ///
    /// As [`copy_htod`](Self::copy_htod), plus [`Error::HostFuncPanicked`] as in `synchronize`.
    pub fn copy_dtoh<T: Pod>(&self, src: &DeviceBuffer<T>, dst: &mut [T]) -> Result<()> {
        self.copy_dtoh_within("DeviceStream::copy_dtoh", src, dst, None)
    }

    /// Copies device memory into host memory, giving up after `timeout` (the GPU time the copy
    /// waits behind earlier work of the stream included). `dst` is written only when the copy has
    /// completed in time: the data goes through a pinned staging buffer of the crate's, so a copy
    /// that is still queued when the time runs out never writes `dst` later.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] (then `dst` is unchanged); as [`copy_dtoh`](Self::copy_dtoh).
    pub fn copy_dtoh_timeout<T: Pod>(
        &self,
        src: &DeviceBuffer<T>,
        dst: &mut [T],
        timeout: Duration,
    ) -> Result<()> {
        self.copy_dtoh_within("DeviceStream::copy_dtoh_timeout", src, dst, Some(timeout))
    }

    fn copy_dtoh_within<T: Pod>(
        &self,
        name: &'static str,
        src: &DeviceBuffer<T>,
        dst: &mut [T],
        timeout: Option<Duration>,
    ) -> Result<()> {
        // Declared before the operation, which borrows it until it ends.
        let staging_slot: Option<Staging>;
        let mut op = self
            .inner
            .begin(name, UnderCapture::Refuse(BORROWED_HOST))?;
        check_len(name, src.len(), dst.len())?;
        let bytes = size_of_val(dst);
        // After the capture check: allocating pinned memory is not allowed on a capturing thread.
        staging_slot = Some(Staging(HostAlloc::new(self.device(), bytes, false)?));
        let Some(staging) = &staging_slot else {
            unreachable!("just set")
        };
        let done = crate::runtime::handles::RawEvent::new_untimed(&self.device().inner)?;
        let s = op.address(src, Access::Read)?;
        let d = op.address(staging, Access::Write)? as *mut std::ffi::c_void;
        self.inner.bind()?;
        op.enqueue(|stream| {
            if bytes > 0 {
                // SAFETY: the staging memory is pinned (the call returns at once), holds `bytes`
                // bytes and is freed only after a fence past this copy; `src` holds as many.
                unsafe { raw::memcpy_dtoh_async(d, s, bytes, stream) }?;
            }
            // SAFETY: event and stream are live and of one context.
            unsafe { raw::event_record(done.0, stream) }
        })?;
        match timeout {
            // SAFETY: the event is live.
            None => unsafe { raw::event_synchronize(done.0) }?,
            Some(t) => crate::event::poll_until(name, t, || {
                // SAFETY: the event is live.
                unsafe { raw::event_query(done.0) }
            })?,
        }
        // SAFETY: the copy has completed; the staging memory holds `bytes` bytes, `dst` as many.
        unsafe {
            std::ptr::copy_nonoverlapping(
                staging.0.host_ptr(),
                dst.as_mut_ptr().cast::<u8>(),
                bytes,
            )
        };
        self.check_panics()
    }

    /// Copies device memory to device memory, in stream order.
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`], [`Error::DeviceMismatch`], [`Error::Driver`].
    pub fn copy_dtod<T: Pod>(
        &self,
        src: &DeviceBuffer<T>,
        dst: &mut DeviceBuffer<T>,
    ) -> Result<()> {
        let mut op = self
            .inner
            .begin("DeviceStream::copy_dtod", UnderCapture::Record)?;
        check_len("copy_dtod", dst.len(), src.len())?;
        let s = op.address(src, Access::Read)?;
        let d = op.address(dst, Access::Write)?;
        if src.is_empty() {
            return Ok(());
        }
        self.inner.bind()?;
        let bytes = src.byte_len();
        // SAFETY: both buffers hold `bytes` bytes and stay allocated until the GPU is past the
        // copy (their uses are recorded, or the capturing graph owns them).
        op.enqueue(|stream| unsafe { raw::memcpy_dtod_async(d, s, bytes, stream) })
    }

    /// Copies pinned host memory to the device, asynchronously. Mutable host access to `src` waits
    /// for it. Under capture the graph owns `src`'s memory, and every replay reads what it holds
    /// then.
    ///
    /// # Errors
    ///
    /// As [`copy_htod`](Self::copy_htod).
    pub fn copy_htod_async<T: Pod>(
        &self,
        src: &HostBuffer<T>,
        dst: &mut DeviceBuffer<T>,
    ) -> Result<()> {
        let mut op = self
            .inner
            .begin("DeviceStream::copy_htod_async", UnderCapture::Record)?;
        check_len("copy_htod_async", dst.len(), src.len())?;
        let d = op.address(dst, Access::Write)?;
        let s = op.address(src, Access::Read)? as *const std::ffi::c_void;
        if src.is_empty() {
            return op.enqueue(|_| Ok(()));
        }
        self.inner.bind()?;
        let bytes = dst.byte_len();
        // SAFETY: both hold `bytes` bytes; `src` is pinned, its mutable host access waits for the
        // event the use path records after this copy, and its free is fenced.
        op.enqueue(|stream| unsafe { raw::memcpy_htod_async(d, s, bytes, stream) })
    }

    /// Copies device memory into pinned host memory, asynchronously. Host access to `dst` waits
    /// for it.
    ///
    /// # Errors
    ///
    /// As [`copy_htod`](Self::copy_htod); [`Error::NotAllowedUnderCapture`] while the stream
    /// captures (a replay would write host memory the host may be reading).
    pub fn copy_dtoh_async<T: Pod>(
        &self,
        src: &DeviceBuffer<T>,
        dst: &mut HostBuffer<T>,
    ) -> Result<()> {
        let mut op = self.inner.begin(
            "DeviceStream::copy_dtoh_async",
            UnderCapture::Refuse(
                "every replay would write host memory that the host may be reading: copy into a \
                 DeviceBuffer in the graph, and to the host outside it",
            ),
        )?;
        check_len("copy_dtoh_async", src.len(), dst.len())?;
        let s = op.address(src, Access::Read)?;
        let d = op.address(dst, Access::Write)? as *mut std::ffi::c_void;
        if src.is_empty() {
            return op.enqueue(|_| Ok(()));
        }
        self.inner.bind()?;
        let bytes = src.byte_len();
        // SAFETY: both hold `bytes` bytes; every host access to `dst` first waits for the event
        // the use path records after this copy; its free is fenced.
        op.enqueue(|stream| unsafe { raw::memcpy_dtoh_async(d, s, bytes, stream) })
    }

    /// Sets every byte of `buf` to zero, in stream order.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceMismatch`], [`Error::Driver`].
    pub fn memset_zero<T: Pod>(&self, buf: &mut DeviceBuffer<T>) -> Result<()> {
        let mut op = self
            .inner
            .begin("DeviceStream::memset_zero", UnderCapture::Record)?;
        let d = op.address(buf, Access::Write)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.inner.bind()?;
        let bytes = buf.byte_len();
        // SAFETY: the buffer holds `bytes` bytes and stays allocated until the GPU is past this.
        op.enqueue(|stream| unsafe { raw::memset_d8_async(d, 0, bytes, stream) })
    }

    /// Sets every 32-bit word of `buf` to `value`, in stream order.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] unless `T` is 4 bytes wide; [`Error::DeviceMismatch`],
    /// [`Error::Driver`].
    pub fn memset_u32<T: Pod>(&self, buf: &mut DeviceBuffer<T>, value: u32) -> Result<()> {
        let mut op = self
            .inner
            .begin("DeviceStream::memset_u32", UnderCapture::Record)?;
        if size_of::<T>() != 4 {
            return Err(Error::InvalidArgument(format!(
                "memset_u32 needs 4-byte elements, not {}",
                size_of::<T>()
            )));
        }
        let d = op.address(buf, Access::Write)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.inner.bind()?;
        let n = buf.len();
        // SAFETY: the buffer holds `n` 4-byte words (cuMemAllocAsync aligns) and stays allocated
        // until the GPU is past this.
        op.enqueue(|stream| unsafe { raw::memset_d32_async(d, value, n, stream) })
    }
}
