//! A full consolidation pass over a large cluster: every candidate evaluated on its own (single-node) plus the
//! multi-node search, on the real catalog and prices, on one thread. Nodes of c5/m5/r5 sizes large to 4xlarge,
//! each given `--pods-per-node` pods of mixed shapes (CPU {50,100,250,500,1000,1500}m, memory 64Mi–4Gi, none
//! larger than twice its share) filling 40–90% of its CPU (`--fill`); a fifth of the pods have a zone spread and
//! a tenth hostname anti-affinity; consolidateAfter has passed everywhere. `--headroom N` caps every node's free
//! CPU at N% (the rest taken by pods that stay), so with `--headroom 0` no candidate's pods fit elsewhere and
//! every candidate is judged for a replacement node: the dearest path.
//!
//! `cargo run --release --example disruption-pass -- --nodes 1000,5000 [--pods-per-node 10] [--fill 40-90]
//! [--headroom 100] [--seed 7]` prints, per size, the time of `decide` (stops at the first command) and of
//! evaluating every candidate.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use nodesmith::catalog::pricing::PriceTable;
use nodesmith::catalog::resources::{ResourceName, Resources};
use nodesmith::catalog::{CapacityType, embedded_instance_types};
use nodesmith::disruption::budgets::Budget;
use nodesmith::disruption::{
    ManagedNode, MovablePod, Policy, PoolPolicy, Settings, Snapshot, decide, evaluate_every_candidate,
};
use nodesmith::scheduling::{
    ExistingNode, NodePoolSpec, Operator, PodAffinityTerm, PodRequest, Requirement, TopologyKey, TopologySpread,
};

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const TYPES: [&str; 9] = [
    "c5.large",
    "c5.xlarge",
    "c5.2xlarge",
    "m5.large",
    "m5.xlarge",
    "m5.2xlarge",
    "r5.large",
    "r5.xlarge",
    "m5.4xlarge",
];

/// A small deterministic generator (xorshift), so runs are comparable without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn pod(rng: &mut Rng, id: String) -> PodRequest {
    let cpu = rng.pick(&[50, 100, 250, 500, 1000, 1500]);
    let memory = rng.pick(&[64i64, 100, 256, 512, 1024, 2048, 4096]) << 20;
    let mut request = PodRequest::new(
        &id,
        Resources::ZERO.with(ResourceName::Cpu, cpu).with(ResourceName::Memory, memory).with(ResourceName::Pods, 1),
    );
    let app = format!("app-{}", rng.next() % 50);
    request.labels = BTreeMap::from([("app".to_string(), app.clone())]);
    let selector = vec![Requirement::equals("app", &app)];
    match rng.next() % 10 {
        0 | 1 => request.spreads.push(TopologySpread {
            key: TopologyKey::Zone,
            max_skew: 1,
            selector,
            hard: true,
            min_domains: None,
            counted_nodes: Default::default(),
        }),
        2 => request.anti_affinity.push(PodAffinityTerm { key: TopologyKey::Hostname, selector }),
        _ => {}
    }
    request
}

/// How the cluster is made: pods per node, the range of CPU fill, the most free CPU a node keeps (percent of its
/// allocatable; the rest taken by pods that do not move), and the seed.
struct Shape {
    pods_per_node: usize,
    fill: (u64, u64),
    headroom: u64,
    seed: u64,
}

