//! The one use path: how a GPU operation gets the address of what it touches.
//!
//! A stream operation (copy, memset, launch, wait, write, gate) or a graph node reaches the device
//! address of a buffer, a flag or a function only through [`take`], which
//!
//! 1. checks the resource's device against the target's ([`Error::DeviceMismatch`]; a device flag
//!    of a peer gets peer access enabled, or [`Error::Unsupported`]);
//! 2. records the use, so that the resource's release is fenced behind the stream
//!    ([`Resource::record_use`]: a device buffer used off its home stream is then freed only after
//!    every stream is past its uses; a host buffer's host access waits for the copy);
//! 3. applies the capture rule: when the target is a graph being built — a [`Graph`] node, or a
//!    stream the driver says is capturing (also one that joined another stream's capture through
//!    an event) — the graph takes a reference that keeps the resource alive until the graph and
//!    every executable of it are gone and their launches have finished ([`Keep`]); an operation
//!    that cannot be replayed safely is refused before anything is recorded
//!    ([`UnderCapture::Refuse`]).
//!
//! Addresses live in [`Addr`], whose value this module alone reads for GPU work: every other
//! module gets an address from [`take`] (through [`StreamOp::address`] or [`NodeUses`]), from
//! [`Addr::released`] when it frees the memory, or from [`Addr::shown`] for the public address
//! getters, which users need for raw driver calls and which the workspace's lints keep the sibling
//! crates from calling (`clippy.toml`).
//!
//! [`Graph`]: https://docs.rs/ferrocuda-graph

use crate::device::Device;
use crate::error::{Error, Result};
use crate::runtime::guard;
use crate::runtime::park::Ranked;
use crate::runtime::raw::{self, CUstream, CaptureState};
use crate::stream::StreamInner;
use std::any::Any;
use std::ffi::c_void;
use std::sync::Arc;

/// A device-visible address, readable for GPU work only through [`take`].
#[derive(Clone, Copy)]
pub(crate) struct Addr(u64);

impl Addr {
    pub(crate) const fn new(raw: u64) -> Addr {
        Addr(raw)
    }

    /// The address, for the code that frees the memory (and for nothing else).
    #[inline]
    pub(crate) fn released(&self) -> u64 {
        self.0
    }

    /// The address, for the public getters and `Debug` output (never for enqueued work).
    #[inline]
    pub(crate) fn shown(&self) -> u64 {
        self.0
    }
}

/// Something that keeps a resource alive when a graph owns it.
pub(crate) type Keep = Box<dyn Any + Send>;

/// Where a resource lives, which decides which devices may use it.
pub(crate) enum Placement<'a> {
    /// Memory or code of one device: only that device's streams and graphs.
    Device(&'a Device),
    /// Ordinary memory of one device that its peers reach through peer access.
    Peer(&'a Device),
    /// Pinned, portable, mapped host memory: every device.
    Host,
}

/// How an operation touches a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The GPU only reads it.
    Read,
    /// The GPU may write it.
    Write,
}

/// A resource a GPU operation can touch.
pub(crate) trait Resource {
    /// What it is, for errors (`"the device buffer"`).
    fn what(&self) -> &'static str;
    /// Where it lives.
    fn placement(&self) -> Placement<'_>;
    /// Its address (`None` for a function, which has a handle instead).
    fn addr(&self) -> Option<&Addr>;
    /// Records that work enqueued on `stream` from now on touches it with `access`. Called
    /// before the work is enqueued.
    fn record_use(&self, _stream: &Arc<StreamInner>, _access: Access) -> Result<()> {
        Ok(())
    }
    /// Called once for every use recorded on a stream: after the enqueue of the work (whether it
    /// succeeded or not), or when the operation is given up before it.
    fn enqueued(&self, _stream: &Arc<StreamInner>) {}
    /// Work on `device` (run now on a stream, or recorded into a graph) may write it: a flag
    /// remembers the devices that produce it, whose faults then fail its futures.
    fn written_on(&self, _device: &Device) {}
    /// Whether [`enqueued`](Self::enqueued) must be called after the enqueue.
    fn needs_enqueued(&self) -> bool {
        false
    }
    /// A value that keeps the resource alive while a graph owns it; `None` when the caller
    /// promised its lifetime (a flag reference built from an address).
    fn keep(&self) -> Option<Keep>;
}

/// What an operation does when the driver says its stream is capturing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnderCapture {
    /// The graph records it and takes ownership of everything it touches.
    Record,
    /// It cannot be replayed safely: refused with [`Error::NotAllowedUnderCapture`] and this reason.
    Refuse(&'static str),
}

