//! How long a reconcile that lost a write race waits before trying again. The fresh copy it needs comes by the
//! watch, and its arrival reconciles the object at once whatever the wait; the wait only bounds how often a
//! stale copy is written with. A fixed short wait made 464 NodeClaims try their finalizer patch four times a
//! second each while the API server's watch cache was behind (after a burst of 1,000 interruptions), and the
//! conflicts kept the API server too busy to catch up. So the wait doubles with each conflict in a row, as
//! controller-runtime's per-item rate limiter does for Karpenter, with a little jitter so they do not come back
//! together.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

const FIRST: Duration = Duration::from_millis(250);
const LONGEST: Duration = Duration::from_secs(30);
/// Counts kept at most: an object deleted by someone else right after a conflict is never forgotten by a success,
/// so past this many the counts start again rather than grow for the life of the process.
const KEPT: usize = 10_000;

#[derive(Default)]
pub struct ConflictBackoff {
    /// Conflicts in a row, by object name.
    in_a_row: Mutex<HashMap<String, u32>>,
}

impl ConflictBackoff {
    /// The wait after one more conflict on `name`: 250 ms, then twice the last, up to 30 s, plus up to a quarter.
    pub fn next(&self, name: &str) -> Duration {
        let mut in_a_row = self.in_a_row.lock().unwrap_or_else(PoisonError::into_inner);
        if in_a_row.len() >= KEPT && !in_a_row.contains_key(name) {
            in_a_row.clear();
        }
        let count = in_a_row.entry(name.to_string()).or_default();
        *count = count.saturating_add(1);
        let wait = FIRST.saturating_mul(1 << (*count - 1).min(16)).min(LONGEST);
        wait + wait.mul_f64(fastrand::f64() / 4.0)
    }

    /// `name`'s write went through: its next conflict waits the shortest again.
    pub fn forget(&self, name: &str) {
        self.in_a_row.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(wait: Duration, base: Duration) -> bool {
        wait >= base && wait <= base + base / 4
    }

    #[test]
    fn the_wait_doubles_with_each_conflict_in_a_row_up_to_the_longest() {
        let backoff = ConflictBackoff::default();
        let waits: Vec<Duration> = (0..12).map(|_| backoff.next("a")).collect();
        let bases = [250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000, 30_000];
        for (wait, base) in waits.iter().zip(bases) {
            assert!(within(*wait, Duration::from_millis(base)), "{wait:?} for {base} ms");
        }
        // Another object's count is its own.
        assert!(within(backoff.next("b"), FIRST));
    }

    #[test]
    fn a_write_that_went_through_starts_the_count_again() {
        let backoff = ConflictBackoff::default();
        backoff.next("a");
        backoff.next("a");
        backoff.forget("a");
        assert!(within(backoff.next("a"), FIRST));
    }

    #[test]
    fn a_long_run_of_conflicts_never_overflows() {
        let backoff = ConflictBackoff::default();
        let last = (0..100).map(|_| backoff.next("a")).last().unwrap_or_default();
        assert!(within(last, LONGEST));
    }
}
