//! What the loopback fakes share: serving a router on `127.0.0.1:0` until shutdown or drop
//! ([`SimServer`]), the countdown of run-time faults ([`take_one`], [`ApiFaults`]) and the
//! poison-tolerant lock their state uses ([`lock`]).
//!
//! Each fake keeps its routes, its state, the answers its faults produce and the background work
//! (callbacks, webhook retries) it stops before the server.

use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long [`SimServer::shutdown`] waits for open connections before aborting the server task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// An axum server on a loopback port. [`SimServer::shutdown`] stops it and waits; dropping it
/// only starts the graceful shutdown.
#[derive(Debug)]
pub(super) struct SimServer {
    addr: SocketAddr,
    /// Taken by `shutdown` or `drop`; sending (or dropping) it starts axum's graceful shutdown.
    shutdown_tx_opt: Option<oneshot::Sender<()>>,
    /// Taken by `shutdown`, which waits for it; a dropped handle leaves the task to finish alone.
    server_opt: Option<JoinHandle<()>>,
}

impl SimServer {
    /// Binds `127.0.0.1:0` and serves `app` in a tokio task. `vendor` (`twilio`, ...) names the
    /// fake in the warning logged if serving fails.
    ///
    /// # Errors
    /// The listener cannot bind.
    pub(super) async fn start(vendor: &'static str, app: Router) -> io::Result<SimServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            // Streamed answers are many small writes: without TCP_NODELAY, Nagle holds each
            // one back until the client acknowledges the previous (up to its delayed-ACK time).
            let listener = listener.tap_io(|tcp| {
                if let Err(err) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %err, "could not set TCP_NODELAY");
                }
            });
            let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
                // A dropped sender stops the server as well as a sent value.
                shutdown_rx.await.ok();
            });
            if let Err(err) = serving.await {
                tracing::warn!(error = %err, "{vendor} sim server failed");
            }
        });
        Ok(SimServer { addr, shutdown_tx_opt: Some(shutdown_tx), server_opt: Some(server) })
    }

    /// Returns the address the server listens on.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns `http://127.0.0.1:PORT`.
    pub(super) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests and waits (at most 5 s) for open connections to finish, then
    /// aborts the server task. A second call does nothing.
    pub(super) async fn shutdown(&mut self) {
        self.start_shutdown();
        let Some(mut server) = self.server_opt.take() else {
            return;
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
            server.abort();
        }
    }

    fn start_shutdown(&mut self) {
        if let Some(shutdown_tx) = self.shutdown_tx_opt.take() {
            // An error means the server task has already ended, which is what was asked for.
            shutdown_tx.send(()).ok();
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.start_shutdown();
    }
}

/// Uses up one application of a fault; returns whether it applies to this request.
///
/// `remaining` counts the requests the fault still applies to: 0 means off and `usize::MAX`
/// never runs out.
pub(super) fn take_one(remaining: &mut usize) -> bool {
    match *remaining {
        0 => false,
        usize::MAX => true,
        _ => {
            *remaining -= 1;
            true
        }
    }
}

/// The API faults every fake offers, each with the number of requests it still applies to (see
/// [`take_one`]): a delay, then a refusal with 429 or 500.
#[derive(Debug)]
pub(super) struct ApiFaults<T> {
    /// The delay, and the requests it still applies to.
    pub(super) slow_opt: Option<(Duration, usize)>,
    /// What the fake's 429 answer carries (such as its `Retry-After`), and the requests it still
    /// applies to.
    pub(super) status_429_opt: Option<(T, usize)>,
    /// The requests still answered with 500.
    pub(super) status_500_remaining: usize,
}

impl<T> Default for ApiFaults<T> {
    fn default() -> Self {
        ApiFaults { slow_opt: None, status_429_opt: None, status_500_remaining: 0 }
    }
}

/// A refusal [`ApiFaults`] drew for one request; each fake turns it into its vendor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ApiRefusal<T> {
    /// Answer 429 with what [`ApiFaults::status_429_opt`] carries.
    TooManyRequests(T),
    /// Answer 500.
    Internal,
}

impl<T: Clone> ApiFaults<T> {
    /// Uses up the faults that apply to one API request: an optional delay, then an optional
    /// refusal (429 before 500).
    pub(super) fn take(&mut self) -> (Option<Duration>, Option<ApiRefusal<T>>) {
        let delay_opt = take_counted(&mut self.slow_opt);
        if let Some(payload) = take_counted(&mut self.status_429_opt) {
            return (delay_opt, Some(ApiRefusal::TooManyRequests(payload)));
        }
        if take_one(&mut self.status_500_remaining) {
            return (delay_opt, Some(ApiRefusal::Internal));
        }
        (delay_opt, None)
    }
}

/// Uses up one application of a fault that carries a value; returns the value when it applies.
fn take_counted<T: Clone>(fault_opt: &mut Option<(T, usize)>) -> Option<T> {
    let (value, remaining) = fault_opt.as_mut()?;
    take_one(remaining).then(|| value.clone())
}

/// Acts on the faults [`ApiFaults::take`] drew for a request: sleeps out the delay, then answers
/// the refusal with `refuse`, or else passes the request on.
pub(super) async fn run_with_faults<T>(
    (delay_opt, refusal_opt): (Option<Duration>, Option<ApiRefusal<T>>),
    refuse: impl FnOnce(ApiRefusal<T>) -> Response,
    request: Request,
    next: Next,
) -> Response {
    // The refusal is made before the delay, so a rate-limit reset in it counts from the request.
    let refusal_answer_opt = refusal_opt.map(refuse);
    if let Some(delay) = delay_opt {
        tokio::time::sleep(delay).await;
    }
    match refusal_answer_opt {
        Some(refusal_answer) => refusal_answer,
        None => next.run(request).await,
    }
}

/// Locks a mutex, ignoring poisoning: a panicking test thread must not cascade into every
/// other user of the fake, and no critical section leaves the data half-written.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