/// Where the work goes.
enum Target<'a> {
    /// A stream that runs it now.
    Stream(&'a Arc<StreamInner>),
    /// A graph (built explicitly, or a capturing stream's) that owns what the work touches.
    Graph(&'a Device, &'a mut Vec<Keep>),
}

impl Target<'_> {
    fn device(&self) -> &Device {
        match self {
            Target::Stream(s) => &s.device,
            Target::Graph(d, _) => d,
        }
    }
}

/// The use path (see the module docs): checks, records and, for a graph, keeps; then yields the
/// address.
fn take(
    stream: Option<&Arc<StreamInner>>,
    mut target: Target<'_>,
    r: &dyn Resource,
    access: Access,
) -> Result<Option<u64>> {
    let device = target.device();
    match r.placement() {
        Placement::Device(d) => {
            if !d.same(device) {
                return Err(mismatch(r.what(), device, d));
            }
        }
        Placement::Peer(d) => device.ensure_peer_access(d)?,
        Placement::Host => {}
    }
    if let Some(s) = stream {
        r.record_use(s, access)?;
    }
    if access == Access::Write {
        r.written_on(device);
    }
    match &mut target {
        Target::Graph(_, keep) => keep.extend(r.keep()),
        Target::Stream(_) => {}
    }
    Ok(r.addr().map(|a| a.0))
}

pub(crate) fn mismatch(what: &'static str, expected: &Device, found: &Device) -> Error {
    Error::DeviceMismatch {
        what,
        expected: expected.ordinal(),
        found: found.ordinal(),
    }
}

// ---------------------------------------------------------------------------------------------
// Stream operations

/// One operation being enqueued on a stream: the only holder of the addresses it touches.
///
/// Built by [`StreamInner::begin`] (which enters the call guard and asks the driver whether the
/// stream captures), fed every resource through [`address`](Self::address), then consumed by
/// [`enqueue`](Self::enqueue), which hands a capture's references to its graph before making the
/// driver call.
pub(crate) struct StreamOp<'s, 'r> {
    stream: &'s Arc<StreamInner>,
    /// The graph the stream captures into, if it does.
    graph: Option<ferrocuda_sys::CUgraph>,
    keep: Vec<Keep>,
    /// Resources whose `enqueued` hook runs after the driver call.
    after: [Option<&'r dyn Resource>; 2],
    /// Keeps the capture state checked at the start valid until the enqueue.
    _shared: Ranked<std::sync::RwLockReadGuard<'s, ()>>,
    _op: guard::Op,
}

impl StreamInner {
    /// Starts operation `op` on this stream under `rule` (see [`StreamOp`]).
    ///
    /// # Errors
    ///
    /// The guard's errors ([`guard::enter`]); [`Error::NotAllowedUnderCapture`] when the stream
    /// captures and `rule` refuses; [`Error::Driver`] if the driver cannot say, or the capture was
    /// invalidated.
    pub(crate) fn begin<'r>(
        self: &Arc<Self>,
        op: &'static str,
        rule: UnderCapture,
    ) -> Result<StreamOp<'_, 'r>> {
        let guard = guard::enter(op)?;
        let shared = self.capture_shared();
        Ok(StreamOp {
            stream: self,
            graph: self.capture_graph(op, rule)?,
            keep: Vec::new(),
            after: [None, None],
            _shared: shared,
            _op: guard,
        })
    }

    /// The graph this stream captures into (`None`: not capturing), or the refusal of `rule`.
    pub(crate) fn capture_graph(
        &self,
        op: &'static str,
        rule: UnderCapture,
    ) -> Result<Option<ferrocuda_sys::CUgraph>> {
        // SAFETY: the stream is live.
        match unsafe { raw::stream_capture_state(self.raw) }? {
            CaptureState::None => Ok(None),
            CaptureState::Active(g) => match rule {
                UnderCapture::Record => Ok(Some(g)),
                UnderCapture::Refuse(why) => Err(Error::NotAllowedUnderCapture { op, why }),
            },
            CaptureState::Invalidated => Err(crate::error::DriverError::new(
                "cuStreamGetCaptureInfo_v3",
                ferrocuda_sys::CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED,
            )
            .into()),
        }
    }
}

