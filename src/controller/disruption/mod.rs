//! The disruption loop: every 10 s (2 s after a command was started or refused, at once when one in progress
//! ended) the leader expires NodeClaims past `expireAfter`, writes drift and consolidation state on NodeClaims,
//! gathers a snapshot and asks `disruption::decide` for one command; the command is checked again after 15 s on a
//! fresh snapshot and then started (its replacements' launch is waited for in the background, `execute`). Nodes a
//! method looked at and left alone get an Event saying why. Pod events (`lastPodEventTime`) are recorded every 2 s
//! beside it.

mod drift;
mod execute;
mod in_progress;
pub mod pod_events;
pub mod snapshot;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::leader::Leadership;
use super::{Context, Error, disrupted_taint, events, is_not_found};
use crate::apis::nodeclaim::NodeClaim;
use crate::disruption::expiration::is_expired;
use crate::disruption::{decide, is_consolidatable, still_valid};
use crate::names::{CAPACITY_TYPE_LABEL, NODEPOOL_LABEL};
use crate::telemetry::ReconcileResult;
use drift::DriftReference;
use in_progress::InProgress;

const POD_EVENTS_EVERY: Duration = Duration::from_secs(2);
const PASS_EVERY: Duration = Duration::from_secs(10);
/// After a command that failed its validation the next pass comes sooner: the cluster changed, and what it changed
/// to is worth a look. After a command was started it comes at once, as Karpenter requeues at once (`execute::start`
/// returns once the watch cache shows what it did).
const PASS_AFTER_A_REFUSAL: Duration = Duration::from_secs(2);
/// Karpenter waits this long and decides again before it acts, so a passing lull does not disrupt.
const VALIDATION_DELAY: Duration = Duration::from_secs(15);

pub async fn run(ctx: Arc<Context>, leadership: Leadership) {
    let pod_events = async {
        loop {
            tokio::time::sleep(POD_EVENTS_EVERY).await;
            // Observing, the other autoscaler keeps `lastPodEventTime`.
            if leadership.is_leader() && !ctx.settings.observe {
                pod_events::look(&ctx).await;
            } else {
                ctx.pod_activity.lock().unwrap_or_else(std::sync::PoisonError::into_inner).forget();
            }
        }
    };
    let passes = async {
        let mut said = Said::default();
        let mut stale = HashSet::new();
        let in_progress = InProgress::default();
        let mut next_pass = PASS_EVERY;
        loop {
            // A command that ended frees budget and room: the next pass need not wait out the period.
            tokio::select! {
                () = tokio::time::sleep(next_pass) => {}
                () = in_progress.ended() => {}
            }
            next_pass = PASS_EVERY;
            if !leadership.is_leader() {
                continue;
            }
            let started = std::time::Instant::now();
            let passed = pass(&ctx, &leadership, &mut said, &mut stale, &in_progress).await;
            let result = if passed.is_ok() { ReconcileResult::Success } else { ReconcileResult::Error };
            ctx.metrics.reconciled("disruption", result, started.elapsed().as_secs_f64());
            match passed {
                Ok(Acted::Disrupted) => next_pass = Duration::ZERO,
                Ok(Acted::Refused) => next_pass = PASS_AFTER_A_REFUSAL,
                Ok(Acted::Nothing) => {}
                Err(error) => tracing::warn!("disruption pass failed, retrying: {error}"),
            }
        }
    };
    tokio::join!(pod_events, passes);
}

/// What a pass weighed and what held its nodes, most common reason first, for reading a run's log (a pass that
/// finds nothing says nothing at info).
fn log_pass(snapshot: &crate::disruption::Snapshot<'_>, decision: &crate::disruption::Decision) {
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for blocked in &decision.blocked {
        *reasons.entry(blocked.reason.as_str()).or_default() += 1;
    }
    let mut reasons: Vec<(&str, usize)> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    reasons.truncate(5);
    tracing::debug!(
        nodes = snapshot.nodes.len(),
        evaluated = ?decision.evaluated,
        command = decision.command.as_ref().map(|c| c.candidates.len()),
        held = ?reasons,
        "disruption pass decided"
    );
}

/// What was last said about each object, so an Event is published when the reason changes, not every pass.
#[derive(Default)]
struct Said(HashMap<String, String>);

impl Said {
    fn first_time(&mut self, object: &str, message: &str) -> bool {
        self.0.insert(object.to_string(), message.to_string()).as_deref() != Some(message)
    }

    /// Forgets NodeClaims that are gone (NodePools, keyed `nodepool/…`, are few and kept).
    fn forget_all_but(&mut self, claims: &HashMap<String, Arc<NodeClaim>>) {
        self.0.retain(|object, _| object.starts_with("nodepool/") || claims.contains_key(object));
    }
}

