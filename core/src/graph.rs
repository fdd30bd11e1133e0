//! The topology graph and blast radius: who talks to whom, from the connections
//! the edge agents observe, and what an attacker could reach from a foothold.
//!
//! Nodes are hosts, services (`host:port`, with the listening process) and
//! addresses no known host owns (outside peers). Edges point the way an attacker
//! could pivot:
//!
//! ```text
//!  web-01 ──connects to──► db-01:5432 ──runs on──► db-01 ──► backup-01:22 ──► backup-01
//!  203.0.113.5 ──connects to──► web-01:443 ──runs on──► web-01
//! ```
//!
//! A connection observed on host H from its port `lp` to `R:rp` is inbound when H
//! listens on `lp` (the peer `R` reached the service `H:lp`), else outbound (H
//! reached the service `R:rp`, or the address `R` while no host is known to own
//! it). A host owns the non-loopback, non-wildcard addresses its own connections
//! use locally; edges to an address move to the owner's service once it is known.
//!
//! Hops count connections only: a service and the host it runs on are at the same
//! distance, so "depth 3" means three pivots. Edges not seen within the window age
//! out ([`Topology::prune`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::RwLock;

use chrono::{DateTime, Duration, Utc};
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use serde::Serialize;

use crate::model::Connection;

/// A node of the topology.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKey {
    /// A host that reports (or is known to own an address).
    Host(String),
    /// A port a host serves on.
    Service {
        /// The host serving.
        host: String,
        /// The port.
        port: u16,
    },
    /// An address no known host owns.
    Address(String),
}

impl NodeKey {
    /// `host`, `service` or `address`.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeKey::Host(_) => "host",
            NodeKey::Service { .. } => "service",
            NodeKey::Address(_) => "address",
        }
    }

    /// The host this node is or runs on (none for an outside address).
    pub fn host(&self) -> Option<&str> {
        match self {
            NodeKey::Host(host) | NodeKey::Service { host, .. } => Some(host),
            NodeKey::Address(_) => None,
        }
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeKey::Host(host) => f.write_str(host),
            NodeKey::Service { host, port } => write!(f, "{host}:{port}"),
            NodeKey::Address(ip) => f.write_str(ip),
        }
    }
}

/// What an edge stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// Observed connections from the source to the target.
    ConnectsTo,
    /// A service runs on its host (no hop).
    RunsOn,
}

/// An edge's observations.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeInfo {
    /// What it stands for.
    pub kind: EdgeKind,
    /// First observation.
    pub first_seen: DateTime<Utc>,
    /// Last observation.
    pub last_seen: DateTime<Utc>,
    /// Observations.
    pub count: u64,
    /// Destination ports, for edges to an address (they become services once the
    /// address's owner is known).
    pub ports: Vec<u16>,
}

/// A node's data.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// Which node.
    pub key: NodeKey,
    /// The listening process, for a service when the agent named it.
    pub process: Option<String>,
}

/// Which way to walk from the start node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Where an attacker on the node could pivot to (its outbound connections).
    Outbound,
    /// What depends on the node (whatever connects to it).
    Inbound,
}

impl Direction {
    /// Parses `outbound` or `inbound`.
    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "outbound" | "out" => Some(Direction::Outbound),
            "inbound" | "in" => Some(Direction::Inbound),
            _ => None,
        }
    }
}

/// A node within the blast radius.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reached {
    /// The node, as written (`db-01`, `db-01:5432`, `203.0.113.5`).
    pub node: String,
    /// `host`, `service` or `address`.
    pub kind: &'static str,
    /// The host it is or runs on.
    pub host: Option<String>,
    /// The listening process of a service, when known.
    pub process: Option<String>,
    /// Connections between the start and this node.
    pub hops: u32,
    /// One shortest path, start first, this node last.
    pub path: Vec<String>,
}

/// Everything within `depth` hops of a node, one way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlastRadius {
    /// The start node, resolved (an address its owner knows becomes the host).
    pub from: String,
    /// Which way.
    pub direction: Direction,
    /// The most hops walked.
    pub depth: u32,
    /// The nodes reached, nearest first (the start excluded).
    pub nodes: Vec<Reached>,
    /// Edges between reached nodes and the start, as (source, target, kind).
    pub edges: Vec<(String, String, EdgeKind)>,
}

