//! ferrocuda's [`Backend`]: [`Env`], the state every ferrocuda benchmark runs in, through
//! ferrocuda-driver's safe API. `ferrocuda_bench` runs the shared loops and ferrocuda's own
//! benchmarks on it; `event_cost_probe` its probes.

use crate::backend::{Backend, Mark};
use crate::die;
use ferrocuda_driver::{
    CompletionFlag, Device, DeviceBuffer, DeviceEvent, DeviceStream, Function, LaunchArgs,
    LaunchConfig, Module, Result,
};
use std::sync::Mutex;

/// The value of `r`, or the program dies with its error.
pub fn ok<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| die(&e.to_string()))
}

/// Device 0, two streams, the bench kernels and the host slots, as the C baseline's `env_t`.
pub struct Env {
    /// Device 0.
    pub dev: Device,
    /// The stream every benchmark runs on.
    pub s: DeviceStream,
    /// The second stream.
    pub s2: DeviceStream,
    _module: Module,
    /// `empty_kernel()`.
    pub empty: Function,
    /// `ack(u64* host_slot, u64 value)`.
    pub ack: Function,
    /// `spin_ns(u64 ns)`.
    pub spin_ns: Function,
    /// `ack_inc(u64* dev_count, u64* host_slot)`, for the graph rows (absent from the fake driver
    /// of `cargo xtask bench --smoke`).
    pub ack_inc: Option<Function>,
    /// `ferrocuda_fused_gate_ack`: the ack behind ferrocuda::wait_flag (ferrocuda/gate.cuh).
    pub fused_ack: Function,
    /// The flag the GPU waits on and the host signals.
    pub flag: CompletionFlag,
    /// The slot the GPU acks into and the host spins on.
    pub ack_slot: CompletionFlag,
    /// Fused gates that gave up (their 1 s limit) add 1 here; the program fails if one did.
    pub expired: CompletionFlag,
    /// 32 words of device memory the reset zeroes on each stream, as the C baseline's.
    scratch: Mutex<DeviceBuffer<u64>>,
}

impl Env {
    /// Device 0's streams and slots, and the kernels of the bench cubin at `cubin`; dies if the
    /// file cannot be read.
    pub fn new(cubin: &str) -> Result<Env> {
        let dev = Device::new(0)?;
        let image = std::fs::read(cubin).unwrap_or_else(|e| die(&format!("{cubin}: {e}")));
        let module = Module::from_cubin(&dev, &image)?;
        let s = dev.new_stream()?;
        let scratch = Mutex::new(s.alloc_zeroed::<u64>(32)?);
        Ok(Env {
            scratch,
            s,
            s2: dev.new_stream()?,
            empty: module.function("empty_kernel")?,
            ack: module.function("ack")?,
            spin_ns: module.function("spin_ns")?,
            ack_inc: module.function("ack_inc").ok(),
            fused_ack: module.function("ferrocuda_fused_gate_ack")?,
            _module: module,
            flag: CompletionFlag::new(&dev)?,
            ack_slot: CompletionFlag::new(&dev)?,
            expired: CompletionFlag::new(&dev)?,
            dev,
        })
    }
}

impl Backend for Env {
    type Stream = DeviceStream;
    type Event = DeviceEvent;

    const PINNED_NOTE: &'static str = "pooled CompletionFlag";

    #[inline]
    fn stream(&self) -> &DeviceStream {
        &self.s
    }

    #[inline]
    fn second_stream(&self) -> &DeviceStream {
        &self.s2
    }

    fn reset(&self) {
        ok(self.s.synchronize());
        ok(self.s2.synchronize());
        if self.expired.load() != 0 {
            die("a fused gate gave up after its 1 s limit (a lost signal)");
        }
        self.flag.reset();
        self.ack_slot.reset();
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        for s in [&self.s2, &self.s] {
            ok(s.memset_zero(&mut scratch));
            ok(s.synchronize());
        }
    }

    #[inline]
    fn synchronize(&self, s: &DeviceStream) {
        ok(s.synchronize());
    }

    #[inline]
    fn launch_empty(&self, s: &DeviceStream) {
        // SAFETY: empty_kernel().
        ok(unsafe {
            s.launch(
                &self.empty,
                LaunchConfig::single_thread(),
                &mut LaunchArgs::new(),
            )
        });
    }

    #[inline]
    fn launch_spin(&self, s: &DeviceStream, ns: u64) {
        // SAFETY: spin_ns(u64).
        ok(unsafe {
            s.launch(
                &self.spin_ns,
                LaunchConfig::single_thread(),
                LaunchArgs::new().arg(&ns),
            )
        });
    }

    #[inline]
    fn launch_ack(&self, s: &DeviceStream, v: u64) {
        let slot = self.ack_slot.as_flag_ref();
        // SAFETY: ack(u64* host_slot, u64 value); the slot outlives the stream's work (the reset
        // synchronizes).
        ok(unsafe {
            s.launch(
                &self.ack,
                LaunchConfig::single_thread(),
                LaunchArgs::new().arg(&slot).arg(&v),
            )
        });
    }

    #[inline]
    fn wait_for_flag(&self, s: &DeviceStream, v: u64) {
        ok(s.wait_for_host_value_ge(&self.flag, v));
    }

    #[inline]
    fn write_ack(&self, s: &DeviceStream, v: u64) {
        ok(s.write_host_value(&self.ack_slot, v));
    }

    #[inline]
    fn signal(&self, v: u64) {
        self.flag.signal(v);
    }

    #[inline]
    fn ack(&self) -> u64 {
        self.ack_slot.load()
    }

    fn new_event(&self, timing: bool) -> DeviceEvent {
        ok(DeviceEvent::new(&self.dev, timing))
    }

    #[inline]
    fn record_event(&self, s: &DeviceStream, ev: &DeviceEvent) {
        ok(s.record_event(ev));
    }

    #[inline]
    fn synchronize_event(&self, ev: &DeviceEvent) {
        ok(ev.synchronize());
    }

    #[inline]
    fn is_ready(&self, ev: &DeviceEvent) -> bool {
        ok(ev.is_ready())
    }

    #[inline]
    fn elapsed_time(&self, start: &DeviceEvent, end: &DeviceEvent) -> f32 {
        ok(start.elapsed_time(end))
    }

    #[inline]
    fn wait_for_event(&self, s: &DeviceStream, ev: &DeviceEvent) {
        ok(s.wait_for_event(ev));
    }

    #[inline]
    fn alloc_free_device(&self, s: &DeviceStream, bytes: usize) {
        drop(ok(s.alloc::<u8>(bytes)));
    }

    /// A flag is pooled pinned memory: new + drop reuses a slot after the reclaimer's fence.
    #[inline]
    fn alloc_free_pinned(&self) {
        drop(ok(CompletionFlag::new(&self.dev)));
    }

    #[inline]
    fn enqueue_stamp(&self, s: &DeviceStream, mark: &'static Mark) {
        ok(s.enqueue_host_func(move || mark.stamp()));
    }

    #[inline]
    fn enqueue_count(&self, s: &DeviceStream, mark: &'static Mark) {
        ok(s.enqueue_host_func(move || mark.count()));
    }
}