/// What a pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acted {
    /// Started a command: its candidates are deleted, or will be once its replacements are up.
    Disrupted,
    /// Found a command that no longer held after the validation delay: the cluster changed under it.
    Refused,
    Nothing,
}

async fn pass(
    ctx: &Arc<Context>,
    leadership: &Leadership,
    said: &mut Said,
    stale: &mut HashSet<String>,
    in_progress: &InProgress,
) -> Result<Acted, Error> {
    // Observing, these writers stay off: what the pass would carry out is reported instead (`observe`).
    let observe = ctx.settings.observe;
    if !observe {
        expire(ctx).await?;
        lift_stale_taints(ctx, stale, in_progress).await?;
        super::nodepool_status::update(ctx).await?;
    }
    let gathered = gather_seeing(ctx, in_progress);
    for (pool, why) in &gathered.refused_pools {
        if said.first_time(&format!("nodepool/{}", pool.name_any()), why) {
            tracing::warn!(nodepool = %pool.name_any(), "disruption is off for this NodePool: {why}");
            let note = format!("nothing of this NodePool is disrupted until this is fixed: {why}");
            let (reason, action) = ("DisruptionSettingsInvalid", "Disrupting");
            events::publish(&ctx.recorder, &pool.object_ref(&()), EventType::Warning, reason, action, &note).await;
        }
    }
    let snapshot = gathered.snapshot(ctx);
    let claims: HashMap<String, Arc<NodeClaim>> =
        ctx.state.nodeclaims.state().into_iter().map(|c| (c.name_any(), c)).collect();
    said.forget_all_but(&claims);
    for node in snapshot.nodes.iter().filter(|_| !observe) {
        let Some(claim) = claims.get(&node.claim) else { continue };
        status::stamp_hashes(ctx, claim).await?;
        status::set_conditions(ctx, claim, is_consolidatable(&snapshot, node), node.drifted.as_deref()).await?;
    }

    let decision = decide(&snapshot);
    if tracing::enabled!(tracing::Level::DEBUG) {
        log_pass(&snapshot, &decision);
    }
    for (reason, count) in &decision.eligible {
        ctx.metrics.disruption_eligible(reason.metric_label(), *count);
    }
    let allowed: Vec<(String, &str, usize)> =
        decision.allowed.iter().map(|(pool, reason, n)| (pool.clone(), reason.as_str(), *n)).collect();
    ctx.metrics.set_allowed_disruptions(&allowed);
    let consuming: Vec<(String, &str, usize)> =
        decision.consuming.iter().map(|(pool, reason, n)| (pool.clone(), reason.as_str(), *n)).collect();
    ctx.metrics.set_nodes_consuming_budgets(&consuming);
    for (method, took) in &decision.evaluated {
        ctx.metrics.disruption_evaluated(
            method.reason().metric_label(),
            method.consolidation_type(),
            took.as_secs_f64(),
        );
    }
    for weighed in &decision.moves {
        ctx.metrics.consolidation_move(&weighed.nodepool, weighed.policy.as_str(), weighed.approved, weighed.score);
    }
    for method in &decision.timed_out {
        ctx.metrics.consolidation_timeout(method.consolidation_type());
        tracing::warn!(method = ?method, "consolidation ran out of time this pass; the rest waits for the next");
    }
    // One Event per node with everything that held it this pass, published when that changes (`Said`), each a
    // new Event rather than a repeat of the last one's note.
    let recorder = ctx.fresh_recorder();
    let mut held: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for blocked in &decision.blocked {
        held.entry(blocked.claim.as_str()).or_default().push(blocked.reason.as_str());
    }
    for (claim_name, reasons) in held {
        let note = reasons.join("; ");
        if !said.first_time(claim_name, &note) {
            continue;
        }
        if let Some(claim) = claims.get(claim_name) {
            let reason = if reasons.iter().all(|r| r.starts_with("not consolidated")) {
                "Unconsolidatable"
            } else {
                "DisruptionBlocked"
            };
            events::on_nodeclaim(&recorder, claim, EventType::Normal, reason, &note).await;
        }
    }
    if observe {
        super::observe::report_disruption(ctx, decision.command.as_ref(), &claims).await;
        return Ok(Acted::Nothing);
    }
    let Some(command) = decision.command else { return Ok(Acted::Nothing) };
    // Pods the command would move, comparable with Karpenter's `pod-count`.
    let pods: usize =
        snapshot.nodes.iter().filter(|n| command.candidates.contains(&n.claim)).map(|n| n.pods.len()).sum();
    let delay = if command.method.waits_before_it_runs() { VALIDATION_DELAY } else { Duration::ZERO };
    tracing::info!(
        method = ?command.method,
        decision = command.decision(),
        candidates = ?command.candidates,
        pods,
        replacements = command.replacements.len(),
        joined = command.joined,
        savings_per_hour = command.candidates_price - command.replacements_price,
        "disruption found a command; checking it again in {} s",
        delay.as_secs()
    );
    tokio::time::sleep(delay).await;
    if !leadership.is_leader() {
        return Ok(Acted::Nothing);
    }
    let again = gather_seeing(ctx, in_progress);
    let valid = match still_valid(&again.snapshot(ctx), &command) {
        Ok(valid) => valid,
        Err(why) => {
            ctx.metrics.disruption_failed_validation(command.method.consolidation_type());
            tracing::info!(candidates = ?command.candidates, "disruption command no longer holds: {why}");
            return Ok(Acted::Refused);
        }
    };
    if valid.candidates != command.candidates {
        let kept = valid.candidates.iter().filter(|c| command.candidates.contains(c)).count();
        tracing::info!(
            candidates = ?valid.candidates,
            "{kept} of the command's {} candidates still hold, {} nodes joined it",
            command.candidates.len(),
            valid.candidates.len() - kept
        );
    }
    execute::start(ctx, &again, &valid, in_progress).await?;
    Ok(Acted::Disrupted)
}

