//! The file store: a directory of hash-chained segment files.
//!
//! ```text
//! <dir>/log.toml                     log identity and shape (written once by `create`)
//! <dir>/LOCK                         flock held by the one writer
//! <dir>/checkpoint                   latest signed checkpoint note (atomic replace)
//! <dir>/segments/<s:020>.seg         segment s: header, frames, footer once sealed
//! <dir>/segments/<s:020>.idx         sealed: frame offsets, u64 BE per entry (mmap)
//! <dir>/segments/<s:020>.tree        sealed: every Merkle node of the segment, level by level (mmap)
//! ```
//!
//! Sealed segments are never rehashed at open: their footer, offset index and
//! node file are mapped and checked for shape. The open segment is scanned and
//! its torn tail (a write cut by a crash, never acknowledged) is cut.

use crate::entry::{self, EntryKind};
use crate::error::{LedgerError, Result};
use crate::segment::{self, Frame, SegmentFooter, SegmentHeader, Tail, FOOTER_LEN, HEADER_LEN};
use dlog_crypto::hash::chain_hash;
use dlog_crypto::tree::{self, AlgTree, Subtree};
use dlog_crypto::{Hash, HashAlg};
use memmap2::Mmap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Name of the log configuration file.
pub const LOG_FILE: &str = "log.toml";
/// Name of the stored checkpoint file.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// Name of the segment directory.
pub const SEGMENT_DIR: &str = "segments";
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Shape and identity of a log, fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogMeta {
    /// Store format version (1).
    pub format: u32,
    /// Random log identity, hex; every segment header carries it.
    pub log_id: String,
    /// Checkpoint origin line, e.g. `dlog/local`.
    pub origin: String,
    /// `k`: a sealed segment holds `2^k` entries.
    pub segment_bits: u8,
    /// Largest payload accepted, in bytes.
    pub max_payload: u32,
    /// The Merkle tree's hash; absent in logs made before the choice
    /// existed, which are BLAKE3.
    #[serde(default, skip_serializing_if = "is_blake3")]
    pub hash: HashAlg,
}

fn is_blake3(h: &HashAlg) -> bool {
    *h == HashAlg::Blake3
}

/// Options for [`Ledger::create`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Checkpoint origin line.
    pub origin: String,
    /// `k`, 1..=30 (default 16).
    pub segment_bits: u8,
    /// Payload limit (default 1 MiB).
    pub max_payload: u32,
    /// Log identity; `None` draws a random one. Replicas of one log share it,
    /// so their segment files are byte-identical.
    pub log_id: Option<[u8; 16]>,
    /// The Merkle tree's hash (default BLAKE3; SHA-256 makes the tree
    /// RFC 6962 exactly).
    pub hash: HashAlg,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            origin: "dlog/local".into(),
            segment_bits: 16,
            max_payload: entry::DEFAULT_MAX_PAYLOAD,
            log_id: None,
            hash: HashAlg::default(),
        }
    }
}

/// How to open a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Take the writer lock, repair a torn tail, allow appends.
    ReadWrite,
    /// Read only, no lock; a torn tail is ignored, not cut.
    ReadOnly,
}

/// A checkpoint stored beside the log (the note as signed, plus what it commits to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Tree size it covers.
    pub size: u64,
    /// Root hash at that size.
    pub root: Hash,
    /// The signed note, verbatim.
    pub note: String,
}

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Index of the first entry of the batch.
    pub first: u64,
    /// Number of entries.
    pub count: u64,
    /// Timestamp given to the entries.
    pub timestamp_ns: u64,
}

/// Right-edge subtree hashes `[start, size)` of one tree size.
struct EdgeCache {
    size: u64,
    hashes: Vec<(u64, Hash)>,
}

/// A sealed segment's bytes, for scrub.
pub(crate) struct SealedView<'a> {
    pub seg: &'a [u8],
    pub idx: &'a [u8],
    pub tree: std::borrow::Cow<'a, [u8]>,
    pub footer: &'a SegmentFooter,
}

/// The open segment's state, for scrub.
pub(crate) struct OpenView<'a> {
    pub path: &'a Path,
    pub header: &'a SegmentHeader,
    pub offsets: &'a [u64],
    pub tree: &'a AlgTree,
    pub len: u64,
}

struct Sealed {
    footer: SegmentFooter,
    seg: Mmap,
    idx: Bytes,
    nodes: Nodes,
}

/// Where a sealed segment's Merkle nodes are read from.
enum Nodes {
    /// The `.tree` file (or its in-memory rebuild), level by level.
    File(Bytes),
    /// Just sealed: the in-memory tree, while a background thread writes the
    /// side files (derived data: a crash before they land rebuilds them).
    Memory(Arc<AlgTree>),
}

impl Nodes {
    fn node(&self, bits: u8, level: u32, local: u64) -> Option<Hash> {
        match self {
            Nodes::File(b) => {
                let at = (tree_level_offset(bits, level) + local) as usize * 32;
                b.get(at..at + 32).map(|x| x.try_into().expect("32 bytes"))
            }
            Nodes::Memory(t) => t.node(level, local),
        }
    }
}

/// A background write of a just-sealed segment's side files.
struct PendingSidecars {
    segment: u64,
    job: std::thread::JoinHandle<Result<()>>,
}

/// Side-file bytes: mapped from disk, or rebuilt in memory by a read-only
/// open that found them missing after a crash (it may not write).
enum Bytes {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

struct OpenSegment {
    header: SegmentHeader,
    path: PathBuf,
    /// `None` only read-only, when a crash left the next segment uncreated.
    file: Option<File>,
    offsets: Vec<u64>,
    tree: AlgTree,
    len: u64,
}

/// Where a read-only open found the open segment damaged: a frame that
/// fails its checks with valid frames after it (not a torn tail).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// The open segment's number.
    pub segment: u64,
    /// Global index of the first unreadable entry: the log is served up
    /// to (not including) it.
    pub entry: u64,
    /// Byte offset of its frame in the segment file.
    pub offset: u64,
    /// The segment file.
    pub file: PathBuf,
    /// What is wrong.
    pub detail: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "segment {}, entry {} (byte {} of {}): {}",
            self.segment,
            self.entry,
            self.offset,
            self.file.display(),
            self.detail
        )
    }
}

