//! What is wrong with this process right now, as `/readyz` reports it.
//!
//! Each part that can fail in a way a load balancer should know about (a background task
//! that died, storage that stopped accepting writes, …) reports a problem under its own name
//! and clears it when it recovers; `/readyz` answers 503 while any problem is reported.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Default)]
pub struct Health {
    problems: Mutex<BTreeMap<&'static str, String>>,
}

impl Health {
    /// Reports (or replaces) the problem of `source`.
    pub fn report(&self, source: &'static str, problem: impl Into<String>) {
        self.lock().insert(source, problem.into());
    }

    /// `source` is fine again.
    pub fn clear(&self, source: &'static str) {
        self.lock().remove(source);
    }

    /// Every reported problem, by source.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        self.lock().iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        // A panic while holding this lock leaves a consistent map behind.
        self.problems.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_kept_per_source_until_cleared() {
        let health = Health::default();
        assert!(health.problems().is_empty());
        health.report("storage", "disk full");
        health.report("tasks", "processor stopped");
        health.report("storage", "disk still full");
        assert_eq!(
            health.problems(),
            vec![
                ("storage", "disk still full".to_owned()),
                ("tasks", "processor stopped".to_owned())
            ]
        );
        health.clear("storage");
        assert_eq!(health.problems().len(), 1);
    }
}
