//! Snapshot bytes without holding a snapshot in memory.
//!
//! A snapshot is the ledger's files plus the applied state, as one archive:
//!
//! ```text
//! "DLOGSNAP1\n"
//! applied_len:u32 BE | applied state (JSON)
//! repeated: name_len:u16 BE (1..=255) | name (relative path) | data_len:u64 BE | data
//! 0:u16 BE                                                  end of archive
//! ```
//!
//! The sending side never materialises the archive: [`SnapshotData::Parts`]
//! reads it as a concatenation of small in-memory pieces (headers, the
//! applied state, the checkpoint note) and byte ranges of files on disk,
//! captured when the snapshot was built. That is sound because a ledger only
//! grows: sealed segments and their side files never change, and the open
//! segment's prefix up to the captured length is never rewritten. Each file
//! range also remembers the file's identity (device and inode) and a read
//! fails instead of returning another file's bytes if the path was replaced.
//!
//! The receiving side writes chunks into a file ([`SnapshotData::File`]) and
//! [`extract`] unpacks it file by file, streaming.

use std::io::{self, Read, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// First bytes of every snapshot archive.
pub const MAGIC: &[u8; 10] = b"DLOGSNAP1\n";
/// Largest applied-state record accepted.
const MAX_APPLIED: u32 = 1 << 20;

/// Snapshot data as openraft moves it: a built archive being read, or an
/// incoming one being written to disk.
#[derive(Debug)]
pub enum SnapshotData {
    /// A built snapshot (read-only).
    Parts(Parts),
    /// A snapshot being received, spooled to a file.
    File(tokio::fs::File),
}

#[derive(Debug)]
enum Part {
    Bytes(Vec<u8>),
    File {
        path: PathBuf,
        len: u64,
        dev: u64,
        ino: u64,
    },
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        }
    }
}

/// A read cursor over a built archive; clones share the parts.
#[derive(Debug, Clone)]
pub struct Parts {
    parts: Arc<[Part]>,
    /// Offset of each part in the archive.
    starts: Arc<[u64]>,
    len: u64,
    pos: u64,
    /// The file part last read, kept open.
    open: Option<(usize, Arc<std::fs::File>)>,
}

impl Parts {
    /// Archive length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty archive (never produced by [`ArchiveBuilder`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A fresh cursor at offset 0 over the same archive.
    pub fn rewound(&self) -> Parts {
        Parts {
            pos: 0,
            open: None,
            ..self.clone()
        }
    }

    fn read_some(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let i = self.starts.partition_point(|s| *s <= self.pos) - 1;
        let within = self.pos - self.starts[i];
        let n = ((self.parts[i].len() - within) as usize).min(out.len());
        match &self.parts[i] {
            Part::Bytes(b) => out[..n].copy_from_slice(&b[within as usize..within as usize + n]),
            Part::File { path, dev, ino, .. } => {
                let file = match &self.open {
                    Some((j, f)) if *j == i => f.clone(),
                    _ => {
                        let f = std::fs::File::open(path)?;
                        let m = f.metadata()?;
                        if m.dev() != *dev || m.ino() != *ino {
                            return Err(io::Error::other(format!(
                                "{} was replaced since the snapshot was built",
                                path.display()
                            )));
                        }
                        let f = Arc::new(f);
                        self.open = Some((i, f.clone()));
                        f
                    }
                };
                // Page-cache reads of at most one chunk: short enough to do inline.
                file.read_exact_at(&mut out[..n], within).map_err(|e| {
                    io::Error::new(e.kind(), format!("read {}: {e}", path.display()))
                })?;
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Read for Parts {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf)
    }
}

/// Builds an archive of in-memory pieces and file ranges.
#[derive(Debug)]
pub struct ArchiveBuilder {
    parts: Vec<Part>,
    pending: Vec<u8>,
}

fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("snapshot file name of {} bytes", name.len()),
        ));
    }
    Ok(())
}

