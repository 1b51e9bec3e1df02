//! C2SP tlog-tiles: the log as static files any web server, object store
//! or CDN can publish.
//!
//! ```text
//! DIR/checkpoint                    the signed checkpoint the tiles are of (written last)
//! DIR/tile/<L>/<N>[.p/<W>]          hash tiles: W (256 when full) hashes of tree level 8·L
//! DIR/tile/entries/<N>[.p/<W>]      entry bundles: the canonical entry bytes of the leaves,
//!                                   each after its big-endian u16 length
//! ```
//!
//! `<N>` is written in groups of three digits, all but the last with an
//! `x` before them (1234067 is `x001/x234/067`). A full tile never changes
//! and is written once; a partial one (`.p/<W>`) is replaced by a wider one
//! as the log grows. The pure part ([`TilePath`], [`tiles_of`],
//! [`parse_hash_tile`], [`parse_bundle`], [`encode_bundle_entry`]) does no IO;
//! [`export`] and [`verify`] read and write a directory.

use std::fs;
use std::path::{Path, PathBuf};

use dlog_crypto::tree::AlgTree;
use dlog_crypto::{Hash, HashAlg};

use crate::error::{LedgerError, Result};
use crate::store::Ledger;

/// Hashes per full tile (tile height 8).
pub const TILE_WIDTH: u64 = 256;
/// Tree levels per tile level.
pub const TILE_HEIGHT: u32 = 8;
/// The largest entry an entry bundle can carry (u16 length).
pub const MAX_BUNDLE_ENTRY: usize = u16::MAX as usize;

/// Which tile a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// Hashes of tree level `8 · level`.
    Hashes {
        /// Tile level.
        level: u8,
    },
    /// An entry bundle (the leaves of level-0 tile `index`).
    Entries,
}

/// A tile: its kind, index within its level, and width (1..=256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TilePath {
    /// Hash tile or entry bundle.
    pub kind: TileKind,
    /// Index within the level.
    pub index: u64,
    /// Hashes (or entries) it holds; 256 for a full tile.
    pub width: u16,
}

/// Why a tile path or a tile's bytes are not what they must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TileError(pub String);

impl TilePath {
    /// The path relative to the tiles directory.
    pub fn path(&self) -> String {
        let mut s = String::from("tile/");
        match self.kind {
            TileKind::Hashes { level } => s.push_str(&level.to_string()),
            TileKind::Entries => s.push_str("entries"),
        }
        s.push('/');
        s.push_str(&encode_index(self.index));
        if u64::from(self.width) < TILE_WIDTH {
            s.push_str(&format!(".p/{}", self.width));
        }
        s
    }

    /// Whether it is full (never changes again).
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// Parses a path made by [`TilePath::path`], strictly: every other
    /// spelling of the same tile is refused.
    pub fn parse(path: &str) -> std::result::Result<TilePath, TileError> {
        let bad = |why: &str| TileError(format!("tile path {path:?}: {why}"));
        let rest = path
            .strip_prefix("tile/")
            .ok_or_else(|| bad("not under tile/"))?;
        let (kind_s, rest) = rest.split_once('/').ok_or_else(|| bad("no index"))?;
        let kind = if kind_s == "entries" {
            TileKind::Entries
        } else {
            let level: u8 = parse_digits(kind_s).ok_or_else(|| bad("bad level"))?;
            if level > 63 {
                return Err(bad("level over 63"));
            }
            TileKind::Hashes { level }
        };
        let (index_s, width) = match rest.split_once(".p/") {
            Some((i, w)) => {
                let w: u16 = parse_digits(w).ok_or_else(|| bad("bad width"))?;
                if w == 0 || u64::from(w) >= TILE_WIDTH {
                    return Err(bad("a partial width must be 1..=255"));
                }
                (i, w)
            }
            None => (rest, TILE_WIDTH as u16),
        };
        let index = decode_index(index_s).ok_or_else(|| bad("bad index"))?;
        let t = TilePath { kind, index, width };
        if t.path() != path {
            return Err(bad("not in canonical form"));
        }
        Ok(t)
    }
}

fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `1234067` as `x001/x234/067`.
fn encode_index(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

fn decode_index(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split('/').collect();
    let mut n: u64 = 0;
    for (i, p) in parts.iter().enumerate() {
        let digits = if i + 1 < parts.len() {
            p.strip_prefix('x')?
        } else {
            p
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n = n
            .checked_mul(1000)?
            .checked_add(digits.parse::<u64>().ok()?)?;
    }
    Some(n)
}

/// Every tile of a tree of `size` leaves: hash tiles level by level, then
/// the entry bundles; partial tiles last in each level.
pub fn tiles_of(size: u64) -> Vec<TilePath> {
    let mut out = Vec::new();
    let mut level = 0u8;
    loop {
        let nodes = size >> (TILE_HEIGHT * u32::from(level));
        if nodes == 0 {
            break;
        }
        push_level(&mut out, TileKind::Hashes { level }, nodes);
        level += 1;
    }
    push_level(&mut out, TileKind::Entries, size);
    out
}

fn push_level(out: &mut Vec<TilePath>, kind: TileKind, nodes: u64) {
    for index in 0..nodes.div_ceil(TILE_WIDTH) {
        let width = (nodes - index * TILE_WIDTH).min(TILE_WIDTH) as u16;
        out.push(TilePath { kind, index, width });
    }
}

/// The hashes of a hash tile of `width`.
pub fn parse_hash_tile(bytes: &[u8], width: u16) -> std::result::Result<Vec<Hash>, TileError> {
    if bytes.len() != usize::from(width) * 32 {
        return Err(TileError(format!(
            "{} bytes, a tile of {width} hashes has {}",
            bytes.len(),
            usize::from(width) * 32
        )));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect())
}

/// The entries of a bundle of `width` entries.
pub fn parse_bundle(bytes: &[u8], width: u16) -> std::result::Result<Vec<&[u8]>, TileError> {
    let mut out = Vec::with_capacity(usize::from(width));
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 2 {
            return Err(TileError("a length cut short".into()));
        }
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let Some(entry) = rest.get(2..2 + n) else {
            return Err(TileError(format!(
                "entry {} says {n} bytes, {} are left",
                out.len(),
                rest.len() - 2
            )));
        };
        out.push(entry);
        rest = &rest[2 + n..];
    }
    if out.len() != usize::from(width) {
        return Err(TileError(format!(
            "{} entries, the bundle must hold {width}",
            out.len()
        )));
    }
    Ok(out)
}

/// Appends one entry, after its length, to a bundle.
pub fn encode_bundle_entry(out: &mut Vec<u8>, entry: &[u8]) -> std::result::Result<(), TileError> {
    let n = u16::try_from(entry.len()).map_err(|_| {
        TileError(format!(
            "an entry of {} bytes does not fit a bundle (at most {MAX_BUNDLE_ENTRY})",
            entry.len()
        ))
    })?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(entry);
    Ok(())
}

/// What [`export`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// The tree size exported (the checkpoint's).
    pub size: u64,
    /// Tiles and bundles written (new full ones, and every partial one).
    pub written: u64,
    /// Full tiles already there, left as they were.
    pub kept: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes the log's tiles up to its latest checkpoint into `dir`, then the
/// checkpoint. Full tiles already there are kept (after checking that the
/// directory holds this log: its checkpoint's origin and its first leaf);
/// partial ones are rewritten and narrower ones removed. Every file is
/// written to a temporary name and renamed; everything is synced before
/// the checkpoint is, so a reader never sees a checkpoint whose tiles are
/// missing.
pub fn export(ledger: &Ledger, dir: &Path) -> Result<ExportReport> {
    let cp = ledger
        .checkpoint()
        .cloned()
        .ok_or_else(|| LedgerError::Tile {
            path: dir.to_path_buf(),
            detail: "the log has no signed checkpoint to export yet".into(),
        })?;
    export_at(ledger, dir, cp.size, &cp.note)
}

/// What an export reads: the tree's perfect nodes and its canonical
/// entries. A [`Ledger`] is one; a client that fetched a log from its
/// nodes (and checked it against a signed root) is another.
pub trait TreeSource {
    /// The log's origin (its checkpoints' first line).
    fn origin(&self) -> &str;
    /// The perfect node at tree `level`, `index` (level 0: leaf hashes).
    fn node(&mut self, level: u32, index: u64) -> Result<Hash>;
    /// The canonical bytes of entry `index` (what its leaf hashes).
    fn entry(&mut self, index: u64) -> Result<Vec<u8>>;
}

impl TreeSource for &Ledger {
    fn origin(&self) -> &str {
        &self.meta().origin
    }

    fn node(&mut self, level: u32, index: u64) -> Result<Hash> {
        Ledger::node(self, level, index)
    }

    fn entry(&mut self, index: u64) -> Result<Vec<u8>> {
        Ledger::entry(self, index)
    }
}

/// [`export`] of the tree of `size` with `note` as its checkpoint (the
/// caller vouches that `note` is the log's checkpoint at `size`).
pub fn export_at(ledger: &Ledger, dir: &Path, size: u64, note: &str) -> Result<ExportReport> {
    export_from(&mut &*ledger, dir, size, note)
}

/// [`export_at`] from any [`TreeSource`] that holds the tree of `size`.
pub fn export_from(
    src: &mut impl TreeSource,
    dir: &Path,
    size: u64,
    note: &str,
) -> Result<ExportReport> {
    check_same_log(src, dir, size)?;
    let mut report = ExportReport {
        size,
        ..ExportReport::default()
    };
    let mut buf = Vec::new();
    // Directories made so far: one mkdir per directory, not per tile.
    let mut made = std::collections::HashSet::new();
    for t in tiles_of(size) {
        let path = dir.join(t.path());
        if t.is_full() && path.exists() {
            report.kept += 1;
            continue;
        }
        buf.clear();
        let first = t.index * TILE_WIDTH;
        match t.kind {
            TileKind::Hashes { level } => {
                let h = TILE_HEIGHT * u32::from(level);
                for i in first..first + u64::from(t.width) {
                    buf.extend_from_slice(&src.node(h, i)?);
                }
            }
            TileKind::Entries => {
                for i in first..first + u64::from(t.width) {
                    let e = src.entry(i)?;
                    encode_bundle_entry(&mut buf, &e).map_err(|e| LedgerError::Tile {
                        path: path.clone(),
                        detail: format!("entry {i}: {e}; tiles hold entries of at most {MAX_BUNDLE_ENTRY} bytes"),
                    })?;
                }
            }
        }
        if let Some(parent) = path.parent() {
            if made.insert(parent.to_path_buf()) {
                make_dir(parent)?;
            }
        }
        write_file(&path, &buf)?;
        report.written += 1;
        report.bytes += buf.len() as u64;
        if !t.is_full() {
            remove_narrower(dir, &t)?;
        } else {
            // A full tile replaces every partial one of its index.
            let partials = path.with_extension("p");
            if partials.is_dir() {
                fs::remove_dir_all(&partials).map_err(LedgerError::io("remove", &partials))?;
            }
        }
    }
    crate::fsutil::syncfs(dir)?;
    make_dir(dir)?;
    write_file(&dir.join("checkpoint"), note.as_bytes())?;
    crate::fsutil::fsync_dir(dir)?;
    Ok(report)
}

/// Refuses a directory that holds another log's tiles.
fn check_same_log(src: &mut impl TreeSource, dir: &Path, size: u64) -> Result<()> {
    let origin = src.origin().to_string();
    let foreign = |detail: String| LedgerError::Tile {
        path: dir.to_path_buf(),
        detail,
    };
    let cp_path = dir.join("checkpoint");
    if let Ok(text) = fs::read_to_string(&cp_path) {
        let theirs = text.lines().next().unwrap_or_default();
        if theirs != origin {
            return Err(foreign(format!(
                "holds the tiles of {theirs:?}, not of {origin:?}; export into an empty directory"
            )));
        }
    }
    if size == 0 {
        return Ok(());
    }
    let leaf0 = src.node(0, 0)?;
    // The first level-0 tile: full, or the partial ones under `000.p/`.
    let full = TilePath {
        kind: TileKind::Hashes { level: 0 },
        index: 0,
        width: TILE_WIDTH as u16,
    };
    let mut first = vec![dir.join(full.path())];
    if let Ok(partials) = fs::read_dir(dir.join(format!("{}.p", full.path()))) {
        first.extend(partials.flatten().map(|e| e.path()));
    }
    for p in first {
        if let Ok(b) = fs::read(&p) {
            if b.get(..32) != Some(&leaf0[..]) {
                return Err(foreign(format!(
                    "{} does not start with this log's first leaf: another log's tiles",
                    p.display()
                )));
            }
        }
    }
    Ok(())
}

/// Removes the partial tiles of `t`'s index narrower than `t` (the files
/// of its `.p/` directory; anything else there is left alone).
fn remove_narrower(dir: &Path, t: &TilePath) -> Result<()> {
    let partials = dir.join(TilePath { width: 1, ..*t }.path());
    let Some(pdir) = partials.parent() else {
        return Ok(());
    };
    let Ok(entries) = fs::read_dir(pdir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        // Only canonical widths below this one: `17`, never `017` or `.x.tmp`.
        let name = e.file_name();
        let narrower = name
            .to_str()
            .and_then(|n| n.parse::<u16>().ok().filter(|w| w.to_string() == n))
            .is_some_and(|w| w >= 1 && w < t.width);
        if narrower {
            let p = e.path();
            fs::remove_file(&p).map_err(LedgerError::io("remove", &p))?;
        }
    }
    Ok(())
}

fn make_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(LedgerError::io("create directory", dir))
}