/// A log on disk. Reads take `&self`; appends take `&mut self`.
pub struct Ledger {
    /// Damage in the open segment that a read-only open stopped at (the
    /// entries before it are served; see [`Ledger::damage`]).
    damage: Option<Damage>,
    dir: PathBuf,
    meta: LogMeta,
    log_id: [u8; 16],
    writable: bool,
    _lock: Option<File>,
    sealed: Vec<Sealed>,
    upper: AlgTree,
    open: OpenSegment,
    last_ts: u64,
    checkpoint: Option<StoredCheckpoint>,
    edge: Mutex<Option<EdgeCache>>,
    poisoned: Option<String>,
    /// Entries written by `append_unsynced` and not yet fsynced.
    unsynced: bool,
    /// A checkpoint stored in memory whose file is not yet written.
    checkpoint_unwritten: bool,
    pending: Vec<PendingSidecars>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // Let background side-file writes finish, so a clean exit leaves
        // complete files (a crash would only cost a rebuild at open).
        self.settle_sidecars(true);
        if let Err(e) = self.sync() {
            tracing::warn!(error = %e, "could not sync the open segment at close");
        }
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("dir", &self.dir)
            .field("size", &self.size())
            .field("sealed", &self.sealed.len())
            .finish()
    }
}

/// The open segment's file, or why there is none (read-only, not yet created).
fn open_file(f: &Option<File>) -> Result<&File> {
    f.as_ref().ok_or_else(|| {
        LedgerError::NotWritable(
            "the next segment file does not exist yet; open read-write once".into(),
        )
    })
}

pub(crate) fn seg_path(dir: &Path, s: u64, ext: &str) -> PathBuf {
    dir.join(SEGMENT_DIR).join(format!("{s:020}.{ext}"))
}

fn tree_file_len(bits: u8) -> u64 {
    ((2u64 << bits) - 1) * 32
}

/// Offset (in nodes) of `level` inside a segment's node file.
fn tree_level_offset(bits: u8, level: u32) -> u64 {
    (2u64 << bits) - (2u64 << (bits as u32 - level))
}

