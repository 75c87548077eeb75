//! A NodeClaim's life: Launched (an instance exists) → Registered (its Node appeared and got the NodeClaim's
//! labels, taints and finalizer) → Initialized (the Node is Ready, startup taints gone). A launch that finds no
//! capacity deletes the NodeClaim so the provisioner plans again; any other failed launch is retried after a
//! backoff that doubles with each failure (5 s to 5 minutes), shown as the `Launched` condition and a
//! `LaunchFailed` Event naming the AWS call; launch and registration have timeouts.
//! Deletion is `termination`'s job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use super::conflict_backoff::ConflictBackoff;
use super::leader::Leadership;
use super::state::{ClusterState, Subscription};
use super::{Context, Error, cluster_snapshot, conditions, events, launch, termination};
use crate::apis::finalizers;
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::scheduling_input::resource_quantities;
use crate::names::{
    CAPACITY_TYPE_LABEL, LAST_LAUNCH_FAILURE_ANNOTATION, LAUNCH_FAILURES_ANNOTATION, NODEPOOL_LABEL,
    SECURITY_GROUPS_ANNOTATION, SUBNET_ANNOTATION, TERMINATION_FINALIZER, UNREGISTERED_TAINT_KEY, ZONE_LABEL,
};

pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(5 * 60);
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Waiting for a Node to register or become ready: its own events reconcile the NodeClaim at once (see `run`),
/// so this is only a safety net.
const NODE_WAIT_RECHECK: Duration = Duration::from_secs(10);

pub struct Reconciler {
    pub ctx: Arc<Context>,
    pub leadership: Leadership,
    pub conflicts: ConflictBackoff,
}

/// Reconciles every NodeClaim as it changes, and as the Node launched for it appears and changes (registration
/// and initialization wait for the Node, not a timer).
pub async fn run(
    ctx: Arc<Context>,
    leadership: Leadership,
    nodeclaims: Subscription<NodeClaim>,
    nodes: Subscription<Node>,
) {
    let claims = ctx.state.nodeclaims.clone();
    Controller::for_shared_stream(nodeclaims, ctx.state.nodeclaims.clone())
        .watches_shared_stream(nodes, move |node| claim_of(&claims, &node).map(|claim| ObjectRef::from_obj(&*claim)))
        .run(
            |claim, r: Arc<Reconciler>| async move {
                let name = claim.name_any();
                let reconciled =
                    super::measured(r.ctx.metrics.clone(), "nodeclaim.lifecycle", reconcile(claim, r.clone())).await;
                if reconciled.is_ok() {
                    r.conflicts.forget(&name);
                }
                reconciled
            },
            error_policy,
            Arc::new(Reconciler { ctx, leadership, conflicts: ConflictBackoff::default() }),
        )
        .for_each(|_| async {})
        .await;
}

/// The NodeClaim whose instance `node` runs on (same provider id).
fn claim_of(claims: &Store<NodeClaim>, node: &Node) -> Option<Arc<NodeClaim>> {
    let provider_id = node.spec.as_ref()?.provider_id.as_deref()?;
    claims.find(|c| c.status.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(provider_id))
}

/// A lost race (the Node changed while it was being registered, the kubelet updating its status) is retried
/// quietly, when the watch brings the newer copy or after a wait that grows with each conflict in a row; anything
/// else is worth a warning and a pause.
fn error_policy(claim: Arc<NodeClaim>, error: &Error, r: Arc<Reconciler>) -> Action {
    if error.is_conflict() {
        tracing::debug!(nodeclaim = %claim.name_any(), "changed by another writer meanwhile, retrying: {error}");
        return Action::requeue(r.conflicts.next(&claim.name_any()));
    }
    tracing::warn!(nodeclaim = %claim.name_any(), "reconcile failed, retrying: {error}");
    Action::requeue(Duration::from_secs(5))
}

