//! Taking a node away gracefully, when its NodeClaim is deleted: taint it `karpenter.sh/disrupted:NoSchedule`,
//! evict its pods through the Eviction API (PodDisruptionBudgets decide the pace; non-critical pods before
//! critical ones, large before small; DaemonSet and static pods stay), force only once `terminationGracePeriod`
//! has passed, then terminate the instance, wait for EC2 to confirm, delete the Node and lift the finalizers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::apis::pod::Pod;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, EvictParams, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::{Context, Error, disrupted_taint, events, pods};
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::scheduling_input::pod_requests;
use crate::apis::{finalizers, guarded_patch};
use crate::catalog::resources::ResourceName;
use crate::cloud::CloudProvider;
use crate::cloud::error::CloudError;
use crate::cloud::instances::{self, InstanceSummary};
use crate::names::{CAPACITY_TYPE_LABEL, NODEPOOL_LABEL, TERMINATION_FINALIZER, ZONE_ID_LABEL, ZONE_LABEL};

/// Terminates what is left of the NodeClaim `name`'s instance; returns the instance terminated, None when there
/// is nothing left to terminate. `provider_id` is what the NodeClaim recorded, `instance` its instance as EC2
/// describes it. With nothing recorded, the NodeClaim may have been deleted before its launch was recorded, and
/// an instance may still carry its tag; a recorded provider id that names no EC2 instance leaves nothing of ours.
async fn terminate_instance(
    cloud: &dyn CloudProvider,
    cluster: &str,
    name: &str,
    provider_id: Option<&str>,
    instance: Option<InstanceSummary>,
) -> Result<Option<String>, CloudError> {
    let target = match provider_id {
        Some(provider_id) => {
            let alive = instance.filter(|i| i.is_alive());
            // A provider id is only what the NodeClaim's status says: the instance it names is terminated only if
            // EC2 says it is this cluster's.
            if let Some(foreign) = alive.as_ref().filter(|i| !i.is_owned_by(cluster)) {
                tracing::warn!(
                    nodeclaim = name,
                    instance = foreign.instance_id,
                    "the NodeClaim names an instance not tagged for cluster {cluster}: it is not terminated"
                );
                return Ok(None);
            }
            instances::instance_id_from_provider_id(provider_id).filter(|_| alive.is_some()).map(str::to_string)
        }
        None => cloud.find_instance_for_nodeclaim(cluster, name).await?.map(|found| found.instance_id),
    };
    if let Some(id) = &target {
        cloud.terminate_instances(std::slice::from_ref(id)).await?;
    }
    Ok(target)
}

/// The `controller` label of this module's cloud calls.
const CONTROLLER: &str = "nodeclaim.termination";
const POLL: Duration = Duration::from_secs(2);

/// How long ago the NodeClaim was deleted.
fn since_deletion(claim: &NodeClaim) -> Duration {
    let Some(deleted) = claim.metadata.deletion_timestamp.as_ref() else { return Duration::ZERO };
    Duration::try_from(k8s_openapi::jiff::Timestamp::now().duration_since(deleted.0)).unwrap_or(Duration::ZERO)
}

fn nodepool_of(claim: &NodeClaim) -> &str {
    claim.labels().get(NODEPOOL_LABEL).map_or("", String::as_str)
}