/// Fsyncs a directory, so entries created or renamed in it are durable.
pub fn fsync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(LedgerError::io("fsync directory", path))
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_file(path, |w| w.write_all(bytes))?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes `path` through `<name>.tmp` beside it: `fill` writes the bytes
/// (buffered), then the file is fsynced and renamed into place. The
/// directory is not fsynced (the caller does, once for several files).
fn replace_file(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let f = File::create(&tmp).map_err(LedgerError::io("create", &tmp))?;
    let mut w = std::io::BufWriter::with_capacity(64 << 10, f);
    fill(&mut w).map_err(LedgerError::io("write", &tmp))?;
    let f = w
        .into_inner()
        .map_err(|e| LedgerError::io("write", &tmp)(e.into_error()))?;
    f.sync_all().map_err(LedgerError::io("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(LedgerError::io("rename", path))
}

fn map(path: &Path) -> Result<Mmap> {
    let f = File::open(path).map_err(LedgerError::io("open", path))?;
    // SAFETY: segment files of a sealed segment are never modified in place by
    // DLog; a writer only creates new files. An outside process that rewrites
    // them is exactly the damage scrub looks for; reads re-check CRCs and hashes.
    unsafe { Mmap::map(&f) }.map_err(LedgerError::io("mmap", path))
}

fn lock(dir: &Path) -> Result<File> {
    crate::fsutil::lock_dir(dir)
}

/// Parses a log id as written in `log.toml`: 32 hex digits.
pub fn parse_log_id(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Ledger {
    /// Creates a new, empty log in `dir` (created if missing).
    pub fn create(dir: &Path, opts: &CreateOptions) -> Result<Ledger> {
        if !(1..=30).contains(&opts.segment_bits) {
            return Err(LedgerError::Config {
                path: dir.join(LOG_FILE),
                detail: format!("segment bits {} not in 1..=30", opts.segment_bits),
            });
        }
        if opts.origin.is_empty() || opts.origin.contains('\n') {
            return Err(LedgerError::Config {
                path: dir.join(LOG_FILE),
                detail: "origin must be one non-empty line".into(),
            });
        }
        fs::create_dir_all(dir).map_err(LedgerError::io("create directory", dir))?;
        if dir.join(LOG_FILE).exists() {
            return Err(LedgerError::AlreadyExists(dir.to_path_buf()));
        }
        let lock_file = lock(dir)?;
        let id = match opts.log_id {
            Some(id) => id,
            None => {
                let mut id = [0u8; 16];
                getrandom::fill(&mut id).map_err(|e| LedgerError::Io {
                    op: "getrandom",
                    path: dir.to_path_buf(),
                    cause: std::io::Error::other(e.to_string()),
                })?;
                id
            }
        };
        let meta = LogMeta {
            format: 1,
            log_id: id.iter().map(|b| format!("{b:02x}")).collect(),
            origin: opts.origin.clone(),
            segment_bits: opts.segment_bits,
            max_payload: opts.max_payload,
            hash: opts.hash,
        };
        let alg = opts.hash;
        let segdir = dir.join(SEGMENT_DIR);
        fs::create_dir_all(&segdir).map_err(LedgerError::io("create directory", &segdir))?;
        create_segment_file(
            dir,
            &SegmentHeader {
                log_id: id,
                segment: 0,
                bits: opts.segment_bits,
                prev_chain: [0; 32],
            },
            alg,
        )?;
        let text = toml::to_string(&meta).expect("log meta serializes");
        // log.toml last: its presence marks a complete log.
        write_atomic(&dir.join(LOG_FILE), text.as_bytes())?;
        Ledger::open_with(dir, OpenMode::ReadWrite, Some(lock_file))
    }

    /// Opens read-write under a lock the caller already holds.
    pub(crate) fn open_locked(dir: &Path, lock_file: File) -> Result<Ledger> {
        Ledger::open_with(dir, OpenMode::ReadWrite, Some(lock_file))
    }

    /// Opens an existing log; sub-second even with millions of entries.
    pub fn open(dir: &Path, mode: OpenMode) -> Result<Ledger> {
        Ledger::open_with(dir, mode, None)
    }

    /// `open`, keeping the writer lock `held` when the caller already has it.
    fn open_with(dir: &Path, mode: OpenMode, held: Option<File>) -> Result<Ledger> {
        let meta_path = dir.join(LOG_FILE);
        let text = match fs::read_to_string(&meta_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LedgerError::NotALog(dir.to_path_buf()))
            }
            Err(e) => return Err(LedgerError::io("read", &meta_path)(e)),
        };
        let config_err = |detail: String| LedgerError::Config {
            path: meta_path.clone(),
            detail,
        };
        let meta: LogMeta = toml::from_str(&text).map_err(|e| config_err(e.to_string()))?;
        if meta.format != 1 {
            return Err(config_err(format!("unsupported format {}", meta.format)));
        }
        if !(1..=30).contains(&meta.segment_bits) {
            return Err(config_err(format!(
                "segment_bits {} not in 1..=30",
                meta.segment_bits
            )));
        }
        let log_id = parse_log_id(&meta.log_id)
            .ok_or_else(|| config_err("log_id is not 32 hex digits".into()))?;
        let writable = mode == OpenMode::ReadWrite;
        let lock_file = match (writable, held) {
            (false, _) => None,
            (true, Some(f)) => Some(f),
            (true, None) => Some(lock(dir)?),
        };

        // Inventory the segment directory.
        let segdir = dir.join(SEGMENT_DIR);
        let mut segs: Vec<u64> = Vec::new();
        let rd = fs::read_dir(&segdir).map_err(LedgerError::io("read directory", &segdir))?;
        for ent in rd {
            let ent = ent.map_err(LedgerError::io("read directory", &segdir))?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, ""));
            let num = (stem.len() == 20)
                .then(|| stem.parse::<u64>().ok())
                .flatten();
            match (num, ext) {
                (Some(n), "seg") => segs.push(n),
                (Some(_), "idx" | "tree") => {}
                (_, "tmp") => {
                    if writable {
                        let _ = fs::remove_file(ent.path());
                    }
                }
                _ => return Err(LedgerError::ForeignFile(ent.path())),
            }
        }
        segs.sort_unstable();
        if segs.is_empty() {
            return Err(LedgerError::MissingSegment {
                segment: 0,
                path: seg_path(dir, 0, "seg"),
            });
        }
        for (i, &s) in segs.iter().enumerate() {
            if s != i as u64 {
                return Err(LedgerError::MissingSegment {
                    segment: i as u64,
                    path: seg_path(dir, i as u64, "seg"),
                });
            }
        }
        let bits = meta.segment_bits;
        let alg = meta.hash;
        let max_entry = meta
            .max_payload
            .saturating_add(entry::ENTRY_HEADER_LEN as u32);
        let mut sealed = Vec::with_capacity(segs.len());
        let mut upper = AlgTree::new(alg);
        let mut chain = [0u8; 32];
        let mut last_ts = 0u64;
        let last = segs.len() as u64 - 1;
        let mut open_seg = None;
        for s in 0..=last {
            let path = seg_path(dir, s, "seg");
            let expect = SegmentHeader {
                log_id,
                segment: s,
                bits,
                prev_chain: chain,
            };
            match open_sealed(dir, alg, &expect, max_entry, writable)? {
                Some(seal) => {
                    chain = seal.footer.chain;
                    upper.push(seal.footer.root);
                    sealed.push(seal);
                }
                None if s == last => open_seg = Some(path),
                None => {
                    return Err(LedgerError::Corrupt {
                        segment: s,
                        entry: None,
                        detail: "segment is not sealed but later segments exist".into(),
                    })
                }
            }
        }
        if let Some(seal) = sealed.last() {
            last_ts = last_timestamp(seal, sealed.len() as u64 - 1, bits, max_entry)?;
        }
        let next = sealed.len() as u64;
        let header = SegmentHeader {
            log_id,
            segment: next,
            bits,
            prev_chain: chain,
        };
        let (open, torn, damage) = match open_seg {
            Some(path) => open_unsealed(&path, alg, &header, max_entry, last_ts, writable)?,
            // A crash between sealing and creating the next segment: read-write
            // creates it; read-only sees an empty open segment.
            None if writable => (create_segment_file(dir, &header, alg)?, None, None),
            None => (
                OpenSegment {
                    header,
                    path: seg_path(dir, next, "seg"),
                    file: None,
                    offsets: Vec::new(),
                    tree: AlgTree::new(alg),
                    len: HEADER_LEN as u64,
                },
                None,
                None,
            ),
        };
        if let Some(ts) = open_ts(&open)? {
            last_ts = ts;
        }
        let mut ledger = Ledger {
            damage,
            dir: dir.to_path_buf(),
            meta,
            log_id,
            writable,
            _lock: lock_file,
            sealed,
            upper,
            open,
            last_ts,
            checkpoint: None,
            edge: Mutex::new(None),
            poisoned: None,
            unsynced: false,
            checkpoint_unwritten: false,
            pending: Vec::new(),
            buf: Vec::new(),
            scratch: Vec::new(),
        };
        ledger.checkpoint = ledger.load_checkpoint()?;
        if let Some(d) = &ledger.damage {
            // Read-only past damage: what the checkpoint covers beyond it is
            // unreadable here, which the damage already says.
            tracing::warn!(damage = %d, "serving the entries before damage (read-only)");
        } else if let Some(cp) = &ledger.checkpoint {
            // The log must still hold everything the last checkpoint covered.
            if let Some((valid_len, detail)) = &torn {
                if cp.size > ledger.size() {
                    return Err(LedgerError::Corrupt {
                        segment: ledger.open.header.segment,
                        entry: Some(ledger.size()),
                        detail: format!(
                            "entries up to {} are covered by the stored checkpoint but unreadable after byte {valid_len}: {detail}",
                            cp.size
                        ),
                    });
                }
            }
            ledger.check_checkpoint_matches(cp)?;
        }
        if let (Some((valid_len, detail)), true) = (torn, writable) {
            tracing::warn!(
                segment = ledger.open.header.segment,
                valid_len,
                %detail,
                "cutting torn tail left by a crash"
            );
            open_file(&ledger.open.file)?
                .set_len(valid_len)
                .map_err(LedgerError::io("truncate", &ledger.open.path))?;
            open_file(&ledger.open.file)?
                .sync_all()
                .map_err(LedgerError::io("fsync", &ledger.open.path))?;
        }
        if writable && ledger.open.offsets.len() as u64 == ledger.capacity() {
            ledger.seal()?;
        }
        Ok(ledger)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Log identity and shape.
    pub fn meta(&self) -> &LogMeta {
        &self.meta
    }

    /// Damage a read-only open stopped at, if any: [`Ledger::size`] then
    /// counts the entries before it, and reads past it fail naming it.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        ((self.sealed.len() as u64) << self.meta.segment_bits) + self.open.offsets.len() as u64
    }

    /// Entries per sealed segment.
    pub fn capacity(&self) -> u64 {
        1u64 << self.meta.segment_bits
    }

    /// Number of sealed segments.
    pub fn sealed_segments(&self) -> u64 {
        self.sealed.len() as u64
    }

    /// Chain hash of the last sealed segment (zeros when none is sealed).
    pub fn chain_head(&self) -> Hash {
        self.open.header.prev_chain
    }

    /// Timestamp of the last entry (0 for an empty log).
    pub fn last_timestamp(&self) -> u64 {
        self.last_ts
    }

    /// The latest stored checkpoint, if any.
    pub fn checkpoint(&self) -> Option<&StoredCheckpoint> {
        self.checkpoint.as_ref()
    }

    /// Appends a batch of entries durably: returns after `fdatasync`.
    ///
    /// Every entry gets timestamp `max(now_ns, last timestamp)`. The whole batch
    /// is checked before anything is written; an IO error leaves the log as it
    /// was (a failed fsync makes the log refuse further writes until reopened).
    pub fn append(&mut self, now_ns: u64, items: &[(EntryKind, &[u8])]) -> Result<Appended> {
        self.append_with(now_ns, items, true)
    }

    /// Appends a batch like [`Ledger::append`] but returns before `fdatasync`:
    /// the entries are written to the file (readable at once, and kept by a
    /// crash of this process) but only durable against power loss after the
    /// next [`Ledger::sync`] (or a segment seal, which syncs).
    ///
    /// For callers that hold the same entries in another durable log they
    /// replay after a power failure, such as a replicated node applying Raft
    /// entries that are already on disk.
    pub fn append_unsynced(
        &mut self,
        now_ns: u64,
        items: &[(EntryKind, &[u8])],
    ) -> Result<Appended> {
        self.append_with(now_ns, items, false)
    }

    /// Makes every entry appended so far durable (`fdatasync` of the open
    /// segment if [`Ledger::append_unsynced`] left anything unsynced), then
    /// writes a checkpoint [`Ledger::store_checkpoint_deferred`] left
    /// unwritten. A failed fsync makes the log refuse further writes until
    /// reopened.
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            if let Some(why) = &self.poisoned {
                return Err(LedgerError::NotWritable(why.clone()));
            }
            let path = self.open.path.clone();
            open_file(&self.open.file)?.sync_data().map_err(|e| {
                self.poisoned = Some(format!("fsync of {} failed: {e}", path.display()));
                LedgerError::io("fsync", &path)(e)
            })?;
            self.unsynced = false;
        }
        if self.checkpoint_unwritten {
            if let Some(cp) = &self.checkpoint {
                write_atomic(&self.dir.join(CHECKPOINT_FILE), cp.note.as_bytes())?;
            }
            self.checkpoint_unwritten = false;
        }
        Ok(())
    }

    fn append_with(
        &mut self,
        now_ns: u64,
        items: &[(EntryKind, &[u8])],
        durable: bool,
    ) -> Result<Appended> {
        if !self.writable {
            return Err(LedgerError::NotWritable("opened read-only".into()));
        }
        if let Some(why) = &self.poisoned {
            return Err(LedgerError::NotWritable(why.clone()));
        }
        if !self.pending.is_empty() {
            self.settle_sidecars(false);
        }
        for (_, p) in items {
            if p.len() > self.meta.max_payload as usize {
                return Err(LedgerError::PayloadTooLarge {
                    len: p.len(),
                    limit: self.meta.max_payload,
                });
            }
        }
        let ts = now_ns.max(self.last_ts);
        let first = self.size();
        let mut rest = items;
        while !rest.is_empty() {
            let room = (self.capacity() - self.open.offsets.len() as u64) as usize;
            let (chunk, tail) = rest.split_at(room.min(rest.len()));
            self.append_chunk(ts, chunk, durable)?;
            self.last_ts = ts;
            rest = tail;
            if self.open.offsets.len() as u64 == self.capacity() {
                self.seal()?;
            }
        }
        Ok(Appended {
            first,
            count: items.len() as u64,
            timestamp_ns: ts,
        })
    }

    fn append_chunk(&mut self, ts: u64, chunk: &[(EntryKind, &[u8])], durable: bool) -> Result<()> {
        /// Chunks at least this large write and fsync on a second thread
        /// while this one hashes, so the disk and the CPU work at once.
        const OVERLAP_MIN: usize = 256;
        let start_len = self.open.len;
        let start_count = self.open.offsets.len();
        let base = self.size();
        self.buf.clear();
        // Frame every entry; remember where each entry's bytes are in `buf`.
        let mut spans = Vec::with_capacity(chunk.len());
        for (i, (kind, payload)) in chunk.iter().enumerate() {
            self.scratch.clear();
            entry::encode_into(&mut self.scratch, *kind, ts, payload);
            self.open.offsets.push(start_len + self.buf.len() as u64);
            let at = self.buf.len() + segment::FRAME_HEADER_LEN;
            segment::encode_frame(&mut self.buf, base + i as u64, &self.scratch);
            spans.push(at..self.buf.len());
        }
        let file = open_file(&self.open.file)?;
        let buf = &self.buf;
        let tree = &mut self.open.tree;
        let hash_all = |tree: &mut AlgTree| {
            let alg = tree.alg();
            for span in &spans {
                tree.push(alg.hash_leaf(&buf[span.clone()]));
            }
        };
        let write = |file: &File| -> std::result::Result<(), (&'static str, std::io::Error)> {
            file.write_all_at(buf, start_len)
                .map_err(|e| ("write", e))?;
            if durable {
                file.sync_data().map_err(|e| ("fsync", e))?;
            }
            Ok(())
        };
        let outcome = if durable && chunk.len() >= OVERLAP_MIN {
            std::thread::scope(|scope| {
                let io = scope.spawn(|| write(file));
                hash_all(tree);
                io.join().unwrap_or_else(|_| {
                    Err(("write", std::io::Error::other("writer thread panicked")))
                })
            })
        } else {
            hash_all(tree);
            write(file)
        };
        match outcome {
            Ok(()) => {
                self.open.len = start_len + self.buf.len() as u64;
                self.unsynced |= !durable;
                Ok(())
            }
            Err((op, e)) => {
                if op == "fsync" {
                    // After a failed fsync the kernel may have dropped dirty
                    // pages: the file's state is unknown. Stop writing;
                    // reopening recovers from what is really on disk.
                    self.poisoned =
                        Some(format!("fsync of {} failed: {e}", self.open.path.display()));
                }
                self.rollback(start_len, start_count);
                Err(LedgerError::io(op, &self.open.path)(e))
            }
        }
    }

    fn rollback(&mut self, len: u64, count: usize) {
        if let Some(f) = &self.open.file {
            let _ = f.set_len(len);
        }
        self.open.offsets.truncate(count);
        self.open.tree.truncate(count as u64);
    }

    /// Seals the full open segment: footer, offset index, node file, next segment.
    fn seal(&mut self) -> Result<()> {
        let s = self.open.header.segment;
        let root = self.open.tree.root();
        let chain = chain_hash(s, &root, &self.open.header.prev_chain);
        let footer = SegmentFooter {
            count: self.capacity(),
            root,
            chain,
        };
        let path = self.open.path.clone();
        open_file(&self.open.file)?
            .write_all_at(&footer.encode(), self.open.len)
            .map_err(LedgerError::io("write", &path))?;
        open_file(&self.open.file)?.sync_data().map_err(|e| {
            self.poisoned = Some(format!("fsync of {} failed: {e}", path.display()));
            LedgerError::io("fsync", &path)(e)
        })?;
        self.unsynced = false;
        self.open.len += FOOTER_LEN as u64;
        let next = SegmentHeader {
            log_id: self.log_id,
            segment: s + 1,
            bits: self.meta.segment_bits,
            prev_chain: chain,
        };
        let new_open = create_segment_file(&self.dir, &next, self.meta.hash)?;
        let old = std::mem::replace(&mut self.open, new_open);
        // The side files are derived data: write them off the append path.
        let tree = Arc::new(old.tree);
        let (dir, bits, offsets, for_job) = (
            self.dir.clone(),
            self.meta.segment_bits,
            old.offsets,
            tree.clone(),
        );
        let idx = idx_bytes(&offsets);
        let job = std::thread::Builder::new()
            .name(format!("dlog-seal-{s}"))
            .spawn(move || write_sidecars(&dir, s, bits, &offsets, &for_job))
            .map_err(LedgerError::io("spawn side-file writer for", &path))?;
        self.pending.push(PendingSidecars { segment: s, job });
        self.sealed.push(Sealed {
            footer,
            seg: map(&path)?,
            idx: Bytes::Owned(idx),
            nodes: Nodes::Memory(tree),
        });
        self.upper.push(root);
        Ok(())
    }

    /// Swaps finished background side-file writes in for their in-memory
    /// trees; `wait` joins them all (on drop).
    fn settle_sidecars(&mut self, wait: bool) {
        let mut i = 0;
        while i < self.pending.len() {
            if !wait && !self.pending[i].job.is_finished() {
                i += 1;
                continue;
            }
            let p = self.pending.swap_remove(i);
            let s = p.segment;
            let outcome = p.job.join().unwrap_or_else(|_| {
                Err(LedgerError::NotWritable("side-file writer panicked".into()))
            });
            let mapped = outcome.and_then(|()| {
                Ok((
                    map(&seg_path(&self.dir, s, "idx"))?,
                    map(&seg_path(&self.dir, s, "tree"))?,
                ))
            });
            match mapped {
                Ok((idx, tree)) => {
                    let seal = &mut self.sealed[s as usize];
                    let root_at = (tree_file_len(self.meta.segment_bits) - 32) as usize;
                    if tree.len() as u64 == tree_file_len(self.meta.segment_bits)
                        && tree[root_at..] == seal.footer.root
                    {
                        seal.idx = Bytes::Map(idx);
                        seal.nodes = Nodes::File(Bytes::Map(tree));
                    }
                }
                // Derived data: keep serving from memory; the next open rebuilds it.
                Err(e) => tracing::warn!(segment = s, error = %e, "could not write side files"),
            }
        }
    }

    /// Canonical bytes of entry `index`, checked against its CRC and its leaf hash.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>> {
        let size = self.size();
        if let Some(d) = self.damage.as_ref().filter(|_| index >= size) {
            return Err(LedgerError::Corrupt {
                segment: d.segment,
                entry: Some(index),
                detail: format!(
                    "unreadable: the open segment is damaged at entry {} ({}); entries before it are intact",
                    d.entry, d.detail
                ),
            });
        }
        if index >= size {
            return Err(LedgerError::NoSuchEntry { index, size });
        }
        let bits = self.meta.segment_bits;
        let s = index >> bits;
        let local = index - (s << bits);
        let max_entry = self
            .meta
            .max_payload
            .saturating_add(entry::ENTRY_HEADER_LEN as u32);
        let corrupt = |detail: String| LedgerError::Corrupt {
            segment: s,
            entry: Some(index),
            detail,
        };
        let bytes = if let Some(seal) = self.sealed.get(s as usize) {
            let off = read_u64(&seal.idx, local as usize)
                .ok_or_else(|| corrupt("offset index is short".into()))?;
            match segment::read_frame(&seal.seg, off as usize, index, max_entry) {
                Frame::Entry { entry, .. } => entry.to_vec(),
                Frame::Invalid { detail, .. } => return Err(corrupt(detail)),
                other => return Err(corrupt(format!("no frame at byte {off}: {other:?}"))),
            }
        } else {
            // The frame ends where the next one starts (or at the valid end):
            // one read of exactly the frame.
            let off = self.open.offsets[local as usize];
            let end = self
                .open
                .offsets
                .get(local as usize + 1)
                .copied()
                .unwrap_or(self.open.len);
            let mut frame = vec![0u8; (end - off) as usize];
            open_file(&self.open.file)?
                .read_exact_at(&mut frame, off)
                .map_err(LedgerError::io("read", &self.open.path))?;
            match segment::read_frame(&frame, 0, index, max_entry) {
                Frame::Entry { entry, .. } => entry.to_vec(),
                Frame::Invalid { detail, .. } => return Err(corrupt(detail)),
                other => return Err(corrupt(format!("no frame at byte {off}: {other:?}"))),
            }
        };
        if self.meta.hash.hash_leaf(&bytes) != self.leaf_hash(index)? {
            return Err(corrupt("entry does not match its stored leaf hash".into()));
        }
        Ok(bytes)
    }

    /// The stored leaf hash of entry `index`.
    pub fn leaf_hash(&self, index: u64) -> Result<Hash> {
        let size = self.size();
        if index >= size {
            return Err(LedgerError::NoSuchEntry { index, size });
        }
        self.node(0, index)
    }

    /// The perfect Merkle node `(level, index)` of the global tree.
    pub fn node(&self, level: u32, index: u64) -> Result<Hash> {
        let bits = self.meta.segment_bits as u32;
        if level > bits {
            return self
                .upper
                .node(level - bits, index)
                .ok_or(LedgerError::NoSuchEntry {
                    index: index << level,
                    size: self.size(),
                });
        }
        let s = (index << level) >> bits;
        let local = index - (s << (bits - level));
        if let Some(seal) = self.sealed.get(s as usize) {
            return seal.nodes.node(self.meta.segment_bits, level, local).ok_or(
                LedgerError::Corrupt {
                    segment: s,
                    entry: None,
                    detail: "node file is short".into(),
                },
            );
        }
        self.open
            .tree
            .node(level, local)
            .ok_or(LedgerError::NoSuchEntry {
                index: index << level,
                size: self.size(),
            })
    }

    /// Hash of a proof subtree; right-edge subtrees of the current size come from a cache.
    fn subtree(&self, st: Subtree, size: u64) -> Result<Hash> {
        if let Some((level, index)) = st.as_perfect() {
            return self.node(level, index);
        }
        if st.end == size && size == self.size() {
            let mut edge = self.edge.lock().unwrap_or_else(|p| p.into_inner());
            if edge.as_ref().map(|e| e.size) != Some(size) {
                *edge = Some(EdgeCache {
                    size,
                    hashes: self.edge_hashes(size)?,
                });
            }
            let cache = edge.as_ref().expect("just filled");
            if let Some((_, h)) = cache.hashes.iter().find(|(start, _)| *start == st.start) {
                return Ok(*h);
            }
        }
        tree::hash_subtree_with(self.meta.hash, st, |l, i| self.node(l, i))
    }

    /// Hashes of every right-edge subtree `[start, size)` along the tree's right edge.
    fn edge_hashes(&self, size: u64) -> Result<Vec<(u64, Hash)>> {
        let parts: Vec<(u32, u64)> = Subtree {
            start: 0,
            end: size,
        }
        .perfect_parts()
        .collect();
        let mut out = Vec::with_capacity(parts.len());
        let mut acc: Option<Hash> = None;
        for &(level, index) in parts.iter().rev() {
            let h = self.node(level, index)?;
            let v = match acc {
                None => h,
                Some(a) => self.meta.hash.hash_children(&h, &a),
            };
            out.push((index << level, v));
            acc = Some(v);
        }
        Ok(out)
    }

    /// Root of the tree of the first `size` entries.
    pub fn root_at(&self, size: u64) -> Result<Hash> {
        if size > self.size() {
            return Err(LedgerError::NoSuchEntry {
                index: size,
                size: self.size(),
            });
        }
        if size == 0 {
            return Ok(self.meta.hash.empty_root());
        }
        self.subtree(
            Subtree {
                start: 0,
                end: size,
            },
            size,
        )
    }

    /// Root of the whole log.
    pub fn root(&self) -> Result<Hash> {
        self.root_at(self.size())
    }

    /// Inclusion proof of entry `index` in the tree of size `size`; reads no payloads.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        if size > self.size() {
            return Err(LedgerError::NoSuchEntry {
                index: size,
                size: self.size(),
            });
        }
        let path = tree::inclusion_path(index, size)?;
        path.iter().map(|&st| self.subtree(st, size)).collect()
    }

    /// Consistency proof between tree sizes `old` and `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        if new > self.size() {
            return Err(LedgerError::NoSuchEntry {
                index: new,
                size: self.size(),
            });
        }
        let path = tree::consistency_path(old, new)?;
        path.iter().map(|&st| self.subtree(st, new)).collect()
    }

    /// Stores a signed checkpoint after checking it commits to this log's tree,
    /// and that it does not go backwards. `size`/`root` are what the note says.
    pub fn store_checkpoint(&mut self, size: u64, root: Hash, note: &str) -> Result<()> {
        self.store_checkpoint_deferred(size, root, note)?;
        self.sync()
    }

    /// Like [`Ledger::store_checkpoint`], but the checkpoint file is written
    /// by the next [`Ledger::sync`] (or at close); [`Ledger::checkpoint`]
    /// returns it at once. For a replica that gets every checkpoint again
    /// from its Raft log after a crash.
    pub fn store_checkpoint_deferred(&mut self, size: u64, root: Hash, note: &str) -> Result<()> {
        if !self.writable {
            return Err(LedgerError::NotWritable("opened read-only".into()));
        }
        let cp = StoredCheckpoint {
            size,
            root,
            note: note.to_string(),
        };
        self.check_checkpoint_matches(&cp)?;
        if let Some(prev) = &self.checkpoint {
            if prev.size > size {
                return Err(LedgerError::Checkpoint(format!(
                    "size {size} is older than the stored checkpoint's {}",
                    prev.size
                )));
            }
        }
        // Written by `sync`, after the entries it covers are durable.
        self.checkpoint = Some(cp);
        self.checkpoint_unwritten = true;
        Ok(())
    }

    fn check_checkpoint_matches(&self, cp: &StoredCheckpoint) -> Result<()> {
        if cp.size > self.size() {
            return Err(LedgerError::Checkpoint(format!(
                "checkpoint covers {} entries but the log holds {}",
                cp.size,
                self.size()
            )));
        }
        let ours = self.root_at(cp.size)?;
        if ours != cp.root {
            return Err(LedgerError::Checkpoint(format!(
                "checkpoint root for size {} differs from the log's own root",
                cp.size
            )));
        }
        Ok(())
    }

    fn load_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        let path = self.dir.join(CHECKPOINT_FILE);
        let note = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LedgerError::io("read", &path)(e)),
        };
        let cp =
            dlog_crypto::note::Checkpoint::from_note(&note).map_err(|e| LedgerError::Config {
                path: path.clone(),
                detail: format!("not a checkpoint note (origin, size, root lines): {e}"),
            })?;
        Ok(Some(StoredCheckpoint {
            size: cp.size,
            root: cp.root,
            note,
        }))
    }

    pub(crate) fn sealed_view(&self, s: u64) -> Option<SealedView<'_>> {
        self.sealed.get(s as usize).map(|x| SealedView {
            seg: &x.seg,
            idx: &x.idx,
            tree: match &x.nodes {
                Nodes::File(b) => std::borrow::Cow::Borrowed(&b[..]),
                Nodes::Memory(t) => std::borrow::Cow::Owned(tree_bytes(self.meta.segment_bits, t)),
            },
            footer: &x.footer,
        })
    }

    /// The open segment for scrub; `None` when a crash left it uncreated or
    /// headerless (read-only view: it holds no entry).
    pub(crate) fn open_view(&self) -> Option<OpenView<'_>> {
        self.open.file.as_ref()?;
        Some(OpenView {
            path: &self.open.path,
            header: &self.open.header,
            offsets: &self.open.offsets,
            tree: &self.open.tree,
            len: self.open.len,
        })
    }

    pub(crate) fn segment_path(&self, s: u64, ext: &str) -> PathBuf {
        seg_path(&self.dir, s, ext)
    }
}

