//! What it costs to record one sample: the step that runs after every measured operation
//! must stay well below the timer overhead it sits beside (`host.timer.overhead`).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ivbench::stats::{self, new_histogram};
use probe_api::{Method, Samples};
use std::hint::black_box;

fn recording(c: &mut Criterion) {
    let mut g = c.benchmark_group("recording");
    // A spread like a real probe's: most samples near 2,000 cycles, a long tail.
    let raw: Vec<u64> =
        (0..10_000u64).map(|i| 2000 + (i * 7919) % 500 + if i % 100 == 0 { 100_000 } else { 0 }).collect();

    g.throughput(Throughput::Elements(1));
    g.bench_function("histogram.record one sample", |b| {
        let mut h = new_histogram();
        let mut i = 0usize;
        b.iter(|| {
            h.record(black_box(raw[i % raw.len()] * stats::HIST_UNITS_PER_CYCLE)).unwrap();
            i += 1;
        })
    });

    g.throughput(Throughput::Elements(raw.len() as u64));
    g.bench_function("stats::record 10k samples (overhead subtracted)", |b| {
        b.iter_batched(
            || Samples::new(raw.clone(), Method::PerOp, 60, "bench"),
            |s| black_box(stats::record(&s)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("push one sample into the per-op buffer", |b| {
        let mut v: Vec<u64> = Vec::with_capacity(1 << 20);
        let mut i = 0u64;
        b.iter(|| {
            if v.len() == v.capacity() {
                v.clear();
            }
            v.push(black_box(i));
            i += 1;
        })
    });
    g.finish();
}

criterion_group!(benches, recording);
criterion_main!(benches);
