//! [`FusedGate`]: where a gated kernel waits before its work (feature `launch`).
//!
//! The device side is `cuda/include/ferrocuda/gate.cuh` (`ferrocuda::wait_flag`); this is what a
//! launcher passes it. `docs/gates.md` in the repository compares the three gate forms.

use ferrocuda_driver::{CompletionFlagRef, LaunchArgs, WaitCondition};
use std::time::Duration;

/// A fused gate: the kernel launched with it waits, in its own prologue, until `flag` satisfies
/// `cond` for `value`, then does its work.
///
/// Thread 0 of every block polls the flag (`ld.acquire.sys`, `__nanosleep(32)` between loads)
/// while the block waits at a barrier, so no launch sits between
/// [`CompletionFlag::signal`](ferrocuda_driver::CompletionFlag::signal) and the work: it starts
/// sooner than behind the driver's wait (the target is ≤ 3 µs p50 from the signal; the measured
/// figures are in `docs/hardware-facts.md` in the repository). What that costs: every block of the
/// gated kernel is resident on its SM for the whole wait, and each polls, taking a share of the
/// GPU's memory bandwidth (measured on the same page). Prefer the driver's
/// wait ([`DeviceStream::wait_value`](ferrocuda_driver::DeviceStream::wait_value)) for long waits,
/// many waiters, or when the SMs are needed meanwhile.
///
/// * [`CompletionFlag::abort`](ferrocuda_driver::CompletionFlag::abort) releases the gate: the
///   kernel returns without its work (the data it guarded was never produced), and the stream goes
///   on.
/// * [`with_time_limit`](Self::with_time_limit) bounds the wait in GPU time: a block that gives up
///   skips its work and adds 1 to a counter the caller owns and reads.
///
/// ```ignore
/// // Needs the `launch` feature and an H100/H200.
/// let gate = FusedGate::new(&flag, epoch, WaitCondition::GreaterOrEqual)
///     .with_time_limit(Duration::from_millis(100), &expired);
/// kernels.gated_scale_f32(&stream, gate, &src, &mut dst, 2.0)?;
/// flag.signal(epoch); // the kernel runs now
/// ```
#[derive(Clone, Copy)]
pub struct FusedGate<'a> {
    flag: CompletionFlagRef<'a>,
    value: u64,
    cond: WaitCondition,
    limit: Option<(Duration, CompletionFlagRef<'a>)>,
}

impl std::fmt::Debug for FusedGate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedGate")
            // Display only: the launch gets the address through the use path.
            .field("flag", &{
                #[allow(clippy::disallowed_methods)]
                let a = self.flag.device_ptr();
                format_args!("{a:#x}").to_string()
            })
            .field("value", &self.value)
            .field("cond", &self.cond)
            .field("timeout", &self.limit.map(|(t, _)| t))
            .finish()
    }
}

impl<'a> FusedGate<'a> {
    /// A gate that waits, with no time limit, until `flag` satisfies `cond` for `value` (or is
    /// aborted).
    pub fn new(flag: impl Into<CompletionFlagRef<'a>>, value: u64, cond: WaitCondition) -> Self {
        FusedGate {
            flag: flag.into(),
            value,
            cond,
            limit: None,
        }
    }

    /// This gate, giving up after `timeout` of GPU time (`%globaltimer`, counted per block from
    /// when it starts waiting; rounded up to at least 1 ns). Each block that gives up skips its
    /// work and adds 1 to `expired` (a [`CompletionFlag`] used as a counter: read it with `load`
    /// once the kernel has finished, clear it with `reset` when no gate can still bump it).
    ///
    /// The add is atomic among one GPU's blocks (a device-scope atomic: PCIe hosts do not make a
    /// GPU's atomics on mapped host memory atomic with the host's or another GPU's), so use one
    /// counter per device and do not write it from the host while a gate may still add to it.
    ///
    /// [`CompletionFlag`]: ferrocuda_driver::CompletionFlag
    pub fn with_time_limit(
        self,
        timeout: Duration,
        expired: impl Into<CompletionFlagRef<'a>>,
    ) -> Self {
        FusedGate {
            limit: Some((timeout, expired.into())),
            ..self
        }
    }

