//! Process settings: every one a flag with an environment variable and a default,
//! so Palisade can point at its own dev stack or at a production NATS cluster
//! and PostgreSQL (CloudNativePG with pgvector/TimescaleDB).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use palisade_consumers::vectors::VectorStage;
use palisade_consumers::{IngestConfig, Namespace};
use palisade_embeddings::{Embedder, EmbedderConfig, VectorPolicy};
use palisade_schema::Retention;

/// Where the services are.
#[derive(Debug, Clone, Args)]
pub struct Connections {
    /// NATS server URL (JetStream enabled, 2.10 or newer).
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: String,

    /// PostgreSQL URL (pgvector available).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://palisade@127.0.0.1:55432/palisade?sslmode=disable",
        global = true
    )]
    pub database_url: String,

    /// Namespace prefixed to every subject and stream (isolates deployments that share a NATS account).
    #[arg(long, env = "PALISADE_NAMESPACE", global = true)]
    pub namespace: Option<String>,

    /// Most PostgreSQL connections this process opens.
    #[arg(
        long,
        env = "PALISADE_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,

    /// Seconds to wait for a PostgreSQL connection before a write counts as failed and
    /// is retried with backoff.
    #[arg(
        long,
        env = "PALISADE_DB_ACQUIRE_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub db_acquire_timeout_secs: u64,
}

impl Connections {
    /// The subject/stream namespace.
    pub fn namespace(&self) -> Namespace {
        self.namespace
            .as_deref()
            .map_or_else(Namespace::root, Namespace::named)
    }
}

/// Ingest tuning.
#[derive(Debug, Clone, Args)]
pub struct IngestSettings {
    /// Most messages in one batch.
    #[arg(long, env = "PALISADE_BATCH_MAX_MESSAGES", default_value_t = 256)]
    pub batch_max_messages: usize,

    /// Longest a batch waits to fill, in milliseconds.
    #[arg(long, env = "PALISADE_BATCH_MAX_WAIT_MS", default_value_t = 500)]
    pub batch_max_wait_ms: u64,

    /// Batches of one projection written concurrently.
    #[arg(long, env = "PALISADE_WRITERS", default_value_t = 4)]
    pub writers: usize,

    /// Seconds JetStream waits for an ack before redelivering.
    #[arg(long, env = "PALISADE_ACK_WAIT_SECS", default_value_t = 30)]
    pub ack_wait_secs: u64,

    /// Days the streams keep messages.
    #[arg(long, env = "PALISADE_STREAM_MAX_AGE_DAYS", default_value_t = 30)]
    pub stream_max_age_days: u64,

    /// Seconds in which a repeated Nats-Msg-Id is dropped.
    #[arg(long, env = "PALISADE_DUPLICATE_WINDOW_SECS", default_value_t = 120)]
    pub duplicate_window_secs: u64,

    /// Hours a connection-graph edge lives without being seen again.
    #[arg(long, env = "PALISADE_TOPOLOGY_WINDOW_HOURS", default_value_t = 168)]
    pub topology_window_hours: u32,
}

impl IngestSettings {
    /// The ingest configuration for `namespace`.
    pub fn ingest_config(&self, namespace: Namespace) -> IngestConfig {
        IngestConfig {
            namespace,
            batch_max_messages: self.batch_max_messages.max(1),
            batch_max_wait: Duration::from_millis(self.batch_max_wait_ms.max(1)),
            writers: self.writers.max(1),
            ack_wait: Duration::from_secs(self.ack_wait_secs.max(1)),
            stream_max_age: Duration::from_secs(self.stream_max_age_days.max(1) * 24 * 3600),
            duplicate_window: Duration::from_secs(self.duplicate_window_secs.max(1)),
            ..IngestConfig::default()
        }
    }
}