fn age(claim: &NodeClaim, now: Timestamp) -> Duration {
    let Some(created) = claim.metadata.creation_timestamp.as_ref() else { return Duration::ZERO };
    Duration::try_from(now.duration_since(created.0)).unwrap_or(Duration::ZERO)
}

/// What a NodeClaim needs next, read from it and the caches alone: `reconcile` carries it out. Kept free of I/O
/// so that every turn of a NodeClaim's life is a plain unit test.
#[derive(Debug)]
enum Step {
    /// Deletion was asked for: drain, terminate, lift the finalizer (`termination`).
    Terminate,
    /// Not ours to terminate yet: the finalizer goes on first.
    AddFinalizer,
    /// No instance recorded yet.
    Launch,
    /// Launched; its Node has not appeared.
    AwaitNode,
    /// Launched long ago and no Node ever appeared: the NodeClaim goes, so the pods are planned again.
    ReplaceUnregistered,
    /// Its Node appeared: give it the NodeClaim's labels, taints and finalizer.
    Register(Arc<Node>),
    /// Its Node went away under it (deleted by hand, by the cloud) or is being deleted: the NodeClaim goes too.
    DeleteWithNode { node: String, reason: &'static str },
    /// Registered; its Node is not Ready yet or still carries a startup taint.
    AwaitInitialization,
    /// Registered and its Node is now initialized: say so.
    Initialize,
    /// Running: nothing to do.
    Running,
}

fn next_step(claim: &NodeClaim, state: &ClusterState, now: Timestamp) -> Step {
    if claim.metadata.deletion_timestamp.is_some() {
        return Step::Terminate;
    }
    if !finalizers::has(claim, TERMINATION_FINALIZER) {
        return Step::AddFinalizer;
    }
    let Some(status) = claim.status.as_ref() else { return Step::Launch };
    let Some(provider_id) = status.provider_id.as_deref() else { return Step::Launch };
    let Some(node_name) = status.node_name.as_deref() else {
        return match state.node_by_provider_id(provider_id) {
            Some(node) => Step::Register(node),
            None if age(claim, now) > REGISTRATION_TIMEOUT => Step::ReplaceUnregistered,
            None => Step::AwaitNode,
        };
    };
    let Some(node) = state.node(node_name) else {
        return Step::DeleteWithNode { node: node_name.into(), reason: "its Node is gone" };
    };
    if node.metadata.deletion_timestamp.is_some() {
        return Step::DeleteWithNode { node: node_name.into(), reason: "its Node is being deleted" };
    }
    if conditions::is_true(&status.conditions, "Initialized") {
        Step::Running
    } else if initialized(claim, &node) {
        Step::Initialize
    } else {
        Step::AwaitInitialization
    }
}

async fn reconcile(claim: Arc<NodeClaim>, r: Arc<Reconciler>) -> Result<Action, Error> {
    if !r.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let ctx = &r.ctx;
    let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
    let name = claim.name_any();
    let conditions_now = || claim.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    match next_step(&claim, &ctx.state, Timestamp::now()) {
        Step::Terminate => termination::finalize(ctx, &claim).await,
        Step::AddFinalizer => {
            if let Some(patch) = finalizers::adding(claim.as_ref(), TERMINATION_FINALIZER) {
                // A 409 (the claim changed since it was read) fails this reconcile, which runs again on the newer
                // one.
                api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
            }
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Step::Launch => launch_step(ctx, &api, &claim).await,
        Step::AwaitNode | Step::AwaitInitialization => Ok(Action::requeue(NODE_WAIT_RECHECK)),
        Step::ReplaceUnregistered => {
            tracing::warn!(nodeclaim = %name, "no node registered within 15 minutes; replacing the NodeClaim");
            api.delete(&name, &DeleteParams::default()).await?;
            Ok(Action::await_change())
        }
        Step::Register(node) => {
            register(ctx, &claim, &node).await?;
            let mut conds = conditions_now();
            conditions::set(&mut conds, "Registered", true, "Registered", "");
            patch_status(&api, &name, json!({"nodeName": node.name_any(), "conditions": conds})).await?;
            let label = |key: &str| claim.labels().get(key).cloned().unwrap_or_default();
            ctx.metrics.node_created(&label(NODEPOOL_LABEL), &label(ZONE_LABEL));
            Ok(Action::requeue(Duration::from_millis(500)))
        }
        Step::DeleteWithNode { node, reason } => {
            tracing::info!(nodeclaim = %name, node = %node, "{reason}; deleting the NodeClaim");
            api.delete(&name, &DeleteParams::default()).await?;
            Ok(Action::await_change())
        }
        Step::Initialize => {
            let mut conds = conditions_now();
            conditions::set(&mut conds, "Initialized", true, "Initialized", "");
            conditions::set(&mut conds, "Ready", true, "Ready", "");
            patch_status(&api, &name, json!({"conditions": conds})).await?;
            Ok(Action::requeue(Duration::from_secs(30)))
        }
        Step::Running => Ok(Action::requeue(Duration::from_secs(30))),
    }
}

async fn patch_status(api: &Api<NodeClaim>, name: &str, status: serde_json::Value) -> Result<(), Error> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    Ok(())
}

/// How long after its `failures`-th failed launch a NodeClaim tries again: 5 s, doubling, at most 5 minutes.
pub fn launch_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(6);
    (Duration::from_secs(5) * 2u32.pow(doublings)).min(Duration::from_secs(300))
}