fn cluster(nodes: usize, shape: &Shape) -> (Vec<ManagedNode>, PriceTable) {
    let Shape { pods_per_node, fill, headroom, seed } = *shape;
    let prices = PriceTable::embedded();
    let catalog = embedded_instance_types();
    let mut rng = Rng(seed.max(1));
    let created = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(3);
    let mut out = Vec::with_capacity(nodes);
    for n in 0..nodes {
        let instance_type = rng.pick(&TYPES);
        let zone = ZONES[n % 3];
        let info = catalog.iter().find(|t| t.name == instance_type).expect("a type of the catalog");
        let allocatable = info.allocatable(Default::default());
        let fill = fill.0 + rng.next() % (fill.1 - fill.0 + 1);
        let mut used = Resources::ZERO;
        let mut pods = Vec::new();
        // Each of the node's pods is the first of a few random shapes no larger than twice its share of the fill
        // and that keeps the node's CPU within the fill: big nodes get big pods, and every node gets its count.
        let cpu_share = allocatable.get(ResourceName::Cpu) * fill as i64 / 100 / pods_per_node.max(1) as i64;
        for p in 0..pods_per_node {
            for _ in 0..20 {
                let request = pod(&mut rng, format!("ns/pod-{n}-{p}"));
                let next = used + request.requests;
                let cpu_used = next.get(ResourceName::Cpu) * 100 / allocatable.get(ResourceName::Cpu).max(1);
                if next.fits_in(&allocatable)
                    && cpu_used as u64 <= fill
                    && request.requests.get(ResourceName::Cpu) <= (2 * cpu_share).max(50)
                {
                    used = next;
                    pods.push(MovablePod { request, blocker: None, eviction_cost: 1.0 });
                    break;
                }
            }
        }
        let name = format!("node-{n}");
        let mut labels: BTreeMap<String, String> = info.labels().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        labels.insert("topology.kubernetes.io/zone".into(), zone.into());
        labels.insert("karpenter.sh/capacity-type".into(), "on-demand".into());
        labels.insert("karpenter.sh/nodepool".into(), "default".into());
        labels.insert("kubernetes.io/hostname".into(), name.clone());
        out.push(ManagedNode {
            claim: name.clone(),
            node: Some(name.clone()),
            nodepool: "default".into(),
            instance_type: instance_type.into(),
            zone: zone.into(),
            capacity_type: CapacityType::OnDemand,
            price: prices.on_demand(instance_type).unwrap_or_default(),
            created,
            initialized_at: Some(created),
            last_pod_event: Some(created),
            last_pod_departure: None,
            deleting: false,
            ready: true,
            nominated: false,
            do_not_disrupt: false,
            consolidation_replacement: false,
            drifted: None,
            pods,
            room: ExistingNode {
                name,
                labels,
                taints: vec![],
                available: {
                    let mut free = allocatable - used;
                    let cap = allocatable.get(ResourceName::Cpu) * headroom as i64 / 100;
                    free.set(ResourceName::Cpu, free.get(ResourceName::Cpu).min(cap));
                    free
                },
                capacity: info.capacity(Default::default()),
                nodepool: Some("default".into()),
                pods: Vec::new(),
            },
        });
    }
    (out, prices)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let sizes: Vec<usize> =
        value("--nodes").unwrap_or_else(|| "1000,5000".into()).split(',').filter_map(|s| s.parse().ok()).collect();
    let pods_per_node = value("--pods-per-node").and_then(|v| v.parse().ok()).unwrap_or(10);
    let seed = value("--seed").and_then(|v| v.parse().ok()).unwrap_or(7);
    let fill = value("--fill")
        .and_then(|v| {
            let (low, high) = v.split_once('-')?;
            Some((low.parse().ok()?, high.parse().ok()?))
        })
        .filter(|(low, high)| low <= high && *high <= 100)
        .unwrap_or((40, 90));
    let headroom = value("--headroom").and_then(|v| v.parse().ok()).unwrap_or(100).min(100);
    let shape = Shape { pods_per_node, fill, headroom, seed };
    let types: Vec<_> = embedded_instance_types()
        .iter()
        .filter(|t| ["c5", "m5", "r5", "c6i", "m6i", "r6i"].contains(&t.family()))
        .cloned()
        .collect();
    let pool = NodePoolSpec {
        name: "default".into(),
        weight: 0,
        requirements: vec![
            Requirement::new("karpenter.sh/capacity-type", Operator::In, &["on-demand"]),
            Requirement::new("topology.kubernetes.io/zone", Operator::In, &ZONES),
        ],
        labels: BTreeMap::new(),
        taints: vec![],
        startup_taints: vec![],
        limits: None,
        max_pods: Default::default(),
        overhead: Default::default(),
        ephemeral_storage: Default::default(),
        min_values_policy: Default::default(),
    };
    let unavailable = HashSet::new();
    for nodes in sizes {
        let (managed, prices) = cluster(nodes, &shape);
        let pods: usize = managed.iter().map(|n| n.pods.len()).sum();
        let policies = [PoolPolicy {
            name: "default".into(),
            policy: Policy::WhenEmptyOrUnderutilized,
            consolidate_after: Some(Duration::from_secs(60)),
            budgets: Budget::default_budgets(),
        }];
        let snapshot = Snapshot {
            now: jiff::Timestamp::now(),
            pools: &policies,
            nodes: &managed,
            other_room: &[],
            in_flight: &[],
            pending: &[],
            nodepools: std::slice::from_ref(&pool),
            instance_types: &types,
            prices: &prices,
            daemonsets: &[],
            unavailable: &unavailable,
            settings: Settings { consolidation_timeout: Duration::from_secs(3600), ..Settings::default() },
        };
        let started = Instant::now();
        let decision = decide(&snapshot);
        let decide_time = started.elapsed();
        let started = Instant::now();
        let (multi, each) = evaluate_every_candidate(&snapshot);
        let full_time = started.elapsed();
        let deletable = each.iter().filter(|(_, r)| r.as_ref().is_ok_and(|c| c.replacements.is_empty())).count();
        let replaceable = each.iter().filter(|(_, r)| r.as_ref().is_ok_and(|c| !c.replacements.is_empty())).count();
        println!(
            "nodes={nodes} pods={pods} decide_ms={:.1} command={:?} full_pass_ms={:.1} candidates={} \
             single_delete={deletable} single_replace={replaceable} multi_node_candidates={}",
            decide_time.as_secs_f64() * 1e3,
            decision.command.as_ref().map(|c| (c.method, c.candidates.len())),
            full_time.as_secs_f64() * 1e3,
            each.len(),
            multi.map_or(0, |c| c.candidates.len()),
        );
    }
}
