//! Karpenter's performance suite (kubernetes-sigs/karpenter `test/suites/performance`), as one controller's half
//! of a side-by-side run; `benches/side-by-side.sh` runs both halves on fresh sandboxes and prints the table.
//!
//! - `run CONTROLLER SCENARIO:PODS --out FILE`: CONTROLLER is `nodesmith` (the binary in `NODESMITH_BIN`, launching
//!   through moto and the registrar) or `karpenter` (Karpenter's KWOK provider in `KARPENTER_KWOK_BIN`, which
//!   creates KWOK Nodes itself; its CRDs from `KARPENTER_CRDS`, a directory of YAML files). Scenarios, with the
//!   suite's pod shapes (half "small" 900m / 3100Mi, half "large" 3500m / 28Gi):
//!   - `basic`: scale out PODS, then consolidation to 70% of them, then to none;
//!   - `scale-out`: scale out PODS;
//!   - `hostname-spread`: scale out PODS, the small half spread one per node (`kubernetes.io/hostname`, skew 1);
//!   - `drift`: scale out PODS (small half spread), then every node drifted by a NodePool template annotation.
//!
//!   Each phase records: seconds until it is done (every pod Running; for a consolidation, the last change of the
//!   pool's NodeClaims before they stayed unchanged for `SETTLED_AFTER`), nodes at the end, requested / allocatable
//!   CPU and memory over the pool's nodes, pods created by evictions, and the controller process's peak and P95
//!   resident memory and CPU seconds (from /proc, sampled every 500 ms), plus what the cloud took: the sum of
//!   `karpenter_cloudprovider_duration_seconds` for Create, and the median NodeClaim launch → registration time.
//! - `kwok-instance-types TYPE...`: the instance-types file for Karpenter's KWOK provider describing TYPE... as
//!   nodesmith's catalog does (on-demand, in the sandbox's subnet zones, at nodesmith's embedded us-east-1
//!   prices), with capacity set so that Karpenter's allocatable equals nodesmith's.
//! - `table KARPENTER.json NODESMITH.json [--json OUT]`: the figures side by side with the ratio nodesmith /
//!   Karpenter.
//!
//! The connection comes from the environment (`source <sandbox state>/env`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use nodesmith::apis::nodeclaim::NodeClaim;
use nodesmith::catalog::resources::{ResourceName, parse_quantity};
use serde::{Deserialize, Serialize};

#[path = "bench_support.rs"]
#[allow(dead_code)]
mod bench_support;
use bench_support::{free_port, http_ready, namespace, percentile, prepare_cluster, wait_until};

const POOL: &str = "side-by-side";
const NAMESPACE: &str = "side-by-side";
const POOL_LABEL: &str = "nodesmith.dev/side-by-side";
/// The instance types both pools may choose from: general purpose, compute and memory optimized, two
/// generations, up to 16 vCPUs (Karpenter's suite caps KWOK sizes below 32).
const INSTANCE_TYPES: &[&str] = &[
    "c5.large",
    "c5.xlarge",
    "c5.2xlarge",
    "c5.4xlarge",
    "c6i.large",
    "c6i.xlarge",
    "c6i.2xlarge",
    "c6i.4xlarge",
    "m5.large",
    "m5.xlarge",
    "m5.2xlarge",
    "m5.4xlarge",
    "m6i.large",
    "m6i.xlarge",
    "m6i.2xlarge",
    "m6i.4xlarge",
    "r5.large",
    "r5.xlarge",
    "r5.2xlarge",
    "r5.4xlarge",
    "r6i.large",
    "r6i.xlarge",
    "r6i.2xlarge",
    "r6i.4xlarge",
];
/// A consolidation has settled once the pool's NodeClaims stayed unchanged this long (consolidateAfter is 30 s,
/// and a pass that finds nothing more runs within it).
const SETTLED_AFTER: Duration = Duration::from_secs(90);
const PHASE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A consolidation still changing the pool after this long is reported as not settled, with the figures it reached
/// (`SIDE_BY_SIDE_CONSOLIDATION_TIMEOUT`, in seconds, sets another: the make-test case keeps it short).
fn consolidation_timeout() -> Duration {
    let seconds = std::env::var("SIDE_BY_SIDE_CONSOLIDATION_TIMEOUT").ok().and_then(|s| s.parse().ok());
    Duration::from_secs(seconds.unwrap_or(15 * 60))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ControllerKind {
    Nodesmith,
    Karpenter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    Basic,
    ScaleOut,
    HostnameSpread,
    Drift,
}

impl std::str::FromStr for Scenario {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "basic" => Self::Basic,
            "scale-out" => Self::ScaleOut,
            "hostname-spread" => Self::HostnameSpread,
            "drift" => Self::Drift,
            other => bail!("unknown scenario {other:?}: basic, scale-out, hostname-spread or drift"),
        })
    }
}

