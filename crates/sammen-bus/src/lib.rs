//! # sammen-bus: the message bus between the outbox relay and the subscribers
//!
//! Why it exists: an accepted admission alert must reach its municipality even when RabbitMQ restarts,
//! the connection drops mid-publish, or the receiver is away for days. The relay needs one narrow
//! question answered per message — *does the broker hold it now?* — and subscribers need
//! at-least-once delivery with explicit acks. This crate answers both, over RabbitMQ ([`AmqpBus`]) or,
//! with nothing else installed, inside the process ([`EmbeddedBus`]). Both keep the [`Bus`] contract;
//! one test suite runs against both.
//!
//! Invariants kept here:
//! - A message is reported [`PublishOutcome::Confirmed`] only on a positive publisher confirm **and**
//!   routed to a queue. Unroutable messages (mandatory flag, `basic.return`) come back as `Returned`,
//!   never silently dropped; nacks, confirm timeouts and lost connections each have their own outcome.
//! - Every broker call has a deadline, including each confirm: no hang (lapin #245, #468) outlives it.
//! - At most `window` messages await a confirm at once (default 256).
//! - Reconnecting is ours, not lapin's: after any failure the connection and channels are rebuilt from
//!   scratch with jittered exponential backoff ([`sammen_backoff`]), and the topology is declared again
//!   before the link is used. State and reconnect count are observable ([`Bus::status`]).
//! - Routing key `<receiver-gln>.<family>.<event>`; every part is validated before sending, so input
//!   can neither re-route a message nor crash the client.
//! - Messages are persistent (delivery mode 2) in quorum queues; after `delivery_limit` returns they go
//!   to the dead-letter queue, at least once.
//! - Subscribers ack manually with bounded prefetch; whatever is unsettled when a subscriber or its
//!   connection goes away is delivered again (subscribers dedupe by message id).
//!
//! Layout (small units, as in vector's AMQP sink and linkerd2-proxy): [`message`] (what travels),
//! [`topology`] (names and arguments, also behind `deploy/rabbitmq/definitions.json`), [`bus`] (the
//! contract), `amqp` (lapin backend: `link` = reconnect supervisor, `publish`, `consume`, `declare`) and
//! [`embedded`] (in-process backend behind the [`EmbeddedQueueStore`] durability seam), [`receipts`] (the
//! subscriber's delivery receipts for the relay) and, with the `contract-tests` feature, `contract` (the
//! shared contract suite, reusable by other crates' bus and store implementations).
#![forbid(unsafe_code)]

mod amqp;
pub mod baseline;
pub mod bus;
#[cfg(feature = "contract-tests")]
pub mod contract;
pub mod embedded;
pub mod error;
pub mod message;
pub mod queue_consumer;
pub mod receipts;
pub mod topology;

pub use amqp::connect::connect as amqp_connect;
pub use amqp::{AmqpBus, AmqpConfig};
pub use bus::{
    wait_connected, Bus, BusStatus, Delivery, LinkState, PendingConfirm, PublishOutcome, Source,
    Subscription,
};
pub use embedded::{EmbeddedBus, EmbeddedQueueStore, MemoryQueueStore, StoredMessage, Window};
pub use error::{BusError, InvalidMessage, StoreError};
pub use message::BusMessage;
pub use topology::Topology;
