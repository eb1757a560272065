//! Gates of [`DeviceStream`]: waits on host values and device flags (the driver's
//! `cuStreamWaitValue64` or the crate's polling kernel), GPU writes of flags, and the polling relay.

use super::DeviceStream;
use crate::device_flag::DeviceFlag;
use crate::error::Result;
use crate::flag::{CompletionFlag, CompletionFlagRef};
use crate::module::{KernelParam, LaunchArgs, LaunchConfig};
use crate::resource::{Access, Resource, UnderCapture};
use crate::runtime::gates::{GateArgs, WaitCondition, wait_flags, write_flags};
use crate::runtime::raw;
use std::time::Duration;

/// How a stream waits for a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateStrategy {
    /// The driver's `cuStreamWaitValue64`: costs nothing while waiting, but is the slower to
    /// release the next kernel, and slower after a long wait than back to back (measured figures:
    /// `docs/hardware-facts.md` in the repository, "Gates").
    DriverWait,
    /// A one-thread kernel that polls the flag (`ld.acquire.sys`, `__nanosleep(32)` between
    /// loads): releases the next kernel sooner than the driver's wait, but holds one block on one
    /// SM while it waits and takes a share of memory bandwidth (both measured in
    /// `docs/hardware-facts.md` in the repository). `timeout` bounds the wait in GPU time
    /// (saturating at `u64::MAX` ns); an expired gate lets the work after it run and is reported
    /// by the next `synchronize` as [`Error::GateExpired`](crate::Error::GateExpired). [`CompletionFlag::abort`] releases it
    /// like a driver wait.
    Polling {
        /// Give up after this much GPU time (`None`: wait as long as it takes).
        timeout: Option<Duration>,
    },
}

/// A flag a gate waits on or writes: a host [`CompletionFlag`] (pinned host memory, visible to
/// every device) or a [`DeviceFlag`] (one device's memory). Every gate verb of [`DeviceStream`]
/// takes `impl Into<FlagSource>`, so `&CompletionFlag`, [`CompletionFlagRef`] and `&DeviceFlag`
/// are accepted everywhere alike.
#[derive(Clone, Copy)]
pub enum FlagSource<'a> {
    /// A host flag.
    Host(CompletionFlagRef<'a>),
    /// A device flag.
    Device(&'a DeviceFlag),
}

impl<'a> FlagSource<'a> {
    fn resource(&self) -> &dyn Resource {
        match self {
            FlagSource::Host(f) => f,
            FlagSource::Device(f) => *f,
        }
    }

    /// The flag as a kernel parameter (its address, through the use path at launch).
    fn param(&self) -> &dyn KernelParam {
        match self {
            FlagSource::Host(f) => f,
            FlagSource::Device(f) => *f,
        }
    }
}

impl<'a> From<CompletionFlagRef<'a>> for FlagSource<'a> {
    fn from(f: CompletionFlagRef<'a>) -> Self {
        FlagSource::Host(f)
    }
}

impl<'a> From<&'a CompletionFlag> for FlagSource<'a> {
    fn from(f: &'a CompletionFlag) -> Self {
        FlagSource::Host(f.as_flag_ref())
    }
}

impl<'a> From<&'a DeviceFlag> for FlagSource<'a> {
    fn from(f: &'a DeviceFlag) -> Self {
        FlagSource::Device(f)
    }
}

impl std::fmt::Debug for FlagSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = self.resource().addr().map_or(0, |a| a.shown());
        match self {
            FlagSource::Host(_) => write!(f, "FlagSource::Host({a:#x})"),
            FlagSource::Device(d) => write!(
                f,
                "FlagSource::Device({a:#x} on device {})",
                d.device().ordinal()
            ),
        }
    }
}

