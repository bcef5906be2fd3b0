//! The models a turn may ask for, each with the provider that serves it, its fallback
//! chain and its prices, built from `[provider]`, `[providers.NAME]` and `[models.NAME]`.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Provider, Retries, Unconfigured, build_one};
use crate::config::{Config, ModelConfig, ProviderConfig};
use crate::conversation::Usage;
use crate::metrics::Metrics;

/// The name the model of a provider that is sent no model name goes by (and the one
/// clients see when nothing is configured).
pub const UNNAMED: &str = "parley";

/// The name of the provider `[provider]` (`PARLEY_PROVIDER_URL`) configures.
const LEGACY: &str = "default";

/// Prices of a million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cached_input: f64,
}

impl Price {
    /// The prices of a model with any (a price left out is 0; cached input costs as much
    /// as input unless it has its own).
    fn of(config: &ModelConfig) -> Option<Self> {
        if config.input_price.is_none() && config.output_price.is_none() {
            return None;
        }
        let input = config.input_price.unwrap_or(0.0);
        Some(Self {
            input,
            output: config.output_price.unwrap_or(0.0),
            cached_input: config.cached_input_price.unwrap_or(input),
        })
    }

    /// What `usage` costs: cached input tokens at their price, the rest of the input and
    /// the output at theirs.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let fresh = usage.prompt_tokens - cached;
        (fresh as f64 * self.input
            + cached as f64 * self.cached_input
            + usage.completion_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

/// A model clients may ask for, and what serves it.
pub struct Route {
    /// The name clients use, and the one sent upstream (unless it is [`UNNAMED`]).
    pub id: String,
    /// The provider's name (`[providers.NAME]`, or `default`).
    pub provider_name: String,
    pub provider: Arc<dyn Provider>,
    pub price: Option<Price>,
}

impl Route {
    /// The model name sent upstream: none for a provider given no model name.
    pub fn upstream(&self) -> Option<&str> {
        (self.id != UNNAMED).then_some(self.id.as_str())
    }
}

/// A model name no provider serves.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no model {0:?} is configured")]
pub struct UnknownModel(pub String);

/// Every configured model.
pub struct Models {
    /// In the order they are listed: the default first, then by provider and position.
    routes: Vec<Arc<Route>>,
    /// Each model's chain: itself, then its fallbacks, as indexes into `routes`.
    chains: HashMap<String, Vec<usize>>,
    /// Whether a provider is configured at all.
    configured: bool,
}

impl Models {
    /// Builds the providers and their models, refusing a configuration that names a model
    /// nobody serves, serves one twice, or cannot be reached.
    /// Their retries are counted in `metrics`.
    pub fn build(config: &Config, metrics: &Arc<Metrics>) -> Result<Self, String> {
        let mut providers: Vec<(&str, &ProviderConfig)> = Vec::new();
        if has_url(&config.provider) {
            providers.push((LEGACY, &config.provider));
        }
        for (name, provider) in &config.providers {
            if name == LEGACY && has_url(&config.provider) {
                return Err(format!(
                    "providers.{LEGACY}: the name is taken by [provider] (PARLEY_PROVIDER_URL)"
                ));
            }
            if !has_url(provider) {
                return Err(format!("providers.{name}.url is required"));
            }
            providers.push((name, provider));
        }
        let mut routes: Vec<Arc<Route>> = Vec::new();
        for (name, provider_config) in &providers {
            let retries = Retries::new(metrics.clone(), name);
            let provider = build_one(provider_config, retries)
                .map_err(|e| if *name == LEGACY { e } else { format!("providers.{name}: {e}") })?;
            let mut names: Vec<&str> = provider_config
                .model
                .iter()
                .chain(&provider_config.models)
                .map(|m| m.trim())
                .filter(|m| !m.is_empty())
                .collect();
            if names.is_empty() {
                if *name != LEGACY {
                    return Err(format!("providers.{name}.models lists no model"));
                }
                if provider_config.kind == "anthropic" {
                    return Err("provider.model (PARLEY_MODEL) is required with kind = \
                                \"anthropic\", e.g. claude-sonnet-4-5"
                        .into());
                }
                names.push(UNNAMED);
            }
            for id in names {
                if let Some(other) = routes.iter().find(|r| r.id == id) {
                    if other.provider_name == *name {
                        continue;
                    }
                    return Err(format!(
                        "model {id:?} is listed by both provider {} and provider {name}",
                        other.provider_name
                    ));
                }
                let price = config.models.get(id).and_then(Price::of);
                routes.push(Arc::new(Route {
                    id: id.to_owned(),
                    provider_name: (*name).to_owned(),
                    provider: provider.clone(),
                    price,
                }));
            }
        }
        let configured = !routes.is_empty();
        if !configured {
            routes.push(Arc::new(Route {
                id: UNNAMED.into(),
                provider_name: "none".into(),
                provider: Arc::new(Unconfigured),
                price: None,
            }));
        }
        // The default goes first: it is what a client that lists models and takes the first
        // one should get.
        if let Some(id) = &config.default_model {
            let at = routes
                .iter()
                .position(|r| r.id == *id)
                .ok_or_else(|| format!("default_model {id:?} is not a model any provider lists"))?;
            let default = routes.remove(at);
            routes.insert(0, default);
        }
        let index = |id: &str| routes.iter().position(|r| r.id == id);
        let mut chains = HashMap::new();
        for (id, model) in &config.models {
            let Some(own) = index(id) else {
                return Err(format!("models.{id}: no provider lists this model"));
            };
            let mut chain = vec![own];
            for next in &model.fallback {
                let at = index(next).ok_or_else(|| {
                    format!("models.{id}.fallback: {next:?} is not a model any provider lists")
                })?;
                if !chain.contains(&at) {
                    chain.push(at);
                }
            }
            chains.insert(id.clone(), chain);
        }
        for (at, route) in routes.iter().enumerate() {
            chains.entry(route.id.clone()).or_insert_with(|| vec![at]);
        }
        Ok(Self { routes, chains, configured })
    }

    /// The model a turn asking for `requested` runs on: the default when it names none,
    /// and when no model has a name (a single provider that is sent none) whatever it
    /// names, since there is nothing to choose from.
    pub fn resolve(&self, requested: Option<&str>) -> Result<&str, UnknownModel> {
        let default = self.default_id();
        match requested.map(str::trim).filter(|r| !r.is_empty()) {
            None => Ok(default),
            Some(_) if self.routes.len() == 1 && default == UNNAMED => Ok(default),
            Some(name) => self
                .routes
                .iter()
                .find(|r| r.id == name)
                .map(|r| r.id.as_str())
                .ok_or_else(|| UnknownModel(name.to_owned())),
        }
    }

    /// The model of a turn that names none.
    pub fn default_id(&self) -> &str {
        &self.routes[0].id
    }

    /// The models to try for `id`, in order: itself, then its fallbacks. An id that is not
    /// configured (any more: a turn queued before a restart) gets the default's chain.
    pub fn chain(&self, id: &str) -> Vec<Arc<Route>> {
        let chain = self.chains.get(id).or_else(|| self.chains.get(self.default_id()));
        chain.into_iter().flatten().map(|&at| self.routes[at].clone()).collect()
    }

    /// The route of `id`, if it is configured.
    pub fn route(&self, id: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.id == id)
    }

    /// Every model, the default first.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Whether any provider is configured.
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// A short description of the providers for logs and status.
    pub fn describe(&self) -> String {
        let mut seen: Vec<&str> = Vec::new();
        let mut parts = Vec::new();
        for route in &self.routes {
            if !seen.contains(&route.provider_name.as_str()) {
                seen.push(&route.provider_name);
                parts.push(route.provider.describe());
            }
        }
        parts.join("; ")
    }
}

fn has_url(provider: &ProviderConfig) -> bool {
    provider.url.as_deref().is_some_and(|u| !u.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new())
    }