impl BlastRadius {
    /// Graphviz DOT of the reached subgraph (for debugging).
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph blast_radius {\n  rankdir=LR;\n");
        out.push_str(&format!("  {:?} [shape=doubleoctagon];\n", self.from));
        for node in &self.nodes {
            let shape = match node.kind {
                "host" => "box",
                "service" => "ellipse",
                _ => "diamond",
            };
            out.push_str(&format!(
                "  {:?} [shape={shape}, label={:?}];\n",
                node.node,
                format!("{}\\n{} hop(s)", node.node, node.hops)
            ));
        }
        for (source, target, kind) in &self.edges {
            let style = match kind {
                EdgeKind::ConnectsTo => "solid",
                EdgeKind::RunsOn => "dashed",
            };
            out.push_str(&format!("  {source:?} -> {target:?} [style={style}];\n"));
        }
        out.push_str("}\n");
        out
    }

    /// A mermaid flowchart of the reached subgraph (for debugging and docs).
    pub fn to_mermaid(&self) -> String {
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut out = String::from("flowchart LR\n");
        let mut id_of = |name: &str, out: &mut String| -> String {
            if let Some(id) = ids.get(name) {
                return id.clone();
            }
            let id = format!("n{}", ids.len());
            out.push_str(&format!("  {id}[\"{}\"]\n", name.replace('"', "'")));
            ids.insert(name.to_owned(), id.clone());
            id
        };
        id_of(&self.from, &mut out);
        for node in &self.nodes {
            id_of(&node.node, &mut out);
        }
        for (source, target, kind) in &self.edges {
            let (a, b) = (id_of(source, &mut out), id_of(target, &mut out));
            let arrow = match kind {
                EdgeKind::ConnectsTo => "-->",
                EdgeKind::RunsOn => "-.->",
            };
            out.push_str(&format!("  {a} {arrow} {b}\n"));
        }
        out
    }
}

/// Why a blast radius could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The start node is not in the graph.
    #[error("no host, service or address {0:?} in the connection graph")]
    UnknownNode(String),
}

/// Sizes of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GraphSize {
    /// Hosts, services and addresses.
    pub nodes: usize,
    /// Connection and runs-on edges.
    pub edges: usize,
}

#[derive(Debug, Default)]
struct Inner {
    graph: StableDiGraph<NodeInfo, EdgeInfo>,
    nodes: HashMap<NodeKey, NodeIndex>,
    edges: HashMap<(NodeIndex, NodeIndex), EdgeIndex>,
    /// Address → the host that uses it locally.
    owners: HashMap<String, String>,
    /// Ports each host listens on.
    listening: HashSet<(String, u16)>,
}

/// The in-memory connection graph, shared by the topology projection (writer)
/// and queries (readers).
#[derive(Debug)]
pub struct Topology {
    inner: RwLock<Inner>,
    window: Duration,
}

/// An address that names one machine (not loopback, not a wildcard).
fn specific(ip: &str) -> bool {
    match ip.parse::<IpAddr>() {
        Ok(addr) => !addr.is_loopback() && !addr.is_unspecified(),
        Err(_) => false,
    }
}

fn port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

impl Inner {
    fn node(&mut self, key: NodeKey) -> NodeIndex {
        if let Some(index) = self.nodes.get(&key) {
            return *index;
        }
        let index = self.graph.add_node(NodeInfo {
            key: key.clone(),
            process: None,
        });
        self.nodes.insert(key, index);
        index
    }

    fn service(&mut self, host: &str, port: u16) -> NodeIndex {
        let service = self.node(NodeKey::Service {
            host: host.to_owned(),
            port,
        });
        let on = self.node(NodeKey::Host(host.to_owned()));
        if !self.edges.contains_key(&(service, on)) {
            let index = self.graph.add_edge(
                service,
                on,
                EdgeInfo {
                    kind: EdgeKind::RunsOn,
                    first_seen: DateTime::<Utc>::MIN_UTC,
                    last_seen: DateTime::<Utc>::MAX_UTC,
                    count: 0,
                    ports: Vec::new(),
                },
            );
            self.edges.insert((service, on), index);
        }
        service
    }

    /// Adds `seen` (observations, with a destination port for an address) to the
    /// connection edge `from → to`.
    fn connect(&mut self, from: NodeIndex, to: NodeIndex, seen: &EdgeInfo) {
        if let Some(index) = self.edges.get(&(from, to)) {
            let edge = &mut self.graph[*index];
            edge.first_seen = edge.first_seen.min(seen.first_seen);
            edge.last_seen = edge.last_seen.max(seen.last_seen);
            edge.count += seen.count;
            for p in &seen.ports {
                if !edge.ports.contains(p) {
                    edge.ports.push(*p);
                }
            }
            return;
        }
        let index = self.graph.add_edge(from, to, seen.clone());
        self.edges.insert((from, to), index);
    }

