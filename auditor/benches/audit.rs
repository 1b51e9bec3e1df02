//! What an auditor spends per entry, next to raw BLAKE3 in the same run.
//!
//! * `audit_100B/verify_and_hash`: 10,000 canonical 100-byte-payload
//!   entries through `Pending::push` (strict decode, payload limit,
//!   timestamp order, leaf hash, frontier) and the root at the end.
//! * `audit_100B/raw_blake3_per_entry`: BLAKE3 of each entry's bytes alone,
//!   the floor (an auditor must hash every byte once).
//! * `audit_100B/commit`: the same plus checking the root against a
//!   voter-signed checkpoint (two Ed25519 verifications).
//!
//! Run: `cargo bench -p dlog-auditor --bench audit`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dlog_auditor::audit::{Auditor, Frontier};
use dlog_crypto::note::{Checkpoint, NoteSigner, SignedNote};
use dlog_crypto::trust::TrustPolicy;
use dlog_crypto::{Blake3Hasher, TreeHasher};
use dlog_ledger::{Entry, EntryKind};
use ed25519_dalek::SigningKey;

const ENTRIES: u64 = 10_000;

fn bench(c: &mut Criterion) {
    let entries: Vec<Vec<u8>> = (0..ENTRIES)
        .map(|i| {
            Entry {
                kind: EntryKind::Data,
                timestamp_ns: 1_700_000_000_000_000_000 + i,
                payload: (0..100).map(|k| (i as u8).wrapping_mul(31) ^ k).collect(),
            }
            .encode()
        })
        .collect();
    let voters: Vec<NoteSigner> = (1..=3u8)
        .map(|i| NoteSigner::new(format!("node-{i}"), SigningKey::from_bytes(&[i; 32])).unwrap())
        .collect();
    let trust = TrustPolicy::new(
        "dlog/bench",
        voters.iter().map(|v| v.verifier()).collect(),
        2,
        vec![],
        0,
    )
    .unwrap();
    let auditor = Auditor::new(&trust, 1 << 20, Frontier::new(), 0);
    let mut p = auditor.begin();
    for e in &entries {
        p.push(e).unwrap();
    }
    let body = Checkpoint::new("dlog/bench", ENTRIES, p.root())
        .unwrap()
        .to_body();
    let mut note = SignedNote::new(body.clone()).unwrap();
    note.add_signature(voters[0].sign(&body));
    note.add_signature(voters[1].sign(&body));
    let note = note.to_string();

    let mut g = c.benchmark_group("audit_100B");
    g.throughput(Throughput::Elements(ENTRIES));
    g.bench_function("raw_blake3_per_entry", |b| {
        b.iter(|| {
            let mut acc = 0u8;
            for e in &entries {
                acc ^= blake3::hash(black_box(e)).as_bytes()[0];
            }
            acc
        })
    });
    g.bench_function("leaf_hash_only", |b| {
        b.iter(|| {
            let mut acc = 0u8;
            for e in &entries {
                acc ^= Blake3Hasher::hash_leaf(black_box(e))[0];
            }
            acc
        })
    });
    g.bench_function("verify_and_hash", |b| {
        b.iter(|| {
            let mut p = auditor.begin();
            for e in &entries {
                p.push(black_box(e)).unwrap();
            }
            p.root()
        })
    });
    g.bench_function("commit", |b| {
        b.iter(|| {
            let mut a = auditor.clone();
            let mut p = a.begin();
            for e in &entries {
                p.push(black_box(e)).unwrap();
            }
            a.commit(p, &note, &[]).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