impl<'r> StreamOp<'_, 'r> {
    /// The address of `r` for this operation, after the checks of the use path.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceMismatch`], [`Error::Unsupported`] (no peer access), or what recording the
    /// use returns.
    pub(crate) fn address(&mut self, r: &'r dyn Resource, access: Access) -> Result<u64> {
        let a = self.resolve(r, access)?;
        Ok(a.unwrap_or(0))
    }

    /// Checks `r` (a function) and keeps it alive for a capture; it has no address.
    ///
    /// # Errors
    ///
    /// As [`address`](Self::address).
    pub(crate) fn keep_alive(&mut self, r: &'r dyn Resource) -> Result<()> {
        self.resolve(r, Access::Read).map(drop)
    }

    fn resolve(&mut self, r: &'r dyn Resource, access: Access) -> Result<Option<u64>> {
        let target = match self.graph {
            Some(_) => Target::Graph(&self.stream.device, &mut self.keep),
            None => Target::Stream(self.stream),
        };
        // A capture records the work into a graph: nothing runs on the stream now, so the use is
        // the graph's (kept), not the stream's.
        let stream = self.graph.is_none().then_some(self.stream);
        let a = take(stream, target, r, access)?;
        if stream.is_some() && r.needs_enqueued() {
            match self.after.iter_mut().find(|s| s.is_none()) {
                Some(slot) => *slot = Some(r),
                // Invariant: no operation touches more than two host buffers.
                None => unreachable!("more than two resources need an after-enqueue hook"),
            }
        }
        Ok(a)
    }

    /// Makes the driver call `f` on the stream's handle, after handing a capture's references to
    /// its graph; then runs the resources' after-enqueue hooks.
    ///
    /// # Errors
    ///
    /// What `f` returns; [`Error::Driver`] if the graph refuses the references (nothing is
    /// enqueued then).
    pub(crate) fn enqueue<R>(mut self, f: impl FnOnce(CUstream) -> Result<R>) -> Result<R> {
        if let Some(g) = self.graph
            && !self.keep.is_empty()
        {
            // SAFETY: `g` is the graph the driver says the stream captures into, live until the
            // capture ends, which needs the stream's capture lock this operation holds.
            unsafe { hand_to_graph(g, std::mem::take(&mut self.keep)) }?;
        }
        let r = f(self.stream.raw);
        for h in std::mem::take(&mut self.after).iter().flatten() {
            h.enqueued(self.stream);
        }
        r
    }
}

impl Drop for StreamOp<'_, '_> {
    /// An operation given up after a resource recorded its use (a later resource refused, the
    /// context could not be bound) still runs the hooks: a host buffer's note is always followed
    /// by its record, so that its waits can settle.
    fn drop(&mut self) {
        for h in self.after.iter().flatten() {
            h.enqueued(self.stream);
        }
    }
}

/// The open collections of [`CaptureKeeps`] (`runtime/capture_sinks.rs`).
fn sinks() -> &'static crate::runtime::capture_sinks::Sinks<Keep> {
    static SINKS: std::sync::OnceLock<crate::runtime::capture_sinks::Sinks<Keep>> =
        std::sync::OnceLock::new();
    SINKS.get_or_init(crate::runtime::capture_sinks::Sinks::new)
}

/// Collects what the operations recorded into one capture keep alive, for an owner that keeps it
/// itself (ferrocuda-graph's `Graph::capture`; not part of the supported API): while it lives,
/// [`hand_to_graph`] gives that capture's keeps to it instead of making CUDA user objects. A
/// user object in a graph makes the driver track the completion of every launch of its
/// executables on its event thread: time on each launch, and tens of µs where the launching
/// thread runs on the CPU that takes the GPU's interrupts (docs/benchmarks.md). Whoever takes
/// the keeps ([`take`](Self::take)) must hold them until every launch of every executable of the
/// graph has finished.
#[doc(hidden)]
pub struct CaptureKeeps {
    graph: usize,
}

impl CaptureKeeps {
    /// Starts collecting for the capture `stream` is recording (call it right after
    /// [`DeviceStream::begin_capture`](crate::DeviceStream::begin_capture)).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] (`CUDA_ERROR_ILLEGAL_STATE`) if the stream is not capturing or its graph
    /// already has a collector, or the driver's error if it cannot say.
    pub fn collect(stream: &crate::DeviceStream) -> Result<CaptureKeeps> {
        let Some(g) = stream
            .inner
            .capture_graph("CaptureKeeps::collect", UnderCapture::Record)?
        else {
            return Err(illegal_state());
        };
        if !sinks().open(g as usize) {
            return Err(illegal_state());
        }
        Ok(CaptureKeeps { graph: g as usize })
    }

    /// Ends the collection once the capture has ended with graph `ended` (an operation recorded
    /// after this owns its resources by user object), and returns what the capture's operations
    /// keep alive. Empty if `ended` is not the collected graph: someone ended that capture before
    /// (the stream's own `end_capture`) and holds its raw graph, so what was collected stays alive
    /// for it (leaked).
    pub fn take(self, ended: ferrocuda_sys::CUgraph) -> Vec<Box<dyn Any + Send>> {
        let keeps = sinks().close(self.graph);
        if ended as usize == self.graph {
            keeps
        } else {
            leak(keeps);
            Vec::new()
        }
    }