    /// The node a peer address stands for: its owner host, else the address.
    fn peer(&mut self, ip: &str) -> NodeIndex {
        match self.owners.get(ip).cloned() {
            Some(host) => self.node(NodeKey::Host(host)),
            None => self.node(NodeKey::Address(ip.to_owned())),
        }
    }

    /// `host` uses `ip` locally: it owns it. Edges to the address move to the
    /// host's services.
    fn own(&mut self, ip: &str, host: &str) {
        if !specific(ip) || self.owners.get(ip).is_some_and(|h| h == host) {
            return;
        }
        self.owners.insert(ip.to_owned(), host.to_owned());
        let Some(address) = self.nodes.remove(&NodeKey::Address(ip.to_owned())) else {
            return;
        };
        let host_node = self.node(NodeKey::Host(host.to_owned()));
        let incoming: Vec<(NodeIndex, EdgeInfo)> = self
            .graph
            .edges_directed(address, petgraph::Direction::Incoming)
            .map(|e| (e.source(), e.weight().clone()))
            .collect();
        let outgoing: Vec<(NodeIndex, EdgeInfo)> = self
            .graph
            .edges_directed(address, petgraph::Direction::Outgoing)
            .map(|e| (e.target(), e.weight().clone()))
            .collect();
        // Only the address's own edges leave the map (not a scan of every edge).
        for (source, _) in &incoming {
            self.edges.remove(&(*source, address));
        }
        for (target, _) in &outgoing {
            self.edges.remove(&(address, *target));
        }
        for (source, info) in incoming {
            let seen = EdgeInfo {
                ports: Vec::new(),
                ..info.clone()
            };
            for p in &info.ports {
                let service = self.service(host, *p);
                self.connect(source, service, &seen);
            }
        }
        for (target, info) in outgoing {
            self.connect(host_node, target, &info);
        }
        self.graph.remove_node(address);
    }

    /// Adds one observation (or `count` of them, first and last seen).
    fn observe(&mut self, c: &Observation<'_>) {
        let local_port = port(c.local_port);
        self.own(c.local_ip, c.host);
        let remote = c
            .remote_ip
            .filter(|ip| !ip.is_empty())
            .zip(c.remote_port.and_then(port));
        let Some((remote_ip, remote_port)) = remote.filter(|_| c.status != "LISTEN") else {
            if let Some(local_port) = local_port.filter(|_| c.status == "LISTEN") {
                self.listening.insert((c.host.to_owned(), local_port));
                let service = self.service(c.host, local_port);
                if let Some(process) = c.process {
                    self.graph[service].process = Some(process.to_owned());
                }
            }
            return;
        };
        if !specific(remote_ip) {
            // Loopback traffic stays on the host.
            return;
        }
        let mut seen = EdgeInfo {
            kind: EdgeKind::ConnectsTo,
            first_seen: c.first,
            last_seen: c.last,
            count: c.count,
            ports: Vec::new(),
        };
        let served = local_port.filter(|p| self.listening.contains(&(c.host.to_owned(), *p)));
        if let Some(local_port) = served {
            // The peer reached our service.
            let service = self.service(c.host, local_port);
            let peer = self.peer(remote_ip);
            self.connect(peer, service, &seen);
        } else {
            let from = self.node(NodeKey::Host(c.host.to_owned()));
            let to = match self.owners.get(remote_ip).cloned() {
                Some(owner) => self.service(&owner, remote_port),
                None => {
                    seen.ports.push(remote_port);
                    self.node(NodeKey::Address(remote_ip.to_owned()))
                }
            };
            self.connect(from, to, &seen);
        }
    }

    fn resolve(&self, name: &str) -> Option<NodeIndex> {
        if let Some(index) = self.nodes.get(&NodeKey::Host(name.to_owned())) {
            return Some(*index);
        }
        if let Some(owner) = self.owners.get(name) {
            return self.nodes.get(&NodeKey::Host(owner.clone())).copied();
        }
        if let Some(index) = self.nodes.get(&NodeKey::Address(name.to_owned())) {
            return Some(*index);
        }
        let (host, p) = name.rsplit_once(':')?;
        let port = p.parse::<u16>().ok()?;
        let host = self
            .owners
            .get(host)
            .cloned()
            .unwrap_or_else(|| host.to_owned());
        self.nodes.get(&NodeKey::Service { host, port }).copied()
    }
}

