//! Pending pods → NodeClaims. Pods the scheduler marked Unschedulable are batched (until no new one arrived for
//! `batch_idle`, at most `batch_max`), the cluster is snapshotted (`cluster_snapshot`), `scheduling::solve` plans,
//! and one NodeClaim is created per planned node (`apis::planned_nodeclaim`). Pods planned onto a NodeClaim are
//! remembered (`nominations`) until its node is up, so the next batch does not plan them again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::apis::pod::Pod;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use tokio::sync::Notify;

use super::batch_window::{Batch, PendingPodChanges};
use super::cluster_snapshot::{Planning, pending_pods};
use super::nominations::Nominations;
use super::pod_clock::PodNow;
use super::pod_notes::PodNotes;
use super::state::Triggers;
use super::{Context, Error, launch, leader::Leadership, pods};
use crate::apis::nodeclaim::NodeClaim;
use crate::apis::planned_nodeclaim;
use crate::catalog::Catalog;
use crate::cloud::nodeclass::SubnetInfo;
use crate::names::NODEPOOL_LABEL;
use crate::scheduling::{self, PreparedCatalog, UnschedulablePod};
use crate::telemetry::ReconcileResult;

/// The batcher looks again this often without a change: nominations expire, leadership comes.
const RECHECK: Duration = Duration::from_secs(1);

/// A batch that opens reads the subnets' free addresses if they were last read this long ago (they serve launches
/// for `launch_caches::SUBNET_ADDRESSES_FOR`, longer than this).
const SUBNETS_READ_EVERY: Duration = Duration::from_secs(10);

/// Passes over the pod cache at most this often (a tenth of the batch idle, if that is shorter): during a scale-out
/// pods, nodes and NodeClaims change hundreds of times a second, and a pass per change took half the controller's
/// CPU. The batch window is timed from the pod changes themselves (`PendingPodChanges`), so a pass held back does
/// not hold back the batch.
const PASS_GAP: Duration = Duration::from_millis(100);

/// The `controller` label of the provisioner's metrics, as Karpenter names its own.
const CONTROLLER: &str = "provisioner";

