//! The file store against a reference tree, across seals, reopen, crashes and damage.

use dlog_crypto::tree::{self, MemoryTree};
use dlog_crypto::{Blake3Hasher, HashAlg, Sha256Hasher, TreeHasher};
use dlog_ledger::{CreateOptions, EntryKind, Ledger, LedgerError, OpenMode};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

fn opts(bits: u8) -> CreateOptions {
    CreateOptions {
        origin: "dlog/test".into(),
        segment_bits: bits,
        max_payload: 1024,
        log_id: None,
        hash: Default::default(),
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("entry number {i}").into_bytes()
}

fn fill(l: &mut Ledger, n: u64, batch: usize) -> MemoryTree<Blake3Hasher> {
    let mut reference = MemoryTree::new();
    let mut i = l.size();
    while i < n {
        let end = (i + batch as u64).min(n);
        let payloads: Vec<Vec<u8>> = (i..end).map(payload).collect();
        let items: Vec<(EntryKind, &[u8])> = payloads
            .iter()
            .map(|p| (EntryKind::Data, p.as_slice()))
            .collect();
        let a = l.append(1_000 + i, &items).unwrap();
        assert_eq!(a.first, i);
        i = end;
    }
    for j in 0..n {
        reference.push(Blake3Hasher::hash_leaf(&l.entry(j).unwrap()));
    }
    reference
}

fn check_against(l: &Ledger, reference: &MemoryTree<Blake3Hasher>) {
    let n = l.size();
    assert_eq!(n, reference.len());
    for size in 0..=n {
        assert_eq!(
            l.root_at(size).unwrap(),
            reference.root_at(size).unwrap(),
            "root at {size}"
        );
    }
    for size in 1..=n {
        let root = reference.root_at(size).unwrap();
        for i in 0..size {
            let p = l.inclusion_proof(i, size).unwrap();
            assert_eq!(p, reference.inclusion_proof(i, size).unwrap());
            tree::verify_inclusion::<Blake3Hasher>(&l.leaf_hash(i).unwrap(), i, size, &p, &root)
                .unwrap();
        }
        for old in 0..=size {
            assert_eq!(
                l.consistency_proof(old, size).unwrap(),
                reference.consistency_proof(old, size).unwrap()
            );
        }
    }
}

#[test]
fn proofs_match_reference_across_seals_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::create(dir.path(), &opts(3)).unwrap();
    let reference = fill(&mut l, 45, 7);
    assert_eq!(l.sealed_segments(), 5);
    check_against(&l, &reference);
    drop(l);
    let l = Ledger::open(dir.path(), OpenMode::ReadWrite).unwrap();
    check_against(&l, &reference);
    let ro = {
        drop(l);
        Ledger::open(dir.path(), OpenMode::ReadOnly).unwrap()
    };
    check_against(&ro, &reference);
    assert!(ro.scrub().unwrap().is_clean());
}

#[test]
fn exact_segment_boundary_and_entry_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::create(dir.path(), &opts(2)).unwrap();
    fill(&mut l, 8, 4);
    assert_eq!(l.sealed_segments(), 2);
    let e = dlog_ledger::Entry::decode(&l.entry(5).unwrap()).unwrap();
    assert_eq!(e.payload, payload(5));
    assert_eq!(e.kind, EntryKind::Data);
    drop(l);
    let mut l = Ledger::open(dir.path(), OpenMode::ReadWrite).unwrap();
    assert_eq!(l.size(), 8);
    l.append(0, &[(EntryKind::Notarization, b"x")]).unwrap();
    // Timestamps never go backwards even if the clock does.
    assert!(l.last_timestamp() >= 1_004);
}

fn open_segment_file(dir: &Path, s: u64) -> std::path::PathBuf {
    dir.join("segments").join(format!("{s:020}.seg"))
}

