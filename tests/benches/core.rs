//! `cargo bench --bench core`: the CPU cost of the pure hot-path pieces, by payload size.
//!
//! Signature verification and envelope parsing run on every delivery before the database is
//! touched; the state machine runs on every applied intent event. Payloads are a real fixture
//! padded to 1, 10 and 100 KB (padding in a field payhook never reads, as big metadata or
//! descriptions are in real events).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use payhook::config::WebhookSecret;
use payhook::domain::checkout::{decide, fold, CheckoutState, Current};
use payhook::stripe::envelope::parse_envelope;
use payhook::stripe::signature::{header_for, parse_header, verify};

const SECRET: &str = "whsec_bench_0123456789abcdef0123456789";
const NOW: i64 = 1_763_900_230;

fn payload(size: usize) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/payment_intent.succeeded.json"
    );
    let mut event: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("JSON fixture");
    let natural = serde_json::to_vec(&event).expect("serialize").len();
    if size > natural + 20 {
        event["data"]["object"]["description"] =
            serde_json::Value::String("x".repeat(size - natural - 20));
    }
    serde_json::to_vec(&event).expect("serialize")
}

const SIZES: [(usize, &str); 3] = [(1024, "1KB"), (10 * 1024, "10KB"), (100 * 1024, "100KB")];

fn signature(c: &mut Criterion) {
    let secrets = vec![WebhookSecret::new(SECRET.to_owned())];
    let rotated = vec![
        WebhookSecret::new("whsec_old_secret_still_configured".to_owned()),
        WebhookSecret::new(SECRET.to_owned()),
    ];
    let mut group = c.benchmark_group("signature_verify");
    for (size, name) in SIZES {
        let body = payload(size);
        let header = header_for(&body, SECRET, NOW);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("one_secret", name), &body, |b, body| {
            b.iter(|| verify(black_box(body), Some(&header), &secrets, 300, NOW))
        });
        group.bench_with_input(BenchmarkId::new("two_secrets", name), &body, |b, body| {
            b.iter(|| verify(black_box(body), Some(&header), &rotated, 300, NOW))
        });
    }
    group.finish();
    let header = format!("t={NOW},v1={},v0={}", "ab".repeat(32), "cd".repeat(32));
    c.bench_function("signature_parse_header", |b| {
        b.iter(|| parse_header(black_box(&header)))
    });
}

fn envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_parse");
    for (size, name) in SIZES {
        let body = payload(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("one_pass", name), &body, |b, body| {
            b.iter(|| parse_envelope(black_box(body)))
        });
        // The door's earlier way of refusing what apply cannot parse: the whole tree.
        group.bench_with_input(BenchmarkId::new("value_tree", name), &body, |b, body| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(body)))
        });
    }
    group.finish();
}

fn state_machine(c: &mut Criterion) {
    use CheckoutState::*;
    let current = Some(Current {
        state: Processing,
        since: NOW,
    });
    c.bench_function("checkout_decide", |b| {
        b.iter(|| decide(black_box(current), black_box(Succeeded), black_box(NOW)))
    });
    let life = [
        (Pending, NOW),
        (RequiresAction, NOW),
        (Failed, NOW + 1),
        (RequiresAction, NOW + 2),
        (Processing, NOW + 3),
        (Succeeded, NOW + 3),
        (Canceled, NOW - 5),
    ];
    c.bench_function("checkout_fold_7_events", |b| {
        b.iter(|| fold(black_box(life)))
    });
}

criterion_group!(benches, signature, envelope, state_machine);
criterion_main!(benches);