/// One half's figures, as written to its JSON file.
#[derive(Debug, Serialize, Deserialize)]
struct Run {
    controller: ControllerKind,
    scenario: Scenario,
    pods: usize,
    machine: String,
    phases: Vec<Phase>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Phase {
    name: String,
    seconds: f64,
    /// False for a consolidation that was still changing the pool at `consolidation_timeout()`.
    #[serde(default = "settled_by_default")]
    settled: bool,
    nodes: usize,
    pods_running: usize,
    cpu_packing: f64,
    memory_packing: f64,
    pods_evicted: usize,
    controller_peak_mib: f64,
    controller_p95_mib: f64,
    controller_cpu_seconds: f64,
    /// What the cloud provider's Create calls took in the phase (None where the controller does not say).
    cloud_create_seconds: Option<f64>,
    /// Of the NodeClaims launched in the phase (None with none launched).
    launch_to_registered_p50_seconds: Option<f64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {
            let usage = "run nodesmith|karpenter SCENARIO:PODS --out FILE";
            let controller = match args.get(1).map(String::as_str) {
                Some("nodesmith") => ControllerKind::Nodesmith,
                Some("karpenter") => ControllerKind::Karpenter,
                _ => bail!("usage: {usage}"),
            };
            let (scenario, pods) = args.get(2).and_then(|s| s.split_once(':')).context(usage)?;
            let out = match (args.get(3).map(String::as_str), args.get(4)) {
                (Some("--out"), Some(out)) => out.clone(),
                _ => bail!("usage: {usage}"),
            };
            run(controller, scenario.parse()?, pods.parse().context("PODS is a number")?, &out).await
        }
        Some("kwok-instance-types") => {
            let names: Vec<&str> = args[1..].iter().map(String::as_str).collect();
            let names = if names.is_empty() { INSTANCE_TYPES.to_vec() } else { names };
            println!("{}", serde_json::to_string_pretty(&kwok_instance_types(&names, &sandbox_zones())?)?);
            Ok(())
        }
        Some("table") => {
            let (karpenter, nodesmith) = (args.get(1).context("table KARPENTER.json NODESMITH.json")?, args.get(2));
            let nodesmith = nodesmith.context("table KARPENTER.json NODESMITH.json")?;
            let read = |path: &str| -> Result<Run> {
                serde_json::from_str(&std::fs::read_to_string(path).with_context(|| path.to_string())?)
                    .with_context(|| format!("{path} is not a run's figures"))
            };
            let table = table(&read(karpenter)?, &read(nodesmith)?);
            print!("{}", render_table(&table));
            if let (Some("--json"), Some(out)) = (args.get(3).map(String::as_str), args.get(4)) {
                std::fs::write(out, serde_json::to_string_pretty(&table)?)?;
            }
            Ok(())
        }
        _ => bail!("usage: side-by-side run|kwok-instance-types|table ... (see the header of benches/side_by_side.rs)"),
    }
}

fn settled_by_default() -> bool {
    true
}

