//! `Application::build`: wires the store, the inbox, the outbox and the HTTP server
//! together; `run_until_stopped` supervises them.
//!
//! Every background task (processor, sweeper, outbox runner, reconciliation, admission writers) runs for the
//! life of the process. One that ends before shutdown has died: payhook then reports it on
//! `/readyz`, stops accepting deliveries (nothing is acknowledged after), and returns an
//! error so `serve` exits non-zero and the process supervisor restarts it. Limping on would
//! acknowledge deliveries that nothing applies, or answer 503 for a dead writer's share of
//! them forever.

use std::collections::HashMap;
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use crate::inbox::admission::Committed;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use futures_util::FutureExt;
use log::{error, info, warn};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::app::notifications::Notifications;
use crate::app::AppApi;
use crate::config::{self, Config, StripeAccess};
use crate::health::Health;
use crate::http;
use crate::http::admin::{AdminState, AdminTokens};
use crate::http::api::ApiState;
use crate::inbox::admission::{Admitter, Writers};
use crate::inbox::reconcile::{self, Reconciler};
use crate::inbox::{processor, sweeper};
use crate::metrics::Metrics;
use crate::outbox::runner::{Kind, RetryPolicy, Runner};
use crate::outbox::save_card;
use crate::store::outbox::{count_items_by_status, OutboxStatus};
use crate::store::{checkpointer, BackgroundThread, Pool, PoolOptions, WalCheckpoints};
use crate::stripe::gateway::StripeGateway;

/// Whether the background workers run by themselves (`serve`), or only when a test drains
/// them ([`Drain`]), so a test sees exactly the work it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Background,
    Manual,
}

/// A running payhook: HTTP server plus its supervised background tasks.
pub struct Application {
    port: u16,
    server: Server,
    pool: Pool,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: Tasks,
    writers: Writers,
    /// For [`Application::crash_admission_writer_for_test`]; dropped before the writers are
    /// joined (they end when every [`Admitter`] is gone).
    admitter: Admitter,
    drain: Drain,
}

/// The background tasks, each ending with its name and how it ended.
#[derive(Default)]
struct Tasks {
    set: JoinSet<(String, Result<(), String>)>,
    handles: HashMap<String, AbortHandle>,
    /// Names by task id, for a task that ends without returning its name (aborted).
    names: HashMap<tokio::task::Id, String>,
}

impl Tasks {
    fn spawn(
        &mut self,
        name: String,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let label = name.clone();
        let handle = self.set.spawn(async move {
            let ended = AssertUnwindSafe(task).catch_unwind().await;
            (label, ended.map_err(|panic| panic_message(&panic)))
        });
        self.names.insert(handle.id(), name.clone());
        self.handles.insert(name, handle);
    }

