//! The hybrid post-quantum PSK exchange (pure: bytes in, bytes out).
//!
//! Runs inside the current WireGuard session as IPv4 packets of protocol
//! [`CTRL_PROTO`] between the two tunnel addresses (so it is already
//! authenticated and encrypted classically). The peer with the smaller X25519
//! public key is the initiator `I`, the other the responder `R`.
//!
//! ```text
//! I -> R  InitHello { epoch, idx_I, ek_e, ct_R = Encaps(ek_R) }
//! R -> I  RespHello { epoch, idx_R, ct_e = Encaps(ek_e), ct_I = Encaps(ek_I) }
//! psk = BLAKE3-derive_key("dlog-wg 2026-11 hybrid pq psk v1",
//!         ss_R || ss_I || ss_e || H(transcript))
//! H(transcript) = BLAKE3(domain || wg_I || wg_R || fp(ek_I) || fp(ek_R) || InitHello || RespHello)
//! ```
//!
//! `ss_R` can only be computed by the holder of R's static ML-KEM key, `ss_I`
//! only by I's; `ss_e` gives forward secrecy (the ephemeral key is dropped
//! after the exchange). Both static WireGuard keys and both static KEM keys
//! are bound into the transcript. The PSK is confirmed by the WireGuard
//! handshake that uses it (a wrong key makes that handshake fail and the
//! endpoint stays on the previous epoch). `epoch` numbers the PSKs of a
//! session; `idx_I`/`idx_R` are the new tunnels' indices (24-bit), used to
//! route the new handshake to the new tunnel.

use dlog_crypto::kem::{KemCiphertext, KemPublicKey, KemSecretKey, CIPHERTEXT_LEN, PUBLIC_KEY_LEN};

use crate::error::Result;

/// IPv4 protocol number carrying control messages inside the tunnel
/// (253 = "use for experimentation and testing", RFC 3692).
pub const CTRL_PROTO: u8 = 253;
/// Version of the control message format.
pub const CTRL_VERSION: u8 = 1;
const T_INIT: u8 = 1;
const T_RESP: u8 = 2;
const HDR: usize = 2 + 8 + 4;
/// Size of an encoded InitHello.
pub const INIT_LEN: usize = HDR + PUBLIC_KEY_LEN + CIPHERTEXT_LEN;
/// Size of an encoded RespHello.
pub const RESP_LEN: usize = HDR + 2 * CIPHERTEXT_LEN;

const PSK_CONTEXT: &str = "dlog-wg 2026-11 hybrid pq psk v1";
const TRANSCRIPT_DOMAIN: &[u8] = b"dlog-wg pq transcript v1";

/// A decoded control message.
#[derive(Debug, Clone)]
pub enum CtrlMsg {
    /// Initiator's opening message.
    InitHello {
        /// PSK epoch proposed.
        epoch: u64,
        /// Initiator's tunnel index for that epoch.
        index: u32,
        /// Ephemeral ML-KEM public key.
        ephemeral: KemPublicKey,
        /// Encapsulation to the responder's static key.
        ct_static: KemCiphertext,
    },
    /// Responder's answer.
    RespHello {
        /// PSK epoch answered.
        epoch: u64,
        /// Responder's tunnel index for that epoch.
        index: u32,
        /// Encapsulation to the initiator's ephemeral key.
        ct_ephemeral: KemCiphertext,
        /// Encapsulation to the initiator's static key.
        ct_static: KemCiphertext,
    },
}

