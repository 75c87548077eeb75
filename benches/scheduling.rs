//! Criterion benchmark of the scheduler on Karpenter's diverse-pods workload (see `workload.rs`).
//! `cargo bench --bench scheduling`; pods/second is the reported throughput.

mod workload;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

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

criterion_group!(benches, diverse_pods);
criterion_main!(benches);
