//! Shadow mode (`controller --observe`): the controller runs beside another autoscaler (Karpenter, Cluster
//! Autoscaler), watches the same cluster, plans for the pending pods and decides disruption as it would, and
//! publishes what it would do (metrics, and Events on the pods, NodePools and NodeClaims) while changing nothing:
//! no NodeClaim, no instance, no status, no taint, no Lease. A team compares its figures with what the other
//! autoscaler did before switching.
//!
//! What runs: the caches, the catalog, the provisioner's planning (`report_plan` in place of creating
//! NodeClaims), the EC2NodeClass resolution (kept in memory, `ClusterState::observe_nodeclass_status`) and the
//! disruption decision (`report_disruption` in place of carrying it out). What does not: leader election, the
//! NodeClaim lifecycle, termination, garbage collection, interruption handling, expiry and the status writers.
//! `read_only` refuses whatever would still try to change something.

pub mod read_only;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::pod_notes::{Note, PodNotes};
use super::{Context, events};
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::pod::Pod;
use crate::disruption::Command;
use crate::scheduling::Plan;
use crate::telemetry::ObservedLaunch;

/// What a pod is told it would get.
const WOULD_LAUNCH: Note = Note { type_: EventType::Normal, reason: "WouldLaunch", action: "Observing" };

/// Publishes what a plan would launch: the `nodesmith_observe_*` gauges, an Event on each pod planned onto a new
/// node (which node, and its price), and one on each NodePool that would grow (how many nodes, which, and $/h).
/// Each Event is written again only when what it says changes, or every minute (`PodNotes`).
pub async fn report_plan(
    ctx: &Context,
    plan: &Plan,
    all_pods: &HashMap<String, Arc<Pod>>,
    pod_notes: &mut PodNotes,
    pool_notes: &mut PodNotes,
) {
    let launches: Vec<ObservedLaunch<'_>> = plan
        .new_nodes
        .iter()
        .map(|node| ObservedLaunch {
            nodepool: &node.nodepool,
            instance_type: &node.instance_type,
            capacity_type: node.capacity_type.as_str(),
            zone: &node.zone,
            usd_per_hour: node.price_per_hour,
        })
        .collect();
    ctx.metrics.observe_plan(&launches);

    // One line per new node, told to each pod planned onto it.
    let lines: Vec<String> = plan
        .new_nodes
        .iter()
        .map(|node| {
            format!(
                "nodesmith (observing) would launch a {} {} node in {} (${:.4}/h) of NodePool {} for this pod and {} other(s)",
                node.instance_type,
                node.capacity_type.as_str(),
                node.zone,
                node.price_per_hour,
                node.nodepool,
                node.pods.len().saturating_sub(1),
            )
        })
        .collect();
    let notes: Vec<_> = plan
        .new_nodes
        .iter()
        .zip(&lines)
        .flat_map(|(node, line)| {
            let pods = node.pods.iter().filter_map(|key| all_pods.get(key));
            pods.map(move |pod| (super::pods::key(pod), pod.object_ref(&()), line.as_str()))
        })
        .collect();
    pod_notes.tell(ctx, &WOULD_LAUNCH, &notes).await;

    let mut pools: BTreeMap<&str, Vec<&crate::scheduling::NewNode>> = BTreeMap::new();
    for node in &plan.new_nodes {
        pools.entry(node.nodepool.as_str()).or_default().push(node);
    }
    let summaries: Vec<(String, ObjectReference, String)> = pools
        .iter()
        .filter_map(|(pool, nodes)| {
            let object = ctx.state.nodepool(pool)?.object_ref(&());
            Some((format!("nodepool/{pool}"), object, pool_summary(nodes)))
        })
        .collect();
    pool_notes.keep_only(&summaries.iter().map(|(key, _, _)| key.clone()).collect());
    let notes: Vec<_> =
        summaries.iter().map(|(key, object, line)| (key.clone(), object.clone(), line.as_str())).collect();
    pool_notes.tell(ctx, &WOULD_LAUNCH, &notes).await;
}

