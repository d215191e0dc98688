//! `Application`: builds the adapters, brings the schema up to date, starts the actor tree and
//! binds the HTTP listener (reporting the port it really got, so tests can bind port 0). The
//! only place that names concrete adapters.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::serve::ListenerExt;
use leadorch_actors::actors::ingress::{IngressHandle, IngressPolicy, WebhookIngress};
use leadorch_actors::actors::lead::{LeadDeps, LeadPolicy};
use leadorch_actors::actors::location::{ActorLeadRouter, LocationRegistry, location_child_spec};
use leadorch_actors::actors::poller::{Poller, PollerPolicy};
use leadorch_actors::actors::scheduler::{Scheduler, SchedulerPolicy};
use leadorch_actors::actors::supervisor::{ChildSpec, RestartPolicy, RootArgs, RootHandle};
use leadorch_actors::intake::IntakeDeps;
use leadorch_actors::planner::CadencePlanner;
use leadorch_actors::ports::{Directory, SystemClock};
use tokio::net::TcpListener;

use crate::ai::providers::build_router;
use crate::cache::{LayeredCache, MemoryCatalogCache, RedisCatalogCache};
use crate::catalog::{CatalogPolicy, CatalogService};
use crate::chat::{Prompt, StoreChat, StoreChatBackend};
use crate::config::Settings;
use crate::crm::keys::{SecretBox, StoredCrmKeys};
use crate::crm::shopmonkey::events::ShopMonkeyEventDecoder;
use crate::crm::shopmonkey::{ShopMonkeyClient, ShopMonkeyConfig};
use crate::http::rate_limit::{Limit, RateLimiter};
use crate::http::{self, AppState};
use crate::links::LinkSigner;
use crate::messaging::sendgrid_events::EventVerifier;
use crate::reconcile;
use crate::store::{self, Store};
use crate::templates::Templates;
use crate::vendors::{VendorMode, Vendors, build_vendors};
use leadorch_actors::actors::chat::{ChatDeps, ChatHub, ChatPolicy};

/// How often the directory of tenants and locations is re-read, so tenants and locations added
/// while the process runs get their poller and location actor.
const DIRECTORY_REFRESH: Duration = Duration::from_secs(30);

/// How long start-up waits for Redis to connect before serving without it.
const REDIS_STARTUP_GRACE: Duration = Duration::from_secs(1);

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
    registry: LocationRegistry,
    refresher: tokio::task::JoinHandle<()>,
    vendors: Vendors,
    /// Closed at shutdown so its reconnect loop stops.
    redis_cache_opt: Option<RedisCatalogCache>,
    /// Tells long-lived responses that shutdown has begun.
    shutdown_tx: tokio::sync::watch::Sender<bool>,
}

/// Builds the root supervisor's children for what the directory holds now.
#[derive(Debug, Clone)]
struct TreeFactory {
    deps: IntakeDeps,
    store: Store,
    lead_deps: Arc<LeadDeps>,
    registry: LocationRegistry,
    ingress: IngressHandle,
    ingress_policy: IngressPolicy,
    poller_policy_opt: Option<PollerPolicy>,
    scheduler_policy: SchedulerPolicy,
}

impl TreeFactory {
    fn ingress_spec(&self) -> ChildSpec {
        let factory = self.clone();
        ChildSpec {
            name: "ingress".to_owned(),
            kind: "ingress",
            spawn: Arc::new(move |supervisor| {
                let behaviour = WebhookIngress::new(
                    factory.deps.clone(),
                    Arc::new(factory.store.clone()),
                    factory.ingress_policy,
                    factory.ingress.clone(),
                );
                Box::pin(async move {
                    let (actor, _join) = ractor::Actor::spawn_linked(None, behaviour, (), supervisor).await?;
                    Ok(actor.get_cell())
                })
            }),
        }
    }