/// Writes `bytes` to `path`, whose directory exists, through a temporary
/// file and a rename (no fsync: [`sync_tree`] syncs the whole directory
/// once).
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("tile")
    ));
    fs::write(&tmp, bytes).map_err(LedgerError::io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(LedgerError::io("rename", path))
}

/// What [`verify`] found: the checkpoint's size and root recomputed from
/// the tiles alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTiles {
    /// Tree size.
    pub size: u64,
    /// Root, as recomputed.
    pub root: Hash,
    /// Tiles and bundles read.
    pub files: u64,
}

/// Rebuilds the tree of `size` from the entry bundles in `dir`, checks
/// every hash tile against it and the root against `root`. The first bad
/// tile is named by its path.
pub fn verify(dir: &Path, alg: HashAlg, size: u64, root: &Hash) -> Result<VerifiedTiles> {
    let bad = |t: &TilePath, detail: String| LedgerError::Tile {
        path: dir.join(t.path()),
        detail,
    };
    let tiles = tiles_of(size);
    let mut tree = AlgTree::new(alg);
    for t in tiles.iter().filter(|t| t.kind == TileKind::Entries) {
        let bytes =
            fs::read(dir.join(t.path())).map_err(|e| bad(t, format!("cannot read: {e}")))?;
        for e in parse_bundle(&bytes, t.width).map_err(|e| bad(t, e.0))? {
            tree.push(alg.hash_leaf(e));
        }
    }
    for t in tiles.iter() {
        let TileKind::Hashes { level } = t.kind else {
            continue;
        };
        let bytes =
            fs::read(dir.join(t.path())).map_err(|e| bad(t, format!("cannot read: {e}")))?;
        let hashes = parse_hash_tile(&bytes, t.width).map_err(|e| bad(t, e.0))?;
        let h = TILE_HEIGHT * u32::from(level);
        for (j, got) in hashes.iter().enumerate() {
            let i = t.index * TILE_WIDTH + j as u64;
            if tree.node(h, i).as_ref() != Some(got) {
                return Err(bad(
                    t,
                    format!("hash {j} (tree level {h}, node {i}) is not the one the entries give"),
                ));
            }
        }
    }
    let computed = tree.root();
    if &computed != root {
        return Err(LedgerError::Tile {
            path: dir.join("checkpoint"),
            detail: "the tiles' entries do not hash to the checkpoint's root".into(),
        });
    }
    Ok(VerifiedTiles {
        size,
        root: computed,
        files: tiles.len() as u64,
    })
}

