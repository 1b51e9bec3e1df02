//! The durable Raft log: append-only record files in `<data>/raft/`.
//!
//! ```text
//! <data>/raft/log-<first index:020>.dat   records: len:u32 BE | crc32c:u32 BE | bincode(Entry),
//!                                          then zeros up to the preallocated size
//! <data>/raft/vote                         the last vote (atomic replace)
//! <data>/raft/purged                       the last purged log id (atomic replace)
//! ```
//!
//! Files are preallocated (`fallocate` to the full file size when a file is
//! made, or cut by a truncate): an append then never changes the file's size
//! or allocates blocks, so its `fdatasync` commits no size change (on ext4
//! here: 200 B appends sync in 110 instead of 197 us, 100 KB ones in 243
//! instead of 331 us). Zero-filling would sync faster still (166 us) but
//! writes every byte twice, which cost about 15% of the machine's CPU in
//! the cluster benchmark. A record header of zeros ends a file's records; a
//! tail of zeros after the last record is the unused part of the file, not
//! damage.
//!
//! `append` writes its records and hands the `fdatasync` to a flusher thread,
//! which calls the [`LogFlushed`] callback once the records are durable. The
//! flusher takes every append queued since its last fsync into the next one
//! (group commit), and reports in the order the appends came. The entries
//! are readable as soon as `append` returns: on the leader, openraft (with
//! the patch in `vendor/openraft/DLOG-PATCH.md`) replicates them at once and
//! counts its own copy towards the commit quorum only when this callback
//! says it is durable, so the leader's fsync runs beside the followers'. A
//! follower acknowledges only after its callback, so one fsync is on every
//! commit's path, which is why files are preallocated (above). A record cut
//! by a crash (short or bad CRC) is a torn tail: it is cut at open.
//!
//! Every entry's log id and place in its file are kept in memory; the
//! entries themselves only for the newest [`LogOptions::cache_bytes`] of
//! records, which is what replication and apply read. Older ones (a
//! follower far behind, a log not yet purged behind a snapshot) are read
//! back from their file and checked (CRC, index) on demand. The log is
//! purged only behind snapshots, every `raft.snapshot_every` entries, and a
//! bulk load makes each entry a batch of up to `batch.max_bytes`: without
//! the bound a node's memory grew by the whole log (45 MB/s per node in the
//! cluster benchmark).

mod flusher;
mod record;

use crate::error::{NodeError, Result};
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use flusher::{spawn_flusher, FlushHold, FlushJob};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogId, RaftLogReader, StorageIOError, Vote};
use record::{approx_record_len, encode_record, read_small, scan_records, write_small};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// How the Raft log lays out its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Roll to a new record file once a file holds this many bytes.
    pub file_bytes: u64,
    /// Allocate every file's `file_bytes` when it is made (see the module
    /// docs).
    pub preallocate: bool,
    /// Record bytes of the newest entries kept decoded in memory (see the
    /// module docs). The newest entry is always kept.
    pub cache_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            file_bytes: 64 << 20,
            preallocate: true,
            cache_bytes: 64 << 20,
        }
    }
}

struct LogFile {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// End of the last record.
    len: u64,
}

/// Allocates `bytes` for `file` (unwritten extents read as zeros) and sets
/// its size, so that appends below it grow nothing. `false` where the file
/// system cannot (the log then works unallocated).
fn preallocate(file: &File, path: &Path, bytes: u64) -> bool {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e,
                "cannot preallocate the raft log file; appends grow it instead");
            false
        }
    }
}

/// Where an entry's record is, and the entry while it is cached.
struct Slot {
    /// Position in `files` << 40 | offset of the record in that file.
    loc: u64,
    /// Record length, header included.
    len: u64,
    log_id: LogId,
    entry: Option<Entry>,
}

impl Slot {
    fn pos(&self) -> usize {
        (self.loc >> 40) as usize
    }

    fn offset(&self) -> u64 {
        self.loc & ((1 << 40) - 1)
    }
}

struct Inner {
    dir: PathBuf,
    files: Vec<LogFile>,
    /// Every entry in the log, by index.
    entries: BTreeMap<u64, Slot>,
    /// Entries from this index on are cached (`Slot::entry` is `Some`);
    /// the cached ones are always the newest.
    cached_from: u64,
    /// Record bytes of the cached entries.
    cached_bytes: u64,
    vote: Option<Vote<NodeId>>,
    purged: Option<LogId>,
    committed: Option<LogId>,
    /// Index of the last record in the last file (`None`: no file, or an
    /// empty one). An append that does not follow it starts a new file.
    last_idx: Option<u64>,
    flusher: std::sync::mpsc::Sender<FlushJob>,
    opts: LogOptions,
}

/// The Raft log store. Cheap to clone (readers share it).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// The flusher's hold switch (fault injection, feature `test-support`).
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    hold: Arc<FlushHold>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

