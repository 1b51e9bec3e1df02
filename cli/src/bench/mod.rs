//! `dlog bench`: append, proof and verify speed, each next to a baseline
//! measured in the same run (raw fdatasync rate, raw BLAKE3 speed), because
//! shared machines are noisy and only ratios travel.
//!
//! Durable-append figures alternate short windows of the raw-fsync baseline
//! and of the subject, and report medians of the per-window ratio, so a
//! neighbour's burst of disk or CPU use hits both sides of a ratio alike.

pub(crate) mod cluster;
mod etcd;
mod witness;

use anyhow::{Context, Result};
use clap::Args;
use dlog_crypto::tree;
use dlog_crypto::{Blake3Hasher, TreeHasher};
use dlog_ledger::{CreateOptions, EntryKind, GroupCommit, Ledger, OpenMode};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `dlog bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Entries in the log used for the proof benchmark (and the open test).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) entries: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub(crate) payload: usize,
    /// Entries per batch in the bulk append test.
    #[arg(long, default_value_t = 1000)]
    pub(crate) batch: usize,
    /// Concurrent single-entry appenders.
    #[arg(long, default_value_t = 64)]
    pub(crate) appenders: usize,
    /// Seconds per timed phase.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) seconds: f64,
    /// Scratch directory (default: a new directory under the system temp dir).
    #[arg(long)]
    pub(crate) scratch: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
    /// The local log's tree hash: blake3, or sha256 (RFC 6962).
    #[arg(long, default_value = "blake3")]
    pub(crate) hash: dlog_crypto::HashAlg,
    /// With --cluster: batches in flight in the bulk phase (openraft 0.9
    /// keeps one AppendEntries in flight per follower, so a bulk writer needs
    /// several batches queued behind it for each RPC to carry more than one).
    #[arg(long, default_value_t = 8)]
    pub(crate) in_flight: usize,
    /// With --cluster: warm-up seconds before each timed phase.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup: f64,
    /// With --cluster: keep the temporary directory (node data, logs, configs).
    #[arg(long)]
    pub(crate) keep: bool,
    /// With --cluster: skip the etcd baseline.
    #[arg(long)]
    pub(crate) no_etcd: bool,
    /// Only the witness: a `dlog witness run` process under many logs'
    /// add-checkpoint requests, against the raw fdatasync rate.
    #[arg(long)]
    pub(crate) witness: bool,
}

struct Report {
    json: bool,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    fn line(&mut self, key: &str, value: f64, unit: &str, note: &str) {
        if !self.json {
            println!("{key:<36} {value:>14.1} {unit:<10} {note}");
        }
        self.fields
            .insert(key.to_string(), serde_json::json!(value));
    }
}

/// The `p` quantile (0..=1) of sorted durations, in microseconds (0 when empty).
pub(crate) fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// The median (upper middle) of `v`, 0 when empty.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// Raw baseline: `write(4 KiB)` + `fdatasync` on an appending file, per second.
fn fsync_window(path: &Path, window: Duration) -> Result<f64> {
    let start = Instant::now();
    let n = fsync_samples(path, window)?.len();
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Raw baseline: the latency of each `write(4 KiB)` + `fdatasync` on an
/// appending file in `path`, for `window`.
pub(crate) fn fsync_samples(path: &Path, window: Duration) -> Result<Vec<Duration>> {
    let mut f = File::create(path)?;
    let block = [7u8; 4096];
    let start = Instant::now();
    let mut lat = Vec::new();
    while start.elapsed() < window {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        lat.push(t.elapsed());
    }
    std::fs::remove_file(path)?;
    Ok(lat)
}

/// Sequential write bandwidth in bytes/s: `bytes` in 1 MiB writes, then one
/// `fdatasync`, timed together. What the disk absorbs now, in the file
/// system under test.
pub(crate) fn write_bandwidth(path: &Path, bytes: u64) -> Result<f64> {
    let mut f = File::create(path)?;
    let block = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut written = 0u64;
    while written < bytes {
        f.write_all(&block)?;
        written += block.len() as u64;
    }
    f.sync_data()?;
    let rate = written as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok(rate)
}

/// Small-file write bandwidth in bytes/s: `files` files of `size` bytes,
/// 1,000 to a directory, each written to a temporary name and renamed,
/// then one `syncfs` — what a tiles export does per tile, without the log.
/// The files are left in place (deleting thousands of inodes right before
/// a measurement slows the next creations on ext4).
pub(crate) fn files_bandwidth(dir: &Path, files: u64, size: usize) -> Result<f64> {
    let block = vec![0x5au8; size];
    let start = Instant::now();
    for i in 0..files {
        let sub = dir.join(format!("{:03}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let tmp = sub.join(format!(".{:03}.tmp", i % 1000));
        std::fs::write(&tmp, &block)?;
        std::fs::rename(&tmp, sub.join(format!("{:03}", i % 1000)))?;
    }
    dlog_ledger::fsutil::syncfs(dir)?;
    Ok((files * size as u64) as f64 / start.elapsed().as_secs_f64())
}

/// Medians over alternating windows: (subject rate, baseline rate, ratio).
struct Interleaved {
    subject: Vec<f64>,
    baseline: Vec<f64>,
}

impl Interleaved {
    fn run(
        rounds: usize,
        window: Duration,
        fsync_path: &Path,
        mut subject: impl FnMut(Duration) -> Result<f64>,
    ) -> Result<Interleaved> {
        let mut out = Interleaved {
            subject: Vec::new(),
            baseline: Vec::new(),
        };
        for _ in 0..rounds.max(1) {
            out.baseline.push(fsync_window(fsync_path, window / 2)?);
            out.subject.push(subject(window)?);
        }
        Ok(out)
    }

    fn ratio(&self) -> f64 {
        median(
            self.subject
                .iter()
                .zip(&self.baseline)
                .map(|(s, b)| s / b)
                .collect(),
        )
    }
}

/// Runs the benchmark: the embedded log, or with `cluster` (`dlog bench
/// --cluster`) a temporary 3-node cluster and the etcd baseline.
pub fn run(a: &BenchArgs, cluster: bool) -> Result<ExitCode> {
    if cluster && a.witness {
        anyhow::bail!("`dlog bench --witness` runs a witness alone; leave out --cluster");
    }
    if cluster {
        if !(a.warmup >= 0.0 && a.warmup.is_finite()) {
            anyhow::bail!("--warmup must be a number of seconds");
        }
        return cluster::run(
            a,
            &cluster::ClusterOpts {
                in_flight: a.in_flight,
                warmup: Duration::from_secs_f64(a.warmup),
                keep: a.keep,
                no_etcd: a.no_etcd,
            },
        );
    }
    let scratch = match &a.scratch {
        Some(p) => p.clone(),
        None => std::env::temp_dir().join(format!("dlog-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let res = if a.witness {
        witness::run(a.json, &scratch)
    } else {
        run_in(a, &scratch)
    };
    let _ = std::fs::remove_dir_all(&scratch);
    res
}

fn run_in(a: &BenchArgs, scratch: &Path) -> Result<ExitCode> {
    let mut r = Report {
        json: a.json,
        fields: serde_json::Map::new(),
    };
    let phase = Duration::from_secs_f64(a.seconds);
    let window = Duration::from_millis(400);
    let rounds = ((a.seconds / 0.6).round() as usize).max(3);
    let fsync_path = scratch.join("fsync-baseline");
    if !a.json {
        println!(
            "dlog bench: payload {} B, scratch {}",
            a.payload,
            scratch.display()
        );
    }

    // Hashing against raw BLAKE3 over the same entry-sized inputs, and in bulk.
    let entry_len = dlog_ledger::entry::ENTRY_HEADER_LEN + a.payload;
    let inputs: Vec<Vec<u8>> = (0..100_000u64)
        .map(|i| {
            let mut v = vec![(i % 251) as u8; entry_len];
            v[..8].copy_from_slice(&i.to_be_bytes());
            v
        })
        .collect();
    let raw_per_s = {
        let start = Instant::now();
        let mut rounds = 0u64;
        let mut sink = 0u8;
        while start.elapsed() < Duration::from_secs(1) {
            for x in &inputs {
                sink ^= blake3::hash(x).as_bytes()[0];
            }
            rounds += 1;
        }
        std::hint::black_box(sink);
        (rounds * inputs.len() as u64) as f64 / start.elapsed().as_secs_f64()
    };
    let bulk_mb_s = {
        let buf = vec![0x5au8; 64 << 20];
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < Duration::from_secs(1) {
            std::hint::black_box(blake3::hash(&buf));
            n += 1;
        }
        (n * buf.len()) as f64 / start.elapsed().as_secs_f64() / 1e6
    };
    r.line(
        "baseline.blake3_entry_hashes_per_s",
        raw_per_s,
        "hash/s",
        "raw BLAKE3 of each entry, 1 thread",
    );
    r.line(
        "baseline.blake3_bulk_mb_s",
        bulk_mb_s,
        "MB/s",
        "raw BLAKE3 of 64 MiB, 1 thread",
    );
    let sha_per_s = {
        use sha2::Digest;
        let start = Instant::now();
        let mut rounds = 0u64;
        let mut sink = 0u8;
        while start.elapsed() < Duration::from_secs(1) {
            for x in &inputs {
                sink ^= sha2::Sha256::digest(x)[0];
            }
            rounds += 1;
        }
        std::hint::black_box(sink);
        (rounds * inputs.len() as u64) as f64 / start.elapsed().as_secs_f64()
    };
    let sha_ni = {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("sha")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    };
    r.line(
        "baseline.sha256_entry_hashes_per_s",
        sha_per_s,
        "hash/s",
        &format!(
            "raw SHA-256 of each entry, 1 thread ({}); {:.0}% of raw BLAKE3",
            if sha_ni { "SHA-NI" } else { "no SHA-NI" },
            100.0 * sha_per_s / raw_per_s
        ),
    );
    let tree_per_s = {
        let start = Instant::now();
        let mut rounds = 0u64;
        while start.elapsed() < Duration::from_secs(1) {
            let mut t = tree::MemoryTree::<Blake3Hasher>::new();
            for x in &inputs {
                t.push(Blake3Hasher::hash_leaf(x));
            }
            std::hint::black_box(t.root());
            rounds += 1;
        }
        (rounds * inputs.len() as u64) as f64 / start.elapsed().as_secs_f64()
    };
    r.line(
        "hash.leaf_and_tree_per_s",
        tree_per_s,
        "entry/s",
        &format!(
            "{:.0}% of per-entry raw BLAKE3 (ceiling 50%: a leaf and a node hash per entry); {:.0}% of bulk",
            100.0 * tree_per_s / raw_per_s,
            100.0 * tree_per_s * entry_len as f64 / 1e6 / bulk_mb_s
        ),
    );

    // Bulk durable append: batches of `batch` entries, one fdatasync each.
    let dir = scratch.join("log");
    let opts = CreateOptions {
        origin: "dlog/bench".into(),
        hash: a.hash,
        ..CreateOptions::default()
    };
    let mut ledger = Ledger::create(&dir, &opts)?;
    let payload = vec![b'x'; a.payload];
    let batch: Vec<(EntryKind, &[u8])> = (0..a.batch)
        .map(|_| (EntryKind::Data, payload.as_slice()))
        .collect();
    let mut lat = Vec::new();
    let bulk = Interleaved::run(rounds, window, &fsync_path, |w| {
        let start = Instant::now();
        let before = ledger.size();
        while start.elapsed() < w {
            let t = Instant::now();
            ledger.append(dlog_ledger::now_ns(), &batch)?;
            lat.push(t.elapsed());
        }
        Ok((ledger.size() - before) as f64 / start.elapsed().as_secs_f64())
    })?;
    lat.sort();
    r.line(
        "baseline.fsync_per_s",
        median(bulk.baseline.clone()),
        "fsync/s",
        "raw write(4 KiB)+fdatasync, median of windows",
    );
    r.line(
        "append.batch_entries_per_s",
        median(bulk.subject.clone()),
        "entry/s",
        &format!(
            "batches of {}; {:.0} entries per raw fsync",
            a.batch,
            bulk.ratio()
        ),
    );
    r.line(
        "append.batch_p50_us",
        pct(&lat, 0.5),
        "us",
        "per durable batch",
    );
    r.line(
        "append.batch_p99_us",
        pct(&lat, 0.99),
        "us",
        "per durable batch (includes segment seals)",
    );

    // Fill up to the requested size for the proof benchmark.
    while ledger.size() < a.entries {
        let n = (a.entries - ledger.size()).min(a.batch as u64) as usize;
        ledger.append(dlog_ledger::now_ns(), &batch[..n])?;
    }
    let size = ledger.size();
    drop(ledger);

    // Open time and idle memory, in fresh processes.
    let exe = std::env::current_exe()?;
    let t = Instant::now();
    let status = std::process::Command::new(&exe)
        .arg("--dir")
        .arg(&dir)
        .args(["get", &(size - 1).to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(status.success(), "dlog get failed on the bench log");
    r.line(
        "open.process_ms",
        open_ms,
        "ms",
        &format!("new process: open {size} entries + read the last"),
    );
    if let Some(rss) = idle_rss_mb(&exe, &dir)? {
        r.line(
            "open.idle_rss_mb",
            rss,
            "MB",
            "`dlog tail -f` holding the log open",
        );
    }
    let t = Instant::now();
    let ledger = Ledger::open(&dir, OpenMode::ReadWrite)?;
    r.line(
        "open.in_process_ms",
        t.elapsed().as_secs_f64() * 1e3,
        "ms",
        "Ledger::open, read-write",
    );

    // Inclusion proofs at the full size, random indices, one core.
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let root = ledger.root_at(size)?;
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut proofs = Vec::new();
    while start.elapsed() < phase.min(Duration::from_secs(2)) {
        for _ in 0..1000 {
            let i = next() % size;
            let t = Instant::now();
            let p = ledger.inclusion_proof(i, size)?;
            lat.push(t.elapsed());
            if proofs.len() < 10_000 {
                proofs.push((i, p));
            }
        }
    }
    let proof_rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    r.line(
        "proof.inclusion_per_s",
        proof_rate,
        "proof/s",
        &format!("size {size}, no payload reads"),
    );
    r.line("proof.inclusion_p50_us", pct(&lat, 0.5), "us", "");
    r.line("proof.inclusion_p99_us", pct(&lat, 0.99), "us", "");

    // Verification.
    let leaves: Vec<_> = proofs
        .iter()
        .map(|(i, _)| ledger.leaf_hash(*i))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for ((i, p), leaf) in proofs.iter().zip(&leaves) {
            tree::verify_inclusion_with(a.hash, leaf, *i, size, p, &root)?;
            n += 1;
        }
    }
    let verify_rate = n as f64 / start.elapsed().as_secs_f64();
    r.line("verify.inclusion_per_s", verify_rate, "proof/s", "");

    // C2SP tiles: a full export against the disk's raw write bandwidth,
    // then an incremental one after 1,000 more entries.
    let bw = write_bandwidth(&scratch.join("write-baseline"), 256 << 20)? / 1e6;
    r.line(
        "baseline.write_mb_s",
        bw,
        "MB/s",
        "raw sequential write of 256 MiB + fsync",
    );
    let tiles_dir = scratch.join("tiles");
    let body = |size: u64, root: &[u8; 32]| {
        dlog_crypto::note::Checkpoint::new("dlog/bench", size, *root)
            .map(|c| c.to_body())
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    // The same number of files of the same mean size, written the way an
    // export writes them: the ceiling file creation sets on this disk.
    let tiles = dlog_ledger::tiles::tiles_of(size);
    let mean = size * (entry_len as u64 + 2 + 32) / tiles.len().max(1) as u64;
    let files_bw = files_bandwidth(
        &scratch.join("files-baseline"),
        tiles.len() as u64,
        mean as usize,
    )? / 1e6;
    r.line(
        "baseline.files_mb_s",
        files_bw,
        "MB/s",
        &format!(
            "{} files of {mean} bytes (temp + rename, one syncfs), as many as the export writes",
            tiles.len()
        ),
    );
    let t = Instant::now();
    let full = dlog_ledger::tiles::export_at(&ledger, &tiles_dir, size, &body(size, &root)?)?;
    let secs = t.elapsed().as_secs_f64();
    let mb_s = full.bytes as f64 / secs / 1e6;
    r.line(
        "tiles.export_mb_s",
        mb_s,
        "MB/s",
        &format!(
            "{} tiles, {:.0} MB of {size} entries in {secs:.2} s; {:.0}% of raw write, {:.0}% of the same files written bare",
            full.written,
            full.bytes as f64 / 1e6,
            100.0 * mb_s / bw,
            100.0 * mb_s / files_bw
        ),
    );
    // Inclusion proofs from the tiles directory alone (each tile read once).
    {
        let base = tiles_dir.clone();
        let mut reader = dlog_ledger::tiles::TileReader::new(a.hash, size, move |p: &str| {
            std::fs::read(base.join(p))
        });
        // Cold: every proof of a new leaf tile reads it and hashes its 255
        // interior nodes. Warm: the same entries again, every tile cached
        // (a client proving entries it already fetched tiles for).
        let mut asked = Vec::new();
        let start = Instant::now();
        while start.elapsed() < phase.min(Duration::from_secs(2)) {
            for _ in 0..1000 {
                let i = next() % size;
                std::hint::black_box(reader.inclusion_proof(i, size)?);
                asked.push(i);
            }
        }
        let cold = asked.len() as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        for &i in &asked {
            std::hint::black_box(reader.inclusion_proof(i, size)?);
        }
        let warm = asked.len() as f64 / start.elapsed().as_secs_f64();
        r.line(
            "tiles.inclusion_cold_per_s",
            cold,
            "proof/s",
            &format!("random entries of {size}, from the tiles directory, 1 thread"),
        );
        r.line(
            "tiles.inclusion_warm_per_s",
            warm,
            "proof/s",
            "the same entries again, tiles cached",
        );
    }
    drop(ledger);
    let mut ledger = Ledger::open(&dir, OpenMode::ReadWrite)?;
    ledger.append(dlog_ledger::now_ns(), &batch[..1000.min(batch.len())])?;
    let grown = ledger.size();
    let groot = ledger.root_at(grown)?;
    let t = Instant::now();
    let inc = dlog_ledger::tiles::export_at(&ledger, &tiles_dir, grown, &body(grown, &groot)?)?;
    r.line(
        "tiles.incremental_written",
        inc.written as f64,
        "tiles",
        &format!(
            "after {} more entries: {} written, {} kept, {:.1} ms",
            grown - size,
            inc.written,
            inc.kept,
            t.elapsed().as_secs_f64() * 1e3
        ),
    );
    drop(ledger);

    // Concurrent single-entry appenders sharing fsyncs (group commit). They
    // pause while the baseline window runs.
    let gc = Arc::new(GroupCommit::new(
        Ledger::open(&dir, OpenMode::ReadWrite)?,
        dlog_ledger::now_ns,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(true));
    let done = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for _ in 0..a.appenders {
        let (gc, stop, paused, done, lat) = (
            gc.clone(),
            stop.clone(),
            paused.clone(),
            done.clone(),
            lat.clone(),
        );
        let payload = payload.clone();
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if paused.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let t = Instant::now();
                gc.append(EntryKind::Data, payload.clone())
                    .map_err(|e| e.to_string())?;
                mine.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            lat.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
            Ok(())
        }));
    }
    let conc = Interleaved::run(rounds, window, &fsync_path, |w| {
        let before = done.load(Ordering::Relaxed);
        let start = Instant::now();
        paused.store(false, Ordering::Relaxed);
        std::thread::sleep(w);
        paused.store(true, Ordering::Relaxed);
        let n = done.load(Ordering::Relaxed) - before;
        let rate = n as f64 / start.elapsed().as_secs_f64();
        // Let in-flight appends land before the baseline window.
        std::thread::sleep(Duration::from_millis(20));
        Ok(rate)
    })?;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("appender thread panicked"))?
            .map_err(anyhow::Error::msg)?;
    }
    let mut lat = std::mem::take(&mut *lat.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort();
    r.line(
        "append.concurrent_per_s",
        median(conc.subject.clone()),
        "append/s",
        &format!(
            "{} appenders; {:.1}x raw fsync rate (median of {} windows)",
            a.appenders,
            conc.ratio(),
            conc.subject.len()
        ),
    );
    r.line("append.concurrent_p50_us", pct(&lat, 0.5), "us", "");
    r.line("append.concurrent_p99_us", pct(&lat, 0.99), "us", "");

    // Single appender latency.
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < phase.min(Duration::from_secs(1)) {
        let t = Instant::now();
        gc.append(EntryKind::Data, payload.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        lat.push(t.elapsed());
    }
    lat.sort();
    r.line(
        "append.single_p50_us",
        pct(&lat, 0.5),
        "us",
        "one appender, durable",
    );
    r.line("append.single_p99_us", pct(&lat, 0.99), "us", "");
    if a.json {
        println!("{}", serde_json::Value::Object(r.fields));
    }
    Ok(ExitCode::SUCCESS)
}

/// Resident memory of a `dlog tail -f` process holding the log open, once idle.
fn idle_rss_mb(exe: &Path, dir: &Path) -> Result<Option<f64>> {
    let mut child = std::process::Command::new(exe)
        .arg("--dir")
        .arg(dir)
        .args(["tail", "-f", "-n", "0"])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(700));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok();
    let _ = child.kill();
    let _ = child.wait();
    Ok(status.and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }))
}
