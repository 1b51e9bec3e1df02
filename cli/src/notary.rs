//! `dlog notary verify --receipts DIR`: every receipt under a directory
//! against its document, offline, in parallel across cores.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};

/// The suffix of a receipt file.
pub const RECEIPT_SUFFIX: &str = ".tlog-proof";

/// Every `*.tlog-proof` under `dir`, recursively, sorted; symlinks are not
/// followed (a receipt tree is plain files).
fn receipts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?;
        for ent in rd {
            let ent = ent.with_context(|| format!("cannot read {}", d.display()))?;
            let ty = ent
                .file_type()
                .with_context(|| format!("cannot read {}", ent.path().display()))?;
            let p = ent.path();
            if ty.is_dir() {
                stack.push(p);
            } else if ty.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(RECEIPT_SUFFIX) && n.len() > RECEIPT_SUFFIX.len())
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One receipt's outcome.
struct Outcome {
    document: PathBuf,
    receipt: PathBuf,
    /// Entry index and tree size, or why it failed (and whether the input
    /// was unreadable rather than failing verification).
    result: std::result::Result<(u64, u64), (String, bool)>,
}

fn check(policy: &dlog_crypto::trust::TrustPolicy, receipt: &Path, document: &Path) -> Outcome {
    let result = (|| {
        let r = crate::read_receipt(receipt).map_err(|e| (format!("{e:#}"), true))?;
        if !document.is_file() {
            return Err((format!("document {} is missing", document.display()), true));
        }
        match dlog_notary::verify::verify_notarized_file(policy, &r, document) {
            Ok(v) => Ok((v.index(), v.checkpoint().checkpoint().size)),
            Err(e) => Err((e.to_string(), e.is_malformed())),
        }
    })();
    Outcome {
        document: document.to_path_buf(),
        receipt: receipt.to_path_buf(),
        result,
    }
}

/// Verifies every receipt under `dir` against its document under `files`
/// (default `dir`: receipts beside their documents). Prints one line per
/// document in path order and a summary; exit 1 if any fails.
pub fn verify_many(dir: &Path, files: Option<&Path>, trust: &Path, json: bool) -> Result<ExitCode> {
    let policy = crate::backend::load_trust(trust)?;
    let receipts = receipts_under(dir)?;
    if receipts.is_empty() {
        bail!("no receipts (*{RECEIPT_SUFFIX}) under {}", dir.display());
    }
    let files = files.unwrap_or(dir);
    let jobs: Vec<(PathBuf, PathBuf)> = receipts
        .into_iter()
        .map(|r| {
            use std::os::unix::ffi::OsStrExt;
            let rel = r.strip_prefix(dir).unwrap_or(&r);
            let name = rel.as_os_str().as_bytes();
            let doc = std::ffi::OsStr::from_bytes(&name[..name.len() - RECEIPT_SUFFIX.len()]);
            (r.clone(), files.join(doc))
        })
        .collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    let next = AtomicUsize::new(0);
    let mut outcomes: Vec<(usize, Outcome)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((r, d)) = jobs.get(i) else {
                            break done;
                        };
                        done.push((i, check(&policy, r, d)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    outcomes.sort_by_key(|(i, _)| *i);
    let (mut ok, mut failed, mut unreadable) = (0u64, 0u64, 0u64);
    for (_, o) in outcomes {
        match &o.result {
            Ok((index, size)) => {
                ok += 1;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"document": o.document, "receipt": o.receipt, "verified": true, "index": index, "tree_size": size})
                    );
                } else {
                    println!(
                        "ok      {}  (entry {index}, tree size {size})",
                        o.document.display()
                    );
                }
            }
            Err((why, malformed)) => {
                if *malformed {
                    unreadable += 1;
                } else {
                    failed += 1;
                }
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"document": o.document, "receipt": o.receipt, "verified": false, "error": why})
                    );
                } else {
                    println!("FAILED  {}: {why}", o.document.display());
                }
            }
        }
    }
    eprintln!(
        "dlog: {ok} verified, {failed} failed verification, {unreadable} unreadable or missing (of {})",
        ok + failed + unreadable
    );
    Ok(if failed + unreadable > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The receipt path beside a document: `x.txt` → `x.txt.tlog-proof`.
pub fn beside(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(RECEIPT_SUFFIX);
    PathBuf::from(s)
}
