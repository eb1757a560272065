//! [`Module`]s of GPU code, their [`Function`]s, and how to launch them.

use crate::device::{Device, DeviceInner};
use crate::error::{Error, Result};
use crate::flag::CompletionFlagRef;
use crate::memory::DeviceBuffer;
use crate::raw::{self, CUfunction, CUmodule};
use crate::reclaim::{self, Garbage, ModulePtr};
use bytemuck::Pod;
use ferrocuda_sys::CUfunction_attribute;
use std::collections::HashMap;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

/// How long [`Module::from_cubin`] and [`Module::from_ptx`] wait for the driver by default.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A loaded module: a cubin, fatbin or PTX image in one device's context.
///
/// Every function of the module is loaded eagerly (`cuFuncLoad`), so a first launch never loads
/// code: code loading is one of the driver calls that do not return while a stream waits on a
/// host value (docs/deadlocks.md). **Load modules before enqueueing waits.** If a wait is pending
/// on the device, loading blocks until it passes; the crate loads on a thread of its own and gives
/// up after a timeout (an [`Error::Timeout`] instead of a hang), and a load that completes after the
/// caller gave up is unloaded again.
///
/// Dropping a module never blocks: it is unloaded by the crate's reclaimer once no launch of its
/// functions is pending and no [`Function`] of it remains.
///
/// ```no_run
/// use ferrocuda_driver::{Device, LaunchArgs, LaunchConfig, Module};
/// # fn main() -> ferrocuda_driver::Result<()> {
/// const PTX: &str = r#"
/// .version 8.0
/// .target sm_75
/// .address_size 64
/// .visible .entry fill(.param .u64 out, .param .u32 v) {
///   .reg .u64 %p; .reg .u32 %v;
///   ld.param.u64 %p, [out]; ld.param.u32 %v, [v];
///   cvta.to.global.u64 %p, %p; st.global.u32 [%p], %v; ret;
/// }"#;
/// let device = Device::new(0)?;
/// let module = Module::from_ptx(&device, PTX)?;
/// let fill = module.function("fill")?;
/// let stream = device.new_stream()?;
/// let mut out = stream.alloc_zeroed::<u32>(1)?;
/// let v = 42u32;
/// // SAFETY: the arguments match `fill(u32*, u32)` and `out` holds one u32.
/// unsafe { stream.launch(&fill, LaunchConfig::single_thread(), LaunchArgs::new().arg(&out).arg(&v))? };
/// let mut host = [0u32];
/// stream.copy_dtoh(&out, &mut host)?;
/// assert_eq!(host[0], 42);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Module {
    inner: Arc<ModuleInner>,
}

pub(crate) struct ModuleInner {
    raw: CUmodule,
    device: Device,
    functions: HashMap<String, CUfunction>,
}

// SAFETY: module and function handles may be used from any thread; the map is read-only.
unsafe impl Send for ModuleInner {}
// SAFETY: as above.
unsafe impl Sync for ModuleInner {}

impl Drop for ModuleInner {
    fn drop(&mut self) {
        // cuModuleUnload blocks while any stream waits on a host value: always deferred.
        reclaim::defer(Garbage::Module {
            device: self.device.inner.clone(),
            module: ModulePtr(self.raw),
        });
    }
}

struct LoadJob {
    device: Arc<DeviceInner>,
    image: Vec<u8>,
    reply: mpsc::Sender<Result<LoadedParts>>,
}

struct LoadedParts {
    raw: ModulePtr,
    functions: Vec<(String, FnPtr)>,
}

struct FnPtr(CUfunction);
// SAFETY: function handles may be used from any thread.
unsafe impl Send for FnPtr {}

fn loader() -> &'static mpsc::Sender<LoadJob> {
    static L: OnceLock<mpsc::Sender<LoadJob>> = OnceLock::new();
    L.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<LoadJob>();
        let spawned = std::thread::Builder::new()
            .name("ferrocuda-loader".into())
            .spawn(move || {
                for job in rx {
                    let result = load_now(&job.device, &job.image);
                    if let Err(mpsc::SendError(Ok(late))) = job.reply.send(result) {
                        // The caller timed out and left: unload what nobody will use.
                        reclaim::defer(Garbage::Module {
                            device: job.device,
                            module: late.raw,
                        });
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(%e, "could not start the ferrocuda module loader thread");
        }
        tx
    })
}