/// Retention and maintenance.
#[derive(Debug, Clone, Args)]
pub struct RetentionSettings {
    /// Days raw metric samples are kept (0 keeps them forever).
    #[arg(long, env = "PALISADE_RETENTION_METRICS_DAYS", default_value_t = 30)]
    pub retention_metrics_days: u32,

    /// Days hourly metric rollups are kept (0 keeps them forever).
    #[arg(long, env = "PALISADE_RETENTION_ROLLUP_DAYS", default_value_t = 400)]
    pub retention_rollup_days: u32,

    /// Days events are kept in PostgreSQL (0 keeps them; the streams stay the source of truth).
    #[arg(long, env = "PALISADE_RETENTION_EVENTS_DAYS", default_value_t = 0)]
    pub retention_events_days: u32,

    /// Days observed connections are kept (0 keeps them forever).
    #[arg(
        long,
        env = "PALISADE_RETENTION_CONNECTIONS_DAYS",
        default_value_t = 30
    )]
    pub retention_connections_days: u32,

    /// Seconds between maintenance passes (partitions ahead, rollup, retention).
    #[arg(long, env = "PALISADE_MAINTENANCE_INTERVAL_SECS", default_value_t = 60)]
    pub maintenance_interval_secs: u64,
}

impl RetentionSettings {
    /// The retention policy.
    pub fn retention(&self) -> Retention {
        let days = |d: u32| (d > 0).then_some(d);
        Retention {
            metrics_days: days(self.retention_metrics_days),
            rollup_days: days(self.retention_rollup_days),
            events_days: days(self.retention_events_days),
            connections_days: days(self.retention_connections_days),
        }
    }
}

/// The search index (one per node) and its projection.
#[derive(Debug, Clone, Args)]
pub struct SearchSettings {
    /// Folder of this node's tantivy index (default: `$PALISADE_HOME/search`, else
    /// `./data/search`). One process at a time may write it.
    #[arg(long, env = "PALISADE_SEARCH_INDEX_DIR")]
    pub search_index_dir: Option<std::path::PathBuf>,

    /// This node's name; its search consumers are `palisade-search-<node>` (default:
    /// the host name). Unique per index: two processes must not share one.
    #[arg(long, env = "PALISADE_SEARCH_NODE")]
    pub search_node: Option<String>,

    /// Shortest time between two index commits, in milliseconds; messages are
    /// acknowledged after the commit that holds them.
    #[arg(
        long,
        env = "PALISADE_SEARCH_COMMIT_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub search_commit_interval_ms: u64,

    /// Memory the index writer buffers documents in, in MiB (at least 15).
    #[arg(long, env = "PALISADE_SEARCH_WRITER_HEAP_MB", default_value_t = 64)]
    pub search_writer_heap_mb: usize,

    /// Threads one search spreads the index's segments over (0: one per core).
    #[arg(long, env = "PALISADE_SEARCH_THREADS", default_value_t = 0)]
    pub search_threads: usize,
}

impl SearchSettings {
    /// The index folder.
    pub fn index_dir(&self) -> std::path::PathBuf {
        self.search_index_dir.clone().unwrap_or_else(|| {
            std::env::var_os("PALISADE_HOME")
                .filter(|home| !home.is_empty())
                .map_or_else(|| "data".into(), std::path::PathBuf::from)
                .join("search")
        })
    }

    /// The index writer's size and how many threads one search uses.
    pub fn index_options(&self) -> palisade_core::search::IndexOptions {
        palisade_core::search::IndexOptions {
            heap_bytes: self.search_writer_heap_mb.max(15) * 1024 * 1024,
            search_threads: match self.search_threads {
                0 => palisade_core::search::IndexOptions::default().search_threads,
                n => n,
            },
            ..Default::default()
        }
    }

    /// The projection's settings; the node defaults to the host name.
    pub fn search_config(&self) -> palisade_consumers::search::SearchConfig {
        let node = self
            .search_node
            .clone()
            .filter(|n| !n.trim().is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "localhost".to_owned());
        palisade_consumers::search::SearchConfig {
            node,
            commit_interval: Duration::from_millis(self.search_commit_interval_ms.max(1)),
        }
    }
}