    /// The next task to end: before shutdown, a death.
    async fn next_end(&mut self) -> (String, String) {
        match self.set.join_next_with_id().await {
            Some(Ok((_, (name, Ok(()))))) => (name, "it returned".to_owned()),
            Some(Ok((_, (name, Err(panic))))) => (name, format!("it panicked: {panic}")),
            Some(Err(e)) => {
                let name = self.names.get(&e.id()).cloned();
                (name.unwrap_or_else(|| "a task".to_owned()), e.to_string())
            }
            None => std::future::pending().await,
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

impl Application {
    /// Connects to the database, migrates it, starts the workers and binds the listener
    /// (port 0 picks a free one, as tests do).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Workers::Background).await
    }

    pub async fn build_with(mut config: Config, workers: Workers) -> anyhow::Result<Self> {
        config.processor.notifications = Notifications::for_config(&config);
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
                // The checkpointer below runs whatever the workers do.
                wal_checkpoints: WalCheckpoints::Background,
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
        let endpoints = config.endpoints();
        let metrics = Arc::new(Metrics::new(&http::endpoints::metric_names(&endpoints)));
        let stripe = stripe_gateway(&config, metrics.clone())?;
        anyhow::ensure!(
            config.reconcile_interval.is_none() || stripe.is_some(),
            "RECONCILE_INTERVAL_SECS is set, but reconciliation lists events with Stripe's API \
             and STRIPE_SECRET_KEY is not set"
        );
        let runner = Arc::new(Runner::new(
            pool.clone(),
            config.actions,
            outbox_kinds(&config, stripe.clone(), &metrics)?,
        ));
        if !runner.kinds().contains(&save_card::KIND) {
            let pending = pool
                .run(|conn| count_items_by_status(conn, &[save_card::KIND]))
                .await?
                .into_iter()
                .filter(|(status, _)| *status == OutboxStatus::Pending)
                .map(|(_, n)| n)
                .sum::<i64>();
            warn!("STRIPE_SECRET_KEY is not set: events are received and applied, but Stripe side effects (saving cards to customers) wait until a key is configured; {pending} pending");
        }

        let health = Arc::new(Health::default());
        let committed = Arc::new(Committed::new());
        let (admitter, writers) = Admitter::start(
            pool.clone(),
            config.admission,
            committed.clone(),
            health.clone(),
        )
        .context("starting the admission writer")?;
        let listener =
            TcpListener::bind(config.bind).with_context(|| format!("binding {}", config.bind))?;
        let port = listener.local_addr()?.port();
        let api = web::Data::new(ApiState::new(
            config.api_tokens.clone(),
            Arc::new(AppApi::new(pool.clone(), stripe.clone())),
        ));
        if config.api_tokens.is_empty() {
            info!("app API off: /api/v1 answers 404; set API_TOKEN (comma-separated while rotating) to enable it");
        } else {
            info!(
                "app API on at /api/v1 ({} token{})",
                config.api_tokens.len(),
                if config.api_tokens.len() == 1 {
                    ""
                } else {
                    "s"
                }
            );
        }
        let reconciler = stripe.clone().map(|stripe| {
            Reconciler::new(pool.clone(), stripe, admitter.clone(), metrics.clone())
                .with_connect_endpoint(config.connect_endpoint())
        });
        let admin = AdminState {
            tokens: AdminTokens::new(&config.admin_tokens),
            stripe: stripe.clone(),
            reconciler: reconciler.clone(),
        };
        let state = http::AppState {
            endpoints: Arc::new(http::endpoints::WebhookEndpoints::new(endpoints, &metrics)),
            tolerance_secs: config.tolerance_secs,
            max_body_bytes: config.max_body_bytes,
            body_timeout: config.client_request_timeout,
            admitter: admitter.clone(),
            pool: pool.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            admin,
        };
        let state = web::Data::new(state);
        let server = build_server(&config, listener, move |cfg| {
            cfg.app_data(state.clone()).app_data(api.clone());
            http::routes(cfg);
        })?;

        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::default();
        if !pool.is_postgres() {
            tasks.spawn(
                "checkpointer".to_owned(),
                checkpointer::run(pool.clone(), shutdown.clone()),
            );
        }
        if workers == Workers::Background {
            tasks.spawn(
                "sweeper".to_owned(),
                sweeper::run(
                    pool.clone(),
                    config.processor,
                    metrics.clone(),
                    shutdown.clone(),
                ),
            );
            for n in 0..config.processor.workers {
                let name = format!("processor-{n}");
                let thread =
                    BackgroundThread::start(&format!("payhook-{name}"), config.processor.nice)
                        .context("starting a processor thread")?;
                tasks.spawn(
                    name,
                    processor::run(
                        pool.clone(),
                        config.processor,
                        processor::Role::of(n),
                        thread,
                        committed.clone(),
                        metrics.clone(),
                        shutdown.clone(),
                    ),
                );
            }
            if !runner.kinds().is_empty() {
                tasks.spawn("outbox".to_owned(), runner.clone().run(shutdown.clone()));
            }
            if let (Some(interval), Some(reconciler)) = (config.reconcile_interval, &reconciler) {
                tasks.spawn(
                    "reconcile".to_owned(),
                    reconcile::run_periodically(reconciler.clone(), interval, shutdown.clone()),
                );
            }
        }
        info!(
            "listening on {}:{port}, webhook endpoint POST /webhooks/stripe",
            config.bind.ip()
        );
        Ok(Self {
            port,
            server,
            drain: Drain {
                pool: pool.clone(),
                processor: config.processor,
                runner,
                metrics: metrics.clone(),
            },
            metrics,
            pool,
            health,
            shutdown,
            tasks,
            writers,
            admitter,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs the workers by hand (for tests built with [`Workers::Manual`]).
    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }

    /// Stops the HTTP server gracefully (in-flight requests finish).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Kills a background task as a crash would, so tests can check the supervision.
    #[doc(hidden)]
    pub fn abort_task_for_test(&self, name: &str) -> bool {
        self.tasks
            .handles
            .get(name)
            .map(AbortHandle::abort)
            .is_some()
    }

    /// Makes an admission writer thread panic as a bug would, so tests can check the
    /// supervision of the writers.
    #[doc(hidden)]
    pub async fn crash_admission_writer_for_test(&self) {
        self.admitter.crash_a_writer_for_test().await;
    }

    /// Serves until the server stops (SIGINT/SIGTERM or [`ServerHandle::stop`]), then stops
    /// the workers and waits for the admission writers to drain. If a background task dies
    /// first, stops serving and returns an error naming it.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            server,
            health,
            shutdown,
            mut tasks,
            mut writers,
            drain,
            admitter,
            ..
        } = self;
        let handle = server.handle();
        let mut server = std::pin::pin!(server);
        let death = tokio::select! {
            result = &mut server => {
                result?;
                None
            }
            (name, why) = tasks.next_end() => Some((name, why)),
            name = writers.exited() => Some((name, "the thread ended".to_owned())),
        };
        if let Some((name, why)) = &death {
            error!("background task {name} stopped ({why}): payhook stops accepting deliveries and exits so that its supervisor restarts it");
            let _ = health.report("tasks", format!("background task {name} stopped"));
            // Stop accepting first, so nothing is acknowledged that nothing would apply. The
            // server future carries out the stop, so it is polled alongside: awaiting the stop
            // first waited for ever, and `serve` never exited.
            let (_, _) = tokio::join!(handle.stop(true), &mut server);
        }
        shutdown.cancel();
        drop((drain, admitter));
        let stopping = async { while tasks.set.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(30), stopping)
            .await
            .is_err()
        {
            warn!("background tasks did not stop within 30 s");
        }
        tokio::task::spawn_blocking(move || writers.join()).await?;
        match death {
            Some((name, why)) => anyhow::bail!("background task {name} stopped: {why}"),
            None => {
                info!("payhook stopped");
                Ok(())
            }
        }
    }
}

/// The process's one way to Stripe (every call behind one token bucket), when a key is
/// configured. Built before anything starts so a malformed key stops start-up.
fn stripe_gateway(
    config: &Config,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Option<Arc<StripeGateway>>> {
    let Some(access) = StripeAccess::from_config(config) else {
        return Ok(None);
    };
    let gateway = StripeGateway::connect(&access, metrics)
        .map_err(|e| anyhow::anyhow!("configuring the Stripe API client: {e}"))?;
    info!("Stripe calls go to {}", config.stripe_api_base);
    Ok(Some(Arc::new(gateway)))
}

/// The kinds of outbox work this process performs: those whose dependencies are
/// configured (saving cards needs a Stripe key, notifying the app needs `NOTIFY_URL`).
fn outbox_kinds(
    config: &Config,
    stripe: Option<Arc<StripeGateway>>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Vec<Arc<dyn Kind>>> {
    let mut kinds: Vec<Arc<dyn Kind>> = Vec::new();
    if let Some(stripe) = stripe {
        kinds.push(Arc::new(save_card::SaveCardKind::new(
            stripe.clone(),
            RetryPolicy::from_config(&config.actions),
        )));
        kinds.push(Arc::new(crate::outbox::thin_event::ThinEventKind::new(
            stripe,
            RetryPolicy::from_config(&config.actions),
            metrics.clone(),
        )));
    }
    if let Some(notify) = &config.notify {
        kinds.push(Arc::new(
            crate::outbox::notify::NotifyKind::new(notify)
                .context("configuring notifications to the app")?,
        ));
        info!("notifications to the app go to {:?}", notify.url);
    }
    Ok(kinds)
}

/// Runs the inbox and the outbox until neither has due work: what a test calls instead of
/// waiting for the background loops.
#[derive(Clone)]
pub struct Drain {
    pool: Pool,
    processor: config::ProcessorConfig,
    runner: Arc<Runner>,
    metrics: Arc<Metrics>,
}

impl Drain {
    /// Applies every due event and performs every due outbox item, repeatedly, until a
    /// round finds nothing due (work queued by a round is done by the next).
    pub async fn run_until_idle(&self) -> crate::store::StoreResult<()> {
        loop {
            let config = self.processor;
            let report = self
                .pool
                .run_pool(move |pool| processor::process_batch(pool, &config))
                .await?;
            report.record(&self.metrics);
            let performed = self.runner.run_until_idle().await?;
            if report.claimed == 0 && performed == 0 {
                return Ok(());
            }
        }
    }

    /// When the earliest pending work (an event, or an outbox item of a kind this process
    /// performs) is due, in unix milliseconds; `None` when nothing is pending.
    pub async fn next_due_ms(&self) -> crate::store::StoreResult<Option<i64>> {
        let kinds: Vec<&'static str> = self.runner.kinds().to_vec();
        self.pool
            .run(move |conn| {
                let events = crate::store::events::next_pending_at_ms(conn)?;
                let items = crate::store::outbox::next_pending_at_ms(conn, &kinds)?;
                Ok(events.into_iter().chain(items).min())
            })
            .await
    }

    /// Expires due checkouts now; returns how many.
    pub async fn sweep(&self, now: i64) -> crate::store::StoreResult<usize> {
        let expiry = self.processor.checkout_expiry.as_secs() as i64;
        let notifications = self.processor.notifications;
        let expired = self
            .pool
            .run_pool(move |pool| sweeper::sweep(pool, expiry, notifications, now))
            .await?;
        sweeper::record_expired(&self.metrics, expired);
        Ok(expired)
    }
}

/// The HTTP server with `serve`'s settings (timeouts, keep-alive, backlog, workers) around
/// the routes and data `configure` installs. Public for the verify-only reference receiver
/// (`tests/benches/verify_only.rs`), which must run on exactly these settings.
pub fn build_server(
    config: &Config,
    listener: TcpListener,
    configure: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
) -> anyhow::Result<Server> {
    let mut server = HttpServer::new(move || App::new().configure(configure.clone()))
        .client_request_timeout(config.client_request_timeout)
        .client_disconnect_timeout(Duration::from_secs(2))
        .keep_alive(Duration::from_secs(75))
        .backlog(2048)
        .shutdown_timeout(10);
    if config.http_workers > 0 {
        server = server.workers(config.http_workers);
    }
    Ok(server.listen(listener)?.run())
}