fn read_u64(b: &[u8], i: usize) -> Option<u64> {
    b.get(i * 8..i * 8 + 8)
        .map(|x| u64::from_be_bytes(x.try_into().expect("8 bytes")))
}

fn create_segment_file(dir: &Path, header: &SegmentHeader, alg: HashAlg) -> Result<OpenSegment> {
    let path = seg_path(dir, header.segment, "seg");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(LedgerError::io("create", &path))?;
    file.write_all_at(&header.encode(), 0)
        .map_err(LedgerError::io("write", &path))?;
    file.sync_all().map_err(LedgerError::io("fsync", &path))?;
    fsync_dir(&dir.join(SEGMENT_DIR))?;
    Ok(OpenSegment {
        header: *header,
        path,
        file: Some(file),
        offsets: Vec::new(),
        tree: AlgTree::new(alg),
        len: HEADER_LEN as u64,
    })
}

/// The bytes of a sealed segment's `.idx` file.
fn idx_bytes(offsets: &[u64]) -> Vec<u8> {
    let mut idx = Vec::with_capacity(offsets.len() * 8);
    for o in offsets {
        idx.extend_from_slice(&o.to_be_bytes());
    }
    idx
}

/// The levels of a full segment's tree, leaves first: what its `.tree` file
/// holds, level by level.
fn full_levels(bits: u8, tree: &AlgTree) -> impl Iterator<Item = &[u8]> {
    (0..=bits as u32).map(move |level| {
        let nodes = tree.level(level);
        debug_assert_eq!(nodes.len() as u64, 1u64 << (bits as u32 - level));
        nodes.as_flattened()
    })
}