#[test]
fn torn_tail_is_cut_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::create(dir.path(), &opts(4)).unwrap();
    let reference = fill(&mut l, 20, 3);
    drop(l);
    let path = open_segment_file(dir.path(), 1);
    let clean_len = std::fs::metadata(&path).unwrap().len();
    // A half-written frame, as a crash mid-write leaves it.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0, 0, 0, 40, 1, 2, 3, 4, 1, 0, 9]).unwrap();
    drop(f);
    let ro = Ledger::open(dir.path(), OpenMode::ReadOnly).unwrap();
    assert_eq!(ro.size(), 20);
    drop(ro);
    let mut l = Ledger::open(dir.path(), OpenMode::ReadWrite).unwrap();
    assert_eq!(l.size(), 20);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), clean_len);
    check_against(&l, &reference);
    l.append(5_000, &[(EntryKind::Data, b"after crash")])
        .unwrap();
    drop(l);
    let l = Ledger::open(dir.path(), OpenMode::ReadWrite).unwrap();
    assert_eq!(l.size(), 21);
    assert!(l.scrub().unwrap().is_clean());
}

#[test]
fn damage_in_sealed_segment_is_named_by_scrub_and_get() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::create(dir.path(), &opts(3)).unwrap();
    fill(&mut l, 20, 5);
    drop(l);
    let path = open_segment_file(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    // Entry 10 is the third frame of segment 1; flip a payload byte of it.
    let l = Ledger::open(dir.path(), OpenMode::ReadOnly).unwrap();
    let good = l.entry(10).unwrap();
    drop(l);
    let at = find(&bytes, &good).unwrap() + good.len() - 2;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let l = Ledger::open(dir.path(), OpenMode::ReadOnly).unwrap();
    match l.entry(10) {
        Err(LedgerError::Corrupt {
            segment: 1,
            entry: Some(10),
            ..
        }) => {}
        other => panic!("expected corruption at entry 10, got {other:?}"),
    }
    assert!(l.entry(9).is_ok());
    let report = l.scrub().unwrap();
    assert!(!report.is_clean());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.segment == 1 && p.entry == Some(10)),
        "{:?}",
        report.problems
    );
}

#[test]
fn damage_in_node_file_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::create(dir.path(), &opts(3)).unwrap();
    fill(&mut l, 17, 5);
    drop(l);
    let path = dir.path().join("segments").join(format!("{:020}.tree", 0));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3 * 32 + 7] ^= 0x80; // leaf 3
    std::fs::write(&path, &bytes).unwrap();
    let l = Ledger::open(dir.path(), OpenMode::ReadOnly).unwrap();
    let report = l.scrub().unwrap();
    assert!(
        report.problems.iter().any(|p| p.entry == Some(3)),
        "{:?}",
        report.problems
    );
    assert!(l.entry(3).is_err(), "a mismatching leaf hash must not pass");
}

#[test]
fn missing_node_file_is_rebuilt_read_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::create(dir.path(), &opts(3)).unwrap();
    let reference = fill(&mut l, 17, 5);
    drop(l);
    std::fs::remove_file(dir.path().join("segments").join(format!("{:020}.tree", 1))).unwrap();
    // Read-only rebuilds in memory (it may not write); read-write rebuilds the file.
    let ro = Ledger::open(dir.path(), OpenMode::ReadOnly).unwrap();
    check_against(&ro, &reference);
    drop(ro);
    let l = Ledger::open(dir.path(), OpenMode::ReadWrite).unwrap();
    check_against(&l, &reference);
    assert!(dir
        .path()
        .join("segments")
        .join(format!("{:020}.tree", 1))
        .exists());
}

