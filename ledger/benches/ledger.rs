//! Criterion benchmarks of the store: durable batch append, inclusion proofs
//! from stored nodes, and open time. Baseline in the same run: raw fdatasync.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dlog_ledger::{CreateOptions, EntryKind, Ledger, OpenMode};
use std::io::Write;

fn build(entries: u64) -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::create(dir.path(), &CreateOptions::default()).unwrap();
    let payload = [b'x'; 100];
    let batch: Vec<(EntryKind, &[u8])> =
        (0..1000).map(|_| (EntryKind::Data, &payload[..])).collect();
    while l.size() < entries {
        l.append(1, &batch).unwrap();
    }
    (dir, l)
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable");
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("raw")).unwrap();
    let block = [7u8; 4096];
    g.bench_function("baseline_write_4k_fdatasync", |b| {
        b.iter(|| {
            f.write_all(&block).unwrap();
            f.sync_data().unwrap();
        })
    });
    let mut l = Ledger::create(&dir.path().join("log"), &CreateOptions::default()).unwrap();
    let payload = [b'x'; 100];
    let batch: Vec<(EntryKind, &[u8])> =
        (0..1000).map(|_| (EntryKind::Data, &payload[..])).collect();
    g.throughput(Throughput::Elements(1000));
    g.bench_function("append_batch_1000x100B", |b| {
        b.iter(|| l.append(1, &batch).unwrap())
    });
    g.finish();

    let (dir, l) = build(1 << 20);
    let size = l.size();
    let mut g = c.benchmark_group("proofs");
    g.throughput(Throughput::Elements(1));
    let mut i = 12345u64;
    g.bench_function("inclusion_proof_1M", |b| {
        b.iter(|| {
            i = (i * 6364136223846793005 + 1442695040888963407) % size;
            l.inclusion_proof(i, size).unwrap()
        })
    });
    g.bench_function("consistency_proof_1M", |b| {
        b.iter(|| {
            i = (i * 6364136223846793005 + 1442695040888963407) % size;
            l.consistency_proof(i, size).unwrap()
        })
    });
    g.finish();
    drop(l);
    let mut g = c.benchmark_group("open");
    g.bench_function("open_1M_entries", |b| {
        b.iter_batched(
            || (),
            |_| Ledger::open(dir.path(), OpenMode::ReadOnly).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = ledger;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(ledger);