/// The bytes of a sealed segment's `.tree` file: every node, level by level.
fn tree_bytes(bits: u8, tree: &AlgTree) -> Vec<u8> {
    full_levels(bits, tree).collect::<Vec<_>>().concat()
}

/// Writes a sealed segment's `.idx` and `.tree` files straight from the
/// offsets and the in-memory tree (no intermediate copy: a `.tree` is 4 MiB
/// at the default `k`, and building it in a fresh buffer cost page faults
/// on every seal).
fn write_sidecars(dir: &Path, s: u64, bits: u8, offsets: &[u64], tree: &AlgTree) -> Result<()> {
    replace_file(&seg_path(dir, s, "idx"), |w| {
        offsets
            .iter()
            .try_for_each(|o| w.write_all(&o.to_be_bytes()))
    })?;
    replace_file(&seg_path(dir, s, "tree"), |w| {
        full_levels(bits, tree).try_for_each(|level| w.write_all(level))
    })?;
    fsync_dir(&dir.join(SEGMENT_DIR))
}

/// Opens segment `expect.segment` if it is sealed; `None` if it has no footer.
/// Returns the mapped segment.
fn open_sealed(
    dir: &Path,
    alg: HashAlg,
    expect: &SegmentHeader,
    max_entry: u32,
    writable: bool,
) -> Result<Option<Sealed>> {
    let s = expect.segment;
    let path = seg_path(dir, s, "seg");
    let corrupt = |detail: String| LedgerError::Corrupt {
        segment: s,
        entry: None,
        detail,
    };
    let f = File::open(&path).map_err(LedgerError::io("open", &path))?;
    let len = f.metadata().map_err(LedgerError::io("stat", &path))?.len();
    let mut head = [0u8; HEADER_LEN];
    if len < HEADER_LEN as u64 {
        return Ok(None);
    }
    f.read_exact_at(&mut head, 0)
        .map_err(LedgerError::io("read", &path))?;
    let header = SegmentHeader::decode(&head).map_err(|e| corrupt(e.to_string()))?;
    check_header(&header, expect).map_err(corrupt)?;
    if len < (HEADER_LEN + FOOTER_LEN) as u64 {
        return Ok(None);
    }
    let mut foot = [0u8; FOOTER_LEN];
    f.read_exact_at(&mut foot, len - FOOTER_LEN as u64)
        .map_err(LedgerError::io("read", &path))?;
    let Ok(footer) = SegmentFooter::decode(&foot) else {
        return Ok(None);
    };
    if footer.count != expect.capacity() {
        return Err(corrupt(format!("footer counts {} entries", footer.count)));
    }
    if footer.chain != chain_hash(s, &footer.root, &expect.prev_chain) {
        return Err(corrupt(
            "footer chain hash does not follow from root and previous chain".into(),
        ));
    }
    let seg = map(&path)?;
    let idx_path = seg_path(dir, s, "idx");
    let tree_path = seg_path(dir, s, "tree");
    // Shape checks read with pread, not through the maps: touching a map
    // faults in pages around the touch, and open must stay light.
    let sidecars_ok = || -> Option<(Mmap, Mmap)> {
        let idx_len = fs::metadata(&idx_path).ok()?.len();
        let tree_file = File::open(&tree_path).ok()?;
        let tree_len = tree_file.metadata().ok()?.len();
        let mut root = [0u8; 32];
        tree_file
            .read_exact_at(&mut root, tree_len.checked_sub(32)?)
            .ok()?;
        if idx_len != expect.capacity() * 8
            || tree_len != tree_file_len(expect.bits)
            || root != footer.root
        {
            return None;
        }
        Some((map(&idx_path).ok()?, map(&tree_path).ok()?))
    };
    let (idx, tree) = match sidecars_ok() {
        Some((idx, tree)) => (Bytes::Map(idx), Bytes::Map(tree)),
        None => {
            // A crash between footer and side files, or a damaged side file:
            // rebuild them from the segment, which must match its footer.
            tracing::warn!(segment = s, "rebuilding offset index and node file");
            let scan =
                segment::scan_with(alg, &seg, max_entry, 0).map_err(|e| corrupt(e.to_string()))?;
            let tree = AlgTree::from_leaves(alg, scan.leaves.iter().copied());
            if !matches!(scan.tail, Tail::Sealed(_)) || tree.root() != footer.root {
                return Err(corrupt("entries do not hash to the footer's root".into()));
            }
            if writable {
                write_sidecars(dir, s, expect.bits, &scan.offsets, &tree)?;
                (Bytes::Map(map(&idx_path)?), Bytes::Map(map(&tree_path)?))
            } else {
                (
                    Bytes::Owned(idx_bytes(&scan.offsets)),
                    Bytes::Owned(tree_bytes(expect.bits, &tree)),
                )
            }
        }
    };
    Ok(Some(Sealed {
        footer,
        seg,
        idx,
        nodes: Nodes::File(tree),
    }))
}

