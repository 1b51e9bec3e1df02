//! Raft storage: openraft's own storage suite, plus crash and snapshot tests.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use dlog_node::log_store::{LogOptions, LogStore};
use dlog_node::state_machine::{LogShape, StateMachine};
use dlog_node::types::{Entry, Request, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder};

fn shape() -> LogShape {
    LogShape {
        origin: "dlog/test".into(),
        log_id: "00112233445566778899aabbccddeeff".into(),
        segment_bits: 2,
        max_payload: 1 << 20,
        hash: Default::default(),
    }
}

/// Stores for openraft's suite, with these log options.
struct Builder(LogOptions);

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), openraft::StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open_with(&dir.path().join("raft"), self.0).expect("log store");
        let sm = StateMachine::open(dir.path(), &shape()).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder(LogOptions::default())).expect("openraft storage suite");
}

/// The same suite with every entry but the newest read back from disk.
#[test]
fn openraft_storage_suite_reading_from_disk() {
    let opts = LogOptions {
        cache_bytes: 0,
        ..LogOptions::default()
    };
    Suite::test_all(Builder(opts)).expect("openraft storage suite, entries read from disk");
}

fn lid(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn append_entry(term: u64, index: u64, ts: u64, n: usize) -> Entry {
    let items = (0..n)
        .map(|i| {
            (
                dlog_ledger::EntryKind::Data,
                format!("entry {index}/{i}").into_bytes(),
            )
        })
        .collect::<Vec<_>>()
        .into();
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(Request::Append {
            timestamp_ns: ts,
            items,
        }),
    }
}

async fn flush_append(log: &mut LogStore, entries: Vec<Entry>) {
    // LogFlushed has no public constructor outside openraft; go through the
    // blocking helper of RaftLogStorageExt.
    use openraft::storage::RaftLogStorageExt;
    log.blocking_append(entries).await.expect("append");
}

/// Indexes of every entry the log holds.
async fn indexes(log: &mut LogStore) -> Vec<u64> {
    let got = log.try_get_log_entries(0..u64::MAX).await.unwrap();
    got.iter().map(|e| e.log_id.index).collect()
}

fn log_files(raft: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(raft)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .collect();
    v.sort();
    v
}

/// End of the records in a log file: past its last non-zero byte.
fn records_end(file: &std::path::Path) -> u64 {
    let b = std::fs::read(file).unwrap();
    b.iter().rposition(|&x| x != 0).map_or(0, |p| p as u64 + 1)
}

/// How a crash tears the last record of a log file.
#[derive(Debug, Clone, Copy)]
enum Tear {
    /// The file ends inside the record (a file that grows with each append).
    Cut,
    /// The record's last bytes never reached the disk and read as zeros
    /// (a preallocated file).
    Zeroed,
    /// Bytes of an unfinished record lie after the last record, in the
    /// preallocated zeros.
    Garbage,
}

