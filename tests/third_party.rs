//! DLog's sha256 logs checked by code no one here wrote: the Go team's
//! `golang.org/x/mod/sumdb/note` and `sumdb/tlog` (RFC 6962 SHA-256), on
//! receipts, checkpoints and consistency proofs the real `dlog` binary
//! produced. The Go program is `tests/go/src/dlog.test/tlogcheck`, built
//! here in GOPATH mode against Debian's `golang-golang-x-mod-dev` (no
//! network). `.ci/run` installs both and sets `DLOG_REQUIRE_GO=1`, so CI
//! fails instead of skipping when Go is missing.

mod common;

use common::{expect, expect_err};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the Go oracle, or `None` (with a loud note) when Go or x/mod is
/// not installed and the run does not require them.
fn oracle(out: &Path) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/go");
    let bin = out.join("tlogcheck");
    let gopath = format!("{}:/usr/share/gocode", src.display());
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("dlog.test/tlogcheck")
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOCACHE", out.join("gocache"))
        .output();
    match built {
        Ok(o) if o.status.success() => Some(bin),
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                std::env::var_os("DLOG_REQUIRE_GO").is_none(),
                "the Go oracle does not build: {why}"
            );
            eprintln!(
                "SKIPPED: Go oracle not built ({why}); apt-get install golang-go golang-golang-x-mod-dev"
            );
            None
        }
    }
}

