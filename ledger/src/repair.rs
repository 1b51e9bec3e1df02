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

/// A new evidence directory `dir/evidence/<what>-<unix secs>/`.
fn evidence_dir(dir: &Path, what: &str) -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let evidence = dir.join("evidence").join(format!("{what}-{stamp}"));
    fs::create_dir_all(&evidence).map_err(LedgerError::io("create directory", &evidence))?;
    Ok(evidence)
}

/// Writes `data` to `path` and fsyncs the file (the caller fsyncs the
/// directory once for all it kept).
fn keep_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(LedgerError::io("create", path))?;
    f.write_all(data).map_err(LedgerError::io("write", path))?;
    f.sync_all().map_err(LedgerError::io("fsync", path))
}

/// Copies `from` into `to` and fsyncs the copy.
fn copy_synced(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .and_then(|_| File::open(to)?.sync_all())
        .map_err(LedgerError::io("copy to evidence", from))
}

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
    let evidence = evidence_dir(dir, &format!("cut-{}-{}", d.segment, d.entry))?;
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
    let keep = |name: &str, data: &[u8]| keep_synced(&evidence.join(name), data);
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

/// What [`replace_sealed`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replaced {
    /// The segment replaced.
    pub segment: u64,
    /// Its entries (the segment's capacity).
    pub entries: u64,
    /// Where the old segment file and its side files were moved.
    pub evidence: PathBuf,
}

/// Replaces sealed segment `segment` of the log in `dir` with one rebuilt
/// from `entries` (the canonical bytes of all its entries, in order, from
/// anywhere: a replica, a backup), after proving they are exactly its
/// entries: their Merkle root, chained from the previous segment's chain
/// hash, must give the chain hash the *next* segment's header commits to
/// (a file outside the damage). The old segment file and side files go to
/// `dir/evidence/replaced-<segment>-<unix secs>/`; the side files are
/// rebuilt by the read-write open that ends the repair, which also checks
/// the stored checkpoint's root against the repaired log.
pub fn replace_sealed(dir: &Path, segment: u64, entries: &[Vec<u8>]) -> Result<Replaced> {
    use crate::segment::{self, SegmentFooter, SegmentHeader, Tail};
    use dlog_crypto::tree::AlgTree;
    let lock = crate::fsutil::lock_dir(dir)?;
    let refuse = LedgerError::RepairRefused;
    let ro = Ledger::open(dir, OpenMode::ReadOnly)?;
    if let Some(d) = ro.damage() {
        // The read-write open that ends this repair would fail on it.
        return Err(refuse(format!(
            "the open segment is damaged too ({d}): repair it first"
        )));
    }
    let meta = ro.meta().clone();
    let (bits, alg) = (meta.segment_bits, meta.hash);
    if segment >= ro.sealed_segments() {
        return Err(refuse(format!(
            "segment {segment} is not sealed (the log has {} sealed segments)",
            ro.sealed_segments()
        )));
    }
    let capacity = 1u64 << bits;
    if entries.len() as u64 != capacity {
        return Err(refuse(format!(
            "segment {segment} holds {capacity} entries, {} were given",
            entries.len()
        )));
    }
    let log_id = crate::store::parse_log_id(&meta.log_id)
        .ok_or_else(|| refuse("log.toml: log_id is not 32 hex digits".into()))?;
    let prev_chain = match segment {
        0 => [0u8; 32],
        s => ro.sealed_view(s - 1).expect("sealed").footer.chain,
    };
    // What the rest of the log commits this segment to: the next
    // segment's header (sealed or open, it exists).
    let next_path = crate::store::seg_path(dir, segment + 1, "seg");
    let mut head = [0u8; segment::HEADER_LEN];
    File::open(&next_path)
        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0))
        .map_err(LedgerError::io("read", &next_path))?;
    let committed = SegmentHeader::decode(&head)
        .map_err(|e| {
            refuse(format!(
                "{}: {e}; cannot prove a replacement",
                next_path.display()
            ))
        })?
        .prev_chain;
    drop(ro);

    let header = SegmentHeader {
        log_id,
        segment,
        bits,
        prev_chain,
    };
    let first = segment << bits;
    let mut bytes = header.encode().to_vec();
    let mut leaves = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        crate::entry::decode_ref(e).map_err(|err| {
            refuse(format!(
                "entry {} given is not a canonical entry: {err}",
                first + i as u64
            ))
        })?;
        segment::encode_frame(&mut bytes, first + i as u64, e);
        leaves.push(alg.hash_leaf(e));
    }
    let root = AlgTree::from_leaves(alg, leaves).root();
    let chain = dlog_crypto::hash::chain_hash(segment, &root, &prev_chain);
    if chain != committed {
        return Err(refuse(format!(
            "the entries given for segment {segment} do not hash to the root the log commits to \
             (segment {}'s header); nothing was changed",
            segment + 1
        )));
    }
    bytes.extend_from_slice(
        &SegmentFooter {
            count: capacity,
            root,
            chain,
        }
        .encode(),
    );
    let max_entry = meta
        .max_payload
        .saturating_add(crate::entry::ENTRY_HEADER_LEN as u32);
    match segment::scan_with(alg, &bytes, max_entry, 0) {
        Ok(scan) if matches!(scan.tail, Tail::Sealed(_)) => {}
        Ok(_) => {
            return Err(refuse(
                "the rebuilt segment does not end in its footer".into(),
            ))
        }
        Err(e) => return Err(refuse(format!("the rebuilt segment does not scan: {e}"))),
    }

    let evidence = evidence_dir(dir, &format!("replaced-{segment}"))?;
    let seg_path = crate::store::seg_path(dir, segment, "seg");
    // The damaged file is copied (not moved): the log is never without a
    // segment file, whatever step a crash stops at. The side files are
    // derived data: moved, and rebuilt below.
    copy_synced(&seg_path, &evidence.join(format!("{segment:020}.seg")))?;
    for ext in ["idx", "tree"] {
        let p = crate::store::seg_path(dir, segment, ext);
        if p.exists() {
            let to = evidence.join(format!("{segment:020}.{ext}"));
            fs::rename(&p, &to).map_err(LedgerError::io("move to evidence", &p))?;
        }
    }
    fsync_dir(&evidence)?;
    fsync_dir(evidence.parent().unwrap_or(dir))?;
    crate::store::write_atomic(&seg_path, &bytes)?;
    // Rebuilds the side files and checks the stored checkpoint's root.
    let rw = Ledger::open_locked(dir, lock)?;
    drop(rw);
    Ok(Replaced {
        segment,
        entries: capacity,
        evidence,
    })
}