/// The NodeClaim's failed launches so far, and how long until the next may start (zero: now).
fn launch_wait(claim: &NodeClaim, now: Timestamp) -> (u32, Duration) {
    let annotations = claim.annotations();
    let failures = claim.launch_failures();
    let last = annotations.get(LAST_LAUNCH_FAILURE_ANNOTATION).and_then(|v| v.parse::<Timestamp>().ok());
    let Some(last) = last.filter(|_| failures > 0) else { return (failures, Duration::ZERO) };
    let since = Duration::try_from(now.duration_since(last)).unwrap_or(Duration::ZERO);
    (failures, launch_backoff(failures).saturating_sub(since))
}

async fn launch_step(ctx: &Context, api: &Api<NodeClaim>, claim: &NodeClaim) -> Result<Action, Error> {
    let name = claim.name_any();
    // Every change of the NodeClaim (our own patches included) brings it back here: the backoff holds anyway.
    let (failures, wait) = launch_wait(claim, Timestamp::now());
    if !wait.is_zero() {
        return Ok(Action::requeue(wait));
    }
    match launch::launch(ctx, claim).await {
        Ok(launched) => {
            let Some(info) = ctx.instance_type(&launched.instance_type) else {
                return Err(Error::Invalid(format!("launched unknown instance type {}", launched.instance_type)));
            };
            let class = ctx.state.nodeclass(&claim.spec.node_class_ref.name);
            let (capacity, allocatable) = cluster_snapshot::node_resources(ctx, class.as_deref(), &info);
            let mut labels: BTreeMap<String, String> =
                info.labels().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            labels.insert(ZONE_LABEL.into(), launched.zone.clone());
            labels.insert(CAPACITY_TYPE_LABEL.into(), launched.capacity_type.as_str().into());
            let mut conds = claim.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
            conditions::set(&mut conds, "Launched", true, "Launched", "");
            conditions::awaiting(&mut conds, &["Registered", "Initialized", "Ready"]);
            patch_status(
                api,
                &name,
                json!({
                    "providerID": launched.provider_id(),
                    "imageID": launched.image_id,
                    "capacity": resource_quantities(&capacity),
                    "allocatable": resource_quantities(&allocatable),
                    "conditions": conds,
                }),
            )
            .await?;
            // After the status: the event this patch causes then finds the NodeClaim launched.
            let mut annotations = serde_json::Map::new();
            if let Some(subnet) = &launched.subnet_id {
                annotations.insert(SUBNET_ANNOTATION.into(), subnet.clone().into());
            }
            if !launched.security_group_ids.is_empty() {
                annotations.insert(SECURITY_GROUPS_ANNOTATION.into(), launched.security_group_ids.join(",").into());
            }
            let metadata = json!({"metadata": {"labels": labels, "annotations": annotations}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(metadata)).await?;
            tracing::info!(
                nodeclaim = %name,
                instance = %launched.instance_id,
                instance_type = %launched.instance_type,
                zone = %launched.zone,
                capacity_type = launched.capacity_type.as_str(),
                "launched"
            );
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Err(error) if error.is_insufficient_capacity() => {
            events::on_nodeclaim(
                &ctx.recorder,
                claim,
                EventType::Warning,
                "InsufficientCapacityError",
                &error.to_string(),
            )
            .await;
            tracing::info!(nodeclaim = %name, "{error}; deleting it so the next round plans elsewhere");
            api.delete(&name, &DeleteParams::default()).await?;
            Ok(Action::await_change())
        }
        Err(error) => {
            let mut conds = claim.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
            if conditions::set(&mut conds, "Launched", false, "LaunchFailed", &error.to_string()) {
                patch_status(api, &name, json!({"conditions": conds})).await?;
            }
            // Kept while pods wait for it: a replacement would fail the same way, and each new NodeClaim would
            // start its backoff over. Once no pod is planned onto it any more, it goes.
            let wanted = ctx.nominated.lock().map(|n| n.is_target(&name)).unwrap_or(true);
            if age(claim, Timestamp::now()) > LAUNCH_TIMEOUT && !wanted {
                tracing::warn!(nodeclaim = %name, "not launched within 5 minutes ({error}) and no pod waits for it; deleting it");
                api.delete(&name, &DeleteParams::default()).await?;
                return Ok(Action::await_change());
            }
            let failures = failures + 1;
            let backoff = launch_backoff(failures);
            let note = format!("{error}; launch {failures} failed, the next in {}s", backoff.as_secs());
            tracing::warn!(nodeclaim = %name, "{note}");
            events::on_nodeclaim(&ctx.recorder, claim, EventType::Warning, "LaunchFailed", &note).await;
            let annotations = json!({"metadata": {"annotations": {
                LAUNCH_FAILURES_ANNOTATION: failures.to_string(),
                LAST_LAUNCH_FAILURE_ANNOTATION: Timestamp::now().to_string(),
            }}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(annotations)).await?;
            Ok(Action::requeue(backoff))
        }
    }
}

/// Gives the Node what its NodeClaim asked for: labels, taints, the termination finalizer; and takes away the
/// `karpenter.sh/unregistered` taint.
async fn register(ctx: &Context, claim: &NodeClaim, node: &Node) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(ctx.kube.clone());
    let mut labels = node.labels().clone();
    for (key, value) in claim.labels() {
        labels.insert(key.clone(), value.clone());
    }
    let mut taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != UNREGISTERED_TAINT_KEY)
        .collect();
    for wanted in claim.spec.taints.iter().chain(&claim.spec.startup_taints) {
        if !taints.iter().any(|t| t.key == wanted.key && t.effect == wanted.effect) {
            taints.push(wanted.clone());
        }
    }
    let mut node_finalizers = node.finalizers().to_vec();
    if !node_finalizers.iter().any(|f| f == TERMINATION_FINALIZER) {
        node_finalizers.push(TERMINATION_FINALIZER.into());
    }
    let patch = json!({
        "metadata": {"labels": labels, "finalizers": node_finalizers, "resourceVersion": node.resource_version()},
        "spec": {"taints": taints},
    });
    // A concurrent change of the Node (409) fails this pass; the retry patches the fresh copy. Registration is
    // recorded only once the patch landed.
    nodes.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
    tracing::info!(nodeclaim = %claim.name_any(), node = %node.name_any(), "registered");
    Ok(())
}

/// Ready, no startup taint left, and every extended resource the NodeClaim asked for is there.
fn initialized(claim: &NodeClaim, node: &Node) -> bool {
    let status = node.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
    let startup_left = claim
        .spec
        .startup_taints
        .iter()
        .any(|st| taints.is_some_and(|t| t.iter().any(|t| t.key == st.key && t.effect == st.effect)));
    let allocatable = status.and_then(|s| s.allocatable.as_ref());
    let extended_present = claim
        .spec
        .resources
        .requests
        .keys()
        .filter(|k| k.contains('/'))
        .all(|k| allocatable.is_some_and(|a| a.get(k).is_some_and(|q| q.0 != "0")));
    ready && !startup_left && extended_present
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{Objects, object};

    const NOW: &str = "2026-12-02T15:00:00Z";

    /// A NodeClaim `created` (RFC 3339) with these finalizers and this status.
    fn nodeclaim(created: &str, finalizers: &[&str], status: serde_json::Value) -> NodeClaim {
        object(json!({
            "metadata": {"name": "c", "creationTimestamp": created, "finalizers": finalizers},
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "d"},
                     "startupTaints": [{"key": "cni-starting", "effect": "NoSchedule"}]},
            "status": status,
        }))
    }

    fn node(name: &str, ready: bool, taints: serde_json::Value) -> Node {
        object(json!({
            "metadata": {"name": name},
            "spec": {"providerID": "aws:///us-east-1a/i-1", "taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
    }

    fn step(claim: &NodeClaim, nodes: Vec<Node>) -> Step {
        let state = Objects { nodes, ..Objects::default() }.into_state();
        next_step(claim, &state, NOW.parse().expect("a time"))
    }

    #[test]
    fn a_nodeclaim_is_launched_once_it_carries_the_termination_finalizer() {
        let fresh = nodeclaim("2026-12-02T14:59:59Z", &[], json!({}));
        assert!(matches!(step(&fresh, vec![]), Step::AddFinalizer), "{:?}", step(&fresh, vec![]));
        let ours = nodeclaim("2026-12-02T14:59:59Z", &[TERMINATION_FINALIZER], json!({}));
        assert!(matches!(step(&ours, vec![]), Step::Launch));
        let mut deleted = ours.clone();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(NOW.parse().expect("a time")));
        assert!(matches!(step(&deleted, vec![node("n", true, json!([]))]), Step::Terminate));
    }

    #[test]
    fn a_launched_nodeclaim_waits_for_its_node_and_is_replaced_after_fifteen_minutes_without_one() {
        let launched = json!({"providerID": "aws:///us-east-1a/i-1"});
        let recent = nodeclaim("2026-12-02T14:50:00Z", &[TERMINATION_FINALIZER], launched.clone());
        assert!(matches!(step(&recent, vec![]), Step::AwaitNode));
        let old = nodeclaim("2026-12-02T14:40:00Z", &[TERMINATION_FINALIZER], launched);
        assert!(matches!(step(&old, vec![]), Step::ReplaceUnregistered));
        // Its Node appears (same provider id, any name): it registers, however old.
        match step(&old, vec![node("ip-10-0-0-1", false, json!([]))]) {
            Step::Register(node) => assert_eq!(node.name_any(), "ip-10-0-0-1"),
            other => panic!("expected Register, got {other:?}"),
        }
    }

    #[test]
    fn a_registered_nodeclaim_is_initialized_when_its_node_is_ready_without_startup_taints() {
        let registered = |conditions: serde_json::Value| {
            nodeclaim(
                "2026-12-02T14:50:00Z",
                &[TERMINATION_FINALIZER],
                json!({"providerID": "aws:///us-east-1a/i-1", "nodeName": "n", "conditions": conditions}),
            )
        };
        let claim = registered(json!([]));
        let startup_taint = json!([{"key": "cni-starting", "effect": "NoSchedule"}]);
        assert!(matches!(step(&claim, vec![node("n", false, json!([]))]), Step::AwaitInitialization));
        assert!(matches!(step(&claim, vec![node("n", true, startup_taint)]), Step::AwaitInitialization));
        assert!(matches!(step(&claim, vec![node("n", true, json!([]))]), Step::Initialize));
        let initialized =
            registered(json!([{"type": "Initialized", "status": "True", "reason": "Initialized", "message": "",
                  "lastTransitionTime": NOW}]));
        assert!(matches!(step(&initialized, vec![node("n", true, json!([]))]), Step::Running));
    }

    #[test]
    fn a_nodeclaim_whose_node_is_gone_or_going_goes_too() {
        let claim = nodeclaim(
            "2026-12-02T14:50:00Z",
            &[TERMINATION_FINALIZER],
            json!({"providerID": "aws:///us-east-1a/i-1", "nodeName": "n",
                   "conditions": [{"type": "Initialized", "status": "True", "reason": "Initialized", "message": "",
                  "lastTransitionTime": NOW}]}),
        );
        assert!(matches!(step(&claim, vec![]), Step::DeleteWithNode { reason: "its Node is gone", .. }));
        let mut going = node("n", true, json!([]));
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(NOW.parse().expect("a time")));
        going.metadata.finalizers = Some(vec![TERMINATION_FINALIZER.into()]);
        assert!(matches!(step(&claim, vec![going]), Step::DeleteWithNode { reason: "its Node is being deleted", .. }));
    }

    #[test]
    fn a_node_reconciles_the_nodeclaim_whose_instance_it_runs_on() {
        let (store, mut writer) = kube::runtime::reflector::store::<NodeClaim>();
        for (name, provider_id) in
            [("a", Some("aws:///us-east-1a/i-1")), ("b", Some("aws:///us-east-1b/i-2")), ("c", None)]
        {
            let claim: NodeClaim = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "d"}},
                "status": {"providerID": provider_id},
            }))
            .expect("a NodeClaim");
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(claim));
        }
        let node = |provider_id: Option<&str>| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"providerID": provider_id}}))
                .expect("a Node")
        };
        let claimed = |provider_id| claim_of(&store, &node(provider_id)).map(|c| c.name_any());
        assert_eq!(claimed(Some("aws:///us-east-1b/i-2")).as_deref(), Some("b"));
        assert_eq!(claimed(Some("aws:///us-east-1a/i-9")), None);
        assert_eq!(claimed(None), None);
    }

    #[test]
    fn a_failed_launch_waits_longer_each_time_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| launch_backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn the_wait_counts_from_the_last_failure() {
        let now: Timestamp = "2026-12-02T15:00:00Z".parse().expect("a time");
        let claim = |failures: &str, last: &str| -> NodeClaim {
            serde_json::from_value(json!({
                "metadata": {"name": "c", "annotations": {
                    LAUNCH_FAILURES_ANNOTATION: failures, LAST_LAUNCH_FAILURE_ANNOTATION: last}},
                "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "d"}},
            }))
            .expect("a NodeClaim")
        };
        // Third failure 15 s ago: 20 s backoff, 5 s left.
        assert_eq!(launch_wait(&claim("3", "2026-12-02T14:59:45Z"), now), (3, Duration::from_secs(5)));
        // Long enough ago: now.
        assert_eq!(launch_wait(&claim("3", "2026-12-02T14:00:00Z"), now), (3, Duration::ZERO));
        // Nothing readable recorded: now, from zero.
        assert_eq!(launch_wait(&claim("x", "yesterday"), now), (0, Duration::ZERO));
        let fresh: NodeClaim = serde_json::from_value(json!({
            "metadata": {"name": "c"},
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "d"}},
        }))
        .expect("a NodeClaim");
        assert_eq!(launch_wait(&fresh, now), (0, Duration::ZERO));
    }
}