#[tokio::test]
async fn log_survives_reopen_and_cuts_a_torn_tail() {
    for (tear, preallocate) in [
        (Tear::Cut, false),
        (Tear::Zeroed, true),
        (Tear::Garbage, true),
    ] {
        let opts = LogOptions {
            preallocate,
            ..LogOptions::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let raft = dir.path().join("raft");
        {
            let mut log = LogStore::open_with(&raft, opts).unwrap();
            flush_append(
                &mut log,
                (1..=10).map(|i| append_entry(1, i, i, 3)).collect(),
            )
            .await;
            log.save_vote(&openraft::Vote::new(3, 2)).await.unwrap();
        }
        let file = log_files(&raft).pop().unwrap();
        let len = std::fs::metadata(&file).unwrap().len();
        let end = records_end(&file);
        if preallocate {
            assert_eq!(len, opts.file_bytes, "{tear:?}: preallocated");
        } else {
            assert_eq!(len, end, "{tear:?}: not preallocated");
        }
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        use std::os::unix::fs::FileExt;
        let last = match tear {
            Tear::Cut => {
                f.set_len(end - 5).unwrap();
                9
            }
            Tear::Zeroed => {
                f.write_all_at(&[0; 5], end - 5).unwrap();
                9
            }
            Tear::Garbage => {
                f.write_all_at(&[0, 0, 0, 40, 1, 2, 3, 4, 5], end).unwrap();
                10
            }
        };
        drop(f);
        let mut log = LogStore::open_with(&raft, opts).unwrap();
        assert_eq!(log.last_index(), Some(last), "{tear:?}: torn tail cut");
        assert_eq!(
            log.read_vote().await.unwrap(),
            Some(openraft::Vote::new(3, 2))
        );
        // Appending after the cut works and survives another reopen.
        flush_append(&mut log, vec![append_entry(2, last + 1, 10, 1)]).await;
        log.truncate(lid(2, 8)).await.unwrap();
        flush_append(&mut log, vec![append_entry(3, 8, 11, 2)]).await;
        log.purge(lid(1, 3)).await.unwrap();
        drop(log);
        if preallocate {
            // Cut or truncated, the file is preallocated again.
            let len = std::fs::metadata(log_files(&raft).pop().unwrap())
                .unwrap()
                .len();
            assert_eq!(len, opts.file_bytes, "{tear:?}: preallocated again");
        }
        let mut log = LogStore::open_with(&raft, opts).unwrap();
        let got = log.try_get_log_entries(0..100).await.unwrap();
        let idx: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
        assert_eq!(idx, vec![4, 5, 6, 7, 8], "{tear:?}");
        assert_eq!(got.last().unwrap().log_id.leader_id.term, 3);
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(lid(1, 3)));
    }
}