    /// Ends the collection of a capture that ended with graph `ended`, which its owner discards:
    /// what was collected is released behind a fence (leaked if `ended` is not the collected
    /// graph, as in [`take`](Self::take)).
    pub fn discard(self, ended: ferrocuda_sys::CUgraph) {
        let keeps = sinks().close(self.graph);
        if ended as usize == self.graph {
            if !keeps.is_empty() {
                crate::runtime::reclaim::defer_drop(keeps);
            }
        } else {
            leak(keeps);
        }
    }
}

/// Keeps what a graph its collector does not own may use alive for the rest of the process.
fn leak(keeps: Vec<Keep>) {
    if !keeps.is_empty() {
        tracing::warn!(
            count = keeps.len(),
            "a capture ended outside its collector: what its operations used stays alive"
        );
        std::mem::forget(keeps);
    }
}

fn illegal_state() -> Error {
    crate::error::DriverError::new(
        "cuStreamGetCaptureInfo_v3",
        ferrocuda_sys::CUresult::CUDA_ERROR_ILLEGAL_STATE,
    )
    .into()
}

impl Drop for CaptureKeeps {
    /// Ends the collection if [`take`](Self::take) or [`discard`](Self::discard) did not: the
    /// capture did not end through its owner (invalidated, or ended by someone who may hold its
    /// graph), so what was collected stays alive (leaked).
    fn drop(&mut self) {
        leak(sinks().close(self.graph));
    }
}

/// Moves `keep` into graph `g`: to the graph's collector where its owner keeps what it uses
/// ([`CaptureKeeps`]), else as one user object, released through the reclaimer once the graph
/// and its executables are gone and their launches have finished (not part of the supported API).
///
/// # Errors
///
/// [`Error::Driver`] if the driver refuses; the values are released (fenced) then.
///
/// # Safety
///
/// `g` is a live graph (being built or captured).
#[doc(hidden)]
pub unsafe fn hand_to_graph(g: ferrocuda_sys::CUgraph, keep: Vec<Keep>) -> Result<()> {
    let Some(keep) = sinks().offer(g as usize, keep) else {
        return Ok(());
    };
    let data = Box::into_raw(Box::new(keep));
    // SAFETY: `release_keep` reclaims `data` exactly once, makes no CUDA call (it hands the values
    // to the reclaimer), and may run on any thread.
    let o = match unsafe { raw::user_object_create(data.cast(), release_keep) } {
        Ok(o) => o,
        Err(e) => {
            // SAFETY: no user object took `data`: this is its only owner.
            crate::runtime::reclaim::defer_drop(unsafe { Box::from_raw(data) });
            return Err(e);
        }
    };
    // SAFETY: `g` is the live graph the driver reported; we own `o`'s one reference.
    if let Err(e) = unsafe { raw::graph_retain_user_object_move(g, o) } {
        // SAFETY: the graph did not take our reference; releasing it runs `release_keep` once.
        let _ = unsafe { raw::user_object_release(o) };
        return Err(e);
    }
    Ok(())
}

/// The destructor of a graph's user object: the kept values go to the reclaimer, which drops
/// them once every stream is past the work enqueued so far.
///
/// # Safety
/// `p` is a `Box<Vec<Keep>>` leaked by [`hand_to_graph`]; called once.
unsafe extern "C" fn release_keep(p: *mut c_void) {
    // SAFETY: per the contract.
    let keep = unsafe { Box::from_raw(p.cast::<Vec<Keep>>()) };
    crate::runtime::reclaim::defer_drop(keep);
}

// ---------------------------------------------------------------------------------------------
// Graph nodes (for ferrocuda-graph)

/// The use path for the nodes of a graph being built explicitly (ferrocuda-graph's builder):
/// every resource a node touches is checked against the graph's device and kept alive by the
/// graph. Not part of the supported API.
#[doc(hidden)]
pub struct NodeUses {
    device: Device,
    keep: Vec<Keep>,
}

impl NodeUses {
    /// Uses for one node of a graph on `device`.
    pub fn new(device: &Device) -> NodeUses {
        NodeUses {
            device: device.clone(),
            keep: Vec::new(),
        }
    }

    fn take(&mut self, r: &dyn Resource) -> Result<Option<u64>> {
        take(
            None,
            Target::Graph(&self.device, &mut self.keep),
            r,
            Access::Write,
        )
    }