fn load_now(device: &DeviceInner, image: &[u8]) -> Result<LoadedParts> {
    device.bind_checked()?;
    // SAFETY: the context is current; `image` is a cubin/fatbin or NUL-terminated PTX (the
    // callers append the NUL for PTX).
    let m = unsafe { raw::module_load_data(image.as_ptr().cast()) }?;
    let parts = (|| {
        // SAFETY: `m` was just loaded.
        let fs = unsafe { raw::module_functions(m) }?;
        let mut functions = Vec::with_capacity(fs.len());
        for f in fs {
            // SAFETY: `f` belongs to the live module `m`.
            unsafe { raw::func_load(f) }?;
            // SAFETY: as above.
            functions.push((unsafe { raw::func_name(f) }?, FnPtr(f)));
        }
        Ok(functions)
    })();
    match parts {
        Ok(functions) => Ok(LoadedParts {
            raw: ModulePtr(m),
            functions,
        }),
        Err(e) => {
            // SAFETY: nothing else has seen `m`; this thread may block here, not the user's.
            let _ = unsafe { raw::module_unload(m) };
            Err(e)
        }
    }
}

impl Module {
    /// Loads a cubin or fatbin image, waiting up to [`DEFAULT_LOAD_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] for an invalid image or one built for another architecture;
    /// [`Error::Timeout`] if the driver did not finish in time (a stream of the device waits on a
    /// host value: signal it, or load modules before enqueueing waits).
    pub fn from_cubin(device: &Device, image: &[u8]) -> Result<Module> {
        Self::load(device, image.to_vec(), DEFAULT_LOAD_TIMEOUT)
    }

    /// Loads PTX source (JIT-compiled by the driver for this device), waiting up to
    /// [`DEFAULT_LOAD_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// As [`from_cubin`](Self::from_cubin); a PTX syntax error is [`Error::Driver`].
    pub fn from_ptx(device: &Device, ptx: &str) -> Result<Module> {
        Self::from_ptx_timeout(device, ptx, DEFAULT_LOAD_TIMEOUT)
    }

    /// [`from_ptx`](Self::from_ptx) with an explicit time limit.
    ///
    /// # Errors
    ///
    /// As [`from_ptx`](Self::from_ptx).
    pub fn from_ptx_timeout(device: &Device, ptx: &str, timeout: Duration) -> Result<Module> {
        if ptx.as_bytes().contains(&0) {
            return Err(Error::InvalidArgument(
                "PTX source contains a NUL byte".into(),
            ));
        }
        let mut image = Vec::with_capacity(ptx.len() + 1);
        image.extend_from_slice(ptx.as_bytes());
        image.push(0);
        Self::load(device, image, timeout)
    }

    /// [`from_cubin`](Self::from_cubin) with an explicit time limit.
    ///
    /// # Errors
    ///
    /// As [`from_cubin`](Self::from_cubin).
    pub fn from_cubin_timeout(device: &Device, image: &[u8], timeout: Duration) -> Result<Module> {
        Self::load(device, image.to_vec(), timeout)
    }

    fn load(device: &Device, image: Vec<u8>, timeout: Duration) -> Result<Module> {
        if raw::in_host_func() {
            return Err(Error::CalledFromHostFunc {
                call: "cuModuleLoadData",
            });
        }
        if image.is_empty() {
            return Err(Error::InvalidArgument("empty module image".into()));
        }
        let (reply, rx) = mpsc::channel();
        loader()
            .send(LoadJob {
                device: device.inner.clone(),
                image,
                reply,
            })
            .map_err(|_| {
                Error::InvalidArgument("the module loader thread could not be started".into())
            })?;
        let parts = match rx.recv_timeout(timeout) {
            Ok(r) => r?,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(Error::Timeout {
                    what: "module load (is a stream waiting on a host value?)",
                    timeout,
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::InvalidArgument(
                    "the module loader thread stopped".into(),
                ));
            }
        };
        let functions = parts.functions.into_iter().map(|(n, f)| (n, f.0)).collect();
        Ok(Module {
            inner: Arc::new(ModuleInner {
                raw: parts.raw.0,
                device: device.clone(),
                functions,
            }),
        })
    }