impl ArchiveBuilder {
    /// Starts an archive with the applied state.
    pub fn new(applied: &[u8]) -> io::Result<ArchiveBuilder> {
        if applied.len() > MAX_APPLIED as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "applied state too large",
            ));
        }
        let mut pending = MAGIC.to_vec();
        pending.extend_from_slice(&(applied.len() as u32).to_be_bytes());
        pending.extend_from_slice(applied);
        Ok(ArchiveBuilder {
            parts: Vec::new(),
            pending,
        })
    }

    fn header(&mut self, name: &str, len: u64) -> io::Result<()> {
        check_name(name)?;
        self.pending
            .extend_from_slice(&(name.len() as u16).to_be_bytes());
        self.pending.extend_from_slice(name.as_bytes());
        self.pending.extend_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Adds a file given by its bytes.
    pub fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.header(name, bytes.len() as u64)?;
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    /// Adds the first `len` bytes of the file at `path` (read when the archive is).
    pub fn add_file(&mut self, name: &str, path: &Path, len: u64) -> io::Result<()> {
        let m = std::fs::metadata(path)?;
        if m.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} holds {} bytes, not {len}", path.display(), m.len()),
            ));
        }
        self.header(name, len)?;
        self.parts
            .push(Part::Bytes(std::mem::take(&mut self.pending)));
        self.parts.push(Part::File {
            path: path.to_path_buf(),
            len,
            dev: m.dev(),
            ino: m.ino(),
        });
        Ok(())
    }

    /// Ends the archive.
    pub fn finish(mut self) -> Parts {
        self.pending.extend_from_slice(&0u16.to_be_bytes());
        self.parts.push(Part::Bytes(self.pending));
        self.parts.retain(|p| p.len() > 0);
        let mut starts = Vec::with_capacity(self.parts.len());
        let mut at = 0;
        for p in &self.parts {
            starts.push(at);
            at += p.len();
        }
        Parts {
            parts: self.parts.into(),
            starts: starts.into(),
            len: at,
            pos: 0,
            open: None,
        }
    }
}

fn malformed(what: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed snapshot: {}", what.into()),
    )
}

fn read_exact_or(r: &mut dyn Read, buf: &mut [u8], what: &str) -> io::Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            malformed(format!("cut inside {what}"))
        } else {
            e
        }
    })
}