    fn provider(kind: &str, models: &[&str]) -> ProviderConfig {
        ProviderConfig {
            kind: kind.into(),
            url: Some("http://127.0.0.1:9/v1".into()),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            ..ProviderConfig::default()
        }
    }

    fn two_providers() -> Config {
        let mut config = Config::default();
        config.providers.insert("local".into(), provider("openai", &["small", "big"]));
        config.providers.insert("claude".into(), provider("anthropic", &["sonnet"]));
        config
    }

    #[test]
    fn nothing_configured_is_one_unnamed_model_that_fails() {
        let models = Models::build(&Config::default(), &metrics()).unwrap();
        assert!(!models.configured());
        assert_eq!(models.default_id(), UNNAMED);
        assert_eq!(models.resolve(Some("gpt-4o")).unwrap(), UNNAMED, "nothing to choose from");
    }

    #[test]
    fn lists_every_model_the_default_first() {
        let mut config = two_providers();
        config.default_model = Some("big".into());
        let models = Models::build(&config, &metrics()).unwrap();
        let ids: Vec<&str> = models.routes().iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["big", "sonnet", "small"]);
        assert_eq!(models.resolve(None).unwrap(), "big");
        assert_eq!(models.resolve(Some("sonnet")).unwrap(), "sonnet");
        assert!(models.resolve(Some("gpt-4o")).is_err(), "named models are strict");
    }

    #[test]
    fn chains_follow_the_fallbacks() {
        let mut config = two_providers();
        let fallback = vec!["small".into(), "sonnet".into(), "big".into()];
        config.models.insert("sonnet".into(), ModelConfig { fallback, ..Default::default() });
        let models = Models::build(&config, &metrics()).unwrap();
        let chain: Vec<String> = models.chain("sonnet").iter().map(|r| r.id.clone()).collect();
        assert_eq!(chain, ["sonnet", "small", "big"], "itself once, first");
        assert_eq!(models.chain("big").len(), 1);
    }

    #[test]
    fn refuses_what_cannot_work() {
        let refused = |config: Config| Models::build(&config, &metrics()).err().unwrap();
        let mut config = two_providers();
        config.default_model = Some("nope".into());
        assert!(refused(config).contains("default_model"));
        let mut config = two_providers();
        config.models.insert("ghost".into(), ModelConfig::default());
        assert!(refused(config).contains("models.ghost"));
        let mut config = two_providers();
        let fallback = vec!["ghost".into()];
        config.models.insert("small".into(), ModelConfig { fallback, ..Default::default() });
        assert!(refused(config).contains("fallback"));
        let mut config = two_providers();
        config.providers.insert("again".into(), provider("openai", &["small"]));
        assert!(refused(config).contains("both provider"));
        let mut config = two_providers();
        config.providers.insert("empty".into(), provider("openai", &[]));
        assert!(refused(config).contains("providers.empty.models"));
        let mut config = two_providers();
        config.providers.get_mut("local").unwrap().url = None;
        assert!(refused(config).contains("providers.local.url"));
    }

    #[test]
    fn prices_count_cached_input_apart() {
        let price = Price { input: 3.0, output: 15.0, cached_input: 0.3 };
        let usage = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 100_000,
            cached_tokens: 400_000,
            ..Usage::default()
        };
        let cost = price.cost(&usage);
        assert!((cost - (0.6 * 3.0 + 0.4 * 0.3 + 0.1 * 15.0)).abs() < 1e-9, "{cost}");
    }
}