impl CtrlMsg {
    /// The epoch this message is about.
    pub fn epoch(&self) -> u64 {
        match self {
            CtrlMsg::InitHello { epoch, .. } | CtrlMsg::RespHello { epoch, .. } => *epoch,
        }
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INIT_LEN.max(RESP_LEN));
        match self {
            CtrlMsg::InitHello {
                epoch,
                index,
                ephemeral,
                ct_static,
            } => {
                out.extend_from_slice(&[CTRL_VERSION, T_INIT]);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(ephemeral.as_bytes());
                out.extend_from_slice(ct_static.as_bytes());
            }
            CtrlMsg::RespHello {
                epoch,
                index,
                ct_ephemeral,
                ct_static,
            } => {
                out.extend_from_slice(&[CTRL_VERSION, T_RESP]);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(ct_ephemeral.as_bytes());
                out.extend_from_slice(ct_static.as_bytes());
            }
        }
        out
    }

    /// Decodes a message; `None` for anything malformed (wrong version,
    /// type, length or an invalid ephemeral key). Never panics.
    pub fn decode(b: &[u8]) -> Option<CtrlMsg> {
        if b.len() < HDR || b[0] != CTRL_VERSION {
            return None;
        }
        let epoch = u64::from_be_bytes(b[2..10].try_into().ok()?);
        let index = u32::from_be_bytes(b[10..14].try_into().ok()?);
        let body = &b[HDR..];
        match b[1] {
            T_INIT if b.len() == INIT_LEN => Some(CtrlMsg::InitHello {
                epoch,
                index,
                ephemeral: KemPublicKey::from_bytes(&body[..PUBLIC_KEY_LEN]).ok()?,
                ct_static: KemCiphertext::from_bytes(&body[PUBLIC_KEY_LEN..]).ok()?,
            }),
            T_RESP if b.len() == RESP_LEN => Some(CtrlMsg::RespHello {
                epoch,
                index,
                ct_ephemeral: KemCiphertext::from_bytes(&body[..CIPHERTEXT_LEN]).ok()?,
                ct_static: KemCiphertext::from_bytes(&body[CIPHERTEXT_LEN..]).ok()?,
            }),
            _ => None,
        }
    }
}

/// The identities bound into the transcript.
#[derive(Clone, Debug)]
pub struct Parties {
    /// Initiator's X25519 public key.
    pub wg_i: [u8; 32],
    /// Responder's X25519 public key.
    pub wg_r: [u8; 32],
    /// Initiator's static ML-KEM public key.
    pub kem_i: KemPublicKey,
    /// Responder's static ML-KEM public key.
    pub kem_r: KemPublicKey,
}

