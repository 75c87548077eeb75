//! How tightly the scheduler packs: on pods without topology constraints (the diverse workload's size mix), the
//! plan's price against a lower bound: the cheapest way to buy the pods' total CPU and memory from the allowed
//! types if nodes could be bought in fractions (a linear programme over CPU and memory, whose optimum mixes at
//! most two types; it is at least the simpler "each resource at its best price per unit"). Real catalog (the
//! embedded snapshot), real on-demand prices, a general-purpose on-demand NodePool.
//! `cargo run --release --example packing-quality -- [--pods N]`

mod workload;

use std::collections::{BTreeMap, HashSet};

use nodesmith::catalog::pricing::PriceTable;
use nodesmith::catalog::resources::{ResourceName, Resources};
use nodesmith::catalog::{CapacityType, embedded_instance_types, offerings};
use nodesmith::scheduling::{NodePoolSpec, Operator, Requirement, SchedulingInput, solve};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pods: usize =
        args.iter().position(|a| a == "--pods").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(2_000);
    let pool = NodePoolSpec {
        name: "general".into(),
        weight: 0,
        requirements: vec![
            Requirement::equals("kubernetes.io/arch", "amd64"),
            Requirement::equals("karpenter.sh/capacity-type", "on-demand"),
            Requirement::new("karpenter.k8s.aws/instance-category", Operator::In, &["c", "m", "r"]),
            Requirement::new("karpenter.k8s.aws/instance-generation", Operator::Gt, &["4"]),
        ],
        labels: BTreeMap::new(),
        taints: vec![],
        startup_taints: vec![],
        limits: None,
        max_pods: Default::default(),
        overhead: Default::default(),
    };
    let prices = PriceTable::embedded();
    let input_pods = workload::generic_pods(pods, 42);
    let plan = solve(&SchedulingInput {
        pods: &input_pods,
        nodepools: std::slice::from_ref(&pool),
        instance_types: embedded_instance_types(),
        prices: &prices,
        existing: &[],
        daemonsets: &[],
        unavailable: &HashSet::new(),
    });
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable.first());

    let total = input_pods.iter().fold(Resources::ZERO, |sum, p| sum + p.requests);
    // Best price per millicore and per byte among the types the pool allows.
    let allowed = |labels: &BTreeMap<&'static str, String>| {
        pool.requirements
            .iter()
            .filter(|r| r.key != "karpenter.sh/capacity-type")
            .all(|r| r.matches(labels.get(r.key.as_str()).map(String::as_str)))
    };
    // (price, allocatable CPU, allocatable memory) of every allowed type.
    let mut supply: Vec<(f64, f64, f64)> = Vec::new();
    for t in embedded_instance_types().iter().filter(|t| allowed(&t.labels())) {
        let allocatable = t.allocatable(Default::default());
        let Some(price) = offerings(t, &prices)
            .iter()
            .filter(|o| o.capacity_type == CapacityType::OnDemand)
            .map(|o| o.price)
            .reduce(f64::min)
        else {
            continue;
        };
        supply.push((price, allocatable.get(ResourceName::Cpu) as f64, allocatable.get(ResourceName::Memory) as f64));
    }
    let (cpu, memory) = (total.get(ResourceName::Cpu) as f64, total.get(ResourceName::Memory) as f64);
    let per_unit_bound = {
        let per_cpu = supply.iter().map(|(p, c, _)| p / c).fold(f64::INFINITY, f64::min);
        let per_byte = supply.iter().map(|(p, _, m)| p / m).fold(f64::INFINITY, f64::min);
        (cpu * per_cpu).max(memory * per_byte)
    };
    let bound = fractional_optimum(&supply, cpu, memory);
    let price = plan.total_price_per_hour();
    println!(
        "{pods} pods ({total}): {} nodes, {price:.4} USD/hour; lower bound {bound:.4} USD/hour (per-unit bound \
         {per_unit_bound:.4}); {:.1}% above it",
        plan.new_nodes.len(),
        (price / bound - 1.0) * 100.0
    );
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &plan.new_nodes {
        *types.entry(node.instance_type.as_str()).or_default() += 1;
    }
    println!("nodes by type: {types:?}");
    println!("packing_price_over_bound={:.4}", price / bound);
}

/// min Σ xᵢ·priceᵢ subject to Σ xᵢ·cpuᵢ ≥ cpu, Σ xᵢ·memᵢ ≥ memory, xᵢ ≥ 0. With two constraints an optimal vertex
/// uses one type (one constraint binding) or two (both binding), so trying all of them is exact.
fn fractional_optimum(supply: &[(f64, f64, f64)], cpu: f64, memory: f64) -> f64 {
    let mut best = f64::INFINITY;
    for &(p, c, m) in supply {
        best = best.min(p * (cpu / c).max(memory / m));
    }
    for (i, &(p1, c1, m1)) in supply.iter().enumerate() {
        for &(p2, c2, m2) in &supply[i + 1..] {
            let det = c1 * m2 - c2 * m1;
            if det.abs() < f64::EPSILON {
                continue;
            }
            let x1 = (cpu * m2 - memory * c2) / det;
            let x2 = (c1 * memory - m1 * cpu) / det;
            if x1 >= 0.0 && x2 >= 0.0 {
                best = best.min(x1 * p1 + x2 * p2);
            }
        }
    }
    best
}