fn seconds_since(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> f64 {
    k8s_openapi::jiff::Timestamp::now().duration_since(time.0).as_secs_f64().max(0.0)
}

/// One step of the termination; requeues until everything is done, then removes the finalizer.
pub async fn finalize(ctx: &Context, claim: &NodeClaim) -> Result<Action, Error> {
    if !finalizers::has(claim, TERMINATION_FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = claim.name_any();
    let status = claim.status.clone().unwrap_or_default();
    let node = status
        .node_name
        .as_deref()
        .and_then(|n| ctx.state.node(n))
        .or_else(|| status.provider_id.as_deref().and_then(|p| ctx.state.node_by_provider_id(p)));

    let cloud = ctx.cloud(CONTROLLER);
    let instance_id = status.provider_id.as_deref().and_then(instances::instance_id_from_provider_id);
    let instance = match instance_id {
        Some(id) => cloud.describe_instance(id).await?,
        None => None,
    };
    // Pods on a node whose instance is gone cannot be drained (no kubelet confirms their end): they are deleted
    // outright, and nothing waits for them.
    let instance_gone = instance_id.is_some() && !instance.as_ref().is_some_and(|i| i.is_alive());

    if let Some(node) = &node {
        disrupted_taint::taint(ctx, node).await?;
        let remaining = drain(ctx, claim, node, instance_gone).await?;
        if remaining > 0 && !instance_gone {
            return Ok(Action::requeue(POLL));
        }
    }

    let provider_id = status.provider_id.as_deref();
    let terminating = terminate_instance(&cloud, &ctx.settings.cluster_name, &name, provider_id, instance).await;
    let label = |key: &str| claim.labels().get(key).map_or("", String::as_str);
    if terminating.is_err() {
        ctx.metrics.termination_failed(label(ZONE_LABEL), label(ZONE_ID_LABEL));
    }
    if let Some(terminated) = terminating? {
        if let Ok(mut asked) = ctx.instance_terminations.lock() {
            asked.entry(name.clone()).or_insert_with(Instant::now);
        }
        if node.is_some() {
            ctx.metrics.node_drained(nodepool_of(claim));
        }
        if provider_id.is_some() {
            let note = format!("terminating instance {terminated}");
            events::on_nodeclaim(&ctx.recorder, claim, EventType::Normal, "Terminating", &note).await;
        }
        tracing::info!(nodeclaim = %name, instance = terminated, "terminating instance");
        return Ok(Action::requeue(POLL));
    }

    // Nothing left to terminate: the instance this process asked to terminate is going.
    let asked = ctx.instance_terminations.lock().ok().and_then(|mut asked| asked.remove(&name));
    if let Some(asked) = asked {
        ctx.metrics.instance_terminated(nodepool_of(claim), asked.elapsed().as_secs_f64());
    }
    if let Some(node) = &node {
        let nodes: Api<Node> = Api::all(ctx.kube.clone());
        // From the finalizers this pass read: a list changed since fails the pass, and the next one has the newer.
        if let Some(patch) = finalizers::removing(node.as_ref(), TERMINATION_FINALIZER) {
            match nodes.patch(&node.name_any(), &PatchParams::default(), &patch).await {
                // The node's termination ends here, as Karpenter counts it: its finalizer is off. (The Node may
                // already be deleted, by the cloud's node lifecycle once the instance went.)
                Ok(_) => {
                    let lifetime = node.metadata.creation_timestamp.as_ref().map_or(0.0, seconds_since);
                    let termination = node
                        .metadata
                        .deletion_timestamp
                        .as_ref()
                        .map_or_else(|| since_deletion(claim).as_secs_f64(), seconds_since);
                    let zone = node.labels().get(ZONE_LABEL).map_or("", String::as_str);
                    ctx.metrics.node_terminated(nodepool_of(claim), zone, termination, lifetime);
                }
                Err(error) if super::is_not_found(&error) => {}
                Err(error) if guarded_patch::is_stale_list(&error) => {
                    return Err(Error::StaleFinalizers(node.name_any()));
                }
                Err(error) => return Err(error.into()),
            }
        }
        match nodes.delete(&node.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(error) if super::is_not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }

    let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
    if let Some(patch) = finalizers::removing(claim, TERMINATION_FINALIZER) {
        match api.patch(&name, &PatchParams::default(), &patch).await {
            Ok(_) => {}
            Err(error) if super::is_not_found(&error) => {}
            Err(error) if guarded_patch::is_stale_list(&error) => return Err(Error::StaleFinalizers(name)),
            Err(error) => return Err(error.into()),
        }
    }
    let termination = since_deletion(claim).as_secs_f64();
    ctx.metrics.nodeclaim_terminated(nodepool_of(claim), label(CAPACITY_TYPE_LABEL), label(ZONE_LABEL), termination);
    tracing::info!(nodeclaim = %name, "terminated");
    Ok(Action::await_change())
}

/// The pods to evict in this pass: the large ones (at least half the largest pod's CPU or memory) first, the rest on
/// the next pass. kube-scheduler places the pods that replace them in the order they come, each on the emptiest
/// node that fits; evicted all at once, small pods take the room a consolidation planned for a large one (a
/// replacement node, the one gap elsewhere) and the large one is left Pending, to be given a node of its own.
/// Large first is the order the plan packed them in.
fn largest_first<'p>(pods: &[&'p Arc<Pod>]) -> Vec<&'p Arc<Pod>> {
    let requests = |pod: &Pod| {
        let requests = pod.spec.as_ref().and_then(|s| pod_requests(s).ok()).unwrap_or_default();
        (requests.get(ResourceName::Cpu), requests.get(ResourceName::Memory))
    };
    let (cpu, memory) = pods.iter().map(|p| requests(p)).fold((0, 0), |(c, m), (pc, pm)| (c.max(pc), m.max(pm)));
    if cpu == 0 && memory == 0 {
        return pods.to_vec();
    }
    pods.iter()
        .copied()
        .filter(|p| {
            let (pod_cpu, pod_memory) = requests(p);
            (cpu > 0 && pod_cpu * 2 >= cpu) || (memory > 0 && pod_memory * 2 >= memory)
        })
        .collect()
}

