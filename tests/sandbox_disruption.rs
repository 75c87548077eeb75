//! Disruption end to end in the sandbox: nodes go away on their own (emptiness, consolidation, drift, expiry)
//! within budgets, and a controller killed midway converges. The real binary against moto and the real control
//! plane, KWOK as the kubelets. Needs `make sandbox-up`.
//!
//! Each test runs its own controller on the shared `demo` cluster, so they take turns: each runs in a
//! `ControllerTest`, which also cleans up after it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use nodesmith::apis::ec2nodeclass::EC2NodeClass;
use nodesmith::apis::nodeclaim::NodeClaim;
use nodesmith::apis::nodepool::NodePool;
use support::controller::*;
use support::{Sandbox, dashboards, wait_until};

/// A disruption pass runs every 10 s and waits 15 s before it acts; a few of those.
const SETTLE: Duration = Duration::from_secs(180);

/// The pool most tests use: on-demand c5.large only (2 vCPU), so a 1.5-CPU pod needs a node of its own and the
/// price of a pool is its node count.
fn small_nodes() -> serde_json::Value {
    serde_json::json!([
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["c5.large"]},
    ])
}

/// On-demand c5 of any size: a 6-CPU pod gets a c5.2xlarge, which a 500m pod no longer needs.
fn c5_nodes() -> serde_json::Value {
    serde_json::json!([
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
        {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["c5"]},
    ])
}

/// A rollout of `web` down to 500m: its pod fits a far cheaper node than the one it runs on.
async fn shrink_to_half_a_cpu(sandbox: &Sandbox, namespace: &str) -> Result<()> {
    let container = serde_json::json!({"name": "app", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}});
    patch_deployment(
        sandbox,
        namespace,
        serde_json::json!({"spec": {"template": {"spec": {"containers": [container]}}}}),
    )
    .await
}

/// A disruption test with its pool: `disruption` as given, on `requirements`.
async fn pool(prefix: &str, requirements: serde_json::Value, disruption: serde_json::Value) -> Result<ControllerTest> {
    let test = ControllerTest::new(prefix).await?;
    nodeclass_and_pool_with(&test.sandbox, &test.name, requirements, "1000", disruption).await?;
    Ok(test)
}

/// A Deployment `web` of `replicas` pods requesting `cpu`, on the test's nodes; `extra` is merged into the pod
/// template (annotations, affinity).
async fn web(
    sandbox: &Sandbox,
    namespace: &str,
    test: &str,
    replicas: i32,
    cpu: &str,
    extra: serde_json::Value,
) -> Result<()> {
    let mut template = serde_json::json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {
            "nodeSelector": {TEST_LABEL: test},
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}}}],
        }
    });
    merge(&mut template, extra);
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template},
    }))?;
    Api::<Deployment>::namespaced(sandbox.kube.clone(), namespace).create(&PostParams::default(), &deployment).await?;
    Ok(())
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

async fn patch_deployment(sandbox: &Sandbox, namespace: &str, patch: serde_json::Value) -> Result<()> {
    Api::<Deployment>::namespaced(sandbox.kube.clone(), namespace)
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn patch_pool(sandbox: &Sandbox, test: &str, patch: serde_json::Value) -> Result<()> {
    Api::<NodePool>::all(sandbox.kube.clone()).patch(test, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

fn is_initialized(claim: &NodeClaim) -> bool {
    claim.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Initialized" && c.status == "True"))
}

/// Waits until `n` pods run and the pool's NodeClaims are all initialized; returns them.
async fn running_on(sandbox: &Sandbox, namespace: &str, test: &str, n: usize) -> Result<Vec<NodeClaim>> {
    wait_until(&format!("{n} pods Running"), RUN_WAIT, || async {
        Ok((running_pods(sandbox, namespace).await?.len() == n).then_some(()))
    })
    .await?;
    initialized_nodeclaims(sandbox, test).await
}

/// $/h of the pool's live NodeClaims (on-demand list prices).
async fn pool_price(sandbox: &Sandbox, test: &str) -> Result<f64> {
    let prices = nodesmith::catalog::pricing::PriceTable::embedded();
    Ok(nodeclaims_of(sandbox, test)
        .await?
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| c.labels().get("node.kubernetes.io/instance-type").and_then(|t| prices.on_demand(t)))
        .sum())
}

/// Events on the pool's NodeClaims with this reason, their notes.
async fn events_with_reason(sandbox: &Sandbox, reason: &str) -> Result<Vec<String>> {
    let events = Api::<Event>::all(sandbox.kube.clone()).list(&ListParams::default()).await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason) && e.involved_object.kind.as_deref() == Some("NodeClaim"))
        .filter_map(|e| e.message)
        .collect())
}

