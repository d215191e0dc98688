//! Builds the chat's provider chain from config: the chosen provider (`ai.provider`, or the
//! first vendor with a key), then the fallback order, then the offline scripted provider as the
//! last resort, each with its configured price. A vendor without a key is skipped with a
//! warning, except when it is named as the provider: that is a start-up error.

use std::sync::Arc;

use leadorch_actors::ai::AiProvider;
use leadorch_actors::ai_router::{BreakerPolicy, ModelPrice, ProviderRouter};
use secrecy::{ExposeSecret, SecretString};

use super::anthropic::{AnthropicBuildError, AnthropicConfig, AnthropicProvider};
use super::openai::{OpenAiBuildError, OpenAiConfig, OpenAiProvider};
use super::scripted::ScriptedProvider;
use crate::config::Secrets;
use crate::config::ai::{AiSettings, ProviderKind, VendorModel};

/// Why the provider chain cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ProvidersError {
    #[error("ai.provider is {provider} but {variable} is not set")]
    MissingKey { provider: &'static str, variable: &'static str },
    #[error("anthropic provider")]
    Anthropic(#[from] AnthropicBuildError),
    #[error("openai provider")]
    OpenAi(#[from] OpenAiBuildError),
}

/// True when an OpenAI-compatible base URL is OpenAI's own (which needs a key); a local
/// server (Ollama, vLLM, llama.cpp) may run without one.
fn is_openai_cloud(base_url: &str) -> bool {
    reqwest::Url::parse(base_url).ok().and_then(|u| u.host_str().map(|h| h.ends_with("openai.com"))).unwrap_or(false)
}

fn anthropic(model: &VendorModel, key: SecretString) -> Result<Arc<dyn AiProvider>, AnthropicBuildError> {
    let config = AnthropicConfig {
        base_url: model.base_url.clone(),
        request_timeout: model.request_timeout,
        idle_timeout: model.idle_timeout,
        max_retries: model.max_retries,
        ..AnthropicConfig::new(key, model.model.clone())
    };
    Ok(Arc::new(AnthropicProvider::new(config)?))
}

fn openai(model: &VendorModel, key_opt: Option<SecretString>) -> Result<Arc<dyn AiProvider>, OpenAiBuildError> {
    let config = OpenAiConfig {
        base_url: model.base_url.clone(),
        request_timeout: model.request_timeout,
        idle_timeout: model.idle_timeout,
        max_retries: model.max_retries,
        ..OpenAiConfig::new(key_opt, model.model.clone())
    };
    Ok(Arc::new(OpenAiProvider::new(config)?))
}

/// Providers in order of preference, each with its price.
pub type ProviderChain = Vec<(Arc<dyn AiProvider>, ModelPrice)>;

/// Returns the providers in order of preference with their prices.
///
/// # Errors
/// The named provider has no key, or a vendor's settings are unusable.
pub fn provider_chain(settings: &AiSettings, secrets: &Secrets) -> Result<ProviderChain, ProvidersError> {
    let anthropic_key_opt = secrets.anthropic_api_key_opt.clone().filter(|k| !k.expose_secret().is_empty());
    let openai_key_opt = secrets.openai_api_key_opt.clone().filter(|k| !k.expose_secret().is_empty());
    let openai_usable = openai_key_opt.is_some() || !is_openai_cloud(&settings.openai.base_url);
    let chosen = match settings.provider_opt {
        Some(kind) => kind,
        None if anthropic_key_opt.is_some() => ProviderKind::Anthropic,
        None if openai_key_opt.is_some() => ProviderKind::OpenAi,
        None => ProviderKind::Scripted,
    };
    match chosen {
        ProviderKind::Anthropic if anthropic_key_opt.is_none() => {
            return Err(ProvidersError::MissingKey { provider: "anthropic", variable: "LEADORCH_ANTHROPIC_API_KEY" });
        }
        ProviderKind::OpenAi if !openai_usable => {
            return Err(ProvidersError::MissingKey { provider: "openai", variable: "LEADORCH_OPENAI_API_KEY" });
        }
        _ => {}
    }
    let mut order = vec![chosen];
    for kind in settings.fallback.iter().copied().chain([ProviderKind::Scripted]) {
        if !order.contains(&kind) {
            order.push(kind);
        }
    }
    let mut chain: ProviderChain = Vec::new();
    for kind in order {
        match kind {
            ProviderKind::Anthropic => match &anthropic_key_opt {
                Some(key) => chain.push((anthropic(&settings.anthropic, key.clone())?, settings.anthropic.price)),
                None => {
                    tracing::info!("anthropic is in ai.fallback but LEADORCH_ANTHROPIC_API_KEY is not set; skipped")
                }
            },
            ProviderKind::OpenAi if openai_usable => {
                chain.push((openai(&settings.openai, openai_key_opt.clone())?, settings.openai.price));
            }
            ProviderKind::OpenAi => {
                tracing::info!("openai is in ai.fallback but LEADORCH_OPENAI_API_KEY is not set; skipped");
            }
            ProviderKind::Scripted => chain.push((
                Arc::new(ScriptedProvider::new(settings.scripted_model.clone(), settings.scripted_word_delay)),
                ModelPrice::default(),
            )),
        }
    }
    let names: Vec<String> = chain.iter().map(|(p, _)| format!("{}:{}", p.name(), p.model())).collect();
    tracing::info!(providers = ?names, "chat providers in order");
    Ok(chain)
}

/// Builds the router over [`provider_chain`] with the configured breakers.
///
/// # Errors
/// As [`provider_chain`].
pub fn build_router(settings: &AiSettings, secrets: &Secrets) -> Result<ProviderRouter, ProvidersError> {
    let chain = provider_chain(settings, secrets)?;
    let policy = BreakerPolicy { failures_to_open: settings.breaker_failures, cool_down: settings.breaker_cooldown };
    Ok(ProviderRouter::new(chain, policy))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Settings;

    fn settings(env: &[(&str, &str)]) -> Settings {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::load(None, None, &env).expect("settings")
    }

    fn names(settings: &Settings) -> Vec<String> {
        provider_chain(&settings.ai, &settings.secrets)
            .expect("chain")
            .iter()
            .map(|(p, _)| p.name().to_owned())
            .collect()
    }

    #[test]
    fn without_keys_the_scripted_provider_answers() {
        assert_eq!(names(&settings(&[])), ["scripted"]);
    }

    #[test]
    fn a_vendor_key_makes_it_first_with_the_others_as_fallback_and_scripted_last() {
        let s = settings(&[("LEADORCH_ANTHROPIC_API_KEY", "sk-ant"), ("LEADORCH_OPENAI_API_KEY", "sk-oa")]);
        assert_eq!(names(&s), ["anthropic", "openai", "scripted"]);
        let s = settings(&[
            ("LEADORCH_AI_PROVIDER", "openai"),
            ("LEADORCH_ANTHROPIC_API_KEY", "sk-ant"),
            ("LEADORCH_OPENAI_API_KEY", "sk-oa"),
        ]);
        assert_eq!(names(&s), ["openai", "anthropic", "scripted"]);
    }

    #[test]
    fn a_local_openai_compatible_server_needs_no_key() {
        let s = settings(&[
            ("LEADORCH_AI_PROVIDER", "openai"),
            ("LEADORCH_OPENAI_BASE_URL", "http://127.0.0.1:11434/v1"),
            ("LEADORCH_OPENAI_MODEL", "llama3.2"),
        ]);
        let chain = provider_chain(&s.ai, &s.secrets).expect("chain");
        assert_eq!(chain[0].0.model(), "llama3.2");
    }

    #[test]
    fn naming_a_provider_without_its_key_fails_start_up_naming_the_variable() {
        let err = provider_chain(&settings(&[("LEADORCH_AI_PROVIDER", "anthropic")]).ai, &Secrets::default())
            .expect_err("missing key");
        assert!(err.to_string().contains("LEADORCH_ANTHROPIC_API_KEY"), "{err}");
    }

    #[test]
    fn prices_come_from_config_in_micro_dollars_per_million_tokens() {
        let s = settings(&[("LEADORCH_ANTHROPIC_API_KEY", "sk-ant")]);
        let chain = provider_chain(&s.ai, &s.secrets).expect("chain");
        assert_eq!(chain[0].1, ModelPrice { input_per_mtok_micros: 3_000_000, output_per_mtok_micros: 15_000_000 });
        assert_eq!(chain.last().map(|(_, price)| *price), Some(ModelPrice::default()));
    }

    #[test]
    fn an_unknown_provider_name_is_refused_naming_the_variable() {
        let env: HashMap<String, String> = [("LEADORCH_AI_PROVIDER".to_owned(), "gemini".to_owned())].into();
        let err = Settings::load(None, None, &env).expect_err("refused");
        assert!(err.to_string().contains("LEADORCH_AI_PROVIDER"), "{err}");
    }
}
