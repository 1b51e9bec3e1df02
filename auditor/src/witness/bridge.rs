//! Being witnessed: the auditor forwards each checkpoint it cosigned to the
//! external C2SP witnesses its config lists (`[[external_witness]]`), with
//! a consistency proof from the size each last cosigned, and hands the
//! cosignatures it gets back to the cluster, which merges them under the
//! trust file like any auditor's. A witness that is down, slow or refuses
//! costs this auditor a bounded wait and a back-off; it never holds up an
//! append or a checkpoint.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use dlog_crypto::note::{CosignatureVerifier, SignedNote};
use dlog_crypto::Hash;

/// An external witness: where it listens and its cosigner key.
#[derive(Debug, Clone)]
pub struct ExternalWitness {
    /// Its submission prefix, e.g. `https://witness.example/w1`
    /// (`/add-checkpoint` is appended).
    pub url: String,
    /// Its cosigner key (must be one of the trust file's auditors).
    pub verifier: CosignatureVerifier,
}

/// Longest one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause after a failure before that witness is asked again.
pub const BACKOFF: Duration = Duration::from_secs(30);

/// An add-checkpoint body: `old`, the proof lines, an empty line, the note.
pub fn request_body(old: u64, proof: &[Hash], note: &str) -> String {
    let mut b = format!("old {old}\n");
    for h in proof {
        b.push_str(&B64.encode(h));
        b.push('\n');
    }
    b.push('\n');
    b.push_str(note);
    b
}

/// What a witness answered, as the bridge acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200: `note` with the witness's valid cosignature added.
    Cosigned(String),
    /// 409: the size it last cosigned (retry from there).
    Conflict(u64),
    /// Anything else: why.
    Failed(String),
}

/// Reads a witness's answer to a request for `note`: a 200 body is
/// accepted only if it holds a cosignature by `w` that verifies on the
/// checkpoint (other lines are ignored, as the spec says).
pub fn read_answer(w: &CosignatureVerifier, note: &str, status: u16, body: &str) -> Outcome {
    match status {
        200 => {
            let Ok(n) = SignedNote::parse(note) else {
                return Outcome::Failed("the checkpoint does not parse".into());
            };
            let mut with = n.to_string();
            with.push_str(body);
            let Ok(all) = SignedNote::parse(&with) else {
                return Outcome::Failed("the answer is not signature lines".into());
            };
            let good = all.signatures.iter().find(|s| {
                s.name == w.name() && s.key_id == w.key_id() && w.verify(&n.text, s).is_some()
            });
            match good {
                Some(sig) => {
                    let mut out = n;
                    out.signatures.retain(|s| s.name != w.name());
                    out.add_signature(sig.clone());
                    Outcome::Cosigned(out.to_string())
                }
                None => Outcome::Failed(format!(
                    "the answer holds no valid cosignature by {}",
                    w.name()
                )),
            }
        }
        409 => match body.trim_end_matches('\n').parse() {
            Ok(size) => Outcome::Conflict(size),
            Err(_) => Outcome::Failed(format!("409 with a body that is not a size: {body:?}")),
        },
        s => Outcome::Failed(format!("{s}: {}", body.trim_end())),
    }
}

/// One external witness and what the bridge knows of it.
#[derive(Debug)]
pub struct Peer {
    /// The witness.
    pub witness: ExternalWitness,
    /// The size it last cosigned, as far as the bridge knows.
    pub known: u64,
    /// No request before this (after a failure).
    pub quiet_until: Option<Instant>,
}

/// POSTs `body` to `url/add-checkpoint` (blocking; run it off the async
/// threads): (status, body).
pub fn post(url: &str, body: String) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into();
    let mut r = agent
        .post(format!("{}/add-checkpoint", url.trim_end_matches('/')))
        .send(body.as_bytes())
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlog_crypto::keys::NodeKey;
    use dlog_crypto::note::Checkpoint;

    #[test]
    fn answers_are_read_strictly() {
        let log = NodeKey::generate("example.com/log").unwrap();
        let wit = NodeKey::generate("witness.example/w").unwrap();
        let cp = Checkpoint::new("example.com/log", 5, [1; 32]).unwrap();
        let mut n = SignedNote::new(cp.to_body()).unwrap();
        n.add_signature(log.note_signer().sign(&n.text));
        let note = n.to_string();
        let v = wit.cosigner().verifier();
        let line = format!("{}\n", wit.cosigner().cosign(&n.text, 77).to_line());
        let Outcome::Cosigned(out) = read_answer(&v, &note, 200, &line) else {
            panic!("not cosigned");
        };
        let parsed = SignedNote::parse(&out).unwrap();
        assert_eq!(parsed.signatures.len(), 2);
        assert_eq!(v.verify(&n.text, &parsed.signatures[1]), Some(77));
        // Another witness's line, or a cosignature of another checkpoint,
        // is no cosignature.
        let other = NodeKey::generate("witness.example/w").unwrap();
        let wrong = format!("{}\n", other.cosigner().cosign(&n.text, 77).to_line());
        assert!(matches!(
            read_answer(&v, &note, 200, &wrong),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            read_answer(&v, &note, 200, "junk\n"),
            Outcome::Failed(_)
        ));
        assert_eq!(read_answer(&v, &note, 409, "17\n"), Outcome::Conflict(17));
        assert!(matches!(
            read_answer(&v, &note, 409, "x"),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            read_answer(&v, &note, 422, "bad"),
            Outcome::Failed(_)
        ));
        assert_eq!(request_body(0, &[], "n\n"), "old 0\n\nn\n");
    }
}