    /// The flag waited on.
    pub fn flag(&self) -> CompletionFlagRef<'a> {
        self.flag
    }

    /// The value waited for.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// How the flag is compared with the value.
    pub fn condition(&self) -> WaitCondition {
        self.cond
    }

    /// The time limit, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.limit.map(|(t, _)| t)
    }

    /// The five kernel parameters of `ferrocuda::wait_flag`, in its order, as values a launch can
    /// borrow: `(const u64* flag, u64 value, u32 cond, u64 timeout_ns, u64* expired)`.
    pub(crate) fn params(&self) -> GateParams<'a> {
        let (timeout_ns, expired) = match self.limit {
            Some((t, counter)) => (
                u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1),
                Some(counter),
            ),
            None => (0, None),
        };
        GateParams {
            flag: self.flag,
            value: self.value,
            cond: self.cond as u32,
            timeout_ns,
            expired,
            null: 0,
        }
    }
}

/// [`FusedGate::params`]: plain values and flags, borrowed by a launch's arguments. The flags
/// are passed as resources, so the launch's use path keeps them alive until the kernel has run.
pub(crate) struct GateParams<'f> {
    flag: CompletionFlagRef<'f>,
    value: u64,
    cond: u32,
    timeout_ns: u64,
    /// The expiry counter, with a time limit (else a null pointer is passed).
    expired: Option<CompletionFlagRef<'f>>,
    null: u64,
}

impl GateParams<'_> {
    /// Appends the five parameters to `args`.
    pub(crate) fn push<'a>(&'a self, args: &mut LaunchArgs<'a>) {
        args.arg(&self.flag)
            .arg(&self.value)
            .arg(&self.cond)
            .arg(&self.timeout_ns);
        match &self.expired {
            Some(c) => args.arg(c),
            None => args.arg(&self.null),
        };
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests compare the encoded addresses
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// The parameters `ferrocuda::wait_flag` receives: no limit is (0, null); a limit passes its
    /// nanoseconds (at least 1, saturating) and the counter's address; the condition is the
    /// header's `Cond` (0 equal, 1 greater-or-equal).
    #[test]
    fn gate_params_encode_what_the_header_expects() {
        let (flag_slot, counter_slot) = (AtomicU64::new(0), AtomicU64::new(0));
        let addr = |s: &AtomicU64| s as *const AtomicU64 as u64;
        // SAFETY: both slots are aligned and outlive the refs (nothing is launched).
        let (flag, counter) = unsafe {
            (
                CompletionFlagRef::from_address(addr(&flag_slot)),
                CompletionFlagRef::from_address(addr(&counter_slot)),
            )
        };
        let p = FusedGate::new(flag, 7, WaitCondition::Equal).params();
        assert_eq!(
            (
                p.flag.device_ptr(),
                p.value,
                p.cond,
                p.timeout_ns,
                p.expired.map(|e| e.device_ptr())
            ),
            (addr(&flag_slot), 7, 0, 0, None)
        );
        let g = FusedGate::new(flag, 9, WaitCondition::GreaterOrEqual)
            .with_time_limit(Duration::from_micros(1500), counter);
        let p = g.params();
        assert_eq!(
            (p.cond, p.timeout_ns, p.expired.map(|e| e.device_ptr())),
            (1, 1_500_000, Some(addr(&counter_slot)))
        );
        assert_eq!(g.timeout(), Some(Duration::from_micros(1500)));
        let zero = g.with_time_limit(Duration::ZERO, counter).params();
        assert_eq!(zero.timeout_ns, 1, "a zero limit must not mean no limit");
        let huge = g.with_time_limit(Duration::MAX, counter).params();
        assert_eq!(huge.timeout_ns, u64::MAX);
    }

    /// The header's abort value and condition codes are the driver crate's.
    #[test]
    fn header_constants_match_the_driver_crate() {
        let header = include_str!("../cuda/include/ferrocuda/gate.cuh");
        let aborted = format!(
            "kAborted = {:#x}ull",
            ferrocuda_driver::CompletionFlag::ABORTED
        );
        assert!(header.contains(&aborted), "gate.cuh lacks `{aborted}`");
        assert!(header.contains(&format!("kEqual = {}", WaitCondition::Equal as u32)));
        assert!(header.contains(&format!("kGeq = {}", WaitCondition::GreaterOrEqual as u32)));
    }
}
