//! Palisade's domain core: the records every source decodes into, the decoders for
//! each wire contract (docs/wire.md), and the PostgreSQL store the projections write.
//!
//! ```
//! use palisade_core::{decode::decode, model::Decoded};
//!
//! let falco = br#"{"output":"shell in container","priority":"Notice","rule":"Terminal shell in container",
//!   "time":"2022-05-01T23:29:32.918828894Z","output_fields":{"evt.time":1651447772918828894}}"#;
//! let Decoded::Events(events) = decode("falco.notice.terminal_shell_in_container", falco).unwrap() else {
//!     panic!("a Falco alert is an event")
//! };
//! assert_eq!(events[0].rule.as_deref(), Some("Terminal shell in container"));
//! ```

pub mod clumps;
pub mod correlation;
pub mod decode;
pub mod graph;
pub mod grouping;
pub mod model;
pub mod search;
pub mod store;
pub mod vectors;
