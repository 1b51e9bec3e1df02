//! Scrub: re-read and re-hash everything, and name exactly what is wrong.

use crate::error::Result;
use crate::segment::{self, SegmentError, Tail};
use crate::store::Ledger;
use dlog_crypto::hash::chain_hash;
use dlog_crypto::tree::AlgTree;
use dlog_crypto::Hash;
use std::path::PathBuf;

/// One problem found by scrub.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Segment number.
    pub segment: u64,
    /// Global index of the entry to blame, when one is.
    pub entry: Option<u64>,
    /// The file holding the damage.
    pub file: PathBuf,
    /// What is wrong.
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "segment {}", self.segment)?;
        if let Some(e) = self.entry {
            write!(f, ", entry {e}")?;
        }
        write!(f, " ({}): {}", self.file.display(), self.detail)
    }
}

/// What scrub checked and found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScrubReport {
    /// Segments read.
    pub segments: u64,
    /// Entries whose frame, CRC and leaf hash were checked.
    pub entries: u64,
    /// Every entry found in the log, intact or damaged: sealed segments
    /// are walked frame by frame past a damaged one, and so is the open
    /// segment past the damage a read-only open stopped at.
    pub entries_total: u64,
    /// Entries whose frame failed its checks.
    pub entries_damaged: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Everything that is wrong; empty means the log is intact.
    pub problems: Vec<Problem>,
}

