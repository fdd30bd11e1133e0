//! Ingest settings, one struct with named defaults.

use std::time::Duration;

/// Isolates one Palisade deployment's subjects and streams from another's on a
/// shared NATS account (tests use a fresh namespace each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    prefix: Option<String>,
}

impl Namespace {
    /// The default namespace: subjects exactly as DESIGN.md §4 names them.
    pub fn root() -> Self {
        Namespace { prefix: None }
    }

    /// A namespace whose subjects start with `name.` and whose streams start with `NAME_`.
    pub fn named(name: &str) -> Self {
        Namespace {
            prefix: Some(name.to_owned()),
        }
    }

    /// The subject `subject` as published in this namespace.
    pub fn subject(&self, subject: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}.{subject}"),
            None => subject.to_owned(),
        }
    }

    /// The contract subject of a published subject (the namespace prefix removed).
    pub fn strip<'s>(&self, subject: &'s str) -> &'s str {
        match &self.prefix {
            Some(p) => subject
                .strip_prefix(p.as_str())
                .and_then(|s| s.strip_prefix('.'))
                .unwrap_or(subject),
            None => subject,
        }
    }

    /// The stream name `base` (e.g. `PALISADE_SECURITY`) in this namespace.
    pub fn stream(&self, base: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{}_{base}", p.to_ascii_uppercase().replace(['.', '-'], "_")),
            None => base.to_owned(),
        }
    }
}

/// Settings of the ingest path.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Namespace of subjects and streams.
    pub namespace: Namespace,
    /// Most messages in one batch (default 256).
    pub batch_max_messages: usize,
    /// Longest a batch waits to fill before it is written (default 500 ms).
    pub batch_max_wait: Duration,
    /// Batches of one projection written concurrently, each in its own transaction (default 4).
    pub writers: usize,
    /// How long JetStream waits for an ack before redelivering (default 30 s).
    pub ack_wait: Duration,
    /// How long streams keep messages (default 30 days).
    pub stream_max_age: Duration,
    /// Window in which a repeated `Nats-Msg-Id` is dropped (default 2 min).
    pub duplicate_window: Duration,
    /// Longest pause between retries of a batch that hit a transient fault (default 30 s).
    pub max_backoff: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            namespace: Namespace::root(),
            batch_max_messages: 256,
            batch_max_wait: Duration::from_millis(500),
            writers: 4,
            ack_wait: Duration::from_secs(30),
            stream_max_age: Duration::from_secs(30 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            max_backoff: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_prefix_and_strip() {
        let ns = Namespace::named("t-42");
        assert_eq!(ns.subject("falco.notice.x"), "t-42.falco.notice.x");
        assert_eq!(ns.strip("t-42.falco.notice.x"), "falco.notice.x");
        assert_eq!(ns.stream("PALISADE_LOGS"), "T_42_PALISADE_LOGS");
        let root = Namespace::root();
        assert_eq!(root.subject("logs.auth"), "logs.auth");
        assert_eq!(root.strip("logs.auth"), "logs.auth");
        assert_eq!(root.stream("PALISADE_LOGS"), "PALISADE_LOGS");
    }
}
