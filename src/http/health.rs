//! Health and metrics: no credentials, cheap, for machines.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::{AppState, with_state};
use crate::metrics::Scrape;

/// How long a recorded write fault stands before `/healthz` tries an empty
/// write: with the service marked unhealthy no traffic may come to clear it.
const PROBE_AFTER: Duration = Duration::from_secs(5);

/// `/healthz` and `/metrics`.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    healthz(state.clone()).or(metrics(state)).unify()
}

/// GET /healthz
///
/// 200 `{"status":"ok"}` when the database answers, the last write
/// committed and no write has waited longer than the answer deadline;
/// 503 `{"result":"error", "status":"unavailable", "error": …}` otherwise. A fault
/// older than 5 s is checked again with an empty write transaction.
fn healthz(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("healthz")
        .and(warp::get())
        .and(with_state(state))
        .then(|state: Arc<AppState>| async move {
            let read = state
                .db
                .read(|conn| conn.query_row("SELECT 1", &[], |r| r.get::<i64>(0)))
                .await;
            let stuck = Duration::from_millis(state.config().jivo.answer_deadline_ms);
            let mut fault = state.db.write_fault(stuck);
            if fault.is_some() && state.db.fault_age().is_some_and(|age| age > PROBE_AFTER) {
                let probe = tokio::time::timeout(stuck, state.db.write(|_| Ok(()))).await;
                if let Ok(Ok(())) = probe {
                    fault = None;
                }
            }
            let problem = match (read, fault) {
                (Err(e), _) => Some(e.to_string()),
                (Ok(_), Some(fault)) => Some(fault),
                (Ok(_), None) => None,
            };
            match problem {
                None => warp::reply::json(&json!({ "status": "ok" })).into_response(),
                Some(error) => warp::reply::with_status(
                    warp::reply::json(
                        &json!({ "result": "error", "status": "unavailable", "error": error }),
                    ),
                    StatusCode::SERVICE_UNAVAILABLE,
                )
                .into_response(),
            }
        })
}

/// GET /metrics
///
/// Prometheus text format (version 0.0.4).
fn metrics(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
        .then(|state: Arc<AppState>| async move {
            let (outbound, backlog) = outbound_series(&state).await;
            // The SQLite file and its WAL; PostgreSQL's size is the server's to report.
            let database_bytes = state.db.sqlite_path().map_or(0, |path| {
                let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                let mut wal = path.as_os_str().to_owned();
                wal.push("-wal");
                size(path) + size(std::path::Path::new(&wal))
            });
            let text = state.metrics.render(&Scrape {
                database_bytes,
                pool: state.db.pool_status(),
                spool_depth: state.spool.depth(),
                outbound,
                backlog,
            });
            warp::reply::with_header(text, "content-type", crate::metrics::CONTENT_TYPE)
                .into_response()
        })
}

/// The outbound endpoints configured and every one's backlog as the store
/// has it (shared by instances). A store that cannot answer leaves the
/// backlog out, not the page.
async fn outbound_series(state: &AppState) -> (Vec<String>, Vec<(String, i64, f64)>) {
    let config = state.config();
    if config.outbound.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let configured: Vec<String> = config.outbound.iter().map(|e| e.name.clone()).collect();
    let now = crate::store::outbox::now_ms();
    let backlog = match state.db.read(crate::store::outbox::status).await {
        Ok(rows) => configured
            .iter()
            .map(|name| {
                let row = rows.iter().find(|r| &r.name == name);
                let pending = row.map_or(0, |r| r.pending);
                let age = row
                    .and_then(|r| r.oldest_pending_ms)
                    .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
                (name.clone(), pending, age)
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbound backlog for /metrics");
            Vec::new()
        }
    };
    (configured, backlog)
}
