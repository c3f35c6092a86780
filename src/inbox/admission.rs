//! Admission with group commit: many concurrent deliveries, one transaction per batch.
//!
//! HTTP handlers hand verified events to a writer thread and wait; the writer takes whatever
//! has queued up (at most `max_batch`), inserts it in one transaction with insert-if-absent on
//! the event id, commits, and only then answers each handler. One fsync thus covers a whole
//! batch, and no delivery is acknowledged before its row is durable. Batches form by
//! themselves under load (requests queue while the previous batch commits), so an idle
//! service answers at once and a busy one amortises its commits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use log::{debug, error, info, warn};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::AdmissionConfig;
use crate::health::Health;
use crate::store::events::{self, NewWebhookEvent};
use crate::store::{Pool, StoreError};

/// Whether the event was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Stored,
    /// The id was stored before: acknowledged again, not processed again.
    Duplicate,
}

/// The event could not be stored; the delivery must not be acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("storing the event failed: {0}")]
    Store(String),
    #[error("the admission writer is not running")]
    Stopped,
}

struct Request {
    event: NewWebhookEvent,
    reply: oneshot::Sender<Result<Admission, AdmitError>>,
}

/// What a writer thread receives.
// Every job but the tests' `Crash` is an `Admit`: boxing the request would add an allocation
// per delivered event to save the size of a variant that is never queued in production.
#[allow(clippy::large_enum_variant)]
enum Job {
    Admit(Request),
    /// Makes the writer panic, as a bug would: how tests check that a dead writer is noticed.
    Crash,
}

/// A handle for the HTTP handlers; cheap to clone.
#[derive(Clone)]
pub struct Admitter {
    queue: mpsc::Sender<Job>,
}

/// The one queue every writer takes from: whichever writer is free takes what has queued,
/// so a delivery never waits behind a busy writer while another one idles (with a queue per
/// writer, dealt round-robin, it did: a batch whose commit met a slow flush held every
/// delivery dealt to its writer meanwhile).
type SharedQueue = Arc<Mutex<mpsc::Receiver<Job>>>;

/// The writer threads, to be joined at shutdown (after every [`Admitter`] is dropped).
pub struct Writers {
    handles: Vec<JoinHandle<()>>,
    /// Gets a writer's name when its thread ends, whatever ended it (a panic included).
    exited: mpsc::UnboundedReceiver<String>,
}

impl Writers {
    /// Resolves when a writer thread ends. Writers end only once every [`Admitter`] is gone,
    /// so before shutdown this is a writer's death.
    pub async fn exited(&mut self) -> String {
        match self.exited.recv().await {
            Some(name) => name,
            // Every thread's guard is gone without saying so: cannot happen; wait forever
            // rather than report a death that did not happen.
            None => std::future::pending().await,
        }
    }

    pub fn join(self) {
        for handle in self.handles {
            if handle.join().is_err() {
                error!("an admission writer panicked");
            }
        }
    }
}

/// Says which writer ended when its thread ends, however it ends.
struct ExitGuard {
    name: String,
    exited: mpsc::UnboundedSender<String>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = self.exited.send(std::mem::take(&mut self.name));
    }
}

/// What admission tells the processors after each commit that stored new events: wake up
/// (apply them at once instead of at the next poll), and that deliveries are arriving.
#[derive(Debug, Default)]
pub struct Committed {
    wake: Notify,
    commits: AtomicU64,
}

impl Committed {
    pub fn new() -> Self {
        Self::default()
    }

