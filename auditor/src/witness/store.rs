//! The witness's durable per-origin state: what it last cosigned.
//!
//! One file per origin, `<32 hex digits of BLAKE3(origin)>.state` in the
//! state directory: a header naming the origin, then fixed-size records
//! appended in order, each `size:u64 BE ‖ root:32 ‖ time:u64 BE ‖
//! crc32c:u32 BE` (over the first 48 bytes), made durable with one
//! `fdatasync` before the witness answers. The last record is the state.
//! A torn last record (a crash mid-write, never answered) is ignored; a
//! bad record before a good one, or sizes that go back, is damage and the
//! origin is refused until an operator looks.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::protocol::Cosigned;

const MAGIC: &str = "dlog-witness-state v1\n";
const RECORD: usize = 52;
/// Records kept before the file is compacted to its last one.
const COMPACT_AT: u64 = 4096;

/// A state file error: the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("witness state {}: {detail}", path.display())]
pub struct StoreError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub detail: String,
}

/// One state record: the cosigned tree and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The cosigned tree.
    pub cosigned: Cosigned,
    /// Unix seconds of the cosignature.
    pub time: u64,
}

impl Record {
    fn encode(&self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        b[..8].copy_from_slice(&self.cosigned.size.to_be_bytes());
        b[8..40].copy_from_slice(&self.cosigned.root);
        b[40..48].copy_from_slice(&self.time.to_be_bytes());
        let crc = crc32c::crc32c(&b[..48]);
        b[48..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Record> {
        let b: &[u8; RECORD] = b.try_into().ok()?;
        let crc = u32::from_be_bytes(b[48..].try_into().ok()?);
        if crc32c::crc32c(&b[..48]) != crc {
            return None;
        }
        let mut root = [0u8; 32];
        root.copy_from_slice(&b[8..40]);
        Some(Record {
            cosigned: Cosigned {
                size: u64::from_be_bytes(b[..8].try_into().ok()?),
                root,
            },
            time: u64::from_be_bytes(b[40..48].try_into().ok()?),
        })
    }
}

/// The file name of an origin's state.
pub fn file_name(origin: &str) -> String {
    let h = blake3::hash(origin.as_bytes());
    format!("{}.state", &h.to_hex()[..32])
}

/// Parses a state file's bytes: (origin, last record, good records, the
/// byte length that holds them). Pure; `path` only names errors.
pub fn parse(
    path: &Path,
    bytes: &[u8],
) -> Result<(String, Option<Record>, u64, usize), StoreError> {
    let bad = |detail: String| StoreError {
        path: path.to_path_buf(),
        detail,
    };
    let rest = bytes
        .strip_prefix(MAGIC.as_bytes())
        .ok_or_else(|| bad("not a witness state file".into()))?;
    let nl = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no origin line".into()))?;
    let origin = std::str::from_utf8(&rest[..nl])
        .map_err(|_| bad("the origin is not UTF-8".into()))?
        .to_string();
    let header = MAGIC.len() + nl + 1;
    let body = &bytes[header..];
    let mut last: Option<Record> = None;
    let mut count = 0u64;
    let chunks: Vec<&[u8]> = body.chunks(RECORD).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        match Record::decode(chunk) {
            Some(r) => {
                if let Some(l) = last {
                    if r.cosigned.size < l.cosigned.size {
                        return Err(bad(format!(
                            "record {i} goes back from size {} to {}",
                            l.cosigned.size, r.cosigned.size
                        )));
                    }
                }
                last = Some(r);
                count += 1;
            }
            // A torn final record was never answered: ignored.
            None if i + 1 == chunks.len() => break,
            None => return Err(bad(format!("record {i} is damaged (CRC)"))),
        }
    }
    Ok((origin, last, count, header + count as usize * RECORD))
}

/// An origin's open state file.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    origin: String,
    file: File,
    records: u64,
    last: Option<Record>,
}