/// The cluster as disruption sees it now, drift included.
pub fn gather_now(ctx: &Context) -> snapshot::Gathered {
    let reference = DriftReference::new(ctx);
    snapshot::gather(ctx, &|claim, node| reference.drift_of(claim, node))
}

/// As `gather_now`, with the candidates of the commands still in progress seen as going.
fn gather_seeing(ctx: &Context, in_progress: &InProgress) -> snapshot::Gathered {
    let mut gathered = gather_now(ctx);
    in_progress.apply(&mut gathered.nodes, &mut gathered.pending);
    gathered
}

/// Deletes every NodeClaim past its `expireAfter`: forceful, with no budget and no replacement launched first
/// (its pods are planned again as its node drains).
async fn expire(ctx: &Context) -> Result<(), Error> {
    let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
    let now = jiff::Timestamp::now();
    for claim in ctx.state.nodeclaims.state() {
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(created) = claim.metadata.creation_timestamp.as_ref().map(|t| t.0) else { continue };
        let expire_after = match claim.spec.expire_after.as_deref().map(crate::duration::parse_or_never) {
            Some(Ok(after)) => after,
            Some(Err(why)) => {
                tracing::warn!(nodeclaim = %claim.name_any(), "spec.expireAfter: {why}; not expiring it");
                continue;
            }
            None => None,
        };
        if !is_expired(created, expire_after, now) {
            continue;
        }
        match api.delete(&claim.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => continue,
            Err(error) => return Err(error.into()),
        }
        let label = |key: &str| claim.labels().get(key).cloned().unwrap_or_default();
        ctx.metrics.nodeclaim_disrupted("expired", &label(NODEPOOL_LABEL), &label(CAPACITY_TYPE_LABEL));
        let note =
            format!("expired: created {created}, expireAfter {}", claim.spec.expire_after.as_deref().unwrap_or(""));
        events::on_nodeclaim(&ctx.recorder, &claim, EventType::Normal, "DisruptionTerminating", &note).await;
        tracing::info!(nodeclaim = %claim.name_any(), "expired; deleting");
    }
    Ok(())
}

/// A node tainted `karpenter.sh/disrupted` whose NodeClaim is neither being deleted nor a candidate of a command
/// in progress was left so by a disruption that did not go through (a controller killed between taint and
/// delete): the taint goes, the node serves again. Only once seen so on two passes in a row, so a deletion the
/// NodeClaim cache has not seen yet is not mistaken for one. `stale` holds the nodes seen so on the last pass.
async fn lift_stale_taints(ctx: &Context, stale: &mut HashSet<String>, in_progress: &InProgress) -> Result<(), Error> {
    let seen_before = std::mem::take(stale);
    for claim in ctx.state.nodeclaims.state() {
        if claim.metadata.deletion_timestamp.is_some() || in_progress.contains(&claim.name_any()) {
            continue;
        }
        let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.as_deref()).and_then(|n| ctx.state.node(n))
        else {
            continue;
        };
        if node.metadata.deletion_timestamp.is_some() || !disrupted_taint::is_tainted(&node) {
            continue;
        }
        if !seen_before.contains(&node.name_any()) {
            stale.insert(node.name_any());
            continue;
        }
        if disrupted_taint::lift(ctx, &node).await? == disrupted_taint::Outcome::Written {
            tracing::info!(node = %node.name_any(), "lifted a disrupted taint left by an unfinished disruption");
        }
    }
    Ok(())
}
