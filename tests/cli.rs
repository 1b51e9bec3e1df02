//! Black-box tests of the `dlog` binary: real processes, real files.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

fn init(bits: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    expect(
        &dir,
        &["init", "--origin", "dlog/test", "--segment-bits", bits],
        None,
        0,
    );
    tmp
}

fn data(t: &tempfile::TempDir) -> std::path::PathBuf {
    t.path().join("data")
}

#[test]
fn init_writes_key_and_trust() {
    let t = init("4");
    let d = data(&t);
    let mode = std::fs::metadata(d.join("node.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let trust = std::fs::read_to_string(d.join("trust.toml")).unwrap();
    assert!(trust.contains("origin = \"dlog/test\""), "{trust}");
    assert!(trust.contains("quorum = 1"));
    // A second init refuses and leaves the log alone.
    let err = expect_err(&d, &["init"], None, 2);
    assert!(err.contains("already"), "{err}");
    // The initial checkpoint is for the empty tree.
    let cp = expect(&d, &["checkpoint"], None, 0);
    assert!(cp.starts_with("dlog/test\n0\n"), "{cp}");
}

#[test]
fn append_get_tail_and_receipts() {
    let t = init("3");
    let d = data(&t);
    assert_eq!(expect(&d, &["append", "hello"], None, 0).trim(), "0");
    assert_eq!(expect(&d, &["append"], Some(b"from stdin"), 0).trim(), "1");
    let f = t.path().join("blob.bin");
    std::fs::write(&f, [0u8, 1, 2, 255]).unwrap();
    let j = json_lines(&expect(
        &d,
        &["append", "--json", "--file", f.to_str().unwrap()],
        None,
        0,
    ));
    assert_eq!(j[0]["index"], 2);
    assert_eq!(expect(&d, &["get", "0"], None, 0), "hello\n");
    let e = json_lines(&expect(&d, &["get", "2", "--json"], None, 0));
    assert_eq!(b64(e[0]["payload"].as_str().unwrap()), vec![0u8, 1, 2, 255]);
    let lines: String = (0..100).map(|i| format!("line {i}\n")).collect();
    let out = expect(&d, &["append", "--lines"], Some(lines.as_bytes()), 0);
    let idx: Vec<u64> = out.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(idx, (3..103).collect::<Vec<_>>());
    assert_eq!(
        expect(&d, &["tail", "-n", "2"], None, 0),
        "line 98\nline 99\n"
    );
    let e = expect_err(&d, &["get", "103"], None, 2);
    assert!(e.contains("does not exist"), "{e}");

    // Receipt at append time, verified offline with only the trust file.
    let receipt = t.path().join("r.tlog-proof");
    expect(
        &d,
        &[
            "append",
            "important",
            "--receipt",
            receipt.to_str().unwrap(),
        ],
        None,
        0,
    );
    let trust = d.join("trust.toml");
    let nowhere = t.path().join("no-such-dir");
    let ok = expect(
        &nowhere,
        &[
            "verify",
            "--trust",
            trust.to_str().unwrap(),
            receipt.to_str().unwrap(),
        ],
        None,
        0,
    );
    assert!(ok.contains("verified"), "{ok}");
    let text = std::fs::read_to_string(&receipt).unwrap();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "), "{text}");

    // Receipts for old entries, in both formats.
    let r2 = t.path().join("r2.json");
    expect(
        &d,
        &[
            "proof",
            "inclusion",
            "5",
            "--json",
            "--out",
            r2.to_str().unwrap(),
        ],
        None,
        0,
    );
    expect(
        &nowhere,
        &[
            "verify",
            "--trust",
            trust.to_str().unwrap(),
            r2.to_str().unwrap(),
        ],
        None,
        0,
    );
    let r3 = expect(&d, &["proof", "inclusion", "7", "--size", "50"], None, 0);
    assert!(r3.contains("\nindex 7\n"));
    let r3p = t.path().join("r3.tlog-proof");
    std::fs::write(&r3p, r3).unwrap();
    expect(
        &nowhere,
        &[
            "verify",
            "--trust",
            trust.to_str().unwrap(),
            r3p.to_str().unwrap(),
        ],
        None,
        0,
    );
}

#[test]
fn verify_fails_on_any_tampering_and_rejects_garbage() {
    let t = init("3");
    let d = data(&t);
    let lines: String = (0..40).map(|i| format!("e{i}\n")).collect();
    expect(&d, &["append", "--lines"], Some(lines.as_bytes()), 0);
    let receipt = t.path().join("r.tlog-proof");
    expect(
        &d,
        &[
            "proof",
            "inclusion",
            "13",
            "--out",
            receipt.to_str().unwrap(),
        ],
        None,
        0,
    );
    let trust = d.join("trust.toml").to_str().unwrap().to_string();
    let good = std::fs::read_to_string(&receipt).unwrap();
    let bad_path = t.path().join("bad.tlog-proof");
    // Changing the index, a proof hash, the entry or the checkpoint fails (exit 1).
    let proof_line = good.lines().nth(3).unwrap().to_string();
    let mut flipped = proof_line.clone().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let cases = [
        good.replace("\nindex 13\n", "\nindex 12\n"),
        good.replacen(&proof_line, std::str::from_utf8(&flipped).unwrap(), 1),
        good.replacen("\n40\n", "\n41\n", 1),
    ];
    for (i, bad) in cases.iter().enumerate() {
        assert_ne!(bad, &good, "case {i} did not change the receipt");
        std::fs::write(&bad_path, bad).unwrap();
        let err = expect_err(
            &d,
            &["verify", "--trust", &trust, bad_path.to_str().unwrap()],
            None,
            1,
        );
        assert!(err.contains("FAILED"), "case {i}: {err}");
    }
    // Garbage is an input error (exit 2).
    std::fs::write(&bad_path, "not a receipt\n").unwrap();
    expect_err(
        &d,
        &["verify", "--trust", &trust, bad_path.to_str().unwrap()],
        None,
        2,
    );
    // Another log's trust file: verification fails.
    let other = init("3");
    let other_trust = data(&other).join("trust.toml");
    let err = expect_err(
        &d,
        &[
            "verify",
            "--trust",
            other_trust.to_str().unwrap(),
            receipt.to_str().unwrap(),
        ],
        None,
        1,
    );
    assert!(!err.is_empty());
}

#[test]
fn consistency_proofs_verify() {
    let t = init("2");
    let d = data(&t);
    let lines: String = (0..37).map(|i| format!("c{i}\n")).collect();
    expect(&d, &["append", "--lines"], Some(lines.as_bytes()), 0);
    for (m, n) in [
        (0u64, 37u64),
        (1, 37),
        (4, 37),
        (13, 30),
        (37, 37),
        (16, 32),
    ] {
        let j = json_lines(&expect(
            &d,
            &[
                "proof",
                "consistency",
                "--from",
                &m.to_string(),
                "--to",
                &n.to_string(),
                "--json",
            ],
            None,
            0,
        ))
        .remove(0);
        assert_eq!(j["old_size"], m);
        let h =
            |v: &serde_json::Value| -> [u8; 32] { b64(v.as_str().unwrap()).try_into().unwrap() };
        let proof: Vec<[u8; 32]> = j["proof"].as_array().unwrap().iter().map(h).collect();
        dlog_crypto::tree::verify_consistency::<dlog_crypto::Blake3Hasher>(
            m,
            n,
            &h(&j["old_root"]),
            &h(&j["new_root"]),
            &proof,
        )
        .unwrap();
    }
    expect_err(
        &d,
        &["proof", "consistency", "--from", "30", "--to", "20"],
        None,
        2,
    );
}

#[test]
fn notarize_and_verify_files() {
    let t = init("4");
    let d = data(&t);
    let a = t.path().join("a.pdf");
    let b = t.path().join("b.txt");
    std::fs::write(&a, b"%PDF-1.7 pretend").unwrap();
    std::fs::write(&b, b"contract text").unwrap();
    expect(
        &d,
        &[
            "notarize",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--label",
            "Q3",
        ],
        None,
        0,
    );
    let trust = d.join("trust.toml").to_str().unwrap().to_string();
    for f in [&a, &b] {
        let r = format!("{}.tlog-proof", f.display());
        let ok = expect(
            &d,
            &[
                "notary",
                "verify",
                f.to_str().unwrap(),
                &r,
                "--trust",
                &trust,
            ],
            None,
            0,
        );
        assert!(ok.contains("verified"), "{ok}");
    }
    // SHA-256 and --out DIR.
    let outdir = t.path().join("receipts");
    std::fs::create_dir(&outdir).unwrap();
    expect(
        &d,
        &[
            "notarize",
            "--alg",
            "sha256",
            "--out",
            outdir.to_str().unwrap(),
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
        None,
        0,
    );
    let r = outdir.join("b.txt.tlog-proof");
    expect(
        &d,
        &[
            "notary",
            "verify",
            b.to_str().unwrap(),
            r.to_str().unwrap(),
            "--trust",
            &trust,
        ],
        None,
        0,
    );
    let e = json_lines(&expect(&d, &["get", "2", "--json"], None, 0)).remove(0);
    assert_eq!(e["kind"], "notarization");
    assert!(e["text"]
        .as_str()
        .unwrap()
        .starts_with("dlog-notary/v1\nsha256 "));
    // A changed document fails; a receipt for another document fails.
    std::fs::write(&b, b"contract text, amended").unwrap();
    expect_err(
        &d,
        &[
            "notary",
            "verify",
            b.to_str().unwrap(),
            r.to_str().unwrap(),
            "--trust",
            &trust,
        ],
        None,
        1,
    );
    let ra = format!("{}.tlog-proof", a.display());
    expect_err(
        &d,
        &[
            "notary",
            "verify",
            b.to_str().unwrap(),
            &ra,
            "--trust",
            &trust,
        ],
        None,
        1,
    );
}

#[test]
fn tampered_byte_on_disk_is_found_by_scrub_and_get() {
    let t = init("3");
    let d = data(&t);
    let lines: String = (0..20).map(|i| format!("payload-{i:04}\n")).collect();
    expect(&d, &["append", "--lines"], Some(lines.as_bytes()), 0);
    assert!(expect(&d, &["scrub"], None, 0).contains("0 problem"));
    // Entry 9 lives in sealed segment 1 (8 entries per segment).
    let seg = d.join("segments").join(format!("{:020}.seg", 1));
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(12)
        .position(|w| w == b"payload-0009")
        .unwrap();
    bytes[at + 8] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let out = run(&d, &["scrub"], None);
    assert_eq!(out.status.code(), Some(1));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("segment 1, entry 9"), "{s}");
    let err = expect_err(&d, &["get", "9"], None, 1);
    assert!(err.contains("entry 9"), "{err}");
    expect(&d, &["get", "8"], None, 0);
    // Damage in the open segment's middle is found too, and appends refuse.
    let seg = d.join("segments").join(format!("{:020}.seg", 2));
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(12)
        .position(|w| w == b"payload-0017")
        .unwrap();
    bytes[at + 3] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let err = expect_err(&d, &["append", "more"], None, 1);
    assert!(err.contains("entry 17"), "{err}");
}

#[test]
fn bad_input_gets_clear_errors_and_loses_nothing() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    expect(&d, &["init", "--max-payload", "16"], None, 0);
    expect(&d, &["append", "short"], None, 0);
    let e = expect_err(&d, &["append", "this payload is far too long"], None, 2);
    assert!(e.contains("exceeds the limit"), "{e}");
    // Foreign file in the segment directory.
    std::fs::write(d.join("segments").join("stray.txt"), b"x").unwrap();
    let e = expect_err(&d, &["append", "x"], None, 2);
    assert!(e.contains("stray.txt"), "{e}");
    std::fs::remove_file(d.join("segments").join("stray.txt")).unwrap();
    // A key file readable by others is refused.
    let key = d.join("node.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = expect_err(&d, &["append", "x"], None, 2);
    assert!(e.contains("node.key"), "{e}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // No log at all.
    let e = expect_err(&t.path().join("nothing"), &["get", "0"], None, 2);
    assert!(e.contains("dlog init"), "{e}");
    // Nothing was lost.
    assert_eq!(expect(&d, &["get", "0"], None, 0), "short\n");
    assert_eq!(expect(&d, &["append", "ok"], None, 0).trim(), "1");
    assert!(expect(&d, &["scrub"], None, 0).contains("0 problem"));
}

/// Mounts a small tmpfs (needs root: CI runs as root; elsewhere says so and
/// checks nothing). Unmounted on drop.
struct SmallFs {
    path: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
            return None;
        }
        Some(SmallFs { path, _tmp: tmp })
    }

    fn remount(&self, opt: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn disk_full_and_read_only_filesystem_lose_nothing() {
    let Some(fs) = SmallFs::mount("400k") else {
        return;
    };
    let d = fs.path.join("data");
    expect(&d, &["init", "--segment-bits", "6"], None, 0);
    // Fill the disk with acknowledged entries until a write is refused.
    let mut acked = Vec::new();
    let mut refused = None;
    for round in 0..400 {
        let lines: String = (0..50)
            .map(|i| format!("r{round:03} {i:02} {}\n", "z".repeat(60)))
            .collect();
        let out = run(&d, &["append", "--lines"], Some(lines.as_bytes()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for (k, l) in text.lines().enumerate() {
            acked.push((
                l.parse::<u64>().unwrap(),
                lines.lines().nth(k).unwrap().to_string(),
            ));
        }
        if !out.status.success() {
            refused = Some((
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
            break;
        }
    }
    let (code, err) = refused.expect("a 400 KiB file system fills up");
    eprintln!("refused after {} entries: {err}", acked.len());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("No space left"), "{err}");
    // Everything acknowledged is intact; the log still opens and verifies.
    assert_entries(&d, &acked);
    // Read-only file system: writes get a clear error, reads work.
    fs.remount("ro");
    let err = expect_err(&d, &["append", "x"], None, 2);
    assert!(err.contains("Read-only file system"), "{err}");
    expect(&d, &["get", "0"], None, 0);
    // Room again: appends resume and the log scrubs clean.
    fs.remount("rw,size=8m");
    expect(&d, &["append", "after"], None, 0);
    assert!(expect(&d, &["scrub"], None, 0).contains("0 problem"));
}

#[test]
fn transport_keys_are_private_and_never_overwritten() {
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("wg.key");
    let k = key.to_str().unwrap();
    let out = json_lines(&expect(
        t.path(),
        &["keys", "gen", "--out", k, "--json"],
        None,
        0,
    ))
    .remove(0);
    assert_eq!(b64(out["public_key"].as_str().unwrap()).len(), 32);
    assert_eq!(
        b64(out["kem_public_key"].as_str().unwrap()).len(),
        1184,
        "ML-KEM-768 encapsulation key"
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&key).unwrap();
    let e = expect_err(t.path(), &["keys", "gen", "--out", k], None, 2);
    assert!(e.contains("exists"), "{e}");
    assert_eq!(std::fs::read(&key).unwrap(), before);
    let shown = json_lines(&expect(t.path(), &["keys", "show", k, "--json"], None, 0)).remove(0);
    assert_eq!(shown["public_key"], out["public_key"]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = expect_err(t.path(), &["keys", "show", k], None, 2);
    assert!(e.contains("chmod 600"), "{e}");
}

#[test]
fn tail_works_on_a_log_without_checkpoint_file() {
    let t = init("4");
    let d = data(&t);
    expect(&d, &["append", "--lines"], Some(b"a\nb\nc\n"), 0);
    std::fs::remove_file(d.join("checkpoint")).unwrap();
    assert_eq!(expect(&d, &["tail", "-n", "2"], None, 0), "b\nc\n");
    let e = expect_err(&d, &["checkpoint"], None, 2);
    assert!(e.contains("no checkpoint"), "{e}");
    // The next write signs a fresh one.
    expect(&d, &["append", "d"], None, 0);
    assert!(expect(&d, &["checkpoint"], None, 0).starts_with("dlog/test\n4\n"));
}
