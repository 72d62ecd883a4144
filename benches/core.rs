//! The pure core, exactly as a handler runs it: decode → rules → encode, on
//! ~4 KB sessions from `agentic_webhook::testkit::workload`. Run: `cargo bench --bench core`.

use std::hint::black_box;

use agentic_webhook::testkit::core::{
    convert as convert_once, mutate as mutate_once, policy, validate as validate_once,
};
use agentic_webhook::testkit::workload;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn admission(c: &mut Criterion) {
    let p = policy();
    let cases = [
        ("create_legacy", workload::create_legacy(1)),
        ("update_running_denied", workload::update_running_denied(1)),
        ("status_update", workload::status_update(1)),
    ];
    let mut g = c.benchmark_group("admission");
    for (name, body) in &cases {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("mutate/{name}"), |b| {
            b.iter(|| mutate_once(&p, black_box(body)))
        });
        g.bench_function(format!("validate/{name}"), |b| {
            b.iter(|| validate_once(&p, black_box(body)))
        });
        // What one write costs: the apiserver calls both webhooks.
        g.bench_function(format!("mutate+validate/{name}"), |b| {
            b.iter(|| {
                let m = mutate_once(&p, black_box(body));
                let v = validate_once(&p, black_box(body));
                (m, v)
            })
        });
    }
    g.finish();
}

fn conversion(c: &mut Criterion) {
    let mut g = c.benchmark_group("conversion");
    for n in [1usize, 500] {
        let body = workload::conversion_review(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("review/{n}"), |b| {
            b.iter(|| convert_once(black_box(&body)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = admission, conversion
}
criterion_main!(benches);