/// Unpacks an archive into `dir`, streaming: every file is written, then
/// all are fsynced (in a second pass, so the file system commits their
/// metadata together rather than once per file). `allow` decides which relative names may be written; any other
/// name is an error before anything is written for it. Returns the applied
/// state bytes.
pub fn extract(r: &mut dyn Read, dir: &Path, allow: impl Fn(&str) -> bool) -> io::Result<Vec<u8>> {
    let mut magic = [0u8; MAGIC.len()];
    read_exact_or(r, &mut magic, "the magic")?;
    if &magic != MAGIC {
        return Err(malformed("not a DLog snapshot"));
    }
    let mut n4 = [0u8; 4];
    read_exact_or(r, &mut n4, "the applied state length")?;
    let alen = u32::from_be_bytes(n4);
    if alen > MAX_APPLIED {
        return Err(malformed(format!("applied state of {alen} bytes")));
    }
    let mut applied = vec![0u8; alen as usize];
    read_exact_or(r, &mut applied, "the applied state")?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut written: Vec<PathBuf> = Vec::new();
    loop {
        let mut n2 = [0u8; 2];
        read_exact_or(r, &mut n2, "a file header")?;
        let nlen = u16::from_be_bytes(n2) as usize;
        if nlen == 0 {
            break;
        }
        if nlen > 255 {
            return Err(malformed(format!("file name of {nlen} bytes")));
        }
        let mut name = vec![0u8; nlen];
        read_exact_or(r, &mut name, "a file name")?;
        let name = String::from_utf8(name).map_err(|_| malformed("file name is not UTF-8"))?;
        if !allow(&name) {
            return Err(malformed(format!("names a foreign file {name:?}")));
        }
        let mut n8 = [0u8; 8];
        read_exact_or(r, &mut n8, "a file length")?;
        let len = u64::from_be_bytes(n8);
        let path = dir.join(&name);
        let parent = path.parent().unwrap_or(dir).to_path_buf();
        std::fs::create_dir_all(&parent)?;
        if !dirs.contains(&parent) {
            dirs.push(parent);
        }
        let mut f = std::fs::File::create(&path)?;
        let copied = io::copy(&mut r.take(len), &mut f)?;
        if copied != len {
            return Err(malformed(format!("{name} cut at {copied} of {len} bytes")));
        }
        f.flush()?;
        written.push(path);
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest)? != 0 {
        return Err(malformed("bytes after the end marker"));
    }
    for p in written.iter().chain(&dirs) {
        std::fs::File::open(p)?.sync_all()?;
    }
    Ok(applied)
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::Parts(p) => {
                let n = p.read_some(buf.initialize_unfilled())?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            SnapshotData::File(f) => Pin::new(f).poll_read(cx, buf),
        }
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, to: SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            SnapshotData::Parts(p) => {
                let pos = match to {
                    SeekFrom::Start(n) => Some(n),
                    SeekFrom::End(d) => p.len.checked_add_signed(d),
                    SeekFrom::Current(d) => p.pos.checked_add_signed(d),
                };
                p.pos = pos.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "seek before the start")
                })?;
                Ok(())
            }
            SnapshotData::File(f) => Pin::new(f).start_seek(to),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.get_mut() {
            SnapshotData::Parts(p) => Poll::Ready(Ok(p.pos)),
            SnapshotData::File(f) => Pin::new(f).poll_complete(cx),
        }
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "a built snapshot is read-only",
    )
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SnapshotData::Parts(_) => Poll::Ready(Err(read_only())),
            SnapshotData::File(f) => Pin::new(f).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::Parts(_) => Poll::Ready(Ok(())),
            SnapshotData::File(f) => Pin::new(f).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::Parts(_) => Poll::Ready(Ok(())),
            SnapshotData::File(f) => Pin::new(f).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(dir: &Path) -> Parts {
        std::fs::write(dir.join("a"), b"0123456789abcdef").unwrap();
        std::fs::write(dir.join("b"), b"").unwrap();
        let mut b = ArchiveBuilder::new(br#"{"x":1}"#).unwrap();
        b.add_bytes("log.toml", b"meta").unwrap();
        b.add_file("segments/a", &dir.join("a"), 10).unwrap();
        b.add_file("segments/b", &dir.join("b"), 0).unwrap();
        b.add_bytes("checkpoint", b"note").unwrap();
        b.finish()
    }

    #[test]
    fn roundtrip_takes_the_captured_prefix() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = sample(src.path());
        // The file grows after the build: the archive keeps the captured length.
        std::fs::write(src.path().join("a"), b"0123456789abcdefXYZ").unwrap();
        let applied = extract(&mut p.rewound(), dst.path(), |_| true).unwrap();
        assert_eq!(applied, br#"{"x":1}"#);
        let rd = |n: &str| std::fs::read(dst.path().join(n)).unwrap();
        assert_eq!(rd("segments/a"), b"0123456789");
        assert_eq!(rd("segments/b"), b"");
        assert_eq!(rd("log.toml"), b"meta");
        assert_eq!(rd("checkpoint"), b"note");
    }

    #[test]
    fn a_replaced_file_fails_the_read() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = sample(src.path());
        let tmp = src.path().join("a.new");
        std::fs::write(&tmp, b"another file entirely").unwrap();
        std::fs::rename(&tmp, src.path().join("a")).unwrap();
        let err = extract(&mut p.rewound(), dst.path(), |_| true).unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
    }

    #[test]
    fn foreign_names_and_trailing_bytes_are_refused() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = sample(src.path());
        let err = extract(&mut p.rewound(), dst.path(), |n| n != "checkpoint").unwrap_err();
        assert!(err.to_string().contains("foreign"), "{err}");
        let mut bytes = Vec::new();
        p.rewound().read_to_end(&mut bytes).unwrap();
        bytes.push(0);
        let err = extract(&mut bytes.as_slice(), dst.path(), |_| true).unwrap_err();
        assert!(err.to_string().contains("after the end"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every cut and every single-byte change of an archive is refused
        /// or unpacks without panicking; cuts are always refused.
        #[test]
        fn damaged_archives_never_panic(cut in 0usize..200, flip in 0usize..200, bit in 0u8..8) {
            let src = tempfile::tempdir().unwrap();
            let dst = tempfile::tempdir().unwrap();
            let mut bytes = Vec::new();
            sample(src.path()).read_to_end(&mut bytes).unwrap();
            let cut = cut % bytes.len();
            prop_assert!(extract(&mut &bytes[..cut], dst.path(), |_| true).is_err());
            let mut changed = bytes.clone();
            let at = flip % changed.len();
            changed[at] ^= 1 << bit;
            let _ = extract(&mut changed.as_slice(), dst.path(), |n| !n.contains(".."));
        }

        /// Reads through any seek pattern see the same bytes as one pass.
        #[test]
        fn seek_and_read_agree(offsets in proptest::collection::vec(0u64..80, 1..8)) {
            let src = tempfile::tempdir().unwrap();
            let p = sample(src.path());
            let mut whole = Vec::new();
            p.rewound().read_to_end(&mut whole).unwrap();
            for off in offsets {
                let mut q = p.rewound();
                q.pos = off.min(q.len());
                let mut rest = Vec::new();
                q.read_to_end(&mut rest).unwrap();
                prop_assert_eq!(&rest[..], &whole[off.min(whole.len() as u64) as usize..]);
            }
        }
    }
}
