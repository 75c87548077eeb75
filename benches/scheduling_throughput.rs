//! One measured solve of Karpenter's diverse-pods workload, printed as one JSON line, for
//! `benches/compare-karpenter.sh`:
//! `cargo run --release --example scheduling-throughput -- --pods 5000 --output json`.

mod workload;

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let pods: usize = match flag("--pods").map(|v| v.parse()) {
        Some(Ok(n)) => n,
        None => 5_000,
        Some(Err(_)) => {
            eprintln!("--pods takes a whole number");
            std::process::exit(2);
        }
    };
    let json = flag("--output").is_some_and(|v| v == "json");
    let workload = workload::fake_instance_types();
    let input_pods = workload::diverse_pods(pods, 42);
    let solve_once = || workload.solve(&input_pods);
    // One warm-up solve, then the best of a few timed ones (as a benchmark reports its steady state).
    let plan = solve_once();
    let rounds = if pods >= 10_000 { 3 } else { 5 };
    let seconds = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(solve_once());
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let placed: usize = plan.new_nodes.iter().map(|n| n.pods.len()).sum();
    let pods_per_sec = pods as f64 / seconds;
    if json {
        println!(
            "{{\"pods\":{pods},\"placed\":{placed},\"unschedulable\":{},\"nodes\":{},\"seconds\":{seconds:.6},\"pods_per_sec\":{pods_per_sec:.1}}}",
            plan.unschedulable.len(),
            plan.new_nodes.len()
        );
    } else {
        println!(
            "{pods} pods: {} nodes, {} unschedulable, {:.1} ms, {pods_per_sec:.0} pods/s",
            plan.new_nodes.len(),
            plan.unschedulable.len(),
            seconds * 1e3
        );
    }
}
