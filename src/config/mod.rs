//! Typed settings: `config/default.toml` < `config/{profile}.toml` < `LEADORCH_*` environment
//! variables < CLI flags. Files and environment are deserialised into raw structs, then validated
//! into [`Settings`]; a wrong value fails start-up with a message naming the key (and the
//! variable, when one set it). Secrets come only from the environment.
//!
//! The loader takes the file contents and an environment map as arguments, so tests build
//! settings without touching the process environment.

pub mod ai;
pub(crate) mod env;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;

use leadorch_actors::compliance::ComplianceRules;
use leadorch_actors::domain::{Cadence, CadenceBook, LocationId, TenantId};
use leadorch_actors::qualification::QualificationRules;

use self::env::{EnvKind, OVERRIDES};

/// The defaults, embedded so the binary runs from any directory.
const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The cadences and templates shipped with the binary; files of these names in the config dir
/// replace them.
const DEFAULT_CADENCES: &str = include_str!("../../config/cadences.toml");

/// Profiles shipped with the binary, used when no file of that name is on disk.
const BUILTIN_PROFILES: &[(&str, &str)] =
    &[("demo", include_str!("../../config/demo.toml")), ("test", include_str!("../../config/test.toml"))];

/// A setting that could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key holds a value of the wrong shape or an invalid value.
    #[error("invalid setting `{key}`{}: {message}", via.map(|v| format!(" (from {v})")).unwrap_or_default())]
    Invalid { key: String, via: Option<&'static str>, message: String },
    /// A profile file was named that does not exist.
    #[error("unknown profile `{0}`: no config/{0}.toml")]
    UnknownProfile(String),
    /// A configuration file could not be read.
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.to_owned(), via: env::var_for_key(key), message: message.into() }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    http: RawHttp,
    database: RawDatabase,
    redis: RawRedis,
    log: RawLog,
    shopmonkey: RawShopMonkey,
    poller: RawPoller,
    ingress: RawIngress,
    actors: RawActors,
    qualification: QualificationRules,
    twilio: RawVendor,
    sendgrid: RawVendor,
    links: RawLinks,
    sending: RawSending,
    compliance: ComplianceRules,
    catalog: RawCatalog,
    ai: ai::RawAi,
    booking: ai::RawBooking,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    ttl_secs: u64,
    max_stale_secs: u64,
    memory_capacity: usize,
    failure_backoff_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVendor {
    base_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLinks {
    valid_days: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSending {
    max_attempts: u32,
    retry_backoff_ms: u64,
    scheduler_tick_ms: u64,
    scheduler_lookahead_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCadences {
    default: String,
    #[serde(default)]
    tenants: HashMap<String, String>,
    #[serde(default)]
    locations: HashMap<String, String>,
    cadence: Vec<Cadence>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShopMonkey {
    base_url: String,
    request_timeout_ms: u64,
    max_retries: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoller {
    enabled: bool,
    interval_secs: u64,
    overlap_secs: u64,
    first_lookback_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    max_in_flight: usize,
    sweep_interval_ms: u64,
    max_attempts: u32,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActors {
    lead_idle_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    addr: String,
    public_url: String,
    request_timeout_ms: u64,
    body_limit_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
    pool_max_size: usize,
    connect_timeout_ms: u64,
    wait_timeout_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: String,
    key_prefix: String,
    command_timeout_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: LogFormat,
    filter: String,
}

/// Validated settings of one process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The profile that was loaded (`default` when none was named).
    pub profile: String,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub log: LogSettings,
    pub shopmonkey: ShopMonkeySettings,
    pub poller: PollerSettings,
    pub ingress: IngressSettings,
    /// How long an idle lead actor lives before it stops itself.
    pub lead_idle: Duration,
    pub qualification: QualificationRules,
    pub twilio_base_url: String,
    pub sendgrid_base_url: String,
    pub links_valid_for: jiff::SignedDuration,
    pub sending: SendingSettings,
    pub compliance: ComplianceRules,
    pub cadences: CadenceBook,
    pub catalog: CatalogSettings,
    pub ai: ai::AiSettings,
    /// The message templates' TOML (`config/templates.toml`), parsed when the renderer is built.
    pub templates_source: String,
    /// The chat's system prompt template (`config/prompts/chat.j2`).
    pub prompt_source: String,
    pub secrets: Secrets,
}

/// Sending touches.
#[derive(Debug, Clone)]
pub struct SendingSettings {
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub scheduler_tick: Duration,
    pub scheduler_lookahead: Duration,
}

/// The ShopMonkey API.
#[derive(Debug, Clone)]
pub struct ShopMonkeySettings {
    pub base_url: String,
    pub request_timeout: Duration,
    pub max_retries: u32,
}

/// The backup poller.
#[derive(Debug, Clone)]
pub struct PollerSettings {
    pub enabled: bool,
    pub interval: Duration,
    pub overlap: Duration,
    pub first_lookback: Duration,
}

/// The webhook ingress.
#[derive(Debug, Clone)]
pub struct IngressSettings {
    /// Whether this node processes inbox events. A node with it off still commits and
    /// acknowledges webhooks (an intake-only node); another node's sweep processes them.
    pub enabled: bool,
    pub max_in_flight: usize,
    pub sweep_interval: Duration,
    pub max_attempts: u32,
}

/// The HTTP listener and the URLs the outside world uses to reach it.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// Base of magic links and webhook URLs as vendors see them; no trailing slash.
    pub public_url: String,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
}

/// PostgreSQL connection and pool.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// May carry a password, so it is a secret and never printed.
    pub url: SecretString,
    pub pool_max_size: usize,
    pub connect_timeout: Duration,
    pub wait_timeout: Duration,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &"[redacted]")
            .field("pool_max_size", &self.pool_max_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

/// Redis, when configured.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `None`: no Redis; the in-process cache serves.
    pub url_opt: Option<SecretString>,
    /// Prefix of every key this process writes, so several deployments (or tests) share a server.
    pub key_prefix: String,
    /// How long a command may take before the in-process cache serves instead.
    pub command_timeout: Duration,
}

/// The service catalog and its caches.
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// How long a cached catalog is fresh; after that it is served stale while one refresh runs.
    pub ttl: Duration,
    /// How long past the TTL a cache keeps an entry to serve stale (Redis expires it then).
    pub max_stale: Duration,
    /// Most catalogs the in-process cache holds; the oldest goes first.
    pub memory_capacity: usize,
    /// After a failed refresh, how long a location is served from what is stored before the CRM
    /// is asked again (so an outage does not mean one CRM call per read).
    pub failure_backoff: Duration,
}

/// Logging.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

/// Credentials, read only from the environment. `Debug` prints only which are present.
#[derive(Clone, Default)]
pub struct Secrets {
    pub secret_key_opt: Option<SecretString>,
    pub shopmonkey_api_key_opt: Option<SecretString>,
    pub twilio_account_sid_opt: Option<SecretString>,
    pub twilio_auth_token_opt: Option<SecretString>,
    pub sendgrid_api_key_opt: Option<SecretString>,
    pub sendgrid_verification_key_opt: Option<String>,
    pub anthropic_api_key_opt: Option<SecretString>,
    pub openai_api_key_opt: Option<SecretString>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present = |o: &Option<SecretString>| if o.is_some() { "set" } else { "unset" };
        f.debug_struct("Secrets")
            .field("secret_key", &present(&self.secret_key_opt))
            .field("shopmonkey_api_key", &present(&self.shopmonkey_api_key_opt))
            .field("twilio_account_sid", &present(&self.twilio_account_sid_opt))
            .field("twilio_auth_token", &present(&self.twilio_auth_token_opt))
            .field("sendgrid_api_key", &present(&self.sendgrid_api_key_opt))
            .field("anthropic_api_key", &present(&self.anthropic_api_key_opt))
            .field("openai_api_key", &present(&self.openai_api_key_opt))
            .finish()
    }
}

impl Secrets {
    fn from_env(env: &HashMap<String, String>) -> Self {
        let secret = |name: &str| {
            env.get(name).filter(|v| !v.trim().is_empty()).map(|v| SecretString::from(v.trim().to_owned()))
        };
        Secrets {
            secret_key_opt: secret(env::SECRET_KEY),
            shopmonkey_api_key_opt: secret(env::SHOPMONKEY_API_KEY),
            twilio_account_sid_opt: secret(env::TWILIO_ACCOUNT_SID),
            twilio_auth_token_opt: secret(env::TWILIO_AUTH_TOKEN),
            sendgrid_api_key_opt: secret(env::SENDGRID_API_KEY),
            sendgrid_verification_key_opt: env
                .get(env::SENDGRID_VERIFICATION_KEY)
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty()),
            anthropic_api_key_opt: secret(env::ANTHROPIC_API_KEY),
            openai_api_key_opt: secret(env::OPENAI_API_KEY),
        }
    }
}