    fn scheduler_spec(&self) -> ChildSpec {
        let factory = self.clone();
        ChildSpec {
            name: "scheduler".to_owned(),
            kind: "scheduler",
            spawn: Arc::new(move |supervisor| {
                let store = Arc::new(factory.store.clone());
                let behaviour = Scheduler::new(
                    store.clone(),
                    store,
                    factory.registry.clone(),
                    factory.deps.clock.clone(),
                    factory.scheduler_policy,
                );
                Box::pin(async move {
                    let (actor, _join) = ractor::Actor::spawn_linked(None, behaviour, (), supervisor).await?;
                    Ok(actor.get_cell())
                })
            }),
        }
    }

    fn poller_spec(&self, tenant_id: leadorch_actors::domain::TenantId, policy: PollerPolicy) -> ChildSpec {
        let factory = self.clone();
        ChildSpec {
            name: format!("poller:{tenant_id}"),
            kind: "poller",
            spawn: Arc::new(move |supervisor| {
                let behaviour = Poller::new(factory.deps.clone(), Arc::new(factory.store.clone()), policy);
                Box::pin(async move {
                    let (actor, _join) = ractor::Actor::spawn_linked(None, behaviour, tenant_id, supervisor).await?;
                    Ok(actor.get_cell())
                })
            }),
        }
    }

    /// Returns a spec for every poller and location actor the directory calls for.
    async fn directory_specs(&self) -> Result<Vec<ChildSpec>, leadorch_actors::ports::StoreError> {
        let mut specs = Vec::new();
        for tenant_id in self.store.active_tenants().await? {
            if let Some(policy) = self.poller_policy_opt {
                specs.push(self.poller_spec(tenant_id, policy));
            }
            for location in self.store.active_locations(tenant_id).await? {
                specs.push(location_child_spec(location, self.lead_deps.clone(), self.registry.clone()));
            }
        }
        Ok(specs)
    }
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
            Err(store::MigrateError::Unavailable(err)) if started.elapsed() < STARTUP_DB_PATIENCE => {
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "database unavailable at start-up");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err).context("failed to prepare the database"),
        }
    }
}

/// Builds the ShopMonkey client over the tenants' stored keys (and the environment fallback).
///
/// # Errors
/// The HTTP client cannot be built.
pub fn crm_client(settings: &Settings, store: &Store) -> anyhow::Result<ShopMonkeyClient> {
    let keys = StoredCrmKeys::new(
        store.tenants.clone(),
        settings.secrets.secret_key_opt.as_ref().map(SecretBox::new),
        settings.secrets.shopmonkey_api_key_opt.clone(),
    );
    let config = ShopMonkeyConfig {
        base_url: settings.shopmonkey.base_url.clone(),
        request_timeout: settings.shopmonkey.request_timeout,
        max_retries: settings.shopmonkey.max_retries,
        ..ShopMonkeyConfig::default()
    };
    ShopMonkeyClient::new(config, Arc::new(keys)).context("failed to build the shopmonkey client")
}

/// Runs a start-up read, retrying while the database is unavailable (a process restarted
/// during a database outage waits for it, as migration does, instead of exiting).
async fn with_startup_patience<T, F, Fut>(what: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, leadorch_actors::ports::StoreError>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if err.is_unavailable() && started.elapsed() < STARTUP_DB_PATIENCE => {
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "database unavailable while {what}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err).with_context(|| format!("failed {what}")),
        }
    }
}