impl StateFile {
    /// Opens (or creates) the state of `origin` in `dir`.
    pub fn open(dir: &Path, origin: &str) -> Result<StateFile, StoreError> {
        let path = dir.join(file_name(origin));
        let io = |what: &str, e: std::io::Error| StoreError {
            path: path.clone(),
            detail: format!("{what}: {e}"),
        };
        std::fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("open", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io("read", e))?;
        let (records, last) = if bytes.is_empty() {
            let header = format!("{MAGIC}{origin}\n");
            file.write_all(header.as_bytes())
                .map_err(|e| io("write", e))?;
            file.sync_all().map_err(|e| io("fsync", e))?;
            dlog_ledger::fsutil::fsync_dir(dir).map_err(|e| StoreError {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            (0, None)
        } else {
            let (o, last, records, good) = parse(&path, &bytes)?;
            if o != origin {
                return Err(StoreError {
                    path,
                    detail: format!("holds the state of {o:?}, not of {origin:?}"),
                });
            }
            if good < bytes.len() {
                // Drop a torn tail so the next record lands on a boundary.
                file.set_len(good as u64).map_err(|e| io("truncate", e))?;
                file.sync_all().map_err(|e| io("fsync", e))?;
            }
            (records, last)
        };
        Ok(StateFile {
            path,
            origin: origin.to_string(),
            file,
            records,
            last,
        })
    }

    /// What was last cosigned, and when.
    pub fn last(&self) -> Option<Record> {
        self.last
    }

    /// Appends `r` durably (one `fdatasync`); compacts the file now and
    /// then (a new file with the header and `r`, renamed over it).
    pub fn save(&mut self, r: Record) -> Result<(), StoreError> {
        let io = |what: &str, e: std::io::Error| StoreError {
            path: self.path.clone(),
            detail: format!("{what}: {e}"),
        };
        if self.records >= COMPACT_AT {
            let mut bytes = format!("{MAGIC}{}\n", self.origin).into_bytes();
            bytes.extend_from_slice(&r.encode());
            dlog_ledger::fsutil::write_atomic(&self.path, &bytes).map_err(|e| StoreError {
                path: self.path.clone(),
                detail: format!("compact: {e}"),
            })?;
            self.file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
                .map_err(|e| io("reopen", e))?;
            self.records = 1;
        } else {
            use std::io::Seek;
            self.file
                .seek(std::io::SeekFrom::End(0))
                .map_err(|e| io("seek", e))?;
            self.file
                .write_all(&r.encode())
                .map_err(|e| io("write", e))?;
            self.file.sync_data().map_err(|e| io("fdatasync", e))?;
            self.records += 1;
        }
        self.last = Some(r);
        Ok(())
    }
}

/// Every origin's state in `dir` (for `dlog witness status`), read only.
pub fn read_all(dir: &Path) -> Result<Vec<(String, Option<Record>)>, StoreError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(StoreError {
                path: dir.to_path_buf(),
                detail: e.to_string(),
            })
        }
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("state") {
            continue;
        }
        let bytes = std::fs::read(&p).map_err(|e| StoreError {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        let (origin, last, _, _) = parse(&p, &bytes)?;
        out.push((origin, last));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(size: u64, b: u8) -> Record {
        Record {
            cosigned: Cosigned {
                size,
                root: [b; 32],
            },
            time: 1000 + size,
        }
    }

    #[test]
    fn round_trip_torn_tail_and_damage() {
        let d = tempfile::tempdir().unwrap();
        let mut f = StateFile::open(d.path(), "example.com/log").unwrap();
        assert_eq!(f.last(), None);
        f.save(rec(5, 1)).unwrap();
        f.save(rec(9, 2)).unwrap();
        drop(f);
        let f = StateFile::open(d.path(), "example.com/log").unwrap();
        assert_eq!(f.last(), Some(rec(9, 2)));
        drop(f);
        // A torn record (half written) is ignored, and dropped on open.
        let p = d.path().join(file_name("example.com/log"));
        let mut b = std::fs::read(&p).unwrap();
        let good = b.len();
        b.extend_from_slice(&rec(12, 3).encode()[..20]);
        std::fs::write(&p, &b).unwrap();
        let mut f = StateFile::open(d.path(), "example.com/log").unwrap();
        assert_eq!(f.last(), Some(rec(9, 2)));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), good as u64);
        f.save(rec(12, 3)).unwrap();
        drop(f);
        assert_eq!(
            StateFile::open(d.path(), "example.com/log").unwrap().last(),
            Some(rec(12, 3))
        );
        // A damaged record before a good one is refused.
        let mut b = std::fs::read(&p).unwrap();
        let first = b.len() - 3 * RECORD;
        b[first + 3] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(StateFile::open(d.path(), "example.com/log").is_err());
        // Another origin's file under this name is refused.
        std::fs::write(&p, format!("{MAGIC}other\n")).unwrap();
        assert!(StateFile::open(d.path(), "example.com/log").is_err());
    }

    #[test]
    fn compaction_keeps_the_last_record() {
        let d = tempfile::tempdir().unwrap();
        let mut f = StateFile::open(d.path(), "o").unwrap();
        for i in 0..COMPACT_AT + 10 {
            f.save(rec(i, (i % 200) as u8)).unwrap();
        }
        drop(f);
        let p = d.path().join(file_name("o"));
        assert!(std::fs::metadata(&p).unwrap().len() < 20 * RECORD as u64);
        let last = rec(COMPACT_AT + 9, ((COMPACT_AT + 9) % 200) as u8);
        assert_eq!(StateFile::open(d.path(), "o").unwrap().last(), Some(last));
        assert_eq!(
            read_all(d.path()).unwrap(),
            vec![("o".to_string(), Some(last))]
        );
    }

    #[test]
    fn sizes_that_go_back_are_damage() {
        let mut b = format!("{MAGIC}o\n").into_bytes();
        b.extend_from_slice(&rec(9, 1).encode());
        b.extend_from_slice(&rec(5, 1).encode());
        assert!(parse(Path::new("x"), &b).is_err());
    }
}
