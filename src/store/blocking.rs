//! The one way from async code to blocking database work.
//!
//! diesel is synchronous, so every database call from async code goes through here:
//! [`Pool::run`] runs a closure on a pooled connection on tokio's blocking threads (HTTP
//! handlers, the outbox runner, the sweeper), and [`Pool::run_on`] runs one on a
//! [`BackgroundThread`] of its own (the processor). Either way a panic in the closure comes
//! back as [`StoreError::Task`] instead of unwinding into the caller, and the caller's task is
//! never blocked.
//!
//! # The background thread
//!
//! Acknowledging deliveries fast is what keeps Stripe from retrying (and so from doubling the
//! load), while applying events can lag a little without harm. When both want the CPU, the
//! processor's thread should therefore lose. A thread of its own (rather than tokio's shared
//! blocking pool) lets payhook lower that thread's scheduling priority alone: on Linux the
//! nice value is a per-thread attribute, and a thread at nice 10 gets about a tenth of the
//! CPU share of a thread at nice 0 when both are runnable, and all of an otherwise idle CPU.
//! The processor still yields the SQLite write lock to waiting writers on its own (see
//! [`crate::store::Pool::writers_waiting`]); priority alone would invert when it holds it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use log::{debug, warn};
use tokio::sync::oneshot;

use super::{Conn, Pool, StoreError, StoreResult};

impl Pool {
    /// Runs `f` on a pooled connection on tokio's blocking threads.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let pool = self.clone();
        match tokio::task::spawn_blocking(move || pool.get().and_then(|mut conn| f(&mut conn)))
            .await
        {
            Ok(result) => result,
            Err(e) => Err(StoreError::Task(format!("database task failed: {e}"))),
        }
    }

    /// Runs `f`, which takes its own connections (e.g. through [`Pool::write`]), on tokio's
    /// blocking threads.
    pub async fn run_pool<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Pool) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let pool = self.clone();
        match tokio::task::spawn_blocking(move || f(&pool)).await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Task(format!("database task failed: {e}"))),
        }
    }

    /// Runs `f`, which takes its own connections, on `thread`.
    pub async fn run_on<T: Send + 'static>(
        &self,
        thread: &BackgroundThread,
        f: impl FnOnce(&Pool) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let pool = self.clone();
        match thread.run(move || f(&pool)).await {
            Ok(result) => result,
            Err(JobError::Stopped) => Err(StoreError::ThreadStopped),
            Err(e @ JobError::Panicked) => Err(StoreError::Task(e.to_string())),
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Why a job produced no value.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the background thread has stopped")]
    Stopped,
    #[error("the job panicked")]
    Panicked,
}

/// A handle to the thread; the thread ends when the handle is dropped.
pub struct BackgroundThread {
    jobs: mpsc::Sender<Job>,
}

impl BackgroundThread {
    /// Starts a thread called `name` at nice value `nice` (0 keeps the process's priority;
    /// 1 to 19 are lower).
    pub fn start(name: &str, nice: i32) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let label = name.to_owned();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                if nice != 0 {
                    lower_priority(&label, nice);
                }
                while let Ok(job) = queue.recv() {
                    job();
                }
                debug!("{label} thread stopped");
            })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the thread and waits for its result without blocking the runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, JobError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A panicking job must not take the thread (and every later job) with it.
            let _ = reply.send(catch_unwind(AssertUnwindSafe(f)));
        });
        self.jobs.send(job).map_err(|_| JobError::Stopped)?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(JobError::Panicked),
            Err(_) => Err(JobError::Stopped),
        }
    }
}

/// Sets the calling thread's nice value. Linux only: elsewhere `setpriority` would change the
/// whole process, HTTP workers included, so the priority is left alone there.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lower_priority(name: &str, nice: i32) {
    // SAFETY: setpriority takes plain integers and touches no memory of ours. `who = 0` is
    // the calling thread under Linux's per-thread nice values (see setpriority(2), NOTES).
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc == 0 {
        debug!("{name} thread runs at nice {nice}");
    } else {
        warn!(
            "could not lower the {name} thread's priority to nice {nice}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(name: &str, nice: i32) {
    debug!("{name} thread: nice {nice} is only applied on Linux");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_a_panic() {
        let thread = BackgroundThread::start("test-bg", 5).expect("thread");
        assert_eq!(thread.run(|| 2 + 2).await.expect("value"), 4);
        let panicked = thread.run(|| panic!("boom")).await;
        assert!(matches!(panicked, Err(JobError::Panicked)));
        let name = thread
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("value");
        assert_eq!(name.as_deref(), Some("test-bg"));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn lowers_only_its_own_thread() {
        let before = own_nice();
        let thread = BackgroundThread::start("test-nice", 7).expect("thread");
        let inside = thread.run(own_nice).await.expect("value");
        assert_eq!(inside, before + 7);
        assert_eq!(own_nice(), before, "the caller's priority is unchanged");
    }

    /// Field 19 of /proc/thread-self/stat (after the parenthesised name): the nice value.
    #[cfg(target_os = "linux")]
    fn own_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let after_name = &stat[stat.rfind(')').expect("name") + 2..];
        after_name
            .split(' ')
            .nth(16)
            .expect("nice field")
            .parse()
            .expect("number")
    }
}
