//! `RootSupervisor`: the top of the actor tree. It starts its children from factories, restarts
//! a child that fails (with a back-off, within a restart budget), and stops the tree cleanly.
//!
//! Children are given as [`ChildSpec`]s rather than concrete types, so the process (in
//! `leadorch::startup`) decides which actors run while the restart policy lives in one place.
//! A restarted child has a new `ActorRef`: callers find children through registries keyed by id,
//! never by holding a reference across restarts.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent};
use tracing::{info, warn};

/// The future a [`ChildSpec`] factory returns: the started child, linked to the supervisor.
pub type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// Starts one child linked to the given supervisor cell.
pub type SpawnFn = Arc<dyn Fn(ActorCell) -> SpawnFuture + Send + Sync>;

/// How to start (and restart) one child of the root supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among the supervisor's children; used in logs and restarts.
    pub name: String,
    /// The kind of actor (`ingress`, `poller`, `location`, ...), for metrics and logs.
    pub kind: &'static str,
    pub spawn: SpawnFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec").field("name", &self.name).field("kind", &self.kind).finish()
    }
}

/// When a failed child is restarted, and when the supervisor gives up.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// At most this many restarts of one child within `window`; one more stops the supervisor.
    pub max_restarts: usize,
    pub window: Duration,
    /// Wait before the first restart; doubles with each restart inside the window.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 10,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RestartPolicy {
    fn backoff(&self, restarts_in_window: usize) -> Duration {
        let factor = 1u32 << restarts_in_window.min(16) as u32;
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// What the root supervisor starts with.
#[derive(Debug)]
pub struct RootArgs {
    pub children: Vec<ChildSpec>,
    pub policy: RestartPolicy,
}

/// A snapshot of one running child, for tests and the health route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildStatus {
    pub name: String,
    pub kind: &'static str,
    pub restarts: u64,
}

/// Messages to the root supervisor.
pub enum RootMsg {
    /// From the supervisor itself after a back-off: start the named child again.
    RestartChild(String),
    /// From startup code or a router: start another child (e.g. a location added at run time)
    /// unless one of that name runs; the reply, if asked for, says whether it runs afterwards.
    AddChild(ChildSpec, Option<RpcReplyPort<bool>>),
    /// Query: the children that are running now.
    GetChildren(RpcReplyPort<Vec<ChildStatus>>),
}

impl fmt::Debug for RootMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootMsg::RestartChild(name) => f.debug_tuple("RestartChild").field(name).finish(),
            RootMsg::AddChild(spec, _) => f.debug_tuple("AddChild").field(&spec.name).finish(),
            RootMsg::GetChildren(_) => f.write_str("GetChildren"),
        }
    }
}

/// The top of the actor tree.
#[derive(Debug, Default)]
pub struct RootSupervisor;

/// What the supervisor tracks about its children.
#[derive(Debug, Default)]
pub struct RootState {
    policy: RestartPolicy,
    specs: HashMap<String, ChildSpec>,
    /// Which running actor is which child; a restarted child gets a new id.
    running: HashMap<ActorId, String>,
    recent_restarts: HashMap<String, VecDeque<Instant>>,
    total_restarts: HashMap<String, u64>,
}

impl RootState {
    async fn start_child(&mut self, myself: &ActorRef<RootMsg>, spec: ChildSpec) -> Result<(), SpawnErr> {
        let cell = (spec.spawn)(myself.get_cell()).await?;
        info!(child = %spec.name, kind = spec.kind, "child started");
        self.running.insert(cell.get_id(), spec.name.clone());
        self.specs.insert(spec.name.clone(), spec);
        Ok(())
    }

    /// Records a failure of `name` and returns the back-off before its restart, or `None` when
    /// its restart budget is spent.
    fn plan_restart(&mut self, name: &str, now: Instant) -> Option<Duration> {
        let window = self.policy.window;
        let recent = self.recent_restarts.entry(name.to_owned()).or_default();
        while recent.front().is_some_and(|t| now.duration_since(*t) > window) {
            recent.pop_front();
        }
        if recent.len() >= self.policy.max_restarts {
            return None;
        }
        let backoff = self.policy.backoff(recent.len());
        recent.push_back(now);
        *self.total_restarts.entry(name.to_owned()).or_default() += 1;
        Some(backoff)
    }