/// Preallocated files end in zeros: that is no torn tail, so a reopen keeps
/// every entry; a log written without preallocation opens with it (its
/// last file gets allocated), and back.
#[tokio::test]
async fn preallocated_files_roll_and_reopen_whole() {
    let small = LogOptions {
        file_bytes: 4096,
        preallocate: true,
        ..LogOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let raft = dir.path().join("raft");
    let mut want = Vec::new();
    for (round, opts) in [
        LogOptions {
            preallocate: false,
            ..small
        },
        small,
        LogOptions {
            preallocate: false,
            ..small
        },
        small,
    ]
    .into_iter()
    .enumerate()
    {
        let mut log = LogStore::open_with(&raft, opts).unwrap();
        assert_eq!(
            indexes(&mut log).await,
            want,
            "round {round}: reopened whole"
        );
        let base = want.len() as u64;
        // 40 records of about 230 bytes: the last file is not full.
        for i in 1..=40 {
            flush_append(&mut log, vec![append_entry(1, base + i, base + i, 8)]).await;
            want.push(base + i);
        }
        let last = log_files(&raft).pop().unwrap();
        let (len, end) = (std::fs::metadata(&last).unwrap().len(), records_end(&last));
        if opts.preallocate {
            assert!(
                len == 4096 && end < len,
                "round {round}: {end} of {len} bytes used"
            );
        } else {
            assert!(
                len == end || len == 4096,
                "round {round}: {end} of {len} bytes"
            );
        }
    }
    let files = log_files(&raft);
    assert!(files.len() >= 4, "rolled into {} files", files.len());
    let mut log = LogStore::open_with(&raft, small).unwrap();
    assert_eq!(log.last_index(), Some(160));
    assert_eq!(indexes(&mut log).await, (1..=160).collect::<Vec<_>>());
}

/// With a small cache, only the newest entries stay in memory; the rest
/// read back from their files exactly as written, across file rolls,
/// truncation, purges that remove files, and a reopen. A damaged record
/// that is no longer cached is an error, never wrong data.
#[tokio::test]
async fn entries_past_the_cache_read_back_from_their_files() {
    let opts = LogOptions {
        file_bytes: 2048,
        preallocate: true,
        cache_bytes: 1000,
    };
    let dir = tempfile::tempdir().unwrap();
    let raft = dir.path().join("raft");
    let mut log = LogStore::open_with(&raft, opts).unwrap();
    let mut want: Vec<Entry> = Vec::new();
    for i in 1..=120 {
        let e = append_entry(1 + i / 50, i, i, (i % 7) as usize + 1);
        want.push(e.clone());
        flush_append(&mut log, vec![e]).await;
    }
    assert!(log_files(&raft).len() >= 3, "rolled into several files");
    let cached = log.cached_entries();
    assert!((1..20).contains(&cached), "{cached} of 120 entries cached");
    assert_eq!(log.try_get_log_entries(1..=120).await.unwrap(), want);
    assert_eq!(log.try_get_log_entries(30..41).await.unwrap(), want[29..40]);
    // Truncate inside the uncached part, then append a different tail.
    log.truncate(lid(2, 60)).await.unwrap();
    want.truncate(59);
    for i in 60..=90 {
        let e = append_entry(5, i, 200 + i, 3);
        want.push(e.clone());
        flush_append(&mut log, vec![e]).await;
    }
    // A purge that removes whole files moves every later entry's place.
    log.purge(lid(1, 40)).await.unwrap();
    want.drain(..40);
    assert_eq!(log.try_get_log_entries(0..u64::MAX).await.unwrap(), want);
    drop(log);
    let mut log = LogStore::open_with(&raft, opts).unwrap();
    assert!(log.cached_entries() < 20);
    assert_eq!(log.try_get_log_entries(0..u64::MAX).await.unwrap(), want);
    drop(log);
    // Damage a payload byte of entry 45 (not cached) behind an open store
    // (an open would cut the log at the bad record).
    let mut log = LogStore::open_with(&raft, opts).unwrap();
    let needle = b"entry 45/0";
    let file = log_files(&raft)
        .into_iter()
        .find(|f| {
            std::fs::read(f)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .expect("entry 45 on disk");
    let bytes = std::fs::read(&file).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all_at(b"X", at as u64).unwrap();
    drop(f);
    let err = log.try_get_log_entries(44..47).await.unwrap_err();
    assert!(err.to_string().contains("entry 45"), "{err}");
    assert_eq!(log.try_get_log_entries(46..48).await.unwrap(), want[5..7]);
}

/// After a snapshot beyond the end of the log is installed, openraft purges
/// past the last entry and appends resume further on. That gap must never
/// stop the log from opening again, whichever of purge and append comes
/// first.
#[tokio::test]
async fn appends_resume_after_a_purge_beyond_the_log() {
    for purge_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let raft = dir.path().join("raft");
        {
            let mut log = LogStore::open(&raft).unwrap();
            flush_append(
                &mut log,
                (1..=10).map(|i| append_entry(1, i, i, 2)).collect(),
            )
            .await;
            if purge_first {
                log.purge(lid(2, 1799)).await.unwrap();
            }
            flush_append(
                &mut log,
                (1800..=1805).map(|i| append_entry(2, i, i, 2)).collect(),
            )
            .await;
            if !purge_first {
                log.purge(lid(2, 1799)).await.unwrap();
            }
        }
        let mut log = LogStore::open(&raft).expect("reopens");
        assert_eq!(
            indexes(&mut log).await,
            (1800..=1805).collect::<Vec<_>>(),
            "purge first: {purge_first}"
        );
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(lid(2, 1799)));
        assert_eq!(st.last_log_id, Some(lid(2, 1805)));
        // Appending on goes on working across another reopen.
        flush_append(&mut log, vec![append_entry(2, 1806, 1806, 1)]).await;
        drop(log);
        let log = LogStore::open(&raft).expect("reopens again");
        assert_eq!(log.last_index(), Some(1806));
        // The purged records left no file behind.
        assert_eq!(log_files(&raft).len(), 1, "purge first: {purge_first}");
    }
}

fn segment_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let seg = dir.join("ledger/segments");
    let mut v: Vec<_> = std::fs::read_dir(&seg)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A replica in `dir` that applied `entries` durably up to `durable`, then
/// appended the rest to its ledger and crashed before its applied state
/// said so (simulated by restoring the applied file of the durable point).
async fn crash_after_appending(dir: &std::path::Path, entries: &[Entry], durable: usize) {
    let mut sm = StateMachine::open(dir, &shape()).unwrap();
    sm.apply(entries[..durable].to_vec()).await.unwrap();
    sm.flush().unwrap();
    let file = dir.join("ledger/raft-applied.json");
    let applied = std::fs::read(&file).unwrap();
    sm.apply(entries[durable..].to_vec()).await.unwrap();
    drop(sm);
    std::fs::write(&file, applied).unwrap();
}

#[tokio::test]
async fn reapplying_after_a_crash_never_appends_twice() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let entries: Vec<Entry> = (1..=7).map(|i| append_entry(1, i, 1000 + i, 3)).collect();
    {
        let mut sm = StateMachine::open(a.path(), &shape()).unwrap();
        sm.apply(entries.clone()).await.unwrap();
    }
    // Crash after the ledger append of entries 5..=7 but before the
    // applied file was written.
    crash_after_appending(b.path(), &entries, 4).await;
    let mut sm = StateMachine::open(b.path(), &shape()).unwrap();
    let (last, _) = sm.applied_state().await.unwrap();
    assert_eq!(last, Some(lid(1, 4)));
    // Raft re-applies 5..=7: they are recognised and skipped.
    let out = sm.apply(entries[4..].to_vec()).await.unwrap();
    assert_eq!(out[0].first, 12);
    assert_eq!(sm.lock().ledger().unwrap().size(), 21);
    drop(sm);
    assert_eq!(
        segment_bytes(a.path()),
        segment_bytes(b.path()),
        "byte-identical replicas"
    );
}