    /// A commit stored new events.
    pub fn stored(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Resolves at the next [`Committed::stored`] (or at once if one came since the last).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// How many commits have stored new events: a change means deliveries are arriving.
    pub fn count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

impl Admitter {
    /// Starts the writer threads. `committed` hears of every commit that stored new events.
    pub fn start(
        pool: Pool,
        config: AdmissionConfig,
        committed: Arc<Committed>,
        health: Arc<Health>,
    ) -> std::io::Result<(Self, Writers)> {
        let writers = config.writers.max(1);
        let mut handles = Vec::with_capacity(writers);
        let (exit_tx, exited) = mpsc::unbounded_channel();
        let (queue, rx) = mpsc::channel(config.queue_depth.max(1) * writers);
        let rx: SharedQueue = Arc::new(Mutex::new(rx));
        for n in 0..writers {
            let (pool, committed, rx) = (pool.clone(), committed.clone(), rx.clone());
            let storage = StorageHealth {
                health: health.clone(),
            };
            let name = format!("payhook-admit-{n}");
            let guard = ExitGuard {
                name: name.clone(),
                exited: exit_tx.clone(),
            };
            let handle = std::thread::Builder::new().name(name).spawn(move || {
                let _guard = guard;
                write_loop(pool, config, rx, committed, storage)
            })?;
            handles.push(handle);
        }
        Ok((Self { queue }, Writers { handles, exited }))
    }

    /// Stores the event durably; resolves once its batch is committed.
    pub async fn admit(&self, event: NewWebhookEvent) -> Result<Admission, AdmitError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job::Admit(Request { event, reply }))
            .await
            .map_err(|_| AdmitError::Stopped)?;
        answer.await.map_err(|_| AdmitError::Stopped)?
    }

    /// Makes the first writer thread panic (see [`Job::Crash`]).
    #[doc(hidden)]
    pub async fn crash_a_writer_for_test(&self) {
        let _ = self.queue.send(Job::Crash).await;
    }
}

/// Takes the next batch's jobs: waits for a first one, then whatever has queued behind it
/// (at most `max` in all). `None` once every [`Admitter`] is gone and the queue is empty.
/// The queue's lock is released on return, before any job is looked at (a crash job
/// panics), so a dying writer never poisons it for the others.
fn next_jobs(rx: &SharedQueue, max: usize) -> Option<Vec<Job>> {
    let mut rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
    let first = rx.blocking_recv()?;
    Some(
        std::iter::once(first)
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            .take(max.max(1))
            .collect(),
    )
}

fn write_loop(
    pool: Pool,
    config: AdmissionConfig,
    rx: SharedQueue,
    committed: Arc<Committed>,
    storage: StorageHealth,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(config.max_batch);
    while let Some(jobs) = next_jobs(&rx, config.max_batch) {
        batch.extend(jobs.into_iter().map(Job::request));
        if !config.max_wait.is_zero() && batch.len() < config.max_batch {
            std::thread::sleep(config.max_wait);
            let mut queue = rx.lock().unwrap_or_else(PoisonError::into_inner);
            drain_into(&mut queue, &mut batch, config.max_batch);
        }
        let outcomes = match commit_batch(&pool, &batch) {
            Err(e) if is_about_a_row(&e) => {
                debug!(
                    "admission batch of {} failed ({e}); storing its events one by one",
                    batch.len()
                );
                commit_rows(&pool, &batch)
            }
            result => result.map(|outcomes| outcomes.into_iter().map(Ok).collect()),
        };
        // Every event of the batch refused one by one: the table, not an event, is at fault.
        let outcomes = match outcomes {
            Ok(outcomes) if outcomes.iter().all(Result::is_err) => {
                let why = match outcomes.into_iter().find_map(Result::err) {
                    Some(AdmitError::Store(why)) => why,
                    _ => "every event was refused".to_owned(),
                };
                Err(StoreError::Task(why))
            }
            outcomes => outcomes,
        };
        let mut stored_any = false;
        match outcomes {
            Ok(outcomes) => {
                storage.recovered();
                for (request, outcome) in batch.drain(..).zip(outcomes) {
                    stored_any |= outcome == Ok(Admission::Stored);
                    // A handler that gave up (client gone) is no reason to stop.
                    let _ = request.reply.send(outcome);
                }
            }
            Err(e) => {
                storage.failed(&e, batch.len());
                let message = e.to_string();
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(AdmitError::Store(message.clone())));
                }
            }
        }
        if stored_any {
            committed.stored();
        }
    }
    debug!("admission writer stopped");
}

