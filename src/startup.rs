//! `Application`: builds the adapters, brings the schema up to date, starts the actor tree and
//! binds the HTTP listener (reporting the port it really got, so tests can bind port 0). The
//! only place that names concrete adapters.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use leadorch_actors::actors::supervisor::{RestartPolicy, RootArgs, RootHandle};
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::store::{self, Store};

/// How long start-up keeps retrying an unreachable database before giving up.
const STARTUP_DB_PATIENCE: Duration = Duration::from_secs(30);

/// A built, not yet serving, leadorch process.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    root: RootHandle,
    root_join: tokio::task::JoinHandle<()>,
}

/// Creates the database if missing and applies pending migrations, retrying while the server is
/// unreachable (it may still be starting).
///
/// # Errors
/// The database stayed unreachable, or a migration failed.
pub async fn prepare_database(settings: &Settings) -> anyhow::Result<usize> {
    let config = store::pg_config(&settings.database).context("failed to read the database url")?;
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = async {
            store::ensure_database(&config).await?;
            store::migrate(&config).await
        };
        match attempt.await {
            Ok(applied) => return Ok(applied),
            Err(store::MigrateError::Unavailable(err))
                if started.elapsed() < STARTUP_DB_PATIENCE =>
            {
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "database unavailable at start-up");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err).context("failed to prepare the database"),
        }
    }
}

impl Application {
    /// Prepares the database, starts the actor tree and binds the listener.
    ///
    /// # Errors
    /// The database cannot be prepared, the actor tree cannot start, or the address is taken.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        prepare_database(&settings).await?;
        let store = Store::new(&settings.database).context("failed to build the database pool")?;
        let (root, root_join) = RootHandle::start(RootArgs {
            children: Vec::new(),
            policy: RestartPolicy::default(),
        })
        .await
        .context("failed to start the actor system")?;
        let listener = TcpListener::bind(settings.http.addr)
            .await
            .with_context(|| format!("failed to bind {}", settings.http.addr))?;
        let addr = listener
            .local_addr()
            .context("failed to read the bound address")?;
        let state = AppState {
            settings: Arc::new(settings),
            store,
            metrics: http::metrics::recorder(),
        };
        Ok(Application {
            listener,
            addr,
            state,
            root,
            root_join,
        })
    }

    /// Returns the address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the shared state (tests reach the store through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then: stop accepting, drain in-flight requests, stop
    /// the actor tree, close the pool.
    ///
    /// # Errors
    /// The server failed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            addr,
            state,
            root,
            root_join,
        } = self;
        tracing::info!(%addr, "listening");
        let app = http::router(state.clone());
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        tracing::info!("http drained; stopping actors");
        root.stop(Duration::from_secs(10)).await;
        // The supervisor's task result carries nothing once it has stopped.
        let _ = root_join.await;
        state.store.pool.close();
        tracing::info!("stopped");
        served.context("http server failed")
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received"),
        () = terminate => tracing::info!("sigterm received"),
    }
}