/// Samples the cluster every 500 ms until stopped: the fewest ready pods and the most of the pool's NodeClaims
/// being deleted at once.
struct Sampler {
    stop: Arc<AtomicBool>,
    fewest_ready: Arc<AtomicUsize>,
    most_deleting: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(sandbox: &Sandbox, namespace: &str, test: &str, expected_ready: usize) -> Self {
        let (stop, fewest_ready, most_deleting) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(expected_ready)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (kube, namespace, test) = (sandbox.kube.clone(), namespace.to_string(), test.to_string());
        let (s, f, m) = (stop.clone(), fewest_ready.clone(), most_deleting.clone());
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(kube.clone(), &namespace);
            let claims: Api<NodeClaim> = Api::all(kube);
            while !s.load(Ordering::Relaxed) {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    let ready = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter(|p| {
                            p.status.as_ref().is_some_and(|s| {
                                s.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                        })
                        .count();
                    f.fetch_min(ready, Ordering::Relaxed);
                }
                let selector = format!("karpenter.sh/nodepool={test}");
                if let Ok(list) = claims.list(&ListParams::default().labels(&selector)).await {
                    let deleting = list.items.iter().filter(|c| c.metadata.deletion_timestamp.is_some()).count();
                    m.fetch_max(deleting, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { stop, fewest_ready, most_deleting, task }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.ok();
        (self.fewest_ready.load(Ordering::Relaxed), self.most_deleting.load(Ordering::Relaxed))
    }
}

fn is_tainted_disrupted(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == "karpenter.sh/disrupted"))
}

/// Each change of a node's `karpenter.sh/disrupted` taint, from a watch, with whether its NodeClaim was being
/// deleted (or gone) when the change was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TaintChange {
    tainted: bool,
    claim_deleting: bool,
}

struct TaintLog {
    changes: Arc<std::sync::Mutex<Vec<TaintChange>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TaintLog {
    fn watch(sandbox: &Sandbox, claim: &NodeClaim) -> Result<Self> {
        use futures::StreamExt;
        let node = claim.status.as_ref().and_then(|s| s.node_name.clone()).context("a registered NodeClaim")?;
        let (nodes, claims): (Api<Node>, Api<NodeClaim>) =
            (Api::all(sandbox.kube.clone()), Api::all(sandbox.kube.clone()));
        let (changes, claim) = (Arc::new(std::sync::Mutex::new(Vec::new())), claim.name_any());
        let log = changes.clone();
        let config = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={node}"));
        let task = tokio::spawn(async move {
            let mut watch = Box::pin(kube::runtime::watcher::watcher(nodes, config).applied_objects());
            let mut last = None;
            while let Some(Ok(node)) = watch.next().await {
                let tainted = is_tainted_disrupted(&node);
                if last == Some(tainted) {
                    continue;
                }
                last = Some(tainted);
                let claim_deleting = match claims.get_opt(&claim).await {
                    Ok(Some(c)) => c.metadata.deletion_timestamp.is_some(),
                    Ok(None) => true,
                    Err(_) => continue,
                };
                if let Ok(mut log) = log.lock() {
                    log.push(TaintChange { tainted, claim_deleting });
                }
            }
        });
        Ok(Self { changes, task })
    }

    fn changes(&self) -> Vec<TaintChange> {
        self.changes.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Drop for TaintLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn scaling_to_zero_terminates_every_instance_by_emptiness() -> Result<()> {
    let disruption = serde_json::json!({"consolidateAfter": "10s", "budgets": [{"nodes": "100%"}]});
    let test = pool("dis-empty", small_nodes(), disruption).await?;
    test.start_controller()?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        web(sandbox, namespace, test, 10, "1500m", serde_json::json!({})).await?;
        let claims = running_on(sandbox, namespace, test, 10).await?;
        ensure!(claims.len() == 10, "one c5.large per 1.5-CPU pod: {} NodeClaims", claims.len());
        let launched: Vec<String> = live_instances(sandbox, test).await?.into_iter().map(|(i, _)| i).collect();
        patch_deployment(sandbox, namespace, serde_json::json!({"spec": {"replicas": 0}})).await?;
        let scaled = Instant::now();
        // Within consolidateAfter (10 s) + 60 s, and no teardown or NodePool deletion involved.
        wait_until("every instance terminated by emptiness", Duration::from_secs(70), || async {
            Ok(live_instances(sandbox, test).await?.is_empty().then_some(()))
        })
        .await?;
        eprintln!(
            "{} instances terminated {:.0} s after the scale-down",
            launched.len(),
            scaled.elapsed().as_secs_f64()
        );
        wait_claims_gone(sandbox, test).await
    })
    .await
}

async fn wait_claims_gone(sandbox: &Sandbox, test: &str) -> Result<()> {
    wait_until("the NodeClaims gone", RUN_WAIT, || async {
        Ok(nodeclaims_of(sandbox, test).await?.is_empty().then_some(()))
    })
    .await
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn six_underutilized_nodes_are_consolidated_within_a_pod_disruption_budget() -> Result<()> {
    // 30 s of quiet: nothing is consolidated while the rollout below still moves pods.
    let disruption = serde_json::json!({"consolidateAfter": "30s", "budgets": [{"nodes": "50%"}]});
    let test = pool("dis-under", small_nodes(), disruption).await?;
    let controller = test.start_controller()?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        // One pod per node, forced by hostname anti-affinity.
        let spread = serde_json::json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}
        ]}}}});
        web(sandbox, namespace, test, 6, "250m", spread).await?;
        let claims = running_on(sandbox, namespace, test, 6).await?;
        ensure!(claims.len() == 6, "six nodes, one pod each: {} NodeClaims", claims.len());
        let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        }))?;
        Api::<PodDisruptionBudget>::namespaced(sandbox.kube.clone(), namespace).create(&PostParams::default(), &pdb).await?;
        let before = pool_price(sandbox, test).await?;
        // A rollout without the anti-affinity: the pods may now share nodes.
        patch_deployment(
            sandbox,
            namespace,
            serde_json::json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}, "template": {"spec": {"affinity": null}}}}),
        )
        .await?;
        let deployments: Api<Deployment> = Api::namespaced(sandbox.kube.clone(), namespace);
        wait_until("the rollout done", RUN_WAIT, || async {
            let status = deployments.get("web").await?.status.unwrap_or_default();
            let done = status.updated_replicas == Some(6) && status.ready_replicas == Some(6) && status.replicas == Some(6);
            Ok(done.then_some(()))
        })
        .await?;
        // From here on only consolidation moves pods, and only through the Eviction API.
        let sampler = Sampler::start(sandbox, namespace, test, 6);
        let consolidated = wait_until("the pool consolidated to at most two nodes, every pod Running", SETTLE, || async {
            let live: Vec<NodeClaim> = nodeclaims_of(sandbox, test).await?;
            let running = running_pods(sandbox, namespace).await?.len();
            Ok((live.len() <= 2 && running == 6).then_some(live.len()))
        })
        .await;
        let (fewest_ready, _) = sampler.finish().await;
        let nodes = consolidated?;
        let after = pool_price(sandbox, test).await?;
        eprintln!("consolidated 6 nodes to {nodes}: ${before:.3}/h -> ${after:.3}/h; fewest ready pods {fewest_ready}");
        ensure!(fewest_ready >= 5, "the PodDisruptionBudget allows one pod down; {fewest_ready} of 6 were ready");
        ensure!(after < before, "the pool's $/h went down ({before} -> {after})");
        dashboards_story(&controller).await?;
        object_metrics_story(&controller, test).await
    })
    .await
}