fn sio_w(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_logs(AnyError::error(e.to_string())).into()
}

fn sio_r(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_logs(AnyError::error(e.to_string())).into()
}

fn file_name(first: u64) -> String {
    format!("log-{first:020}.dat")
}

/// Drops the decoded entries of the oldest cached slots (from `from` on)
/// until `bytes` is within `budget`; the newest entry stays.
fn evict(entries: &mut BTreeMap<u64, Slot>, from: &mut u64, bytes: &mut u64, budget: u64) {
    let Some(&last) = entries.keys().next_back() else {
        return;
    };
    if *from >= last {
        return;
    }
    let mut next = *from;
    for (&i, slot) in entries.range_mut(*from..last) {
        if *bytes <= budget {
            break;
        }
        if slot.entry.take().is_some() {
            *bytes -= slot.len;
        }
        next = i + 1;
    }
    *from = next;
}

impl LogStore {
    /// Opens (or creates) the log in `dir` with the default [`LogOptions`],
    /// cutting a torn tail.
    pub fn open(dir: &Path) -> Result<LogStore> {
        LogStore::open_with(dir, LogOptions::default())
    }

    /// Opens (or creates) the log in `dir`, cutting a torn tail.
    pub fn open_with(dir: &Path, opts: LogOptions) -> Result<LogStore> {
        if opts.file_bytes == 0 {
            return Err(NodeError::RaftStore {
                path: dir.to_path_buf(),
                detail: "log file size must be positive".into(),
            });
        }
        fs::create_dir_all(dir).map_err(NodeError::io("create directory", dir))?;
        let vote = read_small(&dir.join("vote"))?;
        let purged: Option<LogId> = read_small(&dir.join("purged"))?;
        let mut firsts = Vec::new();
        for ent in fs::read_dir(dir).map_err(NodeError::io("read directory", dir))? {
            let ent = ent.map_err(NodeError::io("read directory", dir))?;
            let name = ent.file_name().to_string_lossy().to_string();
            if let Some(num) = name
                .strip_prefix("log-")
                .and_then(|n| n.strip_suffix(".dat"))
            {
                if let Ok(n) = num.parse::<u64>() {
                    firsts.push(n);
                }
            }
        }
        firsts.sort_unstable();
        let mut files: Vec<LogFile> = Vec::new();
        let mut entries = BTreeMap::new();
        // Decoded entries are trimmed to the cache bound file by file, so
        // open never holds more of the log in memory than that.
        let (mut cached_from, mut cached_bytes) = (None::<u64>, 0u64);
        let mut cut = false;
        let mut expect: Option<u64> = None;
        for first in firsts {
            let path = dir.join(file_name(first));
            if cut {
                tracing::warn!(file = %path.display(), "removing raft log file after a torn record");
                fs::remove_file(&path).map_err(NodeError::io("remove", &path))?;
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(NodeError::io("open", &path))?;
            // What a crashed process wrote but never synced is still in the
            // page cache and reads back as records: make it durable before
            // it counts (this node may answer a vote or a probe with it).
            file.sync_data().map_err(NodeError::io("fsync", &path))?;
            let bytes = fs::read(&path).map_err(NodeError::io("read", &path))?;
            let (recs, valid) = scan_records(&bytes);
            // Zeros after the last record are the preallocated rest of the
            // file; anything else there is a torn record.
            if bytes[valid as usize..].iter().any(|&b| b != 0) {
                tracing::warn!(file = %path.display(), valid, len = bytes.len(), "cutting torn raft log tail");
                file.set_len(valid)
                    .map_err(NodeError::io("truncate", &path))?;
                file.sync_all().map_err(NodeError::io("fsync", &path))?;
                cut = true;
            }
            let pos = files.len() as u64;
            for (off, len, e) in recs {
                let idx = e.get_log_id().index;
                if let Some(x) = expect {
                    // A jump forward is where appends resumed after a
                    // snapshot: fine if everything before it is purged.
                    let resumed_after_purge = idx > x
                        && purged.is_some_and(|p: LogId| x - 1 <= p.index && idx <= p.index + 1);
                    if idx != x && !resumed_after_purge {
                        return Err(NodeError::RaftStore {
                            path: path.clone(),
                            detail: format!("entry {idx} where {x} was expected"),
                        });
                    }
                }
                expect = Some(idx + 1);
                if purged.is_none_or(|p: LogId| idx > p.index) {
                    cached_from.get_or_insert(idx);
                    cached_bytes += len;
                    entries.insert(
                        idx,
                        Slot {
                            loc: pos << 40 | off,
                            len,
                            log_id: *e.get_log_id(),
                            entry: Some(e),
                        },
                    );
                }
            }
            files.push(LogFile {
                first,
                path,
                file: Arc::new(file),
                len: valid,
            });
            if let Some(from) = cached_from.as_mut() {
                evict(&mut entries, from, &mut cached_bytes, opts.cache_bytes);
            }
        }
        let last_idx = match files.last() {
            Some(f) if f.len > 0 => expect.map(|x| x - 1),
            _ => None,
        };
        // The file appends go to next: preallocated, whatever wrote it last.
        if let Some(f) = files.last() {
            let size = f
                .file
                .metadata()
                .map_err(NodeError::io("stat", &f.path))?
                .len();
            if opts.preallocate
                && size < opts.file_bytes
                && preallocate(&f.file, &f.path, opts.file_bytes)
            {
                f.file.sync_all().map_err(NodeError::io("fsync", &f.path))?;
            }
        }
        let hold = Arc::new(FlushHold::default());
        let inner = Inner {
            dir: dir.to_path_buf(),
            files,
            entries,
            cached_from: cached_from.unwrap_or(0),
            cached_bytes,
            vote,
            purged,
            committed: None,
            last_idx,
            flusher: spawn_flusher(dir, hold.clone())?,
            opts,
        };
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            hold,
        })
    }

    /// Fault injection for tests: while `on`, no append becomes durable (the
    /// flusher holds its fsyncs and callbacks back, as a stalled disk would);
    /// `false` lets everything held go through, in order.
    #[cfg(feature = "test-support")]
    pub fn hold_flushes(&self, on: bool) {
        self.hold.set(on);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Index of the last entry held (for tests and status).
    pub fn last_index(&self) -> Option<u64> {
        self.lock().entries.keys().next_back().copied()
    }

    /// How many entries are held decoded in memory (for tests and status).
    pub fn cached_entries(&self) -> usize {
        let g = self.lock();
        g.entries.range(g.cached_from..).count()
    }
}

