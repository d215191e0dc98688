//! PostgreSQL: the connection pool, the migration runner, and one repository per aggregate.
//!
//! Every repository method takes the tenant id and every query filters on it, so one tenant can
//! never read or change another's rows (the schema's composite foreign keys enforce the same for
//! relations).

mod api_keys;
mod appointments;
mod catalog;
mod chat;
mod consent;
mod error;
mod inbox;
mod leads;
mod locations;
mod migrate;
mod ports;
mod tenants;
mod touchpoints;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use leadorch_actors::ports::StoreError;
use secrecy::ExposeSecret;
use tokio_postgres::NoTls;

pub use self::api_keys::{ApiKeyRepo, CreatedApiKey, StaffKey};
pub use self::appointments::{Appointment, AppointmentRepo, NewAppointment};
pub use self::catalog::CatalogRepo;
pub use self::chat::{ChatMessage, ChatRepo, CustomerMessage, ReplyRecord, ReplyStatus};
pub use self::consent::ConsentRepo;
pub(crate) use self::error::{pg_error, pool_error};
pub use self::inbox::InboxRepo;
pub use self::leads::LeadRepo;
pub use self::locations::LocationRepo;
pub use self::migrate::{MigrateError, ensure_database, migrate, pending_migrations};
pub use self::tenants::{CreatedTenant, TenantRepo};
pub use self::touchpoints::TouchpointRepo;
use crate::config::DatabaseSettings;
pub use leadorch_actors::domain::{CadenceRef, InboxInsert, LeadCreated};

/// The pool and the repositories over it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub pool: Pool,
    pub tenants: TenantRepo,
    pub locations: LocationRepo,
    pub leads: LeadRepo,
    pub touchpoints: TouchpointRepo,
    pub inbox: InboxRepo,
    pub api_keys: ApiKeyRepo,
    pub consent: ConsentRepo,
    pub chat: ChatRepo,
    pub catalog: CatalogRepo,
    pub appointments: AppointmentRepo,
}

impl Store {
    /// Builds the pool (connections are opened lazily) and the repositories.
    ///
    /// # Errors
    /// The URL does not parse.
    pub fn new(settings: &DatabaseSettings) -> Result<Store, StoreError> {
        let pool = build_pool(settings)?;
        Ok(Store::from_pool(pool))
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: Pool) -> Store {
        Store {
            tenants: TenantRepo::new(pool.clone()),
            locations: LocationRepo::new(pool.clone()),
            leads: LeadRepo::new(pool.clone()),
            touchpoints: TouchpointRepo::new(pool.clone()),
            inbox: InboxRepo::new(pool.clone()),
            api_keys: ApiKeyRepo::new(pool.clone()),
            consent: ConsentRepo::new(pool.clone()),
            chat: ChatRepo::new(pool.clone()),
            catalog: CatalogRepo::new(pool.clone()),
            appointments: AppointmentRepo::new(pool.clone()),
            pool,
        }
    }

    /// Answers whether the database is reachable and every embedded migration is applied;
    /// `Err` carries the reason for /readyz.
    pub async fn readiness(&self) -> Result<(), String> {
        let client = self.pool.get().await.map_err(|err| format!("database unreachable: {}", pool_error(err)))?;
        let pending = pending_migrations(&client).await.map_err(|err| format!("cannot read migrations: {err}"))?;
        if pending > 0 {
            return Err(format!("{pending} migrations not applied"));
        }
        Ok(())
    }
}

/// Parses the URL into a driver config with the configured connect timeout.
pub(crate) fn pg_config(settings: &DatabaseSettings) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = settings
        .url
        .expose_secret()
        .parse()
        .map_err(|_| StoreError::Invalid("database url is not a valid postgres URL".to_owned()))?;
    config.connect_timeout(settings.connect_timeout);
    config.application_name("leadorch");
    // Statements are prepared once per connection (`prepare_cached`), and PostgreSQL would
    // switch a prepared statement to one generic plan after five runs. With a tenant id as a
    // parameter that plan is a trap: it is chosen without the tenant's value, from statistics
    // that may be missing (a new table, autovacuum off) or dominated by one big tenant, and then
    // kept. Every query here is a short indexed lookup, so planning it for its actual values
    // costs little and picks the right index for each tenant.
    let custom_plans = "-c plan_cache_mode=force_custom_plan";
    let options = match config.get_options() {
        Some(existing) if !existing.trim().is_empty() => format!("{existing} {custom_plans}"),
        _ => custom_plans.to_owned(),
    };
    config.options(&options);
    Ok(config)
}

fn build_pool(settings: &DatabaseSettings) -> Result<Pool, StoreError> {
    let config = pg_config(settings)?;
    // Fast recycling checks only that the connection is open: after a PostgreSQL restart the
    // driver marks old connections closed and the pool replaces them.
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(settings.pool_max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.wait_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(Duration::from_secs(1)))
        .build()
        .map_err(|err| StoreError::Other(Box::new(err)))
}
