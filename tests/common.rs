//! Helpers shared by the black-box tests: run the real `dlog` binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A `dlog` command on data directory `dir`.
pub fn dlog(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dlog"));
    c.arg("--dir").arg(dir).env_remove("DLOG_DIR");
    c
}

/// Runs `dlog` with `args` (and optional stdin), returns the output.
pub fn run(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = dlog(dir);
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn dlog");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut s = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = s.write_all(&input);
        });
    }
    child.wait_with_output().expect("wait dlog")
}

/// Runs `dlog` and requires exit code `code`.
fn run_expecting(dir: &Path, args: &[&str], stdin: Option<&[u8]>, code: i32) -> Output {
    let out = run(dir, args, stdin);
    assert_eq!(
        out.status.code(),
        Some(code),
        "dlog {args:?}: expected exit {code}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `dlog` and requires exit code `code`; returns stdout.
pub fn expect(dir: &Path, args: &[&str], stdin: Option<&[u8]>, code: i32) -> String {
    String::from_utf8(run_expecting(dir, args, stdin, code).stdout).expect("utf-8 output")
}

/// Runs `dlog` expecting failure with `code`; returns stderr.
pub fn expect_err(dir: &Path, args: &[&str], stdin: Option<&[u8]>, code: i32) -> String {
    String::from_utf8_lossy(&run_expecting(dir, args, stdin, code).stderr).into_owned()
}

/// Parses each stdout line as JSON.
pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Decodes standard base64.
pub fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

/// Reads `expected.len()` entries from the first expected index with
/// `dlog get --json` and checks each index and text.
pub fn assert_entries(dir: &Path, expected: &[(u64, String)]) {
    let Some(&(first, _)) = expected.first() else {
        return;
    };
    let got = json_lines(&expect(
        dir,
        &[
            "get",
            &first.to_string(),
            "--count",
            &expected.len().to_string(),
            "--json",
        ],
        None,
        0,
    ));
    assert_eq!(got.len(), expected.len());
    for (g, (i, text)) in got.iter().zip(expected) {
        assert_eq!(g["index"].as_u64().unwrap(), *i);
        assert_eq!(g["text"].as_str().unwrap(), text, "entry {i} changed");
    }
}
