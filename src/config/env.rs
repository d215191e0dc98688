//! Every supported `LEADORCH_*` environment variable, listed once, mapped to the settings key it
//! overrides. Operators, `docker/compose.yaml` and the README rely on these names.

/// How an environment value is read before it is merged over the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnvKind {
    /// Taken as a string.
    Text,
    /// Parsed as an unsigned integer; a bad value fails start-up naming the variable.
    Unsigned,
    /// true/false (also 1/0, yes/no, on/off); anything else fails start-up naming the variable.
    Bool,
}

/// One environment variable that overrides one settings key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EnvOverride {
    pub(crate) var: &'static str,
    pub(crate) key: &'static str,
    pub(crate) kind: EnvKind,
}

/// Variables that override keys of `config/*.toml`.
pub(crate) const OVERRIDES: &[EnvOverride] = &[
    EnvOverride { var: "LEADORCH_DATABASE_URL", key: "database.url", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_DB_POOL_SIZE", key: "database.pool_max_size", kind: EnvKind::Unsigned },
    EnvOverride { var: "LEADORCH_REDIS_URL", key: "redis.url", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_REDIS_KEY_PREFIX", key: "redis.key_prefix", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_CATALOG_TTL_SECS", key: "catalog.ttl_secs", kind: EnvKind::Unsigned },
    EnvOverride { var: "LEADORCH_HTTP_ADDR", key: "http.addr", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_PUBLIC_URL", key: "http.public_url", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_LOG_FORMAT", key: "log.format", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_LOG", key: "log.filter", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_SHOPMONKEY_BASE_URL", key: "shopmonkey.base_url", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_TWILIO_BASE_URL", key: "twilio.base_url", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_SENDGRID_BASE_URL", key: "sendgrid.base_url", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_POLL_INTERVAL_SECS", key: "poller.interval_secs", kind: EnvKind::Unsigned },
    EnvOverride { var: "LEADORCH_INGRESS_ENABLED", key: "ingress.enabled", kind: EnvKind::Bool },
    EnvOverride { var: "LEADORCH_AI_PROVIDER", key: "ai.provider", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_AI_FALLBACK", key: "ai.fallback", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_ANTHROPIC_BASE_URL", key: "ai.anthropic.base_url", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_ANTHROPIC_MODEL", key: "ai.anthropic.model", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_OPENAI_BASE_URL", key: "ai.openai.base_url", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_OPENAI_MODEL", key: "ai.openai.model", kind: EnvKind::Text },
    EnvOverride { var: "LEADORCH_AI_RATE_LIMIT_PER_MINUTE", key: "ai.rate_limit_per_minute", kind: EnvKind::Unsigned },
];

/// The profile to load (`config/{profile}.toml`); CLI `--profile` wins.
pub(crate) const PROFILE: &str = "LEADORCH_PROFILE";
/// Where the profile files live; default `./config`.
pub(crate) const CONFIG_DIR: &str = "LEADORCH_CONFIG_DIR";

/// Secrets: read only from the environment, never from files, never logged.
pub(crate) const SECRET_KEY: &str = "LEADORCH_SECRET_KEY";
pub(crate) const SHOPMONKEY_API_KEY: &str = "LEADORCH_SHOPMONKEY_API_KEY";
pub(crate) const TWILIO_ACCOUNT_SID: &str = "LEADORCH_TWILIO_ACCOUNT_SID";
pub(crate) const TWILIO_AUTH_TOKEN: &str = "LEADORCH_TWILIO_AUTH_TOKEN";
pub(crate) const SENDGRID_API_KEY: &str = "LEADORCH_SENDGRID_API_KEY";
/// SendGrid's event-webhook verification key (base64 P-256 public key); not secret, but it
/// travels with the credentials.
pub(crate) const SENDGRID_VERIFICATION_KEY: &str = "LEADORCH_SENDGRID_VERIFICATION_KEY";
pub(crate) const ANTHROPIC_API_KEY: &str = "LEADORCH_ANTHROPIC_API_KEY";
pub(crate) const OPENAI_API_KEY: &str = "LEADORCH_OPENAI_API_KEY";

/// Returns the variable that overrides `key`, if any, for error messages.
pub(crate) fn var_for_key(key: &str) -> Option<&'static str> {
    OVERRIDES.iter().find(|o| o.key == key).map(|o| o.var)
}