/// What `/readyz` knows of admission's storage: failing from a batch that could not commit
/// (disk full, database unreachable, the SQLite file removed) until one commits again.
/// Logged once per outage at ERROR, not once per batch.
struct StorageHealth {
    health: Arc<Health>,
}

impl StorageHealth {
    const SOURCE: &'static str = "storage";

    fn failed(&self, e: &StoreError, batch: usize) {
        if self
            .health
            .report(Self::SOURCE, format!("deliveries cannot be stored: {e}"))
        {
            error!("admission cannot store deliveries, answering 503 until it can: {e}");
        } else {
            debug!("admission batch of {batch} failed, answering 503: {e}");
        }
    }

    fn recovered(&self) {
        if self.health.clear(Self::SOURCE) {
            info!("admission stores deliveries again");
        }
    }
}

/// Whether a failed batch may owe its failure to one of its rows (a value the database
/// refuses) rather than to the database (unreachable, full, its file gone): only then is
/// it worth storing the rows one by one.
fn is_about_a_row(e: &StoreError) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        StoreError::Query(Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)) => false,
        StoreError::Query(Error::DatabaseError(_, info)) => {
            // SQLite's disk-full and I/O errors carry no kind of their own.
            let message = info.message();
            !message.contains("disk is full") && !message.contains("disk I/O error")
        }
        StoreError::Query(Error::SerializationError(_)) => true,
        _ => false,
    }
}

/// Stores each event of a batch whose one-statement insert failed in a savepoint of its
/// own, in one transaction: an event the database refuses gets its error, the others are
/// stored (and committed with one fsync) as if nothing had happened.
fn commit_rows(
    pool: &Pool,
    batch: &[Request],
) -> Result<Vec<Result<Admission, AdmitError>>, StoreError> {
    pool.write(|conn| {
        let mut outcomes = Vec::with_capacity(batch.len());
        for request in batch {
            let stored = conn.savepoint(|conn| events::insert_events(conn, &[&request.event]));
            outcomes.push(match stored {
                Ok(stored) if stored.first() == Some(&true) => Ok(Admission::Stored),
                Ok(_) => Ok(Admission::Duplicate),
                Err(e) => {
                    warn!("event {} cannot be stored: {e}", request.event.id);
                    Err(AdmitError::Store(e.to_string()))
                }
            });
        }
        Ok(outcomes)
    })
}

fn drain_into(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Request>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => batch.push(job.request()),
            Err(_) => break,
        }
    }
}

impl Job {
    fn request(self) -> Request {
        match self {
            Self::Admit(request) => request,
            Self::Crash => panic!("admission writer crashed on request (test hook)"),
        }
    }
}

fn commit_batch(pool: &Pool, batch: &[Request]) -> Result<Vec<Admission>, StoreError> {
    // Inserted in id order: on PostgreSQL several writers (and instances) insert at once, and
    // a duplicate waits for the transaction holding its id. One order for every batch means
    // no two batches wait for each other in a cycle, so duplicates never deadlock a batch.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|&a, &b| batch[a].event.id.cmp(&batch[b].event.id));
    // One multi-row insert on PostgreSQL (see `events::insert_events`).
    pool.write_statement(|conn| {
        let sorted: Vec<_> = order.iter().map(|&i| &batch[i].event).collect();
        let stored = events::insert_events(conn, &sorted)?;
        let mut outcomes = vec![Admission::Duplicate; batch.len()];
        for (&i, stored) in order.iter().zip(stored) {
            if stored {
                outcomes[i] = Admission::Stored;
            }
        }
        Ok(outcomes)
    })
}
