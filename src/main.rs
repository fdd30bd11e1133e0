//! `palisade`: start the SIEM core, migrate, replay a projection, load fixtures.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use palisade::config::{
    Connections, IngestSettings, SearchSettings, SemanticSettings, ServeSettings,
};
use palisade_consumers::Projection;

mod embed;

/// Palisade: an event-sourced streaming SIEM core (NATS JetStream in, PostgreSQL out).
#[derive(Debug, Parser)]
#[command(name = "palisade", version)]
struct Cli {
    #[command(flatten)]
    connections: Connections,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Migrate, create the streams, run every projection and the HTTP server until stopped.
    Up(ServeSettings),
    /// Apply the database migrations and exit.
    Migrate,
    /// Empty a projection's tables (or this node's search index) and rebuild them from the streams.
    Replay {
        /// Projection: events, metrics, processes, connections, vulns, vectors or search.
        projection: String,
        #[command(flatten)]
        ingest: IngestSettings,
        #[command(flatten)]
        search: SearchSettings,
        #[command(flatten)]
        semantic: SemanticSettings,
    },
    /// Publish the bundled public sample data (real Falco alerts, Trivy reports, an
    /// auth log) to the streams, idempotently. Rows it creates say agent_id "palisade-fixtures".
    LoadFixtures {
        /// Folder holding falco/, trivy/ and logs/ (default: the repository's tests/fixtures).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))]
        dir: std::path::PathBuf,
        #[command(flatten)]
        ingest: IngestSettings,
    },
    /// Print what has been ingested (the same JSON as GET /api/v1/status).
    Status,
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run an SRQL query on a running Palisade and print the rows as a table.
    Query {
        /// The SRQL text, e.g. 'host:web-01 AND severity:>=high "reverse shell"'.
        srql: String,
        /// Rows to fetch (default: the server's default, 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        /// Show the plan, SQL, parameters and search query instead of running it.
        #[arg(long)]
        explain: bool,
        /// The Palisade HTTP server.
        #[arg(long, env = "PALISADE_SERVER", default_value = "http://127.0.0.1:7311")]
        server: String,
        /// API token with the `query` scope (not needed when the server has no tokens).
        #[arg(long, env = "PALISADE_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Embed texts with the MiniLM model (`scripts/stack.sh model`) and print the vectors as JSON.
    Embed(embed::EmbedArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a fresh token: prints the secret once, and the entry for PALISADE_API_TOKENS
    /// (which holds only its SHA-256).
    New {
        /// Who will hold it (shows in logs).
        name: String,
        /// Scopes: query, status, or * for both.
        #[arg(long, default_value = "*")]
        scope: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let conn = cli.connections;
    match cli.command {
        Command::Up(settings) => palisade::server::up(conn, settings).await,
        Command::Migrate => {
            let pool = palisade::connect_postgres(&conn).await?;
            let mode = palisade_schema::migrate(&pool).await?;
            println!("migrations applied; time-series mode: {mode:?}");
            Ok(())
        }
        Command::Replay {
            projection,
            ingest,
            search,
            semantic,
        } => replay(conn, &projection, ingest, search, semantic).await,
        Command::LoadFixtures { dir, ingest } => {
            let client = palisade::connect_nats(&conn.nats_url).await?;
            let js = async_nats::jetstream::new(client);
            let ingest = ingest.ingest_config(conn.namespace());
            palisade_consumers::streams::ensure_streams(&js, &ingest).await?;
            let report = palisade::fixtures::load(&js, &conn.namespace(), &dir).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Status => {
            let pool = palisade::connect_postgres(&conn).await?;
            let client = palisade::connect_nats(&conn.nats_url).await?;
            let status = palisade::status::collect(&pool, &client, &conn.namespace()).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(())
        }
        Command::Query {
            srql,
            limit,
            json,
            explain,
            server,
            token,
        } => {
            let client = palisade::client::ApiClient::new(&server, token)?;
            let answer = if explain {
                let q: String = url_encode(&srql);
                client
                    .get_json(&format!("/api/v1/query/explain?q={q}"))
                    .await?
            } else {
                client
                    .post_json(
                        "/api/v1/query",
                        &serde_json::json!({"q": srql, "limit": limit}),
                    )
                    .await?
            };
            if json || explain {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let width = std::env::var("COLUMNS")
                    .ok()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(160);
                println!("{}", palisade::client::render_table(&answer, width));
            }
            Ok(())
        }
        Command::Embed(args) => embed::run(args).await,
        Command::Token(TokenCommand::New { name, scope }) => {
            let secret = palisade::auth::new_secret();
            let entry = palisade::auth::ApiToken::entry_with_scope_text(&name, &scope, &secret)?;
            println!("token (shown once; give it to {name}): {secret}");
            println!("add to PALISADE_API_TOKENS (comma-separated): {entry}");
            Ok(())
        }
    }
}

/// Percent-encodes `text` for a URL query value.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn replay(
    conn: Connections,
    name: &str,
    ingest: IngestSettings,
    search: SearchSettings,
    semantic: SemanticSettings,
) -> anyhow::Result<()> {
    let search_name = palisade_consumers::search::NAME;
    let projection = Projection::parse(name);
    if projection.is_none() && name != search_name {
        let names: Vec<_> = Projection::ALL.iter().map(|p| p.name()).collect();
        anyhow::bail!(
            "unknown projection {name:?}; one of: {}, {search_name}",
            names.join(", ")
        );
    }
    let bar = indicatif::ProgressBar::new(0);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} messages ({per_sec}, eta {eta})",
            )?
            .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message(format!("replaying {name}"));
    let progress = |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let Some(projection) = projection else {
        let report = palisade::server::replay_search(&conn, &ingest, &search, progress).await?;
        bar.finish();
        println!(
            "replayed {} messages into the search index ({} documents)",
            report.messages, report.documents
        );
        return Ok(());
    };
    let vectors = match projection {
        Projection::Vectors => semantic.vector_stage()?,
        _ => None,
    };
    let pipeline = palisade::server::pipeline(&conn, &ingest, vectors).await?;
    let report = palisade_consumers::replay::replay(&pipeline, projection, progress).await?;
    bar.finish();
    println!("replayed {} messages into {name}", report.messages);
    Ok(())
}
