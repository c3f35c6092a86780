//! `Application::build`: wires the store, the inbox, the outbox workers and the HTTP server
//! together, and runs them until the server stops.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use log::{info, warn};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::inbox::admission::{Admitter, Writers};
use crate::inbox::{background, processor, sweeper};
use crate::outbox::save_card as actions;
use crate::store::{Pool, PoolOptions};
use crate::{config, http, store, stripe};

/// A running payhook: HTTP server plus background processor and sweeper.
pub struct Application {
    port: u16,
    server: Server,
    pool: Pool,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    writers: Writers,
}

impl Application {
    /// Connects to the database, migrates it, starts the workers and binds the listener
    /// (port 0 picks a free one, as tests do).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.webhook_secrets.is_empty(),
            config::MISSING_SECRET_HELP
        );
        let pool = Pool::connect(
            &config.database_url,
            PoolOptions {
                max_size: config.pool_size,
                durability: config.durability,
                connect_timeout: config.database_wait,
            },
        )
        .with_context(|| format!("opening the database at {}", config.database_url))?;
        let migrated = {
            let pool = pool.clone();
            tokio::task::spawn_blocking(move || pool.migrate()).await??
        };
        info!(
            "database {} ready ({migrated} migrations applied)",
            config.database_url
        );
        // Built before anything starts so a malformed key stops start-up, not the worker.
        let stripe = match &config.stripe_secret_key {
            Some(key) => Some(
                stripe::client::StripeApi::with_timeout(
                    key.expose(),
                    &config.stripe_api_base,
                    config.actions.request_timeout,
                )
                .map_err(|e| anyhow::anyhow!("configuring the Stripe API client: {e}"))?,
            ),
            None => {
                let pending = {
                    let pool = pool.clone();
                    tokio::task::spawn_blocking(move || -> store::StoreResult<i64> {
                        let mut conn = pool.get()?;
                        Ok(store::outbox::count_actions_by_status(&mut conn)?
                            .into_iter()
                            .filter(|(s, _)| s == "pending")
                            .map(|(_, n)| n)
                            .sum())
                    })
                    .await??
                };
                warn!("STRIPE_SECRET_KEY is not set: events are received and applied, but Stripe side effects (saving cards to customers) wait until a key is configured; {pending} actions pending");
                None
            }
        };

        let committed = Arc::new(Notify::new());
        let (admitter, writers) =
            Admitter::start(pool.clone(), config.admission, committed.clone())
                .context("starting the admission writer")?;
        let listener =
            TcpListener::bind(config.bind).with_context(|| format!("binding {}", config.bind))?;
        let port = listener.local_addr()?.port();
        let server = build_server(&config, listener, admitter, pool.clone())?;

        let shutdown = CancellationToken::new();
        let mut tasks = vec![tokio::spawn(sweeper::run(
            pool.clone(),
            config.processor,
            shutdown.clone(),
        ))];
        for n in 0..config.processor.workers.max(1) {
            let thread = background::BackgroundThread::start(
                &format!("payhook-process-{n}"),
                config.processor.nice,
            )
            .context("starting a processor thread")?;
            tasks.push(tokio::spawn(processor::run(
                pool.clone(),
                config.processor,
                thread,
                committed.clone(),
                shutdown.clone(),
            )));
        }
        if let Some(api) = stripe {
            info!("Stripe side effects go to {}", config.stripe_api_base);
            let ctx = Arc::new(actions::ActionContext::new(
                pool.clone(),
                api,
                config.actions,
            ));
            tasks.push(tokio::spawn(actions::run(ctx, shutdown.clone())));
        }
        info!(
            "listening on {}:{port}, webhook endpoint POST /webhooks/stripe",
            config.bind.ip()
        );
        Ok(Self {
            port,
            server,
            pool,
            shutdown,
            tasks,
            writers,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// Stops the HTTP server gracefully (in-flight requests finish).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server stops (SIGINT/SIGTERM or [`ServerHandle::stop`]), then stops
    /// the workers and waits for the admission writers to drain.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let writers = self.writers;
        tokio::task::spawn_blocking(move || writers.join()).await?;
        info!("payhook stopped");
        Ok(result?)
    }
}

fn build_server(
    config: &Config,
    listener: TcpListener,
    admitter: Admitter,
    pool: Pool,
) -> anyhow::Result<Server> {
    let state = web::Data::new(http::AppState {
        secrets: Arc::new(config.webhook_secrets.clone()),
        tolerance_secs: config.tolerance_secs,
        max_body_bytes: config.max_body_bytes,
        body_timeout: config.client_request_timeout,
        admitter,
        pool,
    });
    let mut server =
        HttpServer::new(move || App::new().app_data(state.clone()).configure(http::routes))
            .client_request_timeout(config.client_request_timeout)
            .client_disconnect_timeout(std::time::Duration::from_secs(2))
            .keep_alive(std::time::Duration::from_secs(75))
            .backlog(2048)
            .shutdown_timeout(10);
    if config.http_workers > 0 {
        server = server.workers(config.http_workers);
    }
    Ok(server.listen(listener)?.run())
}