/// Timestamp of a sealed segment's last entry.
fn last_timestamp(seal: &Sealed, s: u64, bits: u8, max_entry: u32) -> Result<u64> {
    let cap = 1u64 << bits;
    let corrupt = |detail: &str| LedgerError::Corrupt {
        segment: s,
        entry: Some(((s + 1) << bits) - 1),
        detail: detail.into(),
    };
    let off =
        read_u64(&seal.idx, cap as usize - 1).ok_or_else(|| corrupt("offset index is short"))?;
    match segment::read_frame(&seal.seg, off as usize, ((s + 1) << bits) - 1, max_entry) {
        Frame::Entry { entry, .. } => Ok(u64::from_be_bytes(
            entry[2..10].try_into().expect("8 bytes"),
        )),
        _ => Err(corrupt("last entry unreadable")),
    }
}

fn check_header(h: &SegmentHeader, expect: &SegmentHeader) -> std::result::Result<(), String> {
    if h.log_id != expect.log_id {
        return Err("segment belongs to another log".into());
    }
    if h.segment != expect.segment {
        return Err(format!("header says segment {}", h.segment));
    }
    if h.bits != expect.bits {
        return Err(format!("header says {} segment bits", h.bits));
    }
    if h.prev_chain != expect.prev_chain {
        return Err("previous chain hash does not match the previous segment's footer".into());
    }
    Ok(())
}