/// A tree read from its tiles alone: perfect nodes, entries and proofs for
/// a client that reaches only the published tiles (a directory, or a URL
/// prefix: `fetch` gets a tile's bytes by its path, e.g. `checkpoint` or
/// `tile/0/x001/234`). Each tile is fetched once; its 255 interior nodes
/// are computed when it arrives, so a proof is lookups only.
pub struct TileReader<F> {
    fetch: F,
    alg: HashAlg,
    size: u64,
    /// (tile level, index) → the tile's nodes, level by level (level 0:
    /// its own hashes; level r: 2^r of them folded).
    tiles: std::collections::HashMap<(u8, u64), Vec<Vec<Hash>>>,
}

impl<F: FnMut(&str) -> std::io::Result<Vec<u8>>> TileReader<F> {
    /// A reader of the tree of `size` (the tiles' checkpoint's) hashing
    /// with `alg`.
    pub fn new(alg: HashAlg, size: u64, fetch: F) -> Self {
        TileReader {
            fetch,
            alg,
            size,
            tiles: std::collections::HashMap::new(),
        }
    }

    fn get(&mut self, path: &str) -> std::result::Result<Vec<u8>, TileError> {
        (self.fetch)(path).map_err(|e| TileError(format!("{path}: {e}")))
    }

