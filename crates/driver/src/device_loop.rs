//! The gated device loop's host side: [`LoopKickoff`], the kernels and flags ferrocuda-graph
//! builds a loop that stays on the GPU from, and [`LoopOutcome`], how a launch of it ended.
//!
//! One launch of such a graph runs a WHILE conditional node whose body is, per step,
//! [kick] → [gate] → the user's consume and ack kernels:
//!
//! * **kick** (`ferrocuda_loop_kick`) bumps the loop's kick count in device memory and publishes
//!   it to a mapped slot. The loop's own crate thread (`ferrocuda-loop`, spinning while a launch
//!   runs) sees the new count, runs the host closure with the step's number itself (no hand-off
//!   on the step's path) and then stores that number in the loop's flag (never over an abort).
//!   The thread serves this loop alone, so a closure that blocks holds back no other stream. If
//!   the thread cannot be started, the notifier and the workers answer instead. The kick reads
//!   no mapped memory: the gate's launch waits for
//!   it, so a bus round trip there would lengthen every step.
//! * **gate** (`ferrocuda_loop_gate`) polls the flag until it reaches the kick count (cyclic
//!   greater-or-equal: epochs, no reset), then counts the step. It ends the loop (clears the
//!   condition) after the last step, or at once when the flag is aborted, the host asked it to
//!   stop, or the launch's time limit passed. The stop word is loaded beside the flag on the
//!   first poll (both loads in flight at once) and every few dozen polls after it.
//!
//! Before the WHILE node, `ferrocuda_loop_begin` resets the launch's words and sets the condition;
//! after it, `ferrocuda_loop_end` publishes the steps run and the outcome to mapped memory, and
//! bumps the count of ended launches, which tells the loop's thread to stop watching the slot.
//!
//! No host API call is made per step: the host only answers kicks by storing to pinned memory.
//! The kernels are `loop.cu` in `runtime/gates`, shipped as a fatbin (one SASS per architecture)
//! because they set a conditional handle, which only a loaded cubin can do.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::flag::CompletionFlag;
use crate::memory::DeviceBuffer;
use crate::module::{Function, LaunchArgs, Module};
use crate::runtime::gates::GateKernel;
use crate::runtime::trampoline::{self, GraphKick, KickSignal};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Words of a loop's device state (`ferrocuda/loop.cuh`'s `LoopWord`).
const STATE_WORDS: usize = 8;

/// The loop's kernels, loaded with the crate's gates when the device is opened.
#[derive(Clone)]
pub(crate) struct LoopKernels {
    begin: Function,
    kick: Function,
    gate: Function,
    end: Function,
}

impl LoopKernels {
    pub(crate) fn from_module(m: &Module) -> Result<Self> {
        Ok(LoopKernels {
            begin: m.function(GateKernel::LoopBegin.name())?,
            kick: m.function(GateKernel::LoopKick.name())?,
            gate: m.function(GateKernel::LoopGate.name())?,
            end: m.function(GateKernel::LoopEnd.name())?,
        })
    }
}

/// How a launch of a gated device loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoopEnd {
    /// It ran every step it was built for.
    Completed,
    /// The host asked it to stop ([`LoopKickoff::stop`]).
    Stopped,
    /// A kernel of the body cleared the loop's condition (`ferrocuda::end_loop`).
    EndedOnDevice,
    /// The step's producer gave up: the loop's flag was aborted ([`LoopKickoff::abort`]).
    Aborted,
    /// The launch's time limit passed.
    TimedOut,
}

impl LoopEnd {
    fn from_word(w: u64) -> Option<LoopEnd> {
        Some(match w {
            1 => LoopEnd::Completed,
            2 => LoopEnd::Stopped,
            3 => LoopEnd::EndedOnDevice,
            4 => LoopEnd::Aborted,
            5 => LoopEnd::TimedOut,
            _ => return None,
        })
    }
}

/// How the last launch of a gated device loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoopOutcome {
    /// Steps whose value was produced and whose gate passed, in that launch.
    pub steps: u64,
    /// Why the loop ended.
    pub end: LoopEnd,
}

