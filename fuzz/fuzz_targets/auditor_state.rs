//! dlog-auditor: a state file's text parses to a state whose frontier is
//! consistent with its size and root, or to an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(s) = dlog_auditor::State::from_json(text) {
        let tree = s.tree().expect("checked when parsed");
        assert_eq!(tree.size(), s.size);
    }
});
