//! The role table: which peer role may make which call (DESIGN §7).
//!
//! A node checks every decoded request with [`authorize`] before anything
//! else looks at it; the role comes from the caller's WireGuard key in the
//! peer table, never from the request.

use dlog_wg::config::Role;

use crate::wire::Call;

/// Whether `role` may make `call`: voter/learner: Raft and checkpoint
/// signing (and appends they forward); client: append + read; auditor:
/// read + cosign; admin: membership + read.
pub fn authorize(role: Role, call: &Call) -> bool {
    use Role::*;
    match call {
        Call::Raft { .. } => matches!(role, Voter | Learner),
        // Any node key (a learner's may have been promoted since the peer
        // table was written); the signer also checks that the caller is
        // its current Raft leader.
        Call::SignCheckpoint { .. } => matches!(role, Voter | Learner),
        Call::Append { .. } => matches!(role, Client | Voter | Learner),
        Call::Get { .. }
        | Call::Inclusion { .. }
        | Call::Consistency { .. }
        | Call::Checkpoint { .. }
        | Call::WaitCheckpoint { .. }
        | Call::Entries { .. }
        | Call::Witnessed { .. }
        | Call::Status => true,
        Call::Cosign { .. } => role == Auditor,
        Call::AddLearner { .. } | Call::ChangeMembership { .. } => role == Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RaftKind;

    /// The table, call by call: what each role may do and nothing more.
    #[test]
    fn roles() {
        let raft = Call::Raft {
            kind: RaftKind::Vote,
            body: Vec::new(),
        };
        let append = Call::Append {
            items: crate::Items::default(),
            tag: None,
        };
        let cosign = Call::Cosign {
            note: String::new(),
        };
        let member = Call::ChangeMembership { voters: vec![1] };
        let read = Call::Get { index: 0 };
        let sign = Call::SignCheckpoint {
            size: 1,
            root: [0; 32],
        };
        for (role, allowed) in [
            (Role::Voter, [true, true, true, false, false, true]),
            (Role::Learner, [true, true, true, false, false, true]),
            (Role::Client, [false, false, true, false, false, true]),
            (Role::Auditor, [false, false, false, true, false, true]),
            (Role::Admin, [false, false, false, false, true, true]),
        ] {
            let got = [&raft, &sign, &append, &cosign, &member, &read].map(|c| authorize(role, c));
            assert_eq!(got, allowed, "{role:?}");
        }
    }
}