impl Application {
    /// Prepares the database, starts the actor tree and binds the listener.
    ///
    /// # Errors
    /// The database cannot be prepared, the actor tree cannot start, or the address is taken.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Application::build_with(settings, VendorMode::Strict).await
    }

    /// Like [`Application::build`], choosing what happens to vendors without credentials.
    ///
    /// # Errors
    /// As [`Application::build`], and missing credentials in strict mode.
    pub async fn build_with(mut settings: Settings, mode: VendorMode) -> anyhow::Result<Application> {
        let secret_key = match (&settings.secrets.secret_key_opt, mode) {
            (Some(key), _) => key.clone(),
            (None, VendorMode::SimWhereMissing) => {
                tracing::warn!(
                    "LEADORCH_SECRET_KEY not set: using a throwaway key; links and stored crm keys won't survive a restart"
                );
                let key = secrecy::SecretString::from(uuid::Uuid::new_v4().simple().to_string());
                settings.secrets.secret_key_opt = Some(key.clone());
                key
            }
            (None, VendorMode::Strict) => {
                anyhow::bail!("LEADORCH_SECRET_KEY is not set; it signs magic links and encrypts stored crm keys")
            }
        };
        prepare_database(&settings).await?;
        let store = Store::new(&settings.database).context("failed to build the database pool")?;
        let crm: Arc<dyn leadorch_actors::ports::Crm> = Arc::new(crm_client(&settings, &store)?);
        let vendors = build_vendors(&settings, mode).await?;
        let links = LinkSigner::new(&secret_key, &settings.http.public_url, settings.links_valid_for);
        let templates: Arc<Templates> =
            Arc::new(Templates::new(&settings.templates_source, links.clone()).context("invalid message templates")?);
        let prompt = Arc::new(Prompt::new(&settings.prompt_source).context("invalid chat prompt")?);
        let ai_router = build_router(&settings.ai, &settings.secrets).context("invalid ai provider settings")?;
        let compliance = Arc::new(settings.compliance.clone());
        // Before any actor sends: settle what a crash left half-sent.
        let started_at = jiff::Timestamp::now();
        let reconciled = with_startup_patience("reconciling interrupted sends", || {
            reconcile::reconcile_in_flight(
                &store,
                vendors.sms.as_ref(),
                vendors.email.as_ref(),
                templates.as_ref(),
                started_at,
            )
        })
        .await?;
        if reconciled.deferred > 0 {
            tracing::warn!(deferred = reconciled.deferred, "some interrupted sends wait for the provider to answer");
        }
        let registry = LocationRegistry::default();
        let lead_deps = Arc::new(LeadDeps {
            leads: Arc::new(store.clone()),
            touches: Arc::new(store.clone()),
            consent: Arc::new(store.clone()),
            sms: vendors.sms.clone(),
            email: vendors.email.clone(),
            renderer: templates.clone(),
            clock: Arc::new(SystemClock),
            compliance: compliance.clone(),
            policy: LeadPolicy {
                idle_after: settings.lead_idle,
                horizon: settings.sending.scheduler_lookahead + Duration::from_secs(1),
                max_attempts: settings.sending.max_attempts,
                retry_backoff: settings.sending.retry_backoff,
                sms_status_callback_opt: Some(format!("{}/webhooks/twilio/status", settings.http.public_url)),
                ..LeadPolicy::default()
            },
        });
        let router = Arc::new(ActorLeadRouter::new(registry.clone(), lead_deps.clone()));
        let deps = IntakeDeps {
            leads: Arc::new(store.clone()),
            inbox: Arc::new(store.clone()),
            consent: Arc::new(store.clone()),
            crm: crm.clone(),
            decoder: Arc::new(ShopMonkeyEventDecoder),
            rules: Arc::new(settings.qualification.clone()),
            planner: Arc::new(CadencePlanner::new(Arc::new(settings.cadences.clone()), compliance)),
            router: router.clone(),
            clock: Arc::new(SystemClock),
            crm_source: "shopmonkey",
        };
        let ingress = IngressHandle::default();
        let factory = TreeFactory {
            deps,
            store: store.clone(),
            lead_deps,
            registry: registry.clone(),
            ingress: ingress.clone(),
            ingress_policy: IngressPolicy {
                max_in_flight: settings.ingress.max_in_flight,
                sweep_every: settings.ingress.sweep_interval,
                max_attempts: settings.ingress.max_attempts,
                ..IngressPolicy::default()
            },
            poller_policy_opt: settings.poller.enabled.then(|| PollerPolicy {
                every: settings.poller.interval,
                overlap: settings.poller.overlap,
                first_lookback: settings.poller.first_lookback,
                ..PollerPolicy::default()
            }),
            scheduler_policy: SchedulerPolicy {
                tick: settings.sending.scheduler_tick,
                lookahead: settings.sending.scheduler_lookahead,
                ..SchedulerPolicy::default()
            },
        };
        let mut children = Vec::new();
        if settings.ingress.enabled {
            children.push(factory.ingress_spec());
        } else {
            tracing::info!("ingress off: webhooks are committed and acknowledged, other nodes process them");
        }
        children.push(factory.scheduler_spec());
        children.extend(with_startup_patience("reading tenants and locations", || factory.directory_specs()).await?);
        let (root, root_join) = RootHandle::start(RootArgs { children, policy: RestartPolicy::default() })
            .await
            .context("failed to start the actor system")?;
        router.attach_root(root.clone());
        let refresher = tokio::spawn(refresh_directory(
            factory,
            root.clone(),
            vendors.sms.clone(),
            vendors.email.clone(),
            templates.clone(),
        ));
        let sendgrid_verifier_opt = match &vendors.sendgrid_verification_key_opt {
            Some(key) => {
                Some(Arc::new(EventVerifier::from_base64_spki(key).context("invalid sendgrid verification key")?))
            }
            None => {
                tracing::warn!("LEADORCH_SENDGRID_VERIFICATION_KEY not set: sendgrid events will be refused");
                None
            }
        };
        let (catalog, redis_cache_opt) = catalog_service(&settings, store.clone(), crm.clone()).await?;
        let chat = ChatHub::new(
            Arc::new(ChatDeps {
                store: Arc::new(StoreChat::new(store.clone())),
                backend: Arc::new(StoreChatBackend::new(
                    store.clone(),
                    catalog.clone(),
                    crm,
                    prompt,
                    settings.ai.slots,
                )),
                router: ai_router,
                clock: Arc::new(SystemClock),
                policy: ChatPolicy {
                    idle_after: settings.ai.session_idle,
                    history_token_budget: settings.ai.history_token_budget,
                    max_tokens: settings.ai.max_tokens,
                    temperature: settings.ai.temperature,
                    ..ChatPolicy::default()
                },
            }),
            registry.clone(),
        );
        let limit = Limit { max: settings.ai.rate_limit_per_minute, window: Duration::from_secs(60) };
        let chat_limiter = match &redis_cache_opt {
            Some(redis) => RateLimiter::redis(
                redis.client().clone(),
                settings.redis.key_prefix.clone(),
                settings.redis.command_timeout,
                limit,
            ),
            None => RateLimiter::in_memory(limit),
        };
        let (shutdown_tx, shutting_down) = tokio::sync::watch::channel(false);
        let listener = TcpListener::bind(settings.http.addr)
            .await
            .with_context(|| format!("failed to bind {}", settings.http.addr))?;
        let addr = listener.local_addr().context("failed to read the bound address")?;
        let metrics = http::metrics::recorder();
        http::metrics::announce();
        let state = AppState {
            settings: Arc::new(settings),
            store,
            metrics,
            ingress,
            twilio_auth_token: vendors.twilio_auth_token.clone(),
            sendgrid_verifier_opt,
            catalog,
            renderer: templates.clone(),
            links,
            chat,
            chat_limiter,
            redis_health_opt: redis_cache_opt.clone(),
            shutting_down,
        };
        Ok(Application {
            listener,
            addr,
            state,
            root,
            root_join,
            registry,
            refresher,
            vendors,
            redis_cache_opt,
            shutdown_tx,
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

    /// Returns the registry of running location actors (tests count live lead actors through it).
    pub fn registry(&self) -> &LocationRegistry {
        &self.registry
    }

    /// Returns the vendors in use (tests and the demo reach the in-process fakes here).
    pub fn vendors(&self) -> &Vendors {
        &self.vendors
    }

    /// Returns the root supervisor.
    pub fn root(&self) -> &RootHandle {
        &self.root
    }

    /// Serves until `shutdown` completes, then: stop accepting, drain in-flight requests, stop
    /// the actor tree, close the pool.
    ///
    /// # Errors
    /// The server failed.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application {
            listener,
            addr,
            state,
            root,
            root_join,
            registry: _,
            refresher,
            vendors,
            redis_cache_opt,
            shutdown_tx,
        } = self;
        let shutdown = async move {
            shutdown.await;
            // SSE streams end now, so the drain below only waits for ordinary requests.
            let _ = shutdown_tx.send(true);
        };
        tracing::info!(%addr, "listening");
        let app = http::router(state.clone());
        // SSE sends many small writes (a chat delta is a few dozen bytes): without TCP_NODELAY,
        // Nagle holds each one back until the client acknowledges the previous, which a client
        // may delay by up to its delayed-ACK time (40 ms on Linux).
        let listener = listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "could not set TCP_NODELAY");
            }
        });
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        tracing::info!("http drained; stopping actors");
        refresher.abort();
        root.stop(Duration::from_secs(10)).await;
        // The supervisor's task result carries nothing once it has stopped.
        let _ = root_join.await;
        state.store.pool.close();
        if let Some(redis) = redis_cache_opt {
            redis.close().await;
        }
        // The in-process fakes (if any) stop with the process.
        drop(vendors);
        tracing::info!("stopped");
        served.context("http server failed")
    }
}

