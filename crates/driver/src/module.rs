//! [`Module`]s of GPU code, their [`Function`]s, and how to launch them.

use crate::device::{Device, DeviceInner};
use crate::device_flag::DeviceFlag;
use crate::error::{Error, Result};
use crate::flag::{CompletionFlag, CompletionFlagRef};
use crate::memory::DeviceBuffer;
use crate::resource::{Addr, Keep, Placement, Resource};
use crate::runtime::gates::GateParamSink;
use crate::runtime::guard;
use crate::runtime::raw::{self, CUfunction, CUmodule};
use crate::runtime::reclaim::{self, Garbage, ModulePtr};
use bytemuck::Pod;
use ferrocuda_sys::CUfunction_attribute;
use std::collections::HashMap;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

/// How long [`Module::from_cubin`] and [`Module::from_ptx`] wait for the driver by default.
///
/// A load normally takes milliseconds (a cubin) to a second (a large PTX to JIT-compile); it
/// takes longer only when it waits behind a stream that waits on a host value, which is a bug of
/// the program (load modules before enqueueing waits), reported after this long.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A loaded module: a cubin, fatbin or PTX image in one device's context.
///
/// Every function of the module is loaded eagerly (`cuFuncLoad`), so a first launch never loads
/// code: code loading is one of the driver calls that do not return while a stream waits on a
/// host value (docs/deadlocks.md). **Load modules before enqueueing waits.** If a wait is pending
/// on the device, loading blocks until it passes; the crate loads on a thread of its own and gives
/// up after a timeout (an [`Error::Timeout`] instead of a hang), and a load that completes after the
/// caller gave up is unloaded again.
///
/// Until such an abandoned load has returned from the driver, the driver holds back other calls
/// (on an H200, `cuMemHostAlloc` on another thread blocked until the wait passed). So meanwhile
/// every operation of the crate that would call the driver returns [`Error::DriverHeld`] after at
/// most [`HELD_GRACE`](crate::runtime::guard::HELD_GRACE) (50 ms) instead of blocking — the thread that is
/// to signal the awaited value can still signal it
/// ([`CompletionFlag::signal`] makes no driver call) — and drops hand their releases to the
/// crate's reclaimer. [`driver_held`](crate::driver_held) says when the load has returned.
///
/// Dropping a module never blocks: it is unloaded by the crate's reclaimer once no launch of its
/// functions is pending and no [`Function`] of it remains, at a moment when every stream of the
/// crate is idle (`cuModuleUnload` waits for queued work and holds back other threads' driver
/// calls meanwhile).
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

// SAFETY: module and function handles are not bound to a thread: the driver API is thread-safe and
// a loaded module may be used from any thread of the process (CUDA Driver API, "Thread safety");
// the handles are never mutated and the name map is read-only after construction.
unsafe impl Send for ModuleInner {}
// SAFETY: as above.
unsafe impl Sync for ModuleInner {}

impl Drop for ModuleInner {
    fn drop(&mut self) {
        // cuModuleUnload blocks while any stream waits on a host value: always deferred.
        reclaim::defer(Garbage::Module {
            ctx: self.device.inner.rt.clone(),
            module: ModulePtr(self.raw),
        });
    }
}

struct LoadJob {
    device: Arc<DeviceInner>,
    image: Vec<u8>,
    reply: mpsc::Sender<Result<LoadedParts>>,
    state: Arc<std::sync::atomic::AtomicU8>,
}

/// A load job's state, shared by its caller and the loader thread.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
/// The caller gave up before the loader started: skip it.
const CANCELLED: u8 = 3;
/// The caller gave up while the loader was inside the driver: the driver is held (see `guard`).
const ABANDONED: u8 = 4;

struct LoadedParts {
    raw: ModulePtr,
    functions: Vec<(String, FnPtr)>,
}

struct FnPtr(CUfunction);
// SAFETY: a CUfunction handle may be used from any thread (the driver API is thread-safe); this
// only moves it from the loader thread to the caller.
unsafe impl Send for FnPtr {}