/// One connection record, or the aggregate of several with the same endpoints.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// Host that observed it.
    pub host: &'a str,
    /// The owning process's name.
    pub process: Option<&'a str>,
    /// Local address.
    pub local_ip: &'a str,
    /// Local port; negative for a client port that was not kept.
    pub local_port: i32,
    /// Remote address.
    pub remote_ip: Option<&'a str>,
    /// Remote port.
    pub remote_port: Option<i32>,
    /// TCP state.
    pub status: &'a str,
    /// First time seen.
    pub first: DateTime<Utc>,
    /// Last time seen.
    pub last: DateTime<Utc>,
    /// How many records.
    pub count: u64,
}

impl<'a> From<&'a Connection> for Observation<'a> {
    fn from(c: &'a Connection) -> Self {
        Observation {
            host: &c.host,
            process: c.process.as_deref(),
            local_ip: &c.local_ip,
            local_port: c.local_port,
            remote_ip: c.remote_ip.as_deref(),
            remote_port: c.remote_port,
            status: &c.status,
            first: c.ts,
            last: c.ts,
            count: 1,
        }
    }
}

impl Topology {
    /// An empty graph whose edges age out after `window`.
    pub fn new(window: Duration) -> Topology {
        Topology {
            inner: RwLock::new(Inner::default()),
            window,
        }
    }

