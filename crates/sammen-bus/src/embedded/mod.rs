//! The embedded bus: the same routing, confirms, prefetch, redelivery and dead-lettering as the AMQP
//! bus, inside the process, so `sammen serve` runs with nothing else installed.
//!
//! Semantics kept equal to RabbitMQ quorum queues (the shared contract tests check both):
//! - a publish to a receiver without an inbox is `Returned` (312 NO_ROUTE), never dropped;
//! - a publish is `Confirmed` only after the store's `append` returned;
//! - delivery in publish order per queue; `nack(requeue)` puts a message back in its place;
//! - a message returned more than `delivery_limit` times, or nacked without requeue, moves to the
//!   dead-letter queue (appended there before it is removed from the inbox: at-least-once);
//! - deliveries unsettled when their subscription goes away are redelivered, flagged `redelivered`.

mod store;

pub use store::{EmbeddedQueueStore, MemoryQueueStore, StoredMessage, StoredQueues};

use crate::bus::{
    Bus, BusStatus, Delivery, PendingConfirm, PublishOutcome, Settle, Source, StatusCell,
    Subscription,
};
use crate::error::BusError;
use crate::message::{check_receiver, BusMessage};
use crate::topology::Topology;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// AMQP's reply code for an unroutable mandatory message.
const NO_ROUTE: u16 = 312;

#[derive(Debug, Clone)]
struct Entry {
    stored: StoredMessage,
    redelivered: bool,
}

#[derive(Default)]
struct Queue {
    ready: BTreeMap<u64, Entry>,
    /// seq → (subscription, entry)
    unacked: HashMap<u64, (u64, Entry)>,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    next_seq: u64,
    next_sub: u64,
    /// unsettled deliveries per subscription
    in_flight: HashMap<u64, usize>,
}

struct Core {
    topology: Topology,
    store: Arc<dyn EmbeddedQueueStore>,
    state: Mutex<State>,
    status: StatusCell,
    closed: AtomicBool,
    shutdown: CancellationToken,
}

/// The in-process bus.
pub struct EmbeddedBus {
    core: Arc<Core>,
}

impl fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedBus")
            .field("topology", &self.core.topology)
            .finish()
    }
}

