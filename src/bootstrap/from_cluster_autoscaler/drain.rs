//! The Kubernetes half of the move from Cluster Autoscaler: the taint that keeps new pods off the old groups'
//! nodes, Cluster Autoscaler's replicas, and draining one node through the Eviction API (PodDisruptionBudgets set
//! the pace) until what ran on it runs again elsewhere.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::ResourceExt;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};

use crate::apis::pod::Pod;
use crate::apis::pods;

use crate::names::{CONTROLLER_ONLY_TAINT_KEY, MIGRATION_TAINT_KEY};

/// The taints of a migration: on the nodes it drains and terminates, and on those it keeps for the controller.
pub const TAINTS: [(&str, &str); 2] =
    [(MIGRATION_TAINT_KEY, "cluster-autoscaler"), (CONTROLLER_ONLY_TAINT_KEY, "true")];

/// How often a drain looks again (evictions a PodDisruptionBudget refused, replacements starting).
const RECHECK: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(
        "node {node} still runs {pods} after {waited:?}: a PodDisruptionBudget may allow no eviction (see `kubectl get pdb -A`); run again to go on"
    )]
    Stuck { node: String, pods: String, waited: Duration },
    #[error(
        "the workloads drained from node {node} do not run again elsewhere after {waited:?} ({missing}); see their pending pods, then run again"
    )]
    NotReplaced { node: String, missing: String, waited: Duration },
}

fn has_taint(node: &Node, key: &str) -> bool {
    node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == key))
}

/// Puts (or, `value` None, lifts) the `NoSchedule` taint `key`; returns whether the node changed (false also when
/// it is gone).
pub async fn set_taint(
    nodes: &Api<Node>,
    name: &str,
    key: &str,
    value: Option<&str>,
    dry_run: bool,
) -> Result<bool, kube::Error> {
    let Some(node) = nodes.get_opt(name).await? else { return Ok(false) };
    if has_taint(&node, key) == value.is_some() {
        return Ok(false);
    }
    if dry_run {
        return Ok(true);
    }
    let mut taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    taints.retain(|t| t.key != key);
    if let Some(value) = value {
        taints.push(Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: "NoSchedule".into(),
            time_added: None,
        });
    }
    // Over the copy read: a concurrent change of the taints fails this (409), and the next run starts over.
    let patch =
        serde_json::json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": taints}});
    nodes.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(true)
}

/// The nodes carrying the taint `key`.
pub async fn tainted(nodes: &Api<Node>, key: &str) -> Result<Vec<String>, kube::Error> {
    let all = nodes.list(&ListParams::default()).await?.items;
    Ok(all.iter().filter(|n| has_taint(n, key)).map(|n| n.name_any()).collect())
}

/// Whether the pod tolerates the `NoSchedule` taint `key=value` (Kubernetes' rules: an empty key with `Exists`
/// tolerates every taint; `Equal`, the default, wants the value too).
pub fn tolerates(pod: &Pod, key: &str, value: &str) -> bool {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
    tolerations.is_some_and(|list| {
        list.iter().any(|t| {
            let exists = t.operator.as_deref() == Some("Exists");
            let key_matches = match t.key.as_deref() {
                None | Some("") => exists,
                Some(k) => k == key,
            };
            let value_matches = exists || t.value.as_deref().unwrap_or_default() == value;
            let effect_matches = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "NoSchedule");
            key_matches && value_matches && effect_matches
        })
    })
}

/// Sets the Deployment's replicas; returns the count before, or None when it does not exist.
pub async fn scale(
    api: &Api<Deployment>,
    name: &str,
    replicas: i32,
    dry_run: bool,
) -> Result<Option<i32>, kube::Error> {
    let Some(deployment) = api.get_opt(name).await? else { return Ok(None) };
    let before = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if before != replicas && !dry_run {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    Ok(Some(before))
}

/// The controller owner of a pod (its ReplicaSet, StatefulSet, Job...), by UID.
fn owner(pod: &Pod) -> Option<String> {
    pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.uid.clone())
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && !pods::is_terminating(pod)
}

async fn all_pods(kube: &kube::Client) -> Result<Vec<Pod>, kube::Error> {
    Ok(Api::<Pod>::all(kube.clone()).list(&ListParams::default()).await?.items)
}

/// The pods bound to `node` (the API server filters: a drain looks again every few seconds).
async fn pods_on(kube: &kube::Client, node: &str) -> Result<Vec<Pod>, kube::Error> {
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    Ok(Api::<Pod>::all(kube.clone()).list(&on_node).await?.items)
}