    /// How long an edge lives without being seen again.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Adds observations. Listening sockets go first, so a batch's inbound
    /// connections find the services they reached.
    pub fn observe<'a>(&self, observations: impl IntoIterator<Item = Observation<'a>>) {
        let mut all: Vec<Observation<'a>> = observations.into_iter().collect();
        all.sort_by_key(|o| o.status != "LISTEN");
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for observation in &all {
            inner.observe(observation);
        }
    }

    /// Removes connection edges last seen before `now - window`, and the
    /// addresses and services left without any connection.
    pub fn prune(&self, now: DateTime<Utc>) -> usize {
        let cutoff = now - self.window;
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let old: Vec<EdgeIndex> = inner
            .graph
            .edge_indices()
            .filter(|e| {
                inner.graph[*e].kind == EdgeKind::ConnectsTo && inner.graph[*e].last_seen < cutoff
            })
            .collect();
        let removed = old.len();
        for edge in old {
            if let Some((a, b)) = inner.graph.edge_endpoints(edge) {
                inner.edges.remove(&(a, b));
            }
            inner.graph.remove_edge(edge);
        }
        // An address has connection edges only, so one left without any has no
        // edge at all: removing it leaves the edge map as it is.
        let lonely: Vec<NodeIndex> = inner
            .graph
            .node_indices()
            .filter(|n| {
                matches!(inner.graph[*n].key, NodeKey::Address(_))
                    && inner.graph.neighbors_undirected(*n).next().is_none()
            })
            .collect();
        for node in lonely {
            let key = inner.graph[node].key.clone();
            inner.nodes.remove(&key);
            inner.graph.remove_node(node);
        }
        removed
    }

    /// Node and edge counts.
    pub fn size(&self) -> GraphSize {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        GraphSize {
            nodes: inner.graph.node_count(),
            edges: inner.graph.edge_count(),
        }
    }

    /// Everything within `depth` connections of `from` (a host name, an address, or
    /// `host:port`), walking `direction`; connection edges last seen before
    /// `now - window` are not walked.
    pub fn blast_radius(
        &self,
        from: &str,
        depth: u32,
        direction: Direction,
        now: DateTime<Utc>,
    ) -> Result<BlastRadius, GraphError> {
        let cutoff = now - self.window;
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let start = inner
            .resolve(from)
            .ok_or_else(|| GraphError::UnknownNode(from.to_owned()))?;
        let way = match direction {
            Direction::Outbound => petgraph::Direction::Outgoing,
            Direction::Inbound => petgraph::Direction::Incoming,
        };
        // 0-1 breadth-first: runs-on edges cost no hop, so they go to the front.
        // Per-node state in vectors indexed by node: no hashing on the hot path.
        const UNSEEN: u32 = u32::MAX;
        let bound = inner.graph.node_bound();
        let mut hops = vec![UNSEEN; bound];
        let mut parent: Vec<Option<NodeIndex>> = vec![None; bound];
        let mut done = vec![false; bound];
        hops[start.index()] = 0;
        let mut order: Vec<NodeIndex> = Vec::new();
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            if std::mem::replace(&mut done[node.index()], true) {
                continue;
            }
            if node != start {
                order.push(node);
            }
            let here = hops[node.index()];
            // At the last hop only runs-on edges (no hop) can still be followed, and
            // only services have them outbound, only hosts inbound: skip the rest of
            // the frontier's edges, most of the walk's memory traffic.
            let has_runs_on = matches!(
                (&inner.graph[node].key, way),
                (NodeKey::Service { .. }, petgraph::Direction::Outgoing)
                    | (NodeKey::Host(_), petgraph::Direction::Incoming)
            );
            if here == depth && !has_runs_on {
                continue;
            }
            for edge in inner.graph.edges_directed(node, way) {
                let info = edge.weight();
                let cost = u32::from(info.kind == EdgeKind::ConnectsTo);
                let reach = here + cost;
                if reach > depth || (cost == 1 && info.last_seen < cutoff) {
                    continue;
                }
                let next = match way {
                    petgraph::Direction::Outgoing => edge.target(),
                    petgraph::Direction::Incoming => edge.source(),
                };
                if hops[next.index()] <= reach {
                    continue;
                }
                hops[next.index()] = reach;
                parent[next.index()] = Some(node);
                if cost == 0 {
                    queue.push_front(next);
                } else {
                    queue.push_back(next);
                }
            }
        }
        // Each reached node's name, made once.
        let mut names: HashMap<NodeIndex, String> = HashMap::with_capacity(order.len() + 1);
        names.insert(start, inner.graph[start].key.to_string());
        for &n in &order {
            names.insert(n, inner.graph[n].key.to_string());
        }
        let name = |n: NodeIndex| names[&n].clone();
        let mut nodes: Vec<Reached> = order
            .iter()
            .map(|&n| {
                let mut path = vec![name(n)];
                let mut at = n;
                while let Some(p) = parent[at.index()] {
                    path.push(name(p));
                    at = p;
                }
                path.reverse();
                let info = &inner.graph[n];
                Reached {
                    node: name(n),
                    kind: info.key.kind(),
                    host: info.key.host().map(str::to_owned),
                    process: info.process.clone(),
                    hops: hops[n.index()],
                    path,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.hops.cmp(&b.hops).then_with(|| a.node.cmp(&b.node)));
        let mut edges: Vec<(String, String, EdgeKind)> = order
            .iter()
            .filter_map(|&child| parent[child.index()].map(|p| (p, child)))
            .map(|(parent, child)| {
                let (a, b) = match way {
                    petgraph::Direction::Outgoing => (parent, child),
                    petgraph::Direction::Incoming => (child, parent),
                };
                let kind = inner
                    .edges
                    .get(&(a, b))
                    .map_or(EdgeKind::ConnectsTo, |e| inner.graph[*e].kind);
                (name(a), name(b), kind)
            })
            .collect();
        edges.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        Ok(BlastRadius {
            from: name(start),
            direction,
            depth,
            nodes,
            edges,
        })
    }
}

/// Risk evidence of one host: what makes reaching it matter.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RiskEvidence {
    /// Open critical vulnerabilities.
    pub critical_cves: i64,
    /// Open high vulnerabilities.
    pub high_cves: i64,
    /// Open P0 incidents: critical or high vulnerabilities in a package a live
    /// process belongs to (see [`crate::correlation`]).
    pub running_vulnerable: i64,
    /// Alerts (Falco and other security events) since the cut-off.
    pub recent_alerts: i64,
}

impl RiskEvidence {
    /// One number to rank by: a running vulnerable binary outweighs anything on
    /// disk, a critical CVE outweighs a few high ones, alerts add a little each.
    pub fn score(&self) -> i64 {
        self.running_vulnerable * 100
            + self.critical_cves * 10
            + self.high_cves * 3
            + self.recent_alerts.min(100)
    }
}