    fn tile(&mut self, level: u8, index: u64) -> std::result::Result<&Vec<Vec<Hash>>, TileError> {
        if !self.tiles.contains_key(&(level, index)) {
            let nodes = self.size >> (TILE_HEIGHT * u32::from(level));
            if index * TILE_WIDTH >= nodes {
                return Err(TileError(format!(
                    "no tile {index} at level {level} in a tree of {}",
                    self.size
                )));
            }
            let t = TilePath {
                kind: TileKind::Hashes { level },
                index,
                width: (nodes - index * TILE_WIDTH).min(TILE_WIDTH) as u16,
            };
            let path = t.path();
            let bytes = self.get(&path)?;
            let hashes =
                parse_hash_tile(&bytes, t.width).map_err(|e| TileError(format!("{path}: {e}")))?;
            let mut levels = vec![hashes];
            for _ in 0..TILE_HEIGHT {
                let below = levels.last().expect("level 0 is there");
                let up: Vec<Hash> = below
                    .chunks_exact(2)
                    .map(|p| self.alg.hash_children(&p[0], &p[1]))
                    .collect();
                levels.push(up);
            }
            self.tiles.insert((level, index), levels);
        }
        Ok(&self.tiles[&(level, index)])
    }

    /// The perfect node `(level, index)` of the tree.
    pub fn node(&mut self, level: u32, index: u64) -> std::result::Result<Hash, TileError> {
        let missing = || TileError(format!("node ({level}, {index}) is not in the tree"));
        if level >= 64
            || index
                .checked_add(1)
                .and_then(|n| n.checked_shl(level))
                .is_none_or(|end| end > self.size)
        {
            return Err(missing());
        }
        let (l, r) = (level / TILE_HEIGHT, level % TILE_HEIGHT);
        let first = index << r;
        let t = self.tile(l as u8, first / TILE_WIDTH)?;
        t[r as usize]
            .get(((first % TILE_WIDTH) >> r) as usize)
            .copied()
            .ok_or_else(missing)
    }

