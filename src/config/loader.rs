//! The one configuration loader: values from a [`Source`] (flags over environment), defaults
//! from the variable table, validation with a message naming the variable.
//!
//! Nothing is clamped: a value out of its range stops start-up, since silently running with
//! another value than the operator wrote hides the mistake until it matters. Defaults that
//! depend on the database backend are resolved here and nowhere else. Shapes that are probably
//! wrong but may be deliberate (a webhook secret without `whsec_`) are accepted and reported
//! in [`Loaded::warnings`], which the caller logs.
//!
//! Tests build their configuration through the same path, from `(VAR, value)` pairs.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;

use super::database_url::DatabaseUrl;
use super::endpoints::{EndpointConfig, EndpointKind, EndpointName};
use super::secrets::{
    api_key_as_webhook_secret, check_token, is_api_key_shape, split_list, webhook_secret_shape,
    AdminToken, ApiKey, ApiToken, NotifySecret, WebhookSecret, WebhookSecretShape,
};
use super::vars::{self, DefaultValue, Range, Var};
use super::{
    ActionConfig, AdmissionConfig, Config, NotifyConfig, NotifyUrl, ProcessorConfig,
    WHERE_TO_GET_A_SECRET,
};
use crate::store::Durability;

/// Where values come from: flags over environment in the CLI, a list of pairs in tests.
pub trait Source {
    /// The value of the variable `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// `(VAR, value)` pairs; the last one of a name wins.
impl Source for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

impl<const N: usize> Source for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        Source::get(self.as_slice(), name)
    }
}

impl Source for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// `first` where it has a value, else `then`: flags over environment.
#[derive(Debug, Clone, Copy)]
pub struct Layered<A, B>(pub A, pub B);

impl<A: Source, B: Source> Source for Layered<A, B> {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).or_else(|| self.1.get(name))
    }
}

impl<T: Source + ?Sized> Source for &T {
    fn get(&self, name: &str) -> Option<String> {
        (**self).get(name)
    }
}

/// Why the configuration was refused; always names the variable, never quotes a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set: {help}")]
    Missing { var: String, help: String },
    #[error("{var}: {reason}")]
    Invalid { var: String, reason: String },
}

fn invalid(var: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var: var.to_owned(),
        reason: reason.into(),
    }
}

/// A loaded configuration and what looked wrong in it without being refused.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Builds the whole `serve` configuration.
pub fn load(source: &dyn Source) -> Result<Loaded, ConfigError> {
    load_for(source, load_database_url(source)?)
}

/// As [`load`], for a database already known.
pub(super) fn load_for(
    source: &dyn Source,
    database_url: DatabaseUrl,
) -> Result<Loaded, ConfigError> {
    let mut reader = Reader::new(source, &database_url);
    let config = reader.config(database_url)?;
    Ok(Loaded {
        config,
        warnings: reader.warnings,
    })
}

/// `DATABASE_URL` alone, for the commands that need nothing else.
pub fn load_database_url(source: &dyn Source) -> Result<DatabaseUrl, ConfigError> {
    let raw = present(source.get(vars::DATABASE_URL.name));
    match raw {
        None => Ok(DatabaseUrl::default_sqlite()),
        Some(raw) => {
            DatabaseUrl::parse(&raw).map_err(|e| invalid(vars::DATABASE_URL.name, e.to_string()))
        }
    }
}

