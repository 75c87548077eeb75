//! Carrying a disruption command out: launch the replacements and taint the candidates `karpenter.sh/disrupted`
//! (nothing new lands on them, pods moved off other nodes included), and once the replacements are Initialized
//! delete the candidates (termination drains within PodDisruptionBudgets, and terminates). The wait runs in the
//! background, as Karpenter's orchestration queue: the next pass need not wait for a launch, and sees the
//! candidates as going (`InProgress`). If a replacement does not come up, the candidates' taint is lifted and they
//! serve on. A controller killed at any step converges: a replacement without its candidates' deletion is a node
//! like any other (consolidated if it stays empty), a taint no command holds any more is lifted by a later pass,
//! and a deleted candidate's termination resumes from its finalizer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::events::EventType;

use super::super::events;
use super::super::nodeclaim_lifecycle::LAUNCH_TIMEOUT;
use super::super::{Context, Error, conditions, disrupted_taint, is_not_found};
use super::in_progress::InProgress;
use super::snapshot::Gathered;
use crate::apis::nodeclaim::NodeClaim;
use crate::disruption::{Command, Method};
use crate::names::{CAPACITY_TYPE_LABEL, NODEPOOL_LABEL, REPLACES_ANNOTATION};

/// How long replacements may take to be Initialized before the command is given up.
const REPLACEMENT_TIMEOUT: Duration = Duration::from_secs(LAUNCH_TIMEOUT.as_secs() + 5 * 60);
/// How long a command stays in progress after its candidates' deletion, at most, for the cache to see it.
const DELETION_SEEN_WITHIN: Duration = Duration::from_secs(10);
/// How long `start` waits, at most, for the cache to show what it did before the next pass may look.
const START_SEEN_WITHIN: Duration = Duration::from_secs(2);

/// Starts `command`: without replacements its candidates are deleted now; with some, the replacements are created
/// and the candidates are deleted in the background once they are Initialized. Returns once the cache shows the
/// replacements (or the deletions), so that the next pass may follow at once without counting a budget or room
/// from before the command.
pub async fn start(
    ctx: &Arc<Context>,
    gathered: &Gathered,
    command: &Command,
    in_progress: &InProgress,
) -> Result<(), Error> {
    let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
    let candidates: Vec<NodeClaim> = ctx
        .state
        .nodeclaims
        .state()
        .into_iter()
        .filter(|c| command.candidates.contains(&c.name_any()))
        .map(|c| c.as_ref().clone())
        .collect();
    let mut replacements = Vec::new();
    for node in &command.replacements {
        let Some(pool) = gathered.pool_objects.get(&node.nodepool) else {
            return Err(Error::Invalid(format!("NodePool {} of a replacement is gone", node.nodepool)));
        };
        let class = ctx.state.nodeclass(&pool.spec.template.spec.node_class_ref.name);
        let mut claim = crate::apis::planned_nodeclaim::for_planned_node(node, pool, class.as_deref());
        claim.annotations_mut().insert(REPLACES_ANNOTATION.into(), command.candidates.join(","));
        let created = api.create(&PostParams::default(), &claim).await?;
        ctx.metrics.nodeclaim_created(command.reason.metric_label(), &node.nodepool, node.min_values_relaxed);
        tracing::info!(nodeclaim = %created.name_any(), instance_type = %node.instance_type, replaces = ?command.candidates, "launching a replacement");
        replacements.push(created.name_any());
    }
    if replacements.is_empty() {
        delete_candidates(ctx, command, &candidates).await?;
        until_cache_shows(ctx, &[], &command.candidates, START_SEEN_WITHIN).await;
        return Ok(());
    }
    // In progress before the taints go on, so that no pass lifts them as left over.
    in_progress.add(&command.candidates);
    // Tainted now, not at deletion: until then, pods evicted from other nodes must not land on these. After the
    // replacements, so that the provisioner, seeing these nodes' pods in need of a place, finds their room.
    set_taints(ctx, &candidates, true).await;
    for candidate in &candidates {
        let note = format!("launching {} to replace it: {}", replacements.join(", "), what(command));
        events::on_nodeclaim(&ctx.recorder, candidate, EventType::Normal, "DisruptionLaunching", &note).await;
    }
    let created = replacements.clone();
    let (background, command, in_progress) = (ctx.clone(), command.clone(), in_progress.clone());
    tokio::spawn(async move {
        finish(&background, &command, &candidates, &replacements).await;
        in_progress.remove(&command.candidates);
    });
    until_cache_shows(ctx, &created, &[], START_SEEN_WITHIN).await;
    Ok(())
}

/// Whether the NodeClaims of the cache show what a command did: every one `created` there, every one `deleted`
/// being deleted or gone.
fn cache_shows(claims: &[Arc<NodeClaim>], created: &[String], deleted: &[String]) -> bool {
    let find = |name: &String| claims.iter().find(|c| c.metadata.name.as_ref() == Some(name));
    created.iter().all(|name| find(name).is_some())
        && deleted.iter().all(|name| find(name).is_none_or(|c| c.metadata.deletion_timestamp.is_some()))
}

