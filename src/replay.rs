//! `payhook replay`: signs event files with the current time exactly as Stripe does and POSTs
//! them to any endpoint, like the Stripe CLI's resend.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::config::WebhookSecret;
use crate::store::now_secs;
use crate::stripe::signature;

/// One delivery's result.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: PathBuf,
    pub status: u16,
    pub body: String,
}

/// Expands directories into their `*.json` files, sorted by name; files are kept as given.
pub fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Signs and POSTs one file's exact bytes.
pub async fn deliver(
    client: &reqwest::Client,
    url: &str,
    secret: &WebhookSecret,
    path: &Path,
) -> anyhow::Result<Delivery> {
    let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let header = signature::header_for(&body, secret.expose(), now_secs());
    let response = client
        .post(url)
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Stripe-Signature", header)
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok(Delivery {
        path: path.to_owned(),
        status,
        body,
    })
}

/// Replays every file in order, printing one line per delivery; returns the deliveries.
pub async fn replay(
    paths: &[PathBuf],
    url: &str,
    secret: &WebhookSecret,
) -> anyhow::Result<Vec<Delivery>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("payhook-replay/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut deliveries = Vec::new();
    for path in collect_files(paths)? {
        let delivery = deliver(&client, url, secret, &path).await?;
        println!(
            "{} -> {} {}",
            delivery.path.display(),
            delivery.status,
            delivery.body.trim()
        );
        deliveries.push(delivery);
    }
    Ok(deliveries)
}
