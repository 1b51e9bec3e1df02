//! Local repair of a damaged open segment: cut the log at the first
//! damaged entry, keeping every cut byte as evidence.
//!
//! Refused unless the caller names the entry to cut at, and that entry is
//! exactly where the damage starts (cutting earlier would discard intact
//! entries, later would keep damage). Damage in a sealed segment is not
//! cut here: it would discard every later segment; a replica restores it.
//! Entries a stored (signed) checkpoint covers are cut only when the
//! caller says so (`drop_signed`): whoever holds that checkpoint will see
//! the next one as a fork, which is why the old one is kept as evidence.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{LedgerError, Result};
use crate::store::{fsync_dir, Ledger, OpenMode, CHECKPOINT_FILE};

/// What [`cut_at_damage`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cut {
    /// The segment cut.
    pub segment: u64,
    /// The first entry cut (the log now holds this many entries).
    pub at: u64,
    /// Bytes moved out of the segment file.
    pub bytes: u64,
    /// The directory holding the cut bytes, the old checkpoint and a note.
    pub evidence: PathBuf,
    /// Whether a stored checkpoint that covered cut entries was set aside.
    pub dropped_checkpoint: Option<u64>,
}

/// Cuts the log in `dir` at entry `at`, which must be the first damaged
/// entry of the open segment. The cut bytes (from the damaged frame to the
/// end of the file) go to `dir/evidence/cut-<segment>-<at>-<unix secs>/`
/// with a note, fsynced before the segment file is truncated; the log is
/// opened read-write afterwards to prove it is whole. Takes the writer
/// lock for the whole operation.
pub fn cut_at_damage(dir: &Path, at: u64, drop_signed: bool) -> Result<Cut> {
    let lock = crate::fsutil::lock_dir(dir)?;
    let refuse = LedgerError::RepairRefused;
    let (damage, size, checkpoint) = {
        let ro = Ledger::open(dir, OpenMode::ReadOnly)?;
        let d = ro.damage().cloned();
        (d, ro.size(), ro.checkpoint().map(|c| c.size))
    };
    let Some(d) = damage else {
        // Sealed-segment damage does not stop a read-only open; scrub names it.
        return Err(refuse(format!(
            "no damage in the open segment to cut (the log holds {size} entries); \
             damage in a sealed segment is not cut locally (it would discard every later \
             segment): restore that segment file from a replica or a backup"
        )));
    };
    if at != d.entry {
        return Err(refuse(format!(
            "the damage starts at entry {} ({d}); --cut-at must name exactly that entry \
             (cutting earlier discards intact entries, later keeps damage)",
            d.entry
        )));
    }
    let covered = checkpoint.filter(|&c| c > at);
    if let (Some(c), false) = (covered, drop_signed) {
        return Err(refuse(format!(
            "the stored checkpoint (signed) covers {c} entries, so entries {at}..{c} were \
             acknowledged; cutting them makes the next checkpoint a fork for anyone holding \
             receipts past {at}. If that is what you want, add --drop-signed (the old \
             checkpoint is kept as evidence)"
        )));
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let evidence = dir
        .join("evidence")
        .join(format!("cut-{}-{}-{stamp}", d.segment, d.entry));
    fs::create_dir_all(&evidence).map_err(LedgerError::io("create directory", &evidence))?;
    let seg = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&d.file)
        .map_err(LedgerError::io("open", &d.file))?;
    let bytes = fs::read(&d.file).map_err(LedgerError::io("read", &d.file))?;
    let cut = bytes.get(d.offset as usize..).ok_or_else(|| {
        refuse(format!(
            "{} is shorter than the damage offset",
            d.file.display()
        ))
    })?;
    let keep = |name: &str, data: &[u8]| -> Result<()> {
        let p = evidence.join(name);
        let mut f = File::create(&p).map_err(LedgerError::io("create", &p))?;
        f.write_all(data).map_err(LedgerError::io("write", &p))?;
        f.sync_all().map_err(LedgerError::io("fsync", &p))
    };
    keep("cut.bin", cut)?;
    let mut note = format!(
        "dlog repair: cut segment {} of {} at entry {} (byte {}), {} bytes, moved to cut.bin.\n\
         damage: {}\n",
        d.segment,
        dir.display(),
        d.entry,
        d.offset,
        cut.len(),
        d.detail
    );
    if let Some(c) = covered {
        let cp = dir.join(CHECKPOINT_FILE);
        let text = fs::read(&cp).map_err(LedgerError::io("read", &cp))?;
        keep("checkpoint", &text)?;
        note.push_str(&format!(
            "the stored checkpoint covered {c} entries; it is kept here as `checkpoint`.\n"
        ));
    }
    keep("NOTE.txt", note.as_bytes())?;
    fsync_dir(&evidence)?;
    fsync_dir(evidence.parent().unwrap_or(dir))?;
    // Evidence is durable: now change the log.
    if covered.is_some() {
        let cp = dir.join(CHECKPOINT_FILE);
        fs::remove_file(&cp).map_err(LedgerError::io("remove", &cp))?;
        fsync_dir(dir)?;
    }
    seg.set_len(d.offset)
        .map_err(LedgerError::io("truncate", &d.file))?;
    seg.sync_all().map_err(LedgerError::io("fsync", &d.file))?;
    drop(seg);
    // Whole again: a read-write open (under the lock we hold) must succeed.
    let rw = Ledger::open_locked(dir, lock)?;
    debug_assert_eq!(rw.size(), at);
    Ok(Cut {
        segment: d.segment,
        at,
        bytes: cut.len() as u64,
        evidence,
        dropped_checkpoint: covered,
    })
}