impl ScrubReport {
    /// True when no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

const MAX_PER_SEGMENT: usize = 16;

impl Ledger {
    /// Re-reads every segment: header, every frame's CRC, every leaf hash
    /// against the node file, every node, every sealed root, the chain, the
    /// offset index, and the stored checkpoint's root.
    pub fn scrub(&self) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let bits = self.meta().segment_bits;
        let max_entry = self
            .meta()
            .max_payload
            .saturating_add(crate::entry::ENTRY_HEADER_LEN as u32);
        let mut prev_chain: Hash = [0; 32];
        let mut min_ts = 0u64;
        for s in 0..self.sealed_segments() {
            let view = self.sealed_view(s).expect("sealed segment exists");
            let (seg, idx, tree, footer) = (view.seg, view.idx, &view.tree[..], view.footer);
            let seg_file = self.segment_path(s, "seg");
            let mut problems = Vec::new();
            let mut push = |entry: Option<u64>, file: &PathBuf, detail: String| {
                if problems.len() < MAX_PER_SEGMENT {
                    problems.push(Problem {
                        segment: s,
                        entry,
                        file: file.clone(),
                        detail,
                    });
                }
            };
            report.segments += 1;
            report.bytes += (seg.len() + idx.len() + tree.len()) as u64;
            let first = s << bits;
            match segment::scan_with(self.meta().hash, seg, max_entry, min_ts) {
                Err(e @ SegmentError::Damaged { .. }) => {
                    // Walk every frame, so that each damaged entry is named
                    // and every intact one counted.
                    let w = walk(seg, segment::HEADER_LEN, first, max_entry);
                    report.entries += w.intact;
                    report.entries_total += w.intact + w.damaged.len() as u64;
                    report.entries_damaged += w.damaged.len() as u64;
                    if w.damaged.is_empty() {
                        push(blame(&e), &seg_file, e.to_string());
                    }
                    for (index, detail) in w.damaged {
                        push(Some(index), &seg_file, detail);
                    }
                    if let Some((index, detail)) = w.lost {
                        push(Some(index), &seg_file, detail);
                    }
                }
                Err(e) => push(blame(&e), &seg_file, e.to_string()),
                Ok(scan) => {
                    report.entries += scan.offsets.len() as u64;
                    report.entries_total += scan.offsets.len() as u64;
                    min_ts = scan.last_timestamp.unwrap_or(min_ts);
                    if scan.header.prev_chain != prev_chain {
                        push(
                            None,
                            &seg_file,
                            "header's previous chain hash is wrong".into(),
                        );
                    }
                    if !matches!(scan.tail, Tail::Sealed(_)) {
                        push(
                            Some(first + scan.offsets.len() as u64),
                            &seg_file,
                            "entry damaged or missing before the footer".into(),
                        );
                    }
                    let idx_file = self.segment_path(s, "idx");
                    for (i, off) in scan.offsets.iter().enumerate() {
                        let stored = idx
                            .get(i * 8..i * 8 + 8)
                            .map(|b| u64::from_be_bytes(b.try_into().expect("8")));
                        if stored != Some(*off) {
                            push(
                                Some(first + i as u64),
                                &idx_file,
                                format!("offset index says {stored:?}, frame is at byte {off}"),
                            );
                        }
                    }
                    let tree_file = self.segment_path(s, "tree");
                    let rebuilt =
                        AlgTree::from_leaves(self.meta().hash, scan.leaves.iter().copied());
                    let mut node_at = 0usize;
                    for level in 0..=bits as u32 {
                        for i in 0..(1u64 << (bits as u32 - level)) {
                            let stored = tree.get(node_at * 32..node_at * 32 + 32);
                            node_at += 1;
                            let ours = rebuilt.node(level, i);
                            if stored.map(|b| b.to_vec()) != ours.map(|h| h.to_vec()) {
                                let entry = (level == 0).then_some(first + i);
                                push(entry, &tree_file, format!("stored node (level {level}, {i}) differs from the entries' hash"));
                            }
                        }
                    }
                    if scan.offsets.len() as u64 == 1 << bits && rebuilt.root() != footer.root {
                        push(
                            None,
                            &seg_file,
                            "entries do not hash to the footer's root".into(),
                        );
                    }
                }
            }
            if footer.chain != chain_hash(s, &footer.root, &prev_chain) {
                push(None, &seg_file, "footer chain hash is wrong".into());
            }
            prev_chain = footer.chain;
            report.problems.extend(problems);
        }
        // The open segment: re-read the file and compare with what is in memory.
        let Some(open) = self.open_view() else {
            return Ok(self.scrub_checkpoint(report));
        };
        let (path, header, offsets, tree, len) =
            (open.path, open.header, open.offsets, open.tree, open.len);
        let s = header.segment;
        report.segments += 1;
        match std::fs::read(path) {
            Err(e) => report.problems.push(Problem {
                segment: s,
                entry: None,
                file: path.to_path_buf(),
                detail: format!("cannot read: {e}"),
            }),
            Ok(bytes) => {
                let bytes = &bytes[..(len as usize).min(bytes.len())];
                report.bytes += bytes.len() as u64;
                let first = s << bits;
                match segment::scan_with(self.meta().hash, bytes, max_entry, min_ts) {
                    Err(e) => report.problems.push(Problem {
                        segment: s,
                        entry: blame(&e),
                        file: path.to_path_buf(),
                        detail: e.to_string(),
                    }),
                    Ok(scan) => {
                        report.entries += scan.offsets.len() as u64;
                        report.entries_total += scan.offsets.len() as u64;
                        if let Some(d) = self.damage() {
                            // Past the damage a read-only open stopped at:
                            // name it and every later damaged frame.
                            if let Ok(full) = std::fs::read(path) {
                                let w = walk(&full, d.offset as usize, d.entry, max_entry);
                                report.entries += w.intact;
                                report.entries_total += w.intact + w.damaged.len() as u64;
                                report.entries_damaged += w.damaged.len() as u64;
                                for (index, detail) in w.damaged.into_iter().take(MAX_PER_SEGMENT) {
                                    report.problems.push(Problem {
                                        segment: s,
                                        entry: Some(index),
                                        file: path.to_path_buf(),
                                        detail,
                                    });
                                }
                                if let Some((index, detail)) = w.lost {
                                    report.problems.push(Problem {
                                        segment: s,
                                        entry: Some(index),
                                        file: path.to_path_buf(),
                                        detail,
                                    });
                                }
                            }
                        }
                        if scan.header.prev_chain != prev_chain {
                            report.problems.push(Problem {
                                segment: s,
                                entry: None,
                                file: path.to_path_buf(),
                                detail: "header's previous chain hash is wrong".into(),
                            });
                        }
                        let n = offsets.len();
                        if scan.offsets.len() < n {
                            report.problems.push(Problem {
                                segment: s,
                                entry: Some(first + scan.offsets.len() as u64),
                                file: path.to_path_buf(),
                                detail: "entry damaged (frame unreadable)".into(),
                            });
                        }
                        for (i, leaf) in scan.leaves.iter().enumerate().take(n) {
                            if tree.leaves().get(i) != Some(leaf) {
                                report.problems.push(Problem {
                                    segment: s,
                                    entry: Some(first + i as u64),
                                    file: path.to_path_buf(),
                                    detail: "entry differs from the one appended".into(),
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(self.scrub_checkpoint(report))
    }

    fn scrub_checkpoint(&self, mut report: ScrubReport) -> ScrubReport {
        let bits = self.meta().segment_bits;
        if let Some(cp) = self.checkpoint() {
            if let Some(d) = self.damage().filter(|_| cp.size > self.size()) {
                report.problems.push(Problem {
                    segment: d.segment,
                    entry: Some(d.entry),
                    file: self.dir().join(crate::store::CHECKPOINT_FILE),
                    detail: format!(
                        "the stored checkpoint covers {} entries; the {} before the damage are readable",
                        cp.size,
                        self.size()
                    ),
                });
                return report;
            }
            match self.root_at(cp.size) {
                Ok(r) if r == cp.root => {}
                _ => report.problems.push(Problem {
                    segment: cp.size.saturating_sub(1) >> bits,
                    entry: None,
                    file: self.dir().join(crate::store::CHECKPOINT_FILE),
                    detail: format!(
                        "stored checkpoint's root for size {} differs from the log",
                        cp.size
                    ),
                }),
            }
        }
        report
    }
}

/// What [`walk`] found.
struct Walk {
    /// Frames that passed every check.
    intact: u64,
    /// Each damaged frame's index and what is wrong.
    damaged: Vec<(u64, String)>,
    /// Where the walk lost the frame boundaries (a damaged length field),
    /// if it did: the entries from there on cannot be located.
    lost: Option<(u64, String)>,
}

/// Walks frames from byte `off` (entry `index`) to the footer or the end,
/// stepping over a damaged frame by its length field (a frame's CRC covers
/// its index, so a resynchronised walk cannot silently skip or misnumber
/// entries). Never panics.
fn walk(bytes: &[u8], mut off: usize, mut index: u64, max_entry: u32) -> Walk {
    let mut w = Walk {
        intact: 0,
        damaged: Vec::new(),
        lost: None,
    };
    loop {
        match segment::read_frame(bytes, off, index, max_entry) {
            segment::Frame::Entry { next, .. } => {
                w.intact += 1;
                off = next;
            }
            segment::Frame::Invalid {
                detail,
                declared_next,
            } if declared_next <= bytes.len() && declared_next > off => {
                w.damaged.push((index, detail));
                off = declared_next;
            }
            segment::Frame::End | segment::Frame::Footer => break,
            _ => {
                w.lost = Some((
                    index,
                    format!("frames from byte {off} on cannot be located (a damaged frame length)"),
                ));
                break;
            }
        }
        index += 1;
    }
    w
}

fn blame(e: &SegmentError) -> Option<u64> {
    match e {
        SegmentError::Damaged { index, .. } => Some(*index),
        _ => None,
    }
}
