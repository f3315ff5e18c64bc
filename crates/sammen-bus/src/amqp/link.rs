//! The publishing link and its supervisor.
//!
//! One [`Link`] is one connection plus one confirm-mode channel. The supervisor owns the lifecycle:
//! connect (with a timeout), declare topology, publish the link, then wait for *any* sign of failure —
//! a connection error event, a broker close, a publisher noticing a broken channel or a missing confirm,
//! or a status poll (lapin #389: streams can stay silent after the broker is gone). Then it withdraws the
//! link, cancels it (every pending confirm resolves `ConnectionLost`), and starts over after a backoff.
//! lapin's own recovery stays off.

use super::{connection_properties, declare, with_timeout, Shared};
use crate::error::BusError;
use futures_lite::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::types::ShortString;
use lapin::{Channel, Connection};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the supervisor double-checks the link's status.
const STATUS_POLL: Duration = Duration::from_millis(250);
/// A link that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

pub(crate) struct Link {
    pub(crate) conn: Connection,
    pub(crate) channel: Channel,
    /// Cancelled when this link must not be used any more.
    pub(crate) lost: CancellationToken,
}

impl Link {
    pub(crate) async fn close(&self) {
        self.lost.cancel();
        // Best effort and bounded: the socket may already be dead.
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.conn.close(200, ShortString::from("sammen closing")),
        )
        .await;
    }

    fn healthy(&self) -> bool {
        self.conn.status().connected() && self.channel.status().connected()
    }
}

async fn open(shared: &Shared) -> Result<Link, BusError> {
    let c = &shared.config;
    let conn = super::connect::connect(
        &c.url,
        connection_properties(&c.connection_name),
        c.connect_timeout,
    )
    .await?;
    let result = async {
        declare::declare_base(&conn, &c.topology, c.op_timeout).await?;
        if let Some(q) = &c.reply_to {
            declare::declare_receipts(&conn, q, c.op_timeout).await?;
        }
        for gln in shared.receivers() {
            declare::declare_receiver(&conn, &c.topology, &gln, c.op_timeout).await?;
        }
        let channel = with_timeout("channel.open", c.op_timeout, conn.create_channel()).await?;
        with_timeout(
            "confirm.select",
            c.op_timeout,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(channel)
    }
    .await;
    match result {
        Ok(channel) => Ok(Link {
            conn,
            channel,
            lost: CancellationToken::new(),
        }),
        Err(e) => {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                conn.close(200, ShortString::from("setup failed")),
            )
            .await;
            Err(e)
        }
    }
}

pub(crate) async fn supervise(shared: Arc<Shared>) {
    let mut backoff = shared.config.backoff.stream();
    let mut ever_connected = false;
    loop {
        if shared.shutdown.is_cancelled() {
            break;
        }
        match open(&shared).await {
            Ok(link) => {
                let link = Arc::new(link);
                if ever_connected {
                    shared.status.reconnects.fetch_add(1, Ordering::Relaxed);
                    info!("amqp: reconnected");
                }
                ever_connected = true;
                let up = Instant::now();
                let events = link.conn.events_listener();
                shared.current.send_replace(Some(link.clone()));
                shared.status.set_connected(true);

                let why = watch_link(&shared, &link, events).await;
                shared.current.send_replace(None);
                shared.status.set_connected(false);
                link.lost.cancel();
                if shared.shutdown.is_cancelled() {
                    link.close().await;
                    break;
                }
                warn!(reason = why, "amqp: link lost, reconnecting");
                // Close in the background: a dead socket must not delay the reconnect.
                tokio::spawn(async move { link.close().await });
                if up.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
            }
            Err(e) => {
                shared
                    .status
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "amqp: connect failed");
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.shutdown.cancelled() => break,
        }
    }
    shared.status.set_closed();
}

async fn watch_link(
    shared: &Shared,
    link: &Link,
    events: impl futures_lite::Stream<Item = lapin::Event>,
) -> &'static str {
    let mut events = std::pin::pin!(events);
    let mut poll = tokio::time::interval(STATUS_POLL);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return "shutdown",
            _ = link.lost.cancelled() => return "reported by a publisher",
            ev = events.next() => match ev {
                // Channel errors (e.g. a refused declare on a throw-away channel) are reported here
                // too; only a broken link counts. The status poll catches the rest.
                Some(lapin::Event::Error(_)) if !link.healthy() => return "connection error event",
                Some(_) => {}
                None => return "event stream ended",
            },
            _ = poll.tick() => if !link.healthy() { return "status poll: not connected" },
        }
    }
}
