//! The ways a real user's day goes wrong, with the real binary: a closed
//! stdout, receipts that would clash, an acknowledged append whose
//! cosignatures are late, a second auditor on one state directory.

mod common;

use common::{expect, expect_err};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn dlog_in(dir: &Path) -> Command {
    let mut c = common::dlog(dir);
    c.stdin(Stdio::null());
    c
}

/// `dlog notarize many --out r | head -1`: the reader goes away at once;
/// no panic, and every receipt is there.
#[test]
fn a_closed_stdout_costs_no_receipt_and_no_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("log");
    expect(&d, &["init"], None, 0);
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let mut names = Vec::new();
    for i in 0..300 {
        let f = files.join(format!("f{i}.txt"));
        std::fs::write(&f, format!("document {i}")).unwrap();
        names.push(f);
    }
    let out = tmp.path().join("r");
    std::fs::create_dir(&out).unwrap();
    let mut child = dlog_in(&d)
        .arg("notarize")
        .args(&names)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first line
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    for i in 0..300 {
        assert!(
            out.join(format!("f{i}.txt.tlog-proof")).exists(),
            "receipt {i}"
        );
    }
    // The same for a reader of a long listing.
    let mut child = dlog_in(&d)
        .args(["get", "0", "--count", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn receipts_under_out_keep_paths_and_never_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("log");
    expect(&d, &["init"], None, 0);
    for sub in ["a", "b"] {
        std::fs::create_dir(tmp.path().join(sub)).unwrap();
        std::fs::write(tmp.path().join(sub).join("x.txt"), sub).unwrap();
    }
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (a, b) = (tmp.path().join("a/x.txt"), tmp.path().join("b/x.txt"));
    let args = [
        "notarize",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    expect(&d, &args, None, 0);
    let trust = d.join("trust.toml");
    for (f, r) in [(&a, "a/x.txt.tlog-proof"), (&b, "b/x.txt.tlog-proof")] {
        expect(
            &d,
            &[
                "notary",
                "verify",
                f.to_str().unwrap(),
                out.join(r).to_str().unwrap(),
                "--trust",
                trust.to_str().unwrap(),
            ],
            None,
            0,
        );
    }
    let size = |d: &Path| {
        expect(d, &["checkpoint"], None, 0)
            .lines()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let before = size(&d);
    // Again: the receipts exist; refused before anything is appended.
    let err = expect_err(&d, &args, None, 2);
    assert!(
        err.contains("already exists") && err.contains("nothing was notarized"),
        "{err}"
    );
    assert_eq!(size(&d), before);
    // Two files, one receipt path: refused, naming both.
    let single = tmp.path().join("one.tlog-proof");
    let err = expect_err(
        &d,
        &[
            "notarize",
            a.to_str().unwrap(),
            a.to_str().unwrap(),
            "--out",
            tmp.path().to_str().unwrap(),
        ],
        None,
        2,
    );
    assert!(err.contains("would both get"), "{err}");
    assert!(!single.exists());
    assert_eq!(size(&d), before);
}

struct Down<'a>(&'a Path);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = common::run(
            self.0,
            &["cluster", "down", "--dir", self.0.to_str().unwrap()],
            None,
        );
    }
}