async fn refresh_directory(
    factory: TreeFactory,
    root: RootHandle,
    sms: Arc<dyn leadorch_actors::ports::SmsSender>,
    email: Arc<dyn leadorch_actors::ports::EmailSender>,
    renderer: Arc<Templates>,
) {
    let mut ticker = tokio::time::interval(DIRECTORY_REFRESH);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let stuck_before =
            jiff::Timestamp::now() - jiff::SignedDuration::try_from(reconcile::STUCK_AFTER).unwrap_or_default();
        if let Err(err) = reconcile::reconcile_in_flight(
            &factory.store,
            sms.as_ref(),
            email.as_ref(),
            renderer.as_ref(),
            stuck_before,
        )
        .await
        {
            tracing::warn!(error = %err, "reconciling stuck sends failed");
        }
        match factory.directory_specs().await {
            Ok(specs) => {
                for spec in specs {
                    root.add_child(spec).await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "directory refresh failed"),
        }
    }
}

/// Builds the catalog service over the layered cache: Redis when configured, always the
/// in-process fallback. Redis gets [`REDIS_STARTUP_GRACE`] to connect; a Redis that is down does
/// not hold start-up longer (the client keeps reconnecting in the background).
///
/// # Errors
/// The Redis URL is invalid.
pub async fn catalog_service(
    settings: &Settings,
    store: Store,
    crm: Arc<dyn leadorch_actors::ports::Crm>,
) -> anyhow::Result<(CatalogService, Option<RedisCatalogCache>)> {
    let keep_for = settings.catalog.ttl + settings.catalog.max_stale;
    let redis_opt = match &settings.redis.url_opt {
        Some(url) => {
            let redis =
                RedisCatalogCache::start(url, &settings.redis.key_prefix, keep_for, settings.redis.command_timeout)
                    .context("failed to configure redis")?;
            if !redis.wait_connected(REDIS_STARTUP_GRACE).await {
                tracing::warn!("redis not reachable at start-up; catalogs are cached in process until it is");
            }
            Some(redis)
        }
        None => {
            tracing::info!("LEADORCH_REDIS_URL not set: catalogs are cached in process only");
            None
        }
    };
    let memory = MemoryCatalogCache::new(settings.catalog.memory_capacity, keep_for);
    let redis_layer = redis_opt.clone().map(|redis| Arc::new(redis) as Arc<dyn leadorch_actors::catalog::CatalogCache>);
    let cache = Arc::new(LayeredCache::new(redis_layer, memory));
    let policy = CatalogPolicy { ttl: settings.catalog.ttl, failure_backoff: settings.catalog.failure_backoff };
    Ok((CatalogService::new(cache, crm, store, Arc::new(SystemClock), policy), redis_opt))
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