impl Settings {
    /// Loads settings for `profile_opt` (else `LEADORCH_PROFILE`, else none) from the files in
    /// `LEADORCH_CONFIG_DIR` (default `./config`) and the process environment.
    ///
    /// # Errors
    /// A missing profile, an unreadable file, or an invalid value, naming the key.
    pub fn from_process(profile_opt: Option<&str>) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let profile_opt = profile_opt.map(str::to_owned).or_else(|| env.get(env::PROFILE).cloned());
        let config_dir = PathBuf::from(env.get(env::CONFIG_DIR).cloned().unwrap_or_else(|| "config".to_owned()));
        let profile_toml_opt = match profile_opt.as_deref() {
            None | Some("default") => None,
            Some(profile) => Some(read_profile(&config_dir, profile)?),
        };
        let mut settings = Settings::load(profile_opt.as_deref(), profile_toml_opt.as_deref(), &env)?;
        if let Some(cadences) = read_optional(&config_dir.join("cadences.toml"))? {
            settings.cadences = parse_cadences(&cadences)?;
        }
        if let Some(templates) = read_optional(&config_dir.join("templates.toml"))? {
            settings.templates_source = templates;
        }
        if let Some(prompt) = read_optional(&config_dir.join("prompts").join("chat.j2"))? {
            settings.prompt_source = prompt;
        }
        Ok(settings)
    }

    /// Builds settings from the embedded defaults, an optional profile file's contents and an
    /// environment map.
    ///
    /// # Errors
    /// An invalid value, naming the key and the environment variable that set it.
    pub fn load(
        profile_opt: Option<&str>,
        profile_toml_opt: Option<&str>,
        env: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(profile_toml) = profile_toml_opt {
            figment = figment.merge(Toml::string(profile_toml));
        }
        for o in OVERRIDES {
            let Some(value) = env.get(o.var) else {
                continue;
            };
            figment = match o.kind {
                EnvKind::Text => figment.merge((o.key, value.clone())),
                EnvKind::Unsigned => {
                    let parsed: u64 = value.trim().parse().map_err(|_| ConfigError::Invalid {
                        key: o.key.to_owned(),
                        via: Some(o.var),
                        message: "expected a whole number".to_owned(),
                    })?;
                    figment.merge((o.key, parsed))
                }
                EnvKind::Bool => {
                    let parsed = match value.trim().to_ascii_lowercase().as_str() {
                        "1" | "true" | "yes" | "on" => true,
                        "0" | "false" | "no" | "off" => false,
                        _ => {
                            return Err(ConfigError::Invalid {
                                key: o.key.to_owned(),
                                via: Some(o.var),
                                message: "expected true or false".to_owned(),
                            });
                        }
                    };
                    figment.merge((o.key, parsed))
                }
            };
        }
        let raw: RawSettings = figment.extract().map_err(|err| {
            let key = err.path.join(".");
            ConfigError::invalid(&key, err.kind.to_string())
        })?;
        Settings::validate(profile_opt.unwrap_or("default"), raw, Secrets::from_env(env))
    }

    fn validate(profile: &str, raw: RawSettings, secrets: Secrets) -> Result<Settings, ConfigError> {
        let addr: SocketAddr =
            raw.http.addr.trim().parse().map_err(|_| {
                ConfigError::invalid("http.addr", format!("`{}` is not an ip:port address", raw.http.addr))
            })?;
        let public_url = raw.http.public_url.trim().trim_end_matches('/').to_owned();
        let parsed_public = reqwest::Url::parse(&public_url)
            .map_err(|err| ConfigError::invalid("http.public_url", format!("`{public_url}` is not a URL: {err}")))?;
        if !matches!(parsed_public.scheme(), "http" | "https") {
            return Err(ConfigError::invalid("http.public_url", "must be an http or https URL"));
        }
        if raw.http.body_limit_bytes < 1024 {
            return Err(ConfigError::invalid("http.body_limit_bytes", "must be at least 1024"));
        }
        if raw.http.request_timeout_ms == 0 {
            return Err(ConfigError::invalid("http.request_timeout_ms", "must be greater than 0"));
        }
        let db_url = raw.database.url.trim();
        if db_url.parse::<tokio_postgres::Config>().is_err() {
            // The parser's message may echo the URL with its password; say only what is wrong.
            return Err(ConfigError::invalid("database.url", "not a valid postgres:// URL"));
        }
        if raw.database.pool_max_size == 0 {
            return Err(ConfigError::invalid("database.pool_max_size", "must be greater than 0"));
        }
        if raw.database.connect_timeout_ms == 0 || raw.database.wait_timeout_ms == 0 {
            return Err(ConfigError::invalid("database.connect_timeout_ms", "timeouts must be greater than 0"));
        }
        let redis_url = raw.redis.url.trim();
        let url_opt = if redis_url.is_empty() {
            None
        } else {
            if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
                return Err(ConfigError::invalid("redis.url", "must start with redis:// or rediss://"));
            }
            Some(SecretString::from(redis_url.to_owned()))
        };
        let shopmonkey_url = raw.shopmonkey.base_url.trim().trim_end_matches('/').to_owned();
        reqwest::Url::parse(&shopmonkey_url).map_err(|err| {
            ConfigError::invalid("shopmonkey.base_url", format!("`{shopmonkey_url}` is not a URL: {err}"))
        })?;
        if raw.poller.interval_secs == 0 {
            return Err(ConfigError::invalid("poller.interval_secs", "must be greater than 0"));
        }
        if raw.ingress.max_in_flight == 0 {
            return Err(ConfigError::invalid("ingress.max_in_flight", "must be greater than 0"));
        }
        if raw.ingress.sweep_interval_ms == 0 {
            return Err(ConfigError::invalid("ingress.sweep_interval_ms", "must be greater than 0"));
        }
        if raw.actors.lead_idle_secs == 0 {
            return Err(ConfigError::invalid("actors.lead_idle_secs", "must be greater than 0"));
        }
        for (key, url) in [("twilio.base_url", &raw.twilio.base_url), ("sendgrid.base_url", &raw.sendgrid.base_url)] {
            reqwest::Url::parse(url.trim())
                .map_err(|err| ConfigError::invalid(key, format!("`{url}` is not a URL: {err}")))?;
        }
        if raw.links.valid_days == 0 {
            return Err(ConfigError::invalid("links.valid_days", "must be greater than 0"));
        }
        if raw.sending.max_attempts == 0 || raw.sending.scheduler_tick_ms == 0 {
            return Err(ConfigError::invalid("sending", "max_attempts and scheduler_tick_ms must be greater than 0"));
        }
        if raw.redis.command_timeout_ms == 0 {
            return Err(ConfigError::invalid("redis.command_timeout_ms", "must be greater than 0"));
        }
        if raw.catalog.ttl_secs == 0 {
            return Err(ConfigError::invalid("catalog.ttl_secs", "must be greater than 0"));
        }
        if raw.catalog.memory_capacity == 0 {
            return Err(ConfigError::invalid("catalog.memory_capacity", "must be greater than 0"));
        }
        if raw.qualification.lead_statuses.is_empty() {
            return Err(ConfigError::invalid("qualification.lead_statuses", "must name at least one status"));
        }
        Ok(Settings {
            profile: profile.to_owned(),
            http: HttpSettings {
                addr,
                public_url,
                request_timeout: Duration::from_millis(raw.http.request_timeout_ms),
                body_limit_bytes: raw.http.body_limit_bytes,
            },
            database: DatabaseSettings {
                url: SecretString::from(db_url.to_owned()),
                pool_max_size: raw.database.pool_max_size,
                connect_timeout: Duration::from_millis(raw.database.connect_timeout_ms),
                wait_timeout: Duration::from_millis(raw.database.wait_timeout_ms),
            },
            redis: RedisSettings {
                url_opt,
                key_prefix: raw.redis.key_prefix,
                command_timeout: Duration::from_millis(raw.redis.command_timeout_ms),
            },
            log: LogSettings { format: raw.log.format, filter: raw.log.filter },
            shopmonkey: ShopMonkeySettings {
                base_url: shopmonkey_url,
                request_timeout: Duration::from_millis(raw.shopmonkey.request_timeout_ms),
                max_retries: raw.shopmonkey.max_retries,
            },
            poller: PollerSettings {
                enabled: raw.poller.enabled,
                interval: Duration::from_secs(raw.poller.interval_secs),
                overlap: Duration::from_secs(raw.poller.overlap_secs),
                first_lookback: Duration::from_secs(raw.poller.first_lookback_secs),
            },
            ingress: IngressSettings {
                enabled: raw.ingress.enabled,
                max_in_flight: raw.ingress.max_in_flight,
                sweep_interval: Duration::from_millis(raw.ingress.sweep_interval_ms),
                max_attempts: raw.ingress.max_attempts,
            },
            lead_idle: Duration::from_secs(raw.actors.lead_idle_secs),
            qualification: raw.qualification,
            twilio_base_url: raw.twilio.base_url.trim().trim_end_matches('/').to_owned(),
            sendgrid_base_url: raw.sendgrid.base_url.trim().trim_end_matches('/').to_owned(),
            links_valid_for: jiff::SignedDuration::from_hours(24 * i64::from(raw.links.valid_days)),
            sending: SendingSettings {
                max_attempts: raw.sending.max_attempts,
                retry_backoff: Duration::from_millis(raw.sending.retry_backoff_ms),
                scheduler_tick: Duration::from_millis(raw.sending.scheduler_tick_ms),
                scheduler_lookahead: Duration::from_millis(raw.sending.scheduler_lookahead_ms),
            },
            compliance: raw.compliance,
            cadences: parse_cadences(DEFAULT_CADENCES)?,
            ai: ai::AiSettings::validate(raw.ai, raw.booking)?,
            catalog: CatalogSettings {
                ttl: Duration::from_secs(raw.catalog.ttl_secs),
                max_stale: Duration::from_secs(raw.catalog.max_stale_secs),
                memory_capacity: raw.catalog.memory_capacity,
                failure_backoff: Duration::from_secs(raw.catalog.failure_backoff_secs),
            },
            templates_source: crate::templates::DEFAULT_TEMPLATES.to_owned(),
            prompt_source: crate::chat::DEFAULT_PROMPT.to_owned(),
            secrets,
        })
    }
}

