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
//!
//! ## Memory is bounded by configuration, not by backlog
//! A receiver away for days must not make the broker's memory grow with its queue. Each queue keeps at
//! most a [`Window`] of ready messages in memory (plus the unsettled ones, bounded by the subscribers'
//! prefetch); everything else stays only in the store:
//! - all ready messages with `seq < spill` are in memory; those with `seq >= spill` may be in the store
//!   only (`spill = None`: every ready message is in memory);
//! - a publish goes to memory only while nothing is spilled and the window has room, so memory and store
//!   together keep `seq` order;
//! - when the window runs empty, the next messages from `spill` on are read back from the store.

mod store;

pub use store::{
    take_within, EmbeddedQueueStore, MemoryQueueStore, QueueSummary, ReadBudget, StoredMessage,
    StoredQueues,
};

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

/// How much of each queue the embedded bus holds in memory; the rest waits in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Ready messages per queue in memory (at least 1).
    pub messages: usize,
    /// Bytes of ready messages per queue in memory (one message is always allowed, whatever its size).
    pub bytes: usize,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            messages: 256,
            bytes: 8 << 20,
        }
    }
}

#[derive(Default)]
struct Queue {
    /// Ready messages in memory: every ready one with `seq < spill`.
    ready: BTreeMap<u64, Entry>,
    /// Sum of `ready`'s message sizes.
    ready_bytes: usize,
    /// Ready messages from this seq on may be in the store only.
    spill: Option<u64>,
    /// Ready messages in memory and in the store only.
    ready_total: usize,
    /// seq → (subscription, entry)
    unacked: HashMap<u64, (u64, Entry)>,
    notify: Arc<Notify>,
}

impl Queue {
    /// Make `entry` ready in memory (it is below `spill`, or nothing is spilled).
    fn put_ready(&mut self, entry: Entry) {
        self.ready_bytes += entry.stored.size();
        self.ready_total += 1;
        self.ready.insert(entry.stored.seq, entry);
    }

    /// Take the first ready message in memory.
    fn pop_ready(&mut self) -> Option<Entry> {
        let (_, e) = self.ready.pop_first()?;
        self.ready_bytes = self.ready_bytes.saturating_sub(e.stored.size());
        self.ready_total = self.ready_total.saturating_sub(1);
        Some(e)
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    next_seq: u64,
    next_sub: u64,
    /// unsettled deliveries per subscription
    in_flight: HashMap<u64, usize>,
    /// Messages stored before this open have seqs below this: read back, they count as redelivered.
    restart_seq: u64,
}

struct Core {
    topology: Topology,
    window: Window,
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
    /// Open the bus over a store with the default [`Window`], finding every queue it holds.
    pub fn open(topology: Topology, store: Arc<dyn EmbeddedQueueStore>) -> Result<Self, BusError> {
        Self::open_with_window(topology, store, Window::default())
    }

    /// Open the bus over a store, holding at most `window` of each queue's ready messages in memory.
    /// Messages are not read here: they come back from the store as subscribers drain the queues.
    pub fn open_with_window(
        topology: Topology,
        store: Arc<dyn EmbeddedQueueStore>,
        window: Window,
    ) -> Result<Self, BusError> {
        let window = Window {
            messages: window.messages.max(1),
            bytes: window.bytes,
        };
        store.declare_queue(&topology.dead_queue)?;
        let mut state = State::default();
        for summary in store.queues()? {
            let q = state.queues.entry(summary.name).or_default();
            state.next_seq = state.next_seq.max(summary.next_seq);
            q.ready_total = usize::try_from(summary.messages).unwrap_or(usize::MAX);
            if summary.messages > 0 {
                q.spill = Some(0);
            }
        }
        // Anything stored was not acked before the restart: read back, it counts as redelivered.
        state.restart_seq = state.next_seq;
        state.queues.entry(topology.dead_queue.clone()).or_default();
        let status = StatusCell::default();
        status.set_connected(true);
        Ok(EmbeddedBus {
            core: Arc::new(Core {
                topology,
                window,
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
            .map(|q| (q.ready_total, q.unacked.len()))
    }

    /// Messages of a queue held in memory (ready in the window, and unsettled) and their bytes; the
    /// rest of its depth is in the store only. `None` if the queue does not exist.
    pub fn resident(&self, source: &Source) -> Option<(usize, usize)> {
        let name = source.queue_name(&self.core.topology).ok()?;
        let st = self.core.lock().ok()?;
        st.queues.get(&name).map(|q| {
            let unacked: usize = q.unacked.values().map(|(_, e)| e.stored.size()).sum();
            (q.ready.len() + q.unacked.len(), q.ready_bytes + unacked)
        })
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
        let fits = q.ready.is_empty()
            || (q.ready.len() < self.window.messages
                && q.ready_bytes + stored.size() <= self.window.bytes);
        if q.spill.is_none() && fits {
            q.put_ready(Entry {
                stored,
                redelivered: false,
            });
        } else {
            // In the store only, read back when the window drains.
            q.spill.get_or_insert(seq);
            q.ready_total += 1;
        }
        q.notify.notify_waiters();
        Ok(())
    }

    /// Read the next stored messages into an empty window.
    fn refill(&self, st: &mut State, queue: &str) -> Result<(), BusError> {
        let restart_seq = st.restart_seq;
        let Some(q) = st.queues.get_mut(queue) else {
            return Ok(());
        };
        let Some(from) = q.spill else { return Ok(()) };
        let msgs = self
            .store
            .read(queue, from, self.window.messages, self.window.bytes)?;
        let Some(last) = msgs.last().map(|m| m.seq) else {
            // Nothing stored from `spill` on: every ready message is in memory again.
            q.spill = None;
            return Ok(());
        };
        for m in msgs {
            q.ready_bytes += m.size();
            let redelivered = m.seq < restart_seq;
            q.ready.insert(
                m.seq,
                Entry {
                    stored: m,
                    redelivered,
                },
            );
        }
        q.spill = Some(last + 1);
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
                q.put_ready(Entry {
                    redelivered: true,
                    ..entry
                });
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
            // Unsettled messages came from memory, so their seq is below `spill`.
            q.put_ready(entry);
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
                        q.put_ready(Entry {
                            redelivered: true,
                            ..entry
                        });
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
        if q.ready.is_empty() && q.spill.is_some() {
            self.refill(&mut st, queue)?;
        }
        let q = st.queues.get_mut(queue).ok_or(BusError::Closed)?;
        let Some(entry) = q.pop_ready() else {
            return Ok(None);
        };
        let seq = entry.stored.seq;
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
            Err(BusError::Closed) => break,
            Err(e) => {
                // Reading the store back failed (I/O?): the messages are still there; try again.
                tracing::warn!(queue = %queue, error = %e, "embedded bus: cannot read the queue back; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    _ = stop.cancelled() => break,
                }
            }
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