/// The risk evidence of `hosts` from PostgreSQL: open CVEs, running vulnerable
/// packages and alerts since `alerts_since`.
pub async fn risk_evidence(
    pool: &sqlx::PgPool,
    hosts: &[String],
    alerts_since: DateTime<Utc>,
) -> Result<HashMap<String, RiskEvidence>, sqlx::Error> {
    let mut evidence: HashMap<String, RiskEvidence> = HashMap::new();
    if hosts.is_empty() {
        return Ok(evidence);
    }
    let cves: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT host, \
                count(DISTINCT vulnerability_id) FILTER (WHERE severity = 'critical'), \
                count(DISTINCT vulnerability_id) FILTER (WHERE severity = 'high') \
         FROM host_vulnerabilities \
         WHERE host = ANY($1) AND resolved_at IS NULL AND severity IN ('critical', 'high') \
         GROUP BY host",
    )
    .bind(hosts)
    .fetch_all(pool)
    .await?;
    for (host, critical, high) in cves {
        let e = evidence.entry(host).or_default();
        e.critical_cves = critical;
        e.high_cves = high;
    }
    // What the correlation pass found running (crate::correlation).
    let running: Vec<(String, i64)> = sqlx::query_as(
        "SELECT host, count(*) FROM incidents \
         WHERE host = ANY($1) AND resolved_at IS NULL AND state = 'running' GROUP BY host",
    )
    .bind(hosts)
    .fetch_all(pool)
    .await?;
    for (host, n) in running {
        evidence.entry(host).or_default().running_vulnerable = n;
    }
    let alerts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT host, count(*) FROM events \
         WHERE host = ANY($1) AND ts >= $2 AND type IN ('falco_alert', 'malware_finding') \
         GROUP BY host",
    )
    .bind(hosts)
    .bind(alerts_since)
    .fetch_all(pool)
    .await?;
    for (host, n) in alerts {
        evidence.entry(host).or_default().recent_alerts = n;
    }
    Ok(evidence)
}

/// A reached node with its risk: [`RiskEvidence::score`] of the host it is or
/// runs on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AtRisk {
    /// The node, its hops and path.
    #[serde(flatten)]
    pub reached: Reached,
    /// Its host's score (0 for an outside address or a host without evidence).
    pub risk: i64,
    /// Its host's evidence.
    pub evidence: RiskEvidence,
}

/// Why a ranked blast radius could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum AssessError {
    /// The start node is not in the graph.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The risk evidence could not be read.
    #[error("reading risk evidence: {0}")]
    Database(#[from] sqlx::Error),
}

/// The blast radius of `from` with each node's risk evidence, most at risk first
/// (nearer first among equals), and the radius itself for its edges and exports.
pub async fn assess(
    topology: &Topology,
    pool: &sqlx::PgPool,
    from: &str,
    depth: u32,
    direction: Direction,
    now: DateTime<Utc>,
) -> Result<(BlastRadius, Vec<AtRisk>), AssessError> {
    let radius = topology.blast_radius(from, depth, direction, now)?;
    let mut hosts: Vec<String> = radius.nodes.iter().filter_map(|n| n.host.clone()).collect();
    hosts.sort();
    hosts.dedup();
    let evidence = risk_evidence(pool, &hosts, now - Duration::hours(RECENT_ALERT_HOURS)).await?;
    let mut ranked: Vec<AtRisk> = radius
        .nodes
        .iter()
        .map(|node| {
            let evidence = node
                .host
                .as_ref()
                .and_then(|h| evidence.get(h))
                .cloned()
                .unwrap_or_default();
            AtRisk {
                reached: node.clone(),
                risk: evidence.score(),
                evidence,
            }
        })
        .collect();
    // Stable: the walk's order (nearest, then by name) among equals.
    ranked.sort_by(|a, b| {
        b.risk
            .cmp(&a.risk)
            .then(a.reached.hops.cmp(&b.reached.hops))
    });
    Ok((radius, ranked))
}

/// Alerts within this many hours count as recent risk evidence.
pub const RECENT_ALERT_HOURS: i64 = 24;

/// One aggregated row of the connections table.
type ConnectionGroup = (
    String,
    Option<String>,
    String,
    i32,
    Option<String>,
    Option<i32>,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    i64,
);