    /// A device buffer's address for the node.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceMismatch`] for a buffer of another device.
    pub fn buffer<T: bytemuck::Pod>(&mut self, b: &crate::DeviceBuffer<T>) -> Result<u64> {
        self.take(b).map(|a| a.unwrap_or(0))
    }

    /// A host flag's address for the node.
    ///
    /// # Errors
    ///
    /// None today (host flags are portable); kept fallible like the others.
    pub fn flag<'f>(&mut self, f: impl Into<crate::CompletionFlagRef<'f>>) -> Result<u64> {
        let f = f.into();
        self.take(&f).map(|a| a.unwrap_or(0))
    }

    /// A device flag's address for the node (peer access enabled where needed).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when the graph's device cannot reach the flag's.
    pub fn device_flag(&mut self, f: &crate::DeviceFlag) -> Result<u64> {
        self.take(f).map(|a| a.unwrap_or(0))
    }

    /// A function's handle for a kernel node (the graph keeps its module loaded).
    ///
    /// # Errors
    ///
    /// [`Error::DeviceMismatch`] for a function of another device.
    pub fn function(&mut self, f: &crate::Function) -> Result<ferrocuda_sys::CUfunction> {
        self.take(f)?;
        Ok(f.raw)
    }

    /// The kernel's parameter array (`void**`) with every resource argument resolved through the
    /// use path; valid while `args` is borrowed.
    ///
    /// # Errors
    ///
    /// As the others, and [`Error::InvalidArgument`] for more than
    /// [`MAX_KERNEL_PARAMS`](crate::MAX_KERNEL_PARAMS) parameters.
    pub fn launch_args(&mut self, args: &mut crate::LaunchArgs<'_>) -> Result<*mut *mut c_void> {
        args.resolve(|r| self.take(r).map(|a| a.unwrap_or(0)))
    }

    /// Something else the graph must keep alive (e.g. a kickoff's state).
    pub fn keep<T: Send + 'static>(&mut self, value: T) {
        self.keep.push(Box::new(value));
    }

    /// What the graph must own for the node's lifetime.
    pub fn into_keep(self) -> Vec<Box<dyn Any + Send>> {
        self.keep
    }
}

// ---------------------------------------------------------------------------------------------
// Stream operations of the sibling crates (NCCL calls, graph launches)

/// An operation that a sibling crate (ferrocuda-nccl, ferrocuda-graph) enqueues on a stream with
/// its own driver or library calls: it gets the stream's handle and the buffers' addresses only
/// from here, so the capture check holds until it is dropped, and every buffer's use is recorded.
/// Not part of the supported API.
#[doc(hidden)]
pub struct ExternalOp<'s> {
    op: StreamOp<'s, 'static>,
}

impl crate::DeviceStream {
    /// Starts an external operation `op` on this stream: refused with `why` if the stream
    /// captures a graph (`None`: recorded, the graph owns the buffers).
    ///
    /// # Errors
    ///
    /// As the crate's own operations ([`Error::NotAllowedUnderCapture`], the guard's errors).
    #[doc(hidden)]
    pub fn external_op(
        &self,
        op: &'static str,
        refuse: Option<&'static str>,
    ) -> Result<ExternalOp<'_>> {
        let rule = match refuse {
            Some(why) => UnderCapture::Refuse(why),
            None => UnderCapture::Record,
        };
        Ok(ExternalOp {
            op: self.inner.begin(op, rule)?,
        })
    }
}

impl ExternalOp<'_> {
    /// The address of `b` for this operation, its use recorded (see the module docs).
    ///
    /// # Errors
    ///
    /// [`Error::DeviceMismatch`] for a buffer of another device.
    pub fn buffer<T: bytemuck::Pod>(&mut self, b: &crate::DeviceBuffer<T>) -> Result<u64> {
        let target = match self.op.graph {
            Some(_) => Target::Graph(&self.op.stream.device, &mut self.op.keep),
            None => Target::Stream(self.op.stream),
        };
        let stream = self.op.graph.is_none().then_some(self.op.stream);
        // A device buffer needs no after-enqueue hook, so nothing borrowed outlives this call.
        take(stream, target, b, Access::Write).map(|a| a.unwrap_or(0))
    }

    /// The stream's handle, for the enqueue. Valid while `self` lives.
    pub fn raw(&self) -> CUstream {
        self.op.stream.raw
    }

    /// Ends the operation after its enqueue: a capture's references go to the graph.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the graph refuses them.
    pub fn finish(self) -> Result<()> {
        self.op.enqueue(|_| Ok(()))
    }
}