fn loader() -> &'static mpsc::Sender<LoadJob> {
    use std::sync::atomic::Ordering::{AcqRel, Acquire};
    static L: OnceLock<mpsc::Sender<LoadJob>> = OnceLock::new();
    L.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<LoadJob>();
        let spawned = std::thread::Builder::new()
            .name("ferrocuda-loader".into())
            .spawn(move || {
                guard::mark_crate_thread();
                for job in rx {
                    if job
                        .state
                        .compare_exchange(QUEUED, RUNNING, AcqRel, Acquire)
                        .is_err()
                    {
                        continue; // cancelled while queued
                    }
                    let result = load_now(&job.device, &job.image);
                    if job.state.swap(DONE, AcqRel) == ABANDONED {
                        guard::load_unstuck();
                    }
                    if let Err(mpsc::SendError(Ok(late))) = job.reply.send(result) {
                        // The caller timed out and left: unload what nobody will use.
                        reclaim::defer(Garbage::Module {
                            ctx: job.device.rt.clone(),
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
        Self::load(
            "Module::from_cubin",
            device,
            image.to_vec(),
            DEFAULT_LOAD_TIMEOUT,
        )
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
        Self::load("Module::from_ptx", device, image, timeout)
    }

    /// [`from_cubin`](Self::from_cubin) with an explicit time limit.
    ///
    /// # Errors
    ///
    /// As [`from_cubin`](Self::from_cubin).
    pub fn from_cubin_timeout(device: &Device, image: &[u8], timeout: Duration) -> Result<Module> {
        Self::load("Module::from_cubin", device, image.to_vec(), timeout)
    }

    fn load(
        op: &'static str,
        device: &Device,
        image: Vec<u8>,
        timeout: Duration,
    ) -> Result<Module> {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let _op = guard::enter(op)?;
        if image.is_empty() {
            return Err(Error::InvalidArgument("empty module image".into()));
        }
        let (reply, rx) = mpsc::channel();
        let state = Arc::new(std::sync::atomic::AtomicU8::new(QUEUED));
        loader()
            .send(LoadJob {
                device: device.inner.clone(),
                image,
                reply,
                state: state.clone(),
            })
            .map_err(|_| {
                Error::InvalidArgument("the module loader thread could not be started".into())
            })?;
        let parts = match rx.recv_timeout(timeout) {
            Ok(r) => r?,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Still queued: the loader will skip it. Still running: the loader is inside the
                // driver, which then holds back other calls until the load returns (see `guard`).
                if state
                    .compare_exchange(QUEUED, CANCELLED, AcqRel, Acquire)
                    .is_err()
                    && state
                        .compare_exchange(RUNNING, ABANDONED, AcqRel, Acquire)
                        .is_ok()
                {
                    guard::load_stuck();
                }
                if let Ok(r) = rx.try_recv() {
                    // It finished just now after all.
                    let parts = r?;
                    return Ok(Self::assemble(device, parts));
                }
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
        Ok(Self::assemble(device, parts))
    }

    fn assemble(device: &Device, parts: LoadedParts) -> Module {
        let functions = parts.functions.into_iter().map(|(n, f)| (n, f.0)).collect();
        Module {
            inner: Arc::new(ModuleInner {
                raw: parts.raw.0,
                device: device.clone(),
                functions,
            }),
        }
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

// SAFETY: a CUfunction may be launched and its attributes read or set from any thread (the driver
// API is thread-safe, and a function is not bound to a thread); the handle is never mutated, and
// the Arc keeps its module loaded.
unsafe impl Send for Function {}
// SAFETY: as above.
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
        let _op = guard::enter("Function::set_max_dynamic_shared_memory")?;
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
        let _op = guard::enter("Function::attribute")?;
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

    /// A 1-D launch with enough blocks of `threads` threads to cover `n` elements. With
    /// `threads == 0` the grid is empty too, which the launch refuses
    /// ([`Error::InvalidArgument`]).
    pub const fn for_num_elems(n: u32, threads: u32) -> Self {
        LaunchConfig {
            grid: (if threads == 0 { 0 } else { n.div_ceil(threads) }, 1, 1),
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

impl Resource for Function {
    fn what(&self) -> &'static str {
        "the function"
    }

    fn placement(&self) -> Placement<'_> {
        Placement::Device(&self.module.device)
    }

    fn addr(&self) -> Option<&Addr> {
        None
    }

    fn keep(&self) -> Option<Keep> {
        // Keeps the module loaded while a graph has kernel nodes of it.
        Some(Box::new(self.clone()))
    }
}

/// A value that can be passed as a kernel parameter.
///
/// Plain values (`T: Pod`) are passed by their bytes. Buffers and flags ([`DeviceBuffer`],
/// [`CompletionFlag`], [`CompletionFlagRef`], [`DeviceFlag`]) are passed as their device address,
/// which the launch obtains through the crate's use path: it checks their device, records the use
/// (so they stay alive until the kernel has run) and, under capture, gives the graph ownership.
///
/// # Safety
///
/// `param_ptr` returns a pointer to the bytes the kernel receives for this parameter, valid while
/// `self` is borrowed.
pub unsafe trait KernelParam {
    /// Pointer to the parameter's bytes (unused for the crate's buffers and flags, whose address
    /// comes from the use path).
    fn param_ptr(&self) -> *mut c_void;

    /// For the crate's buffers and flags: the resource behind the parameter (opaque).
    #[doc(hidden)]
    fn as_resource(&self) -> Option<ResourceParam<'_>> {
        None
    }
}

/// A buffer or flag passed as a kernel parameter (opaque; see [`KernelParam`]).
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct ResourceParam<'a>(pub(crate) &'a dyn Resource);

// SAFETY: a Pod value's bytes are the parameter.
unsafe impl<T: Pod> KernelParam for T {
    fn param_ptr(&self) -> *mut c_void {
        (self as *const T).cast_mut().cast()
    }
}

macro_rules! resource_param {
    ($(#[$doc:meta])* [$($g:tt)*] $t:ty) => {
        $(#[$doc])*
        // SAFETY: the launch never reads `param_ptr` of a resource: it passes the address the use
        // path returns (`LaunchArgs::resolve`).
        unsafe impl<$($g)*> KernelParam for $t {
            fn param_ptr(&self) -> *mut c_void {
                std::ptr::null_mut()
            }
            fn as_resource(&self) -> Option<ResourceParam<'_>> {
                Some(ResourceParam(self))
            }
        }
    };
}

resource_param!(
    /// The parameter is the buffer's device address (a `T*` in the kernel).
    [T: Pod] DeviceBuffer<T>
);
resource_param!(
    /// The parameter is the flag's device address (an `unsigned long long*` in the kernel).
    [] CompletionFlag
);
resource_param!(
    /// The parameter is the flag's device address (an `unsigned long long*` in the kernel).
    ['f] CompletionFlagRef<'f>
);
resource_param!(
    /// The parameter is the flag's device address (an `unsigned long long*` in the kernel).
    [] DeviceFlag
);

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
    /// Pointers to the parameters' bytes; a resource's slot is filled at launch.
    params: [*mut c_void; MAX_KERNEL_PARAMS],
    /// The resources among the parameters, by position.
    resources: [Option<&'a dyn Resource>; MAX_KERNEL_PARAMS],
    /// The resources' addresses, from the use path at launch; `params` points here for them.
    addresses: [u64; MAX_KERNEL_PARAMS],
    len: usize,
    overflow: bool,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> LaunchArgs<'a> {
    /// No parameters yet.
    pub fn new() -> Self {
        LaunchArgs {
            params: [std::ptr::null_mut(); MAX_KERNEL_PARAMS],
            resources: [None; MAX_KERNEL_PARAMS],
            addresses: [0; MAX_KERNEL_PARAMS],
            len: 0,
            overflow: false,
            _borrow: PhantomData,
        }
    }

    /// Appends a parameter.
    pub fn arg<P: KernelParam + ?Sized>(&mut self, p: &'a P) -> &mut Self {
        if self.len == MAX_KERNEL_PARAMS {
            self.overflow = true;
        } else {
            match p.as_resource() {
                Some(r) => self.resources[self.len] = Some(r.0),
                None => self.params[self.len] = p.param_ptr(),
            }
            self.len += 1;
        }
        self
    }

    /// Resolves every resource parameter with `take` (the use path) and returns the parameter
    /// array the driver takes (`void**`), valid while `self` is borrowed.
    pub(crate) fn resolve(
        &mut self,
        mut take: impl FnMut(&'a dyn Resource) -> Result<u64>,
    ) -> Result<*mut *mut c_void> {
        self.check()?;
        for i in 0..self.len {
            if let Some(r) = self.resources[i] {
                self.addresses[i] = take(r)?;
                self.params[i] = (&raw mut self.addresses[i]).cast();
            }
        }
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

/// The gate kernels' parameters go into a launch like any others: flags as resources.
impl<'a> GateParamSink<'a, dyn KernelParam + 'a> for LaunchArgs<'a> {
    fn flag(&mut self, flag: &'a (dyn KernelParam + 'a)) {
        self.arg(flag);
    }
    fn u64(&mut self, value: &'a u64) {
        self.arg(value);
    }
    fn u32(&mut self, value: &'a u32) {
        self.arg(value);
    }
}

impl Default for LaunchArgs<'_> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_per_block_is_an_error_not_a_division_by_zero() {
        let c = LaunchConfig::for_num_elems(1000, 0);
        assert!(matches!(c.validate(), Err(Error::InvalidArgument(_))));
        let c = LaunchConfig::for_num_elems(1000, 256);
        assert_eq!(c.grid, (4, 1, 1));
        assert!(c.validate().is_ok());
        assert_eq!(LaunchConfig::for_num_elems(0, 256).grid, (0, 1, 1));
    }

    #[test]
    fn launch_args_keep_values_in_place_and_count_overflow() {
        let vals: Vec<u64> = (0..MAX_KERNEL_PARAMS as u64 + 1).collect();
        let mut args = LaunchArgs::new();
        for v in &vals[..MAX_KERNEL_PARAMS] {
            args.arg(v);
        }
        assert_eq!(args.len(), MAX_KERNEL_PARAMS);
        let params = args.resolve(|_| unreachable!("no resources")).unwrap();
        for (i, v) in vals[..MAX_KERNEL_PARAMS].iter().enumerate() {
            // SAFETY: `params` has MAX_KERNEL_PARAMS entries, each pointing at a `u64` in `vals`.
            assert_eq!(unsafe { *(*params.add(i)).cast::<u64>() }, *v);
        }
        args.arg(&vals[MAX_KERNEL_PARAMS]);
        assert!(matches!(args.check(), Err(Error::InvalidArgument(_))));
    }
}
