//! The publish loop.

use crate::lane::{self, Lane};
use crate::{blocking, to_bus_message, RelayError, SharedOutbox};
use futures_util::stream::{FuturesUnordered, StreamExt};
use sammen_backoff::ExponentialBackoff;
use sammen_bus::{Bus, BusError, PublishOutcome};
use sammen_outbox::{AttemptOutcome, OutboxError, Pending, RecordId, State};
use sammen_telemetry::events::{PublishConfirmed, PublishFailed, PublishFailure};
use sammen_telemetry::SharedTelemetry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

/// How the relay publishes.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most publishes awaiting a confirm (or the durable `published` mark) at once.
    pub window: usize,
    /// Unroutable returns before a row is dead.
    pub max_returns: u32,
    /// Lane retry delays.
    pub backoff: ExponentialBackoff,
    /// Receivers (GLNs) to publish for; receivers with rows in the outbox are added at start.
    pub receivers: Vec<String>,
    /// Look for work at least this often even without a wake-up.
    pub poll: Duration,
    /// On shutdown, wait this long for outstanding confirms.
    pub drain: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            window: 256,
            max_returns: 5,
            backoff: ExponentialBackoff::default(),
            receivers: Vec::new(),
            poll: Duration::from_millis(500),
            drain: Duration::from_secs(5),
        }
    }
}

type Confirm = Pin<Box<dyn Future<Output = (RecordId, String, PublishOutcome)> + Send>>;
type Marked = (RecordId, String, Result<(), RelayError>);

/// Confirmed publishes are marked `published` in groups of at most this many records ...
const MARK_GROUP: usize = 256;
/// ... by at most this many blocking tasks at once (one commits while the next group gathers).
const MARK_TASKS: usize = 2;

/// Publishes outbox rows through a bus. Create with [`Relay::new`], wake it with [`Relay::waker`] after
/// each accept, run it with [`Relay::run`].
pub struct Relay {
    outbox: SharedOutbox,
    bus: Arc<dyn Bus>,
    cfg: RelayConfig,
    wake: Arc<Notify>,
    telemetry: Option<SharedTelemetry>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("cfg", &self.cfg).finish()
    }
}

/// Mutable state of one `run`.
struct Run {
    lanes: BTreeMap<String, Lane>,
    in_flight: HashSet<RecordId>,
    returns: HashMap<RecordId, u32>,
    confirms: FuturesUnordered<Confirm>,
    /// Confirmed, not yet handed to a mark task.
    to_mark: Vec<(RecordId, String)>,
    marks: JoinSet<Vec<Marked>>,
}

impl Relay {
    /// A relay over `outbox` and `bus`.
    pub fn new(outbox: SharedOutbox, bus: Arc<dyn Bus>, cfg: RelayConfig) -> Self {
        Relay {
            outbox,
            bus,
            cfg,
            wake: Arc::new(Notify::new()),
            telemetry: None,
        }
    }

