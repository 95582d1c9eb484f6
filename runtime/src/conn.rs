//! Connection layer: accepts TCP connections and serves the router over HTTP/1 with bounded
//! request headers, a header-read timeout and a write timeout; drains on shutdown.
//!
//! hyper's HTTP/1 connection does the parsing and the limits (`max_header_size`,
//! `max_headers`, `header_read_timeout`); `tokio-io-timeout` fails a write that makes no progress
//! for the write timeout, which ends the connection and drops its response — for a stream, its
//! generation and its slot.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_io_timeout::TimeoutStream;

use crate::metrics::TimeoutLabels;

/// Most header fields a request may carry (431 beyond).
pub const MAX_HEADERS: usize = 100;

/// Limits of each HTTP connection.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// Time a client has to send a request's line and headers; also how long an idle
    /// kept-alive connection stays open. The connection is closed after it.
    pub header_read_timeout: Duration,
    /// Time a response write may make no progress (a client that stopped reading) before the
    /// connection is closed.
    pub write_timeout: Duration,
    /// Largest request line plus headers, in bytes (431 beyond).
    pub max_header_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its in-flight request (idle ones are closed) and returns once all are done.
/// Connections closed by a timeout are counted in `timed_out`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    timed_out: Family<TimeoutLabels, Counter>,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(MAX_HEADERS);
    // Connections hold a receiver each: `closed()` on the sender resolves once all are gone.
    let (drain_tx, drain_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let mut io = TimeoutStream::new(stream);
        io.set_write_timeout(Some(limits.write_timeout));
        let conn = http.serve_connection(
            TokioIo::new(Box::pin(io)),
            TowerToHyperService::new(app.clone()),
        );
        let mut drain = drain_rx.clone();
        let write_timeout = limits.write_timeout;
        let timed_out = timed_out.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = drain.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result
                && let Some(reason) = log_connection_error(&e, peer, write_timeout)
            {
                timed_out.get_or_create(&TimeoutLabels { reason }).inc();
            }
            drop(drain);
        });
    }
    drop(listener);
    drop(drain_rx);
    let _ = drain_tx.send(());
    drain_tx.closed().await;
}

/// A failed accept: the peer's own trouble is skipped; anything else (out of file descriptors)
/// is logged and the loop pauses a moment so it does not spin.
async fn accept_error(e: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Logs why a connection ended; returns the timeout that ended it, if one did.
fn log_connection_error(
    e: &hyper::Error,
    peer: std::net::SocketAddr,
    write_timeout: Duration,
) -> Option<&'static str> {
    let timed_out_writing = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
    if timed_out_writing {
        tracing::warn!(%peer, seconds = write_timeout.as_secs_f64(),
            "the client read nothing for the write timeout; connection closed, its generation stopped");
        Some("write")
    } else if e.is_timeout() {
        tracing::debug!(%peer, "no complete request headers within the header-read timeout; connection closed");
        Some("header_read")
    } else {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
        None
    }
}