type Torn = Option<(u64, String)>;

fn open_unsealed(
    path: &Path,
    alg: HashAlg,
    expect: &SegmentHeader,
    max_entry: u32,
    min_ts: u64,
    writable: bool,
) -> Result<(OpenSegment, Torn, Option<Damage>)> {
    let s = expect.segment;
    let corrupt = |detail: String| LedgerError::Corrupt {
        segment: s,
        entry: None,
        detail,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(LedgerError::io("open", path))?;
    let len = file
        .metadata()
        .map_err(LedgerError::io("stat", path))?
        .len();
    // A crash while creating the file leaves it shorter than a header, or
    // (power loss) a header-sized hole: either way it holds no entry yet.
    let torn_creation = len < HEADER_LEN as u64 || {
        let mut head = [0u8; HEADER_LEN];
        len == HEADER_LEN as u64
            && file.read_exact_at(&mut head, 0).is_ok()
            && SegmentHeader::decode(&head).is_err()
    };
    if torn_creation {
        let file = if writable {
            file.write_all_at(&expect.encode(), 0)
                .map_err(LedgerError::io("write", path))?;
            file.set_len(HEADER_LEN as u64)
                .map_err(LedgerError::io("truncate", path))?;
            file.sync_all().map_err(LedgerError::io("fsync", path))?;
            Some(file)
        } else {
            None
        };
        return Ok((
            OpenSegment {
                header: *expect,
                path: path.to_path_buf(),
                file,
                offsets: Vec::new(),
                tree: AlgTree::new(alg),
                len: HEADER_LEN as u64,
            },
            None,
            None,
        ));
    }
    // SAFETY: see `map`; the mapping is dropped before anything writes the file.
    let bytes = unsafe { Mmap::map(&file) }.map_err(LedgerError::io("mmap", path))?;
    let mut damage = None;
    let scan = match segment::scan_with(alg, &bytes, max_entry, min_ts) {
        Ok(scan) => scan,
        // Read-only: serve the frames before the damage (a reader must not
        // lose every intact entry to one bad byte); a writer refuses.
        Err(segment::SegmentError::Damaged {
            index,
            offset,
            detail,
        }) if !writable && offset as usize <= bytes.len() => {
            let prefix = segment::scan_with(alg, &bytes[..offset as usize], max_entry, min_ts)
                .map_err(|e| corrupt(e.to_string()))?;
            damage = Some(Damage {
                segment: s,
                entry: index,
                offset,
                file: path.to_path_buf(),
                detail,
            });
            prefix
        }
        Err(segment::SegmentError::Damaged { index, detail, .. }) => {
            return Err(LedgerError::Corrupt {
                segment: s,
                entry: Some(index),
                detail: format!(
                    "{detail} (valid entries follow it; reads of the entries before it still work; `dlog scrub` names all the damage, `dlog repair` mends it)"
                ),
            })
        }
        Err(other) => return Err(corrupt(other.to_string())),
    };
    drop(bytes);
    check_header(&scan.header, expect).map_err(corrupt)?;
    let (valid_len, torn) = match scan.tail {
        Tail::Clean => (len, None),
        Tail::Torn { valid_len, detail } => (valid_len, Some((valid_len, detail))),
        Tail::Sealed(_) => return Err(corrupt("sealed segment with a damaged side file".into())),
    };
    let (valid_len, torn) = match &damage {
        Some(d) => (d.offset, None),
        None => (valid_len, torn),
    };
    Ok((
        OpenSegment {
            header: *expect,
            path: path.to_path_buf(),
            file: Some(file),
            offsets: scan.offsets,
            tree: AlgTree::from_leaves(alg, scan.leaves),
            len: valid_len,
        },
        torn,
        damage,
    ))
}

fn open_ts(open: &OpenSegment) -> Result<Option<u64>> {
    let Some(&off) = open.offsets.last() else {
        return Ok(None);
    };
    let mut ts = [0u8; 8];
    open_file(&open.file)?
        .read_exact_at(&mut ts, off + segment::FRAME_HEADER_LEN as u64 + 2)
        .map_err(LedgerError::io("read", &open.path))?;
    Ok(Some(u64::from_be_bytes(ts)))
}
