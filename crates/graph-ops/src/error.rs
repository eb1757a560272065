//! The crate's error type.

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong building, instantiating or launching a graph.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A driver call or a driver-crate operation failed.
    #[error(transparent)]
    Driver(#[from] ferrocuda_driver::Error),
    /// A node or stream of another device was combined with this graph.
    #[error("{what} belongs to device {found}, but the graph is on device {expected}")]
    DeviceMismatch {
        /// What was passed.
        what: &'static str,
        /// The graph's device.
        expected: usize,
        /// The other object's device.
        found: usize,
    },
    /// A node handle of another graph was used.
    #[error("the node belongs to another graph")]
    ForeignNode,
    /// The node is not of the kind the operation needs (e.g. `set_wait_value` on a kernel node).
    #[error("the node is a {found} node, not a {expected} node")]
    WrongNodeKind {
        /// The kind needed.
        expected: &'static str,
        /// The node's kind.
        found: &'static str,
    },
    /// The operation is not supported for this graph; the message says why.
    #[error("not supported: {what}")]
    Unsupported {
        /// What and why.
        what: &'static str,
    },
    /// An argument the graph cannot use; the message says which and why.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Two lengths that must agree do not (e.g. the buffers of a copy node).
    #[error("{what}: length {actual} does not match {expected}")]
    LengthMismatch {
        /// The operation.
        what: &'static str,
        /// The length needed.
        expected: usize,
        /// The length passed.
        actual: usize,
    },
    /// CUDA allows only kernel, empty, child-graph, memset, memcpy and conditional nodes in the
    /// body of a conditional node: the node was refused when the graph was built.
    #[error(
        "a {node} node cannot be in the body of a conditional node: CUDA allows only kernel, empty, \
         child-graph, memset, memcpy and conditional nodes there (gate a step on the host with a \
         polling node, kick the host with the gated device loop)"
    )]
    NotAllowedInBody {
        /// The kind of node refused.
        node: &'static str,
    },
    /// Host functions of this executable panicked since the last report (the replays went on).
    #[error("{count} host function(s) of the graph panicked; first: {first}")]
    HostFuncPanicked {
        /// How many.
        count: usize,
        /// The first panic's message.
        first: String,
    },
}
