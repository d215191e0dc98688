//! `Poller`: one per tenant, the safety net under the webhooks. Every period it lists the
//! tenant's orders updated since its cursor (minus an overlap, since the CRM's paging and date
//! order are unreliable), de-duplicates by (order id, updated date), repeats the pass while it
//! still finds unseen orders, and feeds each through the same intake path as the webhooks. Each
//! run is recorded with its counts, cursor and error.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::domain::{JobRun, TenantId};
use crate::intake::{IntakeDeps, IntakeOutcome, IntakePath, process_order};
use crate::ports::JobStore;

/// The job name in `job_executions`.
pub const POLL_JOB: &str = "crm_order_poll";

/// Timings of the poller.
#[derive(Debug, Clone, Copy)]
pub struct PollerPolicy {
    pub every: Duration,
    /// How far before the cursor each run starts again.
    pub overlap: Duration,
    /// Where the very first run starts, before now.
    pub first_lookback: Duration,
    pub page_size: u32,
    pub max_pages: u32,
    /// Passes over the window per run while the previous pass still found unseen orders.
    pub max_passes: u32,
}

impl Default for PollerPolicy {
    fn default() -> Self {
        PollerPolicy {
            every: Duration::from_secs(30),
            overlap: Duration::from_secs(300),
            first_lookback: Duration::from_secs(3600),
            page_size: 100,
            max_pages: 50,
            max_passes: 3,
        }
    }
}

/// The actor.
#[derive(Debug)]
pub struct Poller {
    deps: IntakeDeps,
    jobs: Arc<dyn JobStore>,
    policy: PollerPolicy,
}

impl Poller {
    /// Creates the behaviour.
    pub fn new(deps: IntakeDeps, jobs: Arc<dyn JobStore>, policy: PollerPolicy) -> Self {
        Poller { deps, jobs, policy }
    }
}

/// Messages to a poller.
#[derive(Debug)]
pub enum PollerMsg {
    /// From its timer (and once at start): run a poll unless one is running.
    Tick,
    /// From the run's task.
    RunFinished,
}

/// The poller's state.
#[derive(Debug)]
pub struct PollerState {
    tenant_id: TenantId,
    running: bool,
}

impl Actor for Poller {
    type Msg = PollerMsg;
    type State = PollerState;
    type Arguments = TenantId;

    async fn pre_start(
        &self,
        myself: ActorRef<PollerMsg>,
        tenant_id: TenantId,
    ) -> Result<PollerState, ActorProcessingErr> {
        metrics::gauge!("leadorch_actors_alive", "kind" => "poller").increment(1.0);
        let _ = myself.cast(PollerMsg::Tick);
        myself.send_interval(self.policy.every, || PollerMsg::Tick);
        Ok(PollerState { tenant_id, running: false })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PollerMsg>,
        _state: &mut PollerState,
    ) -> Result<(), ActorProcessingErr> {
        metrics::gauge!("leadorch_actors_alive", "kind" => "poller").decrement(1.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<PollerMsg>,
        msg: PollerMsg,
        state: &mut PollerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PollerMsg::Tick if !state.running => {
                state.running = true;
                let deps = self.deps.clone();
                let jobs = self.jobs.clone();
                let policy = self.policy;
                let tenant_id = state.tenant_id;
                tokio::spawn(async move {
                    let run = tokio::spawn(poll_once(deps, jobs, policy, tenant_id));
                    if let Err(err) = run.await {
                        tracing::error!(%tenant_id, error = %err, "poll run panicked");
                    }
                    let _ = myself.cast(PollerMsg::RunFinished);
                });
            }
            PollerMsg::Tick => {}
            PollerMsg::RunFinished => state.running = false,
        }
        Ok(())
    }
}

/// Runs one poll for the tenant and records it; returns the recorded run.
pub async fn poll_once(deps: IntakeDeps, jobs: Arc<dyn JobStore>, policy: PollerPolicy, tenant_id: TenantId) -> JobRun {
    let started = Instant::now();
    let started_at = deps.clock.now();
    let cursor_opt = match jobs.last_cursor(tenant_id, POLL_JOB).await {
        Ok(cursor) => cursor.and_then(|c| c.parse::<Timestamp>().ok()),
        Err(err) => {
            tracing::warn!(%tenant_id, error = %err, "poll cursor unavailable");
            None
        }
    };
    let overlap = SignedDuration::try_from(policy.overlap).unwrap_or(SignedDuration::from_mins(5));
    let lookback = SignedDuration::try_from(policy.first_lookback).unwrap_or(SignedDuration::from_hours(1));
    let since = cursor_opt.map_or(started_at - lookback, |cursor| cursor - overlap);
    let mut seen: HashSet<(String, Timestamp)> = HashSet::new();
    let (mut items_new, mut newest_opt, mut error_opt) = (0u32, cursor_opt, None::<String>);
    let mut order_failed = false;
    'passes: for _pass in 0..policy.max_passes.max(1) {
        let mut unseen_this_pass = 0u32;
        for page in 0..policy.max_pages {
            let listed =
                deps.crm.list_orders_updated_since(tenant_id, since, page * policy.page_size, policy.page_size).await;
            let page_items = match listed {
                Ok(page_items) => page_items,
                Err(err) => {
                    error_opt = Some(err.to_string());
                    break 'passes;
                }
            };
            for order in &page_items.items {
                if !seen.insert((order.id.clone(), order.updated_date)) {
                    continue;
                }
                unseen_this_pass += 1;
                newest_opt = Some(newest_opt.map_or(order.updated_date, |n: Timestamp| n.max(order.updated_date)));
                match process_order(&deps, tenant_id, order, deps.clock.now(), IntakePath::Poller).await {
                    Ok(IntakeOutcome::LeadCreated(_)) => items_new += 1,
                    Ok(_) => {}
                    Err(err) => {
                        order_failed = true;
                        tracing::warn!(%tenant_id, order_id = %order.id, error = %err, "poll could not take an order");
                    }
                }
            }
            if !page_items.has_more {
                break;
            }
        }
        if unseen_this_pass == 0 {
            break;
        }
    }
    if order_failed && error_opt.is_none() {
        error_opt = Some("some orders failed; the window is scanned again next run".to_owned());
    }
    // The cursor only moves after a clean run, so nothing in the window is skipped for good.
    let cursor_after = if error_opt.is_none() { newest_opt.or(Some(since + overlap)) } else { cursor_opt };
    let run = JobRun {
        job: POLL_JOB.to_owned(),
        started_at,
        finished_at: deps.clock.now(),
        cursor_opt: cursor_after.map(|c| c.to_string()),
        items_seen: u32::try_from(seen.len()).unwrap_or(u32::MAX),
        items_new,
        error_opt,
    };
    metrics::histogram!("leadorch_poller_run_seconds").record(started.elapsed().as_secs_f64());
    if run.error_opt.is_some() {
        metrics::counter!("leadorch_poller_errors_total").increment(1);
    }
    if let Err(err) = jobs.record_run(tenant_id, &run).await {
        tracing::warn!(%tenant_id, error = %err, "poll run could not be recorded");
    }
    run
}

#[cfg(test)]
mod tests;