impl DeviceStream {
    /// The gate kernels' leading parameters for a wait on `flag`; an expired time limit bumps
    /// this stream's counter (reported by the next `synchronize`).
    fn gate_args<'a>(
        &'a self,
        flag: &'a FlagSource<'a>,
        value: u64,
        cond: WaitCondition,
        timeout: Option<Duration>,
    ) -> GateArgs<'a, dyn KernelParam + 'a> {
        let expired: &dyn KernelParam = &self.inner.expired;
        GateArgs::new(flag.param(), value, cond, timeout, Some(expired))
    }

    /// Makes later work on this stream wait until `flag` satisfies `cond` for `value`, by
    /// `strategy`. The host does not wait. This is the general form of every gate of a stream;
    /// [`wait_for_host_value`](Self::wait_for_host_value) and
    /// [`wait_for_host_value_ge`](Self::wait_for_host_value_ge) are MAX's names for two cases.
    ///
    /// * `flag`: a host [`CompletionFlag`] (or a [`CompletionFlagRef`]), or a [`DeviceFlag`] of
    ///   this device or of a peer.
    /// * [`GateStrategy::DriverWait`]: the driver's `cuStreamWaitValue64`, which costs nothing
    ///   while it waits. [`GateStrategy::Polling`]: the crate's one-thread polling kernel, which
    ///   releases the next kernel sooner, holds one block while it waits, takes a GPU-time limit,
    ///   and is also released by [`CompletionFlag::ABORTED`] (an equality driver wait is released
    ///   only by its own value).
    ///
    /// The flag stays allocated until the wait has passed, whatever handles are dropped.
    ///
    /// ```no_run
    /// use ferrocuda_driver::{CompletionFlag, Device, GateStrategy, WaitCondition};
    /// use std::time::Duration;
    /// # fn main() -> ferrocuda_driver::Result<()> {
    /// let device = Device::new(0)?;
    /// let stream = device.new_stream()?;
    /// let ready = CompletionFlag::new(&device)?;
    /// let poll = GateStrategy::Polling { timeout: Some(Duration::from_millis(50)) };
    /// stream.wait_value(&ready, 1, WaitCondition::GreaterOrEqual, poll)?;
    /// // ... gated GPU work ...
    /// ready.signal(1);
    /// stream.synchronize()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`](crate::Error::Unsupported) when this device cannot access a
    /// device flag's device (peer access) or the polling gate did not load;
    /// [`Error::Driver`](crate::Error::Driver) if the driver refuses. Under capture the gate is
    /// recorded and the graph owns the flag.
    pub fn wait_value<'f>(
        &self,
        flag: impl Into<FlagSource<'f>>,
        value: u64,
        cond: WaitCondition,
        strategy: GateStrategy,
    ) -> Result<()> {
        let flag = flag.into();
        match strategy {
            GateStrategy::DriverWait => self.driver_wait(flag, value, cond),
            GateStrategy::Polling { timeout } => self.poll(flag, value, cond, timeout),
        }
    }

    /// Makes later work on this stream wait until `flag` equals `value` (`cuStreamWaitValue64`,
    /// equality): MAX's `wait_for_host_value`, the same as
    /// [`wait_value`](Self::wait_value)`(flag, value, WaitCondition::Equal, GateStrategy::DriverWait)`.
    ///
    /// Only `value` releases an equality wait (not [`CompletionFlag::abort`]); prefer
    /// [`wait_for_host_value_ge`](Self::wait_for_host_value_ge) with increasing epochs.
    ///
    /// # Errors
    ///
    /// As [`wait_value`](Self::wait_value).
    #[inline]
    pub fn wait_for_host_value<'f>(
        &self,
        flag: impl Into<FlagSource<'f>>,
        value: u64,
    ) -> Result<()> {
        self.wait_value(flag, value, WaitCondition::Equal, GateStrategy::DriverWait)
    }

    /// Makes later work on this stream wait until `flag >= value` (the driver's cyclic comparison,
    /// `(flag - value) as i64 >= 0`; keep epochs below 2^63), the form that pairs with
    /// monotonically increasing epochs and with [`CompletionFlag::abort`]. The same as
    /// [`wait_value`](Self::wait_value)`(flag, value, WaitCondition::GreaterOrEqual, GateStrategy::DriverWait)`.
    ///
    /// # Errors
    ///
    /// As [`wait_value`](Self::wait_value).
    #[inline]
    pub fn wait_for_host_value_ge<'f>(
        &self,
        flag: impl Into<FlagSource<'f>>,
        value: u64,
    ) -> Result<()> {
        self.wait_value(
            flag,
            value,
            WaitCondition::GreaterOrEqual,
            GateStrategy::DriverWait,
        )
    }

    /// When the stream reaches this point, the GPU writes `value` to `flag`
    /// (`cuStreamWriteValue64`, preceded by a system-wide memory fence, so whoever sees the value
    /// sees the work before it). `flag` is a host [`CompletionFlag`] (pair with
    /// [`CompletionFlag::wait`] on the host) or a [`DeviceFlag`] of this device or of a peer (pair
    /// with [`wait_value`](Self::wait_value) on a stream of any device).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`](crate::Error::Unsupported) when this device cannot access a
    /// device flag's device (peer access); [`Error::Driver`](crate::Error::Driver) if the driver
    /// refuses.
    pub fn write_value<'f>(&self, flag: impl Into<FlagSource<'f>>, value: u64) -> Result<()> {
        self.driver_write("DeviceStream::write_value", flag.into(), value)
    }

    /// MAX's name for [`write_value`](Self::write_value) of a host flag: GPU → host.
    ///
    /// # Errors
    ///
    /// As [`write_value`](Self::write_value).
    #[inline]
    pub fn write_host_value<'f>(&self, flag: impl Into<FlagSource<'f>>, value: u64) -> Result<()> {
        self.driver_write("DeviceStream::write_host_value", flag.into(), value)
    }

    fn driver_wait(&self, flag: FlagSource<'_>, value: u64, cond: WaitCondition) -> Result<()> {
        let mut op = self
            .inner
            .begin("DeviceStream::wait_value", UnderCapture::Record)?;
        let a = op.address(flag.resource(), Access::Read)?;
        // SAFETY: the stream is live; the flag stays allocated until the GPU is past this wait
        // (its use is recorded, or the capturing graph owns it).
        op.enqueue(|s| unsafe { raw::stream_wait_value64(s, a, value, wait_flags(cond)) })
    }

    fn driver_write(&self, op: &'static str, flag: FlagSource<'_>, value: u64) -> Result<()> {
        let mut op = self.inner.begin(op, UnderCapture::Record)?;
        let a = op.address(flag.resource(), Access::Write)?;
        // SAFETY: as in `driver_wait`. The default flags put a system-wide memory fence before
        // the write, so whoever sees the value sees the work before it.
        op.enqueue(|s| unsafe { raw::stream_write_value64(s, a, value, write_flags()) })
    }

    /// The polling gate ([`GateStrategy::Polling`]): a one-thread kernel that waits until `flag`
    /// satisfies `cond` for `value` (or holds [`CompletionFlag::ABORTED`]); later work on the
    /// stream starts when it exits. The kernel was loaded when the device was opened, so this
    /// never loads code behind a waiting stream.
    fn poll(
        &self,
        flag: FlagSource<'_>,
        value: u64,
        cond: WaitCondition,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let gate = self.inner.device.inner.gate_kernels(&self.inner.device)?;
        let gate_args = self.gate_args(&flag, value, cond, timeout);
        let mut args = LaunchArgs::new();
        gate_args.push(&mut args);
        // SAFETY: `GateArgs` lays out ferrocuda_gate_poll's parameters; the flag and the counter
        // are passed as resources, so the launch keeps them alive; `expired` is only written
        // with a time limit, and then it is the counter.
        unsafe {
            self.launch_op(
                "DeviceStream::wait_value",
                &gate.poll,
                LaunchConfig::single_thread(),
                &mut args,
            )
        }
    }

    /// The polling relay: one one-thread kernel that waits until `from` satisfies `cond` for
    /// `value`, as the polling gate does, and then writes `write` to `to` — so a stream of another
    /// device gated on `to` is released by this GPU's store, with no host round trip and no second
    /// kernel boundary on this stream (where [`wait_value`](Self::wait_value) +
    /// [`write_value`](Self::write_value) enqueue two operations). Later work on this stream starts
    /// when the relay has written.
    ///
    /// `from` and `to` are host flags ([`CompletionFlag`] or [`CompletionFlagRef`]) or
    /// [`DeviceFlag`]s of this device or a peer. A system-wide
    /// memory fence precedes the store, so the work gated on `to` sees what this stream did before
    /// the relay. If `from` holds [`CompletionFlag::ABORTED`], or `timeout` (GPU time) expires
    /// first, the relay writes [`CompletionFlag::ABORTED`] to `to` instead of `write`: the waiters
    /// downstream are released and can tell that their input was not produced (the fused gate's
    /// `wait_flag` returns false); an expiry is also reported by the next
    /// [`synchronize`](Self::synchronize) as [`Error::GateExpired`](crate::Error::GateExpired).
    ///
    /// ```no_run
    /// use ferrocuda_driver::{CompletionFlag, Device, DeviceFlag, GateStrategy, WaitCondition};
    /// # fn main() -> ferrocuda_driver::Result<()> {
    /// let (gpu0, gpu1) = (Device::new(0)?, Device::new(1)?);
    /// gpu0.enable_peer_access(&gpu1)?;
    /// let (s0, s1) = (gpu0.new_stream()?, gpu1.new_stream()?);
    /// let host = CompletionFlag::new(&gpu0)?;
    /// let on_gpu1 = DeviceFlag::new(&gpu1)?;
    /// // GPU0 waits for the host's 1, then tells GPU1 at once.
    /// s0.relay_value(&host, 1, WaitCondition::GreaterOrEqual, &on_gpu1, 1, None)?;
    /// let poll = GateStrategy::Polling { timeout: None };
    /// s1.wait_value(&on_gpu1, 1, WaitCondition::GreaterOrEqual, poll)?;
    /// // ... GPU1's gated work ...
    /// host.signal(1);
    /// s1.synchronize()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`](crate::Error::Unsupported) when this device cannot reach `from`'s or `to`'s device (peer
    /// access) or the relay kernel did not load; [`Error::Driver`](crate::Error::Driver) if the launch fails.
    pub fn relay_value<'f, 't>(
        &self,
        from: impl Into<FlagSource<'f>>,
        value: u64,
        cond: WaitCondition,
        to: impl Into<FlagSource<'t>>,
        write: u64,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let (from, to) = (from.into(), to.into());
        let relay = &self
            .inner
            .device
            .inner
            .gate_kernels(&self.inner.device)?
            .relay;
        let gate_args = self.gate_args(&from, value, cond, timeout);
        let mut args = LaunchArgs::new();
        gate_args.push(&mut args);
        args.arg(to.param()).arg(&write);
        // SAFETY: ferrocuda_gate_relay(the gate's five, u64* target, u64 target_value), one
        // thread (`GateArgs` lays out the five). Both flags are passed as resources: the use path
        // checks that this device reaches them (peer access) and keeps them alive; `expired` is
        // the counter, written only when `timeout_ns != 0`.
        unsafe {
            self.launch_op(
                "DeviceStream::relay_value",
                relay,
                LaunchConfig::single_thread(),
                &mut args,
            )
        }
    }
}