/// Which of a loop's kernel nodes [`LoopKickoff::node`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoopNode {
    /// Before the WHILE node: resets the launch and sets the condition.
    Begin,
    /// First in the body: the step's kickoff.
    Kick,
    /// After the kick: waits for the step's value, counts the step, ends the loop.
    Gate,
    /// After the WHILE node: publishes the launch's outcome.
    End,
}

/// The values a loop's kernel nodes take besides its buffers and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopParams {
    /// The WHILE node's conditional handle (`CUgraphConditionalHandle`).
    pub condition: u64,
    /// Steps per launch (at most).
    pub max_steps: u64,
    /// The launch's time limit on the GPU's clock, in nanoseconds (0: none).
    pub limit_ns: u64,
}

/// The host side of a gated device loop, for ferrocuda-graph: its kernels, its device state, the
/// flags its steps and its end are published in, and the trampoline kick that runs the host
/// closure once per step.
///
/// Cloning shares the loop. The graph owns a clone until its last launch has finished.
#[derive(Clone)]
pub struct LoopKickoff {
    inner: Arc<Inner>,
}

struct Inner {
    kick: Arc<GraphKick>,
    kernels: LoopKernels,
    /// `STATE_WORDS` words of device memory (`ferrocuda/loop.cuh`).
    state: DeviceBuffer<u64>,
    /// The mapped slot the kick writes its count to.
    slot: CompletionFlag,
    /// The step's value: the loop's thread stores the step's count after the closure ran.
    flag: CompletionFlag,
    /// Non-zero: the host asked the loop to stop.
    stop: CompletionFlag,
    /// The last ended launch's steps and outcome, and the number of ended launches.
    steps_out: CompletionFlag,
    outcome_out: CompletionFlag,
    ended_out: CompletionFlag,
    /// Launches recorded by [`LoopKickoff::launched`].
    launches: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle (and every graph owning one) is gone: no launch will be recorded.
        self.kick.close();
    }
}

impl LoopKickoff {
    /// A loop whose steps run `f` on a crate thread, with the step's number (counting from 1
    /// over every launch of the loop); the step's gate passes once `f` returned (or panicked: the
    /// panic is reported by [`take_panics`](Self::take_panics)).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if the loop's kernels did not load on this device (they need a
    /// driver with conditional graph nodes and an architecture the crate ships SASS for);
    /// [`Error::Driver`] if its memory cannot be allocated.
    pub fn new(device: &Device, f: impl FnMut(u64) + Send + 'static) -> Result<Self> {
        let kernels = match &device.inner.gate_kernels(device)?.loops {
            Ok(k) => k.clone(),
            Err(why) => {
                tracing::debug!(%why, "no gated device loop on this device");
                return Err(device.unsupported(
                    "the gated device loop (its kernels did not load on this device)",
                ));
            }
        };
        trampoline::start_workers();
        trampoline::start_notifier(&device.inner.rt)?;
        let s = device.new_stream()?;
        let state = s.alloc_zeroed::<u64>(STATE_WORDS)?;
        s.synchronize_timeout(Duration::from_secs(10))?;
        let flag = || CompletionFlag::new(device);
        let (slot, value, stop) = (flag()?, flag()?, flag()?);
        let (steps_out, outcome_out, ended_out) = (flag()?, flag()?, flag()?);
        let kick = GraphKick::register(
            slot.inner().clone(),
            value.inner().clone(),
            KickSignal::Count {
                ended: ended_out.inner().clone(),
            },
            Box::new(f),
        );
        Ok(LoopKickoff {
            inner: Arc::new(Inner {
                kick,
                kernels,
                state,
                slot,
                flag: value,
                stop,
                steps_out,
                outcome_out,
                ended_out,
                launches: AtomicU64::new(0),
            }),
        })
    }