/// The zones of the sandbox's subnets (the demo VPC's three).
fn sandbox_zones() -> Vec<String> {
    let cluster = std::env::var("NODESMITH_SANDBOX_CLUSTER").unwrap_or_else(|_| "demo".into());
    let region = bench_support::sandbox_region();
    nodesmith_sandbox::seed::Environment::demo(&cluster)
        .subnets
        .iter()
        .map(|(letter, _)| format!("{region}{letter}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Karpenter's KWOK instance types

/// One entry of the KWOK provider's instance-types file (`kwok/cloudprovider/helpers.go`, InstanceTypeOptions).
#[derive(Debug, Serialize)]
struct KwokInstanceType {
    name: String,
    offerings: Vec<KwokOffering>,
    architecture: String,
    #[serde(rename = "operatingSystems")]
    operating_systems: Vec<String>,
    resources: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct KwokOffering {
    price: f64,
    available: bool,
    requirements: Vec<serde_json::Value>,
}

/// KWOK's instance types subtract this kube-reserved from capacity, and nothing else (`newInstanceType`).
const KWOK_RESERVED_CPU_MILLIS: i64 = 100;
const KWOK_RESERVED_MEMORY_BYTES: i64 = 10 << 20;

fn kwok_instance_types(names: &[&str], zones: &[String]) -> Result<Vec<KwokInstanceType>> {
    use nodesmith::catalog::max_pods::MaxPodsSettings;
    let region = bench_support::sandbox_region();
    let catalog = nodesmith::catalog::embedded_instance_types_in(&region).context("no embedded catalog")?;
    let prices = nodesmith::catalog::pricing::PriceTable::embedded_for(&region);
    names
        .iter()
        .map(|name| {
            let info = catalog.iter().find(|t| t.name == *name).with_context(|| format!("{name} is not offered"))?;
            let price = prices.on_demand(name).with_context(|| format!("{name} has no price"))?;
            let allocatable = info.allocatable(MaxPodsSettings::default());
            let offerings = info
                .zones
                .iter()
                .filter(|zone| zones.contains(zone))
                .map(|zone| KwokOffering {
                    price,
                    available: true,
                    requirements: vec![
                        serde_json::json!({"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}),
                        serde_json::json!({"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]}),
                    ],
                })
                .collect();
            let arch = if info.architectures.iter().any(|a| a == "x86_64") { "amd64" } else { "arm64" };
            Ok(KwokInstanceType {
                name: name.to_string(),
                offerings,
                architecture: arch.into(),
                operating_systems: vec!["linux".into()],
                resources: BTreeMap::from([
                    ("cpu".into(), format!("{}m", allocatable.get(ResourceName::Cpu) + KWOK_RESERVED_CPU_MILLIS)),
                    (
                        "memory".into(),
                        format!("{}", allocatable.get(ResourceName::Memory) + KWOK_RESERVED_MEMORY_BYTES),
                    ),
                    ("pods".into(), allocatable.get(ResourceName::Pods).to_string()),
                ]),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// The controller under test

struct ControllerProcess {
    child: Child,
    health_port: u16,
    metrics_port: u16,
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl ControllerProcess {
    fn start(kind: ControllerKind, cluster: &str, instance_types_file: Option<&str>) -> Result<Self> {
        let (health_port, metrics_port) = (free_port()?, free_port()?);
        let log = std::fs::File::create(format!("target/side-by-side-{kind:?}.log").to_lowercase())?;
        let mut command = match kind {
            ControllerKind::Nodesmith => {
                let binary = std::env::var("NODESMITH_BIN").unwrap_or_else(|_| "target/release/nodesmith".into());
                let mut command = Command::new(binary);
                command
                    .args(["controller", "--cluster-name", cluster, "--namespace", NAMESPACE])
                    .args(["--identity", "side-by-side", "--metrics-port", &metrics_port.to_string()])
                    .args(["--health-port", &health_port.to_string()]);
                command
            }
            ControllerKind::Karpenter => {
                let binary = std::env::var("KARPENTER_KWOK_BIN").context("KARPENTER_KWOK_BIN is not set")?;
                let mut command = Command::new(binary);
                command
                    .env("SYSTEM_NAMESPACE", NAMESPACE)
                    .env("DISABLE_LEADER_ELECTION", "true")
                    .env("METRICS_PORT", metrics_port.to_string())
                    .env("HEALTH_PROBE_PORT", health_port.to_string())
                    // As Karpenter's chart sets it from the container's default 1 GiB limit (GOMEMLIMIT 90%).
                    .env("MEMORY_LIMIT", (1u64 << 30).to_string())
                    .env("INSTANCE_TYPES_FILE_PATH", instance_types_file.context("no instance types file")?);
                command
            }
        };
        let child = command.stdout(log.try_clone()?).stderr(log).spawn()?;
        Ok(Self { child, health_port, metrics_port })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn ready(&self) -> bool {
        http_ready(self.health_port).await.unwrap_or(false)
    }

    /// The sum of every sample of `family` (its `_sum` or a counter) whose labels contain `matching`.
    async fn metric_sum(&self, family: &str, matching: &str) -> Result<f64> {
        let text = http_get(self.metrics_port, "/metrics").await?;
        Ok(text
            .lines()
            .filter(|line| line.starts_with(&format!("{family}{{")) && line.contains(matching))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum())
    }
}

async fn http_get(port: u16, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
}

/// The controller's resident memory and CPU time, every 500 ms, from /proc.
#[derive(Clone, Default)]
struct Sampler(Arc<Mutex<Vec<(Instant, f64, f64)>>>);

impl Sampler {
    fn start(pid: u32) -> (Self, tokio::task::JoinHandle<()>) {
        let sampler = Sampler::default();
        let samples = sampler.0.clone();
        let ticks = clock_ticks_per_second();
        let task = tokio::spawn(async move {
            loop {
                if let Some((rss_mib, cpu_seconds)) = sample(pid, ticks)
                    && let Ok(mut samples) = samples.lock()
                {
                    samples.push((Instant::now(), rss_mib, cpu_seconds));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        (sampler, task)
    }

    /// Peak and P95 resident MiB, and CPU seconds used, between `from` and now.
    fn since(&self, from: Instant) -> (f64, f64, f64) {
        let samples = self.0.lock().map(|s| s.clone()).unwrap_or_default();
        let within: Vec<&(Instant, f64, f64)> = samples.iter().filter(|(at, _, _)| *at >= from).collect();
        let mut rss: Vec<f64> = within.iter().map(|(_, rss, _)| *rss).collect();
        rss.sort_by(f64::total_cmp);
        // CPU from the last sample before the phase (or its first) to the last.
        let before = samples.iter().rev().find(|(at, _, _)| *at < from).or(within.first().copied());
        let cpu = match (before, within.last()) {
            (Some((_, _, start)), Some((_, _, end))) => end - start,
            _ => 0.0,
        };
        (rss.last().copied().unwrap_or(0.0), percentile(&rss, 95.0), cpu)
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// (VmRSS in MiB, utime + stime in seconds) of a process.
fn sample(pid: u32, ticks: f64) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches(" kB").parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, inside parentheses): utime and stime are 14 and 15.
    let after_name: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = after_name.get(11)?.parse().ok()?;
    let stime: f64 = after_name.get(12)?.parse().ok()?;
    Some((rss_kib / 1024.0, (utime + stime) / ticks))
}

// ---------------------------------------------------------------------------------------------------------------
// A half

/// Each phase's figures are written to `out` (and printed) as soon as the phase ends.
async fn run(kind: ControllerKind, scenario: Scenario, pods: usize, out: &str) -> Result<()> {
    ensure!(pods >= 2, "at least 2 pods (half small, half large)");
    let kube = kube::Client::try_default().await?;
    let dynamic = |group: &str, version: &str, kind: &str, plural: &str| {
        Api::<DynamicObject>::all_with(
            kube.clone(),
            &kube::api::ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk(group, version, kind),
                plural,
            ),
        )
    };
    let zones = sandbox_zones();
    let mut instance_types_file = None;
    let (cluster, node_class_ref) = match kind {
        ControllerKind::Nodesmith => {
            // /22 subnets from a thousand pods on: the demo's three /24s hold about 750 instances. Smaller runs
            // (the make-test case) leave the shared sandbox's subnets as they are.
            let (cluster, _) = prepare_cluster(&kube, (pods >= 1000).then_some(22)).await?;
            let role =
                nodesmith::cloud::resource_names::ClusterNames::for_cluster(&cluster, &bench_support::sandbox_region())
                    .node_role;
            let class = serde_json::json!({
                "apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "metadata": {"name": POOL},
                "spec": {
                    "role": role,
                    "amiSelectorTerms": [{"alias": "al2023@latest"}],
                    "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": cluster}}],
                    "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": cluster}}],
                }
            });
            dynamic("karpenter.k8s.aws", "v1", "EC2NodeClass", "ec2nodeclasses")
                .patch(POOL, &PatchParams::apply("side-by-side").force(), &Patch::Apply(&class))
                .await?;
            (cluster, serde_json::json!({"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": POOL}))
        }
        ControllerKind::Karpenter => {
            let crds = std::env::var("KARPENTER_CRDS").context("KARPENTER_CRDS is not set")?;
            install_yaml_crds(&kube, &crds).await?;
            let file = "target/side-by-side-kwok-instance-types.json";
            std::fs::write(file, serde_json::to_string(&kwok_instance_types(INSTANCE_TYPES, &zones)?)?)?;
            instance_types_file = Some(file);
            let class = serde_json::json!({
                "apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass", "metadata": {"name": POOL},
            });
            dynamic("karpenter.kwok.sh", "v1alpha1", "KWOKNodeClass", "kwoknodeclasses")
                .patch(POOL, &PatchParams::apply("side-by-side").force(), &Patch::Apply(&class))
                .await?;
            (
                "kwok".to_string(),
                serde_json::json!({"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": POOL}),
            )
        }
    };
    // The suite's NodePool: no limits, WhenEmptyOrUnderutilized after 30 s, a budget of 100% of the nodes.
    let pool = serde_json::json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": POOL},
        "spec": {
            "template": {
                "metadata": {"labels": {POOL_LABEL: "true"}},
                "spec": {
                    "nodeClassRef": node_class_ref,
                    "expireAfter": "Never",
                    "requirements": [
                        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": INSTANCE_TYPES},
                        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": zones},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                    ],
                }
            },
            "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "30s",
                           "budgets": [{"nodes": "100%"}]},
        }
    });
    let pools = dynamic("karpenter.sh", "v1", "NodePool", "nodepools");
    pools.patch(POOL, &PatchParams::apply("side-by-side").force(), &Patch::Apply(&pool)).await?;
    if Api::<Namespace>::all(kube.clone()).get_opt(NAMESPACE).await?.is_none() {
        namespace(&kube, NAMESPACE).await?;
    }

    let controller = ControllerProcess::start(kind, &cluster, instance_types_file)?;
    wait_until("the controller ready", Duration::from_secs(300), || async {
        Ok(controller.ready().await.then_some(()))
    })
    .await?;
    // Measured from a pool the controller has taken up: nodesmith resolves its EC2NodeClass through AWS first
    // (seconds), which is start-up, not scale-out. A pool not Ready within a minute is measured anyway, and said.
    let pool_ready = wait_until("the NodePool Ready", Duration::from_secs(60), || async {
        let pool = pools.get(POOL).await?;
        let conditions = pool.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
        Ok(conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True").then_some(()))
    })
    .await;
    if let Err(error) = pool_ready {
        eprintln!("{error}: measuring anyway");
    }
    let (sampler, sampling) = Sampler::start(controller.pid());
    let created = PodCreations::watch(kube.clone());
    let bench = Bench {
        kube: kube.clone(),
        controller: &controller,
        sampler: &sampler,
        created: &created,
        create_seconds_before: Mutex::new(0.0),
    };

    let spread = matches!(scenario, Scenario::HostnameSpread | Scenario::Drift);
    let (small, large) = (pods / 2, pods - pods / 2);
    let mut run = Run { controller: kind, scenario, pods, machine: machine(), phases: Vec::new() };
    let mut record = |phase: Phase| -> Result<()> {
        println!("{kind:?} {scenario:?} {}: {}", phase.name, serde_json::to_string(&phase)?);
        run.phases.push(phase);
        std::fs::write(out, serde_json::to_string_pretty(&run)?).with_context(|| format!("writing {out}"))
    };
    record(bench.scale_out(small, large, spread).await?)?;
    match scenario {
        Scenario::Basic => {
            let (small_after, large_after) = (small * 7 / 10, large * 7 / 10);
            record(bench.consolidate("consolidation to 70%", small_after, large_after).await?)?;
            record(bench.consolidate("consolidation to 0", 0, 0).await?)?;
        }
        Scenario::Drift => {
            let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
                "nodesmith.dev/drift-trigger": jiff::Timestamp::now().to_string()}}}}});
            let from = Start::now();
            pools.patch(POOL, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            record(bench.drift(from, pods).await?)?;
        }
        Scenario::ScaleOut | Scenario::HostnameSpread => {}
    }
    sampling.abort();
    created.task.abort();

    bench.clean_up(&pools).await?;
    drop(controller);
    Ok(())
}

/// CPU model, cores and memory of this machine, for the README's table.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|kib| kib.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{}, {cores} cores, {memory_gib:.0} GiB", model.unwrap_or("unknown CPU"))
}

/// The CRDs in every YAML file of a directory, applied and Established.
async fn install_yaml_crds(kube: &kube::Client, dir: &str) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {dir}"))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_yaml_ng::Value::deserialize(document)?;
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition =
                serde_yaml_ng::from_value(value).with_context(|| format!("{} is not a CRD", path.display()))?;
            let name = crd.name_any();
            crds.patch(&name, &PatchParams::apply("side-by-side").force(), &Patch::Apply(&crd)).await?;
            names.push(name);
        }
    }
    for name in names {
        wait_until(&format!("{name} Established"), Duration::from_secs(60), || async {
            let crd = crds.get(&name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(established.then_some(()))
        })
        .await?;
    }
    Ok(())
}

/// Every pod the bench namespace gets, with when it was seen created: evictions show as replacements.
struct PodCreations {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodCreations {
    fn watch(kube: kube::Client) -> Self {
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let pods: Api<Pod> = Api::namespaced(kube, NAMESPACE);
        let recorded = seen.clone();
        let task = tokio::spawn(watcher(pods, watcher::Config::default()).applied_objects().for_each(move |pod| {
            let recorded = recorded.clone();
            async move {
                if let (Ok(pod), Ok(mut recorded)) = (pod, recorded.lock()) {
                    recorded.entry(pod.metadata.uid.unwrap_or_default()).or_insert_with(Instant::now);
                }
            }
        }));
        Self { seen, task }
    }

    fn since(&self, from: Instant) -> usize {
        self.seen.lock().map(|s| s.values().filter(|at| **at > from).count()).unwrap_or(0)
    }
}

struct Bench<'a> {
    kube: kube::Client,
    controller: &'a ControllerProcess,
    sampler: &'a Sampler,
    created: &'a PodCreations,
    /// The Create seconds the controller had reported when the last phase ended (phases follow each other).
    create_seconds_before: Mutex<f64>,
}

/// When a phase began, by the bench's clock and by the wall's (to compare with objects' timestamps).
#[derive(Clone, Copy)]
struct Start {
    at: Instant,
    wall: jiff::Timestamp,
}

impl Start {
    fn now() -> Self {
        Self { at: Instant::now(), wall: jiff::Timestamp::now() }
    }
}

impl Bench<'_> {
    async fn deployment(&self, name: &str, replicas: usize, cpu: &str, memory: &str, spread: bool) -> Result<()> {
        let mut spec = serde_json::json!({
            "nodeSelector": {POOL_LABEL: "true"},
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
        });
        if spread {
            spec["topologySpreadConstraints"] = serde_json::json!([{
                "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": name}},
            }]);
        }
        let deployment = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
            }
        });
        let deployments: Api<Deployment> = Api::namespaced(self.kube.clone(), NAMESPACE);
        deployments.patch(name, &PatchParams::apply("side-by-side").force(), &Patch::Apply(&deployment)).await?;
        Ok(())
    }

    async fn scale(&self, name: &str, replicas: usize) -> Result<()> {
        let deployments: Api<Deployment> = Api::namespaced(self.kube.clone(), NAMESPACE);
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        deployments.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        // Dated, to line the phases up with the controller's log.
        eprintln!("{} scaled {name} to {replicas}", jiff::Timestamp::now());
        Ok(())
    }

    async fn running_pods(&self) -> Result<usize> {
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), NAMESPACE);
        Ok(pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count())
    }

    async fn pool_claims(&self) -> Result<Vec<NodeClaim>> {
        let claims: Api<NodeClaim> = Api::all(self.kube.clone());
        Ok(claims.list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={POOL}"))).await?.items)
    }

    async fn scale_out(&self, small: usize, large: usize, spread: bool) -> Result<Phase> {
        let from = Start::now();
        eprintln!("{} scaling out: {small} small and {large} large pods", jiff::Timestamp::now());
        self.deployment("small", small, "900m", "3100Mi", spread).await?;
        self.deployment("large", large, "3500m", "28Gi", false).await?;
        let want = small + large;
        wait_until(&format!("{want} pods Running"), PHASE_TIMEOUT, || async {
            Ok((self.running_pods().await? == want).then_some(()))
        })
        .await?;
        self.phase("scale-out", from).await
    }

    /// Scales the Deployments down and waits for the pool to settle: its NodeClaims unchanged for
    /// `SETTLED_AFTER`, every pod Running. The time is to the last change.
    async fn consolidate(&self, name: &str, small: usize, large: usize) -> Result<Phase> {
        let claims_now = async || -> Result<BTreeSet<(String, bool)>> {
            // A NodeClaim marked for deletion counts as a change too.
            let claims = self.pool_claims().await?;
            Ok(claims.iter().map(|c| (c.name_any(), c.metadata.deletion_timestamp.is_some())).collect())
        };
        let mut claims_before = claims_now().await?;
        let from = Start::now();
        self.scale("small", small).await?;
        self.scale("large", large).await?;
        let want = small + large;
        let mut changed_at = from.at;
        let timeout = consolidation_timeout();
        let settled = loop {
            if from.at.elapsed() >= timeout {
                eprintln!("{name}: the pool was still changing after {timeout:?}");
                break None;
            }
            let claims = claims_now().await?;
            if claims != claims_before {
                (claims_before, changed_at) = (claims, Instant::now());
            } else if changed_at.elapsed() >= SETTLED_AFTER && self.running_pods().await? == want {
                break Some(changed_at);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let mut phase = self.phase(name, from).await?;
        match settled {
            Some(at) => phase.seconds = at.saturating_duration_since(from.at).as_secs_f64(),
            None => phase.settled = false,
        }
        Ok(phase)
    }

    /// Waits until every NodeClaim there was when the pool drifted is gone and every pod runs again.
    async fn drift(&self, from: Start, pods: usize) -> Result<Phase> {
        let drifted: BTreeSet<String> = self.pool_claims().await?.iter().map(|c| c.name_any()).collect();
        wait_until("every drifted node replaced", PHASE_TIMEOUT, || async {
            let left = self.pool_claims().await?.iter().filter(|c| drifted.contains(&c.name_any())).count();
            Ok((left == 0 && self.running_pods().await? == pods).then_some(()))
        })
        .await?;
        self.phase("drift", from).await
    }

    /// The figures of a phase that began at `from` and ends now.
    async fn phase(&self, name: &str, from: Start) -> Result<Phase> {
        let seconds = from.at.elapsed().as_secs_f64();
        let nodes: Api<Node> = Api::all(self.kube.clone());
        let pool_nodes = nodes.list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={POOL}"))).await?;
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), NAMESPACE);
        let pods = pods.list(&ListParams::default()).await?.items;
        let (cpu_packing, memory_packing) = packing(&pool_nodes.items, &pods);
        let (peak, p95, cpu) = self.sampler.since(from.at);
        let claims = self.pool_claims().await?;
        let mut launch_to_registered: Vec<f64> = claims
            .iter()
            // Timestamps are whole seconds.
            .filter(|c| {
                c.metadata.creation_timestamp.as_ref().is_some_and(|t| t.0.as_second() >= from.wall.as_second())
            })
            .filter_map(launch_to_registered_seconds)
            .collect();
        launch_to_registered.sort_by(f64::total_cmp);
        let create = self
            .controller
            .metric_sum("karpenter_cloudprovider_duration_seconds_sum", r#"method="Create""#)
            .await
            .ok()
            .filter(|seconds| *seconds > 0.0)
            .map(|total| {
                let mut before = self.create_seconds_before.lock().unwrap_or_else(|e| e.into_inner());
                let in_phase = total - *before;
                *before = total;
                in_phase
            });
        Ok(Phase {
            name: name.to_string(),
            seconds,
            settled: true,
            nodes: pool_nodes.items.iter().filter(|n| n.metadata.deletion_timestamp.is_none()).count(),
            pods_running: self.running_pods().await?,
            cpu_packing,
            memory_packing,
            pods_evicted: if name == "scale-out" { 0 } else { self.created.since(from.at) },
            controller_peak_mib: peak,
            controller_p95_mib: p95,
            controller_cpu_seconds: cpu,
            cloud_create_seconds: create,
            launch_to_registered_p50_seconds: (!launch_to_registered.is_empty())
                .then(|| percentile(&launch_to_registered, 50.0)),
        })
    }

    /// The pool and its pods deleted, and its NodeClaims gone (the controller terminates them). With
    /// `SIDE_BY_SIDE_CLEAN_UP=skip` (the script, when each half has a sandbox of its own, thrown away after it)
    /// nothing waits for the terminations: for 2,000 pods they outlast 10 minutes, and measure nothing.
    async fn clean_up(&self, pools: &Api<DynamicObject>) -> Result<()> {
        let deployments: Api<Deployment> = Api::namespaced(self.kube.clone(), NAMESPACE);
        for name in ["small", "large"] {
            deployments.delete(name, &DeleteParams::default()).await.ok();
        }
        pools.delete(POOL, &DeleteParams::default()).await.ok();
        if std::env::var("SIDE_BY_SIDE_CLEAN_UP").is_ok_and(|v| v == "skip") {
            return Ok(());
        }
        wait_until("the pool's NodeClaims to go", Duration::from_secs(600), || async {
            Ok(self.pool_claims().await?.is_empty().then_some(()))
        })
        .await
    }
}

/// Requested / allocatable CPU and memory over the nodes, counting the pods bound to them.
fn packing(nodes: &[Node], pods: &[Pod]) -> (f64, f64) {
    let names: BTreeSet<&str> = nodes.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
    let quantity = |map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
                    key: &str,
                    resource: ResourceName| {
        map.and_then(|m| m.get(key)).and_then(|q| parse_quantity(&q.0, resource).ok()).unwrap_or(0) as f64
    };
    let (mut cpu_allocatable, mut memory_allocatable) = (0.0, 0.0);
    for node in nodes {
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        cpu_allocatable += quantity(allocatable, "cpu", ResourceName::Cpu);
        memory_allocatable += quantity(allocatable, "memory", ResourceName::Memory);
    }
    let (mut cpu_requested, mut memory_requested) = (0.0, 0.0);
    for pod in pods {
        let Some(spec) = &pod.spec else { continue };
        if !spec.node_name.as_deref().is_some_and(|n| names.contains(n)) {
            continue;
        }
        for container in &spec.containers {
            let requests = container.resources.as_ref().and_then(|r| r.requests.as_ref());
            cpu_requested += quantity(requests, "cpu", ResourceName::Cpu);
            memory_requested += quantity(requests, "memory", ResourceName::Memory);
        }
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    (ratio(cpu_requested, cpu_allocatable), ratio(memory_requested, memory_allocatable))
}

/// Seconds from a NodeClaim's Launched to its Registered condition.
fn launch_to_registered_seconds(claim: &NodeClaim) -> Option<f64> {
    let conditions = &claim.status.as_ref()?.conditions;
    let at = |kind: &str| {
        conditions.iter().find(|c| c.type_ == kind && c.status == "True").map(|c| c.last_transition_time.0)
    };
    let span = at("Registered")?.duration_since(at("Launched")?);
    Some(span.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------------------------
// The table

#[derive(Debug, Serialize)]
struct Table {
    scenario: Scenario,
    pods: usize,
    machine: String,
    rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
struct Row {
    phase: String,
    figure: &'static str,
    karpenter: f64,
    nodesmith: f64,
    /// nodesmith / Karpenter.
    ratio: f64,
}

fn table(karpenter: &Run, nodesmith: &Run) -> Table {
    type Figure = (&'static str, fn(&Phase) -> f64);
    let figures: [Figure; 12] = [
        ("seconds", |p| p.seconds),
        ("settled (1 yes, 0 no)", |p| if p.settled { 1.0 } else { 0.0 }),
        ("nodes at the end", |p| p.nodes as f64),
        ("pods running at the end", |p| p.pods_running as f64),
        ("CPU requested / allocatable", |p| p.cpu_packing),
        ("memory requested / allocatable", |p| p.memory_packing),
        ("pods evicted", |p| p.pods_evicted as f64),
        ("controller peak RSS (MiB)", |p| p.controller_peak_mib),
        ("controller P95 RSS (MiB)", |p| p.controller_p95_mib),
        ("controller CPU seconds", |p| p.controller_cpu_seconds),
        ("cloud Create seconds (sum)", |p| p.cloud_create_seconds.unwrap_or(f64::NAN)),
        ("launch -> registered p50 (s)", |p| p.launch_to_registered_p50_seconds.unwrap_or(f64::NAN)),
    ];
    let mut rows = Vec::new();
    for k in &karpenter.phases {
        let Some(n) = nodesmith.phases.iter().find(|n| n.name == k.name) else { continue };
        for (figure, value) in figures {
            let (karpenter, nodesmith) = (value(k), value(n));
            let ratio = if karpenter != 0.0 { nodesmith / karpenter } else { f64::NAN };
            rows.push(Row { phase: k.name.clone(), figure, karpenter, nodesmith, ratio });
        }
    }
    Table { scenario: nodesmith.scenario, pods: nodesmith.pods, machine: nodesmith.machine.clone(), rows }
}

fn render_table(table: &Table) -> String {
    let number = |value: f64, width: usize, decimals: usize| {
        if value.is_finite() { format!("{value:>width$.decimals$}") } else { format!("{:>width$}", "-") }
    };
    let mut out = format!("{:?}, {} pods, on {}\n", table.scenario, table.pods, table.machine);
    out += &format!("{:<22} {:<32} {:>12} {:>12} {:>8}\n", "phase", "figure", "Karpenter", "nodesmith", "ratio");
    for row in &table.rows {
        out += &format!(
            "{:<22} {:<32} {} {} {}\n",
            row.phase,
            row.figure,
            number(row.karpenter, 12, 3),
            number(row.nodesmith, 12, 3),
            number(row.ratio, 8, 2)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kwok_types_have_nodesmiths_allocatable_once_kwoks_reservation_is_taken_off() {
        let zones = vec!["us-east-1a".to_string(), "us-east-1b".to_string()];
        let types = kwok_instance_types(&["m5.large"], &zones).expect("m5.large");
        let m5 = &types[0];
        // nodesmith: 2 vCPUs less 70m kube-reserved; 29 pods (3 ENIs x 10 IPs).
        assert_eq!(m5.resources["cpu"], "2030m");
        assert_eq!(m5.resources["pods"], "29");
        assert_eq!(m5.offerings.len(), 2);
    }
}