/// Runs forever: batches pending pods and provisions for them while this replica leads. It wakes when a pod, a
/// node or a NodeClaim changes (`triggers`; passes at least `PASS_GAP` apart), when the open batch is due, and at
/// least every `RECHECK`.
pub async fn run(ctx: Arc<Context>, leadership: Leadership, triggers: Triggers) {
    let wake = Arc::new(Notify::new());
    let pending_changes = PendingPodChanges::default();
    tokio::spawn(relay(triggers, wake.clone(), pending_changes.clone()));
    let pass_gap = PASS_GAP.min(ctx.settings.batch_idle / 10);
    let mut last_pass: Option<Instant> = None;
    let mut nominations = Nominations::default();
    let mut pod_notes = PodNotes::default();
    // What an observing controller last told each NodePool (`observe::report_plan`).
    let mut pool_notes = PodNotes::default();
    let mut subnets_read: Option<Instant> = None;
    let mut batch: Option<Batch> = None;
    // One pass per version of the catalog: the prepared catalog borrows the version it was prepared from. Prepared
    // while a batch gathers (when it opens, or at once for a new version while one is open), not when it closes: a
    // thousand instance types take tens of milliseconds to prepare, which would stand before its launches. Not
    // before any batch: a controller with nothing to provision does not hold one.
    loop {
        let catalog = ctx.catalog();
        let mut prepared = batch.is_some().then(|| prepare(&ctx, &catalog));
        loop {
            let (idle, max) = (ctx.settings.batch_idle, ctx.settings.batch_max);
            let due = batch.as_ref().map(|batch| batch.due(idle, max));
            let wait = due.map_or(RECHECK, |due| due.saturating_duration_since(Instant::now()).min(RECHECK));
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
            // Changes that come meanwhile fold into this pass.
            let hold = last_pass.map_or(Duration::ZERO, |last| {
                let hold = (last + pass_gap).saturating_duration_since(Instant::now());
                due.map_or(hold, |due| hold.min(due.saturating_duration_since(Instant::now())))
            });
            if !hold.is_zero() {
                tokio::time::sleep(hold).await;
            }
            if !Arc::ptr_eq(&catalog, &ctx.catalog()) {
                break; // refreshed: prepare the new one while the batch (kept) gathers
            }
            last_pass = Some(Instant::now());
            // Taken before the pods are read: a pod change after this point is seen by the next pass.
            let pod_changed_at = pending_changes.take();
            if !leadership.is_leader() {
                batch = None;
                continue;
            }
            nominations.prune(&ctx);
            nominations.publish(&ctx);
            let pending: HashSet<String> = pending_pods(&ctx, &nominations).iter().map(|p| pods::key(p)).collect();
            time_pods(&ctx, &pending);
            if pending.is_empty() {
                if ctx.settings.observe {
                    // Nothing waits: an observing controller would launch nothing now.
                    ctx.metrics.observe_plan(&[]);
                }
                batch = None;
                continue;
            }
            let now = Instant::now();
            // Not for every batch: pods that wait for good (nothing can hold them) reopen one every second.
            if batch.is_none() && subnets_read.is_none_or(|at| at.elapsed() >= SUBNETS_READ_EVERY) {
                read_subnet_addresses_meanwhile(&ctx);
                subnets_read = Some(now);
            }
            // When the pending pods last changed: the last pod that became pending since the previous pass, else
            // now (a pod that stopped pending, a nomination that ended).
            let changed_at = pod_changed_at.unwrap_or(now);
            let gathered = match &mut batch {
                Some(gathered) => {
                    gathered.update(pending, changed_at);
                    gathered
                }
                None => {
                    if prepared.is_none() {
                        prepared = Some(prepare(&ctx, &catalog));
                    }
                    batch.insert(Batch::open(pending, changed_at))
                }
            };
            if now < gathered.due(idle, max) {
                continue;
            }
            tracing::debug!(
                pods = gathered.len(),
                open_ms = gathered.open_for(now).as_millis(),
                late_ms = gathered.late(now, idle).as_millis(),
                "batch closed"
            );
            if !Arc::ptr_eq(&catalog, &ctx.catalog()) {
                break; // refreshed: prepare the new one; the batch stays due, so the next pass provisions at once
            }
            batch = None;
            let timer = Instant::now();
            let notes = Notes { pods: &mut pod_notes, pools: &mut pool_notes };
            let provisioned = provision(&ctx, &catalog, &mut nominations, notes, &mut prepared).await;
            nominations.publish(&ctx);
            let result = if provisioned.is_ok() { ReconcileResult::Success } else { ReconcileResult::Error };
            ctx.metrics.reconciled(CONTROLLER, result, timer.elapsed().as_secs_f64());
            match provisioned {
                Ok(created) => {
                    ctx.metrics.scheduling_duration(CONTROLLER, timer.elapsed().as_secs_f64());
                    if created > 0 {
                        tracing::info!(nodeclaims = created, "provisioned");
                    }
                }
                Err(error) => tracing::warn!("provisioning failed, retrying next batch: {error}"),
            }
        }
    }
}

fn prepare<'c>(ctx: &Context, catalog: &'c Catalog) -> PreparedCatalog<'c> {
    PreparedCatalog::new(&catalog.instance_types, &catalog.prices, &ctx.caches().unavailable.snapshot())
}

/// While a batch gathers, its launches' subnets are read (DescribeSubnets), so that when it closes nothing but
/// CreateFleet stands between a NodeClaim and its instance.
fn read_subnet_addresses_meanwhile(ctx: &Arc<Context>) {
    let mut subnets: Vec<SubnetInfo> =
        ctx.state.nodeclasses.state().iter().flat_map(|class| launch::class_subnets(class)).collect();
    subnets.sort_by(|a, b| a.id.cmp(&b.id));
    subnets.dedup_by(|a, b| a.id == b.id);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        launch::read_subnet_addresses(&ctx, &subnets).await;
    });
}

/// Wakes the batcher at every change of a pod, node or NodeClaim; changes that arrive while it works fold into one
/// wake-up (`Notify` keeps one permit). Notes when each pending pod changed, for the batch window.
async fn relay(triggers: Triggers, wake: Arc<Notify>, pending_changes: PendingPodChanges) {
    let Triggers { pods, nodes, nodeclaims } = triggers;
    let pod_changes = pods.map(move |pod| {
        if pods::is_provisionable(&pod) {
            pending_changes.saw(Instant::now());
        }
    });
    let changes =
        futures::stream::select(pod_changes, futures::stream::select(nodes.map(|_| ()), nodeclaims.map(|_| ())));
    changes
        .for_each(|()| {
            wake.notify_one();
            std::future::ready(())
        })
        .await;
}

/// What the provisioner last told pods and (observing) NodePools.
struct Notes<'a> {
    pods: &'a mut PodNotes,
    pools: &'a mut PodNotes,
}

