//! The JetStream streams (DESIGN.md §4) and the server check made at start-up.

use async_nats::jetstream::{self, stream};

use crate::{IngestConfig, IngestError, Namespace};

/// The oldest NATS server Palisade accepts: 2.9 silently ignores consumer
/// `filter_subjects`, so a consumer would receive every subject of its stream.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 10);

/// A stream of related subjects with one retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamFamily {
    /// Falco alerts (both subject schemes), XDP drops, malware findings.
    Security,
    /// Metrics and process deltas from edge agents.
    Telemetry,
    /// Vulnerability scan reports.
    Scan,
    /// Network connections.
    Topology,
    /// Logs.
    Logs,
    /// Dead letters: messages no decoder or writer could take, with the reason.
    DeadLetters,
    /// Incidents Palisade raises (`incidents.p0`), for pagers and remediation.
    Incidents,
}

impl StreamFamily {
    /// Every stream, the outbound ones last.
    pub const ALL: [StreamFamily; 7] = [
        StreamFamily::Security,
        StreamFamily::Telemetry,
        StreamFamily::Scan,
        StreamFamily::Topology,
        StreamFamily::Logs,
        StreamFamily::DeadLetters,
        StreamFamily::Incidents,
    ];

    /// Stream name in the root namespace.
    pub fn base_name(self) -> &'static str {
        match self {
            StreamFamily::Security => "PALISADE_SECURITY",
            StreamFamily::Telemetry => "PALISADE_TELEMETRY",
            StreamFamily::Scan => "PALISADE_SCAN",
            StreamFamily::Topology => "PALISADE_TOPOLOGY",
            StreamFamily::Logs => "PALISADE_LOGS",
            StreamFamily::DeadLetters => "PALISADE_DLQ",
            StreamFamily::Incidents => "PALISADE_INCIDENTS",
        }
    }

    /// Contract subjects the stream captures.
    pub fn subjects(self) -> &'static [&'static str] {
        match self {
            StreamFamily::Security => &["falco.>", "security.>"],
            StreamFamily::Telemetry => &["telemetry.>"],
            StreamFamily::Scan => &["scan.>"],
            StreamFamily::Topology => &["topology.>"],
            StreamFamily::Logs => &["logs.>"],
            StreamFamily::DeadLetters => &["dlq.>"],
            StreamFamily::Incidents => &["incidents.>"],
        }
    }

    /// The stream's name in `namespace`.
    pub fn name(self, namespace: &Namespace) -> String {
        namespace.stream(self.base_name())
    }

    /// The stream's configuration.
    pub fn config(self, config: &IngestConfig) -> stream::Config {
        stream::Config {
            name: self.name(&config.namespace),
            description: Some(format!("palisade {self:?} events")),
            subjects: self
                .subjects()
                .iter()
                .map(|s| config.namespace.subject(s))
                .collect(),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: config.stream_max_age,
            duplicate_window: config.duplicate_window,
            ..Default::default()
        }
    }
}

/// Parses `major.minor.patch[-suffix]`.
pub fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.trim_start_matches('v').split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Refuses servers older than [`MIN_SERVER_VERSION`] or without JetStream.
pub fn check_server(info: &async_nats::ServerInfo) -> Result<(), IngestError> {
    let Some((major, minor, _)) = parse_version(&info.version) else {
        return Err(IngestError::UnsupportedServer(format!(
            "cannot read the NATS server version {:?}",
            info.version
        )));
    };
    if (major, minor) < MIN_SERVER_VERSION {
        return Err(IngestError::UnsupportedServer(format!(
            "NATS server {} is too old: Palisade needs {}.{} or newer with JetStream \
             (2.9 silently ignores consumer subject filters). Start the bundled server with \
             `scripts/stack.sh up` or point NATS_URL at a newer one.",
            info.version, MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
        )));
    }
    if !info.jetstream {
        return Err(IngestError::UnsupportedServer(format!(
            "NATS server {} at {}:{} has JetStream disabled: enable it (`jetstream {{}}` in its config)",
            info.version, info.host, info.port
        )));
    }
    Ok(())
}

/// Creates every stream, or updates it to the configured limits.
pub async fn ensure_streams(
    js: &jetstream::Context,
    config: &IngestConfig,
) -> Result<(), IngestError> {
    for family in StreamFamily::ALL {
        let cfg = family.config(config);
        let name = cfg.name.clone();
        js.create_or_update_stream(cfg)
            .await
            .map_err(|e| IngestError::jetstream(format!("create stream {name}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("2.10.0-beta.3"), Some((2, 10, 0)));
        assert_eq!(parse_version("v2.9"), Some((2, 9, 0)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn old_servers_are_refused() {
        let info = async_nats::ServerInfo {
            version: "2.9.10".into(),
            jetstream: true,
            ..Default::default()
        };
        let err = check_server(&info).unwrap_err().to_string();
        assert!(err.contains("2.9.10 is too old"), "{err}");
        let ok = async_nats::ServerInfo {
            version: "2.10.0".into(),
            jetstream: true,
            ..Default::default()
        };
        assert!(check_server(&ok).is_ok());
        let no_js = async_nats::ServerInfo {
            jetstream: false,
            ..ok
        };
        assert!(check_server(&no_js)
            .unwrap_err()
            .to_string()
            .contains("JetStream disabled"));
    }
}