    /// The kernel named `name` (its `extern "C"` / `.entry` name).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the functions the module has, if `name` is not one of them.
    pub fn function(&self, name: &str) -> Result<Function> {
        match self.inner.functions.get(name) {
            Some(&raw) => Ok(Function {
                module: self.inner.clone(),
                raw,
            }),
            None => {
                let mut names: Vec<_> = self.inner.functions.keys().map(String::as_str).collect();
                names.sort_unstable();
                Err(Error::InvalidArgument(format!(
                    "module has no function `{name}` (it has: {})",
                    names.join(", ")
                )))
            }
        }
    }

    /// The names of the module's functions.
    pub fn function_names(&self) -> impl Iterator<Item = &str> {
        self.inner.functions.keys().map(String::as_str)
    }

    /// The device the module is loaded on.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }
}

/// A kernel of a [`Module`]; keeps its module loaded.
#[derive(Clone)]
pub struct Function {
    module: Arc<ModuleInner>,
    pub(crate) raw: CUfunction,
}

// SAFETY: function handles may be used from any thread.
unsafe impl Send for Function {}
// SAFETY: as above; the handle is never mutated.
unsafe impl Sync for Function {}

impl Function {
    /// The device the function runs on.
    pub fn device(&self) -> &Device {
        &self.module.device
    }

    /// Allows launches with up to `bytes` of dynamic shared memory (above the 48 KiB default).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the device has less shared memory per block than asked.
    pub fn set_max_dynamic_shared_memory(&self, bytes: u32) -> Result<()> {
        self.module.device.inner.bind()?;
        // SAFETY: the function is live.
        unsafe {
            raw::func_set_attribute(
                self.raw,
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )
        }
    }

    /// Any function attribute (registers, static shared memory, max threads per block...).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] for an attribute the driver does not know.
    pub fn attribute(&self, attr: CUfunction_attribute) -> Result<i32> {
        // SAFETY: the function is live.
        unsafe { raw::func_get_attribute(self.raw, attr) }
    }

    /// The raw handle, for driver calls this crate does not wrap. It stays owned by `self`.
    pub fn as_raw(&self) -> CUfunction {
        self.raw
    }
}

/// Grid, block, dynamic shared memory and (optionally) thread-block-cluster dimensions of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block in x, y, z.
    pub block: (u32, u32, u32),
    /// Bytes of dynamic shared memory per block.
    pub shared_mem_bytes: u32,
    /// Blocks per cluster in x, y, z (compute capability 9.0+), or `None` for no clusters.
    pub cluster: Option<(u32, u32, u32)>,
}

impl LaunchConfig {
    /// One block of one thread.
    pub const fn single_thread() -> Self {
        LaunchConfig {
            grid: (1, 1, 1),
            block: (1, 1, 1),
            shared_mem_bytes: 0,
            cluster: None,
        }
    }

    /// A 1-D launch with enough blocks of `threads` threads to cover `n` elements.
    pub const fn for_num_elems(n: u32, threads: u32) -> Self {
        LaunchConfig {
            grid: (n.div_ceil(threads), 1, 1),
            block: (threads, 1, 1),
            shared_mem_bytes: 0,
            cluster: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let (g, b) = (self.grid, self.block);
        if g.0 == 0 || g.1 == 0 || g.2 == 0 || b.0 == 0 || b.1 == 0 || b.2 == 0 {
            return Err(Error::InvalidArgument(format!(
                "launch dimensions must be non-zero (grid {g:?}, block {b:?})"
            )));
        }
        if let Some(c) = self.cluster
            && (c.0 == 0
                || c.1 == 0
                || c.2 == 0
                || !g.0.is_multiple_of(c.0)
                || !g.1.is_multiple_of(c.1)
                || !g.2.is_multiple_of(c.2))
        {
            return Err(Error::InvalidArgument(format!(
                "cluster {c:?} must be non-zero and divide the grid {g:?}"
            )));
        }
        Ok(())
    }
}

/// A value that can be passed as a kernel parameter.
///
/// # Safety
///
/// `param_ptr` returns a pointer to the bytes the kernel receives for this parameter, valid while
/// `self` is borrowed.
pub unsafe trait KernelParam {
    /// Pointer to the parameter's bytes.
    fn param_ptr(&self) -> *mut c_void;

