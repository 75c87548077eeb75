//! Commands carried out in the background: their replacements are still coming up, and their candidates are
//! deleted once the replacements are Initialized. Meanwhile the next passes see those candidates as Karpenter's
//! orchestration queue makes its passes see them: going (counted against budgets, no room for other pods, no
//! candidate again), with their pods needing a place, so that a later command does not plan into the room
//! those pods are about to take.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::disruption::ManagedNode;
use crate::scheduling::PodRequest;

/// The candidates of the commands in progress, by NodeClaim name, and a wake-up for the loop when one ends.
#[derive(Clone, Default)]
pub struct InProgress {
    candidates: Arc<Mutex<HashSet<String>>>,
    ended: Arc<Notify>,
}

impl InProgress {
    pub fn add(&self, candidates: &[String]) {
        if let Ok(mut set) = self.candidates.lock() {
            set.extend(candidates.iter().cloned());
        }
    }

    pub fn contains(&self, candidate: &str) -> bool {
        self.candidates.lock().is_ok_and(|set| set.contains(candidate))
    }

    /// The command of `candidates` has ended: they are no longer in progress, and `ended` wakes.
    pub fn remove(&self, candidates: &[String]) {
        if let Ok(mut set) = self.candidates.lock() {
            for candidate in candidates {
                set.remove(candidate);
            }
        }
        // Kept as a permit when nobody waits yet (a pass is running): the wait after that pass returns at once.
        self.ended.notify_one();
    }

    /// Returns once a command in progress has ended (at once when one ended since the last call).
    pub async fn ended(&self) {
        self.ended.notified().await;
    }

    /// Marks the candidates in progress as going and adds their pods to the pods needing a place.
    pub fn apply(&self, nodes: &mut [ManagedNode], pending: &mut Vec<PodRequest>) {
        let Ok(set) = self.candidates.lock() else { return };
        if set.is_empty() {
            return;
        }
        for node in nodes.iter_mut().filter(|n| set.contains(&n.claim) && !n.deleting) {
            node.deleting = true;
            pending.extend(node.pods.iter().map(|p| p.request.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CapacityType;
    use crate::disruption::MovablePod;
    use crate::scheduling::ExistingNode;

    fn node(claim: &str, pods: &[&str]) -> ManagedNode {
        ManagedNode {
            claim: claim.into(),
            node: Some(claim.into()),
            nodepool: "default".into(),
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            capacity_type: CapacityType::OnDemand,
            price: 0.096,
            created: jiff::Timestamp::UNIX_EPOCH,
            initialized_at: Some(jiff::Timestamp::UNIX_EPOCH),
            last_pod_event: None,
            last_pod_departure: None,
            deleting: false,
            ready: true,
            nominated: false,
            do_not_disrupt: false,
            consolidation_replacement: false,
            drifted: None,
            pods: pods
                .iter()
                .map(|id| MovablePod {
                    request: PodRequest::new(id, Default::default()),
                    blocker: None,
                    eviction_cost: 1.0,
                })
                .collect(),
            room: ExistingNode {
                name: claim.into(),
                labels: Default::default(),
                taints: vec![],
                available: Default::default(),
                capacity: Default::default(),
                nodepool: Some("default".into()),
                pods: Vec::new(),
            },
        }
    }

    #[test]
    fn a_candidate_in_progress_is_going_and_its_pods_need_a_place_until_it_is_removed() {
        let in_progress = InProgress::default();
        in_progress.add(&["a".to_string()]);
        let mut nodes = vec![node("a", &["shop/x", "shop/y"]), node("b", &["shop/z"])];
        let mut pending = vec![PodRequest::new("shop/pending", Default::default())];
        in_progress.apply(&mut nodes, &mut pending);
        assert_eq!((nodes[0].deleting, nodes[1].deleting), (true, false));
        let ids: Vec<&str> = pending.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["shop/pending", "shop/x", "shop/y"]);

        // Being deleted already (the cache has seen the deletion): its pods are pending on their own.
        let mut nodes = vec![node("a", &["shop/x"])];
        nodes[0].deleting = true;
        let mut pending = Vec::new();
        in_progress.apply(&mut nodes, &mut pending);
        assert!(pending.is_empty());

        in_progress.remove(&["a".to_string()]);
        let mut nodes = vec![node("a", &["shop/x"])];
        in_progress.apply(&mut nodes, &mut pending);
        assert!(!nodes[0].deleting && pending.is_empty());
    }

    #[tokio::test]
    async fn the_end_of_a_command_wakes_the_loop_even_when_it_ended_while_nobody_waited() {
        let in_progress = InProgress::default();
        in_progress.add(&["a".to_string()]);
        let ended = in_progress.clone();
        let waiter = tokio::spawn(async move { ended.ended().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nothing has ended yet");
        in_progress.remove(&["a".to_string()]);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("woken").expect("joined");

        // Ended during a pass: the next wait returns at once.
        in_progress.remove(&["b".to_string()]);
        tokio::time::timeout(std::time::Duration::from_secs(5), in_progress.ended()).await.expect("a permit kept");
    }
}
