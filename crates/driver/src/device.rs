//! [`Device`]: an accelerator and its primary context.

use crate::error::{Error, Result};
use crate::runtime::context::Context;
use crate::runtime::gates::{self, GateKernel};
use crate::runtime::park::{self, Rank};
use crate::runtime::raw::{self, CUdevice_attribute};
use crate::stream::DeviceStream;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// One CUDA device (an accelerator) with its retained primary context.
///
/// `Device` is a cheap handle: clones, and every `Device::new` of the same ordinal, share one
/// process-wide state. The crate makes the device's primary context current on whatever thread
/// needs it, so users never push or pop contexts.
///
/// The primary context is retained once per device and kept for the life of the process, as the
/// CUDA runtime does: releasing it does not return while any stream waits on a host value that
/// nobody will signal (docs/deadlocks.md), and dropping a handle must never block.
///
/// ```no_run
/// use ferrocuda_driver::Device;
/// # fn main() -> ferrocuda_driver::Result<()> {
/// let device = Device::new(0)?; // MAX: `Accelerator()`
/// println!("{} (sm_{}{}), {} GiB", device.name(), device.compute_capability().0,
///          device.compute_capability().1, device.total_memory() >> 30);
/// let stream = device.new_stream()?;
/// stream.synchronize()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Device {
    pub(crate) inner: Arc<DeviceInner>,
}

pub(crate) struct DeviceInner {
    /// The retained primary context (the runtime side's view of the device).
    pub(crate) rt: Arc<Context>,
    name: String,
    compute_capability: (u32, u32),
    total_memory: usize,
    pub(crate) can_map_host_memory: bool,
    pub(crate) unified_addressing: bool,
    /// Bit `p` set: peer access from this device to device `p` is enabled (ordinals below 64).
    peers: AtomicU64,
    default_stream: OnceLock<DeviceStream>,
    /// The crate's own kernels (polling gate, relay, GPU-write kickoff), loaded when the device
    /// is opened: before any wait can exist, since loading code blocks behind a waiting stream
    /// (docs/deadlocks.md). Set once they loaded, or once the driver refused them for good; a load
    /// that only timed out leaves it unset, and the next use tries again.
    gates: OnceLock<std::result::Result<GateKernels, String>>,
}

/// The crate's gate kernels ([`GateKernel`]), loaded on one device.
pub(crate) struct GateKernels {
    /// `ferrocuda_gate_poll`: the polling gate.
    pub(crate) poll: crate::module::Function,
    /// `ferrocuda_kick`: the GPU-write kickoff of graph async nodes.
    pub(crate) kick: crate::module::Function,
    /// `ferrocuda_gate_relay`: the polling relay.
    pub(crate) relay: crate::module::Function,
    /// The gated device loop's kernels (`loop.fatbin`), or why they are not there (a device the
    /// fatbin has no SASS for, a driver without conditional nodes).
    pub(crate) loops: std::result::Result<crate::device_loop::LoopKernels, String>,
}

impl std::ops::Deref for DeviceInner {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.rt
    }
}

fn table() -> &'static [OnceLock<Arc<DeviceInner>>] {
    static TABLE: OnceLock<Vec<OnceLock<Arc<DeviceInner>>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let n = raw::init().and_then(|()| raw::device_count()).unwrap_or(0);
        (0..n).map(|_| OnceLock::new()).collect()
    })
}

impl Device {
    /// Opens device `ordinal` (0-based) and retains its primary context.
    ///
    /// # Errors
    ///
    /// [`Error::Load`] without an NVIDIA driver, [`Error::NoSuchDevice`] for an ordinal out of
    /// range, [`Error::Driver`] if the driver refuses.
    pub fn new(ordinal: usize) -> Result<Device> {
        let _op = crate::runtime::guard::enter("Device::new")?;
        raw::init()?;
        crate::runtime::reclaim::register_exit_handler();
        let count = Self::count()?;
        let slot = table()
            .get(ordinal)
            .ok_or(Error::NoSuchDevice { ordinal, count })?;
        if let Some(inner) = slot.get() {
            return Ok(Device {
                inner: inner.clone(),
            });
        }
        // One opening at a time, and no handle is handed out before the crate's kernels were
        // loaded: otherwise a second thread could get the device, enqueue a wait, and leave the
        // first thread's load behind it. The lock is held across that load (on the crate's loader
        // thread, bounded by its time limit), which no wait of this device's crate streams can
        // hold up: none exists before the first handle.
        static OPENING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _rank = park::ranked(Rank::Opening);
        let _opening = OPENING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = slot.get() {
            return Ok(Device {
                inner: inner.clone(),
            });
        }
        let device = Device {
            inner: Arc::new(DeviceInner::open(ordinal)?),
        };
        // A load that times out here (behind a wait of raw driver work) is tried again on the
        // first use of the kernels; the device opens either way.
        let _ = device.inner.gate_kernels(&device);
        Ok(Device {
            inner: slot.get_or_init(|| device.inner).clone(),
        })
    }