/// Semantic hunting: the embedding model, the vectors projection and `SIMILAR_TO`.
/// The model's files and runtime are found as [`EmbedderConfig::from_env`] says
/// (`PALISADE_MODEL_DIR`, `ORT_DYLIB_PATH`, `PALISADE_EMBED_VARIANT`, …), which
/// `scripts/stack.sh env` prints.
#[derive(Debug, Clone, Args)]
pub struct SemanticSettings {
    /// Embed the events worth embedding and answer `SIMILAR_TO` (needs the converted
    /// model: `scripts/stack.sh model`). `--vectors=false` runs without them.
    #[arg(long, env = "PALISADE_VECTORS", default_value_t = true, action = clap::ArgAction::Set)]
    pub vectors: bool,

    /// The selective-vectorisation policy as a TOML file; fields left out keep their
    /// defaults (see `embeddings/src/policy.rs`).
    #[arg(long, env = "PALISADE_VECTOR_POLICY")]
    pub vector_policy: Option<std::path::PathBuf>,

    /// Candidates up to which `filter | SIMILAR_TO(…)` ranks by an exact distance
    /// scan; above it, HNSW and a re-check of each neighbour.
    #[arg(long, env = "PALISADE_SIMILAR_EXACT_MAX", default_value_t = 20_000)]
    pub similar_exact_max: u32,

    /// The most texts the HNSW path of `filter | SIMILAR_TO(…)` re-checks (the
    /// neighbourhood grows up to it); short of k after it, some of the filter's
    /// matches are ranked exactly too.
    #[arg(
        long,
        env = "PALISADE_SIMILAR_MAX_NEIGHBOURHOOD",
        default_value_t = 1000
    )]
    pub similar_max_neighbourhood: u32,

    /// `hnsw.ef_search` of `SIMILAR_TO` without a filter (at least k), which is also
    /// how many representatives' clumps a search expands when PostgreSQL scores
    /// them (no clump cache). Over 193,101 texts, 100 gave recall@50 0.94 and 150
    /// gave 0.97 (BENCHMARKS.md, "Semantic hunting").
    #[arg(long, env = "PALISADE_SIMILAR_EF_SEARCH", default_value_t = 150)]
    pub similar_ef_search: u32,

    /// Clump members a `SIMILAR_TO` search without a filter scans when the clump
    /// cache holds them: it opens the clumps nearest the text until they hold that
    /// many. Over a million texts, 75,000 gave recall@50 ~0.96 (BENCHMARKS.md).
    #[arg(
        long,
        env = "PALISADE_SIMILAR_SCAN_MEMBERS",
        default_value_t = palisade_core::clumps::DEFAULT_SCAN_MEMBERS
    )]
    pub similar_scan_members: usize,

    /// MiB of clumps' member vectors the server keeps in memory to score a
    /// `SIMILAR_TO` search's clump members, and a filter's candidates' texts,
    /// itself (~1.8 KiB a text: 512 MiB holds ~290,000); 0 leaves the scoring to
    /// PostgreSQL, ~1.3 µs a member (BENCHMARKS.md, "Semantic hunting").
    #[arg(long, env = "PALISADE_SIMILAR_CLUMP_CACHE_MB", default_value_t = 512)]
    pub similar_clump_cache_mb: u32,

    /// Cosine distance within which a new embedding text is a near copy of a text in
    /// the HNSW graph and joins its clump instead of the graph (0: every text in the
    /// graph).
    #[arg(long, env = "PALISADE_REPRESENTATIVE_DISTANCE", default_value_t = palisade_core::vectors::REPRESENTATIVE_DISTANCE)]
    pub representative_distance: f32,

    /// Group embedded events into attack patterns as they are stored
    /// (`/api/v1/alerts/groups`, `| group_similar`).
    #[arg(long, env = "PALISADE_ALERT_GROUPS", default_value_t = true, action = clap::ArgAction::Set)]
    pub alert_groups: bool,

    /// Cosine similarity to a group's centroid at which an event's text joins it.
    #[arg(long, env = "PALISADE_ALERT_GROUP_THRESHOLD", default_value_t = palisade_core::grouping::DEFAULT_THRESHOLD)]
    pub alert_group_threshold: f32,

    /// Length of the tumbling windows alerts are grouped in, in minutes.
    #[arg(
        long,
        env = "PALISADE_ALERT_GROUP_WINDOW_MINUTES",
        default_value_t = 1440
    )]
    pub alert_group_window_minutes: u32,
}