impl Inner {
    /// Writes the records (not yet durable: see [`FlushJob`]); returns the
    /// file to sync, if anything was written.
    fn write(&mut self, entries: Vec<Entry>) -> Result<Option<(Arc<File>, PathBuf)>> {
        if entries.is_empty() {
            return Ok(None);
        }
        let first_idx = entries[0].get_log_id().index;
        let mut buf = Vec::with_capacity(entries.iter().map(approx_record_len).sum());
        let mut rel = Vec::with_capacity(entries.len());
        for e in &entries {
            rel.push(buf.len() as u64);
            encode_record(&mut buf, e)?;
        }
        rel.push(buf.len() as u64);
        let follows = self.last_idx.is_some_and(|l| l + 1 == first_idx);
        let must_roll = match self.files.last() {
            None => true,
            // Full, or the append does not follow the last record (appends
            // resume after a snapshot): a file holds one contiguous run.
            Some(f) => {
                f.len >= self.opts.file_bytes
                    || (f.len > 0 && !follows)
                    || (f.len == 0 && f.first != first_idx)
            }
        };
        if must_roll {
            self.new_file(first_idx)?;
        }
        let pos = self.files.len() as u64 - 1;
        let f = self.files.last_mut().expect("a file");
        f.file
            .write_all_at(&buf, f.len)
            .map_err(NodeError::io("write", &f.path))?;
        let base = f.len;
        f.len += buf.len() as u64;
        let to_sync = (f.file.clone(), f.path.clone());
        self.last_idx = entries.last().map(|e| e.get_log_id().index);
        if self.entries.is_empty() {
            self.cached_from = first_idx;
        }
        for (e, off) in entries.into_iter().zip(rel.windows(2)) {
            let len = off[1] - off[0];
            self.cached_bytes += len;
            self.entries.insert(
                e.get_log_id().index,
                Slot {
                    loc: pos << 40 | (base + off[0]),
                    len,
                    log_id: *e.get_log_id(),
                    entry: Some(e),
                },
            );
        }
        self.evict();
        Ok(Some(to_sync))
    }

    /// Starts the file for entries from `first_idx`, preallocated.
    fn new_file(&mut self, first_idx: u64) -> Result<()> {
        if self.files.last().is_some_and(|f| f.len == 0) {
            let f = self.files.pop().expect("a file");
            fs::remove_file(&f.path).map_err(NodeError::io("remove", &f.path))?;
        }
        let path = self.dir.join(file_name(first_idx));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(NodeError::io("create", &path))?;
        if self.opts.preallocate {
            preallocate(&file, &path, self.opts.file_bytes);
        }
        dlog_ledger::fsutil::fsync_dir(&self.dir)?;
        self.files.push(LogFile {
            first: first_idx,
            path,
            file: Arc::new(file),
            len: 0,
        });
        Ok(())
    }

    /// Drops the oldest cached entries until the cache is within its
    /// bound (the newest entry stays).
    fn evict(&mut self) {
        evict(
            &mut self.entries,
            &mut self.cached_from,
            &mut self.cached_bytes,
            self.opts.cache_bytes,
        );
    }