/// One batch: snapshot, plan, create NodeClaims (or, observing, say what would be launched). Returns how many were
/// created. `prepared` is kept between batches and prepared again only when the offerings out of capacity change.
async fn provision<'c>(
    ctx: &Context,
    catalog: &'c Catalog,
    nominations: &mut Nominations,
    notes: Notes<'_>,
    prepared: &mut Option<PreparedCatalog<'c>>,
) -> Result<usize, Error> {
    let pod_notes = notes.pods;
    let pending = pending_pods(ctx, nominations);
    let all_pods: HashMap<String, Arc<Pod>> = ctx.state.pods.state().into_iter().map(|p| (pods::key(&p), p)).collect();
    let nominated_to = |target: &str| -> Vec<Arc<Pod>> {
        nominations.pods_of(target).filter_map(|p| all_pods.get(p).cloned()).collect()
    };
    let planning = Planning::gather(ctx, &pending, &nominated_to);
    if planning.pools.is_empty() {
        // Each waiting pod is told why no NodePool can take it (their EC2NodeClasses), as when some are ready.
        let nowhere: Vec<UnschedulablePod> =
            planning.requests.iter().map(|r| UnschedulablePod::new(r.id.clone(), Vec::new())).collect();
        tell_waiting(ctx, pod_notes, &pending, &planning, &nowhere, &all_pods).await;
        // Said once a minute, not once a batch: the EC2NodeClass status says why.
        static LAST_SAID: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
        if let Ok(mut last) = LAST_SAID.lock()
            && last.is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            *last = Some(Instant::now());
            tracing::warn!(
                pods = planning.requests.len(),
                "pods are pending but no NodePool is ready (see the EC2NodeClass status)"
            );
        }
        return Ok(0);
    }
    tracing::debug!(
        pods = planning.requests.len(),
        existing = planning.existing.len(),
        with_room = planning.existing.iter().filter(|n| !n.available.is_zero()).count(),
        "planning"
    );
    let input = planning.input(catalog);
    ctx.metrics.scheduling_round_started(CONTROLLER, planning.requests.len());
    let ready = match prepared.take() {
        Some(ready) if ready.is_for(&input) => ready,
        _ => PreparedCatalog::new(&catalog.instance_types, &catalog.prices, &planning.unavailable),
    };
    let solving = Instant::now();
    let plan = scheduling::solve_on(&input, &ready);
    *prepared = Some(ready);
    tracing::debug!(new_nodes = plan.new_nodes.len(), solve_us = solving.elapsed().as_micros(), "planned");
    ctx.metrics.scheduling_round_ended();
    report_pending(ctx, catalog, &planning);
    let refused = planning.refused.iter().map(|(pod, _)| pods::key(pod));
    decided(ctx, plan.unschedulable.iter().map(|u| u.pod.clone()).chain(refused), false);

    for (target, planned) in &plan.existing_placements {
        tracing::debug!(target = %target, pods = ?planned, "planned onto room already there");
        for pod in planned {
            nominations.nominate(pod, target);
        }
        decided(ctx, planned.iter().cloned(), true);
    }

    if ctx.settings.observe {
        super::observe::report_plan(ctx, &plan, &all_pods, pod_notes, notes.pools).await;
        ctx.metrics.unschedulable_pods(CONTROLLER, plan.unschedulable.len());
        tell_waiting(ctx, pod_notes, &pending, &planning, &plan.unschedulable, &all_pods).await;
        return Ok(0);
    }
    let api: Api<NodeClaim> = Api::all(ctx.kube.clone());
    let creations = plan.new_nodes.iter().filter_map(|node| {
        let pool = planning.pool_objects.get(&node.nodepool)?;
        let api = api.clone();
        let class = ctx.state.nodeclass(&pool.spec.template.spec.node_class_ref.name);
        let claim = planned_nodeclaim::for_planned_node(node, pool, class.as_deref());
        Some(async move { (node, create_nodeclaim(ctx, &api, claim).await) })
    });
    let mut created = 0;
    for (node, result) in futures::future::join_all(creations).await {
        match result {
            Ok(claim) => {
                created += 1;
                ctx.metrics.nodeclaim_created("provisioning", &node.nodepool, node.min_values_relaxed);
                let name = claim.name_any();
                tracing::info!(
                    nodeclaim = %name,
                    instance_type = %node.instance_type,
                    zone = %node.zone,
                    capacity_type = node.capacity_type.as_str(),
                    pods = node.pods.len(),
                    "created NodeClaim"
                );
                tracing::debug!(nodeclaim = %name, pods = ?node.pods, "planned onto the new NodeClaim");
                for pod in &node.pods {
                    nominations.nominate(pod, &name);
                }
                decided(ctx, node.pods.iter().cloned(), true);
            }
            Err(error) => tracing::warn!(nodepool = %node.nodepool, "could not create a NodeClaim: {error}"),
        }
    }
    // After the NodeClaims: Events never hold up a launch.
    ctx.metrics.unschedulable_pods(CONTROLLER, plan.unschedulable.len());
    tell_waiting(ctx, pod_notes, &pending, &planning, &plan.unschedulable, &all_pods).await;
    Ok(created)
}