impl Topology {
    /// The graph of the connections observed since `now - window`, from
    /// PostgreSQL (the projection's table): what a restart starts from before the
    /// topology projection resumes.
    pub async fn load(
        pool: &sqlx::PgPool,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<Topology, sqlx::Error> {
        // Listening sockets by port; connections by endpoints, the local port
        // kept only where it is a listening one (client ports are ephemeral).
        let rows: Vec<ConnectionGroup> = sqlx::query_as(
            "WITH recent AS (SELECT * FROM connections WHERE ts >= $1), \
             listening AS (SELECT DISTINCT host, local_port FROM recent WHERE status = 'LISTEN') \
             SELECT r.host, max(r.process), r.local_ip, \
                    CASE WHEN r.status = 'LISTEN' OR l.host IS NOT NULL THEN r.local_port ELSE -1 END, \
                    r.remote_ip, r.remote_port, \
                    CASE WHEN r.status = 'LISTEN' THEN 'LISTEN' ELSE 'ESTABLISHED' END, \
                    min(r.ts), max(r.ts), count(*) \
             FROM recent r LEFT JOIN listening l ON l.host = r.host AND l.local_port = r.local_port \
             GROUP BY 1, 3, 4, 5, 6, 7",
        )
        .bind(now - window)
        .fetch_all(pool)
        .await?;
        let topology = Topology::new(window);
        topology.observe(rows.iter().map(
            |(
                host,
                process,
                local_ip,
                local_port,
                remote_ip,
                remote_port,
                status,
                first,
                last,
                count,
            )| {
                Observation {
                    host,
                    process: process.as_deref(),
                    local_ip,
                    local_port: *local_port,
                    remote_ip: remote_ip.as_deref(),
                    remote_port: *remote_port,
                    status,
                    first: *first,
                    last: *last,
                    count: u64::try_from(*count).unwrap_or(0),
                }
            },
        ));
        Ok(topology)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, hour, 0, 0).unwrap()
    }

    /// A connection record as an agent reports it.
    fn seen<'a>(
        host: &'a str,
        local: (&'a str, i32),
        remote: Option<(&'a str, i32)>,
        status: &'a str,
        hour: u32,
    ) -> Observation<'a> {
        Observation {
            host,
            process: (status == "LISTEN").then_some("sshd"),
            local_ip: local.0,
            local_port: local.1,
            remote_ip: remote.map(|r| r.0),
            remote_port: remote.map(|r| r.1),
            status,
            first: at(hour),
            last: at(hour),
            count: 1,
        }
    }

    /// web-01 (10.0.0.1) → db-01:5432 (10.0.0.2) → backup-01:22 (10.0.0.3);
    /// an outside address reaches web-01:443.
    fn fleet() -> Topology {
        let topology = Topology::new(Duration::days(7));
        topology.observe([
            seen("web-01", ("0.0.0.0", 443), None, "LISTEN", 1),
            seen("db-01", ("10.0.0.2", 5432), None, "LISTEN", 1),
            seen("backup-01", ("0.0.0.0", 22), None, "LISTEN", 1),
            seen(
                "backup-01",
                ("10.0.0.3", 22),
                Some(("10.0.0.2", 40112)),
                "ESTABLISHED",
                2,
            ),
            seen(
                "web-01",
                ("10.0.0.1", 51234),
                Some(("10.0.0.2", 5432)),
                "ESTABLISHED",
                2,
            ),
            seen(
                "db-01",
                ("10.0.0.2", 40112),
                Some(("10.0.0.3", 22)),
                "ESTABLISHED",
                2,
            ),
            seen(
                "web-01",
                ("10.0.0.1", 443),
                Some(("203.0.113.5", 61000)),
                "ESTABLISHED",
                3,
            ),
            seen(
                "web-01",
                ("127.0.0.1", 5000),
                Some(("127.0.0.1", 6379)),
                "ESTABLISHED",
                3,
            ),
        ]);
        topology
    }

    fn hops(radius: &BlastRadius) -> Vec<(String, u32)> {
        radius
            .nodes
            .iter()
            .map(|n| (n.node.clone(), n.hops))
            .collect()
    }

    #[test]
    fn outbound_follows_pivots_and_services_cost_no_hop() {
        let radius = fleet()
            .blast_radius("web-01", 3, Direction::Outbound, at(4))
            .unwrap();
        assert_eq!(
            hops(&radius),
            vec![
                ("db-01".into(), 1),
                ("db-01:5432".into(), 1),
                ("backup-01".into(), 2),
                ("backup-01:22".into(), 2),
            ]
        );
        let backup = radius.nodes.iter().find(|n| n.node == "backup-01").unwrap();
        assert_eq!(
            backup.path,
            ["web-01", "db-01:5432", "db-01", "backup-01:22", "backup-01"]
        );
        assert_eq!(backup.kind, "host");
        let sshd = radius
            .nodes
            .iter()
            .find(|n| n.node == "backup-01:22")
            .unwrap();
        assert_eq!(sshd.process.as_deref(), Some("sshd"));
        assert_eq!(sshd.host.as_deref(), Some("backup-01"));
        // One hop stops at the first host.
        let near = fleet()
            .blast_radius("web-01", 1, Direction::Outbound, at(4))
            .unwrap();
        assert_eq!(near.nodes.len(), 2);
        assert_eq!(radius.edges.len(), radius.nodes.len());
    }

