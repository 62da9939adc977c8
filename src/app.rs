//! The running service: built from a checked config on any port (0 in
//! tests), it reports its real address and serves until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{self, AppState};
use crate::spool::Spool;
use crate::store::{Db, Location};

/// How often the spool is checked for deliveries to apply.
const SPOOL_INTERVAL: Duration = Duration::from_secs(1);

/// A bound, not yet serving, service.
pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
    addr: SocketAddr,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A secret still has its shipped value on a non-loopback address.
    #[error("{0}")]
    Secrets(String),
    /// The database could not be opened or migrated.
    #[error("database ({store}): {source}")]
    Database {
        /// The configured store, password redacted.
        store: String,
        /// What went wrong.
        source: crate::store::DbError,
    },
    /// The spool directory could not be created.
    #[error("spool directory {path}: {source}")]
    Spool {
        /// The configured directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The config does not fit the data (a status in use left out).
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl Application {
    /// Opens the database (creating and migrating it) and binds the listener.
    pub async fn build(config: Config) -> Result<Application, StartError> {
        let shipped = config
            .check_shipped_secrets()
            .map_err(|e| StartError::Secrets(e.to_string()))?;
        if !shipped.is_empty() {
            tracing::warn!(keys = %shipped.join(", "), "secrets still have their shipped values; serving on loopback only");
        }
        let location = Location::of(&config.database);
        let store = config.database.describe();
        let db = tokio::task::spawn_blocking(move || Db::connect(&location))
            .await
            .expect("database open task panicked")
            .map_err(|source| StartError::Database { store, source })?;
        if let Err(e) = check_pipeline(&db, &config).await {
            let closing = db.clone();
            let _ = tokio::task::spawn_blocking(move || closing.close()).await;
            return Err(e.into());
        }
        // Load phone metadata now, not on the first request.
        let _ = phonenumber::parse(Some(config.merge.default_region), "+14084987855");
        let spool_dir = config.database.spool_dir();
        let spool = Spool::open(&spool_dir).map_err(|source| StartError::Spool {
            path: spool_dir,
            source,
        })?;
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Application {
            listener,
            state: AppState::new(config, db, spool),
            addr,
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (for reloads and tests).
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, lets in-flight requests finish,
    /// then closes the database cleanly.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let state = self.state.clone();
        let drainer = tokio::spawn(drain_spool_forever(state.clone()));
        let sender = tokio::spawn(crate::outbound::worker::run(state.clone()));
        let retention = tokio::spawn(crate::retention::run_forever(state.clone()));
        let result = http::run(self.listener, self.state, shutdown).await;
        drainer.abort();
        // A delivery cut off mid-send is sent again once its lease ends.
        sender.abort();
        retention.abort();
        let db = state.db.clone();
        let _ = tokio::task::spawn_blocking(move || db.close()).await;
        result
    }
}

/// Refuses a `[pipeline]` that lacks a status leads still have, naming it
/// (at start and on every reload). A store that cannot answer now does not
/// stop the service: the check is logged as skipped.
pub async fn check_pipeline(db: &Db, config: &Config) -> Result<(), crate::config::ConfigError> {
    match db.statuses_in_use().await {
        Ok(in_use) => config.pipeline.check_in_use(&in_use),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check pipeline.statuses against the leads now");
            Ok(())
        }
    }
}

/// Applies spooled deliveries whenever storage takes them again.
async fn drain_spool_forever(state: Arc<AppState>) {
    loop {
        if state.spool.depth() > 0 {
            let config = state.config();
            crate::ingest::drain_spool(&state.ingest(&config)).await;
        }
        tokio::time::sleep(SPOOL_INTERVAL).await;
    }
}