/// `(session, seq, floor)` of a call.
type Tag = Option<(u64, u64, u64)>;

fn calls_entry(index: u64, calls: &[(&[u8], Tag)]) -> Entry {
    use dlog_node::session::SessionTag;
    use dlog_node::types::CallTag;
    let items: Vec<(dlog_ledger::EntryKind, Vec<u8>)> = calls
        .iter()
        .map(|(p, _)| (dlog_ledger::EntryKind::Data, p.to_vec()))
        .collect();
    Entry {
        log_id: lid(1, index),
        payload: EntryPayload::Normal(Request::AppendCalls {
            timestamp_ns: 1000 + index,
            items: items.into(),
            calls: calls
                .iter()
                .map(|(_, t)| CallTag {
                    count: 1,
                    tag: t.map(|(session, seq, floor)| SessionTag {
                        session,
                        seq,
                        floor,
                    }),
                })
                .collect(),
        }),
    }
}

fn payloads(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let l =
        dlog_ledger::Ledger::open(&dir.join("ledger"), dlog_ledger::OpenMode::ReadOnly).unwrap();
    (0..l.size())
        .map(|i| {
            let e = l.entry(i).unwrap();
            dlog_ledger::entry::decode_ref(&e).unwrap().2.to_vec()
        })
        .collect()
}

/// Tagged calls inside group-committed entries: a copy of a call already
/// applied (earlier in the log or earlier in the same entry) appends
/// nothing and answers with the first copy's place, the calls around it
/// keep their own places, a copy below the session's floor is refused; and
/// the replay after a crash decides exactly the same.
#[tokio::test]
async fn tagged_calls_are_stored_once_and_replay_the_same() {
    let entries = vec![
        calls_entry(1, &[(b"a", Some((1, 1, 1))), (b"b", Some((1, 2, 1)))]),
        calls_entry(
            2,
            &[
                (b"a", Some((1, 1, 1))),
                (b"c", None),
                (b"d", Some((2, 1, 1))),
                (b"d", Some((2, 1, 1))),
                (b"b", Some((1, 2, 1))),
                (b"e", Some((1, 3, 1))),
            ],
        ),
        calls_entry(3, &[(b"a", Some((1, 1, 3))), (b"f", Some((1, 4, 3)))]),
    ];
    let places = |out: &[dlog_node::types::Response]| -> Vec<Vec<Option<u64>>> {
        out.iter()
            .map(|r| r.calls.iter().map(|p| p.map(|p| p.first)).collect())
            .collect()
    };
    let want = vec![
        vec![Some(0), Some(1)],
        vec![Some(0), Some(2), Some(3), Some(3), Some(1), Some(4)],
        vec![None, Some(5)],
    ];
    let a = tempfile::tempdir().unwrap();
    {
        let mut sm = StateMachine::open(a.path(), &shape()).unwrap();
        let out = sm.apply(entries.clone()).await.unwrap();
        assert_eq!(places(&out), want);
    }
    let stored: Vec<Vec<u8>> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|x| x.as_bytes().to_vec())
        .collect();
    assert_eq!(payloads(a.path()), stored);
    // A replica that crashed after appending entries 2 and 3 but before
    // its applied state (with the session table) was written.
    let b = tempfile::tempdir().unwrap();
    crash_after_appending(b.path(), &entries, 1).await;
    let mut sm = StateMachine::open(b.path(), &shape()).unwrap();
    let out = sm.apply(entries[1..].to_vec()).await.unwrap();
    assert_eq!(places(&out), want[1..]);
    drop(sm);
    assert_eq!(payloads(b.path()), stored);
    assert_eq!(segment_bytes(a.path()), segment_bytes(b.path()));
}

