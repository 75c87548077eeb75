//! How tightly the scheduler packs: on pods without topology constraints (the diverse workload's size mix), the
//! plan's price against a lower bound: the cheapest way to buy the pods' total CPU and memory from the allowed
//! types if nodes could be bought in fractions (a linear programme over CPU and memory, whose optimum mixes at
//! most two types; it is at least the simpler "each resource at its best price per unit"). Real catalog (the
//! embedded snapshot), real on-demand prices, a general-purpose on-demand NodePool.
//! `cargo run --release --example packing-quality -- [--pods N[,N...]] [--seed S] [--types]`: one row per size,
//! the price over each bound, and a last line `packing_price_over_per_unit_bound_max=<worst ratio>`.

mod workload;

use std::collections::{BTreeMap, HashSet};

use nodesmith::catalog::pricing::PriceTable;
use nodesmith::catalog::resources::{ResourceName, Resources};
use nodesmith::catalog::{CapacityType, embedded_instance_types, offerings};
use nodesmith::scheduling::{NodePoolSpec, SchedulingInput, solve};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let sizes: Vec<usize> = match flag("--pods") {
        None => vec![100, 1_000, 5_000, 20_000],
        Some(list) => match list.split(',').map(str::parse).collect() {
            Ok(sizes) => sizes,
            Err(_) => usage("--pods takes whole numbers separated by commas"),
        },
    };
    let seed: u64 = match flag("--seed").map(|v| v.parse()) {
        None => 42,
        Some(Ok(seed)) => seed,
        Some(Err(_)) => usage("--seed takes a whole number"),
    };
    let pool = workload::general_purpose_pool();
    let prices = PriceTable::embedded();
    let supply = supply(&pool, &prices);
    let mut worst_over_per_unit: f64 = 0.0;
    println!("pods\tnodes\tprice/h\tlp_bound\tper_unit_bound\tover_lp\tover_per_unit");
    for pods in sizes {
        let input_pods = workload::generic_pods(pods, seed);
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
        let (cpu, memory) = (total.get(ResourceName::Cpu) as f64, total.get(ResourceName::Memory) as f64);
        // The bound: each resource bought at the best price per unit any allowed type offers it.
        let per_unit_bound = {
            let per_cpu = supply.iter().map(|(p, c, _)| p / c).fold(f64::INFINITY, f64::min);
            let per_byte = supply.iter().map(|(p, _, m)| p / m).fold(f64::INFINITY, f64::min);
            (cpu * per_cpu).max(memory * per_byte)
        };
        let lp_bound = fractional_optimum(&supply, cpu, memory);
        let price = plan.total_price_per_hour();
        let over_per_unit = price / per_unit_bound - 1.0;
        worst_over_per_unit = worst_over_per_unit.max(over_per_unit);
        println!(
            "{pods}\t{}\t{price:.4}\t{lp_bound:.4}\t{per_unit_bound:.4}\t{:.1}%\t{:.1}%",
            plan.new_nodes.len(),
            (price / lp_bound - 1.0) * 100.0,
            over_per_unit * 100.0
        );
        if args.iter().any(|a| a == "--types") {
            let mut types: BTreeMap<&str, usize> = BTreeMap::new();
            for node in &plan.new_nodes {
                *types.entry(node.instance_type.as_str()).or_default() += 1;
            }
            println!("  {total}; nodes by type: {types:?}");
        }
    }
    println!("packing_price_over_per_unit_bound_max={:.4}", 1.0 + worst_over_per_unit);
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: packing-quality [--pods N[,N...]] [--seed S] [--types]");
    std::process::exit(2);
}

/// (price, allocatable CPU, allocatable memory) of every type the pool allows, at its cheapest on-demand price.
fn supply(pool: &NodePoolSpec, prices: &PriceTable) -> Vec<(f64, f64, f64)> {
    let allowed = |labels: &BTreeMap<&'static str, String>| {
        pool.requirements
            .iter()
            .filter(|r| r.key != "karpenter.sh/capacity-type")
            .all(|r| r.matches(labels.get(r.key.as_str()).map(String::as_str)))
    };
    let mut supply = Vec::new();
    for t in embedded_instance_types().iter().filter(|t| allowed(&t.labels())) {
        let allocatable = t.allocatable(Default::default());
        let Some(price) = offerings(t, prices)
            .iter()
            .filter(|o| o.capacity_type == CapacityType::OnDemand)
            .map(|o| o.price)
            .reduce(f64::min)
        else {
            continue;
        };
        supply.push((price, allocatable.get(ResourceName::Cpu) as f64, allocatable.get(ResourceName::Memory) as f64));
    }
    supply
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
