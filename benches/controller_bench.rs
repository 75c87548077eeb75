//! Controller benchmarks against a running sandbox (run through `benches/controller-bench.sh`, which starts one):
//!
//! - `latency [ROUNDS] [PODS]`: ROUNDS times, a Deployment of PODS pods (1 CPU, 1 GiB) is created; for every pod
//!   that needed a new node, the time from the moment it was seen Unschedulable to the CreateFleet call that
//!   launched its node (timed by a recording proxy in front of moto). Prints p50, p99 and max.
//! - `memory [NODES] [PODS]`: NODES KWOK nodes and PODS pods bound to them, then the controller's resident memory
//!   once its caches have synced (VmRSS, split into anonymous and file-backed pages, and VmHWM from /proc).
//! - `interruptions [N]` and `interruption-handler [N]`: a burst of N spot interruption messages for N NodeClaims,
//!   handled by the whole controller or by its interruption handler alone (`interruption_burst.rs`): the time until
//!   every NodeClaim is marked for deletion, and per message from its sending to its NodeClaim's deletion (p50,
//!   p99). `benches/controller-bench.sh` runs Karpenter's interruption controller on the same burst after either.
//!
//! The connection comes from the environment (`source <sandbox state>/env`); the controller binary from
//! `NODESMITH_BIN` (default target/release/nodesmith).

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use nodesmith::apis::nodeclaim::NodeClaim;
use nodesmith_sandbox::fault_proxy::{self, FaultPlan};

#[path = "bench_support.rs"]
mod bench_support;
#[path = "interruption_burst.rs"]
mod interruption_burst;
use bench_support::{
    free_port, http_get, http_ready, install_crds, namespace, percentile, prepare_cluster, rss_kib, sandbox_region,
    wait_until,
};

const BENCH_LABEL: &str = "nodesmith.dev/bench";

/// The controller process, its health port and its metrics port.
struct Controller(Child, u16, u16);

