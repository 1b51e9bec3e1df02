//! `dlog witness`: the real binary serving C2SP tlog-witness over loopback
//! HTTP to a scripted client, for the real `dlog` logs' checkpoints and
//! consistency proofs: every status code, a cosignature that makes a
//! receipt meet a trust file offline, and kill -9 at any moment never
//! yielding two cosigned roots at one size or a step back.

mod common;

use common::expect;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct Witness {
    child: Child,
    url: String,
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dlog witness run` and waits for its "listening" line.
fn start(config: &Path) -> Witness {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(["witness", "run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dlog witness run");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no listening line: {line:?}"))
        .to_string();
    Witness { child, url }
}

/// POSTs a body to add-checkpoint: (status, content type, body).
fn post(url: &str, body: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    match agent
        .post(format!("{url}/add-checkpoint"))
        .send(body.as_bytes())
    {
        Ok(mut r) => {
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let status = r.status().as_u16();
            (
                status,
                ct,
                r.body_mut().read_to_string().unwrap_or_default(),
            )
        }
        Err(e) => (0, String::new(), e.to_string()),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn voter_vkey(trust: &Path) -> String {
    let text = std::fs::read_to_string(trust).unwrap();
    let list = &text[text.find("voters = [").unwrap()..];
    list.split('"').nth(1).unwrap().to_string()
}

/// A witness for the logs of `logs` (origin, vkey), in `dir`.
fn witness_dir(dir: &Path, logs: &[(&str, &str)]) -> (PathBuf, String) {
    let port = free_port();
    let out = expect(
        dir,
        &[
            "witness",
            "init",
            "--name",
            "witness.test/w1",
            "--dir",
            dir.join("w").to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--json",
        ],
        None,
        0,
    );
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let config = dir.join("w/witness.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    for (origin, vkey) in logs {
        text.push_str(&format!(
            "\n[[log]]\norigin = {origin:?}\nvkey = {vkey:?}\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    (config, j["vkey"].as_str().unwrap().to_string())
}

/// The latest checkpoint note of a local log.
fn checkpoint(log: &Path) -> String {
    expect(log, &["checkpoint"], None, 0)
}

/// An add-checkpoint body: old size, the log's proof from it, the note.
fn body(log: &Path, old: u64, note: &str) -> String {
    let new: u64 = note.lines().nth(1).unwrap().parse().unwrap();
    let mut b = format!("old {old}\n");
    if old > 0 && old < new {
        let j: serde_json::Value = serde_json::from_str(&expect(
            log,
            &[
                "proof",
                "consistency",
                "--from",
                &old.to_string(),
                "--to",
                &new.to_string(),
            ],
            None,
            0,
        ))
        .unwrap();
        for h in j["proof"].as_array().unwrap() {
            b.push_str(h.as_str().unwrap());
            b.push('\n');
        }
    }
    b.push('\n');
    b.push_str(note);
    b
}

fn append(log: &Path, n: usize, tag: &str) {
    let lines: String = (0..n).map(|i| format!("{tag} {i}\n")).collect();
    expect(log, &["append", "--lines"], Some(lines.as_bytes()), 0);
}

#[test]
fn every_status_code_and_a_cosigned_receipt() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    expect(&log, &["init", "--hash", "sha256"], None, 0);
    let trust = log.join("trust.toml");
    let vkey = voter_vkey(&trust);
    let (config, wvkey) = witness_dir(tmp.path(), &[("dlog/local", &vkey)]);
    let w = start(&config);

    append(&log, 5, "a");
    let cp5 = checkpoint(&log);
    let (code, _, sig) = post(&w.url, &body(&log, 0, &cp5));
    assert_eq!(code, 200, "{sig}");
    assert!(sig.starts_with("\u{2014} witness.test/w1 ") && sig.ends_with('\n'));

    // The cosignature makes a receipt meet a trust file that requires
    // this witness: verified offline by `dlog verify`.
    let r = tmp.path().join("r.tlog-proof");
    expect(
        &log,
        &[
            "proof",
            "inclusion",
            "3",
            "--size",
            "5",
            "--out",
            r.to_str().unwrap(),
        ],
        None,
        0,
    );
    let t = std::fs::read_to_string(&trust).unwrap();
    let wtrust = tmp.path().join("witnessed-trust.toml");
    let witnessed = t
        .replace("auditors = [\n]", &format!("auditors = [{wvkey:?}]"))
        .replace("cosignatures = 0", "cosignatures = 1");
    assert_ne!(witnessed, t);
    std::fs::write(&wtrust, witnessed).unwrap();
    let wt = wtrust.to_str().unwrap();
    let nowhere = tmp.path().join("nowhere");
    // Without the cosignature: exit 1.
    common::expect_err(
        &nowhere,
        &["verify", "--trust", wt, r.to_str().unwrap()],
        None,
        1,
    );
    let mut receipt = std::fs::read_to_string(&r).unwrap();
    receipt.push_str(&sig);
    std::fs::write(&r, receipt).unwrap();
    expect(
        &nowhere,
        &["verify", "--trust", wt, r.to_str().unwrap()],
        None,
        0,
    );

    append(&log, 5, "b");
    let cp10 = checkpoint(&log);
    // 409: a stale old size, answered with the size it cosigned.
    let (code, ct, b) = post(&w.url, &body(&log, 0, &cp10));
    assert_eq!(
        (code, ct.as_str(), b.as_str()),
        (409, "text/x.tlog.size", "5\n")
    );
    // 200: from 5 with the log's proof.
    let (code, _, b) = post(&w.url, &body(&log, 5, &cp10));
    assert_eq!(code, 200, "{b}");
    // 200 again for the same checkpoint (old = size, no proof).
    assert_eq!(post(&w.url, &body(&log, 10, &cp10)).0, 200);
    append(&log, 2, "c");
    let cp12 = checkpoint(&log);
    // 422: a proof with one hash changed.
    let good = body(&log, 10, &cp12);
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    lines[1] = lines[1].replacen(
        &lines[1][..1],
        if &lines[1][..1] == "A" { "B" } else { "A" },
        1,
    );
    let (code, _, b) = post(&w.url, &(lines.join("\n") + "\n"));
    assert_eq!(code, 422, "{b}");
    // 400: old above the checkpoint's size; and a malformed body.
    assert_eq!(post(&w.url, &format!("old 13\n\n{cp12}")).0, 400);
    assert_eq!(post(&w.url, "old 010\n\n").0, 400);
    // 403: the same origin signed by another key.
    let other = tmp.path().join("other");
    expect(&other, &["init", "--hash", "sha256"], None, 0);
    append(&other, 12, "x");
    assert_eq!(
        post(&w.url, &format!("old 10\n\n{}", checkpoint(&other))).0,
        403
    );
    // 404: an origin it does not witness.
    let stranger = tmp.path().join("stranger");
    expect(
        &stranger,
        &["init", "--hash", "sha256", "--origin", "dlog/stranger"],
        None,
        0,
    );
    append(&stranger, 3, "s");
    assert_eq!(
        post(&w.url, &format!("old 0\n\n{}", checkpoint(&stranger))).0,
        404
    );
    // 413 and 405.
    assert_eq!(post(&w.url, &"x".repeat(200_000)).0, 413);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = agent
        .get(format!("{}/add-checkpoint", w.url))
        .call()
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);
    // The good proof still goes through.
    assert_eq!(post(&w.url, &good).0, 200);

    // Status: the cosigned size and the requests by code.
    let st: serde_json::Value = serde_json::from_str(&expect(
        &nowhere,
        &[
            "witness",
            "status",
            "--config",
            config.to_str().unwrap(),
            "--json",
        ],
        None,
        0,
    ))
    .unwrap();
    assert_eq!(st["logs"][0]["size"], 12, "{st}");
    assert_eq!(st["running"], true);
    assert_eq!(st["requests"]["200"], 4, "{st}");
    for code in ["400", "403", "404", "409", "422"] {
        assert!(st["requests"][code].as_u64() >= Some(1), "{code}: {st}");
    }
}

/// Two logs under one origin and one key (a log showing two histories),
/// submitted in random order while the witness is killed with SIGKILL at
/// random moments (requests in flight): every cosignature it ever gave is
/// of one history, sizes never go back, and one size never has two roots.
#[test]
fn kill_9_never_yields_two_roots_at_one_size() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    expect(&a, &["init", "--hash", "sha256"], None, 0);
    expect(&b, &["init", "--hash", "sha256"], None, 0);
    for f in ["node.key", "trust.toml"] {
        std::fs::copy(a.join(f), b.join(f)).unwrap();
    }
    let vkey = voter_vkey(&a.join("trust.toml"));
    let (config, _) = witness_dir(tmp.path(), &[("dlog/local", &vkey)]);
    // Checkpoints of both histories at sizes 1..=24.
    let mut notes: Vec<(usize, u64, String)> = Vec::new();
    for size in 1..=24u64 {
        for (k, log) in [&a, &b].into_iter().enumerate() {
            append(log, 1, if k == 0 { "a" } else { "b" });
            notes.push((k, size, checkpoint(log)));
        }
    }
    let logs = [&a, &b];
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut cosigned: std::collections::HashMap<u64, String> = Default::default();
    let mut histories = std::collections::HashSet::new();
    let mut known = 0u64;
    let mut last_cosigned = 0u64;
    let mut w = start(&config);
    let mut kills = 0;
    for round in 0..60 {
        // A checkpoint of either history, at most 3 past the witness.
        let near: Vec<_> = notes
            .iter()
            .filter(|(_, s, _)| *s >= known && *s <= known + 3)
            .collect();
        let (k, size, note) = near[(next() % near.len() as u64) as usize];
        let req = body(logs[*k], known, note);
        if round % 4 == 3 {
            // Kill while a request is in flight, then restart.
            let url = w.url.clone();
            let req2 = req.clone();
            let t = std::thread::spawn(move || post(&url, &req2));
            std::thread::sleep(std::time::Duration::from_micros(next() % 3000));
            unsafe { libc::kill(w.child.id() as i32, libc::SIGKILL) };
            kills += 1;
            let (code, _, _) = t.join().unwrap();
            if code == 200 {
                let root = note.lines().nth(2).unwrap().to_string();
                assert_eq!(cosigned.entry(*size).or_insert(root.clone()), &root);
                histories.insert(*k);
            }
            drop(w);
            w = start(&config);
            // Learn where it is now (a 409 says the size).
            let (code, _, s) = post(&w.url, &body(logs[*k], 0, &notes[0].2));
            if code == 409 {
                known = s.trim().parse().unwrap();
            } else {
                assert_eq!(code, 200, "{s}");
                known = 1;
                histories.insert(0);
                cosigned
                    .entry(1)
                    .or_insert(notes[0].2.lines().nth(2).unwrap().into());
            }
            assert!(
                known >= last_cosigned,
                "went back from {last_cosigned} to {known}"
            );
            last_cosigned = known;
            continue;
        }
        let (code, _, s) = post(&w.url, &req);
        match code {
            200 => {
                let root = note.lines().nth(2).unwrap().to_string();
                assert_eq!(
                    cosigned.entry(*size).or_insert(root.clone()),
                    &root,
                    "two roots cosigned at size {size}"
                );
                histories.insert(*k);
                assert!(*size >= last_cosigned);
                known = *size;
                last_cosigned = *size;
            }
            409 => known = s.trim().parse().unwrap_or(known),
            422 | 400 => {}
            other => panic!("unexpected {other}: {s}"),
        }
    }
    eprintln!("{kills} kills; cosigned sizes {:?}", {
        let mut v: Vec<_> = cosigned.keys().collect();
        v.sort();
        v
    });
    assert!(
        kills >= 5 && cosigned.len() >= 3,
        "{kills} kills, {cosigned:?}"
    );
    assert_eq!(histories.len(), 1, "cosigned both histories: {cosigned:?}");
}

/// A started process whose pid replaces the one `dlog cluster` recorded,
/// so `cluster down` stops it; killed on drop as well.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_recorded(args: &[&str], dir: &Path, stem: &str) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{stem}.restart.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn dlog");
    std::fs::write(dir.join(format!("{stem}.pid")), child.id().to_string()).unwrap();
    Proc(child)
}

struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = common::run(
            &self.0,
            &["cluster", "down", "--dir", self.0.to_str().unwrap()],
            None,
        );
    }
}

fn stop_recorded(dir: &Path, stem: &str) {
    let pid: i32 = std::fs::read_to_string(dir.join(format!("{stem}.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while unsafe { libc::kill(pid, 0) } == 0 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// One cluster's auditor is the C2SP witness of a second cluster: the
/// second's auditor forwards what it cosigned over loopback HTTP, the
/// cosignature comes back through the tunnel, and the second's receipts,
/// under a trust file that requires both, verify offline.
#[test]
fn an_auditor_witnesses_another_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let up = |d: &Path, extra: &[&str]| {
        let mut args = vec![
            "cluster",
            "up",
            "--dir",
            d.to_str().unwrap(),
            "--hash",
            "sha256",
            "--auditors",
            "1",
        ];
        args.extend_from_slice(extra);
        expect(tmp.path(), &args, None, 0);
    };
    up(&a, &[]);
    let _down_a = Down(a.clone());
    up(&b, &["--cosignatures", "1", "--origin", "dlog/b"]);
    let _down_b = Down(b.clone());
    expect(
        tmp.path(),
        &["cluster", "down", "--dir", b.to_str().unwrap()],
        None,
        0,
    );

    // A's auditor also witnesses B (a [witness] section), restarted.
    let port = free_port();
    let aud = a.join("auditor-1");
    let init = expect(
        tmp.path(),
        &[
            "witness",
            "init",
            "--name",
            "a.example/witness",
            "--dir",
            aud.join("w").to_str().unwrap(),
            "--json",
        ],
        None,
        0,
    );
    let wvkey = serde_json::from_str::<serde_json::Value>(&init).unwrap()["vkey"]
        .as_str()
        .unwrap()
        .to_string();
    let text = std::fs::read_to_string(b.join("trust.toml")).unwrap();
    let list = &text[text.find("voters = [").unwrap()..];
    let list = &list[..list.find(']').unwrap()];
    let b_voters: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
    let mut cfg = std::fs::read_to_string(aud.join("auditor.toml")).unwrap();
    cfg.push_str(&format!(
        "\n[witness]\nname = \"a.example/witness\"\nkey = \"w/witness.key\"\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"w/state\"\n\n[[witness.log]]\norigin = \"dlog/b\"\nvkeys = {b_voters:?}\n"
    ));
    std::fs::write(aud.join("auditor.toml"), cfg).unwrap();
    stop_recorded(&aud, "auditor");
    let _wa = spawn_recorded(
        &[
            "auditor",
            "run",
            "--config",
            aud.join("auditor.toml").to_str().unwrap(),
        ],
        &aud,
        "auditor",
    );
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < end,
            "A's witness did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // B trusts that witness, requires both cosignatures, and its auditor
    // forwards to it.
    let witnessed = text
        .replace("auditors = [\n", &format!("auditors = [\n    {wvkey:?},\n"))
        .replace("cosignatures = 1", "cosignatures = 2");
    assert_ne!(witnessed, text);
    std::fs::write(b.join("trust.toml"), witnessed).unwrap();
    let baud = b.join("auditor-1");
    let mut cfg = std::fs::read_to_string(baud.join("auditor.toml")).unwrap();
    cfg.push_str(&format!(
        "\n[[external_witness]]\nurl = \"http://127.0.0.1:{port}\"\nvkey = {wvkey:?}\n"
    ));
    std::fs::write(baud.join("auditor.toml"), cfg).unwrap();
    let mut procs = Vec::new();
    for n in 1..=3 {
        let nd = b.join(format!("node-{n}"));
        procs.push(spawn_recorded(
            &[
                "node",
                "run",
                "--config",
                nd.join("node.toml").to_str().unwrap(),
            ],
            &nd,
            "node",
        ));
    }
    procs.push(spawn_recorded(
        &[
            "auditor",
            "run",
            "--config",
            baud.join("auditor.toml").to_str().unwrap(),
        ],
        &baud,
        "auditor",
    ));

    let client = b.join("client.toml");
    let c = client.to_str().unwrap();
    let nowhere = tmp.path().join("nowhere");
    let r = tmp.path().join("r.tlog-proof");
    // The first append waits for a leader; the receipt for both
    // cosignatures on a checkpoint covering it.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = common::run(
            &nowhere,
            &[
                "--cluster",
                c,
                "append",
                "hello",
                "--receipt",
                r.to_str().unwrap(),
            ],
            None,
        );
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "no witnessed receipt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let receipt = std::fs::read_to_string(&r).unwrap();
    assert!(receipt.contains("\u{2014} a.example/witness "), "{receipt}");
    assert!(receipt.contains("\u{2014} auditor-1 "), "{receipt}");
    let trust = b.join("trust.toml");
    let v = expect(
        &nowhere,
        &[
            "verify",
            "--trust",
            trust.to_str().unwrap(),
            r.to_str().unwrap(),
            "--json",
        ],
        None,
        0,
    );
    assert!(v.contains("a.example/witness"), "{v}");
    // The witness's state is durable and names B's origin.
    let states: Vec<_> = std::fs::read_dir(aud.join("w/state"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "state"))
        .collect();
    assert_eq!(states.len(), 1);
    let st: serde_json::Value = serde_json::from_str(&expect(
        &nowhere,
        &[
            "witness",
            "status",
            "--config",
            aud.join("auditor.toml").to_str().unwrap(),
            "--json",
        ],
        None,
        0,
    ))
    .unwrap();
    assert_eq!(st["logs"][0]["origin"], "dlog/b", "{st}");
    assert!(st["logs"][0]["size"].as_u64() >= Some(1), "{st}");
    assert_eq!(st["running"], true, "{st}");
    drop(procs);
}