    /// The kernel of `node` (one block of one thread), with its parameters appended to `args` in
    /// the kernel's order; buffers and flags go in as resources, so the graph's use path checks
    /// and keeps them. The one place the loop kernels' parameters are laid out.
    pub fn node<'a>(
        &'a self,
        node: LoopNode,
        params: &'a LoopParams,
        args: &mut LaunchArgs<'a>,
    ) -> Function {
        let i = &*self.inner;
        match node {
            LoopNode::Begin => {
                args.arg(&i.state)
                    .arg(&params.condition)
                    .arg(&params.max_steps)
                    .arg(&i.stop)
                    .arg(&i.flag);
                i.kernels.begin.clone()
            }
            LoopNode::Kick => {
                args.arg(&i.state)
                    .arg(&i.slot)
                    .arg(&i.stop)
                    .arg(&params.condition);
                i.kernels.kick.clone()
            }
            LoopNode::Gate => {
                args.arg(&i.flag)
                    .arg(&i.state)
                    .arg(&params.condition)
                    .arg(&params.max_steps)
                    .arg(&i.stop)
                    .arg(&params.limit_ns);
                i.kernels.gate.clone()
            }
            LoopNode::End => {
                args.arg(&i.state)
                    .arg(&i.steps_out)
                    .arg(&i.outcome_out)
                    .arg(&i.ended_out);
                i.kernels.end.clone()
            }
        }
    }

    /// Records one more launch of a graph holding the loop, just before it: the loop's thread
    /// watches its kicks until that launch ended.
    pub fn launched(&self) {
        self.inner.launches.fetch_add(1, Ordering::AcqRel);
        self.inner.kick.launched();
    }

    /// Undoes [`launched`](Self::launched) after a failed launch.
    pub fn cancel_launch(&self) {
        self.inner.launches.fetch_sub(1, Ordering::AcqRel);
        self.inner.kick.cancel_launch();
    }

    /// Panics of the closure since the last call: (count, first message).
    pub fn take_panics(&self) -> Option<(usize, String)> {
        self.inner.kick.take_panics()
    }

    /// Asks running and later launches to stop: the loop ends at its next kick, or while a gate
    /// waits (that step is not counted). Stays in force until [`resume`](Self::resume).
    pub fn stop(&self) {
        self.inner.stop.signal(1);
    }

    /// Withdraws [`stop`](Self::stop) for launches that begin afterwards.
    pub fn resume(&self) {
        self.inner.stop.signal(0);
    }

    /// Aborts the loop's flag: the gate waiting for a step's value ends the loop, reporting
    /// [`LoopEnd::Aborted`], and so does every later launch. The loop thread's signals never
    /// overwrite the abort.
    pub fn abort(&self) {
        self.inner.flag.abort();
    }

    /// The loop's device state, for kernels of the body that check whether the current step was
    /// produced (`ferrocuda::loop_step_ok(state)` in `ferrocuda/loop.cuh`).
    pub fn state(&self) -> &DeviceBuffer<u64> {
        &self.inner.state
    }

    /// How the last launch ended, once every launch recorded so far has ended (`None` before).
    pub fn outcome(&self) -> Option<LoopOutcome> {
        let i = &*self.inner;
        let launches = i.launches.load(Ordering::Acquire);
        if launches == 0 || i.ended_out.load() < launches {
            return None;
        }
        // The end kernel stores the count last, with release: the two words before it are the
        // last launch's.
        Some(LoopOutcome {
            steps: i.steps_out.load(),
            end: LoopEnd::from_word(i.outcome_out.load())?,
        })
    }

    /// Waits on the host until every launch recorded so far has ended, then returns how the last
    /// one did.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if no launch was recorded; [`Error::Timeout`] if the launches
    /// did not end within `timeout`.
    pub fn wait(&self, timeout: Duration) -> Result<LoopOutcome> {
        let i = &*self.inner;
        let launches = i.launches.load(Ordering::Acquire);
        if launches == 0 {
            return Err(Error::InvalidArgument(
                "the loop was never launched: there is no outcome to wait for".into(),
            ));
        }
        i.ended_out
            .wait(crate::WaitCondition::GreaterOrEqual, launches, timeout)?;
        self.outcome().ok_or_else(|| {
            Error::InvalidArgument("the loop's end kernel published an unknown outcome".into())
        })
    }
}

impl std::fmt::Debug for LoopKickoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopKickoff")
            .field("launches", &self.inner.launches.load(Ordering::Relaxed))
            .field("outcome", &self.outcome())
            .finish_non_exhaustive()
    }
}
