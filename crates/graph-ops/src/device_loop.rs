//! [`Graph::gated_loop`]: the canonical gated loop as one launch, and [`DeviceLoop`], its handle.

use crate::conditional::{Body, Condition};
use crate::error::Result;
use crate::graph::{Graph, Node, lock};
use ferrocuda_driver::{
    DeviceBuffer, LaunchArgs, LaunchConfig, LoopKickoff, LoopNode, LoopOutcome, LoopParams,
};
use std::time::Duration;

/// How a [`Graph::gated_loop`] ends, besides the host's [`DeviceLoop::stop`], an abort
/// ([`DeviceLoop::abort`]) and a kernel of the body calling `ferrocuda::end_loop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoopLimits {
    /// Steps per launch, at most (`None`: no limit).
    pub steps: Option<u64>,
    /// Each launch ends at the first gate after this much GPU time since it began, also while
    /// the gate waits (`None`: no limit).
    pub time: Option<Duration>,
}

impl LoopLimits {
    /// At most `n` steps per launch.
    pub fn steps(n: u64) -> Self {
        LoopLimits {
            steps: Some(n),
            time: None,
        }
    }

    /// The same, with a time limit per launch.
    pub fn with_time_limit(self, limit: Duration) -> Self {
        LoopLimits {
            time: Some(limit),
            ..self
        }
    }
}

/// The handle of a gated device loop ([`Graph::gated_loop`]): stop or abort it from the host, and
/// read how a launch ended. `Send + Sync`, cheap to clone; it does not keep the graph alive.
#[derive(Clone, Debug)]
pub struct DeviceLoop {
    kickoff: LoopKickoff,
    condition: Condition,
}

impl DeviceLoop {
    /// Asks running and later launches to stop: the loop ends at its next kick, or while a gate
    /// waits (that step is not counted; `ferrocuda::loop_step_ok` is false in it). Stays in force
    /// until [`resume`](Self::resume).
    pub fn stop(&self) {
        self.kickoff.stop();
    }

    /// Withdraws [`stop`](Self::stop) for launches that begin afterwards.
    pub fn resume(&self) {
        self.kickoff.resume();
    }

    /// Aborts the loop: the gate waiting for a step's value ends the loop with
    /// [`LoopEnd::Aborted`](ferrocuda_driver::LoopEnd::Aborted), and so does every later launch
    /// (a worker finishing a step afterwards never overwrites the abort).
    pub fn abort(&self) {
        self.kickoff.abort();
    }

    /// How the last launch ended, once every launch so far has ended (`None` before).
    pub fn outcome(&self) -> Option<LoopOutcome> {
        self.kickoff.outcome()
    }

    /// Waits on the host until every launch so far has ended; how the last one did.
    ///
    /// # Errors
    ///
    /// As [`LoopKickoff::wait`].
    pub fn wait(&self, timeout: Duration) -> Result<LoopOutcome> {
        Ok(self.kickoff.wait(timeout)?)
    }

    /// The loop's device state, for kernels of the body: `ferrocuda::loop_step_ok(state)` tells
    /// whether the current step's value was produced.
    pub fn state(&self) -> &DeviceBuffer<u64> {
        self.kickoff.state()
    }

    /// The loop's WHILE condition, for kernels of the body that end the loop
    /// (`ferrocuda::end_loop(condition)` in `ferrocuda/loop.cuh`).
    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// Host-closure panics since the last call: (count, first message).
    pub fn take_panics(&self) -> Option<(usize, String)> {
        self.kickoff.take_panics()
    }
}

impl Graph {
    /// The canonical gated loop as one launch: a WHILE conditional node whose body runs, per
    /// step, **kick → gate → `body`'s nodes**, with no host API call per step.
    ///
    /// * The kick hands step *i* (counting from 1 over every launch) to a crate worker, which runs
    ///   `produce(i)` and then publishes the step's value (the notifier watches the kick in mapped
    ///   memory; no host function runs).
    /// * The gate, a one-thread kernel, waits for it, counts the step, and ends the loop after
    ///   `limits.steps`, past `limits.time`, when the host calls [`DeviceLoop::stop`] or
    ///   [`DeviceLoop::abort`] — or a kernel of the body ends it (`ferrocuda::end_loop` with
    ///   [`DeviceLoop::condition`]).
    /// * `body(b, gate, lp)` adds the step's consume and ack nodes; make the first of them depend
    ///   on `gate`. In the step in which the loop ends by stop, abort or time limit, the body's
    ///   nodes still run once: kernels that must not run on an unproduced step check
    ///   `ferrocuda::loop_step_ok(lp.state())`.
    ///
    /// The returned node is the loop's end: nodes after the loop depend on it. How a launch
    /// ended: [`DeviceLoop::wait`] or [`DeviceLoop::outcome`]. The graph owns `produce` (and
    /// everything the body uses) until its last launch has finished.
    ///
    /// A graph with a conditional node has at most one executable at a time (a CUDA rule).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`](crate::Error::Driver) with `Unsupported` on a device without the loop's
    /// kernels; the body's error; as the other node methods.
    pub fn gated_loop(
        &mut self,
        limits: LoopLimits,
        deps: &[Node],
        produce: impl FnMut(u64) + Send + 'static,
        body: impl FnOnce(&mut Body<'_>, Node, &DeviceLoop) -> Result<()>,
    ) -> Result<(Node, DeviceLoop)> {
        let kickoff = LoopKickoff::new(&self.device, produce)?;
        // The condition is set by the loop's own begin kernel each launch (no default).
        let condition = self.condition(None)?;
        let lp = DeviceLoop {
            kickoff: kickoff.clone(),
            condition,
        };
        let params = LoopParams {
            condition: condition.as_raw(),
            max_steps: limits.steps.unwrap_or(u64::MAX),
            limit_ns: ferrocuda_driver::gates::timeout_ns(limits.time),
        };
        let root = self.root();
        let one = LaunchConfig::single_thread();
        let mut args = LaunchArgs::new();
        let f = kickoff.node(LoopNode::Begin, &params, &mut args);
        // SAFETY: `LoopKickoff::node` lays out the loop kernel's parameters; its buffers and flags
        // go through the use path, which the graph keeps.
        let begin = unsafe { self.kernel_raw(root, &f, one, &mut args, deps) }?;
        let mut body = Some(body);
        let lp_ref = &lp;
        let while_node = self.while_loop(&condition, &[begin], |b| {
            let mut args = LaunchArgs::new();
            let f = kickoff.node(LoopNode::Kick, &params, &mut args);
            // SAFETY: as above.
            let kick = unsafe { b.kernel(&f, one, &mut args, &[]) }?;
            let mut args = LaunchArgs::new();
            let f = kickoff.node(LoopNode::Gate, &params, &mut args);
            // SAFETY: as above.
            let gate = unsafe { b.kernel(&f, one, &mut args, &[kick]) }?;
            body.take().map_or(Ok(()), |user| user(b, gate, lp_ref))
        })?;
        let mut args = LaunchArgs::new();
        let f = kickoff.node(LoopNode::End, &params, &mut args);
        // SAFETY: as above.
        let end = unsafe { self.kernel_raw(root, &f, one, &mut args, &[while_node]) }?;
        lock(&self.owned).push(Box::new(kickoff.clone()));
        self.loops.push(kickoff);
        Ok((end, lp))
    }
}
