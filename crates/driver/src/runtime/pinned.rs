//! Mapped pinned host memory: how the crate allocates it, caches it and counts it.
//!
//! Every pinned allocation of the crate is portable and device-mapped (`cuMemHostAlloc` with
//! `CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP`) and is never returned to the driver
//! while the process runs. The reason is `cuMemFreeHost`: it waits until the GPU has finished the
//! work queued so far — a kernel or a wait on a host value included, on any stream — and holds
//! back other threads' driver calls while it waits (seen on an H200: a fused gate kernel waiting
//! for the host kept the crate's reclaimer inside `cuMemFreeHost`, and the thread that was to
//! signal then blocked in `cuEventCreate`; docs/deadlocks.md). So:
//!
//! * host buffers and staged copies take blocks of a power of two bytes (at least a page) from a
//!   cache ([`take_block`]); a released block goes back to it after a fence ([`give_back_block`]),
//!   for the next buffer or copy. PyTorch's pinned-memory allocator caches for the same reason;
//! * the flag pool's slabs and the kickoff ring are allocated once ([`alloc_mapped`]) and kept.

use super::context::Context;
use super::park::{Rank, Ranked};
use super::raw;
use crate::error::Result;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Bytes of pinned host memory in use (buffers and staging not yet released, flag slabs, the
/// kickoff ring), for leak checks.
static IN_USE: AtomicUsize = AtomicUsize::new(0);
/// Bytes of pinned memory held in the cache, free for reuse.
static CACHED: AtomicUsize = AtomicUsize::new(0);

/// A raw pointer to pinned memory, movable between threads (the cache's blocks).
pub(crate) struct HostPtr(pub(crate) *mut c_void);
// SAFETY: pinned host memory belongs to the process, not to a thread; a `HostPtr` is owned by
// one holder at a time (the cache or one allocation), which alone uses it.
unsafe impl Send for HostPtr {}

/// Bytes of pinned host memory this crate has in use: host buffers and staged copies not yet
/// released (in blocks of a power of two bytes), the completion-flag pool's slabs and the kickoff
/// ring. Released blocks move to the cache ([`pinned_cached_bytes`]).
pub fn pinned_bytes() -> usize {
    IN_USE.load(Ordering::Acquire)
}

/// Bytes of pinned memory the crate holds in its cache, free for reuse by the next host buffer
/// or staged copy (never returned to the driver while the process runs: see `docs/deadlocks.md`).
pub fn pinned_cached_bytes() -> usize {
    CACHED.load(Ordering::Acquire)
}

/// `bytes` of new pinned, portable, device-mapped memory under `ctx`, counted as in use and
/// never freed. Returns the host pointer (unified addressing: the device address is the same).
pub(crate) fn alloc_mapped(ctx: &Context, bytes: usize) -> Result<*mut c_void> {
    ctx.bind_checked()?;
    let flags = ferrocuda_sys::CU_MEMHOSTALLOC_PORTABLE | ferrocuda_sys::CU_MEMHOSTALLOC_DEVICEMAP;
    // SAFETY: the context is current.
    let p = unsafe { raw::mem_host_alloc(bytes, flags) }?;
    IN_USE.fetch_add(bytes, Ordering::AcqRel);
    Ok(p)
}

/// The device address of memory from [`alloc_mapped`] or [`take_block`].
///
/// # Safety
///
/// `host` must be mapped pinned memory of the context current on this thread.
pub(crate) unsafe fn device_address(host: *mut c_void) -> Result<u64> {
    // SAFETY: the caller's contract.
    unsafe { raw::mem_host_get_device_pointer(host) }
}

fn cache() -> &'static Mutex<HashMap<usize, Vec<HostPtr>>> {
    static C: OnceLock<Mutex<HashMap<usize, Vec<HostPtr>>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The block size that serves `bytes`.
fn block_size(bytes: usize) -> usize {
    bytes.max(4096).next_power_of_two()
}

/// A block of at least `bytes` (a cached one, or a new one allocated under `ctx`), counted as in
/// use: returns its host pointer and its size.
pub(crate) fn take_block(ctx: &Context, bytes: usize) -> Result<(*mut c_void, usize)> {
    let size = block_size(bytes);
    let cached = Ranked::lock(Rank::Leaf, || {
        cache().lock().unwrap_or_else(|p| p.into_inner())
    })
    .get_mut(&size)
    .and_then(Vec::pop);
    match cached {
        Some(p) => {
            CACHED.fetch_sub(size, Ordering::AcqRel);
            IN_USE.fetch_add(size, Ordering::AcqRel);
            Ok((p.0, size))
        }
        None => alloc_mapped(ctx, size).map(|p| (p, size)),
    }
}

/// Returns a block of `size` bytes from [`take_block`] to the cache. Call it only once the GPU
/// is past every use of the block (behind a fence).
pub(crate) fn give_back_block(ptr: HostPtr, size: usize) {
    IN_USE.fetch_sub(size, Ordering::AcqRel);
    CACHED.fetch_add(size, Ordering::AcqRel);
    Ranked::lock(Rank::Leaf, || {
        cache().lock().unwrap_or_else(|p| p.into_inner())
    })
    .entry(size)
    .or_default()
    .push(ptr);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_powers_of_two_of_at_least_a_page() {
        assert_eq!(block_size(0), 4096);
        assert_eq!(block_size(4096), 4096);
        assert_eq!(block_size(4097), 8192);
        assert_eq!(block_size(1 << 20), 1 << 20);
        assert_eq!(block_size((1 << 20) + 1), 1 << 21);
    }
}