fn read_optional(path: &std::path::Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(contents) => Ok(Some(contents)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read { path: path.to_owned(), source }),
    }
}

/// Parses `cadences.toml` into a checked book.
///
/// # Errors
/// Bad TOML, an override keyed by something that is not an id, or an inconsistent book.
pub fn parse_cadences(source: &str) -> Result<CadenceBook, ConfigError> {
    let raw: RawCadences = toml::from_str(source).map_err(|e| ConfigError::invalid("cadences", e.to_string()))?;
    let tenants = raw
        .tenants
        .into_iter()
        .map(|(id, name)| {
            Ok((id.parse::<TenantId>().map_err(|e| ConfigError::invalid("cadences.tenants", e.to_string()))?, name))
        })
        .collect::<Result<HashMap<_, _>, ConfigError>>()?;
    let locations = raw
        .locations
        .into_iter()
        .map(|(id, name)| {
            Ok((id.parse::<LocationId>().map_err(|e| ConfigError::invalid("cadences.locations", e.to_string()))?, name))
        })
        .collect::<Result<HashMap<_, _>, ConfigError>>()?;
    CadenceBook::new(raw.cadence, &raw.default, tenants, locations)
        .map_err(|e| ConfigError::invalid("cadences", e.to_string()))
}

fn read_profile(config_dir: &std::path::Path, profile: &str) -> Result<String, ConfigError> {
    if profile.is_empty() || !profile.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ConfigError::UnknownProfile(profile.to_owned()));
    }
    let path = config_dir.join(format!("{profile}.toml"));
    match std::fs::read_to_string(&path) {
        Ok(contents) => Ok(contents),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => BUILTIN_PROFILES
            .iter()
            .find(|(name, _)| *name == profile)
            .map(|(_, contents)| (*contents).to_owned())
            .ok_or_else(|| ConfigError::UnknownProfile(profile.to_owned())),
        Err(source) => Err(ConfigError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_load_without_any_environment() {
        let settings = Settings::load(None, None, &env(&[])).expect("defaults are valid");
        assert_eq!(settings.http.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(settings.database.url.expose_secret(), "postgres://postgres@127.0.0.1:5432/leadorch");
        assert!(settings.redis.url_opt.is_none());
        assert_eq!(settings.log.format, LogFormat::Pretty);
    }

    #[test]
    fn environment_overrides_profile_which_overrides_defaults() {
        let profile = "[http]\naddr = \"127.0.0.1:4000\"\n[log]\nformat = \"json\"\n";
        let settings = Settings::load(
            Some("staging"),
            Some(profile),
            &env(&[("LEADORCH_HTTP_ADDR", "0.0.0.0:5000"), ("LEADORCH_REDIS_URL", "redis://127.0.0.1:6379")]),
        )
        .expect("valid");
        assert_eq!(settings.http.addr.to_string(), "0.0.0.0:5000");
        assert_eq!(settings.log.format, LogFormat::Json);
        assert!(settings.redis.url_opt.is_some());
        assert_eq!(settings.profile, "staging");
    }

    #[test]
    fn a_bad_address_fails_naming_the_key_and_the_variable() {
        let err = Settings::load(None, None, &env(&[("LEADORCH_HTTP_ADDR", "not-an-address")])).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("http.addr"), "{message}");
        assert!(message.contains("LEADORCH_HTTP_ADDR"), "{message}");
    }

    #[test]
    fn a_bad_log_format_fails_naming_the_key() {
        let err = Settings::load(None, None, &env(&[("LEADORCH_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(err.to_string().contains("log.format"), "{err}");
    }

    #[test]
    fn a_bad_pool_size_fails_naming_the_variable() {
        let err = Settings::load(None, None, &env(&[("LEADORCH_DB_POOL_SIZE", "many")])).unwrap_err();
        assert!(err.to_string().contains("LEADORCH_DB_POOL_SIZE"), "{err}");
    }

    #[test]
    fn an_unknown_key_in_a_profile_is_rejected() {
        let err = Settings::load(Some("x"), Some("[http]\nport = 3\n"), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn a_database_url_error_does_not_echo_the_password() {
        let err = Settings::load(None, None, &env(&[("LEADORCH_DATABASE_URL", "mysql://u:hunter2@h/db")]));
        let message = err.map(|_| String::new()).unwrap_or_else(|e| e.to_string());
        assert!(message.contains("database.url"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn secrets_come_from_the_environment_and_debug_never_prints_them() {
        let settings =
            Settings::load(None, None, &env(&[("LEADORCH_TWILIO_AUTH_TOKEN", "tok-very-secret")])).expect("valid");
        let debug = format!("{settings:?}");
        assert!(!debug.contains("tok-very-secret"), "{debug}");
        assert!(settings.secrets.twilio_auth_token_opt.is_some());
    }

    #[test]
    fn the_catalog_ttl_defaults_to_five_minutes_and_the_environment_overrides_it() {
        let defaults = Settings::load(None, None, &env(&[])).expect("valid");
        assert_eq!(defaults.catalog.ttl, Duration::from_secs(300));
        assert_eq!(defaults.redis.command_timeout, Duration::from_millis(200));

        let settings = Settings::load(None, None, &env(&[("LEADORCH_CATALOG_TTL_SECS", "600")])).expect("valid");
        assert_eq!(settings.catalog.ttl, Duration::from_secs(600));

        let err = Settings::load(None, None, &env(&[("LEADORCH_CATALOG_TTL_SECS", "0")])).unwrap_err();
        assert!(err.to_string().contains("catalog.ttl_secs"), "{err}");
    }

    #[test]
    fn vendor_base_urls_and_the_poll_interval_come_from_the_environment() {
        let settings = Settings::load(
            None,
            None,
            &env(&[
                ("LEADORCH_SHOPMONKEY_BASE_URL", "http://127.0.0.1:9001/"),
                ("LEADORCH_TWILIO_BASE_URL", "http://127.0.0.1:9002"),
                ("LEADORCH_SENDGRID_BASE_URL", "http://127.0.0.1:9003"),
                ("LEADORCH_POLL_INTERVAL_SECS", "7"),
            ]),
        )
        .expect("valid");
        assert_eq!(settings.shopmonkey.base_url, "http://127.0.0.1:9001");
        assert_eq!(settings.twilio_base_url, "http://127.0.0.1:9002");
        assert_eq!(settings.sendgrid_base_url, "http://127.0.0.1:9003");
        assert_eq!(settings.poller.interval, Duration::from_secs(7));
    }

    #[test]
    fn an_intake_only_node_is_one_variable_and_a_bad_boolean_names_it() {
        assert!(Settings::load(None, None, &env(&[])).expect("valid").ingress.enabled);
        let off = Settings::load(None, None, &env(&[("LEADORCH_INGRESS_ENABLED", "false")])).expect("valid");
        assert!(!off.ingress.enabled);

        let err = Settings::load(None, None, &env(&[("LEADORCH_INGRESS_ENABLED", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("LEADORCH_INGRESS_ENABLED"), "{err}");
    }

    #[test]
    fn the_public_url_loses_its_trailing_slash() {
        let settings =
            Settings::load(None, None, &env(&[("LEADORCH_PUBLIC_URL", "https://leads.example.com/")])).expect("valid");
        assert_eq!(settings.http.public_url, "https://leads.example.com");
    }
}