fn pid(dir: &Path, stem: &str) -> i32 {
    std::fs::read_to_string(dir.join(format!("{stem}.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits (20 s at most) until `auditor status` calls the auditor alive.
fn wait_alive(auditor_toml: &Path) {
    let args = [
        "auditor",
        "status",
        "--config",
        auditor_toml.to_str().unwrap(),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::run(Path::new("."), &args, None).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "the auditor never looked alive");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// With cosignatures required and the only auditor dead, an append is
/// still acknowledged: its index is printed, a receipt with the voters'
/// signatures is written, and exit 3 says "appended, not yet cosigned".
/// A second `auditor run` on a running auditor's config is refused.
#[test]
fn late_cosignatures_and_a_second_auditor() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c");
    expect(
        tmp.path(),
        &[
            "cluster",
            "up",
            "--dir",
            c.to_str().unwrap(),
            "--auditors",
            "1",
            "--cosignatures",
            "1",
        ],
        None,
        0,
    );
    let _down = Down(&c);
    let aud = c.join("auditor-1");
    let acfg = aud.join("auditor.toml");
    // Once the cluster's auditor runs (alive: lock and heartbeat), a second
    // one on its config is refused at once.
    wait_alive(&acfg);
    let mut second = dlog_in(tmp.path())
        .args(["auditor", "run", "--config", acfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while second.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second auditor on one state directory kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = second.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("another auditor is running"), "{err}");

    let client = c.join("client.toml");
    let cl = client.to_str().unwrap();
    let nowhere = tmp.path().join("nowhere");
    let r0 = tmp.path().join("r0.tlog-proof");
    // With the auditor alive: exit 0, a cosigned receipt.
    expect(
        &nowhere,
        &[
            "--cluster",
            cl,
            "append",
            "first",
            "--receipt",
            r0.to_str().unwrap(),
        ],
        None,
        0,
    );
    unsafe { libc::kill(pid(&aud, "auditor"), libc::SIGKILL) };
    let r = tmp.path().join("r.tlog-proof");
    let o = common::run(
        &nowhere,
        &[
            "--cluster",
            cl,
            "append",
            "late",
            "--receipt",
            r.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stdout} {stderr}");
    let j: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(j["cosigned"], false);
    let index = j["index"].as_u64().unwrap();
    assert!(stderr.contains(&format!("entry {index}")), "{stderr}");
    // The receipt proves the entry under the voters' signatures, and says
    // plainly that the trust file wants more.
    let trust = c.join("trust.toml");
    let err = expect_err(
        &nowhere,
        &[
            "verify",
            "--trust",
            trust.to_str().unwrap(),
            r.to_str().unwrap(),
        ],
        None,
        1,
    );
    assert!(err.contains("cosignature"), "{err}");
    let voters = tmp.path().join("voters-trust.toml");
    std::fs::write(
        &voters,
        std::fs::read_to_string(&trust)
            .unwrap()
            .replace("cosignatures = 1", "cosignatures = 0"),
    )
    .unwrap();
    expect(
        &nowhere,
        &[
            "verify",
            "--trust",
            voters.to_str().unwrap(),
            r.to_str().unwrap(),
        ],
        None,
        0,
    );
    // Exactly one copy of the entry is in the log.
    let out = expect(
        &nowhere,
        &["--cluster", cl, "get", &index.to_string(), "--json"],
        None,
        0,
    );
    assert!(out.contains("late"), "{out}");
}

#[test]
fn smaller_surprises() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("log");
    expect(&d, &["init"], None, 0);
    // An empty stdin is refused, unless asked for.
    let err = expect_err(&d, &["append"], Some(b""), 2);
    assert!(err.contains("--allow-empty"), "{err}");
    expect(&d, &["append", "--allow-empty"], Some(b""), 0);
    expect(&d, &["append", "two\nlines"], None, 0);
    expect(&d, &["append", "three"], None, 0);
    // Several entries as text: one line each, with the index.
    let out = expect(&d, &["get", "0", "--count", "3"], None, 0);
    assert_eq!(out, "0\t\n1\ttwo\\nlines\n2\tthree\n");
    // --json prints its error as JSON too.
    let o = common::run(&d, &["get", "99", "--json"], None);
    assert_eq!(o.status.code(), Some(2));
    let j: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).expect("a JSON error");
    assert!(j["error"].as_str().unwrap().contains("99"), "{j}");
    // A tree larger than the log is named as such.
    let err = expect_err(
        &d,
        &["proof", "inclusion", "1", "--size", "99999999"],
        None,
        2,
    );
    assert!(
        err.contains("no tree of size 99999999") && err.contains("holds 3"),
        "{err}"
    );
    // `--cluster` with its value missing.
    let err = expect_err(&d, &["--cluster", "append", "x"], None, 2);
    assert!(err.contains("needs the cluster's client.toml"), "{err}");
    // A file that is no key is called that, not given a chmod.
    let not_key = tmp.path().join("hostname");
    std::fs::write(&not_key, "myhost\n").unwrap();
    let err = expect_err(&d, &["keys", "show", not_key.to_str().unwrap()], None, 2);
    assert!(
        !err.contains("chmod") && err.contains("not a DLog transport key file"),
        "{err}"
    );
    // Help does not speak of the benchmark in every subcommand.
    let help = expect(&d, &["append", "--help"], None, 0);
    assert!(!help.contains("benchmarks a temporary"), "{help}");
    // Scrub's hint names the ledger directory.
    let err = expect_err(&d, &["--cluster", "x.toml", "scrub"], None, 2);
    assert!(err.contains("data/ledger"), "{err}");
}

/// node-N's UDP endpoint in a cluster's peer table.
fn endpoint_of(cluster: &Path, node: &str) -> String {
    let peers: toml::Value =
        toml::from_str(&std::fs::read_to_string(cluster.join("peers.toml")).unwrap()).unwrap();
    peers["peer"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(node))
        .and_then(|p| p["endpoint"].as_str())
        .unwrap()
        .to_string()
}

/// A killed auditor is shown dead (exit 1); a stopped cluster answers
/// every verb within the unreachable bound (not the 15 s deadline), naming
/// each node at the UDP address it was tried at; `cluster up` on it points
/// at `cluster start`, which brings it back with its data.
#[test]
fn a_down_cluster_is_said_fast_and_starts_again() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c");
    let cs = c.to_str().unwrap();
    expect(
        tmp.path(),
        &["cluster", "up", "--dir", cs, "--auditors", "1"],
        None,
        0,
    );
    let _down = Down(&c);
    let client = c.join("client.toml");
    let cl = client.to_str().unwrap();
    let nowhere = tmp.path().join("nowhere");
    expect(&nowhere, &["--cluster", cl, "append", "kept"], None, 0);
    let aud = c.join("auditor-1");
    let acfg = aud.join("auditor.toml");
    let astatus = ["auditor", "status", "--config", acfg.to_str().unwrap()];
    // Alive: its heartbeat is fresh (it beats every second).
    wait_alive(&acfg);
    unsafe { libc::kill(pid(&aud, "auditor"), libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    let o = common::run(&nowhere, &astatus, None);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("DOWN: not running"));
    let o = common::run(&nowhere, &["cluster", "status", "--dir", cs], None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("auditor-1") && out.contains("DOWN"), "{out}");

    expect(&nowhere, &["cluster", "down", "--dir", cs], None, 0);
    let addrs: Vec<String> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|n| format!("{n} at udp {}", endpoint_of(&c, n)))
        .collect();
    for verb in [
        &["append", "lost?"][..],
        &["get", "0"],
        &["checkpoint"],
        &["tail"],
    ] {
        let mut args = vec!["--cluster", cl];
        args.extend_from_slice(verb);
        let t = Instant::now();
        let e = expect_err(&nowhere, &args, None, 2);
        // 3 s bound, plus a process start: far from the 15 s deadline.
        assert!(
            t.elapsed() < Duration::from_secs(9),
            "{verb:?} took {:?}",
            t.elapsed()
        );
        assert!(e.contains("no node answered within 3.0 s"), "{verb:?}: {e}");
        for a in &addrs {
            assert!(e.contains(a.as_str()), "{verb:?} does not name {a}: {e}");
        }
        assert!(!e.contains("port 7000"), "{e}");
    }
    // Configurable.
    let o = common::dlog(&nowhere)
        .args(["--cluster", cl, "get", "0"])
        .env("DLOG_UNREACHABLE_MS", "1000")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("within 1.0 s"));
    let o = common::run(&nowhere, &["cluster", "status", "--dir", cs], None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for a in &addrs {
        let (name, at) = a.split_once(" at ").unwrap();
        assert!(
            out.lines()
                .any(|l| l.starts_with(name) && l.contains("DOWN") && l.contains(at)),
            "{out}"
        );
    }
    assert!(String::from_utf8_lossy(&o.stderr).contains("cluster start"));

    let e = expect_err(tmp.path(), &["cluster", "up", "--dir", cs], None, 2);
    assert!(e.contains("dlog cluster start --dir"), "{e}");
    let out = expect(tmp.path(), &["cluster", "start", "--dir", cs], None, 0);
    assert!(out.contains("started: node-1, node-2, node-3"), "{out}");
    assert!(out.contains("auditors started: auditor-1"), "{out}");
    let got = expect(&nowhere, &["--cluster", cl, "get", "0"], None, 0);
    assert_eq!(got.trim(), "kept");
    // Already running: left alone.
    let out = expect(tmp.path(), &["cluster", "start", "--dir", cs], None, 0);
    assert!(
        out.contains("already running: node-1, node-2, node-3"),
        "{out}"
    );
}

/// Shell completions and man pages from the clap definitions; `notary
/// verify --receipts DIR` over a tree of receipts (a tampered and a missing
/// document fail, by name, exit 1); client defaults from the config file,
/// overridden by the environment and by flags.
#[test]
fn completions_many_receipts_and_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("log");
    let nowhere = tmp.path().join("nowhere");
    let bash = expect(&nowhere, &["completions", "bash"], None, 0);
    assert!(
        bash.contains("_dlog()") && bash.contains("notarize"),
        "{bash}"
    );
    let zsh = expect(&nowhere, &["completions", "zsh"], None, 0);
    assert!(zsh.starts_with("#compdef dlog"), "{zsh}");
    let man = expect(&nowhere, &["man"], None, 0);
    assert!(
        man.contains(".TH dlog 1") && man.contains("Exit codes"),
        "{man}"
    );
    let mandir = tmp.path().join("man");
    expect(
        &nowhere,
        &["man", "--out", mandir.to_str().unwrap()],
        None,
        0,
    );
    assert!(mandir.join("dlog-notary-verify.1").exists());

    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(docs.join("a")).unwrap();
    std::fs::create_dir_all(docs.join("b")).unwrap();
    let names = ["a/x.txt", "b/x.txt", "y.txt"];
    for n in names {
        std::fs::write(docs.join(n), format!("doc {n}")).unwrap();
    }
    let r = tmp.path().join("r");
    std::fs::create_dir(&r).unwrap();
    let mut args = vec!["notarize".to_string()];
    args.extend(
        names
            .iter()
            .map(|n| docs.join(n).to_str().unwrap().to_string()),
    );
    args.extend(["--out".into(), r.to_str().unwrap().into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    expect(&d, &args, None, 0);
    let trust = d.join("trust.toml");
    let many = [
        "notary",
        "verify",
        "--receipts",
        r.to_str().unwrap(),
        docs.to_str().unwrap(),
        "--trust",
        trust.to_str().unwrap(),
    ];
    let out = expect(&nowhere, &many, None, 0);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        3,
        "{out}"
    );
    std::fs::write(docs.join("y.txt"), "tampered").unwrap();
    std::fs::remove_file(docs.join("b/x.txt")).unwrap();
    let o = common::run(&nowhere, &many, None);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ok      ") && out.contains("a/x.txt"), "{out}");
    assert!(
        out.contains("FAILED") && out.contains("y.txt: file blake3 digest"),
        "{out}"
    );
    assert!(out.contains("b/x.txt is missing"), "{out}");
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("1 verified, 1 failed verification, 1 unreadable or missing (of 3)"));

    // Defaults: the file gives the trust file; the environment and a flag
    // override it; a malformed file is an error naming it.
    let cfg = tmp.path().join("xdg");
    std::fs::create_dir_all(cfg.join("dlog")).unwrap();
    std::fs::write(
        cfg.join("dlog/config.toml"),
        format!("trust = {:?}\n", trust.to_str().unwrap()),
    )
    .unwrap();
    let receipt = r.join("a/x.txt.tlog-proof");
    let doc = docs.join("a/x.txt");
    let verify = |envs: &[(&str, &str)], extra: &[&str]| {
        let mut c = common::dlog(&nowhere);
        c.args([
            "notary",
            "verify",
            doc.to_str().unwrap(),
            receipt.to_str().unwrap(),
        ])
        .args(extra)
        .env("XDG_CONFIG_HOME", &cfg)
        .env_remove("DLOG_TRUST")
        .env_remove("DLOG_CONFIG");
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    assert_eq!(verify(&[], &[]).status.code(), Some(0));
    let bogus = tmp.path().join("no-such-trust.toml");
    let o = verify(&[("DLOG_TRUST", bogus.to_str().unwrap())], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-trust.toml"));
    let o = verify(
        &[("DLOG_TRUST", bogus.to_str().unwrap())],
        &["--trust", trust.to_str().unwrap()],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(cfg.join("dlog/config.toml"), "trst = 1\n").unwrap();
    let o = verify(&[], &[]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("config.toml") && e.contains("unknown field `trst`"),
        "{e}"
    );
}

fn flip_middle_byte(file: &Path) {
    let mut b = std::fs::read(file).unwrap();
    let at = b.len() / 2;
    b[at] ^= 1;
    std::fs::write(file, b).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// One flipped byte: entries before it stay readable (with a warning),
/// scrub counts every entry and prints its report as JSON, and a local
/// repair cuts only where the damage starts, only when told, keeping the
/// cut bytes; damage in a sealed segment leaves every other entry readable
/// and is not cut.
#[test]
fn damage_is_read_around_named_and_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    expect(&clean, &["init", "--segment-bits", "8"], None, 0);
    let lines: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    expect(&clean, &["append", "--lines"], Some(lines.as_bytes()), 0);
    let seg = |d: &Path, s: u64| d.join("segments").join(format!("{s:020}.seg"));

    // In the open segment (3: entries 768..).
    let d = tmp.path().join("open");
    copy_dir(&clean, &d);
    flip_middle_byte(&seg(&d, 3));
    let o = common::run(&d, &["get", "300"], None);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "301");
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: the log is damaged at segment 3"));
    let o = common::run(&d, &["scrub", "--json"], None);
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["entries_total"], 1000, "{report}");
    assert_eq!(report["entries_damaged"], 1, "{report}");
    let bad = report["problems"][0]["entry"].as_u64().unwrap();
    assert!((768..1000).contains(&bad), "{report}");
    let e = expect_err(&d, &["get", "999"], None, 1);
    assert!(e.contains(&format!("damaged at entry {bad}")), "{e}");
    let e = expect_err(&d, &["append", "more"], None, 1);
    assert!(
        e.contains(&format!("entry {bad}")) && e.contains("dlog repair"),
        "{e}"
    );
    let before = std::fs::metadata(seg(&d, 3)).unwrap().len();
    // Repair: only at the damage, only with --drop-signed (a checkpoint
    // covers the cut entries), the cut bytes kept.
    let e = expect_err(&d, &["repair", "--cut-at", &(bad - 1).to_string()], None, 2);
    assert!(e.contains("must name exactly that entry"), "{e}");
    let e = expect_err(&d, &["repair", "--cut-at", &bad.to_string()], None, 2);
    assert!(e.contains("--drop-signed"), "{e}");
    let out = expect(
        &d,
        &[
            "repair",
            "--cut-at",
            &bad.to_string(),
            "--drop-signed",
            "--json",
        ],
        None,
        0,
    );
    let cut: serde_json::Value = serde_json::from_str(&out).unwrap();
    let evidence = std::path::PathBuf::from(cut["evidence"].as_str().unwrap());
    let kept = std::fs::metadata(evidence.join("cut.bin")).unwrap().len();
    let after = std::fs::metadata(seg(&d, 3)).unwrap().len();
    assert_eq!(kept + after, before, "every cut byte is kept");
    assert!(evidence.join("checkpoint").exists() && evidence.join("NOTE.txt").exists());
    assert_eq!(
        expect(&d, &["append", "after repair"], None, 0).trim(),
        bad.to_string()
    );
    expect(&d, &["scrub"], None, 0);

    // In a sealed segment (1: entries 256..511).
    let d = tmp.path().join("sealed");
    copy_dir(&clean, &d);
    flip_middle_byte(&seg(&d, 1));
    assert_eq!(expect(&d, &["get", "10"], None, 0).trim(), "11");
    assert_eq!(expect(&d, &["get", "900"], None, 0).trim(), "901");
    let o = common::run(&d, &["scrub", "--json"], None);
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["entries_total"], 1000, "{report}");
    assert_eq!(report["entries"], 999, "{report}");
    let bad = report["problems"][0]["entry"].as_u64().unwrap();
    assert!((256..512).contains(&bad), "{report}");
    let e = expect_err(&d, &["repair", "--cut-at", &bad.to_string()], None, 2);
    assert!(e.contains("sealed segment is not cut locally"), "{e}");
}

/// A stopped node's damaged sealed segment is fetched again from the
/// cluster, proved against the log's own chain, and the node rejoins.
#[test]
fn a_damaged_replica_is_refetched_from_the_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c");
    let cs = c.to_str().unwrap();
    expect(
        tmp.path(),
        &["cluster", "up", "--dir", cs, "--segment-bits", "6"],
        None,
        0,
    );
    let _down = Down(&c);
    let client = c.join("client.toml");
    let cl = client.to_str().unwrap();
    let nowhere = tmp.path().join("nowhere");
    let lines: String = (1..=300).map(|i| format!("r{i}\n")).collect();
    expect(
        &nowhere,
        &["--cluster", cl, "append", "--lines"],
        Some(lines.as_bytes()),
        0,
    );
    let ledger = c.join("node-2/data/ledger");
    // A running node's ledger is refused.
    let e = expect_err(&ledger, &["repair", "--from", cl], None, 2);
    assert!(e.contains("stop it first"), "{e}");
    let node2 = pid(&c.join("node-2"), "node");
    unsafe { libc::kill(node2, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::run(&ledger, &["repair", "--from", cl], None)
        .status
        .code()
        != Some(0)
    {
        assert!(Instant::now() < deadline, "node-2 did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    flip_middle_byte(&ledger.join("segments").join(format!("{:020}.seg", 1)));
    expect_err(&ledger, &["scrub"], None, 1);
    let out = expect(&ledger, &["repair", "--from", cl], None, 0);
    assert!(out.contains("replaced segment 1 (64 entries"), "{out}");
    assert!(out.contains("scrub: 300 entries, 0 problem(s)"), "{out}");
    expect(&ledger, &["scrub"], None, 0);
    let evidence: Vec<_> = std::fs::read_dir(ledger.join("evidence"))
        .unwrap()
        .collect();
    assert_eq!(evidence.len(), 1);
    let out = expect(tmp.path(), &["cluster", "start", "--dir", cs], None, 0);
    assert!(out.contains("started: node-2"), "{out}");
    expect(&nowhere, &["--cluster", cl, "append", "after"], None, 0);
}