/// Initiator state between InitHello and RespHello.
pub struct Initiator {
    /// Epoch proposed.
    pub epoch: u64,
    /// Our tunnel index for the new epoch.
    pub index: u32,
    eph: KemSecretKey,
    ss_r: [u8; 32],
    /// The encoded InitHello (kept for retransmission and the transcript).
    pub init_bytes: Vec<u8>,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("epoch", &self.epoch)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

fn derive_psk(p: &Parties, ss: [&[u8; 32]; 3], init: &[u8], resp: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(TRANSCRIPT_DOMAIN);
    h.update(&p.wg_i);
    h.update(&p.wg_r);
    h.update(&p.kem_i.fingerprint());
    h.update(&p.kem_r.fingerprint());
    h.update(&(init.len() as u64).to_be_bytes());
    h.update(init);
    h.update(&(resp.len() as u64).to_be_bytes());
    h.update(resp);
    let th = h.finalize();
    let mut ikm = Vec::with_capacity(128);
    for s in ss {
        ikm.extend_from_slice(s);
    }
    ikm.extend_from_slice(th.as_bytes());
    blake3::derive_key(PSK_CONTEXT, &ikm)
}

/// Starts an exchange: returns the initiator state and the InitHello bytes.
pub fn initiate(epoch: u64, index: u32, p: &Parties) -> Result<Initiator> {
    let eph = KemSecretKey::generate()?;
    let (ct_static, ss_r) = p.kem_r.encapsulate()?;
    let msg = CtrlMsg::InitHello {
        epoch,
        index,
        ephemeral: eph.public_key(),
        ct_static,
    };
    Ok(Initiator {
        epoch,
        index,
        eph,
        ss_r: ss_r.0,
        init_bytes: msg.encode(),
    })
}

/// Responder: answers an InitHello. Returns the PSK, the RespHello bytes and
/// the initiator's tunnel index. `init_bytes` must decode as an InitHello.
pub fn respond(
    my_kem: &KemSecretKey,
    p: &Parties,
    init_bytes: &[u8],
    my_index: u32,
) -> Option<([u8; 32], Vec<u8>, u32)> {
    let CtrlMsg::InitHello {
        epoch,
        index,
        ephemeral,
        ct_static,
    } = CtrlMsg::decode(init_bytes)?
    else {
        return None;
    };
    let ss_r = my_kem.decapsulate(&ct_static);
    let (ct_ephemeral, ss_e) = ephemeral.encapsulate().ok()?;
    let (ct_i, ss_i) = p.kem_i.encapsulate().ok()?;
    let resp = CtrlMsg::RespHello {
        epoch,
        index: my_index,
        ct_ephemeral,
        ct_static: ct_i,
    }
    .encode();
    let psk = derive_psk(p, [&ss_r.0, &ss_i.0, &ss_e.0], init_bytes, &resp);
    Some((psk, resp, index))
}

/// Initiator: completes the exchange with the RespHello. Returns the PSK and
/// the responder's tunnel index, or `None` if the message does not answer
/// this exchange.
pub fn finish(
    st: &Initiator,
    my_kem: &KemSecretKey,
    p: &Parties,
    resp_bytes: &[u8],
) -> Option<([u8; 32], u32)> {
    let CtrlMsg::RespHello {
        epoch,
        index,
        ct_ephemeral,
        ct_static,
    } = CtrlMsg::decode(resp_bytes)?
    else {
        return None;
    };
    if epoch != st.epoch {
        return None;
    }
    let ss_e = st.eph.decapsulate(&ct_ephemeral);
    let ss_i = my_kem.decapsulate(&ct_static);
    let psk = derive_psk(p, [&st.ss_r, &ss_i.0, &ss_e.0], &st.init_bytes, resp_bytes);
    Some((psk, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parties(i: &KemSecretKey, r: &KemSecretKey) -> Parties {
        Parties {
            wg_i: [1; 32],
            wg_r: [2; 32],
            kem_i: i.public_key(),
            kem_r: r.public_key(),
        }
    }

    #[test]
    fn both_sides_derive_the_same_psk() {
        let i = KemSecretKey::generate().unwrap();
        let r = KemSecretKey::generate().unwrap();
        let p = parties(&i, &r);
        let st = initiate(7, 42, &p).unwrap();
        assert_eq!(st.init_bytes.len(), INIT_LEN);
        let (psk_r, resp, idx_i) = respond(&r, &p, &st.init_bytes, 99).unwrap();
        assert_eq!(idx_i, 42);
        assert_eq!(resp.len(), RESP_LEN);
        let (psk_i, idx_r) = finish(&st, &i, &p, &resp).unwrap();
        assert_eq!(idx_r, 99);
        assert_eq!(psk_i, psk_r);
        // A second exchange gives a fresh key.
        let st2 = initiate(8, 43, &p).unwrap();
        let (psk2, _, _) = respond(&r, &p, &st2.init_bytes, 100).unwrap();
        assert_ne!(psk2, psk_r);
    }

    #[test]
    fn wrong_static_key_gives_a_different_psk() {
        let i = KemSecretKey::generate().unwrap();
        let r = KemSecretKey::generate().unwrap();
        let mallory = KemSecretKey::generate().unwrap();
        let p = parties(&i, &r);
        let st = initiate(1, 1, &p).unwrap();
        // Mallory answers in R's place but cannot decapsulate ct_R.
        let (psk_m, resp, _) = respond(&mallory, &p, &st.init_bytes, 5).unwrap();
        let (psk_i, _) = finish(&st, &i, &p, &resp).unwrap();
        assert_ne!(psk_i, psk_m);
    }

    #[test]
    fn malformed_messages_decode_to_none() {
        assert!(CtrlMsg::decode(&[]).is_none());
        assert!(CtrlMsg::decode(&[1, 1, 0]).is_none());
        let mut bad_key = vec![0xFFu8; INIT_LEN];
        bad_key[0] = CTRL_VERSION;
        bad_key[1] = T_INIT;
        assert!(CtrlMsg::decode(&bad_key).is_none()); // coefficients out of range
        assert!(CtrlMsg::decode(&bad_key[..INIT_LEN - 1]).is_none()); // short
        assert!(CtrlMsg::decode(&vec![2u8; RESP_LEN]).is_none()); // bad version
        let mut ok = vec![0u8; RESP_LEN];
        ok[0] = CTRL_VERSION;
        ok[1] = T_RESP;
        assert!(CtrlMsg::decode(&ok).is_some());
    }
}