    /// For buffers: the home stream and the "used elsewhere" marker (keep-alive bookkeeping).
    #[doc(hidden)]
    fn buffer_home(&self) -> Option<BufferUse<'_>> {
        None
    }
}

/// Keep-alive bookkeeping of a buffer argument (opaque).
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct BufferUse<'a> {
    home: &'a Arc<crate::stream::StreamInner>,
    marker: &'a AtomicBool,
}

// SAFETY: a Pod value's bytes are the parameter.
unsafe impl<T: Pod> KernelParam for T {
    fn param_ptr(&self) -> *mut c_void {
        (self as *const T).cast_mut().cast()
    }
}

// SAFETY: the parameter is the buffer's device address (a `T*` in the kernel), stored in the buffer.
unsafe impl<T: Pod> KernelParam for DeviceBuffer<T> {
    fn param_ptr(&self) -> *mut c_void {
        (&self.ptr as *const u64).cast_mut().cast()
    }

    fn buffer_home(&self) -> Option<BufferUse<'_>> {
        let (home, marker) = self.home_and_marker();
        Some(BufferUse { home, marker })
    }
}

/// The parameter is the flag's device address (a `unsigned long long*` in the kernel).
// SAFETY: the address is stored in the handle.
unsafe impl KernelParam for CompletionFlagRef<'_> {
    fn param_ptr(&self) -> *mut c_void {
        self.device_ptr_ref() as *const u64 as *mut c_void
    }
}

/// Most parameters a launch takes.
pub const MAX_KERNEL_PARAMS: usize = 32;

/// The parameters of one launch, borrowed for its duration (no allocation).
///
/// ```no_run
/// # use ferrocuda_driver::*;
/// # fn f(stream: &DeviceStream, k: &Function, buf: &mut DeviceBuffer<f32>) -> Result<()> {
/// let n = buf.len() as u32;
/// // SAFETY: the kernel is `k(float* buf, unsigned n)`.
/// unsafe { stream.launch(k, LaunchConfig::for_num_elems(n, 256), LaunchArgs::new().arg(buf).arg(&n))? };
/// # Ok(()) }
/// ```
pub struct LaunchArgs<'a> {
    pub(crate) params: [*mut c_void; MAX_KERNEL_PARAMS],
    pub(crate) len: usize,
    /// The buffer arguments' homes and markers (keep-alive bookkeeping).
    buffers: [Option<BufferUse<'a>>; MAX_KERNEL_PARAMS],
    n_buffers: usize,
    overflow: bool,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> LaunchArgs<'a> {
    /// No parameters yet.
    pub fn new() -> Self {
        LaunchArgs {
            params: [std::ptr::null_mut(); MAX_KERNEL_PARAMS],
            len: 0,
            buffers: [None; MAX_KERNEL_PARAMS],
            n_buffers: 0,
            overflow: false,
            _borrow: PhantomData,
        }
    }

    /// Appends a parameter.
    pub fn arg<P: KernelParam + ?Sized>(&mut self, p: &'a P) -> &mut Self {
        if self.len == MAX_KERNEL_PARAMS {
            self.overflow = true;
        } else {
            self.params[self.len] = p.param_ptr();
            self.len += 1;
            if let Some(b) = p.buffer_home() {
                self.buffers[self.n_buffers] = Some(b);
                self.n_buffers += 1;
            }
        }
        self
    }

    /// Marks the buffer arguments used on `stream`.
    pub(crate) fn note_uses(&self, stream: &crate::stream::StreamInner) {
        for b in self.buffers[..self.n_buffers].iter().flatten() {
            crate::memory::mark_foreign(b.home, b.marker, stream);
        }
    }

    /// The parameter array as the driver takes it (`void**`, one pointer per parameter), for
    /// driver calls this crate does not wrap (e.g. graph kernel nodes). Valid while `self` lives.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if more than [`MAX_KERNEL_PARAMS`] parameters were added.
    pub fn as_param_array(&mut self) -> Result<*mut *mut c_void> {
        self.check()?;
        Ok(self.params.as_mut_ptr())
    }

    /// How many parameters were added.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no parameter was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.overflow {
            return Err(Error::InvalidArgument(format!(
                "more than {MAX_KERNEL_PARAMS} kernel parameters"
            )));
        }
        Ok(())
    }
}

impl Default for LaunchArgs<'_> {
    fn default() -> Self {
        Self::new()
    }
}
