//! The crate's one error type.

use ferrocuda_sys::{CUresult, LoadError};
use std::fmt;
use std::time::Duration;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed CUDA driver call: the call, its `CUresult` code, and the driver's name and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverError {
    /// The driver entry point that failed, e.g. `"cuStreamWaitValue64_v2"`.
    pub call: &'static str,
    /// The result code it returned.
    pub code: CUresult,
    /// The code's name, e.g. `"CUDA_ERROR_INVALID_VALUE"` (`"CUresult(N)"` if the driver does not know it).
    pub name: &'static str,
    /// The driver's description of the code.
    pub message: &'static str,
}

impl DriverError {
    /// Builds the error for `code` returned by `call`, asking the driver for its name and message.
    pub fn new(call: &'static str, code: CUresult) -> Self {
        DriverError {
            call,
            code,
            name: ferrocuda_sys::error_name(code).unwrap_or("CUresult(unknown)"),
            message: ferrocuda_sys::error_string(code).unwrap_or("no description from the driver"),
        }
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {} ({}): {}",
            self.call, self.name, self.code.0, self.message
        )
    }
}

impl std::error::Error for DriverError {}

/// Everything that can go wrong in this crate.
///
/// Driver failures keep their code ([`Error::Driver`]); misuse that the crate can see has a variant
/// of its own whose message says what to do instead.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A CUDA driver call failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The CUDA driver library could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// No device has this ordinal.
    #[error("no CUDA device with ordinal {ordinal} (this machine has {count})")]
    NoSuchDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// How many devices there are.
        count: usize,
    },
    /// The device lacks a capability the operation needs.
    #[error("device {ordinal} ({name}) does not support {what}")]
    Unsupported {
        /// The device's ordinal.
        ordinal: usize,
        /// The device's name.
        name: String,
        /// The missing capability.
        what: &'static str,
    },
    /// [`DeviceEvent::elapsed_time`](crate::DeviceEvent::elapsed_time) on an event created
    /// without timing.
    #[error(
        "the {which} event was created without timing: create both with `DeviceEvent::new(&device, true)`"
    )]
    TimingDisabled {
        /// `"start"` or `"end"`.
        which: &'static str,
    },
    /// An event was used as a point in time before it was ever recorded.
    #[error(
        "the {which} event was never recorded: record it with `stream.record_event(&event)` first"
    )]
    EventNotRecorded {
        /// `"start"` or `"end"`.
        which: &'static str,
    },
    /// The GPU has not reached the point yet (e.g. the end event of `elapsed_time`).
    #[error("the event has not completed yet: call `synchronize()` on it first")]
    NotReady,
    /// A wait did not finish within its time limit.
    #[error("{what} did not finish within {timeout:?}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// A host-side wait saw the flag's abort value ([`CompletionFlag::ABORTED`](crate::CompletionFlag::ABORTED)).
    #[error("the completion flag was aborted (its producer failed or gave up)")]
    Aborted,
    /// One or more host functions enqueued on this stream panicked (the stream went on).
    #[error("{count} host function(s) on this stream panicked; first: {first}")]
    HostFuncPanicked {
        /// How many panicked since the last report.
        count: usize,
        /// The first panic's message.
        first: String,
    },
    /// Polling gates of this stream gave up after their device-side time limit (the work after them
    /// ran anyway).
    #[error("{count} polling gate(s) on this stream expired before their flag was signalled")]
    GateExpired {
        /// How many expired since the last report.
        count: u64,
    },
    /// The operation cannot be recorded into a CUDA graph, and the stream is capturing one
    /// (the driver says so, also for a stream that joined another stream's capture).
    #[error("`{op}` cannot be captured into a graph: {why}")]
    NotAllowedUnderCapture {
        /// Why, and what to do instead.
        why: &'static str,
        /// The refused operation.
        op: &'static str,
    },
    /// An operation that needs the CUDA driver was called from inside a host function, where
    /// CUDA forbids driver calls (they may deadlock).
    #[error(
        "`{op}` was called from inside a host function; CUDA forbids driver calls there \
         (they may deadlock): use `enqueue_async_host_func`, whose closure runs on a worker thread"
    )]
    CalledFromHostFunc {
        /// The public operation that was refused (e.g. `"HostBuffer::new"`).
        op: &'static str,
    },
    /// A module load gave up behind a stream that waits on a host value, and the driver is still
    /// inside that load: this operation could block until the wait passes, so it was refused.
    #[error(
        "`{op}` was refused: a module load that timed out is still inside the CUDA driver, behind \
         a stream that waits on a host value; signal that value (or abort the flag), then retry \
         (`ferrocuda_driver::driver_held()` says when the load has returned)"
    )]
    DriverHeld {
        /// The public operation that was refused.
        op: &'static str,
    },
    /// The process is exiting: the CUDA driver is being torn down, and the crate makes no more
    /// driver calls.
    #[error("the process is exiting: no more CUDA driver calls are made")]
    Shutdown,
    /// Two objects of different devices were combined.
    #[error("{what} belongs to device {found}, but the stream is on device {expected}")]
    DeviceMismatch {
        /// What was passed.
        what: &'static str,
        /// The stream's device.
        expected: usize,
        /// The object's device.
        found: usize,
    },
    /// Two lengths that must agree do not.
    #[error("length mismatch: {what}: expected {expected}, got {actual}")]
    LengthMismatch {
        /// What was compared.
        what: &'static str,
        /// The expected length.
        expected: usize,
        /// The actual length.
        actual: usize,
    },
    /// An argument is out of range; the message says which and why.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_error_keeps_code_and_call_without_a_driver() {
        let e = DriverError::new("cuStreamWaitValue64_v2", CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(e.code, CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(e.call, "cuStreamWaitValue64_v2");
        let s = Error::from(e).to_string();
        assert!(s.starts_with("cuStreamWaitValue64_v2 failed"), "{s}");
        assert!(s.contains("(1)"), "the numeric code is kept: {s}");
    }

    #[test]
    fn misuse_messages_say_what_to_do() {
        assert!(
            Error::TimingDisabled { which: "end" }
                .to_string()
                .contains("DeviceEvent::new(&device, true)")
        );
        assert!(
            Error::EventNotRecorded { which: "start" }
                .to_string()
                .contains("record_event")
        );
        assert!(
            Error::CalledFromHostFunc {
                op: "DeviceStream::alloc"
            }
            .to_string()
            .contains("enqueue_async_host_func")
        );
    }
}
