//! Errors of the relay.

/// Why a relay step failed. The relay logs these and carries on; they never lose a row.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The outbox (store) failed.
    #[error("outbox: {0}")]
    Outbox(#[from] sammen_outbox::OutboxError),
    /// The bus failed.
    #[error("bus: {0}")]
    Bus(#[from] sammen_bus::BusError),
    /// A blocking task panicked or was cancelled.
    #[error("blocking task: {0}")]
    Join(String),
    /// A group of marks failed together (the error is shared by every record of the group).
    #[error("marking a group: {0}")]
    Group(String),
}
