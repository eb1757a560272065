//! The gates: how the GPU waits for a value in memory, in one place.
//!
//! A gate holds a stream (or a graph branch) until an 8-byte flag satisfies a [`WaitCondition`]
//! for a value. There are two mechanisms, and both streams and graphs build them from here:
//!
//! * the driver's wait (`cuStreamWaitValue64`, a batch mem-op node in a graph): the condition's
//!   mem-op flags are [`wait_flags`], the graph's mem-op parameters [`wait_op`] and [`write_op`];
//! * the crate's gate kernels (`GATE_PTX`, compiled from `gate.cu` by `cargo xtask ptx` and
//!   checked in): `GateKernel::Poll`, `GateKernel::Relay` and `GateKernel::Kick`. Their
//!   leading parameters are laid out by [`GateArgs`] alone.
//!
//! The abort value (`ABORTED`) releases every greater-or-equal gate and tells host waiters the
//! producer gave up (`flag_outcome`). The runtime side sees a flag only as a `HostWord`.

use crate::error::{Error, Result};
use ferrocuda_sys::{
    CUstreamBatchMemOpParams, CUstreamBatchMemOpType, CUstreamWaitValue_flags,
    CUstreamWriteValue_flags,
};
use std::time::Duration;

/// The crate's own kernels (`gate.cu` beside this file), compiled by `cargo xtask ptx`.
pub(crate) const GATE_PTX: &str = include_str!("gate.ptx");

/// The gated device loop's kernels (`loop.cu` beside this file), compiled by `cargo xtask ptx` to
/// one SASS per architecture: they set conditional handles, a call the driver resolves only in
/// cubins.
pub(crate) const LOOP_FATBIN: &[u8] = include_bytes!("loop.fatbin");

/// The value that aborts a flag: `2^63 - 1`, the largest a cyclic greater-or-equal comparison
/// still orders after every epoch below 2^63 (the gate kernels' `kAborted`).
pub(crate) const ABORTED: u64 = i64::MAX as u64;

/// The kernels in `GATE_PTX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GateKernel {
    /// `ferrocuda_gate_poll(`[`GateArgs`]`)`: the polling gate; one thread.
    Poll,
    /// `ferrocuda_gate_relay(`[`GateArgs`]`, u64* target, u64 target_value)`: the polling gate,
    /// then a system-scope release store to `target`; one thread.
    Relay,
    /// `ferrocuda_kick(u64* counter, u64* slot)`: the trampoline's GPU-write kickoff as a graph
    /// kernel node; one thread.
    Kick,
    /// `ferrocuda_loop_begin(u64* state, u64 condition, u64 max_steps, const u64* stop,
    /// const u64* flag)` (`LOOP_FATBIN`): a device loop's launch begins; one thread.
    LoopBegin,
    /// `ferrocuda_loop_kick(u64* state, u64* slot, const u64* stop, u64 condition)`: a device
    /// loop's step is kicked off.
    LoopKick,
    /// `ferrocuda_loop_gate(const u64* flag, u64* state, u64 condition, u64 max_steps,
    /// const u64* stop, u64 limit_ns)`: a device loop's step waits for its value.
    LoopGate,
    /// `ferrocuda_loop_end(u64* state, u64* steps, u64* outcome, u64* ended)`: a device loop's
    /// launch ended.
    LoopEnd,
}

impl GateKernel {
    /// The kernel's symbol in `GATE_PTX`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            GateKernel::Poll => "ferrocuda_gate_poll",
            GateKernel::Relay => "ferrocuda_gate_relay",
            GateKernel::Kick => "ferrocuda_kick",
            GateKernel::LoopBegin => "ferrocuda_loop_begin",
            GateKernel::LoopKick => "ferrocuda_loop_kick",
            GateKernel::LoopGate => "ferrocuda_loop_gate",
            GateKernel::LoopEnd => "ferrocuda_loop_end",
        }
    }
}

/// What the runtime side needs of a flag: its 8 bytes of mapped pinned memory. The api side's
/// flag implements it; an `Arc<dyn HostWord>` keeps the flag's slot allocated while held.
pub(crate) trait HostWord: Send + Sync {
    /// Acquire load of the current value.
    fn load(&self) -> u64;
    /// Release store of `value`, unless the word holds the abort value (a producer's late signal
    /// never erases an abort); futures waiting for the word are woken without waiting for the
    /// waiter's next check.
    fn signal_unless_aborted(&self, value: u64);
    /// The devices (bit `d`: ordinal `d`) whose fault fails the futures waiting for the word: its
    /// own device and those whose work may write it.
    fn devices(&self) -> u64;
    /// How long the futures waiting for the word waited, for the waiter's predicted spin.
    fn history(&self) -> &crate::runtime::waiter::WaitHistory;
}