/// Evicts what may be evicted, non-critical pods first and large before small; returns how many pods still hold
/// the node. Once the grace period is over, or the instance is gone (`force`), pods are deleted instead, without a
/// grace period.
async fn drain(ctx: &Context, claim: &NodeClaim, node: &Node, force: bool) -> Result<usize, Error> {
    let node_name = node.name_any();
    let on_node: Vec<Arc<Pod>> =
        ctx.state.pods.state().into_iter().filter(|p| p.node_name() == Some(node_name.as_str())).collect();
    let evictable: Vec<&Arc<Pod>> = on_node.iter().filter(|p| pods::is_evictable(p)).collect();
    let terminating = on_node.iter().filter(|p| pods::is_terminating(p) && !pods::is_daemonset_pod(p)).count();
    if evictable.is_empty() {
        return Ok(terminating);
    }
    let grace_over = force
        || claim
            .spec
            .termination_grace_period
            .as_deref()
            .and_then(crate::duration::parse)
            .is_some_and(|grace| since_deletion(claim) > grace);
    // A do-not-disrupt pod is not evicted until terminationGracePeriod runs out (never, without one): it holds
    // its node, as Karpenter's drain does.
    let (held, movable): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
        evictable.iter().copied().partition(|p| !grace_over && pods::is_do_not_disrupt(p));
    if !held.is_empty() {
        tracing::debug!(node = %node_name, pods = held.len(), "do-not-disrupt pods wait for the grace period");
    }
    // Critical pods (DNS, CNI helpers) keep serving the others until those are gone.
    let non_critical: Vec<&Arc<Pod>> = movable.iter().copied().filter(|p| !pods::is_critical(p)).collect();
    let batch = if non_critical.is_empty() { movable.clone() } else { non_critical };
    // Forced, everything goes at once.
    let batch = if grace_over { batch } else { largest_first(&batch) };
    for pod in batch {
        let namespace = pod.namespace().unwrap_or_else(|| "default".into());
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ctx.kube_evictions.clone(), &namespace);
        let result = if grace_over {
            api.delete(&pod.name_any(), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
                .await
                .map(|_| ())
        } else {
            let evicted = api.evict(&pod.name_any(), &EvictParams::default()).await.map(|_| ());
            ctx.metrics.eviction_requested(match &evicted {
                Ok(()) => 200,
                Err(kube::Error::Api(status)) => status.code,
                Err(_) => 0,
            });
            evicted
        };
        match result {
            Ok(()) => {
                ctx.metrics.pod_drained(super::disruption::status::drain_reason(claim));
                tracing::debug!(pod = %pods::key(pod), node = %node_name, "evicted");
            }
            // 429: a PodDisruptionBudget forbids it now; 404: already gone; 403: its namespace is being deleted,
            // which deletes the pod anyway. All: look again next pass.
            Err(kube::Error::Api(status)) if [429, 404, 403].contains(&status.code) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(evictable.len() + terminating)
}

#[cfg(test)]
mod instance_tests {
    use std::time::Duration;

    use super::*;
    use crate::cloud::fake::FakeCloud;

    async fn described(cloud: &FakeCloud, id: &str) -> Option<InstanceSummary> {
        cloud.describe_instance(id).await.expect("a describe")
    }

    #[tokio::test]
    async fn the_recorded_instance_is_terminated_while_it_lives_and_then_left_alone() {
        let cloud = FakeCloud::default();
        cloud.add_instance("i-1", Some("default-a"), Duration::from_secs(600));
        let instance = described(&cloud, "i-1").await;
        let provider = Some("aws:///us-east-1a/i-1");
        let terminated = terminate_instance(&cloud, "demo", "default-a", provider, instance).await.expect("ok");
        assert_eq!(terminated.as_deref(), Some("i-1"));
        assert_eq!(cloud.state_of("i-1").as_deref(), Some("shutting-down"));
        // The next pass sees it going: nothing more to do, and no second TerminateInstances.
        let instance = described(&cloud, "i-1").await;
        let again = terminate_instance(&cloud, "demo", "default-a", provider, instance).await.expect("ok");
        assert_eq!(again, None);
        let terminates = cloud.calls().iter().filter(|c| c.starts_with("TerminateInstances")).count();
        assert_eq!(terminates, 1);
    }

    #[tokio::test]
    async fn a_nodeclaim_deleted_before_its_launch_was_recorded_still_takes_its_tagged_instance() {
        let cloud = FakeCloud::default();
        cloud.add_instance("i-2", Some("default-b"), Duration::from_secs(1));
        cloud.add_instance("i-3", Some("default-other"), Duration::from_secs(1));
        let terminated = terminate_instance(&cloud, "demo", "default-b", None, None).await.expect("ok");
        assert_eq!(terminated.as_deref(), Some("i-2"));
        assert_eq!(cloud.state_of("i-3").as_deref(), Some("running"));
        let none_left = terminate_instance(&cloud, "demo", "default-b", None, None).await.expect("ok");
        assert_eq!(none_left, None);
    }

    #[tokio::test]
    async fn an_instance_of_another_cluster_is_never_terminated_whatever_the_nodeclaim_says() {
        let cloud = FakeCloud::default();
        cloud.add_instance("i-5", Some("default-d"), Duration::from_secs(600));
        let instance = described(&cloud, "i-5").await;
        // The instance is the fake's cluster's ("demo"); this controller runs for "payments".
        let provider = Some("aws:///us-east-1a/i-5");
        let terminated = terminate_instance(&cloud, "payments", "default-d", provider, instance).await.expect("ok");
        assert_eq!(terminated, None);
        assert_eq!(cloud.state_of("i-5").as_deref(), Some("running"));
        assert!(!cloud.calls().iter().any(|c| c.starts_with("TerminateInstances")), "{:?}", cloud.calls());
    }

    #[tokio::test]
    async fn a_provider_id_that_names_no_ec2_instance_leaves_nothing_to_terminate() {
        let cloud = FakeCloud::default();
        cloud.add_instance("i-4", Some("default-c"), Duration::from_secs(600));
        let terminated =
            terminate_instance(&cloud, "demo", "default-c", Some("kind://node-1"), None).await.expect("ok");
        assert_eq!(terminated, None);
        assert!(cloud.calls().is_empty(), "no lookup by tag, no terminate: {:?}", cloud.calls());
        assert_eq!(cloud.state_of("i-4").as_deref(), Some("running"));
    }
}

#[cfg(test)]
mod drain_order_tests {
    use serde_json::json;

    use super::*;
    use crate::controller::testing::object;

    fn pod(name: &str, cpu: &str, memory: &str) -> Arc<Pod> {
        Arc::new(object(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"nodeName": "n1",
                     "containers": [{"name": "app", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
        })))
    }

    fn names(pods: Vec<&Arc<Pod>>) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn large_pods_are_evicted_before_small_ones_and_like_sized_pods_together() {
        let (large, small, tall) =
            (pod("large", "3500m", "28Gi"), pod("small", "900m", "3100Mi"), pod("tall", "100m", "20Gi"));
        let on_node = [&small, &large, &tall];
        // `tall` asks for little CPU but much memory: large by memory.
        assert_eq!(names(largest_first(&on_node)), vec!["large", "tall"]);
        // Once the large ones are gone, the rest go.
        assert_eq!(names(largest_first(&[&small])), vec!["small"]);
        let twins = [&small, &pod("small-2", "900m", "3100Mi")];
        assert_eq!(names(largest_first(&twins)), vec!["small", "small-2"]);
        let best_effort = [&pod("a", "0", "0"), &pod("b", "0", "0")];
        assert_eq!(largest_first(&best_effort).len(), 2, "pods without requests all go at once");
    }
}
