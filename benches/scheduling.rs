//! Criterion benchmarks of the scheduler (see `workload.rs`): Karpenter's diverse-pods workload (alone, and around
//! a running cluster of 1,000 nodes and 10,000 pods that topology counts), and pods without
//! topology constraints on the real catalog, whose pools are also re-packed by shape (what that costs in time;
//! `packing-quality` reports what it saves). `cargo bench --bench scheduling`; pods/second is the throughput.

mod workload;

use std::collections::HashSet;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nodesmith::catalog::embedded_instance_types;
use nodesmith::catalog::pricing::PriceTable;
use nodesmith::scheduling::{SchedulingInput, solve};

fn diverse_pods(c: &mut Criterion) {
    let workload = workload::fake_instance_types();
    let mut group = c.benchmark_group("diverse-pods");
    group.sample_size(10);
    for count in [100usize, 1_000, 5_000, 20_000] {
        let pods = workload::diverse_pods(count, 42);
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::from_parameter(count), &pods, |b, pods| {
            b.iter(|| {
                let plan = workload.solve(pods);
                assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable.first());
                plan
            })
        });
    }
    group.finish();
}

/// The diverse pods planned around a running cluster of 1,000 nodes holding 10,000 pods, which topology counts.
fn diverse_pods_around_running_pods(c: &mut Criterion) {
    let workload = workload::fake_instance_types();
    let existing = workload.running_cluster(1_000, 10, 7);
    let mut group = c.benchmark_group("diverse-pods-around-1000-nodes-10000-pods");
    group.sample_size(10);
    for count in [1_000usize, 5_000] {
        let pods = workload::diverse_pods(count, 42);
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::from_parameter(count), &pods, |b, pods| {
            b.iter(|| {
                let plan = workload.solve_around(pods, &existing);
                assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable.first());
                plan
            })
        });
    }
    group.finish();
}

fn generic_pods(c: &mut Criterion) {
    let pool = workload::general_purpose_pool();
    let prices = PriceTable::embedded();
    let unavailable = HashSet::new();
    let mut group = c.benchmark_group("generic-pods-real-catalog");
    group.sample_size(10);
    for count in [1_000usize, 5_000, 20_000] {
        let pods = workload::generic_pods(count, 42);
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::from_parameter(count), &pods, |b, pods| {
            b.iter(|| {
                let plan = solve(&SchedulingInput {
                    pods,
                    nodepools: std::slice::from_ref(&pool),
                    instance_types: embedded_instance_types(),
                    prices: &prices,
                    existing: &[],
                    daemonsets: &[],
                    unavailable: &unavailable,
                });
                assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable.first());
                plan
            })
        });
    }
    group.finish();
}

criterion_group!(benches, diverse_pods, diverse_pods_around_running_pods, generic_pods);
criterion_main!(benches);