/// Which pods of a node a drain moves: evictable ones that do not tolerate `stays` (a drain of a node kept for the
/// controller leaves the controller's pods).
fn moves(pod: &Pod, node: &str, stays: Option<(&str, &str)>) -> bool {
    pod.node_name() == Some(node) && pods::is_evictable(pod) && stays.is_none_or(|(k, v)| !tolerates(pod, k, v))
}

/// For each workload with a pod on `node` that the drain moves: how many of its pods run in the cluster now.
pub async fn owners_on(
    kube: &kube::Client,
    node: &str,
    stays: Option<(&str, &str)>,
) -> Result<BTreeMap<String, usize>, kube::Error> {
    let all = all_pods(kube).await?;
    let mut owners: BTreeMap<String, usize> =
        all.iter().filter(|p| moves(p, node, stays)).filter_map(owner).map(|uid| (uid, 0)).collect();
    for pod in all.iter().filter(|p| is_running(p)) {
        if let Some(count) = owner(pod).and_then(|uid| owners.get_mut(&uid)) {
            *count += 1;
        }
    }
    Ok(owners)
}

/// Evicts the pods of the node the drain moves until none is left, retrying what a PodDisruptionBudget refuses.
pub async fn evict_all(
    kube: &kube::Client,
    node: &str,
    stays: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<usize, DrainError> {
    let started = Instant::now();
    let mut evicted = 0;
    loop {
        let on_node = pods_on(kube, node).await?;
        let left: Vec<&Pod> = on_node.iter().filter(|p| moves(p, node, stays)).collect();
        if left.is_empty() {
            return Ok(evicted);
        }
        if started.elapsed() > timeout {
            let names: Vec<String> = left.iter().map(|p| pods::key(p)).collect();
            return Err(DrainError::Stuck { node: node.into(), pods: names.join(", "), waited: timeout });
        }
        for pod in left {
            let api: Api<k8s_openapi::api::core::v1::Pod> =
                Api::namespaced(kube.clone(), &pod.namespace().unwrap_or_else(|| "default".into()));
            match api.evict(&pod.name_any(), &EvictParams::default()).await {
                Ok(_) => evicted += 1,
                // 429: a PodDisruptionBudget allows no eviction now; 404: gone already. Both: look again.
                Err(kube::Error::Api(status)) if status.code == 429 || status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        tokio::time::sleep(RECHECK).await;
    }
}

/// Waits until each workload in `owners` runs as many pods as it did, none of them on `node`.
pub async fn wait_replaced(
    kube: &kube::Client,
    node: &str,
    owners: &BTreeMap<String, usize>,
    timeout: Duration,
) -> Result<(), DrainError> {
    let started = Instant::now();
    loop {
        let all = all_pods(kube).await?;
        let mut running: BTreeMap<&str, usize> = BTreeMap::new();
        for pod in all.iter().filter(|p| is_running(p) && p.node_name() != Some(node)) {
            if let Some(uid) = owner(pod)
                && let Some((key, _)) = owners.get_key_value(&uid)
            {
                *running.entry(key.as_str()).or_default() += 1;
            }
        }
        let missing: Vec<String> = owners
            .iter()
            .filter(|(uid, wanted)| running.get(uid.as_str()).copied().unwrap_or(0) < **wanted)
            .map(|(uid, wanted)| format!("{uid}: {} of {wanted} running", running.get(uid.as_str()).unwrap_or(&0)))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(DrainError::NotReplaced { node: node.into(), missing: missing.join("; "), waited: timeout });
        }
        tokio::time::sleep(RECHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {"tolerations": tolerations}}))
            .unwrap_or_else(|e| panic!("a test pod: {e}"))
    }

    #[test]
    fn a_pod_stays_on_a_kept_node_only_if_it_tolerates_the_controller_taint() {
        let key = CONTROLLER_ONLY_TAINT_KEY;
        let tolerated = |tolerations| tolerates(&pod(tolerations), key, "true");
        assert!(tolerated(serde_json::json!([{"key": key, "operator": "Exists", "effect": "NoSchedule"}])));
        assert!(tolerated(serde_json::json!([{"key": key, "operator": "Equal", "value": "true"}])));
        assert!(!tolerated(serde_json::json!([{"key": key, "value": "false"}])), "another value");
        assert!(tolerated(serde_json::json!([{"operator": "Exists"}])), "tolerates every taint");
        assert!(!tolerated(serde_json::json!([{"key": "CriticalAddonsOnly", "operator": "Exists"}])));
        assert!(!tolerated(serde_json::json!([{"key": key, "operator": "Exists", "effect": "NoExecute"}])));
        assert!(!tolerated(serde_json::json!([])));
    }
}
