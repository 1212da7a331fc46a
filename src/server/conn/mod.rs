//! Connections: our own accept loop over hyper's HTTP/1 connection, so that every socket a
//! client can hold has a bound and a timeout (axum::serve has neither): a cap on open
//! connections (at the cap the longest-idle one is closed, or the newcomer gets a 503 when
//! all are serving requests), a keep-alive timeout for idle connections, a header timeout
//! from the first byte of a request head to its end, and a body timeout for the whole
//! request body. TCP_NODELAY and `ConnectInfo<SocketAddr>` are kept. Shutdown has two
//! steps: while draining the listener stays open and every response says
//! `Connection: close`; on `close` the loop stops accepting and each connection ends after
//! its response in progress.

mod bodies;
pub mod fd_limit;
mod io;
mod registry;
mod service;

pub use bodies::BodyTimeout;
pub use registry::Registry;

use super::shutdown::Shutdown;
use axum::Router;
use hyper_util::rt::TokioIo;
use registry::{ConnState, Phase};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// The bounds of `--http-header-timeout`, `--http-body-timeout`,
/// `--http-keep-alive-timeout` and `--max-connections`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_connections: usize,
}

/// Refusals written at once; beyond this many in progress a refused socket is just closed.
const MAX_REFUSALS_IN_PROGRESS: usize = 64;
/// How long a refusal may take to write its 503 and read what the client had sent.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error (out of descriptors): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Accepts and serves connections until `close` turns true (while `draining` has started
/// but `close` has not, connections are still accepted and served, one request each); then
/// stops accepting, lets each connection finish its request in progress (idle ones close at
/// once) and resolves when the last one has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    draining: Shutdown,
    close: watch::Receiver<bool>,
) {
    let registry = Registry::new(limits.max_connections);
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_PROGRESS));
    // Every connection task holds a receiver; `closed()` resolves once all are gone.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = closed(close.clone()) => break,
        };
        let (tcp, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, open = registry.len(), "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Stream chunks go out as soon as they are written: without TCP_NODELAY, Nagle
        // holds the first small SSE events behind the peer's delayed ACK (measured: +20 ms
        // on time-to-first-token at concurrency 1).
        let _ = tcp.set_nodelay(true);
        let Some(reg) = registry.register() else {
            refuse(tcp, remote, &refusals);
            continue;
        };
        let app = app.clone();
        let draining = draining.clone();
        let close = close.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let _open = open;
            serve_one(tcp, remote, app, limits, reg.state.clone(), draining, close).await;
            drop(reg);
        });
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}

/// Serves one connection until it closes, times out, is evicted, or shutdown finishes it.
async fn serve_one(
    tcp: TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: ConnLimits,
    state: Arc<ConnState>,
    draining: Shutdown,
    close: watch::Receiver<bool>,
) {
    let svc = service::ConnService::new(app, remote, state.clone(), limits.body_timeout, draining);
    let io = TokioIo::new(io::WatchedStream::new(tcp, state.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        let deadline = match state.phase() {
            Phase::Idle => Some(limits.keep_alive_timeout),
            Phase::Headers => Some(limits.header_timeout),
            Phase::Busy => None,
        }
        .map(|limit| limit.saturating_sub(state.in_phase_for()));
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(client = %remote, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = state.changed.notified() => {
                if state.is_evicted() {
                    tracing::debug!(client = %remote, "closing an idle connection for a new one (--max-connections)");
                    return;
                }
            }
            _ = expired => {
                let phase = state.phase();
                let limit = match phase {
                    Phase::Idle => limits.keep_alive_timeout,
                    Phase::Headers => limits.header_timeout,
                    Phase::Busy => continue,
                };
                if state.in_phase_for() >= limit {
                    tracing::debug!(client = %remote, ?phase, "closing a connection: timeout");
                    return;
                }
            }
            _ = closed(close.clone()), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Resolves once `close` is true (or its sender is gone).
async fn closed(mut close: watch::Receiver<bool>) {
    let _ = close.wait_for(|c| *c).await;
}

/// Refuses a connection past the cap with a 503 in OpenAI's shape (when few refusals are in
/// progress; otherwise it is closed at once).
fn refuse(mut tcp: TcpStream, remote: SocketAddr, refusals: &Arc<Semaphore>) {
    tracing::warn!(client = %remote, "refused a connection: every connection is serving a request (--max-connections)");
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let body = super::error::ApiError::Unavailable(
            "too many open connections (--max-connections); retry later".into(),
        )
        .to_json();
        let resp = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
            tcp.write_all(resp.as_bytes()).await?;
            tcp.shutdown().await?;
            // Read what the client sent, so closing does not reset the connection before
            // it has read the answer.
            let mut sink = [0u8; 4096];
            let mut total = 0;
            while total < 64 * 1024 {
                match tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await? {
                    0 => break,
                    n => total += n,
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}
