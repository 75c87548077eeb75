//! What nodesmith asks of a pod: is it waiting for a node, may it be evicted, does it matter more. Pure: the
//! controller and the migration from Cluster Autoscaler both ask.

use crate::apis::pod::Pod;

/// Owned by a DaemonSet: it runs on every node, so it neither asks for nodes nor is evicted from them.
pub fn is_daemonset_pod(pod: &Pod) -> bool {
    pod.metadata.owner_references.iter().flatten().any(|o| o.kind == "DaemonSet")
}

/// A static pod's mirror: the kubelet owns it, eviction cannot move it.
pub fn is_mirror_pod(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(crate::names::MIRROR_POD_ANNOTATION))
}

/// Finished (Succeeded or Failed): it holds no resources.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// When the pod began terminating: the API server sets `deletionTimestamp` to the time deletion was asked for plus
/// the grace period, which it keeps in `deletionGracePeriodSeconds`.
pub fn terminating_since(pod: &Pod) -> Option<jiff::Timestamp> {
    let until = pod.metadata.deletion_timestamp.as_ref()?.0;
    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
    until.checked_sub(jiff::SignedDuration::from_secs(grace)).ok()
}

/// The scheduler tried and found no node: `PodScheduled=False`, reason `Unschedulable`, not bound, not
/// nominated to a node by preemption, not a DaemonSet's.
pub fn is_provisionable(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else { return false };
    let unschedulable = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"));
    unschedulable
        && pod.spec.as_ref().is_some_and(|s| s.node_name.is_none())
        && status.nominated_node_name.as_deref().is_none_or(str::is_empty)
        && !is_daemonset_pod(pod)
        && !is_terminating(pod)
        && !is_terminal(pod)
}

/// May be evicted when its node drains: not a DaemonSet's, not a mirror, not already finished or going.
pub fn is_evictable(pod: &Pod) -> bool {
    !is_daemonset_pod(pod) && !is_mirror_pod(pod) && !is_terminal(pod) && !is_terminating(pod)
}

/// Annotated `karpenter.sh/do-not-disrupt: "true"`: never moved voluntarily, and a drain waits for its
/// terminationGracePeriod before it takes it.
pub fn is_do_not_disrupt(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::names::DO_NOT_DISRUPT_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// System-critical pods are evicted last, after the workloads that depend on them.
pub fn is_critical(pod: &Pod) -> bool {
    let class = pod.spec.as_ref().and_then(|s| s.priority_class_name.as_deref());
    matches!(class, Some("system-cluster-critical" | "system-node-critical"))
}

/// `namespace/name`, as the scheduler names pods.
pub fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).expect("a pod")
    }

    const UNSCHEDULABLE: &str = r#"
metadata: {name: web, namespace: shop}
spec: {containers: [{name: app, image: x}]}
status:
  phase: Pending
  conditions: [{type: PodScheduled, status: "False", reason: Unschedulable}]
"#;

    #[test]
    fn a_pod_began_terminating_its_grace_period_before_its_deletion_timestamp() {
        let running = pod("metadata: {name: web, namespace: shop}");
        assert_eq!(terminating_since(&running), None);
        let terminating = pod(r#"
metadata: {name: web, namespace: shop, deletionTimestamp: "2026-12-06T12:00:30Z", deletionGracePeriodSeconds: 30}
"#);
        assert_eq!(terminating_since(&terminating), Some("2026-12-06T12:00:00Z".parse().expect("time")));
    }

    #[test]
    fn an_unschedulable_pod_asks_for_a_node() {
        assert!(is_provisionable(&pod(UNSCHEDULABLE)));
        assert_eq!(key(&pod(UNSCHEDULABLE)), "shop/web");
    }

    #[test]
    fn bound_nominated_daemonset_and_unscheduled_pods_do_not() {
        let mut bound = pod(UNSCHEDULABLE);
        bound.spec.as_mut().expect("spec").node_name = Some("n1".into());
        assert!(!is_provisionable(&bound));

        let mut nominated = pod(UNSCHEDULABLE);
        nominated.status.as_mut().expect("status").nominated_node_name = Some("n1".into());
        assert!(!is_provisionable(&nominated));

        let daemon = pod(&UNSCHEDULABLE.replace(
            "metadata: {name: web, namespace: shop}",
            "metadata: {name: web, namespace: shop, ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: d, uid: u}]}",
        ));
        assert!(!is_provisionable(&daemon));
        assert!(!is_evictable(&daemon));

        let fresh = pod("metadata: {name: new}\nspec: {containers: []}\nstatus: {phase: Pending}");
        assert!(!is_provisionable(&fresh));
    }

    #[test]
    fn critical_pods_are_known_by_their_priority_class() {
        let critical = pod("metadata: {name: dns}\nspec: {priorityClassName: system-cluster-critical, containers: []}");
        assert!(is_critical(&critical));
        assert!(!is_critical(&pod(UNSCHEDULABLE)));
    }
}