    /// The canonical bytes of entry `index`, from its bundle.
    pub fn entry(&mut self, index: u64) -> std::result::Result<Vec<u8>, TileError> {
        if index >= self.size {
            return Err(TileError(format!(
                "entry {index} is not in the tree of size {}",
                self.size
            )));
        }
        let n = index / TILE_WIDTH;
        let t = TilePath {
            kind: TileKind::Entries,
            index: n,
            width: (self.size - n * TILE_WIDTH).min(TILE_WIDTH) as u16,
        };
        let path = t.path();
        let bytes = self.get(&path)?;
        let entries =
            parse_bundle(&bytes, t.width).map_err(|e| TileError(format!("{path}: {e}")))?;
        let e = entries[(index % TILE_WIDTH) as usize].to_vec();
        // The bundle is checked against the hash tile, not trusted.
        if self.alg.hash_leaf(&e) != self.node(0, index)? {
            return Err(TileError(format!(
                "{path}: entry {index} does not hash to its leaf in the hash tile"
            )));
        }
        Ok(e)
    }

    /// Inclusion proof of `index` in the tree of `size` (at most the
    /// tiles' size).
    pub fn inclusion_proof(
        &mut self,
        index: u64,
        size: u64,
    ) -> std::result::Result<Vec<Hash>, TileError> {
        self.check(size)?;
        let path =
            dlog_crypto::tree::inclusion_path(index, size).map_err(|e| TileError(e.to_string()))?;
        self.hash_path(&path)
    }

    /// Consistency proof between the trees of `old` and `new` leaves.
    pub fn consistency_proof(
        &mut self,
        old: u64,
        new: u64,
    ) -> std::result::Result<Vec<Hash>, TileError> {
        self.check(new)?;
        let path =
            dlog_crypto::tree::consistency_path(old, new).map_err(|e| TileError(e.to_string()))?;
        self.hash_path(&path)
    }

    /// Root of the tree of `size` leaves.
    pub fn root_at(&mut self, size: u64) -> std::result::Result<Hash, TileError> {
        self.check(size)?;
        let alg = self.alg;
        dlog_crypto::tree::hash_subtree_with(
            alg,
            dlog_crypto::tree::Subtree {
                start: 0,
                end: size,
            },
            |l, i| self.node(l, i),
        )
    }

    fn check(&self, size: u64) -> std::result::Result<(), TileError> {
        if size > self.size {
            return Err(TileError(format!(
                "the tiles hold a tree of {}, not {size}",
                self.size
            )));
        }
        Ok(())
    }

    fn hash_path(
        &mut self,
        path: &[dlog_crypto::tree::Subtree],
    ) -> std::result::Result<Vec<Hash>, TileError> {
        let alg = self.alg;
        dlog_crypto::tree::hash_path_with(alg, path, |l, i| self.node(l, i))
    }
}

