//! The HTTP surface: filter plumbing, routes, and the serving loop.
//!
//! Routing is a composition of small filters, one per endpoint (see
//! `webhooks.rs`, `api.rs`, `health.rs`). The serving loop is ours rather
//! than warp's, because warp sets no timeouts: we bound header reading,
//! whole requests, and the number of open connections.

pub mod api;
pub mod audit;
pub mod auth;
pub mod error;
pub mod health;
pub mod login;
pub mod pages;
pub mod session;
pub mod slowdown;
pub mod webhooks;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;
use warp::{Buf, Filter, Rejection, Reply};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::spool::Spool;
use crate::store::Db;
use error::ApiError;

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Everything a request handler may use.
pub struct AppState {
    config: RwLock<Arc<Config>>,
    /// The storage gateway.
    pub db: Db,
    /// Login checks and throttling.
    pub guard: auth::Guard,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Deliveries acknowledged during a storage fault, waiting to be applied.
    pub spool: Spool,
    /// Wakes the retention job (after a reload).
    pub retention_wake: tokio::sync::Notify,
}

impl AppState {
    /// Wraps a checked config, an open database and its spool.
    pub fn new(config: Config, db: Db, spool: Spool) -> Arc<AppState> {
        db.subscribe(&config.outbound);
        Arc::new(AppState {
            config: RwLock::new(Arc::new(config)),
            db,
            guard: auth::Guard::default(),
            metrics: Metrics::default(),
            spool,
            retention_wake: tokio::sync::Notify::new(),
        })
    }

    /// The settings in force (a snapshot: a reload does not change it under a request).
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    /// What a delivery is handled with, under `config` (a snapshot of
    /// [`AppState::config`]).
    pub fn ingest<'a>(&'a self, config: &'a Config) -> crate::ingest::Ingest<'a> {
        crate::ingest::Ingest {
            config,
            db: &self.db,
            spool: &self.spool,
            metrics: &self.metrics,
        }
    }

    /// Replaces the settings in force.
    pub fn set_config(&self, config: Config) {
        self.db.subscribe(&config.outbound);
        *self.config.write().unwrap() = Arc::new(config);
    }
}

/// The client's address, put on each request by the serving loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Hands the shared state to a handler.
pub fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The client's address, when the request came through the serving loop.
pub fn client_addr()
-> impl Filter<Extract = (Option<std::net::IpAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<ClientAddr>().map(|a: Option<ClientAddr>| a.map(|a| a.0.ip()))
}

/// A header as text, read whatever bytes it holds (lossily). Credentials
/// that are not valid text are wrong credentials (401), not a malformed
/// request: warp's typed header filters would answer 400.
pub fn raw_header(
    name: &'static str,
) -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::header::headers_cloned().map(move |headers: warp::http::HeaderMap| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    })
}

/// The request body, refused with 413 past `server.max_body_bytes` whether
/// or not the client announced a length (chunked bodies are counted as they come).
pub fn body(state: Arc<AppState>) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |length: Option<u64>, stream| {
            let max = state.config().server.max_body_bytes;
            collect_limited(length, stream, max)
        })
}

async fn collect_limited<S, B>(length: Option<u64>, stream: S, max: u64) -> Result<Bytes, Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if length.is_some_and(|l| l > max) {
        return Err(ApiError::TooLarge(max).reject());
    }
    let mut buf = BytesMut::with_capacity(length.unwrap_or(8192).min(max) as usize);
    futures_util::pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("cannot read body: {e}")).reject())?;
        if (buf.len() + chunk.remaining()) as u64 > max {
            return Err(ApiError::TooLarge(max).reject());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            buf.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

/// A request body that notes when the client has sent all of it, so that a
/// request timeout can tell a slow client (408) from a slow server (503).
struct Watched {
    inner: Incoming,
    received: Arc<AtomicBool>,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.received.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Every route of the service, with errors turned into JSON.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    health::routes(state.clone())
        .or(webhooks::routes(state.clone()))
        .unify()
        .or(api::routes(state.clone()))
        .unify()
        .or(login::routes(state.clone()))
        .unify()
        .or(pages::routes(state.clone()))
        .unify()
        .or(audit::routes(state))
        .unify()
        .recover(error::recover)
        .unify()
        .with(warp::reply::with::header(
            "x-content-type-options",
            "nosniff",
        ))
        .map(Reply::into_response)
}

/// Serves `routes` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish (up to 30 s).
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = state.config();
    let header_timeout = Duration::from_millis(config.server.header_timeout_ms);
    let request_timeout = Duration::from_millis(config.server.request_timeout_ms);
    let connections = Arc::new(Semaphore::new(config.server.max_connections));
    let service = warp::service(routes(state));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let per_request = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let mut service = service.clone();
            req.extensions_mut().insert(ClientAddr(peer));
            let received = Arc::new(AtomicBool::new(req.body().is_end_stream()));
            let req = req.map(|inner| Watched {
                inner,
                received: received.clone(),
            });
            async move {
                match tokio::time::timeout(request_timeout, service.call(req)).await {
                    Ok(response) => response,
                    // The client sent everything and we were slow (storage
                    // stalled): a 4xx would tell the sender not to retry.
                    Err(_) if received.load(Ordering::Relaxed) => {
                        tracing::warn!(%peer, "request timed out after its body was received");
                        Ok(ApiError::Unavailable.into_response())
                    }
                    Err(_) => Ok(ApiError::Timeout.into_response()),
                }
            }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), per_request));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("grace period over; closing remaining connections"),
    }
    Ok(())
}
