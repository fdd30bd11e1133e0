//! SRQL — the search-bar language of Palisade.
//!
//! This crate is pure (no IO, no async): text in, a compiled query value out.
//! The grammar, planner and compiler arrive with the search issue; for now the
//! crate only names the entities a query can select, so the workspace builds
//! against a stable boundary.

/// The entities an SRQL query can select with `in:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// Every security event: Falco alerts, XDP drops, malware findings, logs.
    Events,
    /// Host and service metrics.
    Metrics,
    /// Vulnerabilities found by scanners.
    Vulns,
    /// Observed network connections.
    Connections,
    /// Processes running now.
    Processes,
}

impl Entity {
    /// The PostgreSQL table that holds this entity.
    pub fn table(self) -> &'static str {
        match self {
            Entity::Events => "events",
            Entity::Metrics => "metrics",
            Entity::Vulns => "host_vulnerabilities",
            Entity::Connections => "connections",
            Entity::Processes => "processes",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_map_to_tables() {
        assert_eq!(Entity::Events.table(), "events");
        assert_eq!(Entity::Vulns.table(), "host_vulnerabilities");
    }
}
