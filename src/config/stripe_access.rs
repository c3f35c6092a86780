//! What it takes to call Stripe (key, API base, request budget), on its own: the CLI's
//! `reconcile` and `resync` call Stripe without being a `serve`, so they need neither a
//! webhook secret nor the rest of [`super::Config`].

use super::loader::{ConfigError, Source};
use super::vars;
use super::{ActionConfig, ApiKey, Config, DatabaseUrl};

/// The Stripe settings of a process that calls Stripe.
#[derive(Debug, Clone)]
pub struct StripeAccess {
    pub key: ApiKey,
    pub api_base: String,
    /// The request budget (`STRIPE_MAX_RPS`, burst) and per-request timeout.
    pub actions: ActionConfig,
}

impl StripeAccess {
    /// `None` when `STRIPE_SECRET_KEY` is not set.
    pub fn from_config(config: &Config) -> Option<Self> {
        Some(Self {
            key: config.stripe_secret_key.clone()?,
            api_base: config.stripe_api_base.clone(),
            actions: config.actions,
        })
    }
}

/// `STRIPE_SECRET_KEY`, `STRIPE_API_BASE` and `STRIPE_MAX_RPS` from `source`, checked as
/// `serve` checks them; `None` when no key is set.
pub fn load_stripe_access(source: &dyn Source) -> Result<Option<StripeAccess>, ConfigError> {
    let Some(key) = source
        .get(vars::STRIPE_SECRET_KEY.name)
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
    else {
        return Ok(None);
    };
    let reader = super::loader::Reader::new(source, &DatabaseUrl::default_sqlite());
    let actions = reader.actions()?;
    let api_base = source
        .get(vars::STRIPE_API_BASE.name)
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| super::DEFAULT_STRIPE_API_BASE.to_owned());
    let parsed = url::Url::parse(&api_base).ok();
    if !parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
        return Err(ConfigError::Invalid {
            var: vars::STRIPE_API_BASE.name.to_owned(),
            reason: format!("`{api_base}` is not an http(s) URL"),
        });
    }
    Ok(Some(StripeAccess {
        key: ApiKey::new(key),
        api_base,
        actions,
    }))
}

/// The first endpoint of kind `connect` that `source` configures (the default one first), as
/// [`Config::connect_endpoint`] finds it, read from the endpoints' names and kinds alone: the
/// CLI's `reconcile` records connected accounts' events under it and verifies no signature,
/// so it needs no signing secret.
pub fn load_connect_endpoint(
    source: &dyn Source,
) -> Result<Option<super::EndpointName>, ConfigError> {
    super::loader::Reader::new(source, &DatabaseUrl::default_sqlite()).connect_endpoint()
}
