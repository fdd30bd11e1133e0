//! The projections fed from the streams, and which streams and subjects each reads.

use crate::streams::StreamFamily;

/// A projection: a set of PostgreSQL tables kept up to date from the streams by
/// its own durable consumer(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    /// `events` (+ `hosts`): Falco alerts, XDP drops, malware findings, logs.
    Events,
    /// `metrics` (+ rollup bookkeeping).
    Metrics,
    /// `processes`: what runs where now.
    Processes,
    /// `connections`.
    Connections,
    /// `scans`, `packages`, `package_files`, `vulnerabilities`, `host_packages`,
    /// `host_vulnerabilities`.
    Vulns,
    /// `event_vectors`: embeddings of the events worth embedding (semantic hunting).
    Vectors,
}

/// One stream a projection reads, with its subject filters (contract subjects,
/// before namespacing).
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// The stream.
    pub family: StreamFamily,
    /// Subjects the consumer filters on.
    pub filters: &'static [&'static str],
}

impl Projection {
    /// Every projection, in start-up order.
    pub const ALL: [Projection; 6] = [
        Projection::Events,
        Projection::Metrics,
        Projection::Processes,
        Projection::Connections,
        Projection::Vulns,
        Projection::Vectors,
    ];

    /// The name used on the command line, in durable consumer names and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Projection::Events => "events",
            Projection::Metrics => "metrics",
            Projection::Processes => "processes",
            Projection::Connections => "connections",
            Projection::Vulns => "vulns",
            Projection::Vectors => "vectors",
        }
    }

    /// Parses a projection name.
    pub fn parse(name: &str) -> Option<Projection> {
        Projection::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The durable consumer name this projection uses on each of its streams.
    pub fn durable_name(self) -> String {
        format!("palisade-{}", self.name())
    }

    /// The streams and subjects this projection reads.
    pub fn bindings(self) -> &'static [Binding] {
        match self {
            Projection::Events | Projection::Vectors => &[
                Binding {
                    family: StreamFamily::Security,
                    filters: &["falco.>", "security.>"],
                },
                Binding {
                    family: StreamFamily::Logs,
                    filters: &["logs.>"],
                },
            ],
            Projection::Metrics => &[Binding {
                family: StreamFamily::Telemetry,
                filters: &["telemetry.metrics.>"],
            }],
            Projection::Processes => &[Binding {
                family: StreamFamily::Telemetry,
                filters: &["telemetry.processes.>"],
            }],
            Projection::Connections => &[Binding {
                family: StreamFamily::Topology,
                filters: &["topology.>"],
            }],
            Projection::Vulns => &[Binding {
                family: StreamFamily::Scan,
                filters: &["scan.>"],
            }],
        }
    }

    /// Tables emptied before a replay rebuilds this projection (children first).
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Projection::Events => &["events"],
            Projection::Metrics => &["metrics", "metrics_rollup_pending"],
            Projection::Processes => &["processes"],
            Projection::Connections => &["connections"],
            Projection::Vectors => &[
                "alert_group_texts",
                "alert_groups",
                "event_vectors",
                "embedding_texts",
            ],
            Projection::Vulns => &[
                "host_vulnerabilities",
                "host_packages",
                "package_files",
                "scans",
                "vulnerabilities",
                "packages",
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Projection::ALL {
            assert_eq!(Projection::parse(p.name()), Some(p));
        }
        assert_eq!(Projection::parse("nope"), None);
    }
}