/// Where a tiles directory keeps its checkpoint.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_follow_c2sp() {
        let t = |level, index, width| TilePath {
            kind: TileKind::Hashes { level },
            index,
            width,
        };
        assert_eq!(t(0, 0, 256).path(), "tile/0/000");
        assert_eq!(t(0, 1234067, 256).path(), "tile/0/x001/x234/067");
        assert_eq!(t(1, 5, 17).path(), "tile/1/005.p/17");
        assert_eq!(t(3, 1000, 256).path(), "tile/3/x001/000");
        let e = TilePath {
            kind: TileKind::Entries,
            index: 12,
            width: 3,
        };
        assert_eq!(e.path(), "tile/entries/012.p/3");
        for bad in [
            "tile/0/1",
            "tile/0/x000/001",
            "tile/0/001.p/0",
            "tile/0/001.p/256",
            "tile/0/001.p/017",
            "tile/64/000",
            "tile//000",
            "tiles/0/000",
            "tile/0/x001",
            "tile/0/001/",
        ] {
            assert!(TilePath::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn tiles_of_a_tree() {
        assert!(tiles_of(0).is_empty());
        let names: Vec<String> = tiles_of(600).iter().map(|t| t.path()).collect();
        assert_eq!(
            names,
            [
                "tile/0/000",
                "tile/0/001",
                "tile/0/002.p/88",
                "tile/1/000.p/2",
                "tile/entries/000",
                "tile/entries/001",
                "tile/entries/002.p/88"
            ]
        );
        // 2^16 leaves: full tiles at levels 0 and 1, and the root alone at level 2.
        let partial: Vec<String> = tiles_of(65536)
            .iter()
            .filter(|t| !t.is_full())
            .map(|t| t.path())
            .collect();
        assert_eq!(partial, ["tile/2/000.p/1"]);
    }

    /// Proofs from tiles equal the reference tree's, at every size up to
    /// the tiles' (tiles built in memory from a reference tree).
    #[test]
    fn proofs_from_tiles_match_the_tree() {
        use dlog_crypto::tree::MemoryTree;
        use dlog_crypto::{Sha256Hasher, TreeHasher};
        for size in [1u64, 2, 255, 256, 257, 700, 65_536 + 513] {
            let entries: Vec<Vec<u8>> = (0..size).map(|i| i.to_be_bytes().to_vec()).collect();
            let tree = MemoryTree::<Sha256Hasher>::from_leaves(
                entries.iter().map(|e| Sha256Hasher::hash_leaf(e)),
            );
            let mut files = std::collections::HashMap::new();
            for t in tiles_of(size) {
                let mut b = Vec::new();
                let first = t.index * TILE_WIDTH;
                for i in first..first + u64::from(t.width) {
                    match t.kind {
                        TileKind::Hashes { level } => {
                            b.extend_from_slice(&tree.node(8 * u32::from(level), i).unwrap())
                        }
                        TileKind::Entries => {
                            encode_bundle_entry(&mut b, &entries[i as usize]).unwrap()
                        }
                    }
                }
                files.insert(t.path(), b);
            }
            let mut r = TileReader::new(HashAlg::Sha256, size, |p: &str| {
                files
                    .get(p)
                    .cloned()
                    .ok_or_else(|| std::io::Error::other("missing"))
            });
            assert_eq!(r.root_at(size).unwrap(), tree.root());
            for i in [0, size / 3, size - 1] {
                assert_eq!(
                    r.inclusion_proof(i, size).unwrap(),
                    tree.inclusion_proof(i, size).unwrap()
                );
                assert_eq!(r.entry(i).unwrap(), entries[i as usize]);
                assert_eq!(
                    r.consistency_proof(i, size).unwrap(),
                    tree.consistency_proof(i, size).unwrap()
                );
            }
            assert!(r.entry(size).is_err());
            assert!(r.inclusion_proof(0, size + 1).is_err());
        }
    }

    #[test]
    fn bundles_round_trip_and_refuse_damage() {
        let mut b = Vec::new();
        for e in [&b"a"[..], b"", b"xyz"] {
            encode_bundle_entry(&mut b, e).unwrap();
        }
        assert_eq!(parse_bundle(&b, 3).unwrap(), vec![&b"a"[..], b"", b"xyz"]);
        assert!(parse_bundle(&b, 2).is_err());
        assert!(parse_bundle(&b[..b.len() - 1], 3).is_err());
        assert!(encode_bundle_entry(&mut b, &vec![0; 70_000]).is_err());
        assert!(parse_hash_tile(&[0; 64], 2).is_ok());
        assert!(parse_hash_tile(&[0; 63], 2).is_err());
    }

    proptest! {
        #[test]
        fn every_tile_path_parses_back(level in 0u8..64, index in any::<u64>(), width in 1u16..=256, entries in any::<bool>()) {
            let kind = if entries { TileKind::Entries } else { TileKind::Hashes { level } };
            let t = TilePath { kind, index, width };
            prop_assert_eq!(TilePath::parse(&t.path()).unwrap(), t);
        }

        #[test]
        fn parsers_never_panic(s in "\\\\PC{0,40}", b in proptest::collection::vec(any::<u8>(), 0..300), w in any::<u16>()) {
            let _ = TilePath::parse(&s);
            let _ = TilePath::parse(&format!("tile/{s}"));
            let _ = parse_bundle(&b, w);
            let _ = parse_hash_tile(&b, w);
        }
    }
}