/// How the stream compares a flag with the awaited value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum WaitCondition {
    /// The flag equals the value (MAX's `wait_for_host_value`).
    Equal = 0,
    /// The flag has reached the value, compared as the driver's `CU_STREAM_WAIT_VALUE_GEQ` does:
    /// cyclically, `(flag - value) as i64 >= 0`. The one to use with monotonically increasing
    /// epochs (below 2^63), since a late waiter or a replay can never miss a signal.
    GreaterOrEqual = 1,
}

impl WaitCondition {
    /// Whether `current` satisfies the condition for `value`.
    pub fn holds(self, current: u64, value: u64) -> bool {
        match self {
            WaitCondition::Equal => current == value,
            // The driver's GEQ is a cyclic comparison that ignores wrap-around.
            WaitCondition::GreaterOrEqual => current.wrapping_sub(value) as i64 >= 0,
        }
    }
}

/// The driver's wait flags for a condition (`cuStreamWaitValue64`, batch mem-op wait nodes): the
/// one place a [`WaitCondition`] becomes mem-op flags.
pub fn wait_flags(cond: WaitCondition) -> u32 {
    match cond {
        WaitCondition::Equal => CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_EQ.0,
        WaitCondition::GreaterOrEqual => CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ.0,
    }
}

/// The mem-op flags of a GPU write of a flag: the default, a system-wide memory fence before the
/// write, so whoever sees the value sees the work before it.
pub fn write_flags() -> u32 {
    CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT.0
}

/// A batch mem-op that waits until the 8 bytes at `address` satisfy `cond` for `value`.
pub fn wait_op(address: u64, value: u64, cond: WaitCondition) -> CUstreamBatchMemOpParams {
    let mut op = CUstreamBatchMemOpParams::default();
    op.waitValue.operation = CUstreamBatchMemOpType::CU_STREAM_MEM_OP_WAIT_VALUE_64;
    op.waitValue.address = address;
    op.waitValue.__bindgen_anon_1.value64 = value;
    op.waitValue.flags = wait_flags(cond);
    op
}

/// A batch mem-op that writes `value` to the 8 bytes at `address` (after a system-wide fence).
pub fn write_op(address: u64, value: u64) -> CUstreamBatchMemOpParams {
    let mut op = CUstreamBatchMemOpParams::default();
    op.writeValue.operation = CUstreamBatchMemOpType::CU_STREAM_MEM_OP_WRITE_VALUE_64;
    op.writeValue.address = address;
    op.writeValue.__bindgen_anon_1.value64 = value;
    op.writeValue.flags = write_flags();
    op
}

/// A time limit in the gate kernels' unit: nanoseconds, 0 for none, saturating (a limit too long
/// for 64 bits of nanoseconds is "as long as it takes", never a short one), at least 1 ns.
pub fn timeout_ns(timeout: Option<Duration>) -> u64 {
    timeout.map_or(0, |t| {
        u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1)
    })
}

