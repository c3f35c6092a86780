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
    /// Reports (or replaces) the problem of `source`; returns whether it is new (`source`
    /// had no problem reported), so a caller logs an outage once, not once per failure.
    pub fn report(&self, source: &'static str, problem: impl Into<String>) -> bool {
        self.lock().insert(source, problem.into()).is_none()
    }

    /// `source` is fine again; returns whether it had a problem reported.
    pub fn clear(&self, source: &'static str) -> bool {
        self.lock().remove(source).is_some()
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
        assert!(health.report("storage", "disk full"));
        assert!(health.report("tasks", "processor stopped"));
        assert!(!health.report("storage", "disk still full"), "not new");
        assert_eq!(
            health.problems(),
            vec![
                ("storage", "disk still full".to_owned()),
                ("tasks", "processor stopped".to_owned())
            ]
        );
        assert!(health.clear("storage"));
        assert!(!health.clear("storage"));
        assert_eq!(health.problems().len(), 1);
    }
}
