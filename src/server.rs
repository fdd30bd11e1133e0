//! `palisade up`: migrate, create the streams, run every projection, the
//! maintenance loop and the HTTP server; on SIGINT/SIGTERM finish the batches in
//! flight and stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use palisade_consumers::correlation::Correlator;
use palisade_consumers::vectors::VectorStage;
use palisade_consumers::{IngestMetrics, Pipeline};
use palisade_core::graph::Topology;
use palisade_core::search::SearchIndex;
use palisade_core::store::Store;
use palisade_schema::Maintenance;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::{Connections, IngestSettings, ServeSettings};

/// Connects to both services, migrates, creates the streams and returns the
/// shared ingest pipeline.
pub async fn pipeline(
    conn: &Connections,
    ingest: &IngestSettings,
    vectors: Option<Arc<VectorStage>>,
) -> anyhow::Result<Arc<Pipeline>> {
    let pool = crate::connect_postgres(conn).await?;
    let mode = palisade_schema::migrate(&pool)
        .await
        .context("migrating the database")?;
    tracing::info!(mode = ?mode, "schema ready");
    let client = crate::connect_nats(&conn.nats_url).await?;
    tracing::info!(version = %client.server_info().version, "nats ready");
    let js = async_nats::jetstream::new(client);
    let config = ingest.ingest_config(conn.namespace());
    palisade_consumers::streams::ensure_streams(&js, &config).await?;
    // Loaded before any projection runs, so no batch lands between the two.
    let window = chrono::Duration::hours(i64::from(ingest.topology_window_hours.max(1)));
    let topology = Topology::load(&pool, window, chrono::Utc::now())
        .await
        .context("loading the connection graph")?;
    let size = topology.size();
    tracing::info!(
        nodes = size.nodes,
        edges = size.edges,
        "connection graph loaded"
    );
    let store = Arc::new(Store::new(pool));
    let correlator = Arc::new(Correlator::new(
        js.clone(),
        store.clone(),
        config.namespace.clone(),
    ));
    Ok(Arc::new(Pipeline {
        js,
        store,
        config,
        metrics: Arc::new(IngestMetrics::default()),
        vectors,
        topology: Arc::new(topology),
        correlator,
    }))
}

/// A running Palisade: projections, maintenance and HTTP server.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP server listens.
    pub http_addr: SocketAddr,
    /// The shared pipeline.
    pub pipeline: Arc<Pipeline>,
    /// This node's search index, fed by the search projection.
    pub search: Arc<SearchIndex>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops pulling, finishes and acks the batches in flight, stops the server.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts everything and returns once the HTTP server is listening.
pub async fn start(conn: Connections, settings: ServeSettings) -> anyhow::Result<Running> {
    if settings.api.api_tokens.is_empty() && !settings.http_addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve the API on {} without tokens: set PALISADE_API_TOKENS \
             (make one with `palisade token new <name>`) or listen on a loopback address",
            settings.http_addr
        );
    }
    // Load the model first: a missing model fails start-up before anything runs.
    let vectors = settings.semantic.vector_stage()?;
    let launcher = settings.remediation.launcher()?;
    let pipeline = pipeline(&conn, &settings.ingest, vectors).await?;
    // Bind first: a taken port fails start-up before any consumer runs.
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.http_addr))?;
    let http_addr = listener.local_addr()?;
    let search = open_search_index(&settings.search).await?;
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();

    if let Some(launcher) = launcher {
        let (sender, incidents) = tokio::sync::mpsc::unbounded_channel();
        pipeline.correlator.set_remediation(sender);
        // Ends when the pipeline (the sender's owner) is dropped.
        tokio::spawn(launcher.run(pipeline.store.pool().clone(), incidents));
    }
    for projection in pipeline.projections() {
        tasks.push(tokio::spawn(palisade_consumers::run_projection(
            pipeline.clone(),
            projection,
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(palisade_consumers::search::run_search(
        pipeline.clone(),
        search.clone(),
        settings.search.search_config(),
        shutdown.clone(),
    )));

    let maintenance = Maintenance::new(settings.retention.retention());
    let interval = Duration::from_secs(settings.retention.maintenance_interval_secs.max(1));
    tasks.push(tokio::spawn(maintain(
        pipeline.store.pool().clone(),
        maintenance,
        interval,
        (search.clone(), settings.retention.retention().events_days),
        (pipeline.topology.clone(), pipeline.correlator.clone()),
        shutdown.clone(),
    )));

    let state = app_state(&pipeline, conn.namespace(), &search, &settings);
    if let Some(engine) = state.query_engine() {
        engine.warm_clump_cache();
    }
    let stop_http = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(listener, api::app(state))
            .with_graceful_shutdown(async move { stop_http.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "http server failed");
        }
    }));
    tracing::info!(%http_addr, "palisade is up");
    Ok(Running {
        http_addr,
        pipeline,
        search,
        shutdown,
        tasks,
    })
}