/// "would launch 3 nodes for 7 pods ($0.2880/h): 2 × c6a.large on-demand in us-east-1a, 1 × …".
fn pool_summary(nodes: &[&crate::scheduling::NewNode]) -> String {
    let mut offerings: BTreeMap<(String, &str, &str), usize> = BTreeMap::new();
    for node in nodes {
        *offerings.entry((node.instance_type.clone(), node.capacity_type.as_str(), node.zone.as_str())).or_default() +=
            1;
    }
    let pods: usize = nodes.iter().map(|n| n.pods.len()).sum();
    let price: f64 = nodes.iter().map(|n| n.price_per_hour).sum();
    let each: Vec<String> = offerings
        .iter()
        .map(|((instance_type, capacity_type, zone), count)| {
            format!("{count} × {instance_type} {capacity_type} in {zone}")
        })
        .collect();
    format!(
        "nodesmith (observing) would launch {} node(s) for {pods} pending pod(s) (${price:.4}/h): {}",
        nodes.len(),
        each.join(", ")
    )
}

/// Publishes the disruption command a pass found, in place of carrying it out: the
/// `nodesmith_observe_disruption_candidates` gauge, and an Event on each candidate NodeClaim.
pub async fn report_disruption(ctx: &Context, command: Option<&Command>, claims: &HashMap<String, Arc<NodeClaim>>) {
    let Some(command) = command else {
        ctx.metrics.observe_disruption(&[]);
        return;
    };
    let reason = command.reason.metric_label();
    let candidates: Vec<(&str, &str, &str)> = command
        .candidates
        .iter()
        .filter_map(|name| claims.get(name))
        .map(|claim| {
            let pool = claim.labels().get(crate::names::NODEPOOL_LABEL).map_or("", String::as_str);
            (pool, command.decision(), reason)
        })
        .collect();
    ctx.metrics.observe_disruption(&candidates);
    let note = format!(
        "nodesmith (observing) would {} this node ({reason}): ${:.4}/h → ${:.4}/h with {} replacement(s)",
        command.decision(),
        command.candidates_price,
        command.replacements_price,
        command.replacements.len(),
    );
    for claim in command.candidates.iter().filter_map(|name| claims.get(name)) {
        events::on_nodeclaim(&ctx.recorder, claim, EventType::Normal, "WouldDisrupt", &note).await;
    }
    tracing::info!(candidates = ?command.candidates, decision = command.decision(), reason, "observing: would disrupt");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CapacityType;
    use crate::scheduling::NewNode;

    fn node(instance_type: &str, zone: &str, pods: usize, price: f64) -> NewNode {
        NewNode {
            nodepool: "default".into(),
            instance_type: instance_type.into(),
            zone: zone.into(),
            capacity_type: CapacityType::OnDemand,
            price_per_hour: price,
            pods: (0..pods).map(|i| format!("shop/web-{i}")).collect(),
            requests: Default::default(),
            allocatable: Default::default(),
            instance_type_options: vec![instance_type.into()],
            zones: vec![zone.into()],
            capacity_types: vec![CapacityType::OnDemand],
            labels: Default::default(),
            min_values_relaxed: false,
        }
    }

    #[test]
    fn the_launch_gauges_hold_the_last_plan_only() {
        let metrics = crate::telemetry::Metrics::default();
        let launch = |instance_type| ObservedLaunch {
            nodepool: "default",
            instance_type,
            capacity_type: "spot",
            zone: "us-east-1a",
            usd_per_hour: 0.05,
        };
        metrics.observe_plan(&[launch("m5.large"), launch("m5.large"), launch("c6a.large")]);
        let text = metrics.encode();
        let series = r#"nodesmith_observe_launches{nodepool="default",instance_type="m5.large",capacity_type="spot",zone="us-east-1a"} 2"#;
        assert!(text.contains(series), "{text}");
        assert!(text.contains(r#"nodesmith_observe_launch_price_dollars_per_hour{nodepool="default"} 0.15"#), "{text}");
        metrics.observe_plan(&[launch("c6a.large")]);
        let text = metrics.encode();
        assert!(!text.contains(r#"instance_type="m5.large""#), "the earlier plan's series went: {text}");
        metrics.observe_plan(&[]);
        assert!(!metrics.encode().contains("nodesmith_observe_launches{"), "nothing waits, nothing would launch");
    }

    #[test]
    fn a_pool_is_told_how_many_nodes_of_each_offering_and_what_they_cost() {
        let a = node("c6a.large", "us-east-1a", 2, 0.0765);
        let b = node("c6a.large", "us-east-1a", 3, 0.0765);
        let c = node("m5.large", "us-east-1b", 1, 0.096);
        let summary = pool_summary(&[&a, &b, &c]);
        assert_eq!(
            summary,
            "nodesmith (observing) would launch 3 node(s) for 6 pending pod(s) ($0.2490/h): \
             2 × c6a.large on-demand in us-east-1a, 1 × m5.large on-demand in us-east-1b"
        );
    }
}