#[tokio::test]
async fn snapshot_transfers_segments_byte_for_byte() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut sa = StateMachine::open(a.path(), &shape()).unwrap();
    sa.apply(
        (1..=9)
            .map(|i| append_entry(1, i, 50 + i, 2))
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let snap = sa.build_snapshot().await.unwrap();
    let mut sb = StateMachine::open(b.path(), &shape()).unwrap();
    sb.apply(vec![append_entry(1, 1, 1, 1)]).await.unwrap();
    // Through the receiving path: the archive spooled to a file in chunks.
    let mut spool = sb.begin_receiving_snapshot().await.unwrap();
    let mut src = snap.snapshot;
    let mut chunk = vec![0u8; 1000];
    loop {
        let n = src.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        spool.write_all(&chunk[..n]).await.unwrap();
    }
    spool.flush().await.unwrap();
    sb.install_snapshot(&snap.meta, spool).await.unwrap();
    assert_eq!(sb.applied_state().await.unwrap().0, Some(lid(1, 9)));
    // Both continue identically.
    let next = vec![append_entry(2, 10, 70, 5)];
    sa.apply(next.clone()).await.unwrap();
    sb.apply(next).await.unwrap();
    let ra = sa.lock().ledger().unwrap().root().unwrap();
    let rb = sb.lock().ledger().unwrap().root().unwrap();
    assert_eq!(ra, rb);
    drop((sa, sb));
    assert_eq!(segment_bytes(a.path()), segment_bytes(b.path()));
    // A restart after install still opens the installed ledger.
    let sb = StateMachine::open(b.path(), &shape()).unwrap();
    assert_eq!(sb.lock().ledger().unwrap().size(), 23);
}

#[test]
fn a_data_dir_of_another_cluster_is_refused() {
    let a = tempfile::tempdir().unwrap();
    drop(StateMachine::open(a.path(), &shape()).unwrap());
    let mut other = shape();
    other.log_id = "ffeeddccbbaa99887766554433221100".into();
    let e = StateMachine::open(a.path(), &other)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another cluster"), "{e}");
}