#[test]
fn refusals_are_clear_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::create(dir.path(), &opts(3)).unwrap();
    fill(&mut l, 5, 5);
    let big = vec![0u8; 1025];
    let err = l
        .append(1, &[(EntryKind::Data, b"ok"), (EntryKind::Data, &big)])
        .unwrap_err();
    assert!(matches!(
        err,
        LedgerError::PayloadTooLarge {
            len: 1025,
            limit: 1024
        }
    ));
    assert_eq!(l.size(), 5);
    assert!(matches!(
        Ledger::open(dir.path(), OpenMode::ReadWrite),
        Err(LedgerError::Locked(_))
    ));
    assert!(matches!(
        Ledger::create(dir.path(), &opts(3)),
        Err(LedgerError::AlreadyExists(_))
    ));
    drop(l);
    std::fs::write(dir.path().join("segments").join("notes.txt"), b"hi").unwrap();
    assert!(matches!(
        Ledger::open(dir.path(), OpenMode::ReadWrite),
        Err(LedgerError::ForeignFile(_))
    ));
    std::fs::remove_file(dir.path().join("segments").join("notes.txt")).unwrap();
    let l = Ledger::open(dir.path(), OpenMode::ReadWrite).unwrap();
    assert_eq!(l.size(), 5);
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        Ledger::open(empty.path(), OpenMode::ReadOnly),
        Err(LedgerError::NotALog(_))
    ));
}

#[test]
fn missing_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::create(dir.path(), &opts(2)).unwrap();
    fill(&mut l, 13, 5);
    drop(l);
    std::fs::remove_file(open_segment_file(dir.path(), 1)).unwrap();
    assert!(matches!(
        Ledger::open(dir.path(), OpenMode::ReadWrite),
        Err(LedgerError::MissingSegment { segment: 1, .. })
    ));
}

#[test]
fn checkpoints_must_match_and_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::create(dir.path(), &opts(3)).unwrap();
    fill(&mut l, 10, 5);
    let root = l.root_at(10).unwrap();
    let note = checkpoint_note(10, &root);
    l.store_checkpoint(10, root, &note).unwrap();
    assert!(l
        .store_checkpoint(
            9,
            l.root_at(9).unwrap(),
            &checkpoint_note(9, &l.root_at(9).unwrap())
        )
        .is_err());
    assert!(l.store_checkpoint(10, [0; 32], &note).is_err());
    drop(l);
    let l = Ledger::open(dir.path(), OpenMode::ReadWrite).unwrap();
    assert_eq!(l.checkpoint().unwrap().size, 10);
}

fn checkpoint_note(size: u64, root: &[u8; 32]) -> String {
    use base64::Engine;
    format!(
        "dlog/test\n{size}\n{}\n",
        base64::engine::general_purpose::STANDARD.encode(root)
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<Vec<u8>>),
        Reopen,
        TearTail(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..12).prop_map(Op::Append),
            1 => Just(Op::Reopen),
            1 => proptest::collection::vec(any::<u8>(), 1..30).prop_map(Op::TearTail),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

        /// Any sequence of appends, reopens and torn tails keeps exactly the
        /// appended entries, and every root and proof matches a reference tree.
        #[test]
        fn store_matches_model(bits in 1u8..4, ops in proptest::collection::vec(op(), 1..25)) {
            let dir = tempfile::tempdir().unwrap();
            let mut l = Ledger::create(dir.path(), &opts(bits)).unwrap();
            let mut model: Vec<Vec<u8>> = Vec::new();
            let mut reference = MemoryTree::<Blake3Hasher>::new();
            for op in ops {
                match op {
                    Op::Append(batch) => {
                        let items: Vec<(EntryKind, &[u8])> = batch.iter().map(|p| (EntryKind::Data, p.as_slice())).collect();
                        let a = l.append(7, &items).unwrap();
                        prop_assert_eq!(a.first, model.len() as u64);
                        for p in batch {
                            let mut e = Vec::new();
                            dlog_ledger::entry::encode_into(&mut e, EntryKind::Data, 7, &p);
                            reference.push(Blake3Hasher::hash_leaf(&e));
                            model.push(p);
                        }
                    }
                    Op::Reopen => {
                        drop(l);
                        l = Ledger::open(dir.path(), OpenMode::ReadWrite).unwrap();
                    }
                    Op::TearTail(garbage) => {
                        drop(l);
                        let last = std::fs::read_dir(dir.path().join("segments")).unwrap()
                            .map(|e| e.unwrap().path())
                            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                            .max()
                            .unwrap();
                        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
                        // A frame header promising more bytes than follow: torn.
                        let mut torn = vec![0, 0, 0, 200];
                        torn.extend_from_slice(&garbage);
                        f.write_all(&torn[..torn.len().min(100)]).unwrap();
                        drop(f);
                        l = Ledger::open(dir.path(), OpenMode::ReadWrite).unwrap();
                    }
                }
                prop_assert_eq!(l.size(), model.len() as u64);
                prop_assert_eq!(l.root().unwrap(), reference.root());
            }
            for (i, p) in model.iter().enumerate() {
                let e = dlog_ledger::Entry::decode(&l.entry(i as u64).unwrap()).unwrap();
                prop_assert_eq!(&e.payload, p);
            }
            let n = model.len() as u64;
            for i in 0..n {
                prop_assert_eq!(l.inclusion_proof(i, n).unwrap(), reference.inclusion_proof(i, n).unwrap());
            }
            for m in 0..=n {
                prop_assert_eq!(l.consistency_proof(m, n).unwrap(), reference.consistency_proof(m, n).unwrap());
            }
            prop_assert!(l.scrub().unwrap().is_clean());
        }
    }
}