/// Rewrites the open segment of the log in `dir` from its first damaged
/// entry on with `entries` (canonical bytes of entries `from`, `from + 1`,
/// ...: fetched from a replica), keeping the intact frames before the
/// damage. Accepted only if a stored checkpoint covers the damage and the
/// repaired log has its (signed) root at its size (entries past it are the
/// replica's, as a node would get them from its leader): checked on a scratch
/// copy (hard links of the sealed segments) before the segment file is
/// replaced. The damaged file is copied to
/// `dir/evidence/refetched-<segment>-<unix secs>/` first.
pub fn replace_open_tail(dir: &Path, from: u64, entries: &[Vec<u8>]) -> Result<Replaced> {
    use crate::segment::{self, Tail};
    let lock = crate::fsutil::lock_dir(dir)?;
    let refuse = LedgerError::RepairRefused;
    let (d, checkpoint, meta) = {
        let ro = Ledger::open(dir, OpenMode::ReadOnly)?;
        let Some(d) = ro.damage().cloned() else {
            return Err(refuse("the open segment is not damaged".into()));
        };
        (d, ro.checkpoint().map(|c| c.size), ro.meta().clone())
    };
    if from != d.entry {
        return Err(refuse(format!(
            "the damage starts at entry {}, not {from}",
            d.entry
        )));
    }
    if checkpoint.is_none_or(|c| c <= from) {
        return Err(refuse(format!(
            "no stored checkpoint covers entry {from}: nothing to prove fetched entries against \
             (cut the damage with --cut-at instead)"
        )));
    }
    let reach = from + entries.len() as u64;
    if let Some(c) = checkpoint.filter(|&c| c > reach) {
        return Err(refuse(format!(
            "the entries given reach {reach}, the stored checkpoint covers {c}: fetch them all"
        )));
    }
    let bits = meta.segment_bits;
    if reach > ((d.segment + 1) << bits) {
        return Err(refuse(format!(
            "the open segment ends at entry {}; {reach} entries were given",
            (d.segment + 1) << bits
        )));
    }
    let old = fs::read(&d.file).map_err(LedgerError::io("read", &d.file))?;
    let mut bytes = old
        .get(..d.offset as usize)
        .ok_or_else(|| refuse("the segment file is shorter than the damage offset".into()))?
        .to_vec();
    for (i, e) in entries.iter().enumerate() {
        crate::entry::decode_ref(e).map_err(|err| {
            refuse(format!(
                "entry {} given is not a canonical entry: {err}",
                from + i as u64
            ))
        })?;
        segment::encode_frame(&mut bytes, from + i as u64, e);
    }
    let max_entry = meta
        .max_payload
        .saturating_add(crate::entry::ENTRY_HEADER_LEN as u32);
    match segment::scan_with(meta.hash, &bytes, max_entry, 0) {
        Ok(scan)
            if scan.tail == Tail::Clean
                && scan.offsets.len() as u64 + (d.segment << bits) == reach => {}
        Ok(_) => {
            return Err(refuse(
                "the rebuilt open segment does not hold exactly the entries given".into(),
            ))
        }
        Err(e) => {
            return Err(refuse(format!(
                "the rebuilt open segment does not scan: {e}"
            )))
        }
    }
    let evidence = evidence_dir(dir, &format!("refetched-{}", d.segment))?;
    let name = d.file.file_name().unwrap_or_default().to_owned();

    // Prove it on a scratch copy: the sealed segments hard-linked, the new
    // open segment, log.toml and the checkpoint copied; a read-only open
    // checks the checkpoint's root against the repaired tree.
    let scratch = evidence.join("scratch");
    let sseg = scratch.join(crate::store::SEGMENT_DIR);
    fs::create_dir_all(&sseg).map_err(LedgerError::io("create directory", &sseg))?;
    let segdir = dir.join(crate::store::SEGMENT_DIR);
    for ent in fs::read_dir(&segdir).map_err(LedgerError::io("read directory", &segdir))? {
        let ent = ent.map_err(LedgerError::io("read directory", &segdir))?;
        if ent.file_name() == name || ent.path().extension().is_some_and(|e| e == "tmp") {
            continue;
        }
        fs::hard_link(ent.path(), sseg.join(ent.file_name()))
            .or_else(|_| fs::copy(ent.path(), sseg.join(ent.file_name())).map(|_| ()))
            .map_err(LedgerError::io("link", ent.path()))?;
    }
    fs::write(sseg.join(&name), &bytes).map_err(LedgerError::io("write", &sseg))?;
    for f in [crate::store::LOG_FILE, CHECKPOINT_FILE] {
        let p = dir.join(f);
        if p.exists() {
            fs::copy(&p, scratch.join(f)).map_err(LedgerError::io("copy", &p))?;
        }
    }
    let proved = Ledger::open(&scratch, OpenMode::ReadOnly).and_then(|l| {
        if l.damage().is_some() || l.size() != reach {
            return Err(refuse("the repaired copy does not open whole".into()));
        }
        Ok(())
    });
    let _ = fs::remove_dir_all(&scratch);
    proved.map_err(|e| match e {
        LedgerError::RepairRefused(m) => LedgerError::RepairRefused(m),
        e => refuse(format!(
            "the entries given do not make the log whole: {e}; nothing was changed"
        )),
    })?;

    copy_synced(&d.file, &evidence.join(&name))?;
    fsync_dir(&evidence)?;
    fsync_dir(evidence.parent().unwrap_or(dir))?;
    crate::store::write_atomic(&d.file, &bytes)?;
    let rw = Ledger::open_locked(dir, lock)?;
    drop(rw);
    Ok(Replaced {
        segment: d.segment,
        entries: entries.len() as u64,
        evidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CreateOptions;
    use crate::EntryKind;

    fn log(dir: &Path) -> Vec<Vec<u8>> {
        let mut l = Ledger::create(
            dir,
            &CreateOptions {
                segment_bits: 3,
                ..CreateOptions::default()
            },
        )
        .unwrap();
        for i in 0..20u64 {
            let p = format!("entry {i}");
            l.append(1_000 + i, &[(EntryKind::Data, p.as_bytes())])
                .unwrap();
        }
        (0..20).map(|i| l.entry(i).unwrap()).collect()
    }

    fn flip(path: &Path, at: usize) {
        let mut b = fs::read(path).unwrap();
        b[at] ^= 1;
        fs::write(path, b).unwrap();
    }

    #[test]
    fn a_sealed_segment_is_replaced_only_by_its_own_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let entries = log(tmp.path());
        let seg = crate::store::seg_path(tmp.path(), 1, "seg");
        flip(&seg, 100);
        let damaged = fs::read(&seg).unwrap();
        assert!(!Ledger::open(tmp.path(), OpenMode::ReadOnly)
            .unwrap()
            .scrub()
            .unwrap()
            .is_clean());
        // Wrong count, another segment's entries, one entry altered: refused,
        // nothing changed.
        let own: Vec<Vec<u8>> = entries[8..16].to_vec();
        for bad in [own[..7].to_vec(), entries[0..8].to_vec(), {
            let mut v = own.clone();
            v[3] = entries[19].clone();
            v
        }] {
            let e = replace_sealed(tmp.path(), 1, &bad).unwrap_err();
            assert!(matches!(e, LedgerError::RepairRefused(_)), "{e}");
            assert_eq!(fs::read(&seg).unwrap(), damaged);
        }
        // The open segment is not "sealed".
        assert!(replace_sealed(tmp.path(), 2, &entries[16..20]).is_err());
        let r = replace_sealed(tmp.path(), 1, &own).unwrap();
        assert_eq!(
            fs::read(r.evidence.join(format!("{:020}.seg", 1))).unwrap(),
            damaged
        );
        let l = Ledger::open(tmp.path(), OpenMode::ReadOnly).unwrap();
        assert!(l.scrub().unwrap().is_clean());
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(&l.entry(i as u64).unwrap(), e);
        }
    }

    #[test]
    fn an_open_tail_is_rewritten_only_to_the_checkpointed_tree() {
        use base64::Engine;
        let tmp = tempfile::tempdir().unwrap();
        let entries = log(tmp.path());
        {
            let mut l = Ledger::open(tmp.path(), OpenMode::ReadWrite).unwrap();
            let root = l.root_at(19).unwrap();
            let note = format!(
                "dlog/test\n19\n{}\n",
                base64::engine::general_purpose::STANDARD.encode(root)
            );
            l.store_checkpoint(19, root, &note).unwrap();
        }
        let seg = crate::store::seg_path(tmp.path(), 2, "seg");
        let scan = crate::segment::scan(&fs::read(&seg).unwrap(), 1 << 20, 0).unwrap();
        flip(
            &seg,
            scan.offsets[1] as usize + crate::segment::FRAME_HEADER_LEN + 12,
        );
        let damaged = fs::read(&seg).unwrap();
        // Too few (the checkpoint covers 19), altered, at the wrong entry.
        let own = entries[17..20].to_vec();
        let mut altered = own.clone();
        altered[0] = entries[18].clone();
        for (from, given) in [
            (17, own[..1].to_vec()),
            (17, altered),
            (18, own[1..].to_vec()),
        ] {
            let e = replace_open_tail(tmp.path(), from, &given).unwrap_err();
            assert!(matches!(e, LedgerError::RepairRefused(_)), "{e}");
            assert_eq!(fs::read(&seg).unwrap(), damaged, "nothing changed");
        }
        let r = replace_open_tail(tmp.path(), 17, &own).unwrap();
        assert_eq!(
            fs::read(r.evidence.join(seg.file_name().unwrap())).unwrap(),
            damaged
        );
        let l = Ledger::open(tmp.path(), OpenMode::ReadWrite).unwrap();
        assert_eq!(l.size(), 20);
        assert!(l.scrub().unwrap().is_clean());
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(&l.entry(i as u64).unwrap(), e);
        }
    }

    #[test]
    fn a_cut_keeps_every_byte_and_only_at_the_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let entries = log(tmp.path());
        let seg = crate::store::seg_path(tmp.path(), 2, "seg");
        let before = fs::read(&seg).unwrap();
        // Entry 17's frame (the second of segment 2), in its payload.
        let scan = crate::segment::scan(&before, 1 << 20, 0).unwrap();
        let off = scan.offsets[1] as usize;
        flip(&seg, off + crate::segment::FRAME_HEADER_LEN + 12);
        let ro = Ledger::open(tmp.path(), OpenMode::ReadOnly).unwrap();
        assert_eq!(ro.damage().map(|d| d.entry), Some(17));
        assert_eq!(ro.size(), 17);
        assert_eq!(ro.entry(16).unwrap(), entries[16]);
        assert!(ro.entry(18).is_err());
        drop(ro);
        assert!(Ledger::open(tmp.path(), OpenMode::ReadWrite).is_err());
        // No checkpoint is stored by the bare ledger: no --drop-signed needed.
        assert!(cut_at_damage(tmp.path(), 16, false).is_err());
        assert!(cut_at_damage(tmp.path(), 18, false).is_err());
        let cut = cut_at_damage(tmp.path(), 17, false).unwrap();
        let kept = fs::read(cut.evidence.join("cut.bin")).unwrap();
        let now = fs::read(&seg).unwrap();
        assert_eq!(now.len() + kept.len(), before.len());
        assert_eq!(&before[..off], &now[..]);
        let l = Ledger::open(tmp.path(), OpenMode::ReadWrite).unwrap();
        assert_eq!(l.size(), 17);
    }
}