impl EmbeddedBus {
    /// Open the bus over a store, reloading every queue and message it holds.
    pub fn open(topology: Topology, store: Arc<dyn EmbeddedQueueStore>) -> Result<Self, BusError> {
        store.declare_queue(&topology.dead_queue)?;
        let mut state = State::default();
        for (name, msgs) in store.load()? {
            let q = state.queues.entry(name).or_default();
            for m in msgs {
                state.next_seq = state.next_seq.max(m.seq + 1);
                // Anything loaded was not acked before the restart: it counts as redelivered.
                q.ready.insert(
                    m.seq,
                    Entry {
                        stored: m,
                        redelivered: true,
                    },
                );
            }
        }
        state.queues.entry(topology.dead_queue.clone()).or_default();
        let status = StatusCell::default();
        status.set_connected(true);
        Ok(EmbeddedBus {
            core: Arc::new(Core {
                topology,
                store,
                state: Mutex::new(state),
                status,
                closed: AtomicBool::new(false),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// A bus over a fresh [`MemoryQueueStore`].
    pub fn in_memory(topology: Topology) -> Self {
        let store: Arc<dyn EmbeddedQueueStore> = Arc::new(MemoryQueueStore::default());
        match Self::open(topology, store) {
            Ok(b) => b,
            // MemoryQueueStore only fails on a poisoned lock, impossible on a fresh one.
            Err(_) => unreachable!("fresh memory store cannot fail"),
        }
    }

    /// Messages ready (not yet delivered) and unsettled in a queue; `None` if it does not exist.
    pub fn depth(&self, source: &Source) -> Option<(usize, usize)> {
        let name = source.queue_name(&self.core.topology).ok()?;
        let st = self.core.lock().ok()?;
        st.queues
            .get(&name)
            .map(|q| (q.ready.len(), q.unacked.len()))
    }
}

impl Core {
    fn lock(&self) -> Result<MutexGuard<'_, State>, BusError> {
        self.state.lock().map_err(|_| BusError::Closed)
    }

    fn check_open(&self) -> Result<(), BusError> {
        if self.closed.load(Ordering::Acquire) {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }

    /// Append to `queue` durably and make it ready. Caller holds the lock (keeps store order = seq order).
    fn enqueue(
        &self,
        st: &mut State,
        queue: &str,
        routing_key: String,
        message: BusMessage,
    ) -> Result<(), BusError> {
        let seq = st.next_seq;
        let stored = StoredMessage {
            seq,
            delivery_count: 0,
            routing_key,
            message,
        };
        self.store.append(queue, &stored)?;
        st.next_seq += 1;
        let q = st.queues.entry(queue.to_string()).or_default();
        q.ready.insert(
            seq,
            Entry {
                stored,
                redelivered: false,
            },
        );
        q.notify.notify_waiters();
        Ok(())
    }

    fn settle(&self, queue: &str, seq: u64, sub: u64, action: Action) -> Result<(), BusError> {
        let mut st = self.lock()?;
        let q = st.queues.get_mut(queue).ok_or(BusError::StaleDelivery)?;
        match q.unacked.get(&seq) {
            Some((s, _)) if *s == sub => {}
            _ => return Err(BusError::StaleDelivery),
        }
        let Some((_, entry)) = q.unacked.remove(&seq) else {
            return Err(BusError::StaleDelivery);
        };
        let notify = q.notify.clone();
        if let Some(n) = st.in_flight.get_mut(&sub) {
            *n = n.saturating_sub(1);
        }
        let r = match action {
            Action::Ack => self.store.remove(queue, seq).map_err(BusError::from),
            Action::Nack { requeue } => self.give_back(&mut st, queue, entry.clone(), requeue),
        };
        if r.is_err() {
            // The store failed: keep the message deliverable rather than lose track of it.
            if let Some(q) = st.queues.get_mut(queue) {
                q.ready.insert(
                    seq,
                    Entry {
                        redelivered: true,
                        ..entry
                    },
                );
            }
        }
        notify.notify_waiters();
        r
    }

    /// A return (`requeue`) or a rejection: back into the queue, or on to the dead-letter queue.
    fn give_back(
        &self,
        st: &mut State,
        queue: &str,
        mut entry: Entry,
        requeue: bool,
    ) -> Result<(), BusError> {
        let seq = entry.stored.seq;
        if requeue {
            entry.stored.delivery_count = entry.stored.delivery_count.saturating_add(1);
        }
        let dead = !requeue || entry.stored.delivery_count > self.topology.delivery_limit;
        if dead && queue != self.topology.dead_queue {
            let dq = self.topology.dead_queue.clone();
            // Appended there before removed here: a crash in between duplicates, never loses.
            self.enqueue(st, &dq, entry.stored.routing_key, entry.stored.message)?;
            self.store.remove(queue, seq)?;
            return Ok(());
        }
        if dead {
            // Rejected from the dead-letter queue itself, which has no dead-letter exchange: dropped,
            // as RabbitMQ does.
            self.store.remove(queue, seq)?;
            return Ok(());
        }
        self.store
            .set_delivery_count(queue, seq, entry.stored.delivery_count)?;
        entry.redelivered = true;
        if let Some(q) = st.queues.get_mut(queue) {
            q.ready.insert(seq, entry);
        }
        Ok(())
    }

    /// A subscription ended: its unsettled deliveries go back, counted as returns (as quorum queues do).
    fn release(&self, queue: &str, sub: u64) {
        let Ok(mut st) = self.lock() else { return };
        st.in_flight.remove(&sub);
        let Some(q) = st.queues.get_mut(queue) else {
            return;
        };
        let mine: Vec<u64> = q
            .unacked
            .iter()
            .filter(|(_, (s, _))| *s == sub)
            .map(|(seq, _)| *seq)
            .collect();
        let notify = q.notify.clone();
        for seq in mine {
            let entry = st
                .queues
                .get_mut(queue)
                .and_then(|q| q.unacked.remove(&seq));
            if let Some((_, entry)) = entry {
                if let Err(e) = self.give_back(&mut st, queue, entry.clone(), true) {
                    tracing::warn!(error = %e, "embedded bus: store failed while returning a delivery");
                    if let Some(q) = st.queues.get_mut(queue) {
                        q.ready.insert(
                            seq,
                            Entry {
                                redelivered: true,
                                ..entry
                            },
                        );
                    }
                }
            }
        }
        notify.notify_waiters();
    }

    /// Next delivery for `sub` if its prefetch allows; marks it unsettled.
    fn take_next(
        self: &Arc<Self>,
        queue: &str,
        sub: u64,
        prefetch: usize,
    ) -> Result<Option<Delivery>, BusError> {
        let mut st = self.lock()?;
        let in_flight = st.in_flight.get(&sub).copied().unwrap_or(0);
        if in_flight >= prefetch {
            return Ok(None);
        }
        let q = st.queues.get_mut(queue).ok_or(BusError::Closed)?;
        let Some((seq, entry)) = q.ready.pop_first() else {
            return Ok(None);
        };
        q.unacked.insert(seq, (sub, entry.clone()));
        *st.in_flight.entry(sub).or_default() += 1;
        Ok(Some(Delivery {
            routing_key: entry.stored.routing_key,
            redelivered: entry.redelivered,
            delivery_count: entry.stored.delivery_count,
            reply_to: None,
            message: entry.stored.message,
            settle: Settle::Embedded(EmbeddedSettle {
                core: self.clone(),
                queue: queue.to_string(),
                seq,
                sub,
            }),
        }))
    }
}

enum Action {
    Ack,
    Nack { requeue: bool },
}

/// Settlement handle of an embedded delivery.
pub(crate) struct EmbeddedSettle {
    core: Arc<Core>,
    queue: String,
    seq: u64,
    sub: u64,
}

impl fmt::Debug for EmbeddedSettle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedSettle")
            .field("queue", &self.queue)
            .field("seq", &self.seq)
            .finish()
    }
}

impl EmbeddedSettle {
    pub(crate) fn ack(self) -> Result<(), BusError> {
        self.core
            .settle(&self.queue, self.seq, self.sub, Action::Ack)
    }

    pub(crate) fn nack(self, requeue: bool) -> Result<(), BusError> {
        self.core
            .settle(&self.queue, self.seq, self.sub, Action::Nack { requeue })
    }
}

/// Ends a subscription's task and returns its unsettled deliveries at once (not when the task notices).
struct SubGuard {
    stop: CancellationToken,
    core: Arc<Core>,
    queue: String,
    sub: u64,
}

impl Drop for SubGuard {
    fn drop(&mut self) {
        self.stop.cancel();
        self.core.release(&self.queue, self.sub);
    }
}

async fn pump(
    core: Arc<Core>,
    queue: String,
    sub: u64,
    prefetch: usize,
    notify: Arc<Notify>,
    tx: mpsc::Sender<Delivery>,
    stop: CancellationToken,
) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        // Register interest before looking, so a publish between the look and the wait is not missed.
        notified.as_mut().enable();
        if stop.is_cancelled() {
            break;
        }
        match core.take_next(&queue, sub, prefetch) {
            Ok(Some(d)) => {
                tokio::select! {
                    r = tx.send(d) => if r.is_err() { break },
                    _ = stop.cancelled() => break,
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = stop.cancelled() => break,
                }
            }
            Err(_) => break,
        }
    }
    core.release(&queue, sub);
}

#[async_trait::async_trait]
impl Bus for EmbeddedBus {
    fn status(&self) -> BusStatus {
        self.core.status.snapshot("embedded")
    }