    /// How many CUDA devices this machine has.
    ///
    /// # Errors
    ///
    /// [`Error::Load`] without an NVIDIA driver.
    pub fn count() -> Result<usize> {
        let _op = crate::runtime::guard::enter("Device::count")?;
        raw::init()?;
        raw::device_count()
    }

    /// The CUDA driver's version, e.g. `13000` for CUDA 13.0.
    ///
    /// # Errors
    ///
    /// [`Error::Load`] without an NVIDIA driver.
    pub fn driver_version() -> Result<i32> {
        let _op = crate::runtime::guard::enter("Device::driver_version")?;
        raw::init()?;
        raw::driver_version()
    }

    /// The ordinal this device was opened with.
    pub fn ordinal(&self) -> usize {
        self.inner.ordinal
    }

    /// The device's name, e.g. `"NVIDIA H100 80GB HBM3"`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The compute capability as (major, minor), e.g. `(9, 0)` for Hopper.
    pub fn compute_capability(&self) -> (u32, u32) {
        self.inner.compute_capability
    }

    /// Total device memory in bytes.
    pub fn total_memory(&self) -> usize {
        self.inner.total_memory
    }

    /// Any device attribute.
    ///
    /// ```no_run
    /// use ferrocuda_driver::{Device, sys::CUdevice_attribute};
    /// # fn main() -> ferrocuda_driver::Result<()> {
    /// let sms = Device::new(0)?.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] for an attribute the driver does not know.
    pub fn attribute(&self, attr: CUdevice_attribute) -> Result<i32> {
        let _op = crate::runtime::guard::enter("Device::attribute")?;
        raw::device_attribute(self.inner.cu, attr)
    }

    /// Free and total device memory in bytes, as `cuMemGetInfo` reports them.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver refuses.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        let _op = crate::runtime::guard::enter("Device::memory_info")?;
        self.inner.bind_checked()?;
        // SAFETY: the device's context is current on this thread.
        unsafe { raw::mem_get_info() }
    }

    /// The device's default stream: a non-blocking stream the crate creates once per device.
    ///
    /// It is not CUDA's legacy NULL stream, so it never synchronises implicitly with other streams.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the stream cannot be created (first call only).
    pub fn default_stream(&self) -> Result<DeviceStream> {
        if let Some(s) = self.inner.default_stream.get() {
            return Ok(s.clone());
        }
        let s = DeviceStream::create(self)?;
        Ok(self.inner.default_stream.get_or_init(|| s).clone())
    }

    /// A new non-blocking stream on this device.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver cannot create one.
    pub fn new_stream(&self) -> Result<DeviceStream> {
        DeviceStream::create(self)
    }

    /// Whether this device can read and write memory of `peer` directly.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver refuses the query.
    pub fn can_access_peer(&self, peer: &Device) -> Result<bool> {
        let _op = crate::runtime::guard::enter("Device::can_access_peer")?;
        raw::device_can_access_peer(self.inner.cu, peer.inner.cu)
    }

    /// Lets kernels and copies on this device access `peer`'s memory. Enabling twice is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when the hardware cannot, [`Error::Driver`] otherwise.
    pub fn enable_peer_access(&self, peer: &Device) -> Result<()> {
        let _op = crate::runtime::guard::enter("Device::enable_peer_access")?;
        if !self.can_access_peer(peer)? {
            return Err(self.unsupported("peer access to the other device"));
        }
        self.inner.bind_checked()?;
        // SAFETY: this device's context is current; `peer`'s context is live for the process.
        match unsafe { raw::ctx_enable_peer_access(peer.inner.ctx) } {
            Err(Error::Driver(e))
                if e.code == ferrocuda_sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => {}
            other => other?,
        }
        if peer.inner.ordinal < 64 {
            self.inner
                .peers
                .fetch_or(1 << peer.inner.ordinal, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Makes sure work on this device may access `peer`'s ordinary device memory: nothing for the
    /// device itself, one atomic load once enabled, else [`enable_peer_access`](Self::enable_peer_access).
    pub(crate) fn ensure_peer_access(&self, peer: &Device) -> Result<()> {
        if self.same(peer) {
            return Ok(());
        }
        let bit = 1u64.checked_shl(peer.inner.ordinal as u32).unwrap_or(0);
        if bit != 0 && self.inner.peers.load(Ordering::Acquire) & bit != 0 {
            return Ok(());
        }
        self.enable_peer_access(peer)
    }

    /// Returns the device's default memory pool's cached memory to the system, keeping `keep`
    /// bytes. Freed buffers go back to the pool first; call this (after
    /// [`wait_for_releases`](crate::wait_for_releases)) to see them in [`memory_info`](Self::memory_info).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver refuses.
    pub fn trim_memory_pool(&self, keep: usize) -> Result<()> {
        let _op = crate::runtime::guard::enter("Device::trim_memory_pool")?;
        self.inner.bind_checked()?;
        raw::mem_pool_trim_default(self.inner.cu, keep)
    }

    /// The polling-gate kernel behind [`GateStrategy::Polling`](crate::GateStrategy::Polling),
    /// loaded when the device was opened, for graph nodes and custom launches. Its signature:
    /// `ferrocuda_gate_poll(const u64* flag, u64 value, u32 cond /* 0 ==, 1 >= */,
    /// u64 timeout_ns /* 0: none */, u64* expired /* bumped on timeout */)`, one block of one thread.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if it failed to load on this device.
    pub fn polling_gate_function(&self) -> Result<crate::module::Function> {
        Ok(self.inner.gate_kernels(self)?.poll.clone())
    }

    /// The device's retained primary context (for driver calls this crate does not wrap, such as
    /// graph node parameters that name a context). It stays retained for the process.
    pub fn raw_context(&self) -> ferrocuda_sys::CUcontext {
        self.inner.ctx
    }

    /// Makes the device's primary context current on this thread (for raw driver calls that act
    /// on the current context). The crate's own calls do this themselves.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver refuses.
    pub fn make_current(&self) -> Result<()> {
        let _op = crate::runtime::guard::enter("Device::make_current")?;
        self.inner.bind_checked()
    }

    pub(crate) fn unsupported(&self, what: &'static str) -> Error {
        Error::Unsupported {
            ordinal: self.inner.ordinal,
            name: self.inner.name.clone(),
            what,
        }
    }

    pub(crate) fn same(&self, other: &Device) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Device) -> bool {
        self.same(other)
    }
}

impl Eq for Device {}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("ordinal", &self.inner.ordinal)
            .field("name", &self.inner.name)
            .field("compute_capability", &self.inner.compute_capability)
            .finish()
    }
}

