//! dlog-wg: `dlog_wg::fuzzing::datagram` must never panic on untrusted bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dlog_wg::fuzzing::datagram(data);
});
