//! The `[ai]` and `[booking]` sections: which model answers the chat, the failover order, each
//! vendor's base URL, model id and price (model ids and prices live in config, never in code:
//! vendors retire models often), the chat's limits, and how appointment slots are cut.

use std::time::Duration;

use jiff::SignedDuration;
use leadorch_actors::ai_router::ModelPrice;
use leadorch_actors::booking::SlotPolicy;
use serde::Deserialize;

use super::ConfigError;

/// The providers the chat knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Anthropic,
    OpenAi,
    /// Offline: answers from the lead's facts; needs no key.
    Scripted,
}

impl ProviderKind {
    fn parse(name: &str) -> Option<ProviderKind> {
        match name.trim().to_ascii_lowercase().as_str() {
            "anthropic" | "claude" => Some(ProviderKind::Anthropic),
            "openai" | "openai-compatible" => Some(ProviderKind::OpenAi),
            "scripted" => Some(ProviderKind::Scripted),
            _ => None,
        }
    }

    /// Returns the config name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAi => "openai",
            ProviderKind::Scripted => "scripted",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAi {
    provider: String,
    fallback: String,
    max_tokens: u32,
    temperature: f32,
    history_token_budget: u32,
    session_idle_secs: u64,
    breaker_failures: u32,
    breaker_cooldown_secs: u64,
    rate_limit_per_minute: u32,
    max_message_chars: usize,
    anthropic: RawVendorModel,
    openai: RawVendorModel,
    scripted: RawScripted,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVendorModel {
    base_url: String,
    model: String,
    input_usd_per_mtok: f64,
    output_usd_per_mtok: f64,
    request_timeout_ms: u64,
    idle_timeout_ms: u64,
    max_retries: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScripted {
    model: String,
    word_delay_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBooking {
    slot_minutes: i64,
    lead_time_minutes: i64,
    horizon_days: i32,
    offer: usize,
}

/// One vendor model: where, which, at what price.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorModel {
    pub base_url: String,
    pub model: String,
    pub price: ModelPrice,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_retries: u32,
}

/// The chat's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AiSettings {
    /// The configured provider, if named; `None` picks the first vendor with a key, else the
    /// scripted one (see `startup`).
    pub provider_opt: Option<ProviderKind>,
    /// Tried in order after the chosen provider fails before its first token.
    pub fallback: Vec<ProviderKind>,
    pub max_tokens: u32,
    pub temperature: f32,
    pub history_token_budget: u32,
    pub session_idle: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    /// Customer chat requests per lead per minute.
    pub rate_limit_per_minute: u32,
    /// Longest customer message, in characters.
    pub max_message_chars: usize,
    pub anthropic: VendorModel,
    pub openai: VendorModel,
    pub scripted_model: String,
    pub scripted_word_delay: Duration,
    pub slots: SlotPolicy,
}

fn price(key: &str, input: f64, output: f64) -> Result<ModelPrice, ConfigError> {
    let micros = |usd: f64, which: &str| {
        if !(0.0..=1_000_000.0).contains(&usd) || !usd.is_finite() {
            return Err(ConfigError::invalid(&format!("{key}.{which}"), "must be a dollar amount from 0 to 1000000"));
        }
        // Whole micro-dollars per million tokens; the range check above keeps the cast exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok((usd * 1_000_000.0).round() as u64)
    };
    Ok(ModelPrice {
        input_per_mtok_micros: micros(input, "input_usd_per_mtok")?,
        output_per_mtok_micros: micros(output, "output_usd_per_mtok")?,
    })
}

fn vendor(key: &str, raw: RawVendorModel) -> Result<VendorModel, ConfigError> {
    let base_url = raw.base_url.trim().trim_end_matches('/').to_owned();
    reqwest::Url::parse(&base_url)
        .map_err(|err| ConfigError::invalid(&format!("{key}.base_url"), format!("`{base_url}` is not a URL: {err}")))?;
    if raw.model.trim().is_empty() {
        return Err(ConfigError::invalid(&format!("{key}.model"), "must name a model"));
    }
    if raw.request_timeout_ms == 0 || raw.idle_timeout_ms == 0 {
        return Err(ConfigError::invalid(&format!("{key}.request_timeout_ms"), "timeouts must be greater than 0"));
    }
    Ok(VendorModel {
        base_url,
        model: raw.model.trim().to_owned(),
        price: price(key, raw.input_usd_per_mtok, raw.output_usd_per_mtok)?,
        request_timeout: Duration::from_millis(raw.request_timeout_ms),
        idle_timeout: Duration::from_millis(raw.idle_timeout_ms),
        max_retries: raw.max_retries,
    })
}

impl AiSettings {
    pub(super) fn validate(raw: RawAi, booking: RawBooking) -> Result<AiSettings, ConfigError> {
        let provider_opt = match raw.provider.trim() {
            "" | "auto" => None,
            name => Some(ProviderKind::parse(name).ok_or_else(|| {
                ConfigError::invalid("ai.provider", format!("`{name}` is not one of anthropic, openai, scripted, auto"))
            })?),
        };
        let mut fallback = Vec::new();
        for name in raw.fallback.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind = ProviderKind::parse(name).ok_or_else(|| {
                ConfigError::invalid("ai.fallback", format!("`{name}` is not one of anthropic, openai, scripted"))
            })?;
            if !fallback.contains(&kind) {
                fallback.push(kind);
            }
        }
        if raw.max_tokens == 0 || raw.max_tokens > 8_192 {
            return Err(ConfigError::invalid("ai.max_tokens", "must be from 1 to 8192"));
        }
        if !(0.0..=2.0).contains(&raw.temperature) {
            return Err(ConfigError::invalid("ai.temperature", "must be from 0.0 to 2.0"));
        }
        if raw.session_idle_secs == 0 || raw.breaker_failures == 0 || raw.rate_limit_per_minute == 0 {
            return Err(ConfigError::invalid(
                "ai.session_idle_secs",
                "session_idle_secs, breaker_failures and rate_limit_per_minute must be greater than 0",
            ));
        }
        if raw.max_message_chars == 0 || raw.max_message_chars > 20_000 {
            return Err(ConfigError::invalid("ai.max_message_chars", "must be from 1 to 20000"));
        }
        if raw.scripted.model.trim().is_empty() {
            return Err(ConfigError::invalid("ai.scripted.model", "must name a model"));
        }
        if booking.slot_minutes < 5 || booking.slot_minutes > 8 * 60 {
            return Err(ConfigError::invalid("booking.slot_minutes", "must be from 5 to 480"));
        }
        if booking.lead_time_minutes < 0 || !(1..=90).contains(&booking.horizon_days) || booking.offer == 0 {
            return Err(ConfigError::invalid(
                "booking.horizon_days",
                "lead_time_minutes must be >= 0, horizon_days 1..=90, offer > 0",
            ));
        }
        Ok(AiSettings {
            provider_opt,
            fallback,
            max_tokens: raw.max_tokens,
            temperature: raw.temperature,
            history_token_budget: raw.history_token_budget,
            session_idle: Duration::from_secs(raw.session_idle_secs),
            breaker_failures: raw.breaker_failures,
            breaker_cooldown: Duration::from_secs(raw.breaker_cooldown_secs),
            rate_limit_per_minute: raw.rate_limit_per_minute,
            max_message_chars: raw.max_message_chars,
            anthropic: vendor("ai.anthropic", raw.anthropic)?,
            openai: vendor("ai.openai", raw.openai)?,
            scripted_model: raw.scripted.model.trim().to_owned(),
            scripted_word_delay: Duration::from_millis(raw.scripted.word_delay_ms),
            slots: SlotPolicy {
                duration: SignedDuration::from_mins(booking.slot_minutes),
                step: SignedDuration::from_mins(booking.slot_minutes),
                lead_time: SignedDuration::from_mins(booking.lead_time_minutes),
                horizon_days: booking.horizon_days,
                offer: booking.offer,
                ..SlotPolicy::default()
            },
        })
    }
}