/// Metrics that this story gives no reason to show: they count events it does not cause.
const NOT_IN_THIS_STORY: [(&str, &str); 2] = [
    ("karpenter_cloudprovider_errors_total", "no AWS call fails"),
    ("karpenter_interruption_received_messages_total", "no interruption message arrives"),
];

/// After a scale-out and a consolidation, every metric Karpenter's dashboards and the chart's read has series
/// on `/metrics`, with the labels the queries read it by (the chart README lists those nodesmith cannot have).
async fn dashboards_story(controller: &ControllerProcess) -> Result<()> {
    // Counters of the last terminations may still be on their way.
    let last = std::sync::Mutex::new(Vec::new());
    let settled = wait_until("every metric the dashboards read to have series", Duration::from_secs(60), || {
        let last = &last;
        async move {
            let scraped = dashboards::scraped_series(&http_get(controller.metrics_port, "/metrics").await?);
            let mut missing = Vec::new();
            for dir in [dashboards::KARPENTER_DASHBOARDS, dashboards::CHART_DASHBOARDS] {
                let reads = dashboards::reads_of_dashboards(dir)?;
                let reads: Vec<_> =
                    reads.into_iter().filter(|r| NOT_IN_THIS_STORY.iter().all(|(m, _)| *m != r.metric)).collect();
                missing.extend(dashboards::missing(&reads, &scraped)?);
            }
            let done = missing.is_empty();
            if let Ok(mut last) = last.lock() {
                *last = missing;
            }
            Ok(done.then_some(()))
        }
    })
    .await;
    settled.with_context(|| last.lock().map(|l| l.join("\n")).unwrap_or_default())
}