/// Where [`GateArgs`] writes a gate kernel's parameters: the api side's `LaunchArgs`, which
/// resolves the flags (`F`) through the use path, so the launch records and keeps them.
pub trait GateParamSink<'a, F: ?Sized> {
    /// A flag's address (`const u64*` / `u64*`).
    fn flag(&mut self, flag: &'a F);
    /// A 64-bit value.
    fn u64(&mut self, value: &'a u64);
    /// A 32-bit value.
    fn u32(&mut self, value: &'a u32);
}

/// The leading parameters of the gate kernels (`GateKernel::Poll`, `GateKernel::Relay`), the
/// one place they are laid out: `(const u64* flag, u64 value, u32 cond, u64 timeout_ns,
/// u64* expired)`. `expired` is bumped when a time limit expires and passed only with one (a null
/// pointer otherwise, which the kernel never writes).
pub struct GateArgs<'a, F: ?Sized> {
    flag: &'a F,
    value: u64,
    cond: u32,
    timeout_ns: u64,
    expired: Option<&'a F>,
    null: u64,
}

impl<'a, F: ?Sized> GateArgs<'a, F> {
    /// Parameters for a gate on `flag` for `cond`/`value`, with an optional GPU-time limit whose
    /// expiry bumps `expired` (ignored without a limit).
    pub fn new(
        flag: &'a F,
        value: u64,
        cond: WaitCondition,
        timeout: Option<Duration>,
        expired: Option<&'a F>,
    ) -> Self {
        let timeout_ns = timeout_ns(timeout);
        GateArgs {
            flag,
            value,
            cond: cond as u32,
            timeout_ns,
            expired: expired.filter(|_| timeout_ns != 0),
            null: 0,
        }
    }

    /// Whether the gate has a time limit (then it needs an expiry counter).
    pub fn has_limit(&self) -> bool {
        self.timeout_ns != 0
    }

    /// Appends the five parameters, in the kernels' order.
    pub fn push(&'a self, sink: &mut impl GateParamSink<'a, F>) {
        sink.flag(self.flag);
        sink.u64(&self.value);
        sink.u32(&self.cond);
        sink.u64(&self.timeout_ns);
        match self.expired {
            Some(c) => sink.flag(c),
            None => sink.u64(&self.null),
        }
    }
}

/// The outcome of a wait for `value` once the flag holds `seen`: `None` while not reached. The
/// abort value is checked first: it satisfies every greater-or-equal wait (that is how it releases
/// the GPU's), yet a host waiter must learn that the producer gave up, unless `value` is the abort
/// value itself.
pub(crate) fn flag_outcome(seen: u64, cond: WaitCondition, value: u64) -> Option<Result<u64>> {
    if seen == ABORTED && value != ABORTED {
        Some(Err(Error::Aborted))
    } else if cond.holds(seen, value) {
        Some(Ok(seen))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A limit too long for 64 bits of nanoseconds means "wait as long as it takes", never a
    /// wrapped-around short one; a zero limit is 1 ns (0 would mean no limit).
    #[test]
    fn gate_time_limits_saturate() {
        assert_eq!(timeout_ns(None), 0);
        assert_eq!(timeout_ns(Some(Duration::ZERO)), 1);
        assert_eq!(timeout_ns(Some(Duration::from_micros(1500))), 1_500_000);
        assert_eq!(
            timeout_ns(Some(Duration::from_secs(18_446_744_074))),
            u64::MAX
        );
        assert_eq!(timeout_ns(Some(Duration::MAX)), u64::MAX);
    }

    #[test]
    fn wait_conditions_map_to_the_drivers_flags() {
        assert_eq!(
            wait_flags(WaitCondition::Equal),
            CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_EQ.0
        );
        assert_eq!(
            wait_flags(WaitCondition::GreaterOrEqual),
            CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ.0
        );
        let w = wait_op(0x1000, 7, WaitCondition::GreaterOrEqual);
        // SAFETY: `wait_op` wrote the wait variant.
        let (addr, flags) = unsafe { (w.waitValue.address, w.waitValue.flags) };
        assert_eq!(
            (addr, flags),
            (0x1000, wait_flags(WaitCondition::GreaterOrEqual))
        );
    }

    /// A sink that records what the builder wrote, by kind.
    #[derive(Default)]
    struct Record(Vec<String>);
    impl<'a> GateParamSink<'a, str> for Record {
        fn flag(&mut self, flag: &'a str) {
            self.0.push(format!("flag {flag}"));
        }
        fn u64(&mut self, value: &'a u64) {
            self.0.push(format!("u64 {value}"));
        }
        fn u32(&mut self, value: &'a u32) {
            self.0.push(format!("u32 {value}"));
        }
    }

    #[test]
    fn gate_args_follow_the_kernels_order_and_pass_the_counter_only_with_a_limit() {
        let a = GateArgs::new("f", 9, WaitCondition::GreaterOrEqual, None, Some("c"));
        let mut r = Record::default();
        a.push(&mut r);
        assert_eq!(r.0, ["flag f", "u64 9", "u32 1", "u64 0", "u64 0"]);
        let limit = Some(Duration::from_micros(3));
        let a = GateArgs::new("f", 2, WaitCondition::Equal, limit, Some("c"));
        let mut r = Record::default();
        a.push(&mut r);
        assert_eq!(r.0, ["flag f", "u64 2", "u32 0", "u64 3000", "flag c"]);
        assert!(a.has_limit());
    }
}
