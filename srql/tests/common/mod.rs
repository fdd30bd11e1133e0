//! What the SRQL test suites share.

use chrono::{TimeZone, Utc};
use palisade_srql::CompileOptions;

/// Compile options with "now" fixed, so relative times give the same SQL every run.
pub fn options() -> CompileOptions {
    CompileOptions {
        now: Utc
            .with_ymd_and_hms(2026, 11, 24, 12, 0, 0)
            .single()
            .expect("a valid instant"),
        ..CompileOptions::default()
    }
}
