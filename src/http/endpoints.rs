//! The webhook endpoints the HTTP server answers, by name: each one's configuration (secrets,
//! kind, livemode policy) and its metric handles, built once at start-up.

use std::collections::HashMap;

use crate::config::EndpointConfig;
use crate::metrics::{Metrics, WebhookMetrics};

/// One endpoint as the webhook handler uses it.
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    pub config: EndpointConfig,
    pub metrics: WebhookMetrics,
}

/// Every configured endpoint, `default` included.
#[derive(Debug, Clone, Default)]
pub struct WebhookEndpoints {
    by_name: HashMap<String, WebhookEndpoint>,
}

impl WebhookEndpoints {
    /// `configs` with their handles in `metrics` (built by [`Metrics::new`] with the same
    /// endpoints; see [`metric_names`]).
    pub fn new(configs: Vec<EndpointConfig>, metrics: &Metrics) -> Self {
        let by_name = configs
            .into_iter()
            .filter_map(|config| {
                let handles = metrics.webhook(config.name.as_str())?;
                Some((
                    config.name.as_str().to_owned(),
                    WebhookEndpoint {
                        config,
                        metrics: handles,
                    },
                ))
            })
            .collect();
        Self { by_name }
    }

    /// The endpoint called `name`, if configured.
    pub fn get(&self, name: &str) -> Option<&WebhookEndpoint> {
        self.by_name.get(name)
    }
}

/// What [`Metrics::new`] needs of `configs`: each name and its number of secrets.
pub fn metric_names(configs: &[EndpointConfig]) -> Vec<(&str, usize)> {
    configs
        .iter()
        .map(|c| (c.name.as_str(), c.secrets.len()))
        .collect()
}
