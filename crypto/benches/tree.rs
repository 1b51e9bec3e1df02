//! Tree hashing, proof verification and checkpoint signing, each next to a
//! raw baseline measured in the same run.
//!
//! * `hash_100B/*`: 10,000 entries of 100 bytes — leaf + tree hashing
//!   ([`MemoryTree::push`] of `hash_leaf`) vs raw BLAKE3 of each entry vs raw
//!   BLAKE3 of the same bytes in one buffer.
//! * `inclusion/*`: verifying inclusion proofs in a 2^20-leaf tree and in a
//!   10^7-leaf tree shape; proof generation from the in-memory tree.
//! * `checkpoint/*`: signing and verifying checkpoints vs raw Ed25519.
//!
//! Run: `cargo bench -p dlog-crypto --bench tree`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dlog_crypto::note::{Checkpoint, NoteSigner, SignedNote};
use dlog_crypto::tree::{verify_inclusion, MemoryTree};
use dlog_crypto::trust::TrustPolicy;
use dlog_crypto::{Blake3Hasher, Hash, TreeHasher};
use ed25519_dalek::{Signer, SigningKey, Verifier};

const ENTRIES: usize = 10_000;
const ENTRY_LEN: usize = 100;

fn entries() -> Vec<u8> {
    (0..ENTRIES * ENTRY_LEN)
        .map(|i| (i * 31 % 251) as u8)
        .collect()
}

fn hashing(c: &mut Criterion) {
    let data = entries();
    let mut g = c.benchmark_group("hash_100B");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("raw_blake3_one_buffer", |b| {
        b.iter(|| blake3::hash(black_box(&data)))
    });
    g.bench_function("raw_blake3_per_entry", |b| {
        b.iter(|| {
            let mut acc = 0u8;
            for e in data.chunks_exact(ENTRY_LEN) {
                acc ^= blake3::hash(black_box(e)).as_bytes()[0];
            }
            acc
        })
    });
    g.bench_function("leaf_hash_only", |b| {
        b.iter(|| {
            let mut acc = 0u8;
            for e in data.chunks_exact(ENTRY_LEN) {
                acc ^= Blake3Hasher::hash_leaf(black_box(e))[0];
            }
            acc
        })
    });
    g.bench_function("leaf_and_tree", |b| {
        b.iter_batched(
            MemoryTree::<Blake3Hasher>::new,
            |mut t| {
                for e in data.chunks_exact(ENTRY_LEN) {
                    t.push(Blake3Hasher::hash_leaf(e));
                }
                t.root()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn inclusion(c: &mut Criterion) {
    let n: u64 = 1 << 20;
    let tree = MemoryTree::<Blake3Hasher>::from_leaves(
        (0..n).map(|i| Blake3Hasher::hash_leaf(&i.to_be_bytes())),
    );
    let root = tree.root();
    let picks: Vec<u64> = (0..1000u64).map(|k| (k * 1_048_573) % n).collect();
    let proofs: Vec<(u64, Hash, Vec<Hash>)> = picks
        .iter()
        .map(|&i| {
            (
                i,
                tree.leaves()[i as usize],
                tree.inclusion_proof(i, n).unwrap(),
            )
        })
        .collect();
    let mut g = c.benchmark_group("inclusion");
    g.throughput(Throughput::Elements(proofs.len() as u64));
    g.bench_function("verify_2^20", |b| {
        b.iter(|| {
            for (i, leaf, p) in &proofs {
                verify_inclusion::<Blake3Hasher>(leaf, *i, n, p, &root).unwrap();
            }
        })
    });
    // A 10^7-leaf tree: 24 hashes per proof. The proof hashes are arbitrary,
    // so the root is recomputed from them (the same work as a real check).
    let big: u64 = 10_000_000;
    let big_proofs: Vec<(u64, Hash, Vec<Hash>, Hash)> = (0..1000u64)
        .map(|k| {
            let i = (k * 9_999_991) % big;
            let len = dlog_crypto::tree::inclusion_proof_len(i, big);
            let p: Vec<Hash> = (0..len).map(|j| [j as u8; 32]).collect();
            let leaf = [k as u8; 32];
            let root = fold_root(&leaf, i, big, &p);
            (i, leaf, p, root)
        })
        .collect();
    g.bench_function("verify_10^7", |b| {
        b.iter(|| {
            for (i, leaf, p, root) in &big_proofs {
                verify_inclusion::<Blake3Hasher>(leaf, *i, big, p, root).unwrap();
            }
        })
    });
    g.bench_function("generate_2^20_memory_tree", |b| {
        b.iter(|| {
            for &i in &picks {
                black_box(tree.inclusion_proof(i, n).unwrap());
            }
        })
    });
    g.finish();
}

/// The root an inclusion proof leads to (RFC 9162 §2.1.3.2 fold).
fn fold_root(leaf: &Hash, index: u64, size: u64, proof: &[Hash]) -> Hash {
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if f & 1 == 1 || f == s {
            r = Blake3Hasher::hash_children(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = Blake3Hasher::hash_children(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    r
}

fn checkpoint(c: &mut Criterion) {
    let signers: Vec<NoteSigner> = (1..=3u8)
        .map(|i| NoteSigner::new(format!("node-{i}"), SigningKey::from_bytes(&[i; 32])).unwrap())
        .collect();
    let body = Checkpoint::new("dlog/bench", 10_000_000, [7; 32])
        .unwrap()
        .to_body();
    let mut note = SignedNote::new(body.clone()).unwrap();
    for s in &signers[..2] {
        note.add_signature(s.sign(&body));
    }
    let note = note.to_string();
    let one =
        TrustPolicy::new("dlog/bench", vec![signers[0].verifier()], 1, Vec::new(), 0).unwrap();
    let two = TrustPolicy::new(
        "dlog/bench",
        signers.iter().map(|s| s.verifier()).collect(),
        2,
        Vec::new(),
        0,
    )
    .unwrap();
    let key = SigningKey::from_bytes(&[1; 32]);
    let vk = key.verifying_key();
    let raw_sig = key.sign(body.as_bytes());

    let mut g = c.benchmark_group("checkpoint");
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_ed25519_sign", |b| {
        b.iter(|| key.sign(black_box(body.as_bytes())))
    });
    g.bench_function("raw_ed25519_verify", |b| {
        b.iter(|| vk.verify(black_box(body.as_bytes()), &raw_sig).unwrap())
    });
    g.bench_function("sign_note", |b| {
        b.iter(|| signers[0].sign(black_box(&body)))
    });
    g.bench_function("verify_checkpoint_quorum_1", |b| {
        b.iter(|| one.verify_checkpoint(black_box(&note)).unwrap())
    });
    g.bench_function("verify_checkpoint_quorum_2", |b| {
        b.iter(|| two.verify_checkpoint(black_box(&note)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, hashing, inclusion, checkpoint);
criterion_main!(benches);