/// Metrics counted from what the watches, the provisioner and the drains saw in this story: status condition
/// transitions and the terminations of NodeClaims and Nodes, pod bind and provisioning times, the pool's cost,
/// and pods drained under the disruption reason recorded on their NodeClaim.
async fn object_metrics_story(controller: &ControllerProcess, pool: &str) -> Result<()> {
    let counted: Vec<String> = vec![
        r#"operator_nodeclaim_status_condition_transitions_total{type="Initialized",status="True""#.to_string(),
        r#"operator_nodeclaim_status_condition_transition_seconds_count{type="Ready",status="Unknown""#.to_string(),
        "operator_nodeclaim_termination_duration_seconds_count{".to_string(),
        r#"operator_node_status_condition_count{namespace="",name="#.to_string(),
        format!(r#"operator_nodepool_status_condition_count{{namespace="",name="{pool}",type="Ready",status="True""#),
        r#"operator_ec2nodeclass_status_condition_count{namespace="",name="#.to_string(),
        "karpenter_pods_bound_duration_seconds_count ".to_string(),
        "karpenter_pods_scheduling_decision_duration_seconds_count ".to_string(),
        "karpenter_pods_provisioning_bound_duration_seconds_count ".to_string(),
        "karpenter_pods_provisioning_startup_duration_seconds_count ".to_string(),
        r#"karpenter_pods_drained_total{reason="Underutilized"}"#.to_string(),
        format!(r#"karpenter_nodepools_cost_total{{nodepool="{pool}"}}"#),
        format!(r#"karpenter_nodeclaims_instance_termination_duration_seconds_count{{nodepool="{pool}"}}"#),
        r#"karpenter_voluntary_disruption_decision_evaluation_duration_seconds_count{reason="underutilized",consolidation_type="single"}"#.to_string(),
        format!(r#"karpenter_nodepools_nodes_consuming_budgets{{nodepool="{pool}",reason="Underutilized"}}"#),
        r#"karpenter_scheduler_pending_pods_by_effective_zone_count{controller="provisioner",zone="flexible"}"#.to_string(),
        "karpenter_cloudprovider_instance_type_offering_available{".to_string(),
    ];
    let last = std::sync::Mutex::new(Vec::new());
    let counted = &counted;
    let settled = wait_until("the object, pod and pool metrics counted", Duration::from_secs(60), || {
        let last = &last;
        async move {
            let text = http_get(controller.metrics_port, "/metrics").await?;
            let value = |start: &str| -> Option<f64> {
                text.lines()
                    .filter(|l| l.starts_with(start))
                    .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                    .reduce(f64::max)
            };
            // Gauges that may be 0 are present; everything else counted at least once.
            let present = ["karpenter_nodepools_nodes_consuming_budgets", "karpenter_scheduler_pending_pods"];
            let missing: Vec<String> = counted
                .iter()
                .filter(|m| match value(m.as_str()) {
                    Some(v) => v <= 0.0 && !present.iter().any(|p| m.starts_with(p)),
                    None => true,
                })
                .cloned()
                .collect();
            let done = missing.is_empty();
            if let Ok(mut last) = last.lock() {
                *last = missing;
            }
            Ok(done.then_some(()))
        }
    })
    .await;
    settled
        .with_context(|| format!("no positive sample of:\n{}", last.lock().map(|l| l.join("\n")).unwrap_or_default()))
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_node_whose_pods_fit_a_cheaper_type_is_replaced_once_the_new_one_is_initialized() -> Result<()> {
    let disruption = serde_json::json!({"consolidateAfter": "10s"});
    let test = pool("dis-replace", c5_nodes(), disruption).await?;
    test.start_controller()?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        web(sandbox, namespace, test, 1, "6", serde_json::json!({})).await?;
        let claims = running_on(sandbox, namespace, test, 1).await?;
        let big = claims.first().context("a NodeClaim")?.clone();
        let big_type = big.labels().get("node.kubernetes.io/instance-type").cloned().unwrap_or_default();
        let taints = TaintLog::watch(sandbox, &big)?;
        // The workload shrinks; its one pod now fits a far cheaper c5.
        shrink_to_half_a_cpu(sandbox, namespace).await?;
        let api: Api<NodeClaim> = Api::all(sandbox.kube.clone());
        let (replacement, deleted_at) =
            wait_until(&format!("{} ({big_type}) replaced", big.name_any()), SETTLE, || async {
                let claims = nodeclaims_of(sandbox, test).await?;
                let old = api.get_opt(&big.name_any()).await?;
                let deleted_at = match &old {
                    Some(old) => old.metadata.deletion_timestamp.clone().map(|t| t.0),
                    None => Some(jiff::Timestamp::now()),
                };
                let replacement = claims
                    .into_iter()
                    .find(|c| c.name_any() != big.name_any() && c.annotations().contains_key("nodesmith.dev/replaces"));
                Ok(deleted_at.zip(replacement).map(|(d, r)| (r, d)))
            })
            .await?;
        let new_type = replacement.labels().get("node.kubernetes.io/instance-type").cloned().unwrap_or_default();
        let prices = nodesmith::catalog::pricing::PriceTable::embedded();
        ensure!(prices.on_demand(&new_type) < prices.on_demand(&big_type), "{new_type} is cheaper than {big_type}");
        let initialized_at = replacement
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Initialized" && c.status == "True"))
            .map(|c| c.last_transition_time.0)
            .context("the replacement was initialized before the old node was deleted")?;
        ensure!(
            initialized_at <= deleted_at,
            "replacement initialized at {initialized_at}, old deleted at {deleted_at}"
        );
        // Tainted when the command began, while its NodeClaim was still there: nothing was scheduled onto it while
        // the replacement came up.
        let first = taints.changes().into_iter().find(|c| c.tainted);
        ensure!(
            first == Some(TaintChange { tainted: true, claim_deleting: false }),
            "the old node tainted before its NodeClaim's deletion: {:?}",
            taints.changes()
        );
        wait_until("the pod running on the replacement", RUN_WAIT, || async {
            let pods = running_pods(sandbox, namespace).await?;
            let node = replacement.status.as_ref().and_then(|s| s.node_name.clone());
            Ok((pods.len() == 1 && pods[0].spec.as_ref().and_then(|s| s.node_name.clone()) == node).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_node_whose_replacement_goes_away_serves_again() -> Result<()> {
    let disruption = serde_json::json!({"consolidateAfter": "10s"});
    let test = pool("dis-lift", c5_nodes(), disruption).await?;
    test.start_controller()?;
    test.run(async |t| {
        use futures::StreamExt;
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        web(sandbox, namespace, test, 1, "6", serde_json::json!({})).await?;
        let big = running_on(sandbox, namespace, test, 1).await?.first().context("a NodeClaim")?.clone();
        let taints = TaintLog::watch(sandbox, &big)?;
        // The first replacement is deleted as soon as it appears (from a watch: it would be up within seconds),
        // as a launch that failed would delete it.
        let api: Api<NodeClaim> = Api::all(sandbox.kube.clone());
        let config = kube::runtime::watcher::Config::default().labels(&format!("karpenter.sh/nodepool={test}"));
        let mut claims = Box::pin(kube::runtime::watcher::watcher(api.clone(), config).applied_objects());
        shrink_to_half_a_cpu(sandbox, namespace).await?;
        let first_replacement = async {
            while let Some(claim) = claims.next().await {
                let claim = claim?;
                if claim.annotations().contains_key("nodesmith.dev/replaces") {
                    api.delete(&claim.name_any(), &kube::api::DeleteParams::default()).await?;
                    return anyhow::Ok(claim.name_any());
                }
            }
            anyhow::bail!("the NodeClaim watch ended")
        };
        let deleted =
            tokio::time::timeout(SETTLE, first_replacement).await.context("timed out waiting for a replacement")??;
        // The command failed: the old node's taint is lifted, its NodeClaim still there (a later pass may try again).
        wait_until(&format!("the taint lifted from {} after {deleted} went", big.name_any()), RUN_WAIT, || async {
            let changes = taints.changes();
            let lifted = changes.windows(2).any(|pair| {
                pair[0] == TaintChange { tainted: true, claim_deleting: false }
                    && pair[1] == TaintChange { tainted: false, claim_deleting: false }
            });
            Ok(lifted.then_some(()))
        })
        .await?;
        let events = events_with_reason(sandbox, "DisruptionBlocked").await?;
        ensure!(
            events.iter().any(|e| e.contains(&deleted)),
            "a DisruptionBlocked Event names the replacement that went: {events:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_changed_nodeclass_rolls_every_node_within_the_budget() -> Result<()> {
    let disruption = serde_json::json!({"consolidateAfter": "Never", "budgets": [{"nodes": "1"}]});
    let test = pool("dis-drift", small_nodes(), disruption).await?;
    test.start_controller()?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        web(sandbox, namespace, test, 3, "1500m", serde_json::json!({})).await?;
        let before: Vec<String> = running_on(sandbox, namespace, test, 3).await?.iter().map(|c| c.name_any()).collect();
        let sampler = Sampler::start(sandbox, namespace, test, 3);
        // New tags (the class's hash) and another AMI (what it resolves).
        let patch = serde_json::json!({"spec": {"tags": {"rollout": "2"}, "amiSelectorTerms": [{"id": AL2023_X86_AMI}, {"id": ARM_AMI}]}});
        Api::<EC2NodeClass>::all(sandbox.kube.clone()).patch(test, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let rolled = wait_until("every drifted node replaced, pods Running", Duration::from_secs(420), || async {
            let claims = nodeclaims_of(sandbox, test).await?;
            let fresh = claims.iter().filter(|c| !before.contains(&c.name_any()) && is_initialized(c)).count();
            let running = running_pods(sandbox, namespace).await?.len();
            Ok((claims.len() == 3 && fresh == 3 && running == 3).then_some(claims))
        })
        .await;
        let (fewest_ready, most_deleting) = sampler.finish().await;
        let claims = rolled?;
        for claim in &claims {
            ensure!(claim.status.as_ref().and_then(|s| s.image_id.as_deref()) == Some(AL2023_X86_AMI), "new AMI on {}", claim.name_any());
        }
        eprintln!("drift rollout: at most {most_deleting} node(s) deleting at once; fewest ready pods {fewest_ready}");
        ensure!(most_deleting <= 1, "the budget allows one node at a time; {most_deleting} were deleting at once");
        ensure!(fewest_ready >= 2, "replacements come up first, so at most the moving pod is down; {fewest_ready} of 3 ready");
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn expiry_recycles_a_node_that_a_do_not_disrupt_pod_keeps_from_consolidation() -> Result<()> {
    let disruption = serde_json::json!({"consolidateAfter": "10s"});
    let test = pool("dis-expire", c5_nodes(), disruption).await?;
    // Before any NodeClaim exists: expireAfter and terminationGracePeriod are copied into each one.
    patch_pool(
        &test.sandbox,
        &test.name,
        serde_json::json!({"spec": {"template": {"spec": {"expireAfter": "2m", "terminationGracePeriod": "30s"}}}}),
    )
    .await?;
    test.start_controller()?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        web(
            sandbox,
            namespace,
            test,
            1,
            "6",
            serde_json::json!({"metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}}),
        )
        .await?;
        let first = running_on(sandbox, namespace, test, 1).await?.first().context("a NodeClaim")?.clone();
        let created = first.metadata.creation_timestamp.clone().context("created")?.0;
        // Shrunk, it would be replaced by a cheaper node (as in the replace test), but its pod says do-not-disrupt.
        shrink_to_half_a_cpu(sandbox, namespace).await?;
        wait_until("a DisruptionBlocked Event naming the do-not-disrupt pod", RUN_WAIT, || async {
            let notes = events_with_reason(sandbox, "DisruptionBlocked").await?;
            Ok(notes.iter().any(|n| n.contains("do-not-disrupt") && n.contains(namespace.as_str())).then_some(()))
        })
        .await?;
        // `explain node` names the pod that holds it, and when it expires.
        let node = first.status.as_ref().and_then(|s| s.node_name.clone()).context("a node")?;
        let pod = running_pods(sandbox, namespace).await?.first().context("the pod")?.name_any();
        let report = explain(&["node", &node])?;
        let held_by = format!("pod {namespace}/{pod} cannot be moved: it is annotated karpenter.sh/do-not-disrupt");
        ensure!(report["nodeclaim"] == first.name_any().as_str(), "{report:#}");
        ensure!(report["disruption"]["verdict"] == "stays", "{report:#}");
        ensure!(report["disruption"]["held_by"] == held_by.as_str(), "{report:#}");
        ensure!(report["expire_after"] == "2m" && report["expires"].is_string(), "{report:#}");
        let api: Api<NodeClaim> = Api::all(sandbox.kube.clone());
        let deleted = wait_until("the NodeClaim to expire", Duration::from_secs(200), || async {
            Ok(match api.get_opt(&first.name_any()).await? {
                Some(c) => c.metadata.deletion_timestamp.map(|t| t.0),
                None => Some(jiff::Timestamp::now()),
            })
        })
        .await?;
        let lived = deleted.duration_since(created).as_secs();
        ensure!(lived >= 120, "expired after {lived} s, not before expireAfter (2m)");
        // The do-not-disrupt pod holds the drain until terminationGracePeriod (30 s), then runs elsewhere.
        wait_until("the pod running on a new node", Duration::from_secs(180), || async {
            let pods = running_pods(sandbox, namespace).await?;
            let old_node = first.status.as_ref().and_then(|s| s.node_name.clone());
            Ok((pods.len() == 1 && pods[0].spec.as_ref().and_then(|s| s.node_name.clone()) != old_node).then_some(()))
        })
        .await?;
        wait_gone(&api, &first.name_any()).await
    })
    .await
}

async fn wait_gone(api: &Api<NodeClaim>, name: &str) -> Result<()> {
    wait_until(&format!("{name} gone"), RUN_WAIT, || async { Ok(api.get_opt(name).await?.is_none().then_some(())) })
        .await
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn budgets_of_zero_hold_nodes_and_reasons_scope_them() -> Result<()> {
    let disruption = serde_json::json!({"consolidateAfter": "5s", "budgets": [{"nodes": "0"}]});
    let test = pool("dis-budget", small_nodes(), disruption).await?;
    test.start_controller()?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        web(sandbox, namespace, test, 2, "1500m", serde_json::json!({})).await?;
        let claims = running_on(sandbox, namespace, test, 2).await?;
        // Drift under a zero budget: marked Drifted, not replaced.
        let patch = serde_json::json!({"spec": {"tags": {"rollout": "2"}}});
        Api::<EC2NodeClass>::all(sandbox.kube.clone()).patch(test, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        wait_until("the NodeClaims marked Drifted", RUN_WAIT, || async {
            let claims = nodeclaims_of(sandbox, test).await?;
            let drifted = claims.iter().all(|c| {
                c.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Drifted" && c.status == "True"))
            });
            Ok(drifted.then_some(()))
        })
        .await?;
        // Empty under a zero budget: kept, and the Event says which budget.
        patch_deployment(sandbox, namespace, serde_json::json!({"spec": {"replicas": 0}})).await?;
        wait_until("a DisruptionBlocked Event naming the budget", RUN_WAIT, || async {
            let notes = events_with_reason(sandbox, "DisruptionBlocked").await?;
            Ok(notes.iter().any(|n| n.contains(&format!("budget of NodePool {test}"))).then_some(()))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(30)).await;
        let kept = nodeclaims_of(sandbox, test).await?;
        ensure!(
            kept.len() == claims.len() && kept.iter().all(|c| c.metadata.deletion_timestamp.is_none()),
            "a zero budget disrupts nothing: {} of {} NodeClaims left",
            kept.len(),
            claims.len()
        );
        // Scoped to drift only, the zero budget lets emptiness through.
        patch_pool(sandbox, test, serde_json::json!({"spec": {"disruption": {"budgets": [{"nodes": "0", "reasons": ["Drifted"]}, {"nodes": "100%"}]}}})).await?;
        wait_claims_gone(sandbox, test).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the sandbox: make sandbox-up"]
async fn a_controller_killed_mid_disruption_converges_after_restart() -> Result<()> {
    let disruption = serde_json::json!({"consolidateAfter": "5s", "budgets": [{"nodes": "100%"}]});
    let test = pool("dis-kill", small_nodes(), disruption).await?;
    let controller = test.start_controller()?;
    test.run(async |t| {
        let (sandbox, namespace, test) = (&t.sandbox, &t.namespace, &t.name);
        web(sandbox, namespace, test, 4, "1500m", serde_json::json!({})).await?;
        let claims = running_on(sandbox, namespace, test, 4).await?;
        // A node left tainted by a disruption that never deleted its NodeClaim (as a crash between the two would).
        let stray = claims[0].status.as_ref().and_then(|s| s.node_name.clone()).context("a node")?;
        let nodes: Api<Node> = Api::all(sandbox.kube.clone());
        let taint =
            serde_json::json!({"spec": {"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}});
        nodes.patch(&stray, &PatchParams::default(), &Patch::Merge(&taint)).await?;
        // SIGKILL at the moment a disruption has begun (a NodeClaim deleting). Seen from a watch, not a poll: an
        // empty node's termination takes tens of milliseconds, less than any poll interval.
        let claims_api: Api<NodeClaim> = Api::all(sandbox.kube.clone());
        let config = kube::runtime::watcher::Config::default().labels(&format!("karpenter.sh/nodepool={test}"));
        let mut deletions = Box::pin(kube::runtime::watcher(claims_api, config));
        patch_deployment(sandbox, namespace, serde_json::json!({"spec": {"replicas": 2}})).await?;
        let begun = async {
            use futures::StreamExt;
            while let Some(event) = deletions.next().await {
                match event? {
                    kube::runtime::watcher::Event::Delete(_) => return anyhow::Ok(()),
                    kube::runtime::watcher::Event::Apply(c) | kube::runtime::watcher::Event::InitApply(c)
                        if c.metadata.deletion_timestamp.is_some() =>
                    {
                        return anyhow::Ok(());
                    }
                    _ => {}
                }
            }
            anyhow::bail!("the NodeClaim watch ended")
        };
        tokio::time::timeout(SETTLE, begun).await.context("timed out waiting for a disruption to begin")??;
        controller.kill();
        tokio::time::sleep(Duration::from_secs(5)).await;
        // It stays up through the fixture's clean-up, which needs a controller to drain and terminate.
        t.start(Start { identity: Some(&format!("{test}-again")), ..Start::default() })?;
        wait_until("two nodes left, no node tainted, both pods Running", SETTLE, || async {
            let claims = nodeclaims_of(sandbox, test).await?;
            let running = running_pods(sandbox, namespace).await?.len();
            let tainted = nodes
                .list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={test}")))
                .await?
                .items
                .iter()
                .filter(|n| is_tainted_disrupted(n))
                .count();
            let instances = live_instances(sandbox, test).await?.len();
            Ok((claims.len() == 2 && running == 2 && tainted == 0 && instances == 2).then_some(()))
        })
        .await
    })
    .await
}
