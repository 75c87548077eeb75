//! When the provisioner first saw each pending pod, decided about it, and placed it (on a new node or room on an
//! existing one), for Karpenter's provisioning times: decision, placed → bound, placed → running, and the gauges of
//! pods still waiting. Only pods the provisioner is dealing with are held; a pod is forgotten once it runs, goes, or
//! is bound without having been placed.

use std::collections::HashMap;

use k8s_openapi::jiff::Timestamp;

/// Where a pod is now, as the cache has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodNow {
    Gone,
    Unbound,
    Bound,
    Running,
}

#[derive(Clone, Copy, Debug)]
struct Times {
    seen: Timestamp,
    decided: bool,
    placed: Option<Timestamp>,
    bound: bool,
}

/// What the pods did since the last look: (placed → bound) and (placed → running) seconds.
#[derive(Debug, Default, PartialEq)]
pub struct Progress {
    pub bound_after: Vec<f64>,
    pub started_after: Vec<f64>,
}

/// The gauges of waiting pods: (pod key, seconds).
#[derive(Debug, Default, PartialEq)]
pub struct Waiting {
    /// Placed, not bound: seconds since placed.
    pub unbound: Vec<(String, f64)>,
    /// Placed and bound, not running: seconds since placed.
    pub unstarted: Vec<(String, f64)>,
    /// Seen, not decided: seconds since seen.
    pub undecided: Vec<(String, f64)>,
}

#[derive(Debug, Default)]
pub struct PodClock {
    pods: HashMap<String, Times>,
}

fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}

impl PodClock {
    /// The provisioner sees `pod` pending.
    pub fn seen(&mut self, pod: &str, now: Timestamp) {
        self.pods.entry(pod.to_string()).or_insert(Times { seen: now, decided: false, placed: None, bound: false });
    }

    /// The provisioner decided about `pod`: `placed` somewhere, or not. Returns the seconds since it first saw the
    /// pod when this is its first decision.
    pub fn decided(&mut self, pod: &str, placed: bool, now: Timestamp) -> Option<f64> {
        let times = self.pods.get_mut(pod)?;
        if placed && times.placed.is_none() {
            times.placed = Some(now);
        }
        let first = !times.decided;
        times.decided = true;
        first.then(|| seconds(times.seen, now))
    }

    /// Looks at every pod held as it is now: counts bindings and starts of placed pods, and forgets pods that run,
    /// are gone, or were bound without being placed.
    pub fn advance(&mut self, now: Timestamp, pod_now: impl Fn(&str) -> PodNow) -> Progress {
        let mut progress = Progress::default();
        self.pods.retain(|key, times| {
            let state = pod_now(key);
            let Some(placed) = times.placed else { return state == PodNow::Unbound };
            if matches!(state, PodNow::Bound | PodNow::Running) && !times.bound {
                times.bound = true;
                progress.bound_after.push(seconds(placed, now));
            }
            match state {
                PodNow::Running => {
                    progress.started_after.push(seconds(placed, now));
                    false
                }
                PodNow::Gone => false,
                PodNow::Unbound | PodNow::Bound => true,
            }
        });
        progress
    }

    pub fn waiting(&self, now: Timestamp) -> Waiting {
        let mut waiting = Waiting::default();
        for (key, times) in &self.pods {
            match times.placed {
                Some(placed) if times.bound => waiting.unstarted.push((key.clone(), seconds(placed, now))),
                Some(placed) => waiting.unbound.push((key.clone(), seconds(placed, now))),
                None if !times.decided => waiting.undecided.push((key.clone(), seconds(times.seen, now))),
                None => {}
            }
        }
        waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("a time")
    }

    #[test]
    fn a_placed_pod_is_timed_from_its_placement_to_its_binding_and_its_start_then_forgotten() {
        let mut clock = PodClock::default();
        clock.seen("shop/web-1", at(0));
        clock.seen("shop/web-1", at(1)); // seen again: the first sight counts
        assert_eq!(clock.waiting(at(2)).undecided, vec![("shop/web-1".to_string(), 2.0)]);
        assert_eq!(clock.decided("shop/web-1", true, at(3)), Some(3.0));
        assert_eq!(clock.decided("shop/web-1", true, at(4)), None, "decided once");
        assert_eq!(clock.waiting(at(10)).unbound, vec![("shop/web-1".to_string(), 7.0)]);
        let progress = clock.advance(at(40), |_| PodNow::Bound);
        assert_eq!(progress, Progress { bound_after: vec![37.0], started_after: vec![] });
        assert_eq!(clock.waiting(at(41)).unstarted, vec![("shop/web-1".to_string(), 38.0)]);
        assert_eq!(clock.advance(at(42), |_| PodNow::Bound), Progress::default(), "bound is counted once");
        let progress = clock.advance(at(50), |_| PodNow::Running);
        assert_eq!(progress.started_after, vec![47.0]);
        assert_eq!(clock.waiting(at(51)), Waiting::default(), "forgotten once running");
    }

    #[test]
    fn pods_placed_nowhere_or_bound_elsewhere_or_gone_are_not_timed_as_provisioned() {
        let mut clock = PodClock::default();
        for pod in ["a/unplaceable", "a/bound-elsewhere", "a/deleted"] {
            clock.seen(pod, at(0));
        }
        assert_eq!(clock.decided("a/unplaceable", false, at(2)), Some(2.0));
        assert_eq!(clock.decided("a/unknown", true, at(2)), None, "never seen pending: nothing to time");
        let state = |pod: &str| match pod {
            "a/bound-elsewhere" => PodNow::Bound,
            "a/deleted" => PodNow::Gone,
            _ => PodNow::Unbound,
        };
        assert_eq!(clock.advance(at(5), state), Progress::default());
        let waiting = clock.waiting(at(6));
        assert!(waiting.undecided.is_empty() && waiting.unbound.is_empty(), "{waiting:?}");
        assert_eq!(clock.pods.len(), 1, "only the pod still pending is held");
    }
}