impl SemanticSettings {
    /// The vectors projection's stage (loads the model), or `None` when turned off.
    pub fn vector_stage(&self) -> anyhow::Result<Option<Arc<VectorStage>>> {
        if !self.vectors {
            return Ok(None);
        }
        let config = EmbedderConfig::from_env()?;
        let embedder = Embedder::load(&config).map_err(|e| {
            anyhow::anyhow!(
                "{e}\n(semantic hunting needs the converted model: run `scripts/stack.sh model`, \
                 or start with --vectors=false)"
            )
        })?;
        let policy = match &self.vector_policy {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<VectorPolicy>(&text)
                    .with_context(|| format!("the vector policy in {}", path.display()))?
            }
            None => VectorPolicy::default(),
        };
        let stage = VectorStage::new(embedder, policy)
            .with_representative_distance(self.representative_distance.clamp(0.0, 2.0));
        let stage = match self.grouping() {
            Some(grouping) => stage.with_grouping(grouping),
            None => stage,
        };
        Ok(Some(Arc::new(stage)))
    }

    /// How alerts are grouped, or `None` when grouping is off.
    pub fn grouping(&self) -> Option<palisade_core::grouping::GroupingConfig> {
        self.alert_groups
            .then(|| palisade_core::grouping::GroupingConfig {
                threshold: self.alert_group_threshold.clamp(-1.0, 1.0),
                window: chrono::Duration::minutes(i64::from(
                    self.alert_group_window_minutes.max(1),
                )),
            })
    }

    /// What `SIMILAR_TO` runs with, sharing the projection's embedder.
    pub fn semantic_search(&self, stage: &VectorStage) -> crate::query::SemanticSearch {
        crate::query::SemanticSearch {
            embedder: stage.embedder().clone(),
            exact_max: self.similar_exact_max,
            max_neighbourhood: self.similar_max_neighbourhood.max(1),
            ef_search: self.similar_ef_search,
            clumps: (self.similar_clump_cache_mb > 0).then(|| {
                Arc::new(
                    palisade_core::clumps::ClumpCache::new(
                        self.similar_clump_cache_mb as usize * 1024 * 1024,
                    )
                    .with_scan_members(self.similar_scan_members),
                )
            }),
        }
    }
}

/// Settings of `palisade up`.
#[derive(Debug, Clone, Args)]
pub struct ServeSettings {
    /// Address of the HTTP server (status page, /healthz, /metrics, API).
    #[arg(long, env = "PALISADE_HTTP_ADDR", default_value = "127.0.0.1:7311")]
    pub http_addr: SocketAddr,

    /// Ingest tuning.
    #[command(flatten)]
    pub ingest: IngestSettings,

    /// Retention and maintenance.
    #[command(flatten)]
    pub retention: RetentionSettings,

    /// The search index.
    #[command(flatten)]
    pub search: SearchSettings,

    /// The query API: tokens and limits.
    #[command(flatten)]
    pub api: ApiSettings,

    /// Semantic hunting.
    #[command(flatten)]
    pub semantic: SemanticSettings,

    /// Remediation of P0 incidents (AWX).
    #[command(flatten)]
    pub remediation: crate::remediation::RemediationSettings,
}