    /// The entry at `index` from memory, or read back from its file.
    fn entry(&self, index: u64, slot: &Slot) -> std::result::Result<Entry, String> {
        if let Some(e) = &slot.entry {
            return Ok(e.clone());
        }
        let f = self
            .files
            .get(slot.pos())
            .ok_or_else(|| format!("raft log entry {index}: no file {}", slot.pos()))?;
        let mut rec = vec![0u8; slot.len as usize];
        f.file
            .read_exact_at(&mut rec, slot.offset())
            .map_err(|e| format!("read {}: {e}", f.path.display()))?;
        let (mut recs, _) = scan_records(&rec);
        match recs.pop() {
            Some((0, len, e)) if len == slot.len && *e.get_log_id() == slot.log_id => Ok(e),
            _ => Err(format!(
                "{} at offset {}: the record of entry {index} does not read back",
                f.path.display(),
                slot.offset()
            )),
        }
    }

    /// Deletes every entry with index >= `index`, durably.
    fn truncate_from(&mut self, index: u64) -> Result<()> {
        let Some(first) = self.entries.range(index..).next().map(|(_, s)| s) else {
            return Ok(());
        };
        let (pos, off) = (first.pos(), first.offset());
        while self.files.len() > pos + 1 {
            let f = self.files.pop().expect("non-empty");
            fs::remove_file(&f.path).map_err(NodeError::io("remove", &f.path))?;
        }
        let f = &mut self.files[pos];
        f.file
            .set_len(off)
            .map_err(NodeError::io("truncate", &f.path))?;
        f.len = off;
        if self.opts.preallocate {
            preallocate(&f.file, &f.path, self.opts.file_bytes);
        }
        f.file.sync_all().map_err(NodeError::io("fsync", &f.path))?;
        dlog_ledger::fsutil::fsync_dir(&self.dir)?;
        for (_, slot) in self.entries.split_off(&index) {
            if slot.entry.is_some() {
                self.cached_bytes -= slot.len;
            }
        }
        // What is left is older than `index`; new appends start there.
        self.cached_from = self.cached_from.min(index);
        // A file holds one contiguous run, so what is left of it ends right
        // before `index`.
        self.last_idx = if off == 0 { None } else { index.checked_sub(1) };
        Ok(())
    }

    fn purge_upto(&mut self, log_id: LogId) -> Result<()> {
        write_small(&self.dir.join("purged"), &log_id)?;
        self.purged = Some(log_id);
        let keep = self.entries.split_off(&(log_id.index + 1));
        for (_, slot) in std::mem::replace(&mut self.entries, keep) {
            if slot.entry.is_some() {
                self.cached_bytes -= slot.len;
            }
        }
        self.cached_from = self.cached_from.max(log_id.index + 1);
        if self.last_idx.is_none_or(|l| l <= log_id.index) {
            // Every record on disk is purged (a snapshot beyond the log was
            // installed): drop every file, so appends start a fresh one.
            for f in self.files.drain(..) {
                fs::remove_file(&f.path).map_err(NodeError::io("remove", &f.path))?;
            }
            dlog_ledger::fsutil::fsync_dir(&self.dir)?;
            self.last_idx = None;
            return Ok(());
        }
        // Remove whole files whose entries are all purged (not the last file).
        while self.files.len() > 1 && self.files[1].first <= log_id.index + 1 {
            let f = self.files.remove(0);
            fs::remove_file(&f.path).map_err(NodeError::io("remove", &f.path))?;
            for slot in self.entries.values_mut() {
                slot.loc -= 1 << 40;
            }
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let g = self.lock();
        g.entries
            .range(range)
            .map(|(&i, slot)| g.entry(i, slot))
            .collect::<std::result::Result<_, _>>()
            .map_err(sio_r)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let g = self.lock();
        let last = g
            .entries
            .values()
            .next_back()
            .map(|s| s.log_id)
            .or(g.purged);
        Ok(LogState {
            last_purged_log_id: g.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let mut g = self.lock();
        write_small(&g.dir.join("vote"), vote).map_err(|e| {
            StorageError::from(StorageIOError::write_vote(AnyError::error(e.to_string())))
        })?;
        g.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut g = self.lock();
        match g.write(entries) {
            Ok(file) => {
                if let Err(std::sync::mpsc::SendError(job)) =
                    g.flusher.send(FlushJob { file, callback })
                {
                    let e = "raft log flusher stopped";
                    job.callback.log_io_completed(Err(std::io::Error::other(e)));
                    return Err(sio_w(e));
                }
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(sio_w(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock().truncate_from(log_id.index).map_err(sio_w)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock().purge_upto(log_id).map_err(sio_r)
    }
}
