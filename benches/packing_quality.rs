//! How tightly the scheduler packs: on pods without topology constraints (the diverse workload's size mix), the
//! plan's price against a simple lower bound, the pods' total CPU or memory bought at the best price per unit any
//! allowed type offers (whichever is higher). Real catalog (the embedded snapshot), real on-demand prices, a
//! general-purpose on-demand NodePool.
//! `cargo run --release --example packing-quality -- [--pods N]`

mod workload;

use std::collections::{BTreeMap, HashSet};

use nodesmith::catalog::pricing::PriceTable;
use nodesmith::catalog::resources::{ResourceName, Resources};
use nodesmith::catalog::{CapacityType, embedded_instance_types, offerings};
use nodesmith::scheduling::{NodePoolSpec, Operator, Requirement, SchedulingInput, solve};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pods: usize = args.iter().position(|a| a == "--pods").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(2_000);
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
    let (mut per_cpu, mut per_byte) = (f64::INFINITY, f64::INFINITY);
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
        per_cpu = per_cpu.min(price / allocatable.get(ResourceName::Cpu) as f64);
        per_byte = per_byte.min(price / allocatable.get(ResourceName::Memory) as f64);
    }
    let bound = (total.get(ResourceName::Cpu) as f64 * per_cpu).max(total.get(ResourceName::Memory) as f64 * per_byte);
    let price = plan.total_price_per_hour();
    println!(
        "{pods} pods ({total}): {} nodes, {price:.4} USD/hour; lower bound {bound:.4} USD/hour; {:.1}% above it",
        plan.new_nodes.len(),
        (price / bound - 1.0) * 100.0
    );
    println!("packing_price_over_bound={:.4}", price / bound);
}