#[test]
fn unsynced_appends_are_readable_sealed_and_kept_across_reopen() {
    let d = tempfile::tempdir().unwrap();
    let mut l = Ledger::create(d.path(), &opts(3)).unwrap();
    let mut reference = MemoryTree::<Blake3Hasher>::new();
    // Mix unsynced and durable batches across several seals (segments of 8).
    for i in 0..30u64 {
        let p = payload(i);
        let items = [(EntryKind::Data, p.as_slice())];
        let a = if i % 3 == 0 {
            l.append(1_000 + i, &items).unwrap()
        } else {
            l.append_unsynced(1_000 + i, &items).unwrap()
        };
        assert_eq!(a.first, i);
        // Readable at once, from this handle.
        reference.push(Blake3Hasher::hash_leaf(&l.entry(i).unwrap()));
        assert_eq!(l.root().unwrap(), reference.root());
    }
    l.sync().unwrap();
    l.sync().unwrap(); // nothing left: a no-op
    let root = l.root().unwrap();
    l.append_unsynced(2_000, &[(EntryKind::Data, b"tail")])
        .unwrap();
    // A deferred checkpoint is served at once and written by the next sync,
    // after the entries it covers are durable.
    let cp_file = d.path().join(dlog_ledger::store::CHECKPOINT_FILE);
    l.store_checkpoint_deferred(30, root, &checkpoint_note(30, &root))
        .unwrap();
    assert_eq!(l.checkpoint().unwrap().size, 30);
    assert!(!cp_file.exists());
    l.sync().unwrap();
    assert!(std::fs::read_to_string(&cp_file)
        .unwrap()
        .contains("\n30\n"));
    // A stored checkpoint syncs first, so it never covers entries a power cut could take.
    let r31 = l.root().unwrap();
    l.store_checkpoint(31, r31, &checkpoint_note(31, &r31))
        .unwrap();
    assert!(std::fs::read_to_string(&cp_file)
        .unwrap()
        .contains("\n31\n"));
    // Deferred again, then closed: the close writes it.
    l.append_unsynced(2_001, &[(EntryKind::Data, b"more")])
        .unwrap();
    let r32 = l.root().unwrap();
    l.store_checkpoint_deferred(32, r32, &checkpoint_note(32, &r32))
        .unwrap();
    drop(l);
    let l = Ledger::open(d.path(), OpenMode::ReadWrite).unwrap();
    assert_eq!(l.checkpoint().unwrap().size, 32);
    drop(l);
    let l = Ledger::open(d.path(), OpenMode::ReadWrite).unwrap();
    assert_eq!(l.size(), 32);
    assert_eq!(l.root_at(30).unwrap(), root);
    assert_eq!(l.entry(30).unwrap(), {
        let mut v = Vec::new();
        dlog_ledger::entry::encode_into(&mut v, EntryKind::Data, 2_000, b"tail");
        v
    });
    check_against(&l, &{
        let mut r = reference;
        r.push(Blake3Hasher::hash_leaf(&l.entry(30).unwrap()));
        r.push(Blake3Hasher::hash_leaf(&l.entry(31).unwrap()));
        r
    });
}