impl Drop for Controller {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn start_controller(cluster: &str, namespace: &str, aws_endpoint: Option<&str>) -> Result<Controller> {
    let binary = std::env::var("NODESMITH_BIN").unwrap_or_else(|_| "target/release/nodesmith".into());
    let (health, metrics) = (free_port()?, free_port()?);
    let mut command = Command::new(binary);
    command
        .args(["controller", "--cluster-name", cluster, "--namespace", namespace, "--identity", "bench"])
        .args(["--metrics-port", &metrics.to_string(), "--health-port", &health.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create("target/controller-bench.log")?);
    if let Some(endpoint) = aws_endpoint {
        command.env("AWS_ENDPOINT_URL", endpoint);
    }
    Ok(Controller(command.spawn()?, health, metrics))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kube = kube::Client::try_default().await?;
    match args.first().map(String::as_str) {
        Some("interruptions") => {
            let count = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
            interruption_burst::whole_controller(&kube, count).await
        }
        Some("interruption-handler") => {
            let count = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
            interruption_burst::handler_alone(&kube, count).await
        }
        // The burst's queue for Karpenter's half (controller-bench.sh), from the same build as nodesmith's half.
        Some("sqs-server") => {
            let port: u16 = args.get(1).context("sqs-server PORT")?.parse().context("sqs-server PORT")?;
            let server = nodesmith_sandbox::sqs_server::start(&format!("127.0.0.1:{port}"), &sandbox_region()).await?;
            eprintln!("serving SQS at {}", server.endpoint);
            // Stopped by the script (SIGTERM) or by hand (SIGINT); the counts say whether any message came back.
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            let counts = server.counts();
            println!("the queue: {} sent, {} received, {} deleted", counts.sent, counts.received, counts.deleted);
            Ok(())
        }
        Some("memory") => {
            let nodes = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
            let pods = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
            memory(&kube, nodes, pods).await
        }
        _ => {
            let rounds = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
            let pods = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
            latency(&kube, rounds, pods).await
        }
    }
}

async fn latency(kube: &kube::Client, rounds: usize, pods_per_round: i32) -> Result<()> {
    let (cluster, _) = prepare_cluster(kube, None).await?;
    let bench = format!("bench-{}", std::process::id());
    let dynamic = |kind: &str, plural: &str, group: &str| {
        Api::<kube::api::DynamicObject>::all_with(
            kube.clone(),
            &kube::api::ApiResource::from_gvk_with_plural(&kube::api::GroupVersionKind::gvk(group, "v1", kind), plural),
        )
    };
    let class = serde_json::json!({
        "apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "metadata": {"name": bench},
        "spec": {
            "role": nodesmith::cloud::resource_names::ClusterNames::for_cluster(&cluster, &sandbox_region()).node_role,
            "amiSelectorTerms": [{"alias": "al2023@latest"}],
            "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": cluster}}],
            "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": cluster}}],
        }
    });
    dynamic("EC2NodeClass", "ec2nodeclasses", "karpenter.k8s.aws")
        .create(&PostParams::default(), &serde_json::from_value(class)?)
        .await?;
    let pool = serde_json::json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": bench},
        "spec": {"template": {
            "metadata": {"labels": {BENCH_LABEL: bench}},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": bench},
                "requirements": [
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                    {"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": ["c", "m"]},
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                ],
            }
        }}
    });
    dynamic("NodePool", "nodepools", "karpenter.sh")
        .create(&PostParams::default(), &serde_json::from_value(pool)?)
        .await?;
    namespace(kube, &bench).await?;

    let moto = std::env::var("AWS_ENDPOINT_URL").context("AWS_ENDPOINT_URL: source the sandbox env")?;
    let (proxy, log) = fault_proxy::start(&moto, FaultPlan::default()).await?;
    let controller = start_controller(&cluster, &bench, Some(&proxy))?;
    // Measured on a controller that is up: leading, its EC2NodeClass resolved (Ready), its first read of the spot
    // prices done (moto takes seconds over it, and answers a launch's calls late meanwhile). Otherwise the first
    // round times the start-up instead.
    let classes = dynamic("EC2NodeClass", "ec2nodeclasses", "karpenter.k8s.aws");
    wait_until("the EC2NodeClass Ready", Duration::from_secs(120), || async {
        let class = classes.get(&bench).await?;
        let conditions = class.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let ready = conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        Ok(ready.then_some(()))
    })
    .await?;
    wait_until("the first spot price read", Duration::from_secs(120), || async {
        let metrics = http_get(controller.2, "/metrics").await.unwrap_or_default();
        Ok(metrics
            .lines()
            .any(|l| {
                l.starts_with("karpenter_cloudprovider_duration_seconds_count")
                    && l.contains(r#"method="GetSpotPrices""#)
            })
            .then_some(()))
    })
    .await?;

    // When each pod was first seen Unschedulable, from a watch (sub-second, unlike the condition's timestamp).
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(kube.clone(), &bench);
    let watch_seen = seen.clone();
    let watch =
        tokio::spawn(watcher(pods.clone(), watcher::Config::default()).applied_objects().for_each(move |pod| {
            let seen = watch_seen.clone();
            async move {
                let Ok(pod) = pod else { return };
                let unschedulable = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                    c.iter().any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"))
                });
                if unschedulable && let Ok(mut seen) = seen.lock() {
                    seen.entry(pod.name_any()).or_insert_with(Instant::now);
                }
            }
        }));

    let deployments: Api<Deployment> = Api::namespaced(kube.clone(), &bench);
    for round in 0..rounds {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("round-{round}")},
            "spec": {
                "replicas": pods_per_round,
                "selector": {"matchLabels": {"app": format!("round-{round}")}},
                "template": {
                    "metadata": {"labels": {"app": format!("round-{round}")}},
                    "spec": {
                        "nodeSelector": {BENCH_LABEL: bench},
                        "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
                    }
                }
            }
        }))?;
        deployments.create(&PostParams::default(), &deployment).await?;
        let selector = format!("app=round-{round}");
        wait_until(&format!("round {round} running"), Duration::from_secs(120), || async {
            let listed = pods.list(&ListParams::default().labels(&selector)).await?;
            let running = listed
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            Ok((running == pods_per_round as usize).then_some(()))
        })
        .await?;
    }
    watch.abort();

    // Pod → its node → the NodeClaim of that node → the CreateFleet that launched it.
    let claims = Api::<NodeClaim>::all(kube.clone()).list(&ListParams::default()).await?;
    let claim_of_node: HashMap<String, String> =
        claims.items.iter().filter_map(|c| Some((c.status.as_ref()?.node_name.clone()?, c.name_any()))).collect();
    let fleet: HashMap<String, Instant> = log
        .fleet_calls
        .lock()
        .map(|calls| calls.iter().map(|(t, claim)| (claim.clone(), *t)).collect())
        .unwrap_or_default();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let listed = pods.list(&ListParams::default()).await?.items;
    // The last pod of each round seen Unschedulable: the batch's idle window can only start there, so the time
    // from it to CreateFleet is the controller's own part, and the rest is how far the round's pods were spread.
    let mut last_seen_of_round: HashMap<String, Instant> = HashMap::new();
    for pod in &listed {
        if let (Some(seen_at), Some(round)) = (seen.get(&pod.name_any()), pod.labels().get("app")) {
            let last = last_seen_of_round.entry(round.clone()).or_insert(*seen_at);
            *last = (*last).max(*seen_at);
        }
    }
    let (mut latencies, mut after_last_seen) = (Vec::new(), Vec::new());
    for pod in &listed {
        let (Some(seen_at), Some(node)) =
            (seen.get(&pod.name_any()), pod.spec.as_ref().and_then(|s| s.node_name.clone()))
        else {
            continue;
        };
        let Some(launched_at) = claim_of_node.get(&node).and_then(|c| fleet.get(c)) else { continue };
        // A pod that went onto a node launched before it was seen did not wait for a launch.
        if let Some(latency) = launched_at.checked_duration_since(*seen_at) {
            latencies.push(latency.as_secs_f64());
            let last = pod.labels().get("app").and_then(|round| last_seen_of_round.get(round));
            if let Some(since_last) = last.and_then(|last| launched_at.checked_duration_since(*last)) {
                after_last_seen.push(since_last.as_secs_f64());
            }
        }
    }
    // Per round, on stderr with wall-clock times, to line up with the controller's log (target/controller-bench.log).
    let (base_instant, base_wall) = (Instant::now(), jiff::Timestamp::now());
    let wall = |at: Instant| {
        let ago = jiff::SignedDuration::try_from(base_instant.saturating_duration_since(at)).unwrap_or_default();
        base_wall.saturating_sub(ago).map(|t| t.strftime("%H:%M:%S%.3f").to_string()).unwrap_or_default()
    };
    let mut rounds_seen: Vec<(&String, &Instant)> = last_seen_of_round.iter().collect();
    rounds_seen.sort_by_key(|(_, at)| **at);
    for (round, last) in rounds_seen {
        let first = listed
            .iter()
            .filter(|p| p.labels().get("app") == Some(round))
            .filter_map(|p| seen.get(&p.name_any()))
            .min()
            .copied()
            .unwrap_or(*last);
        eprintln!("{round}: first seen {}, last seen {}", wall(first), wall(*last));
    }
    latencies.sort_by(f64::total_cmp);
    after_last_seen.sort_by(f64::total_cmp);
    println!(
        "pod unschedulable -> CreateFleet: {} pods, {} launches, p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        latencies.len(),
        fleet.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  of which after the round's last pod was seen Unschedulable: p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        percentile(&after_last_seen, 50.0),
        percentile(&after_last_seen, 99.0),
        after_last_seen.last().copied().unwrap_or(f64::NAN)
    );

    Api::<Namespace>::all(kube.clone()).delete(&bench, &DeleteParams::default()).await?;
    dynamic("NodePool", "nodepools", "karpenter.sh").delete(&bench, &DeleteParams::default()).await?;
    let claims_api: Api<NodeClaim> = Api::all(kube.clone());
    let label = format!("karpenter.sh/nodepool={bench}");
    wait_until("the bench's NodeClaims to go", Duration::from_secs(180), || async {
        Ok(claims_api.list(&ListParams::default().labels(&label)).await?.items.is_empty().then_some(()))
    })
    .await?;
    dynamic("EC2NodeClass", "ec2nodeclasses", "karpenter.k8s.aws").delete(&bench, &DeleteParams::default()).await?;
    Ok(())
}

