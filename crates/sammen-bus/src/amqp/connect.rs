//! Opening an AMQP connection with a bounded handshake that leaves nothing behind when it times out.
//!
//! Why not `Connection::connect` under `tokio::time::timeout`: lapin runs every connection on a thread of
//! its own (its io loop), started before the AMQP handshake. Dropping the connect future on a timeout does
//! not end that thread: against a broker that accepts TCP but never answers (seen here with a hung
//! RabbitMQ node for half an hour) each reconnect attempt left one thread and one socket behind.
//!
//! So the TCP stream is opened here, through [`Connection::connector`], with a duplicate of its descriptor
//! kept aside. On a timeout that duplicate shuts the socket down; the io loop then reads an error while
//! connecting and ends, because [`connection_properties`](super::connection_properties) leaves lapin's own
//! reconnect at zero retries.
//!
//! Invariant: after [`connect`] returns an error, no io-loop thread of that attempt outlives the error by
//! more than the time lapin needs to notice a shut-down socket.

use crate::error::BusError;
use lapin::tcp::{AMQPUriTcpExt, AsyncTcpStream, TLSConfig};
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The socket of one attempt, as a duplicate descriptor that can shut it down from outside lapin.
type Handle = Arc<Mutex<Option<TcpStream>>>;

/// Connect to `url` and finish the AMQP handshake within `timeout`.
pub async fn connect(
    url: &str,
    props: ConnectionProperties,
    timeout: Duration,
) -> Result<Connection, BusError> {
    let uri: AMQPUri = url.parse().map_err(|reason| BusError::BadUrl { reason })?;
    let runtime = lapin::runtime::default_runtime().map_err(|e| BusError::Amqp {
        op: "connect",
        source: e,
    })?;
    let handle: Handle = Arc::default();
    let kept = handle.clone();
    let connecting = Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            let stream = uri
                .connect_with_config_async(TLSConfig::default(), &runtime)
                .await
                .map_err(lapin::Error::from)?;
            keep(&kept, &stream);
            Ok(stream)
        },
        props,
    );
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => {
            // The duplicate must not keep the socket open after lapin closes it.
            take(&handle);
            Ok(conn)
        }
        Ok(Err(e)) => {
            shut(&handle);
            Err(BusError::Amqp {
                op: "connect",
                source: e,
            })
        }
        Err(_) => {
            shut(&handle);
            Err(BusError::Timeout {
                op: "connect",
                after: timeout,
            })
        }
    }
}

/// lapin's TCP stream on tokio.
type Stream = AsyncTcpStream<async_compat::Compat<tokio::net::TcpStream>>;

/// Keep a duplicate of the plain TCP socket (TLS is not compiled into this lapin; if it were, such a
/// stream would not be kept and a timeout would fall back to lapin's own behaviour).
fn keep(handle: &Handle, stream: &Stream) {
    #[allow(unreachable_patterns)]
    let dup = match stream {
        AsyncTcpStream::Plain(s) => s
            .get_ref()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(TcpStream::from),
        _ => None,
    };
    if let Ok(mut slot) = handle.lock() {
        *slot = dup;
    }
}

fn take(handle: &Handle) -> Option<TcpStream> {
    handle.lock().ok().and_then(|mut slot| slot.take())
}

fn shut(handle: &Handle) {
    if let Some(s) = take(handle) {
        // Errors mean the socket is already gone, which is what we want.
        let _ = s.shutdown(Shutdown::Both);
    }
}