/// A sha256 log is RFC 6962 exactly: roots and proofs equal a SHA-256
/// reference tree over the canonical entry bytes, across seals and a
/// reopen; per-segment roots are that tree's subtree roots; the metadata
/// keeps the choice.
#[test]
fn a_sha256_log_is_rfc6962_across_seals_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::create(
        dir.path(),
        &CreateOptions {
            hash: HashAlg::Sha256,
            ..opts(3)
        },
    )
    .unwrap();
    assert_eq!(l.root_at(0).unwrap(), Sha256Hasher::empty_root());
    for i in 0..45u64 {
        l.append(1_000 + i, &[(EntryKind::Data, payload(i).as_slice())])
            .unwrap();
    }
    let check = |l: &Ledger| {
        let leaves: Vec<_> = (0..l.size())
            .map(|j| Sha256Hasher::hash_leaf(&l.entry(j).unwrap()))
            .collect();
        let reference = MemoryTree::<Sha256Hasher>::from_leaves(leaves.iter().copied());
        for size in 0..=l.size() {
            let root = reference.root_at(size).unwrap();
            assert_eq!(l.root_at(size).unwrap(), root, "root at {size}");
            for i in (0..size).step_by(7) {
                let p = l.inclusion_proof(i, size).unwrap();
                tree::verify_inclusion::<Sha256Hasher>(&leaves[i as usize], i, size, &p, &root)
                    .unwrap();
            }
            for old in (0..=size).step_by(5) {
                let p = l.consistency_proof(old, size).unwrap();
                let old_root = reference.root_at(old).unwrap();
                tree::verify_consistency::<Sha256Hasher>(old, size, &old_root, &root, &p).unwrap();
            }
        }
        // Segment 2 holds entries 16..24: the subtree root at level 3.
        assert_eq!(
            l.node(3, 2).unwrap(),
            tree::root_from_leaves::<Sha256Hasher>(&leaves[16..24])
        );
        // And the same log under BLAKE3 would have other roots.
        assert_ne!(
            l.root_at(l.size()).unwrap(),
            tree::root_from_leaves::<Blake3Hasher>(
                &(0..l.size())
                    .map(|j| Blake3Hasher::hash_leaf(&l.entry(j).unwrap()))
                    .collect::<Vec<_>>()
            )
        );
    };
    check(&l);
    drop(l);
    let l = Ledger::open(dir.path(), OpenMode::ReadWrite).unwrap();
    assert_eq!(l.meta().hash, HashAlg::Sha256);
    check(&l);
    assert!(l.scrub().unwrap().is_clean());
    let text = std::fs::read_to_string(dir.path().join("log.toml")).unwrap();
    assert!(text.contains("hash = \"sha256\""), "{text}");
}

/// A BLAKE3 log's metadata has no hash line (files stay as they were),
/// and a log.toml without one opens as BLAKE3.
#[test]
fn blake3_logs_keep_their_metadata() {
    let dir = tempfile::tempdir().unwrap();
    Ledger::create(dir.path(), &opts(3)).unwrap();
    let text = std::fs::read_to_string(dir.path().join("log.toml")).unwrap();
    assert!(!text.contains("hash"), "{text}");
    let l = Ledger::open(dir.path(), OpenMode::ReadOnly).unwrap();
    assert_eq!(l.meta().hash, HashAlg::Blake3);
}