/// The HTTP query API: who may call it and how much one request may cost.
#[derive(Debug, Clone, Args)]
pub struct ApiSettings {
    /// API tokens as `name:scope+scope:sha256hex` entries, comma-separated (scopes: query,
    /// status, *). `palisade token new <name>` makes one. Without any, the API is open,
    /// which is allowed only when the HTTP address is loopback.
    #[arg(long = "api-token", env = "PALISADE_API_TOKENS", value_delimiter = ',')]
    pub api_tokens: Vec<crate::auth::ApiToken>,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "PALISADE_API_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub api_max_body_bytes: usize,

    /// Longest a query may run, in milliseconds (also PostgreSQL's statement_timeout).
    #[arg(long, env = "PALISADE_QUERY_TIMEOUT_MS", default_value_t = 10_000)]
    pub query_timeout_ms: u64,

    /// Rows returned when a query names no limit.
    #[arg(long, env = "PALISADE_QUERY_DEFAULT_LIMIT", default_value_t = 100)]
    pub query_default_limit: u32,

    /// Most rows one page may return, and the deepest a cursor may page.
    #[arg(long, env = "PALISADE_QUERY_MAX_LIMIT", default_value_t = 10_000)]
    pub query_max_limit: u32,

    /// Most search hits a `stats` over full-text matches aggregates; beyond it the
    /// answer says it is partial.
    #[arg(
        long,
        env = "PALISADE_QUERY_MAX_STATS_HITS",
        default_value_t = 1_000_000
    )]
    pub query_max_stats_hits: usize,
}

impl ApiSettings {
    /// The configured tokens.
    pub fn tokens(&self) -> crate::auth::Tokens {
        crate::auth::Tokens::new(self.api_tokens.clone())
    }

    /// The query timeout.
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        connections: Connections,
        #[command(flatten)]
        serve: ServeSettings,
    }

    #[test]
    fn defaults_parse_and_flags_override() {
        let cli = Cli::try_parse_from(["palisade"]).expect("defaults parse");
        assert_eq!(cli.serve.ingest.batch_max_messages, 256);
        assert_eq!(cli.serve.http_addr.ip().to_string(), "127.0.0.1");
        assert_eq!(cli.serve.retention.retention(), Retention::default());
        let cli =
            Cli::try_parse_from(["palisade", "--batch-max-wait-ms", "50", "--namespace", "t1"])
                .expect("flags parse");
        let ingest = cli.serve.ingest.ingest_config(cli.connections.namespace());
        assert_eq!(ingest.batch_max_wait, Duration::from_millis(50));
        assert_eq!(ingest.namespace.subject("logs.auth"), "t1.logs.auth");
        assert!(Cli::try_parse_from(["palisade", "--writers", "many"]).is_err());
    }

    #[test]
    fn search_settings_parse() {
        let cli = Cli::try_parse_from(["palisade"]).expect("defaults parse");
        let search = cli.serve.search.search_config();
        assert_eq!(search.commit_interval, Duration::from_secs(1));
        assert!(!search.node.is_empty());
        assert!(cli.serve.search.index_dir().ends_with("search"));
        let cli = Cli::try_parse_from([
            "palisade",
            "--search-index-dir=/tmp/idx",
            "--search-node=n1",
            "--search-commit-interval-ms=250",
            "--search-writer-heap-mb=1",
        ])
        .expect("flags parse");
        assert_eq!(
            cli.serve.search.index_dir(),
            std::path::Path::new("/tmp/idx")
        );
        assert_eq!(
            cli.serve.search.search_config().durable_name(),
            "palisade-search-n1"
        );
        assert_eq!(
            cli.serve.search.search_config().commit_interval,
            Duration::from_millis(250)
        );
        assert_eq!(
            cli.serve.search.index_options().heap_bytes,
            15 * 1024 * 1024
        );
    }
}