/// Resident KiB of the controller binary's own mappings, by permission: code (`r-xp`), read-only data such as
/// the embedded catalog (`r--p`), and the rest.
fn binary_rss_kib(pid: u32) -> Result<BTreeMap<String, u64>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let binary = std::fs::read_link(format!("/proc/{pid}/exe"))?.to_string_lossy().into_owned();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A mapping's header: address range, permissions, offset, device, inode, path.
        if fields.first().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            current = (fields.get(5) == Some(&binary.as_str())).then(|| match fields.get(1).copied() {
                Some("r-xp") => "code".to_string(),
                Some("r--p") => "read-only data".to_string(),
                Some(other) => other.to_string(),
                None => "unknown".to_string(),
            });
        } else if let (Some(kind), ["Rss:", kib, "kB"]) = (&current, fields.as_slice()) {
            *by_kind.entry(kind.clone()).or_default() += kib.parse::<u64>().unwrap_or(0);
        }
    }
    Ok(by_kind)
}

async fn memory(kube: &kube::Client, node_count: usize, pod_count: usize) -> Result<()> {
    let cluster = std::env::var("NODESMITH_SANDBOX_CLUSTER").unwrap_or_else(|_| "demo".into());
    let bench = format!("bench-mem-{}", std::process::id());
    install_crds(kube).await?;
    namespace(kube, &bench).await?;
    let nodes: Api<Node> = Api::all(kube.clone());
    let started = Instant::now();
    let node_names: Vec<String> = (0..node_count).map(|i| format!("{bench}-{i}")).collect();
    futures::stream::iter(node_names.iter().cloned())
        .map(|name| {
            let nodes = nodes.clone();
            let bench = bench.clone();
            async move {
                let node: Node = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "labels": {BENCH_LABEL: bench, "kubernetes.io/os": "linux",
                        "node.kubernetes.io/instance-type": "m5.2xlarge", "karpenter.sh/nodepool": "bench"}},
                    "spec": {"taints": [{"key": BENCH_LABEL, "effect": "NoSchedule"}]},
                    "status": {"allocatable": {"cpu": "8", "memory": "30Gi", "pods": "110"},
                               "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
                }))?;
                nodes.create(&PostParams::default(), &node).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let pods: Api<Pod> = Api::namespaced(kube.clone(), &bench);
    futures::stream::iter(0..pod_count)
        .map(|i| {
            let pods = pods.clone();
            let node = node_names[i % node_names.len()].clone();
            async move {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench", "index": i.to_string()}},
                    "spec": {
                        "nodeName": node,
                        "tolerations": [{"key": BENCH_LABEL, "operator": "Exists"}],
                        "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}],
                    }
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    println!("created {node_count} nodes and {pod_count} pods in {:.1} s", started.elapsed().as_secs_f64());

    let controller = start_controller(&cluster, &bench, None)?;
    let health = controller.1;
    let synced_from = Instant::now();
    wait_until("the controller's caches to sync (/readyz)", Duration::from_secs(300), || async {
        let ready = tokio::net::TcpStream::connect(("127.0.0.1", health)).await.is_ok()
            && http_ready(health).await.unwrap_or(false);
        Ok(ready.then_some(()))
    })
    .await?;
    let synced = synced_from.elapsed();
    // Settled: sampled every half second for 20 s, after 10 s. One sample alone may land in a periodic pass (the
    // disruption pass every 10 s), whose transient the peak (VmHWM) shows.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut samples: Vec<BTreeMap<String, u64>> = Vec::new();
    for _ in 0..40 {
        samples.push(rss_kib(controller.0.id())?);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let median_mib = |key: &str| {
        let mut values: Vec<f64> = samples.iter().map(|s| s.get(key).copied().unwrap_or(0) as f64 / 1024.0).collect();
        values.sort_by(f64::total_cmp);
        (percentile(&values, 50.0), values.last().copied().unwrap_or(f64::NAN))
    };
    let ((rss, rss_max), (anonymous, _), (files, _)) =
        (median_mib("VmRSS"), median_mib("RssAnon"), median_mib("RssFile"));
    let peak = samples.last().and_then(|s| s.get("VmHWM")).copied().unwrap_or(0) / 1024;
    println!(
        "controller with {node_count} nodes and {pod_count} pods cached: ready in {:.1} s, VmRSS median {rss:.0} MiB \
         over 20 s (anonymous {anonymous:.0} MiB, the binary and other files {files:.0} MiB), highest sample \
         {rss_max:.0} MiB, VmHWM {peak} MiB",
        synced.as_secs_f64(),
    );
    let binary = binary_rss_kib(controller.0.id())?;
    let parts: Vec<String> = binary.iter().map(|(kind, kib)| format!("{kind} {} KiB", kib)).collect();
    println!("the binary's resident pages: {}", parts.join(", "));
    drop(controller);
    // At 50,000 pods the API server may close a pooled connection under the request ("connection closed before
    // message completed"): each clean-up call is tried again until it is answered.
    let namespaces = Api::<Namespace>::all(kube.clone());
    wait_until("the bench namespace deleted", Duration::from_secs(120), || async {
        match namespaces.delete(&bench, &DeleteParams::default()).await {
            Ok(_) => Ok(Some(())),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Some(())),
            Err(error) => {
                eprintln!("deleting the bench namespace, trying again: {error}");
                Ok(None)
            }
        }
    })
    .await?;
    let selector = format!("{BENCH_LABEL}={bench}");
    wait_until("the bench nodes deleted", Duration::from_secs(120), || async {
        match nodes.delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector)).await {
            Ok(_) => Ok(Some(())),
            Err(error) => {
                eprintln!("deleting the bench nodes, trying again: {error}");
                Ok(None)
            }
        }
    })
    .await?;
    Ok(())
}