impl DeviceInner {
    fn open(ordinal: usize) -> Result<DeviceInner> {
        let rt = Context::retain(ordinal)?;
        let cu = rt.cu;
        let attr = |a| raw::device_attribute(cu, a);
        Ok(DeviceInner {
            rt,
            name: raw::device_name(cu)?,
            compute_capability: (
                attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)? as u32,
                attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)? as u32,
            ),
            total_memory: raw::device_total_mem(cu)?,
            can_map_host_memory: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY)?
                != 0,
            unified_addressing: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING)?
                != 0,
            peers: AtomicU64::new(0),
            default_stream: OnceLock::new(),
            gates: OnceLock::new(),
        })
    }

    /// The crate's own kernels, loading them if they are not yet (see `gates`).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if the driver refused them; the load's [`Error::Timeout`] (or
    /// [`Error::DriverHeld`]) if it could not finish now, in which case a later call tries again.
    pub(crate) fn gate_kernels(&self, device: &Device) -> Result<&GateKernels> {
        if let Some(g) = self.gates.get() {
            return g
                .as_ref()
                .map_err(|_| device.unsupported("the crate's gate kernels (they failed to load)"));
        }
        let loaded = crate::module::Module::from_ptx(device, gates::GATE_PTX).and_then(|m| {
            // Loaded with the gates, before any wait can exist: a load behind a waiting stream
            // would block (docs/deadlocks.md in the repository).
            let loops = match crate::module::Module::from_cubin(device, gates::LOOP_FATBIN) {
                Ok(l) => crate::device_loop::LoopKernels::from_module(&l),
                Err(e @ (Error::Timeout { .. } | Error::DriverHeld { .. })) => return Err(e),
                Err(e) => Err(e),
            }
            .map_err(|e| {
                tracing::debug!(%e, "the gated device loop's kernels did not load");
                e.to_string()
            });
            Ok(GateKernels {
                poll: m.function(GateKernel::Poll.name())?,
                kick: m.function(GateKernel::Kick.name())?,
                relay: m.function(GateKernel::Relay.name())?,
                loops,
            })
        });
        let g = match loaded {
            Ok(k) => self.gates.get_or_init(|| Ok(k)),
            // Transient: the driver was busy behind a waiting stream. Not recorded.
            Err(
                e @ (Error::Timeout { .. }
                | Error::DriverHeld { .. }
                | Error::CalledFromHostFunc { .. }),
            ) => {
                return Err(e);
            }
            Err(e) => {
                tracing::debug!(%e, "the crate's gate kernels did not load");
                self.gates.get_or_init(|| Err(e.to_string()))
            }
        };
        g.as_ref()
            .map_err(|_| device.unsupported("the crate's gate kernels (they failed to load)"))
    }
}
