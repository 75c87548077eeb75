//! When a batch of pending pods closes: once no pod has become pending for `batch_idle`, or `batch_max` after it
//! opened, as Karpenter's batcher. The window is timed from the pod changes as the watch delivered them, not from
//! the provisioner's pass that read them: passes are spaced out (`provisioner::PASS_GAP`), and a pass held back
//! must not hold back the batch.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The pending pods gathered so far (namespace/name).
#[derive(Debug)]
pub struct Batch {
    started: Instant,
    last_change: Instant,
    pods: HashSet<String>,
}

impl Batch {
    /// A batch of `pods`, which became pending at `changed_at`.
    pub fn open(pods: HashSet<String>, changed_at: Instant) -> Self {
        Self { started: changed_at, last_change: changed_at, pods }
    }

    /// The pods pending at a pass; `changed_at` is when the latest of them changed, as near as the pass knows.
    /// The window moves only when the pods differ, and never back.
    pub fn update(&mut self, pods: HashSet<String>, changed_at: Instant) {
        if self.pods != pods {
            self.last_change = self.last_change.max(changed_at);
            self.pods = pods;
        }
    }

    /// When the batch closes.
    pub fn due(&self, idle: Duration, max: Duration) -> Instant {
        (self.last_change + idle).min(self.started + max)
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn open_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// How long after its idle window ended the batch closes at `now` (the pass's lag).
    pub fn late(&self, now: Instant, idle: Duration) -> Duration {
        now.saturating_duration_since(self.last_change).saturating_sub(idle)
    }
}

/// When a pod that is pending last changed, since the batcher last asked. Written by the watch relay at each such
/// change, read by each pass.
#[derive(Clone, Debug, Default)]
pub struct PendingPodChanges(Arc<Mutex<Option<Instant>>>);

impl PendingPodChanges {
    pub fn saw(&self, at: Instant) {
        if let Ok(mut latest) = self.0.lock() {
            *latest = Some(at);
        }
    }

    /// The latest change since the last `take`, if there was one.
    pub fn take(&self) -> Option<Instant> {
        self.0.lock().ok().and_then(|mut latest| latest.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(10);

    fn pods(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| format!("shop/{n}")).collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_window_counts_from_the_pod_change_not_from_the_pass_that_read_it() {
        let t0 = Instant::now();
        let mut batch = Batch::open(pods(&["a"]), t0);
        // A pass 100 ms on reads pod b, which became pending 50 ms on.
        batch.update(pods(&["a", "b"]), t0 + ms(50));
        assert_eq!(batch.due(IDLE, MAX), t0 + ms(50) + IDLE);
        assert_eq!(batch.late(t0 + ms(50) + IDLE + ms(3), IDLE), ms(3));
    }

    #[test]
    fn the_same_pods_read_again_leave_the_window_where_it_was() {
        let t0 = Instant::now();
        let mut batch = Batch::open(pods(&["a", "b"]), t0);
        // b changed again (a condition's message, say) but nothing joined or left.
        batch.update(pods(&["a", "b"]), t0 + ms(600));
        assert_eq!(batch.due(IDLE, MAX), t0 + IDLE);
    }

    #[test]
    fn the_window_never_moves_back() {
        let t0 = Instant::now();
        let mut batch = Batch::open(pods(&["a"]), t0 + ms(200));
        batch.update(pods(&["a", "b"]), t0 + ms(100));
        assert_eq!(batch.due(IDLE, MAX), t0 + ms(200) + IDLE);
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn a_batch_that_keeps_changing_closes_at_its_longest() {
        let t0 = Instant::now();
        let mut batch = Batch::open(pods(&["p0"]), t0);
        for i in 1..=20u64 {
            batch.update(pods(&[&format!("p{i}")]), t0 + ms(i * 900));
        }
        assert_eq!(batch.due(IDLE, MAX), t0 + MAX);
        assert_eq!(batch.open_for(t0 + MAX), MAX);
    }

    #[test]
    fn a_change_is_given_once() {
        let changes = PendingPodChanges::default();
        assert_eq!(changes.take(), None);
        let t0 = Instant::now();
        changes.saw(t0);
        changes.saw(t0 + ms(30));
        assert_eq!(changes.take(), Some(t0 + ms(30)), "the latest change");
        assert_eq!(changes.take(), None, "already given");
    }
}