    /// Record publish-confirm latency and failed publishes (by outcome) in `telemetry`.
    pub fn with_telemetry(mut self, telemetry: SharedTelemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Notify this after an accept: the relay looks for new rows at once instead of at the next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Publish until `shutdown`; then wait up to `drain` for outstanding confirms.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let mut receivers: HashSet<String> = self.cfg.receivers.iter().cloned().collect();
        let ob = self.outbox.clone();
        receivers.extend(blocking(move || lane::pending_receivers(&ob)).await?);
        for gln in &receivers {
            if let Err(e) = self.bus.ensure_receiver(gln).await {
                warn!(receiver = %gln, error = %e, "relay: cannot declare inbox yet; will retry on return");
            }
        }
        let mut run = Run {
            lanes: receivers
                .iter()
                .map(|g| (g.clone(), Lane::new(g, self.cfg.backoff.stream())))
                .collect(),
            in_flight: HashSet::new(),
            returns: HashMap::new(),
            confirms: FuturesUnordered::new(),
            to_mark: Vec::new(),
            marks: JoinSet::new(),
        };
        info!(
            lanes = run.lanes.len(),
            window = self.cfg.window,
            bus = self.bus.status().kind,
            "relay started"
        );
        let mut dirty = true;
        loop {
            if dirty {
                self.fill(&mut run).await;
                dirty = false;
            }
            self.spawn_marks(&mut run);
            let now = Instant::now();
            let next_unblock = run
                .lanes
                .values()
                .filter_map(|l| l.blocked_until.filter(|t| *t > now))
                .min()
                .unwrap_or(now + self.cfg.poll)
                .min(now + self.cfg.poll);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some((id, gln, outcome)) = run.confirms.next(), if !run.confirms.is_empty() => {
                    self.on_outcome(&mut run, id, gln, outcome).await;
                }
                Some(done) = run.marks.join_next(), if !run.marks.is_empty() => {
                    self.on_marked_group(&mut run, done);
                    dirty = run.in_flight.len() <= self.cfg.window * 3 / 4 || run.marks.is_empty();
                }
                _ = self.wake.notified() => {
                    for l in run.lanes.values_mut() { l.idle = false; }
                    dirty = true;
                }
                _ = tokio::time::sleep_until(next_unblock) => {
                    for l in run.lanes.values_mut() { l.idle = false; }
                    dirty = true;
                }
            }
        }
        // Drain: outcomes already on their way are still recorded; anything else is re-published later.
        let deadline = Instant::now() + self.cfg.drain;
        loop {
            self.spawn_marks(&mut run);
            if run.confirms.is_empty() && run.marks.is_empty() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                Some((id, gln, outcome)) = run.confirms.next(), if !run.confirms.is_empty() => {
                    self.on_outcome(&mut run, id, gln, outcome).await;
                }
                Some(done) = run.marks.join_next(), if !run.marks.is_empty() => {
                    self.on_marked_group(&mut run, done);
                }
            }
        }
        info!(in_flight = run.in_flight.len(), "relay stopped");
        Ok(())
    }

    /// Dispatch rows lane by lane while the window has room.
    async fn fill(&self, run: &mut Run) {
        let glns: Vec<String> = run.lanes.keys().cloned().collect();
        for gln in glns {
            let room = self.cfg.window.saturating_sub(run.in_flight.len());
            if room == 0 {
                return;
            }
            let now = Instant::now();
            let Some(lane) = run.lanes.get(&gln) else {
                continue;
            };
            if lane.idle || lane.is_blocked(now) {
                continue;
            }
            let (prefix, cursor) = (lane.prefix(), lane.cursor);
            let ob = self.outbox.clone();
            let skip = run.in_flight.clone();
            let read =
                blocking(move || lane::read(&ob, prefix, cursor, room.min(128), &skip)).await;
            let scan = match read {
                Ok(r) => r,
                Err(e) => {
                    warn!(receiver = %gln, error = %e, "relay: reading the outbox failed");
                    self.block(run, &gln);
                    continue;
                }
            };
            let rows = scan.rows;
            if let Some(lane) = run.lanes.get_mut(&gln) {
                lane.cursor = scan.next;
                lane.idle = rows.is_empty() && scan.unreadable.is_none();
                lane.unreadable = match (scan.unreadable, lane.unreadable) {
                    (None, _) => None,
                    (Some(id), Some((seen, n))) if id == seen => Some((id, n + 1)),
                    (Some(id), _) => Some((id, 1)),
                };
                if let Some((id, n)) = lane.unreadable {
                    if n >= lane::MAX_UNREADABLE_SCANS {
                        error!(receiver = %gln, record = %id, scans = n, "relay: a queued row's state or payload cannot be read; passing over it");
                        lane.cursor = id.0 + 1;
                        lane.unreadable = None;
                    } else {
                        debug!(receiver = %gln, record = %id, "relay: queued row not readable yet; rescanning from it");
                    }
                }
            }
            for p in rows {
                if !self.dispatch(run, &gln, p).await {
                    break;
                }
            }
        }
    }

    /// Publish one row; false when the lane must stop for now.
    async fn dispatch(&self, run: &mut Run, gln: &str, p: Pending) -> bool {
        let id = p.id;
        let msg = match to_bus_message(&p) {
            Ok(m) => m,
            Err(e) => {
                warn!(record = %id, error = %e, "relay: row cannot be routed; marking dead");
                let ob = self.outbox.clone();
                let reason = format!("unroutable: {e}");
                if let Err(e) = blocking(move || ob.mark_dead(id, &reason)).await {
                    warn!(record = %id, error = %e, "relay: marking dead failed");
                }
                return true;
            }
        };
        let started = Instant::now();
        match self.bus.publish(&msg).await {
            Ok(pending) => {
                run.in_flight.insert(id);
                if let Some(l) = run.lanes.get_mut(gln) {
                    l.in_flight += 1;
                }
                let gln = gln.to_string();
                // The message's span (as in ingress and delivery), so its confirm lines carry its id.
                let span = sammen_telemetry::message_span(&p.meta.message_id);
                span.record("record", id.0);
                // Timed from the publish call: a full in-flight window is part of what a sender waits.
                let observe = self
                    .telemetry
                    .clone()
                    .map(|t| (t, p.meta.message_id, p.attempts.saturating_add(1)));
                run.confirms.push(Box::pin(
                    async move {
                        let outcome = pending.await;
                        if let Some((t, message_id, attempt)) = observe {
                            observe_outcome(
                                &t,
                                &message_id,
                                id,
                                &outcome,
                                started.elapsed(),
                                attempt,
                            );
                        }
                        (id, gln, outcome)
                    }
                    .instrument(span),
                ));
                true
            }
            Err(BusError::Invalid(e)) => {
                let ob = self.outbox.clone();
                let reason = format!("unroutable: {e}");
                let _ = blocking(move || ob.mark_dead(id, &reason)).await;
                true
            }
            Err(e) => {
                debug!(record = %id, error = %e, "relay: publish failed");
                if let Some(t) = &self.telemetry {
                    t.emit(PublishFailed {
                        message_id: &p.meta.message_id,
                        record: id.0,
                        failure: PublishFailure::NotConnected,
                        latency: started.elapsed(),
                        attempt: p.attempts.saturating_add(1),
                    });
                }
                if !matches!(e, BusError::NotConnected(_) | BusError::Closed) {
                    self.attempt(id, &e.to_string()).await;
                }
                if let Some(l) = run.lanes.get_mut(gln) {
                    l.rewind(id);
                }
                self.block(run, gln);
                false
            }
        }
    }

    fn block(&self, run: &mut Run, gln: &str) {
        if let Some(l) = run.lanes.get_mut(gln) {
            let d = l.backoff.next_delay();
            l.blocked_until = Some(Instant::now() + d);
        }
    }

    /// Count a failed attempt durably; the outbox decides whether the row is now dead.
    async fn attempt(&self, id: RecordId, why: &str) {
        let ob = self.outbox.clone();
        let why = why.to_string();
        match blocking(move || ob.record_attempt(id, &why)).await {
            Ok(AttemptOutcome::Dead { attempts }) => {
                warn!(record = %id, attempts, "relay: attempts or TTL exhausted; row is dead")
            }
            Ok(AttemptOutcome::Retry { .. }) => {}
            Err(e) => debug!(record = %id, error = %e, "relay: recording attempt failed"),
        }
    }

    async fn on_outcome(&self, run: &mut Run, id: RecordId, gln: String, outcome: PublishOutcome) {
        match outcome {
            PublishOutcome::Confirmed => {
                run.to_mark.push((id, gln));
                return;
            }
            PublishOutcome::Returned {
                reply_code,
                reply_text,
            } => {
                let n = run.returns.entry(id).or_insert(0);
                *n += 1;
                let n = *n;
                warn!(record = %id, receiver = %gln, reply_code, reply_text = %reply_text, returns = n, "relay: unroutable");
                if n > self.cfg.max_returns {
                    let ob = self.outbox.clone();
                    let reason = format!("unroutable after {n} returns ({reply_code})");
                    if let Err(e) = blocking(move || ob.mark_dead(id, &reason)).await {
                        warn!(record = %id, error = %e, "relay: marking dead failed");
                    }
                    run.returns.remove(&id);
                } else {
                    if let Err(e) = self.bus.ensure_receiver(&gln).await {
                        warn!(receiver = %gln, error = %e, "relay: declaring inbox failed");
                    }
                    self.attempt(id, &format!("returned {reply_code}")).await;
                }
            }
            other => {
                debug!(record = %id, outcome = ?other, "relay: publish not confirmed; will retry");
                self.attempt(id, &format!("{other:?}")).await;
            }
        }
        // Not published: back to the lane, which restarts from here after a pause.
        run.in_flight.remove(&id);
        if let Some(l) = run.lanes.get_mut(&gln) {
            l.in_flight = l.in_flight.saturating_sub(1);
            l.rewind(id);
        }
        self.block(run, &gln);
    }

    /// Hand confirmed publishes to mark tasks, a group per task, while fewer than [`MARK_TASKS`] run.
    fn spawn_marks(&self, run: &mut Run) {
        while run.marks.len() < MARK_TASKS && !run.to_mark.is_empty() {
            let n = run.to_mark.len().min(MARK_GROUP);
            let group: Vec<(RecordId, String)> = run.to_mark.drain(..n).collect();
            let ob = self.outbox.clone();
            run.marks.spawn(async move {
                let ids: Vec<RecordId> = group.iter().map(|(id, _)| *id).collect();
                match blocking(move || ob.mark_published_many(&ids)).await {
                    Ok(results) => group
                        .into_iter()
                        .zip(results)
                        .map(|((id, gln), r)| {
                            let r = match r {
                                Ok(_) => Ok(()),
                                // Already beyond accepted (a receipt overtook the confirm, or a
                                // re-publish).
                                Err(OutboxError::IllegalTransition { from, .. })
                                    if from != State::Accepted =>
                                {
                                    Ok(())
                                }
                                Err(e) => Err(RelayError::Outbox(e)),
                            };
                            (id, gln, r)
                        })
                        .collect(),
                    Err(e) => {
                        let why = e.to_string();
                        group
                            .into_iter()
                            .map(|(id, gln)| (id, gln, Err(RelayError::Group(why.clone()))))
                            .collect()
                    }
                }
            });
        }
    }

    /// A mark task ended. Its outbox call's panic or failure comes back inside the group (every record
    /// rewound); the task itself only ends without a group when the run is aborted, and a record left
    /// `accepted` then is published again by the next run.
    fn on_marked_group(&self, run: &mut Run, done: Result<Vec<Marked>, tokio::task::JoinError>) {
        if let Ok(group) = done {
            for (id, gln, r) in group {
                self.on_marked(run, id, &gln, r);
            }
        }
    }

    fn on_marked(&self, run: &mut Run, id: RecordId, gln: &str, r: Result<(), RelayError>) {
        run.in_flight.remove(&id);
        run.returns.remove(&id);
        let lane = run.lanes.get_mut(gln);
        match r {
            Ok(()) => {
                if let Some(l) = lane {
                    l.in_flight = l.in_flight.saturating_sub(1);
                    l.backoff.reset();
                }
            }
            Err(e) => {
                // The broker has it but we could not record that (disk full?): publish again later;
                // the subscriber drops the duplicate.
                warn!(record = %id, error = %e, "relay: marking published failed; will re-publish");
                if let Some(l) = lane {
                    l.in_flight = l.in_flight.saturating_sub(1);
                    l.rewind(id);
                }
                self.block(run, gln);
            }
        }
    }
}

/// Publish outcome → telemetry event.
fn observe_outcome(
    t: &sammen_telemetry::Telemetry,
    message_id: &str,
    id: RecordId,
    outcome: &PublishOutcome,
    latency: Duration,
    attempt: u32,
) {
    let failure = match outcome {
        PublishOutcome::Confirmed => {
            t.emit(PublishConfirmed {
                message_id,
                record: id.0,
                latency,
            });
            return;
        }
        PublishOutcome::Returned { .. } => PublishFailure::Returned,
        PublishOutcome::Nacked => PublishFailure::Nack,
        PublishOutcome::TimedOut => PublishFailure::Timeout,
        PublishOutcome::ConnectionLost => PublishFailure::NotConnected,
        // A future outcome is a failure until it is given its own label.
        _ => PublishFailure::Nack,
    };
    t.emit(PublishFailed {
        message_id,
        record: id.0,
        failure,
        latency,
        attempt,
    });
}