#[tokio::test]
async fn a_checkpoint_with_another_root_marks_the_replica_diverged() {
    use dlog_crypto::note::{Checkpoint, SignedNote};
    let a = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(a.path(), &shape()).unwrap();
    sm.apply(vec![append_entry(1, 1, 5, 3)]).await.unwrap();
    let good = sm.lock().ledger().unwrap().root_at(3).unwrap();
    let key = dlog_crypto::keys::NodeKey::generate("node-1").unwrap();
    let note = |root| {
        let body = Checkpoint::new("dlog/test", 3, root).unwrap().to_body();
        let mut n = SignedNote::new(body).unwrap();
        n.add_signature(key.note_signer().sign(&n.text));
        n.to_string()
    };
    let cp = |i, root| Entry {
        log_id: lid(1, i),
        payload: EntryPayload::Normal(Request::Checkpoint { note: note(root) }),
    };
    sm.apply(vec![cp(2, good)]).await.unwrap();
    assert!(sm.lock().diverged.is_none());
    assert_eq!(sm.lock().ledger().unwrap().checkpoint().unwrap().size, 3);
    let mut bad = good;
    bad[0] ^= 1;
    sm.apply(vec![cp(3, bad)]).await.unwrap();
    let why = sm.lock().diverged.clone().expect("diverged");
    assert!(why.contains("differs"), "{why}");
    // It stays stopped across a restart, with the same evidence, until an
    // operator removes the marker.
    sm.close();
    drop(sm);
    let sm = StateMachine::open(a.path(), &shape()).unwrap();
    let again = sm
        .lock()
        .diverged
        .clone()
        .expect("still diverged after a restart");
    assert!(again.starts_with(&why), "{again}");
    assert!(again.contains("DIVERGED"), "names the marker: {again}");
    sm.close();
    drop(sm);
    std::fs::remove_file(a.path().join(dlog_node::state_machine::DIVERGED_FILE)).unwrap();
    let sm = StateMachine::open(a.path(), &shape()).unwrap();
    assert!(sm.lock().diverged.is_none());
}

#[tokio::test]
async fn a_torn_applied_slot_falls_back_to_the_other() {
    let a = tempfile::tempdir().unwrap();
    {
        let mut sm = StateMachine::open(a.path(), &shape()).unwrap();
        sm.apply(vec![append_entry(1, 1, 5, 1)]).await.unwrap();
        sm.flush().unwrap();
        // Written to slot 1 by the clean shutdown.
        sm.apply(vec![append_entry(1, 2, 6, 1)]).await.unwrap();
    }
    // Slot 1 holds index 2. A file in the layout before the session table
    // (32 KiB slots) reads the same.
    let path = a.path().join("ledger/raft-applied.json");
    let mut b = std::fs::read(&path).unwrap();
    let (legacy, slot) = (32 << 10, 4 << 20);
    let mut old = b[..legacy].to_vec();
    old.extend_from_slice(&b[slot..]);
    std::fs::write(&path, &old).unwrap();
    let mut sm = StateMachine::open(a.path(), &shape()).unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(1, 2)));
    drop(sm);
    // Tear slot 1.
    b[slot + 12] ^= 0xff;
    std::fs::write(&path, b).unwrap();
    let mut sm = StateMachine::open(a.path(), &shape()).unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(1, 1)));
    // Raft re-applies entry 2: recognised, not appended twice.
    sm.apply(vec![append_entry(1, 2, 6, 1)]).await.unwrap();
    assert_eq!(sm.lock().ledger().unwrap().size(), 2);
}

#[tokio::test]
async fn a_cut_or_foreign_snapshot_is_refused_and_the_old_ledger_kept() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut sa = StateMachine::open(a.path(), &shape()).unwrap();
    sa.apply(vec![append_entry(1, 1, 5, 20)]).await.unwrap();
    let snap = sa.build_snapshot().await.unwrap();
    let mut whole = Vec::new();
    let mut src = snap.snapshot;
    src.read_to_end(&mut whole).await.unwrap();
    let mut sb = StateMachine::open(b.path(), &shape()).unwrap();
    sb.apply(vec![append_entry(1, 1, 1, 3)]).await.unwrap();
    let cut = &whole[..whole.len() - 7];
    let mut foreign = whole.clone();
    let at = whole
        .windows(b"checkpoint".len())
        .position(|w| w == b"checkpoint")
        .or_else(|| whole.windows(8).position(|w| w == b"log.toml"))
        .unwrap();
    foreign[at] = b'/';
    for bad in [cut, &foreign[..]] {
        let mut spool = sb.begin_receiving_snapshot().await.unwrap();
        spool.write_all(bad).await.unwrap();
        spool.flush().await.unwrap();
        let err = sb.install_snapshot(&snap.meta, spool).await.unwrap_err();
        eprintln!("refused: {err}");
        assert!(err.to_string().contains("malformed snapshot"), "{err}");
        assert_eq!(sb.lock().ledger().unwrap().size(), 3);
        assert_eq!(sb.applied_state().await.unwrap().0, Some(lid(1, 1)));
    }
}