/// Runs the oracle; returns (exit code, stdout + stderr).
fn check(bin: &Path, args: &[&str]) -> (i32, String) {
    let o = Command::new(bin)
        .args(args)
        .output()
        .expect("run tlogcheck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

fn vkey(trust: &Path) -> String {
    voters(trust).remove(0)
}

/// The voter vkeys of a trust file, as it lists them.
fn voters(trust: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(trust).unwrap();
    let list = &text[text.find("voters = [").expect("voters")..];
    let list = &list[..list.find(']').unwrap()];
    list.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn go_sumdb_verifies_sha256_receipts_checkpoints_and_consistency() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(go) = oracle(tmp.path()) else {
        return;
    };
    let dir = tmp.path().join("log");
    expect(&dir, &["init", "--hash", "sha256"], None, 0);
    let trust = dir.join("trust.toml");
    let key = vkey(&trust);
    let mut receipts = Vec::new();
    for i in 0..9 {
        let r = tmp.path().join(format!("r{i}.tlog-proof"));
        let text = format!("entry {i}");
        expect(
            &dir,
            &["append", &text, "--receipt", r.to_str().unwrap()],
            None,
            0,
        );
        receipts.push(r);
        if i == 3 {
            let cp = expect(&dir, &["checkpoint"], None, 0);
            std::fs::write(tmp.path().join("cp4"), cp).unwrap();
        }
    }
    let cp = expect(&dir, &["checkpoint"], None, 0);
    std::fs::write(tmp.path().join("cp9"), cp).unwrap();
    let proof = expect(
        &dir,
        &["proof", "consistency", "--from", "4", "--json"],
        None,
        0,
    );
    std::fs::write(tmp.path().join("proof.json"), proof).unwrap();
    let p = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();

    for r in &receipts {
        let (code, out) = check(&go, &["receipt", "-vkey", &key, r.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {out}", r.display());
    }
    let (code, out) = check(&go, &["note", "-vkey", &key, &p("cp9")]);
    assert_eq!((code, out.contains("size 9")), (0, true), "{out}");
    let (code, out) = check(
        &go,
        &[
            "consistency",
            "-vkey",
            &key,
            &p("cp4"),
            &p("cp9"),
            &p("proof.json"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    // The proof names both signed checkpoints: Go checks it from the JSON
    // alone, given a checkpoint the caller held (--old) or by size.
    for args in [
        vec!["proof", "consistency", "--old", &p("cp4")],
        vec![
            "proof",
            "consistency",
            "--old",
            receipts[2].to_str().unwrap(),
        ],
        vec!["proof", "consistency", "--from", "6", "--to", "8"],
    ] {
        let j = expect(&dir, &args, None, 0);
        std::fs::write(p("named.json"), &j).unwrap();
        let (code, out) = check(&go, &["consistency", "-vkey", &key, &p("named.json")]);
        assert_eq!(code, 0, "{args:?}: {j} {out}");
    }
    let j: serde_json::Value = serde_json::from_str(&expect(
        &dir,
        &["proof", "consistency", "--old", &p("cp4")],
        None,
        0,
    ))
    .unwrap();
    assert_eq!(
        j["old_checkpoint"].as_str(),
        Some(std::fs::read_to_string(p("cp4")).unwrap().as_str())
    );
    // A fork: another log under the same origin and the same key signs
    // a checkpoint of size 6 that the log's own tree does not have.
    let fork = tmp.path().join("fork");
    expect(&fork, &["init", "--hash", "sha256"], None, 0);
    for f in ["node.key", "trust.toml"] {
        std::fs::copy(dir.join(f), fork.join(f)).unwrap();
    }
    for i in 0..6 {
        expect(&fork, &["append", &format!("forked {i}")], None, 0);
    }
    let forked = expect(&fork, &["checkpoint"], None, 0);
    std::fs::write(p("forked-cp"), forked).unwrap();
    let err = expect_err(
        &dir,
        &["proof", "consistency", "--old", &p("forked-cp")],
        None,
        1,
    );
    assert!(err.contains("forked"), "{err}");

    // The oracle is not a rubber stamp: a changed proof hash, another key,
    // and a BLAKE3 log's receipt all fail.
    let text = std::fs::read_to_string(&receipts[5]).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let at = lines.iter().position(|l| l.starts_with("index ")).unwrap() + 1;
    lines[at] = lines[at].replacen(
        &lines[at][..1],
        if &lines[at][..1] == "A" { "B" } else { "A" },
        1,
    );
    std::fs::write(p("bad.tlog-proof"), lines.join("\n") + "\n").unwrap();
    let (code, out) = check(&go, &["receipt", "-vkey", &key, &p("bad.tlog-proof")]);
    assert_eq!(code, 1, "{out}");
    let b3 = tmp.path().join("b3");
    expect(&b3, &["init"], None, 0);
    expect(&b3, &["append", "a"], None, 0);
    expect(
        &b3,
        &["append", "b", "--receipt", &p("b3.tlog-proof")],
        None,
        0,
    );
    let (code, out) = check(
        &go,
        &[
            "receipt",
            "-vkey",
            &vkey(&b3.join("trust.toml")),
            &p("b3.tlog-proof"),
        ],
    );
    assert_eq!(code, 1, "a BLAKE3 tree is not RFC 6962: {out}");
    let other = vkey(&b3.join("trust.toml"));
    let (code, out) = check(&go, &["note", "-vkey", &other, &p("cp9")]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn a_receipt_under_a_trust_file_of_the_other_hash_names_both() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    expect(&dir, &["init", "--hash", "sha256"], None, 0);
    expect(&dir, &["append", "a"], None, 0);
    let r = tmp.path().join("r.tlog-proof");
    expect(
        &dir,
        &["append", "b", "--receipt", r.to_str().unwrap()],
        None,
        0,
    );
    let trust = dir.join("trust.toml");
    let out = expect(
        &dir,
        &[
            "verify",
            "--trust",
            trust.to_str().unwrap(),
            r.to_str().unwrap(),
        ],
        None,
        0,
    );
    assert!(out.contains("verified"), "{out}");
    // The same trust file without its hash line: BLAKE3.
    let text = std::fs::read_to_string(&trust).unwrap();
    let b3 = tmp.path().join("b3-trust.toml");
    std::fs::write(&b3, text.replace("hash = \"sha256\"\n", "")).unwrap();
    let err = expect_err(
        &dir,
        &[
            "verify",
            "--trust",
            b3.to_str().unwrap(),
            r.to_str().unwrap(),
        ],
        None,
        1,
    );
    assert!(err.contains("sha256") && err.contains("blake3"), "{err}");
}

struct Down<'a>(&'a Path);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = common::run(self.0, &["cluster", "down"], None);
    }
}

/// A 3-node sha256 cluster with two auditors: its receipts (a majority of
/// voter signatures, and an auditor's cosignature the Go code ignores) and
/// its consistency proofs verify with Go's sumdb code.
#[test]
fn go_sumdb_verifies_a_sha256_clusters_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(go) = oracle(tmp.path()) else {
        return;
    };
    let dir = tmp.path().join("c");
    expect(
        &dir,
        &[
            "cluster",
            "up",
            "--hash",
            "sha256",
            "--auditors",
            "2",
            "--cosignatures",
            "1",
            "--segment-bits",
            "3",
        ],
        None,
        0,
    );
    let _down = Down(&dir);
    let trust = dir.join("trust.toml");
    assert!(std::fs::read_to_string(&trust)
        .unwrap()
        .contains("hash = \"sha256\""));
    let c = dir.join("client.toml");
    let c = c.to_str().unwrap();
    let nowhere = tmp.path().join("nowhere");
    let mut args = vec!["-quorum".to_string(), "2".to_string()];
    for v in voters(&trust) {
        args.push("-vkey".into());
        args.push(v);
    }
    let lines: String = (0..40).map(|i| format!("line {i}\n")).collect();
    expect(
        &nowhere,
        &["--cluster", c, "append", "--lines"],
        Some(lines.as_bytes()),
        0,
    );
    // A signed checkpoint covering at least `at` entries (checkpoints are
    // signed a moment after the appends they cover).
    let cp = |name: &str, at: u64| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let text = expect(&nowhere, &["--cluster", c, "checkpoint"], None, 0);
            let size: u64 = text.lines().nth(1).unwrap().parse().unwrap();
            if size >= at {
                let p = tmp.path().join(name);
                std::fs::write(&p, text).unwrap();
                return p;
            }
            assert!(std::time::Instant::now() < end, "no checkpoint covers {at}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let old = cp("old", 40);
    for i in 0..3 {
        let r = tmp.path().join(format!("c{i}.tlog-proof"));
        expect(
            &nowhere,
            &[
                "--cluster",
                c,
                "append",
                &format!("more {i}"),
                "--receipt",
                r.to_str().unwrap(),
            ],
            None,
            0,
        );
        let mut a = vec!["receipt".to_string()];
        a.extend(args.iter().cloned());
        a.push(r.to_str().unwrap().into());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, out) = check(&go, &a);
        assert_eq!(code, 0, "{out}");
        // The auditor's own tool agrees (its cosignature is on it).
        expect(
            &nowhere,
            &[
                "verify",
                "--trust",
                trust.to_str().unwrap(),
                r.to_str().unwrap(),
            ],
            None,
            0,
        );
    }
    let new = cp("new", 43);
    let size = |p: &Path| -> String {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let proof = expect(
        &nowhere,
        &[
            "--cluster",
            c,
            "proof",
            "consistency",
            "--from",
            &size(&old),
            "--to",
            &size(&new),
            "--json",
        ],
        None,
        0,
    );
    let pj = tmp.path().join("proof.json");
    std::fs::write(&pj, proof).unwrap();
    let mut a = vec!["consistency".to_string()];
    a.extend(args.iter().cloned());
    for p in [&old, &new, &pj] {
        a.push(p.to_str().unwrap().into());
    }
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (code, out) = check(&go, &a);
    assert_eq!(code, 0, "{out}");
    // From a checkpoint the caller held to the cluster's latest, both
    // notes named in the JSON.
    let named = expect(
        &nowhere,
        &[
            "--cluster",
            c,
            "proof",
            "consistency",
            "--old",
            old.to_str().unwrap(),
        ],
        None,
        0,
    );
    std::fs::write(&pj, &named).unwrap();
    let mut a = vec!["consistency".to_string()];
    a.extend(args.iter().cloned());
    a.push(pj.to_str().unwrap().into());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (code, out) = check(&go, &a);
    assert_eq!(code, 0, "{named} {out}");

    // The cluster published as tiles from a client: Go rebuilds the tree
    // from the bundles; a second export after more appends keeps the
    // full tiles and fetches only what is new.
    // 300 entries, then one with a receipt: it waits for a cosigned
    // checkpoint covering them all (the one an export publishes).
    let more = |tag: &str| {
        let lines: String = (0..300).map(|i| format!("{tag} {i}\n")).collect();
        expect(
            &nowhere,
            &["--cluster", c, "append", "--lines"],
            Some(lines.as_bytes()),
            0,
        );
        let r = tmp.path().join(format!("{tag}.tlog-proof"));
        expect(
            &nowhere,
            &[
                "--cluster",
                c,
                "append",
                tag,
                "--receipt",
                r.to_str().unwrap(),
            ],
            None,
            0,
        );
    };
    more("later");
    let tiles = tmp.path().join("tiles");
    let t = tiles.to_str().unwrap();
    let first: serde_json::Value = serde_json::from_str(&expect(
        &nowhere,
        &["--cluster", c, "tiles", "export", "--out", t, "--json"],
        None,
        0,
    ))
    .unwrap();
    let mut a = vec!["tiles".to_string()];
    a.extend(args.iter().cloned());
    a.push(t.into());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (code, out) = check(&go, &a);
    assert_eq!(code, 0, "{first} {out}");
    assert!(first["size"].as_u64() >= Some(344), "{first}");
    more("last");
    let second: serde_json::Value = serde_json::from_str(&expect(
        &nowhere,
        &["--cluster", c, "tiles", "export", "--out", t, "--json"],
        None,
        0,
    ))
    .unwrap();
    // The first full level-0 tile and its bundle were there already.
    assert!(second["size"].as_u64() >= Some(645), "{second}");
    assert!(second["kept"].as_u64() >= Some(2), "{second}");
    let (code, out) = check(&go, &a);
    assert_eq!(code, 0, "{second} {out}");
    expect(
        &nowhere,
        &["tiles", "verify", t, "--trust", trust.to_str().unwrap()],
        None,
        0,
    );
}

/// `dlog tiles`: a second export writes only what changed, verify names a
/// damaged tile by its path, and another log's directory is refused.
#[test]
fn tiles_export_is_incremental_and_verify_names_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    expect(
        &dir,
        &["init", "--hash", "sha256", "--segment-bits", "6"],
        None,
        0,
    );
    let lines: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    expect(&dir, &["append", "--lines"], Some(lines.as_bytes()), 0);
    let out = tmp.path().join("tiles");
    let o = out.to_str().unwrap();
    let trust = dir.join("trust.toml");
    let t = trust.to_str().unwrap();
    let first = expect(&dir, &["tiles", "export", "--out", o, "--json"], None, 0);
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        (first["size"].as_u64(), first["kept"].as_u64()),
        (Some(1000), Some(0))
    );
    // 1000 leaves: level-0 tiles 0..2 full, 3 partial (232); level 1
    // partial (3); the same for the bundles.
    assert_eq!(first["written"].as_u64(), Some(9));
    expect(&dir, &["tiles", "verify", o, "--trust", t], None, 0);
    let more: String = (0..20).map(|i| format!("more {i}\n")).collect();
    expect(&dir, &["append", "--lines"], Some(more.as_bytes()), 0);
    let second = expect(&dir, &["tiles", "export", "--out", o, "--json"], None, 0);
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    // Only the partial ones change: 003.p, 1/000.p and entries/003.p.
    assert_eq!(
        (second["written"].as_u64(), second["kept"].as_u64()),
        (Some(3), Some(6)),
        "{second}"
    );
    assert!(
        !out.join("tile/0/003.p/232").exists(),
        "a narrower partial tile is removed"
    );
    assert!(out.join("tile/0/003.p/252").exists());
    expect(&dir, &["tiles", "verify", o, "--trust", t], None, 0);
    // One changed byte in a full tile is named.
    let victim = out.join("tile/0/001");
    let mut b = std::fs::read(&victim).unwrap();
    b[100] ^= 1;
    std::fs::write(&victim, b).unwrap();
    let err = expect_err(&dir, &["tiles", "verify", o, "--trust", t], None, 1);
    assert!(err.contains("tile/0/001"), "{err}");
    let mut e = std::fs::read(out.join("tile/entries/002")).unwrap();
    e.truncate(e.len() - 1);
    std::fs::write(out.join("tile/entries/002"), e).unwrap();
    let err = expect_err(&dir, &["tiles", "verify", o, "--trust", t], None, 1);
    assert!(err.contains("tile/entries/002"), "{err}");
    // Another log's tiles are not overwritten.
    let other = tmp.path().join("other");
    expect(
        &other,
        &["init", "--hash", "sha256", "--origin", "dlog/other"],
        None,
        0,
    );
    expect(&other, &["append", "x"], None, 0);
    let err = expect_err(&other, &["tiles", "export", "--out", o], None, 2);
    assert!(
        err.contains("dlog/local") && err.contains("dlog/other"),
        "{err}"
    );
}

/// The tiles served by a plain static HTTP server: a client that reaches
/// only them gets a receipt that verifies.
#[test]
fn proofs_from_tiles_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    expect(&dir, &["init", "--hash", "sha256"], None, 0);
    let lines: String = (0..300).map(|i| format!("line {i}\n")).collect();
    expect(&dir, &["append", "--lines"], Some(lines.as_bytes()), 0);
    let out = tmp.path().join("public");
    expect(
        &dir,
        &["tiles", "export", "--out", out.to_str().unwrap()],
        None,
        0,
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", "-d"])
        .arg(&out)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut server) = server else {
        eprintln!("SKIPPED: no python3 for a static HTTP server");
        return;
    };
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut server);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < end,
            "the HTTP server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}");
    let trust = dir.join("trust.toml");
    let t = trust.to_str().unwrap();
    let r = tmp.path().join("r.tlog-proof");
    let nowhere = tmp.path().join("nowhere");
    expect(
        &nowhere,
        &[
            "proof",
            "inclusion",
            "257",
            "--tiles",
            &url,
            "--trust",
            t,
            "--out",
            r.to_str().unwrap(),
        ],
        None,
        0,
    );
    let v = expect(
        &nowhere,
        &["verify", "--trust", t, r.to_str().unwrap()],
        None,
        0,
    );
    assert!(v.contains("entry 257"), "{v}");
    // A damaged tile on the server is refused, not served as a proof.
    let victim = out.join("tile/0/001.p/44");
    let mut b = std::fs::read(&victim).unwrap();
    b[0] ^= 1;
    std::fs::write(&victim, b).unwrap();
    let err = expect_err(
        &nowhere,
        &["proof", "inclusion", "257", "--tiles", &url, "--trust", t],
        None,
        2,
    );
    assert!(err.contains("root") || err.contains("tile"), "{err}");
}