/// The HTTP handlers' state: the pipeline, the query engine over this node's search
/// index, the API tokens and limits.
pub fn app_state(
    pipeline: &Arc<Pipeline>,
    namespace: palisade_consumers::Namespace,
    search: &Arc<SearchIndex>,
    settings: &ServeSettings,
) -> AppState {
    let api = &settings.api;
    let limits = crate::query::QueryLimits {
        default_limit: api.query_default_limit,
        max_limit: api.query_max_limit,
        timeout: api.query_timeout(),
        max_stats_hits: api.query_max_stats_hits,
    };
    let mut engine =
        crate::query::QueryEngine::new(pipeline.store.pool().clone(), search.clone(), limits)
            .with_topology(pipeline.topology.clone());
    if let Some(stage) = &pipeline.vectors {
        engine = engine.with_semantic(settings.semantic.semantic_search(stage));
    }
    engine = engine.with_grouping_threshold(settings.semantic.alert_group_threshold);
    if api.api_tokens.is_empty() {
        tracing::warn!("no API tokens configured: the API is open to anyone who can reach the loopback address");
    }
    AppState::new(pipeline.clone(), namespace)
        .with_query(engine)
        .with_tokens(api.tokens())
        .with_max_body_bytes(api.api_max_body_bytes)
}

/// Runs until SIGINT or SIGTERM.
pub async fn up(conn: Connections, settings: ServeSettings) -> anyhow::Result<()> {
    let running = start(conn, settings).await?;
    println!(
        "palisade is up: http://{}/  (Ctrl-C to stop)",
        running.http_addr
    );
    shutdown_signal().await;
    tracing::info!("stopping: finishing batches in flight");
    running.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// `palisade replay search`: empties this node's search index (refused while a
/// running Palisade holds it) and rebuilds it from the streams.
pub async fn replay_search(
    conn: &Connections,
    ingest: &IngestSettings,
    search: &crate::config::SearchSettings,
    progress: impl Fn(u64, u64),
) -> anyhow::Result<palisade_consumers::search::SearchReplayReport> {
    let pipeline = pipeline(conn, ingest, None).await?;
    let dir = search.index_dir();
    let options = search.index_options();
    let index = tokio::task::spawn_blocking(move || SearchIndex::recreate(&dir, options)).await??;
    let index = Arc::new(index);
    let interval = search.search_config().commit_interval;
    Ok(palisade_consumers::search::replay_search(&pipeline, &index, interval, progress).await?)
}

/// Opens (or creates) this node's search index, off the async executor; one of
/// another schema is emptied and rebuilt from the streams by the search projection.
pub async fn open_search_index(
    settings: &crate::config::SearchSettings,
) -> anyhow::Result<Arc<SearchIndex>> {
    let dir = settings.index_dir();
    let options = settings.index_options();
    let opened = dir.clone();
    let (index, rebuilt) =
        tokio::task::spawn_blocking(move || SearchIndex::open_or_rebuild(&opened, options))
            .await??;
    if rebuilt {
        tracing::warn!(dir = %dir.display(),
            "the search index was written with another schema; emptied it, the search projection rebuilds it from the streams");
    }
    Ok(Arc::new(index))
}

/// The search index's retention: documents older than the events table keeps
/// (the start of the oldest day whose partition survives) are deleted.
async fn search_retention(index: &Arc<SearchIndex>, events_days: Option<u32>) {
    let Some(cutoff) = events_days
        .and_then(|d| {
            chrono::Utc::now()
                .date_naive()
                .checked_sub_days(chrono::Days::new(d.into()))
        })
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
    else {
        return;
    };
    let index = index.clone();
    match tokio::task::spawn_blocking(move || index.delete_before(cutoff)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(deleted)) => {
            tracing::info!(deleted, %cutoff, "search documents past retention deleted")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "search retention failed; will retry"),
        Err(e) => tracing::warn!(error = %e, "search retention task failed; will retry"),
    }
}

async fn maintain(
    pool: sqlx::PgPool,
    maintenance: Maintenance,
    interval: Duration,
    (search, events_days): (Arc<SearchIndex>, Option<u32>),
    (topology, correlator): (Arc<Topology>, Arc<Correlator>),
    shutdown: CancellationToken,
) {
    loop {
        search_retention(&search, events_days).await;
        let aged = topology.prune(chrono::Utc::now());
        if aged > 0 {
            tracing::info!(edges = aged, "connection-graph edges aged out");
        }
        // Catches up hosts whose pass after a batch failed, and nothing else.
        if let Err(e) = correlator.full_pass().await {
            tracing::warn!(error = %e, "correlation pass failed; will retry");
        }
        match maintenance.run_once(&pool, chrono::Utc::now()).await {
            Ok(report) => {
                if report.partitions_created > 0 || !report.partitions_dropped.is_empty() {
                    tracing::info!(created = report.partitions_created,
                        dropped = ?report.partitions_dropped, "partitions maintained");
                }
            }
            Err(e) => tracing::warn!(error = %e, "maintenance pass failed; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
