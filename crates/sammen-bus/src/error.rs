//! Typed errors. Each variant says what the caller should do: retry, fix input, or fix configuration.

use std::time::Duration;

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The message or receiver cannot be routed as given (bad GLN, event or id). Not retryable.
    #[error("invalid message: {0}")]
    Invalid(#[from] InvalidMessage),
    /// No connection to the broker right now; the reconnect loop is working on it. Retry later.
    #[error("not connected to the broker (waited {0:?})")]
    NotConnected(Duration),
    /// The broker connection or channel failed during the call. Retry later.
    #[error("broker connection failed during {op}: {source}")]
    Amqp {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
    /// A broker call did not answer in time (the lapin hang class: #245, #468). Retry later.
    #[error("broker call {op} did not answer within {after:?}")]
    Timeout {
        /// What was being done.
        op: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// A queue or exchange exists with other arguments than ours (RabbitMQ PRECONDITION_FAILED).
    /// Fix the configuration or delete the old queue; retrying does not help.
    #[error("topology mismatch declaring {name}: {reason}")]
    TopologyMismatch {
        /// Queue or exchange name.
        name: String,
        /// The broker's reply text.
        reason: String,
    },
    /// The delivery belongs to a channel or subscription that is gone; the broker will redeliver it.
    #[error(
        "delivery is stale: its channel or subscription closed, the message will be redelivered"
    )]
    StaleDelivery,
    /// The embedded bus's durable store failed.
    #[error("embedded queue store failed: {0}")]
    Store(#[from] StoreError),
    /// The bus was closed.
    #[error("bus is closed")]
    Closed,
    /// The AMQP URL does not parse (the URL itself is not repeated: it may hold a password).
    #[error("invalid AMQP URL: {reason}")]
    BadUrl {
        /// The parser's reason.
        reason: String,
    },
}

impl BusError {
    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            BusError::NotConnected(_)
                | BusError::Amqp { .. }
                | BusError::Timeout { .. }
                | BusError::StaleDelivery
                | BusError::Store(_)
        )
    }
}

/// What is wrong with a message or receiver given to the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMessage {
    /// A GLN used in routing is not 13 digits with a valid check digit.
    #[error("{field} is not a valid GLN")]
    Gln {
        /// Which field.
        field: &'static str,
    },
    /// The event name would break the routing key (it must be 1–64 of `A-Za-z0-9_-`).
    #[error("event must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")]
    Event,
    /// A property is empty or longer than AMQP's 255-byte short string.
    #[error("{field} must be 1-255 bytes")]
    Length {
        /// Which field.
        field: &'static str,
    },
    /// sha256 must be 64 lower-case hex digits.
    #[error("sha256 must be 64 lower-case hexadecimal digits")]
    Sha256,
}

/// An error reported by an [`EmbeddedQueueStore`](crate::embedded::EmbeddedQueueStore) backend.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {message}")]
pub struct StoreError {
    /// What was being done.
    pub op: &'static str,
    /// The backend's description.
    pub message: String,
}