/// Brings the pod clock up to date: counts what the pods it holds did since the last look, and notes the pods
/// pending now.
fn time_pods(ctx: &Context, pending: &HashSet<String>) {
    let now = Timestamp::now();
    let Ok(mut clock) = ctx.pod_clock.lock() else { return };
    let progress = clock.advance(now, |key| pod_now(ctx, key));
    for seconds in progress.bound_after {
        ctx.metrics.pod_provisioning_bound(seconds);
    }
    for seconds in progress.started_after {
        ctx.metrics.pod_provisioning_started(seconds);
    }
    for pod in pending {
        clock.seen(pod, now);
    }
}

/// Where the pod `key` (namespace/name) is now, as the cache has it.
pub fn pod_now(ctx: &Context, key: &str) -> PodNow {
    let Some(pod) = ctx.state.pod(key) else { return PodNow::Gone };
    match (pod.node_name(), pod.status.as_ref().and_then(|s| s.phase.as_deref())) {
        (_, Some("Running")) => PodNow::Running,
        (Some(_), _) => PodNow::Bound,
        (None, _) => PodNow::Unbound,
    }
}

/// The provisioner decided about `pods`: placed them, or found them no place.
fn decided(ctx: &Context, pods: impl Iterator<Item = String>, placed: bool) {
    let now = Timestamp::now();
    let Ok(mut clock) = ctx.pod_clock.lock() else { return };
    for pod in pods {
        if let Some(seconds) = clock.decided(&pod, placed, now) {
            ctx.metrics.pod_scheduling_decided(seconds);
        }
    }
}

/// The pending pods of this round by the zone they are held to, and those that could not be read.
fn report_pending(ctx: &Context, catalog: &Catalog, planning: &Planning) {
    let zones: std::collections::BTreeSet<&str> =
        catalog.instance_types.iter().flat_map(|t| t.zones.iter().map(String::as_str)).collect();
    let zones: Vec<&str> = zones.into_iter().collect();
    let mut by_zone: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for request in &planning.requests {
        *by_zone.entry(request.effective_zone(&zones)).or_default() += 1;
    }
    ctx.metrics.pending_pods(CONTROLLER, &by_zone, planning.refused.len());
}

/// Tells the pods that wait why (`FailedProvisioning`, rate-limited by `pod_notes`): those that cannot be planned,
/// and those no NodePool takes, with the NodePools the plan left out and why.
async fn tell_waiting(
    ctx: &Context,
    pod_notes: &mut PodNotes,
    pending: &[Arc<Pod>],
    planning: &Planning,
    unschedulable: &[UnschedulablePod],
    all_pods: &HashMap<String, Arc<Pod>>,
) {
    let unschedulable: Vec<UnschedulablePod> = unschedulable.iter().map(|u| planning.with_unready(u)).collect();
    let mut notes: Vec<(&Pod, &str)> = planning.refused.iter().map(|(pod, why)| (pod.as_ref(), why.as_str())).collect();
    notes.extend(unschedulable.iter().filter_map(|u| Some((all_pods.get(&u.pod)?.as_ref(), u.reason.as_str()))));
    pod_notes.keep_only(&pending.iter().map(|p| pods::key(p)).collect());
    pod_notes.warn(ctx, &notes).await;
}

/// Creates a NodeClaim under the name `for_planned_node` gave it, marked untried first (its launch may start from
/// the watch event before this create is answered). A name already taken gets one more try under another.
async fn create_nodeclaim(ctx: &Context, api: &Api<NodeClaim>, mut claim: NodeClaim) -> Result<NodeClaim, kube::Error> {
    let pool = claim.labels().get(NODEPOOL_LABEL).cloned().unwrap_or_default();
    let mut tries = 0;
    loop {
        let name = claim.name_any();
        ctx.caches().untried.remember(&name);
        let created = api.create(&PostParams::default(), &claim).await;
        match created {
            Err(kube::Error::Api(status)) if status.code == 409 && tries == 0 => {
                ctx.caches().untried.forget([name.as_str()]);
                claim.metadata.name = Some(planned_nodeclaim::fresh_name(&pool));
                tries += 1;
            }
            Err(error) => {
                ctx.caches().untried.forget([name.as_str()]);
                return Err(error);
            }
            Ok(claim) => return Ok(claim),
        }
    }
}