/// A blank value counts as unset, as in most shells' `VAR= command`.
fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// Reads and checks variables against the table; collects warnings.
pub(super) struct Reader<'a> {
    source: &'a dyn Source,
    postgres: bool,
    warnings: Vec<String>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(source: &'a dyn Source, database_url: &DatabaseUrl) -> Self {
        Self {
            source,
            postgres: matches!(database_url, DatabaseUrl::Postgres(_)),
            warnings: Vec::new(),
        }
    }

    /// The value as set (trimmed), or `None`.
    fn set(&self, var: &Var) -> Option<String> {
        present(self.source.get(var.name)).map(|v| v.trim().to_owned())
    }

    /// The value as set, or its default.
    fn text(&self, var: &Var) -> Result<Option<String>, ConfigError> {
        if let Some(value) = self.set(var) {
            return Ok(Some(value));
        }
        Ok(match var.default {
            DefaultValue::Value(v) => Some(v.to_owned()),
            DefaultValue::PerBackend { sqlite, postgres } => {
                Some(if self.postgres { postgres } else { sqlite }.to_owned())
            }
            DefaultValue::Unset => None,
            DefaultValue::Required => {
                return Err(ConfigError::Missing {
                    var: var.name.to_owned(),
                    help: "it has no default".into(),
                })
            }
        })
    }

    /// Quotes the value in a message unless it is secret.
    fn quoted(var: &Var, value: &str) -> String {
        if var.secret {
            "the value".into()
        } else {
            format!("`{value}`")
        }
    }

    fn int_opt(&self, var: &Var) -> Result<Option<i64>, ConfigError> {
        let Some(text) = self.text(var)? else {
            return Ok(None);
        };
        let n: i64 = text.parse().map_err(|_| {
            invalid(
                var.name,
                format!("{} is not a whole number", Self::quoted(var, &text)),
            )
        })?;
        if let Range::Int { min, max } = var.range {
            if !(min..=max).contains(&n) {
                return Err(invalid(
                    var.name,
                    format!("{n} is out of range: {}", var.range_text()),
                ));
            }
        }
        Ok(Some(n))
    }

    /// A whole number within the variable's range, converted to the type the config holds.
    fn int<T: TryFrom<i64>>(&self, var: &Var) -> Result<T, ConfigError> {
        let n = self
            .int_opt(var)?
            .ok_or_else(|| invalid(var.name, "has no value"))?;
        // The table's ranges fit every field type; this refuses a table that says otherwise.
        T::try_from(n).map_err(|_| invalid(var.name, format!("{n} does not fit")))
    }

    fn millis(&self, var: &Var) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.int(var)?))
    }

    fn float(&self, var: &Var) -> Result<f64, ConfigError> {
        let text = self
            .text(var)?
            .ok_or_else(|| invalid(var.name, "has no value"))?;
        let x: f64 = text
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| invalid(var.name, format!("`{text}` is not a number")))?;
        if let Range::Float { min, max } = var.range {
            if !(min..=max).contains(&x) {
                return Err(invalid(
                    var.name,
                    format!("{x} is out of range: {}", var.range_text()),
                ));
            }
        }
        Ok(x)
    }

    fn choice<E: ValueEnum>(&self, var: &Var) -> Result<E, ConfigError> {
        let text = self
            .text(var)?
            .ok_or_else(|| invalid(var.name, "has no value"))?;
        parse_choice(var.name, &text)
    }

    pub(super) fn admission(&self) -> Result<AdmissionConfig, ConfigError> {
        Ok(AdmissionConfig {
            max_batch: self.int(&vars::ADMIT_MAX_BATCH)?,
            max_wait: Duration::from_micros(self.int(&vars::ADMIT_MAX_WAIT_US)?),
            writers: self.int(&vars::ADMIT_WRITERS)?,
            queue_depth: fixed::ADMIT_QUEUE_DEPTH,
        })
    }

    pub(super) fn processor(&self) -> Result<ProcessorConfig, ConfigError> {
        Ok(ProcessorConfig {
            batch_size: self.int(&vars::PROCESS_BATCH_SIZE)?,
            max_attempts: self.int(&vars::PROCESS_MAX_ATTEMPTS)?,
            retry_base: self.millis(&vars::PROCESS_RETRY_BASE_MS)?,
            retry_cap: fixed::PROCESS_RETRY_CAP,
            poll_interval: self.millis(&vars::PROCESS_POLL_MS)?,
            gather: self.millis(&vars::PROCESS_GATHER_MS)?,
            checkout_expiry: Duration::from_secs(
                60 * self.int::<u64>(&vars::CHECKOUT_EXPIRY_MINS)?,
            ),
            sweep_interval: fixed::SWEEP_INTERVAL,
            workers: self.int(&vars::PROCESS_WORKERS)?,
            max_transaction: self.millis(&vars::PROCESS_MAX_TXN_MS)?,
            nice: self.int(&vars::PROCESS_NICE)?,
            notifications: crate::app::notifications::Notifications::Queue,
        })
    }

    pub(super) fn actions(&self) -> Result<ActionConfig, ConfigError> {
        let max_rps = self.float(&vars::STRIPE_MAX_RPS)?;
        Ok(ActionConfig {
            max_rps,
            // A bucket must hold at least one token, or a rate below 1/s could never send.
            burst: max_rps.max(1.0),
            max_attempts: self.int(&vars::ACTION_MAX_ATTEMPTS)?,
            retry_base: self.millis(&vars::ACTION_RETRY_BASE_MS)?,
            retry_cap: fixed::ACTION_RETRY_CAP,
            poll_interval: fixed::ACTION_POLL_INTERVAL,
            concurrency: self.int(&vars::ACTION_CONCURRENCY)?,
            lease: Duration::from_secs(self.int(&vars::ACTION_LEASE_SECS)?),
            request_timeout: fixed::STRIPE_REQUEST_TIMEOUT,
            shutdown_grace: fixed::ACTION_SHUTDOWN_GRACE,
        })
    }

    fn config(&mut self, database_url: DatabaseUrl) -> Result<Config, ConfigError> {
        let webhook_secrets = match self.set(&vars::STRIPE_WEBHOOK_SECRET) {
            Some(raw) => self.webhook_secrets(vars::STRIPE_WEBHOOK_SECRET.name, &raw)?,
            None => {
                return Err(ConfigError::Missing {
                    var: vars::STRIPE_WEBHOOK_SECRET.name.to_owned(),
                    help: WHERE_TO_GET_A_SECRET.to_owned(),
                })
            }
        };
        let bind_text = self
            .text(&vars::BIND)?
            .ok_or_else(|| invalid(vars::BIND.name, "has no value"))?;
        let bind: SocketAddr = bind_text.parse().map_err(|_| {
            invalid(
                vars::BIND.name,
                format!("`{bind_text}` is not an address:port such as 127.0.0.1:8080"),
            )
        })?;
        let stripe_api_base = self
            .text(&vars::STRIPE_API_BASE)?
            .ok_or_else(|| invalid(vars::STRIPE_API_BASE.name, "has no value"))?;
        http_url(vars::STRIPE_API_BASE.name, &stripe_api_base)?;
        let config = Config {
            database_url,
            bind,
            webhook_secrets,
            webhook_kind: self.choice(&vars::STRIPE_WEBHOOK_KIND)?,
            webhook_livemode: self.choice(&vars::STRIPE_WEBHOOK_LIVEMODE)?,
            named_endpoints: self.named_endpoints()?,
            tolerance_secs: self.int(&vars::WEBHOOK_TOLERANCE_SECS)?,
            max_body_bytes: self.int(&vars::MAX_BODY_BYTES)?,
            stripe_secret_key: self.stripe_secret_key(),
            stripe_api_base,
            durability: self.choice::<Durability>(&vars::SQLITE_DURABILITY)?,
            pool_size: self.int(&vars::DATABASE_POOL_SIZE)?,
            database_wait: self.millis(&vars::DATABASE_WAIT_MS)?,
            admission: self.admission()?,
            processor: self.processor()?,
            actions: self.actions()?,
            http_workers: self.int(&vars::HTTP_WORKERS)?,
            client_request_timeout: fixed::CLIENT_REQUEST_TIMEOUT,
            api_tokens: self.tokens(&vars::API_TOKEN, ApiToken::new)?,
            admin_tokens: self.tokens(&vars::ADMIN_TOKEN, AdminToken::new)?,
            notify: self.notify()?,
            reconcile_interval: self
                .int_opt(&vars::RECONCILE_INTERVAL_SECS)?
                .map(|s| Duration::from_secs(s.unsigned_abs())),
        };
        if config
            .api_tokens
            .iter()
            .any(|a| config.admin_tokens.iter().any(|b| a.expose() == b.expose()))
        {
            return Err(invalid(
                vars::ADMIN_TOKEN.name,
                "a token is also in API_TOKEN: the app could then call the admin API",
            ));
        }
        Ok(config)
    }

    /// Signing secrets of an endpoint: API keys refused, other shapes than `whsec_` warned.
    fn webhook_secrets(&mut self, var: &str, raw: &str) -> Result<Vec<WebhookSecret>, ConfigError> {
        let entries = split_list(raw).map_err(|e| invalid(var, e))?;
        let mut secrets = Vec::with_capacity(entries.len());
        for (n, entry) in entries.into_iter().enumerate() {
            match webhook_secret_shape(entry) {
                WebhookSecretShape::SigningSecret => {}
                WebhookSecretShape::ApiKey => {
                    return Err(invalid(var, api_key_as_webhook_secret(var)))
                }
                WebhookSecretShape::Unusual => self.warnings.push(format!(
                    "{var}: entry #{} does not start with whsec_, as Stripe's signing secrets \
                     do; deliveries will fail with signature_mismatch unless the sender signs \
                     with exactly this secret",
                    n + 1
                )),
            }
            secrets.push(WebhookSecret::new(entry.to_owned()));
        }
        Ok(secrets)
    }

    fn stripe_secret_key(&mut self) -> Option<ApiKey> {
        let key = self.set(&vars::STRIPE_SECRET_KEY)?;
        if !is_api_key_shape(&key) {
            let hint = if key.starts_with("whsec_") {
                " (a whsec_ signing secret goes in STRIPE_WEBHOOK_SECRET)"
            } else if key.starts_with("pk_") {
                " (a pk_ publishable key belongs in the front end)"
            } else {
                ""
            };
            self.warnings.push(format!(
                "STRIPE_SECRET_KEY does not start with sk_ or rk_, as Stripe's secret and \
                 restricted keys do{hint}; Stripe will likely refuse it"
            ));
        }
        Some(ApiKey::new(key))
    }

    fn tokens<T>(&self, var: &Var, new: fn(String) -> T) -> Result<Vec<T>, ConfigError> {
        let Some(raw) = self.set(var) else {
            return Ok(Vec::new());
        };
        split_list(&raw)
            .map_err(|e| invalid(var.name, e))?
            .into_iter()
            .enumerate()
            .map(|(n, token)| {
                check_token(token)
                    .map(|()| new(token.to_owned()))
                    .map_err(|e| invalid(var.name, format!("entry #{} {e}", n + 1)))
            })
            .collect()
    }

    fn notify(&mut self) -> Result<Option<NotifyConfig>, ConfigError> {
        let url = self.set(&vars::NOTIFY_URL);
        let secrets = match self.set(&vars::NOTIFY_SECRET) {
            None => Vec::new(),
            Some(raw) => split_list(&raw)
                .map_err(|e| invalid(vars::NOTIFY_SECRET.name, e))?
                .into_iter()
                .enumerate()
                .map(|(n, s)| {
                    NotifySecret::parse(s).map_err(|e| {
                        invalid(
                            vars::NOTIFY_SECRET.name,
                            format!(
                                "entry #{} {e} (it must be whsec_ followed by the base64 of 24 \
                                 to 64 random bytes)",
                                n + 1
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        match (url, secrets.is_empty()) {
            (None, true) => Ok(None),
            (None, false) => {
                self.warnings.push(
                    "NOTIFY_SECRET is set but NOTIFY_URL is not: no notifications are sent".into(),
                );
                Ok(None)
            }
            (Some(_), true) => Err(ConfigError::Missing {
                var: vars::NOTIFY_SECRET.name.to_owned(),
                help: "NOTIFY_URL is set, and notifications are always signed".into(),
            }),
            (Some(url), false) => Ok(Some(NotifyConfig {
                url: NotifyUrl(http_url(vars::NOTIFY_URL.name, &url)?),
                secrets,
                retry_schedule: crate::outbox::notify::default_schedule(),
            })),
        }
    }

    /// The names of `STRIPE_ENDPOINTS`, checked, in their order.
    fn endpoint_names(&self) -> Result<Vec<EndpointName>, ConfigError> {
        let list_var = vars::STRIPE_ENDPOINTS.name;
        let Some(raw) = self.set(&vars::STRIPE_ENDPOINTS) else {
            return Ok(Vec::new());
        };
        let mut seen = BTreeSet::new();
        let mut names = Vec::new();
        for entry in split_list(&raw).map_err(|e| invalid(list_var, e))? {
            let name = EndpointName::parse(entry).map_err(|e| invalid(list_var, e))?;
            if !seen.insert(name.clone()) {
                return Err(invalid(list_var, format!("`{name}` is listed twice")));
            }
            names.push(name);
        }
        Ok(names)
    }

    /// The first endpoint of kind `connect`, the default one first; from the kinds alone.
    pub(super) fn connect_endpoint(&self) -> Result<Option<EndpointName>, ConfigError> {
        if self.choice::<EndpointKind>(&vars::STRIPE_WEBHOOK_KIND)? == EndpointKind::Connect {
            return Ok(Some(EndpointName::default_endpoint()));
        }
        for name in self.endpoint_names()? {
            let kind: EndpointKind =
                self.endpoint_choice(&name, "KIND", &vars::STRIPE_WEBHOOK_KIND)?;
            if kind == EndpointKind::Connect {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    fn named_endpoints(&mut self) -> Result<Vec<EndpointConfig>, ConfigError> {
        let mut endpoints = Vec::new();
        for name in self.endpoint_names()? {
            let secret_var = name.var("SECRET");
            let secrets = match present(self.source.get(&secret_var)) {
                Some(raw) => self.webhook_secrets(&secret_var, raw.trim())?,
                None => {
                    return Err(ConfigError::Missing {
                        var: secret_var,
                        help: format!("the endpoint `{name}` of STRIPE_ENDPOINTS needs its signing secret(s), whsec_..."),
                    })
                }
            };
            let kind = self.endpoint_choice(&name, "KIND", &vars::STRIPE_WEBHOOK_KIND)?;
            let livemode =
                self.endpoint_choice(&name, "LIVEMODE", &vars::STRIPE_WEBHOOK_LIVEMODE)?;
            endpoints.push(EndpointConfig {
                name,
                secrets,
                kind,
                livemode,
            });
        }
        Ok(endpoints)
    }

    /// A named endpoint's `_KIND`/`_LIVEMODE`: its own variable, else the table's default of
    /// the default endpoint's variable (not its value: each endpoint is configured alone).
    fn endpoint_choice<E: ValueEnum>(
        &self,
        name: &EndpointName,
        suffix: &str,
        like: &Var,
    ) -> Result<E, ConfigError> {
        let var = name.var(suffix);
        match present(self.source.get(&var)) {
            Some(value) => parse_choice(&var, value.trim()),
            None => match like.default {
                DefaultValue::Value(v) => parse_choice(like.name, v),
                _ => Err(invalid(&var, "has no default")),
            },
        }
    }
}

fn parse_choice<E: ValueEnum>(var: &str, text: &str) -> Result<E, ConfigError> {
    E::from_str(text, false).map_err(|_| {
        let words: Vec<String> = E::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        invalid(var, format!("`{text}` is not one of {}", words.join(", ")))
    })
}

/// An `http://` or `https://` URL with a host.
fn http_url(var: &str, text: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(text).map_err(|e| invalid(var, format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(invalid(
            var,
            "must be an http:// or https:// URL with a host",
        ));
    }
    Ok(url)
}

/// Settings that are not variables: held here, once.
mod fixed {
    use std::time::Duration;

    pub const ADMIT_QUEUE_DEPTH: usize = 8192;
    pub const PROCESS_RETRY_CAP: Duration = Duration::from_secs(3600);
    pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
    pub const ACTION_RETRY_CAP: Duration = Duration::from_secs(15 * 60);
    pub const ACTION_POLL_INTERVAL: Duration = Duration::from_millis(500);
    pub const STRIPE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    pub const ACTION_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EndpointKind, LivemodePolicy};

    const SECRET: (&str, &str) = ("STRIPE_WEBHOOK_SECRET", "whsec_test");

    fn load_pairs(pairs: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        load(&pairs)
    }

    fn config(pairs: &[(&str, &str)]) -> Config {
        load_pairs(pairs).expect("valid").config
    }

    fn refusal(pairs: &[(&str, &str)]) -> String {
        load_pairs(pairs).expect_err("refused").to_string()
    }

    #[test]
    fn every_default() {
        let c = config(&[SECRET]);
        assert_eq!(c.database_url, DatabaseUrl::default_sqlite());
        assert_eq!(c.bind, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(c.webhook_kind, EndpointKind::Account);
        assert_eq!(c.webhook_livemode, LivemodePolicy::Any);
        assert!(c.named_endpoints.is_empty());
        assert_eq!(c.tolerance_secs, 300);
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert!(c.stripe_secret_key.is_none());
        assert_eq!(c.stripe_api_base, "https://api.stripe.com");
        assert_eq!(c.durability, Durability::Full);
        assert_eq!(c.pool_size, 8);
        assert_eq!(c.database_wait, Duration::from_secs(5));
        assert_eq!(c.http_workers, 0);
        assert_eq!(c.client_request_timeout, Duration::from_secs(10));
        assert!(c.api_tokens.is_empty() && c.admin_tokens.is_empty());
        assert!(c.notify.is_none());
        assert_eq!(c.reconcile_interval, None);

        let a = c.admission;
        assert_eq!(
            (a.max_batch, a.max_wait, a.writers, a.queue_depth),
            (512, Duration::ZERO, 1, 8192)
        );
        let p = c.processor;
        assert_eq!(p.batch_size, 500);
        assert_eq!(p.max_attempts, 8);
        assert_eq!(p.retry_base, Duration::from_secs(1));
        assert_eq!(p.retry_cap, Duration::from_secs(3600));
        assert_eq!(p.poll_interval, Duration::from_secs(1));
        assert_eq!(p.gather, Duration::from_millis(10));
        assert_eq!(p.checkout_expiry, Duration::from_secs(3600));
        assert_eq!(p.sweep_interval, Duration::from_secs(30));
        assert_eq!(p.workers, 1);
        assert_eq!(p.max_transaction, Duration::from_millis(20));
        assert_eq!(p.nice, 19);
        let x = c.actions;
        assert_eq!((x.max_rps, x.burst), (20.0, 20.0));
        assert_eq!(x.max_attempts, 10);
        assert_eq!(x.retry_base, Duration::from_secs(2));
        assert_eq!(x.retry_cap, Duration::from_secs(900));
        assert_eq!(x.poll_interval, Duration::from_millis(500));
        assert_eq!(x.concurrency, 4);
        assert_eq!(x.lease, Duration::from_secs(120));
        assert_eq!(x.request_timeout, Duration::from_secs(30));
        assert_eq!(x.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn every_default_of_the_table_is_valid() {
        for var in vars::ALL {
            if let DefaultValue::Value(v) = var.default {
                let pairs = [SECRET, (var.name, v)];
                assert!(load(&pairs).is_ok(), "{}={v}", var.name);
            }
        }
    }

    #[test]
    fn sub_configs_default_to_the_table() {
        let c = config(&[SECRET]);
        assert_eq!(
            format!("{:?}", ProcessorConfig::default()),
            format!("{:?}", c.processor)
        );
        assert_eq!(
            format!("{:?}", AdmissionConfig::default()),
            format!("{:?}", c.admission)
        );
        assert_eq!(
            format!("{:?}", ActionConfig::default()),
            format!("{:?}", c.actions)
        );
    }

    #[test]
    fn backend_defaults_follow_the_database() {
        let c = config(&[SECRET, ("DATABASE_URL", "postgres://u@h/db")]);
        assert_eq!(c.admission.writers, 4);
        assert_eq!(c.processor.workers, 2);
        let c = config(&[SECRET, ("DATABASE_URL", "/tmp/x.db")]);
        assert_eq!(c.admission.writers, 1);
        assert_eq!(c.processor.workers, 1);
        // Set values win over backend defaults.
        let c = config(&[
            SECRET,
            ("DATABASE_URL", "postgres://u@h/db"),
            ("ADMIT_WRITERS", "2"),
            ("PROCESS_WORKERS", "3"),
        ]);
        assert_eq!((c.admission.writers, c.processor.workers), (2, 3));
    }

    #[test]
    fn values_are_read_and_blank_ones_are_unset() {
        let c = config(&[
            SECRET,
            ("BIND", "0.0.0.0:9000"),
            ("PROCESS_POLL_MS", " 20 "),
            ("PROCESS_GATHER_MS", "0"),
            ("CHECKOUT_EXPIRY_MINS", "2"),
            ("SQLITE_DURABILITY", "normal"),
            ("STRIPE_MAX_RPS", "0.5"),
            ("STRIPE_SECRET_KEY", "sk_test_x"),
            ("RECONCILE_INTERVAL_SECS", "300"),
            ("HTTP_WORKERS", ""),
        ]);
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.processor.poll_interval, Duration::from_millis(20));
        assert_eq!(c.processor.gather, Duration::ZERO);
        assert_eq!(c.processor.checkout_expiry, Duration::from_secs(120));
        assert_eq!(c.durability, Durability::Normal);
        assert_eq!((c.actions.max_rps, c.actions.burst), (0.5, 1.0));
        assert!(c.stripe_secret_key.is_some());
        assert_eq!(c.reconcile_interval, Some(Duration::from_secs(300)));
        assert_eq!(c.http_workers, 0);
    }

    #[test]
    fn flags_win_over_the_environment() {
        let flags = [("PROCESS_BATCH_SIZE", "7")];
        let env = [
            SECRET,
            ("PROCESS_BATCH_SIZE", "9"),
            ("ADMIT_MAX_BATCH", "3"),
        ];
        let c = load(&Layered(&flags, &env)).expect("valid").config;
        assert_eq!(c.processor.batch_size, 7);
        assert_eq!(
            c.admission.max_batch, 3,
            "the environment fills in the rest"
        );
    }

    #[test]
    fn out_of_range_values_are_refused_naming_the_variable_not_clamped() {
        for (var, value, says) in [
            ("DATABASE_POOL_SIZE", "1", "1 is out of range: 2–1000"),
            ("DATABASE_WAIT_MS", "99", "out of range"),
            ("PROCESS_NICE", "20", "20 is out of range: 0–19"),
            ("PROCESS_BATCH_SIZE", "0", "out of range"),
            ("PROCESS_MAX_ATTEMPTS", "0", "out of range"),
            ("PROCESS_POLL_MS", "9", "out of range"),
            ("PROCESS_WORKERS", "0", "out of range"),
            ("PROCESS_MAX_TXN_MS", "0", "out of range"),
            ("ADMIT_MAX_BATCH", "0", "out of range"),
            ("ADMIT_WRITERS", "0", "out of range"),
            ("ACTION_MAX_ATTEMPTS", "0", "out of range"),
            ("ACTION_CONCURRENCY", "0", "out of range"),
            ("ACTION_LEASE_SECS", "0", "out of range"),
            ("STRIPE_MAX_RPS", "0.01", "out of range"),
            ("STRIPE_MAX_RPS", "inf", "not a number"),
            ("WEBHOOK_TOLERANCE_SECS", "-1", "out of range"),
            ("MAX_BODY_BYTES", "10", "out of range"),
            ("CHECKOUT_EXPIRY_MINS", "0", "out of range"),
            ("RECONCILE_INTERVAL_SECS", "0", "out of range"),
            ("HTTP_WORKERS", "many", "`many` is not a whole number"),
            ("PROCESS_POLL_MS", "1.5", "not a whole number"),
            ("BIND", "localhost", "not an address:port"),
            (
                "SQLITE_DURABILITY",
                "fast",
                "`fast` is not one of full, normal",
            ),
            (
                "STRIPE_WEBHOOK_KIND",
                "platform",
                "not one of account, connect",
            ),
            (
                "STRIPE_WEBHOOK_LIVEMODE",
                "prod",
                "not one of any, live, test",
            ),
            ("STRIPE_API_BASE", "ftp://x", "http"),
            ("STRIPE_API_BASE", "not a url", "not a URL"),
            (
                "DATABASE_URL",
                "mysql://u:pw@h/db",
                "not a supported backend",
            ),
            ("DATABASE_URL", "postgres://", "names no database"),
        ] {
            let message = refusal(&[SECRET, (var, value)]);
            assert!(message.starts_with(&format!("{var}: ")), "{message}");
            assert!(message.contains(says), "{var}={value}: {message}");
        }
    }

    #[test]
    fn a_missing_webhook_secret_says_where_to_get_one() {
        let message = refusal(&[]);
        assert!(
            message.starts_with("STRIPE_WEBHOOK_SECRET is not set"),
            "{message}"
        );
        assert!(message.contains("stripe listen") && message.contains("dashboard"));
        assert_eq!(
            message,
            crate::config::MISSING_SECRET_HELP,
            "the same words as before"
        );
        assert_eq!(refusal(&[("STRIPE_WEBHOOK_SECRET", " ")]), message);
    }

    #[test]
    fn api_keys_as_webhook_secrets_are_refused_other_shapes_warned() {
        for key in ["sk_test_51abc", "rk_live_x", "pk_test_x"] {
            let message = refusal(&[("STRIPE_WEBHOOK_SECRET", &format!("whsec_ok,{key}"))]);
            assert!(
                message.contains("STRIPE_SECRET_KEY") && message.contains("whsec_"),
                "{message}"
            );
            assert!(!message.contains(key), "never quoted: {message}");
        }
        let loaded = load_pairs(&[("STRIPE_WEBHOOK_SECRET", "whsec_a,plain")]).expect("accepted");
        assert_eq!(loaded.config.webhook_secrets.len(), 2);
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("entry #2") && !loaded.warnings[0].contains("plain"));
        assert!(load_pairs(&[SECRET]).expect("valid").warnings.is_empty());
        assert!(
            refusal(&[("STRIPE_WEBHOOK_SECRET", "whsec_a,,whsec_b")]).contains("entry #2 is empty")
        );
    }

    #[test]
    fn a_stripe_key_of_another_shape_is_warned() {
        for (key, hint) in [
            ("whsec_x", "STRIPE_WEBHOOK_SECRET"),
            ("pk_test_x", "front end"),
            ("x", "sk_"),
        ] {
            let loaded = load_pairs(&[SECRET, ("STRIPE_SECRET_KEY", key)]).expect("accepted");
            assert_eq!(loaded.warnings.len(), 1, "{key}");
            assert!(loaded.warnings[0].contains(hint), "{}", loaded.warnings[0]);
        }
        for key in ["sk_test_x", "rk_live_x"] {
            assert!(load_pairs(&[SECRET, ("STRIPE_SECRET_KEY", key)])
                .expect("ok")
                .warnings
                .is_empty());
        }
    }

    #[test]
    fn tokens_rotate_and_refuse_empty_entries() {
        let c = config(&[SECRET, ("API_TOKEN", "a1, a2"), ("ADMIN_TOKEN", "b1")]);
        assert_eq!(
            c.api_tokens.iter().map(|t| t.expose()).collect::<Vec<_>>(),
            ["a1", "a2"]
        );
        assert_eq!(c.admin_tokens.len(), 1);
        assert_eq!(
            refusal(&[SECRET, ("API_TOKEN", "a1,,a2")]),
            "API_TOKEN: entry #2 is empty"
        );
        assert_eq!(
            refusal(&[SECRET, ("ADMIN_TOKEN", "b1,")]),
            "ADMIN_TOKEN: entry #2 is empty"
        );
        assert!(refusal(&[SECRET, ("API_TOKEN", "a b")]).starts_with("API_TOKEN: entry #1"));
        let message = refusal(&[SECRET, ("API_TOKEN", "shared"), ("ADMIN_TOKEN", "x,shared")]);
        assert!(
            message.starts_with("ADMIN_TOKEN:") && !message.contains("shared"),
            "{message}"
        );
    }

    #[test]
    fn notifications_need_an_http_url_and_a_valid_secret() {
        const GOOD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let c = config(&[
            SECRET,
            ("NOTIFY_URL", "https://app.example/hooks"),
            ("NOTIFY_SECRET", GOOD),
        ]);
        let notify = c.notify.expect("configured");
        assert_eq!(notify.url.as_url().as_str(), "https://app.example/hooks");
        assert_eq!(notify.secrets.len(), 1);
        let rotating = format!("{GOOD},{GOOD}");
        let c = config(&[
            SECRET,
            ("NOTIFY_URL", "http://127.0.0.1:9/x"),
            ("NOTIFY_SECRET", &rotating),
        ]);
        assert_eq!(c.notify.expect("configured").secrets.len(), 2);

        assert!(refusal(&[SECRET, ("NOTIFY_URL", "https://a.example")])
            .starts_with("NOTIFY_SECRET is not set"));
        assert!(refusal(&[
            SECRET,
            ("NOTIFY_URL", "ftp://a.example"),
            ("NOTIFY_SECRET", GOOD)
        ])
        .starts_with("NOTIFY_URL: must be an http"));
        let short = refusal(&[
            SECRET,
            ("NOTIFY_URL", "https://a.example"),
            ("NOTIFY_SECRET", "whsec_AAAA"),
        ]);
        assert!(
            short.starts_with("NOTIFY_SECRET: entry #1 decodes to 3 bytes"),
            "{short}"
        );
        assert!(!short.contains("AAAA"));
        assert!(refusal(&[
            SECRET,
            ("NOTIFY_URL", "https://a.example"),
            ("NOTIFY_SECRET", "sk_x")
        ])
        .contains("whsec_"));
        let loaded = load_pairs(&[SECRET, ("NOTIFY_SECRET", GOOD)]).expect("accepted");
        assert!(loaded.config.notify.is_none());
        assert!(loaded.warnings[0].contains("NOTIFY_URL"));
    }

    #[test]
    fn named_endpoints_read_their_own_variables() {
        let c = config(&[
            SECRET,
            ("STRIPE_WEBHOOK_KIND", "connect"),
            ("STRIPE_WEBHOOK_LIVEMODE", "live"),
            ("STRIPE_ENDPOINTS", "eu-shop, connect2"),
            (
                "STRIPE_ENDPOINT_EU_SHOP_SECRET",
                "whsec_eu_old,whsec_eu_new",
            ),
            ("STRIPE_ENDPOINT_CONNECT2_SECRET", "whsec_c"),
            ("STRIPE_ENDPOINT_CONNECT2_KIND", "connect"),
            ("STRIPE_ENDPOINT_CONNECT2_LIVEMODE", "test"),
        ]);
        let all = c.endpoints();
        assert_eq!(all.len(), 3);
        assert!(all[0].name.is_default());
        assert_eq!(all[0].secrets, c.webhook_secrets);
        assert_eq!(
            (all[0].kind, all[0].livemode),
            (EndpointKind::Connect, LivemodePolicy::Live)
        );
        assert_eq!(all[1].name.as_str(), "eu-shop");
        assert_eq!(all[1].secrets.len(), 2);
        // Each endpoint is configured alone: the default endpoint's kind is not inherited.
        assert_eq!(
            (all[1].kind, all[1].livemode),
            (EndpointKind::Account, LivemodePolicy::Any)
        );
        assert_eq!(
            (all[2].kind, all[2].livemode),
            (EndpointKind::Connect, LivemodePolicy::Test)
        );
        assert_eq!(c.endpoint("eu-shop").map(|e| e.secrets.len()), Some(2));
        assert!(c.endpoint("nope").is_none());
    }

    #[test]
    fn reconciliation_records_connected_events_under_the_first_connect_endpoint() {
        let named = [
            ("STRIPE_ENDPOINTS", "shop,connect-live,connect-test"),
            ("STRIPE_ENDPOINT_SHOP_SECRET", "whsec_s"),
            ("STRIPE_ENDPOINT_CONNECT_LIVE_SECRET", "whsec_l"),
            ("STRIPE_ENDPOINT_CONNECT_LIVE_KIND", "connect"),
            ("STRIPE_ENDPOINT_CONNECT_TEST_SECRET", "whsec_t"),
            ("STRIPE_ENDPOINT_CONNECT_TEST_KIND", "connect"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
            named.iter().chain(extra).copied().collect()
        };
        let c = config(&with(&[SECRET]));
        assert_eq!(
            c.connect_endpoint().map(|n| n.to_string()).as_deref(),
            Some("connect-live")
        );
        // The CLI reads the same from names and kinds alone, without any signing secret.
        let pairs: Vec<(String, String)> = with(&[])
            .into_iter()
            .filter(|(k, _)| !k.ends_with("_SECRET"))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let found = crate::config::load_connect_endpoint(&pairs).expect("no secret needed");
        assert_eq!(
            found.map(|n| n.to_string()).as_deref(),
            Some("connect-live")
        );
        // A default endpoint of kind connect comes first; no connect endpoint at all: none.
        let c = config(&with(&[SECRET, ("STRIPE_WEBHOOK_KIND", "connect")]));
        assert!(c.connect_endpoint().is_some_and(|n| n.is_default()));
        assert_eq!(config(&[SECRET]).connect_endpoint(), None);
    }

    #[test]
    fn bad_endpoint_settings_stop_start_up_naming_the_variable() {
        for (pairs, starts) in [
            (
                vec![("STRIPE_ENDPOINTS", "shop")],
                "STRIPE_ENDPOINT_SHOP_SECRET is not set",
            ),
            (
                vec![("STRIPE_ENDPOINTS", "Shop")],
                "STRIPE_ENDPOINTS: `Shop` is not a valid endpoint name",
            ),
            (
                vec![("STRIPE_ENDPOINTS", "default")],
                "STRIPE_ENDPOINTS: `default` is the endpoint",
            ),
            (
                vec![("STRIPE_ENDPOINTS", "a,,b")],
                "STRIPE_ENDPOINTS: entry #2 is empty",
            ),
            (
                vec![
                    ("STRIPE_ENDPOINTS", "a,a"),
                    ("STRIPE_ENDPOINT_A_SECRET", "whsec_a"),
                ],
                "STRIPE_ENDPOINTS: `a` is listed twice",
            ),
            (
                vec![
                    ("STRIPE_ENDPOINTS", "a"),
                    ("STRIPE_ENDPOINT_A_SECRET", "sk_live_x"),
                ],
                "STRIPE_ENDPOINT_A_SECRET: this is a Stripe API key",
            ),
            (
                vec![
                    ("STRIPE_ENDPOINTS", "a"),
                    ("STRIPE_ENDPOINT_A_SECRET", "whsec_a"),
                    ("STRIPE_ENDPOINT_A_KIND", "both"),
                ],
                "STRIPE_ENDPOINT_A_KIND: `both` is not one of account, connect",
            ),
            (
                vec![
                    ("STRIPE_ENDPOINTS", "a"),
                    ("STRIPE_ENDPOINT_A_SECRET", "whsec_a"),
                    ("STRIPE_ENDPOINT_A_LIVEMODE", "yes"),
                ],
                "STRIPE_ENDPOINT_A_LIVEMODE: `yes` is not one of any, live, test",
            ),
        ] {
            let mut pairs = pairs;
            pairs.push(SECRET);
            let message = refusal(&pairs);
            assert!(message.starts_with(starts), "{message}");
        }
        let loaded = load_pairs(&[
            SECRET,
            ("STRIPE_ENDPOINTS", "a"),
            ("STRIPE_ENDPOINT_A_SECRET", "odd"),
        ])
        .expect("ok");
        assert!(loaded.warnings[0].starts_with("STRIPE_ENDPOINT_A_SECRET: entry #1"));
    }

    #[test]
    fn the_readme_lists_every_variable_once_with_its_default_and_range() {
        let readme = include_str!("../../README.md");
        for var in vars::ALL {
            let row = format!(
                "| `{}` | {} | {} |",
                var.name,
                var.default_text(),
                var.range_text()
            );
            assert_eq!(
                readme.matches(&row).count(),
                1,
                "README lacks the row {row}"
            );
            let any_row = format!("| `{}` |", var.name);
            assert_eq!(
                readme.matches(&any_row).count(),
                1,
                "{} is listed more than once",
                var.name
            );
        }
    }
}