/// Waits until the cache shows what a command did (`cache_shows`), for `within` at most.
async fn until_cache_shows(ctx: &Context, created: &[String], deleted: &[String], within: Duration) {
    let started = Instant::now();
    while !cache_shows(&ctx.state.nodeclaims.state(), created, deleted) && started.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The background half: waits for the replacements, then deletes the candidates (or leaves them, and says why).
async fn finish(ctx: &Context, command: &Command, candidates: &[NodeClaim], replacements: &[String]) {
    if let Err(why) = wait_initialized(ctx, replacements).await {
        tracing::warn!(candidates = ?command.candidates, "replacement failed, leaving the candidates alone: {why}");
        set_taints(ctx, candidates, false).await;
        for candidate in candidates {
            let note = format!("not disrupted: its replacement {why}");
            events::on_nodeclaim(&ctx.recorder, candidate, EventType::Warning, "DisruptionBlocked", &note).await;
        }
        ctx.metrics.disruption_queue_failure(
            command.decision(),
            command.reason.metric_label(),
            command.method.consolidation_type(),
        );
        return;
    }
    if let Err(error) = delete_candidates(ctx, command, candidates).await {
        tracing::warn!(candidates = ?command.candidates, "deleting the candidates of a disruption failed: {error}");
        return;
    }
    // In progress until the cache has seen the deletions, so no pass takes a deleted candidate for a live one.
    until_cache_shows(ctx, &[], &command.candidates, DELETION_SEEN_WITHIN).await;
}

/// Taints the candidates' nodes (`tainted`) or lifts the taint, as the cache has the nodes. A write that fails is
/// logged and left: termination taints at deletion anyway, and a taint left on a node that no command holds is
/// lifted by a later pass (`lift_stale_taints`).
async fn set_taints(ctx: &Context, candidates: &[NodeClaim], tainted: bool) {
    let nodes =
        candidates.iter().filter_map(|c| c.status.as_ref()?.node_name.as_deref()).filter_map(|n| ctx.state.node(n));
    for node in nodes {
        let written =
            if tainted { disrupted_taint::taint(ctx, &node).await } else { disrupted_taint::lift(ctx, &node).await };
        match written {
            Ok(outcome) => tracing::debug!(node = %node.name_any(), tainted, ?outcome, "disrupted taint"),
            Err(error) => tracing::warn!(node = %node.name_any(), "could not change the disrupted taint: {error}"),
        }
    }
}

fn what(command: &Command) -> String {
    match command.method {
        Method::Drift => command.reason.as_str().to_string(),
        method => format!("{} ({} consolidation)", command.reason.as_str(), method.consolidation_type()),
    }
}

async fn delete_candidates(ctx: &Context, command: &Command, candidates: &[NodeClaim]) -> Result<(), Error> {
    let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
    let what = what(command);
    for candidate in candidates {
        let name = candidate.name_any();
        super::status::set_disruption_reason(ctx, candidate, command.reason.as_str()).await?;
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => continue,
            Err(error) => return Err(error.into()),
        }
        let labels = candidate.labels();
        let label = |key: &str| labels.get(key).map_or("", String::as_str);
        ctx.metrics.nodeclaim_disrupted(
            command.reason.metric_label(),
            label(NODEPOOL_LABEL),
            label(CAPACITY_TYPE_LABEL),
        );
        events::on_nodeclaim(
            &ctx.recorder,
            candidate,
            EventType::Normal,
            "DisruptionTerminating",
            &format!("disrupting: {what}"),
        )
        .await;
        tracing::info!(nodeclaim = %name, reason = command.reason.as_str(), method = ?command.method, "disrupting");
    }
    let pools: std::collections::BTreeSet<&str> =
        candidates.iter().filter_map(|c| c.labels().get(NODEPOOL_LABEL).map(String::as_str)).collect();
    ctx.metrics.disruption_decision(
        &pools.into_iter().collect::<Vec<_>>(),
        command.decision(),
        command.reason.metric_label(),
        command.method.consolidation_type(),
    );
    Ok(())
}

/// Waits until every replacement is Initialized; fails when one is deleted (its launch failed) or time runs out.
async fn wait_initialized(ctx: &Context, names: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let mut seen = std::collections::HashSet::new();
    loop {
        let claims = ctx.state.nodeclaims.state();
        let mut ready = 0;
        for name in names {
            let claim = claims.iter().find(|c| &c.name_any() == name);
            if claim.is_some() {
                seen.insert(name);
            }
            match claim {
                Some(c) if c.metadata.deletion_timestamp.is_some() => return Err(format!("{name} is being deleted")),
                Some(c) if c.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, "Initialized")) => {
                    ready += 1;
                }
                // Not in the cache yet right after creation: wait; gone once seen, or long after: it went (its
                // launch failed, someone deleted it).
                None if seen.contains(name) || started.elapsed() > Duration::from_secs(30) => {
                    return Err(format!("{name} is gone"));
                }
                _ => {}
            }
        }
        if ready == names.len() {
            return Ok(());
        }
        if started.elapsed() > REPLACEMENT_TIMEOUT {
            return Err(format!("was not initialized within {} minutes", REPLACEMENT_TIMEOUT.as_secs() / 60));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controller::testing::object;

    fn claim(name: &str, deleting: bool) -> Arc<NodeClaim> {
        let mut metadata = json!({"name": name});
        if deleting {
            metadata["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
        }
        Arc::new(object(json!({
            "metadata": metadata,
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}},
        })))
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_cache_shows_a_command_once_its_replacements_are_there_and_its_candidates_going() {
        let claims = [claim("old", false), claim("going", true), claim("new", false)];
        assert!(cache_shows(&claims, &names(&["new"]), &names(&["going", "gone"])));
        // A replacement created but not in the cache yet, a candidate deleted but not seen so.
        assert!(!cache_shows(&claims, &names(&["new", "newer"]), &[]));
        assert!(!cache_shows(&claims, &[], &names(&["old"])));
        assert!(cache_shows(&[], &[], &[]));
    }
}