    #[test]
    fn inbound_finds_what_depends_on_a_node() {
        let radius = fleet()
            .blast_radius("backup-01", 3, Direction::Inbound, at(4))
            .unwrap();
        assert_eq!(
            hops(&radius),
            vec![
                ("backup-01:22".into(), 0),
                ("db-01".into(), 1),
                ("db-01:5432".into(), 1),
                ("web-01".into(), 2),
                ("web-01:443".into(), 2),
                ("203.0.113.5".into(), 3),
            ]
        );
        // An outside address reached web-01's service; by address or by name.
        let outside = fleet()
            .blast_radius("203.0.113.5", 3, Direction::Outbound, at(4))
            .unwrap();
        assert_eq!(outside.nodes[0].node, "web-01");
        assert!(outside.nodes.iter().any(|n| n.node == "backup-01"));
        // A host's own address resolves to the host; a service by host:port.
        let by_ip = fleet()
            .blast_radius("10.0.0.2", 1, Direction::Outbound, at(4))
            .unwrap();
        assert_eq!(by_ip.from, "db-01");
        let service = fleet()
            .blast_radius("db-01:5432", 1, Direction::Inbound, at(4))
            .unwrap();
        assert_eq!(
            hops(&service),
            vec![("web-01".into(), 1), ("web-01:443".into(), 1)]
        );
    }

    #[test]
    fn an_address_becomes_its_owners_service_once_known() {
        let topology = Topology::new(Duration::days(7));
        topology.observe([seen(
            "web-01",
            ("10.0.0.1", 51234),
            Some(("10.0.0.9", 8080)),
            "ESTABLISHED",
            1,
        )]);
        let before = topology
            .blast_radius("web-01", 1, Direction::Outbound, at(2))
            .unwrap();
        assert_eq!(hops(&before), vec![("10.0.0.9".into(), 1)]);
        topology.observe([seen("api-01", ("10.0.0.9", 8080), None, "LISTEN", 2)]);
        let after = topology
            .blast_radius("web-01", 1, Direction::Outbound, at(2))
            .unwrap();
        assert_eq!(
            hops(&after),
            vec![("api-01".into(), 1), ("api-01:8080".into(), 1)]
        );
        assert_eq!(topology.size().nodes, 3);
    }

    #[test]
    fn old_edges_age_out() {
        let topology = fleet();
        let later = at(3) + Duration::days(7) + Duration::hours(1);
        // Not walked once older than the window, and gone after a prune.
        let walked = topology
            .blast_radius("web-01", 3, Direction::Outbound, later)
            .unwrap();
        assert!(walked.nodes.is_empty(), "{walked:?}");
        let edges = topology.size().edges;
        assert_eq!(topology.prune(later), 3);
        assert_eq!(topology.size().edges, edges - 3);
        // The outside address had only aged-out edges.
        assert_eq!(
            topology.blast_radius("203.0.113.5", 1, Direction::Outbound, later),
            Err(GraphError::UnknownNode("203.0.113.5".into()))
        );
    }

    #[test]
    fn exports_name_every_edge() {
        let radius = fleet()
            .blast_radius("web-01", 3, Direction::Outbound, at(4))
            .unwrap();
        let dot = radius.to_dot();
        assert!(dot.starts_with("digraph blast_radius {"), "{dot}");
        assert!(
            dot.contains("\"web-01\" -> \"db-01:5432\" [style=solid]"),
            "{dot}"
        );
        assert!(
            dot.contains("\"db-01:5432\" -> \"db-01\" [style=dashed]"),
            "{dot}"
        );
        let mermaid = radius.to_mermaid();
        assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
        assert_eq!(mermaid.matches("-->").count(), 2, "{mermaid}");
        assert_eq!(mermaid.matches("-.->").count(), 2, "{mermaid}");
    }
}