    fn topology(&self) -> &Topology {
        &self.core.topology
    }

    async fn ensure_receiver(&self, gln: &str) -> Result<(), BusError> {
        self.core.check_open()?;
        check_receiver(gln)?;
        let name = self.core.topology.inbox_queue(gln);
        let mut st = self.core.lock()?;
        if let std::collections::hash_map::Entry::Vacant(v) = st.queues.entry(name) {
            // Durable first: a queue we report as declared must survive a restart.
            self.core.store.declare_queue(v.key())?;
            v.insert(Queue::default());
        }
        Ok(())
    }

    async fn publish(&self, msg: &BusMessage) -> Result<PendingConfirm, BusError> {
        self.core.check_open()?;
        let key = msg.routing_key()?;
        // Same routing as the broker: `<gln>.#` binds exactly the receiver's own inbox.
        let queue = self.core.topology.inbox_queue(&msg.receiver_gln);
        let mut st = self.core.lock()?;
        if !st.queues.contains_key(&queue) {
            return Ok(PendingConfirm::ready(PublishOutcome::Returned {
                reply_code: NO_ROUTE,
                reply_text: "NO_ROUTE".into(),
            }));
        }
        self.core.enqueue(&mut st, &queue, key, msg.clone())?;
        Ok(PendingConfirm::ready(PublishOutcome::Confirmed))
    }

    async fn subscribe(&self, source: Source, prefetch: u16) -> Result<Subscription, BusError> {
        self.core.check_open()?;
        let queue = source.queue_name(&self.core.topology)?;
        let (sub, notify) = {
            let mut st = self.core.lock()?;
            let notify = match st.queues.get(&queue) {
                Some(q) => q.notify.clone(),
                None => {
                    return Err(BusError::TopologyMismatch {
                        name: queue,
                        reason: "no such queue (NOT_FOUND)".into(),
                    })
                }
            };
            st.next_sub += 1;
            (st.next_sub, notify)
        };
        let prefetch = usize::from(prefetch.max(1));
        let (tx, rx) = mpsc::channel(prefetch);
        let stop = self.core.shutdown.child_token();
        tokio::spawn(pump(
            self.core.clone(),
            queue.clone(),
            sub,
            prefetch,
            notify,
            tx,
            stop.clone(),
        ));
        Ok(Subscription {
            rx,
            _guard: Box::new(SubGuard {
                stop,
                core: self.core.clone(),
                queue,
                sub,
            }),
        })
    }

    async fn close(&self) {
        self.core.closed.store(true, Ordering::Release);
        self.core.status.set_closed();
        self.core.shutdown.cancel();
    }
}
