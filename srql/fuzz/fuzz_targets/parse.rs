//! Fuzzes the SRQL parser and compiler: neither may panic, whatever the bytes.
//!
//! `cd srql/fuzz && cargo +nightly fuzz run parse`

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = palisade_srql::parse(s);
        let _ = palisade_srql::compile(s, &Default::default());
    }
});