    fn children(&self) -> Vec<ChildStatus> {
        let mut children: Vec<ChildStatus> = self
            .running
            .values()
            .filter_map(|name| self.specs.get(name))
            .map(|spec| ChildStatus {
                name: spec.name.clone(),
                kind: spec.kind,
                restarts: self.total_restarts.get(&spec.name).copied().unwrap_or(0),
            })
            .collect();
        children.sort_by(|a, b| a.name.cmp(&b.name));
        children
    }
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(&self, myself: ActorRef<RootMsg>, args: RootArgs) -> Result<RootState, ActorProcessingErr> {
        let mut state = RootState { policy: args.policy, ..RootState::default() };
        for spec in args.children {
            let name = spec.name.clone();
            state.start_child(&myself, spec).await.map_err(|err| format!("failed to start child {name}: {err}"))?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        msg: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::RestartChild(name) => {
                let Some(spec) = state.specs.get(&name).cloned() else {
                    return Ok(());
                };
                if let Err(err) = state.start_child(&myself, spec).await {
                    // A child that cannot start again counts as another failure of it.
                    warn!(child = %name, error = %err, "child restart failed");
                    schedule_restart(&myself, state, &name)?;
                }
            }
            RootMsg::AddChild(spec, reply_opt) => {
                let name = spec.name.clone();
                let runs = if state.running.values().any(|running| *running == name) {
                    true
                } else {
                    match state.start_child(&myself, spec).await {
                        Ok(()) => true,
                        Err(err) => {
                            warn!(child = %name, error = %err, "child failed to start");
                            false
                        }
                    }
                };
                if let Some(reply) = reply_opt {
                    let _ = reply.send(runs);
                }
            }
            RootMsg::GetChildren(reply) => {
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(state.children());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(name) = state.running.remove(&cell.get_id()) else {
                    return Ok(());
                };
                warn!(child = %name, error = %err, "child failed");
                schedule_restart(&myself, state, &name)?;
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // A clean stop is deliberate (shutdown, or the child decided it is done).
                if let Some(name) = state.running.remove(&cell.get_id()) {
                    info!(child = %name, reason = reason.as_deref().unwrap_or(""), "child stopped");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn schedule_restart(myself: &ActorRef<RootMsg>, state: &mut RootState, name: &str) -> Result<(), ActorProcessingErr> {
    match state.plan_restart(name, Instant::now()) {
        Some(backoff) => {
            let kind = state.specs.get(name).map_or("unknown", |spec| spec.kind);
            metrics::counter!("leadorch_supervisor_restarts_total", "kind" => kind).increment(1);
            let name = name.to_owned();
            myself.send_after(backoff, move || RootMsg::RestartChild(name));
            Ok(())
        }
        None => Err(format!("child {name} exceeded its restart budget").into()),
    }
}

/// A typed handle on the running root supervisor.
#[derive(Debug, Clone)]
pub struct RootHandle {
    actor: ActorRef<RootMsg>,
}

impl RootHandle {
    /// Starts the root supervisor with its children.
    ///
    /// # Errors
    /// A child that fails to start fails the whole start.
    pub async fn start(args: RootArgs) -> Result<(RootHandle, tokio::task::JoinHandle<()>), SpawnErr> {
        let (actor, join) = Actor::spawn(None, RootSupervisor, args).await?;
        Ok((RootHandle { actor }, join))
    }

    /// Starts another child under the supervisor unless one of that name runs, and waits;
    /// returns whether it runs afterwards.
    pub async fn add_child(&self, spec: ChildSpec) -> bool {
        let answer = self.actor.call(|reply| RootMsg::AddChild(spec, Some(reply)), Some(Duration::from_secs(10))).await;
        matches!(answer, Ok(ractor::rpc::CallResult::Success(true)))
    }

    /// Returns the running children, or `None` if the supervisor did not answer in time.
    pub async fn children(&self) -> Option<Vec<ChildStatus>> {
        match self.actor.call(RootMsg::GetChildren, Some(Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(children)) => Some(children),
            _ => None,
        }
    }

    /// Stops the supervisor and, through the links, every child; waits until they are gone.
    pub async fn stop(&self, timeout: Duration) {
        // An error means the actor is already stopped, which is what we want.
        let _ = self.actor.stop_children_and_wait(Some("shutdown".to_owned()), Some(timeout)).await;
        let _ = self.actor.stop_and_wait(Some("shutdown".to_owned()), Some(timeout)).await;
    }
}

#[cfg(test)]
mod tests;
