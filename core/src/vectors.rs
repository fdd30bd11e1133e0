//! The vector store: one sentence embedding per distinct embedding text in the
//! pgvector table `embedding_texts` (HNSW, cosine), the text of each embedded event
//! in `event_vectors`, and the nearest-neighbour searches `SIMILAR_TO` runs on them.
//!
//! An embedding text keeps an event's salient fields and drops host and time, so
//! one alert fired on 500 hosts is one text: it is embedded once and is one point in
//! the HNSW graph (copies of a point fill its neighbour lists and cut the graph
//! into islands). A search finds the nearest texts, then their events, newest first.
//!
//! Near copies cut the graph the same way: the same log line with another address
//! or parent process lies within a few hundredths (cosine distance) of its
//! siblings, and hundreds of them crowd each other's neighbour lists. So a
//! new text within [`REPRESENTATIVE_DISTANCE`] of a text already in the graph keeps
//! its own vector but is not added to the graph: it names that text as its
//! *representative* ([`Store::choose_representatives`]). A search takes the nearest
//! representatives by HNSW, adds their members, and ranks them all by their own
//! exact distance ([`nearest_texts`]). The query server scores the members from
//! a [`ClumpCache`] (in memory, checked against each clump's revision); without
//! one, PostgreSQL scores them.
//!
//! Rows are keyed by the event's deterministic id and the text's [`TextKey`], so a
//! redelivered or replayed message writes nothing new. Vectors are bound as
//! pgvector's text form (`[0.1,0.2,…]::vector`): no extra client type, and the
//! statement stays prepared.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::clumps::{
    score_clumps, Clump, ClumpCache, ClumpRevisions, NearestTexts, Representatives,
};
use crate::grouping::{self, GroupingConfig};
use crate::store::{record_offsets, Batch, Store, StoreError, WriteSummary};

/// Which model and embedding-text version produced a vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// E.g. `all-MiniLM-L6-v2:int8`.
    pub model: String,
    /// Version of the function that made each event's text.
    pub text_version: i16,
}

/// The key of an embedding text: SHA-256 over `<model>\n<text version>\n<text>`, so
/// the same text under another model or text version is another vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TextKey([u8; 32]);

impl TextKey {
    /// The key of `text` embedded as `provenance` says.
    pub fn of(provenance: &Provenance, text: &str) -> TextKey {
        let mut hash = Sha256::new();
        hash.update(provenance.model.as_bytes());
        hash.update(b"\n");
        hash.update(provenance.text_version.to_string().as_bytes());
        hash.update(b"\n");
        hash.update(text.as_bytes());
        TextKey(hash.finalize().into())
    }

    /// The key as stored (`bytea`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key as stored, if it is one (32 bytes).
    pub fn from_stored(bytes: &[u8]) -> Option<TextKey> {
        bytes.try_into().ok().map(TextKey)
    }
}

/// The embedding of one distinct text.
#[derive(Debug, Clone, PartialEq)]
pub struct TextVector {
    /// [`TextKey::of`] the text.
    pub key: TextKey,
    /// The embedding text itself (kept for inspection).
    pub text: String,
    /// The unit-length sentence embedding.
    pub embedding: Vec<f32>,
    /// The text that stands for this one in the HNSW graph, when this one is a near
    /// copy of it; `None`: this text is in the graph itself.
    pub representative: Option<TextKey>,
}

/// Cosine distance within which a new text is a near copy of a text in the HNSW
/// graph and joins its clump instead of the graph. The same failed-login line from
/// the next address is 0.014 away, with another port 0.05, with another user 0.13.
/// On the benchmark corpus 0.05 leaves 681 representatives for 58,604 texts
/// (clumps of up to 5,781) and recall@50 rises from 0.60 to 0.985
/// (BENCHMARKS.md, "Semantic hunting").
pub const REPRESENTATIVE_DISTANCE: f32 = 0.05;

/// An embedded event and the text it was embedded by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventText {
    /// The event's id (its `events` row's id).
    pub id: Uuid,
    /// The event's time (its `events` row's partition key).
    pub ts: DateTime<Utc>,
    /// Its embedding text's key.
    pub key: TextKey,
    /// What a hunt's filter selects it by, kept beside its vector.
    pub labels: EventLabels,
}

/// An embedded event's host, type and severity, copied from its event onto
/// `event_vectors` (migration 0017) under the `events` columns' names, so that a
/// filter over them and the time selects embedded events without a join.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLabels {
    /// The host it happened on, when known.
    pub host: Option<String>,
    /// Its type (`falco_alert`, `log`, …).
    pub kind: String,
    /// Its normalised severity's level.
    pub severity_level: i16,
}

/// What the vectors projection writes for a batch: every selected event's text key,
/// and the vectors of the texts not stored yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchVectors {
    /// One per selected event, in batch order.
    pub events: Vec<EventText>,
    /// One per text that was not stored when the batch was embedded.
    pub texts: Vec<TextVector>,
}

impl BatchVectors {
    /// The part of this batch that belongs to the events `ids`.
    pub fn for_events(&self, ids: &[Uuid]) -> BatchVectors {
        let ids: HashSet<&Uuid> = ids.iter().collect();
        let events: Vec<EventText> = self
            .events
            .iter()
            .filter(|e| ids.contains(&e.id))
            .cloned()
            .collect();
        let keys: HashSet<TextKey> = events.iter().map(|e| e.key).collect();
        let texts = self
            .texts
            .iter()
            .filter(|t| keys.contains(&t.key))
            .cloned()
            .collect();
        BatchVectors { events, texts }
    }
}

/// An event near the query vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    /// The event's id.
    pub id: Uuid,
    /// The event's time.
    pub ts: DateTime<Utc>,
    /// Cosine similarity to the query, 1 for the same direction.
    pub similarity: f64,
}

/// A stored text near the query vector.
#[derive(Debug, Clone, PartialEq)]
pub struct NearText {
    /// The text's key.
    pub key: TextKey,
    /// Cosine similarity to the query, 1 for the same direction.
    pub similarity: f64,
}

/// pgvector's text form of `v`.
pub fn vector_literal(v: &[f32]) -> String {
    let mut out = String::with_capacity(v.len() * 11 + 2);
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Rust prints the shortest text that reads back as the same f32.
        out.push_str(&x.to_string());
    }
    out.push(']');
    out
}

/// pgvector's text form back to numbers.
pub fn parse_vector(text: &str) -> Option<Vec<f32>> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?;
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner.split(',').map(|x| x.trim().parse().ok()).collect()
}

/// Dot product: the cosine similarity of two unit vectors.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn stored_keys(keys: &[TextKey]) -> Vec<Vec<u8>> {
    keys.iter().map(|k| k.as_bytes().to_vec()).collect()
}

impl Store {
    /// Which of `keys` already have a stored vector.
    pub async fn known_texts(&self, keys: &[TextKey]) -> Result<HashSet<TextKey>, StoreError> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let found: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT text_key FROM embedding_texts WHERE text_key = ANY($1)")
                .bind(stored_keys(keys))
                .fetch_all(self.pool())
                .await?;
        Ok(found
            .iter()
            .filter_map(|k| TextKey::from_stored(k))
            .collect())
    }

    /// Chooses each of `texts`' representative (see the [module docs](self)): the
    /// nearest text in the HNSW graph when it lies within `max_distance` (cosine),
    /// else the first earlier text of `texts` that is in the graph and that near,
    /// else none, and the text joins the graph. `max_distance` 0 keeps every text in
    /// the graph.
    pub async fn choose_representatives(
        &self,
        texts: &mut [TextVector],
        max_distance: f32,
    ) -> Result<(), StoreError> {
        if texts.is_empty() || max_distance <= 0.0 {
            return Ok(());
        }
        let embeddings: Vec<String> = texts.iter().map(|t| vector_literal(&t.embedding)).collect();
        // One HNSW search per text (pgvector's default ef_search): a near copy it
        // misses only adds a node to the graph.
        let stored: Vec<(i64, Vec<u8>, f64)> = sqlx::query_as(
            "SELECT t.ord, n.text_key, n.distance \
             FROM unnest($1::text[]) WITH ORDINALITY AS t(embedding, ord) \
             CROSS JOIN LATERAL ( \
                 SELECT text_key, embedding <=> t.embedding::vector AS distance \
                 FROM embedding_texts WHERE representative IS NULL \
                 ORDER BY embedding <=> t.embedding::vector LIMIT 1) n",
        )
        .bind(&embeddings)
        .fetch_all(self.pool())
        .await?;
        let mut nearest_stored: Vec<Option<TextKey>> = vec![None; texts.len()];
        for (ord, key, distance) in stored {
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| nearest_stored.get_mut(i));
            if let (Some(slot), Some(key)) = (slot, TextKey::from_stored(&key)) {
                if distance <= f64::from(max_distance) {
                    *slot = Some(key);
                }
            }
        }
        let mut in_graph: Vec<usize> = Vec::new();
        for i in 0..texts.len() {
            let representative = nearest_stored[i].or_else(|| {
                in_graph
                    .iter()
                    .map(|&j| (j, 1.0 - dot(&texts[i].embedding, &texts[j].embedding)))
                    .filter(|(_, d)| *d <= max_distance)
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(j, _)| texts[j].key)
            });
            texts[i].representative = representative;
            if representative.is_none() {
                in_graph.push(i);
            }
        }
        Ok(())
    }

    /// Writes `vectors` (skipping texts and events already stored) and the batch's
    /// offsets for `projection` in one transaction. Dead letters are the events
    /// projection's to record: it reads the same messages.
    ///
    /// An event whose text was known when the batch was embedded but has since been
    /// removed by retention (it only removes texts no event has) is stored without a
    /// vector to find it by: a window of one batch, once a retention run.
    pub async fn write_vectors(
        &self,
        projection: &str,
        slot: i32,
        batch: &Batch,
        provenance: &Provenance,
        vectors: &BatchVectors,
        grouping: Option<&GroupingConfig>,
    ) -> Result<WriteSummary, StoreError> {
        let mut tx = self.pool().begin().await?;
        let mut summary = WriteSummary {
            records: vectors.events.len() as u64,
            ..WriteSummary::default()
        };
        if !vectors.texts.is_empty() {
            let keys: Vec<TextKey> = vectors.texts.iter().map(|t| t.key).collect();
            let texts: Vec<&str> = vectors.texts.iter().map(|t| t.text.as_str()).collect();
            let embeddings: Vec<String> = vectors
                .texts
                .iter()
                .map(|t| vector_literal(&t.embedding))
                .collect();
            let representatives: Vec<Option<Vec<u8>>> = vectors
                .texts
                .iter()
                .map(|t| t.representative.map(|k| k.as_bytes().to_vec()))
                .collect();
            summary.rows_inserted += sqlx::query(
                "INSERT INTO embedding_texts \
                     (text_key, model, text_version, text, embedding, representative) \
                 SELECT key, $5, $6, text, embedding::vector, representative \
                 FROM unnest($1::bytea[], $2::text[], $3::text[], $4::bytea[]) \
                     AS t(key, text, embedding, representative) \
                 ON CONFLICT (text_key) DO NOTHING",
            )
            .bind(stored_keys(&keys))
            .bind(&texts)
            .bind(&embeddings)
            .bind(&representatives)
            .bind(&provenance.model)
            .bind(provenance.text_version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if !vectors.events.is_empty() {
            let ids: Vec<Uuid> = vectors.events.iter().map(|e| e.id).collect();
            let times: Vec<DateTime<Utc>> = vectors.events.iter().map(|e| e.ts).collect();
            let keys: Vec<TextKey> = vectors.events.iter().map(|e| e.key).collect();
            let hosts: Vec<Option<&str>> = vectors
                .events
                .iter()
                .map(|e| e.labels.host.as_deref())
                .collect();
            let kinds: Vec<&str> = vectors
                .events
                .iter()
                .map(|e| e.labels.kind.as_str())
                .collect();
            let levels: Vec<i16> = vectors
                .events
                .iter()
                .map(|e| e.labels.severity_level)
                .collect();
            summary.rows_inserted += sqlx::query(
                "INSERT INTO event_vectors \
                     (event_id, ts, text_key, host, type, severity_level) \
                 SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::bytea[], \
                     $4::text[], $5::text[], $6::smallint[]) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&times)
            .bind(stored_keys(&keys))
            .bind(&hosts)
            .bind(&kinds)
            .bind(&levels)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if let Some(config) = grouping {
            grouping::assign(&mut tx, config, &vectors.events, &vectors.texts).await?;
        }
        record_offsets(&mut tx, projection, slot, batch).await?;
        tx.commit().await?;
        Ok(summary)
    }
}

/// Settings for the rest of the caller's transaction, in one round trip.
///
/// It is planned for its own parameters. The query vector is bound as text
/// (`$1::vector`): a custom plan parses it once, but the generic plan PostgreSQL
/// switches to after five runs of a prepared statement parses it again for every
/// row it computes a distance for (20× slower over 14,000 clump members on the
/// benchmark corpus).
///
/// With `ef_search`, `hnsw.ef_search` is set too (pgvector's default is 40; HNSW
/// returns at most that many rows, and more finds more of the true neighbours).
async fn search_settings(
    conn: &mut PgConnection,
    ef_search: Option<u32>,
) -> Result<(), StoreError> {
    // SET LOCAL takes no parameters; the value is a number we formatted.
    let mut settings = String::from("SET LOCAL plan_cache_mode = force_custom_plan;");
    if let Some(ef_search) = ef_search {
        settings.push_str(&format!(
            " SET LOCAL hnsw.ef_search = {};",
            ef_search.clamp(1, 1000)
        ));
    }
    // A plain string runs unprepared, so both statements go in one message.
    sqlx::Executor::execute(&mut *conn, settings.as_str()).await?;
    Ok(())
}

/// The nearest texts to `$1` (a vector), at most `$2` of them: the `$3` nearest
/// representatives by HNSW and their clumps' members, ranked by exact distance.
/// Columns `text_key`, `distance`.
const NEAREST_TEXTS: &str = "\
    reps AS MATERIALIZED ( \
        SELECT text_key FROM embedding_texts WHERE representative IS NULL \
        ORDER BY embedding <=> $1::vector LIMIT $3), \
    near AS MATERIALIZED ( \
        SELECT text_key, distance FROM ( \
            SELECT t.text_key, t.embedding <=> $1::vector AS distance \
            FROM reps JOIN embedding_texts t USING (text_key) \
            UNION ALL \
            SELECT t.text_key, t.embedding <=> $1::vector \
            FROM reps JOIN embedding_texts t ON t.representative = reps.text_key \
            WHERE t.representative IS NOT NULL) clumps \
        ORDER BY distance LIMIT $2)";

/// The generations of the representatives and of the clumps
/// (`embedding_generations`).
const GENERATIONS: &str = "SELECT representatives, clumps FROM embedding_generations";

/// Every representative with its vector, and the generation of the set, in one
/// snapshot (one row of nulls when there are none).
const ALL_REPRESENTATIVES: &str = "\
    SELECT g.representatives, t.text_key, t.embedding \
    FROM embedding_generations g \
    LEFT JOIN embedding_texts t ON t.representative IS NULL";

/// Every clump's revision, and the generation of the clumps, in one snapshot
/// (one row of nulls when there are none).
const ALL_REVISIONS: &str = "\
    SELECT g.clumps, c.representative, c.revision \
    FROM embedding_generations g LEFT JOIN embedding_clumps c ON true";

/// The members of the clumps of the representatives `$1`, with their clumps'
/// revisions read in the same snapshot; a clump left without members (its row
/// stays, at a new revision) comes back as one row without a member.
const CLUMP_MEMBERS: &str = "\
    SELECT c.representative, c.revision, m.text_key, m.embedding \
    FROM embedding_clumps c \
    LEFT JOIN embedding_texts m ON m.representative = c.representative \
    WHERE c.representative = ANY($1)";

/// The `$3` members nearest to `$1` of the clumps of the representatives `$2`, by
/// PostgreSQL's exact distance.
const NEAREST_MEMBERS: &str = "\
    SELECT text_key, embedding <=> $1::vector AS distance FROM embedding_texts \
    WHERE representative = ANY($2) ORDER BY distance LIMIT $3";

/// The `n` stored texts nearest to `query`: the `ef_search` (at least `n`) nearest
/// representatives through the HNSW index, with their clumps' members, by exact
/// distance. Runs on `conn`, inside the caller's transaction.
///
/// With `clumps`, the clumps are ranked in memory instead and opened until they
/// hold [`ClumpCache::scan_members`] members; the members of those the cache
/// holds at their current revision are scored in memory (approximately: the
/// nearest by 4-bit codes are scored exactly, see [`score_clumps`]), PostgreSQL
/// scores the rest, and those become wanted ([`fill_clump_cache`] reads them);
/// without, PostgreSQL scores them all (~1.3 µs a member).
pub async fn nearest_texts(
    conn: &mut PgConnection,
    clumps: Option<&ClumpCache>,
    query: &[f32],
    n: u32,
    ef_search: u32,
) -> Result<Vec<NearText>, StoreError> {
    let ef_search = ef_search.max(n);
    let found = match clumps {
        Some(cache) => nearest_texts_with_cache(conn, cache, query, n, ef_search).await?,
        None => {
            search_settings(conn, Some(ef_search)).await?;
            let rows: Vec<(Vec<u8>, f64)> = sqlx::query_as(&format!(
                "WITH {NEAREST_TEXTS} SELECT text_key, distance FROM near ORDER BY distance"
            ))
            .bind(vector_literal(query))
            .bind(i64::from(n))
            .bind(i64::from(ef_search))
            .fetch_all(&mut *conn)
            .await?;
            rows.into_iter()
                .filter_map(|(key, distance)| TextKey::from_stored(&key).map(|k| (k, distance)))
                .collect()
        }
    };
    Ok(found
        .into_iter()
        .map(|(key, distance)| NearText {
            key,
            similarity: 1.0 - distance,
        })
        .collect())
}

/// Clumps a search with a cache opens whatever its member budget when it asks for
/// 50 texts or more: the 50 nearest can lie in 50 clumps. More texts need no more: on the
/// million-text bench data the budget alone finds the 1,000 nearest at recall 0.950,
/// as it finds the 50 nearest at 0.955, where opening 1,000 clumps scanned 3.7 times
/// the members (BENCHMARKS.md, session 15).
pub const MIN_OPENED_CLUMPS: u32 = 50;

/// [`nearest_texts`] with the representatives ranked and the members of held
/// clumps scored from `cache`: the texts and their distances, nearest first.
/// Sets `plan_cache_mode` (only) when PostgreSQL scores missed clumps.
///
/// All clumps are ranked in memory (by centroid where held), and opened nearest
/// first until they hold [`ClumpCache::scan_members`] members and number at least
/// `n` or [`MIN_OPENED_CLUMPS`], whichever is fewer, at the revisions held in
/// memory: one statement reads the generations of the representatives and of the
/// clumps, and what moved on is read again first. `ef_search` only sizes a missed
/// clump's share.
async fn nearest_texts_with_cache(
    conn: &mut PgConnection,
    cache: &ClumpCache,
    query: &[f32],
    n: u32,
    ef_search: u32,
) -> Result<Vec<(TextKey, f64)>, StoreError> {
    let started = Instant::now();
    let (representatives_generation, clumps_generation): (i64, i64) =
        sqlx::query_as(GENERATIONS).fetch_one(&mut *conn).await?;
    let (representatives, representatives_read) = match cache.representatives() {
        Some(held) if held.generation() == representatives_generation => (held, false),
        _ => (read_representatives(conn, cache).await?, true),
    };
    let (revisions, revisions_read) = match cache.revisions() {
        Some(held) if held.generation() == clumps_generation => (held, false),
        _ => (read_revisions(conn, cache).await?, true),
    };
    let ranking = Instant::now();
    let ranked = representatives.ranked(query);
    let ranked_ms = ms_since(ranking);
    let representatives_ms = ms_since(started);
    // Clumps nearest first until they hold the members a search scans; one the
    // cache does not hold counts as an even share of them.
    let budget = cache.scan_members();
    let missed_share = (budget / ef_search.max(1) as usize).max(1);
    let mut held: Vec<Arc<Clump>> = Vec::new();
    let mut missing: Vec<Vec<u8>> = Vec::new();
    let (mut opened, mut counted) = (Vec::new(), 0);
    for row in ranked {
        if counted >= budget && opened.len() >= n.min(MIN_OPENED_CLUMPS) as usize {
            break;
        }
        opened.push(row);
        let representative = representatives.key(row);
        if let Some(revision) = revisions.get(&representative) {
            match cache.get(&representative, revision) {
                Some(clump) => {
                    counted += clump.len();
                    held.push(clump);
                }
                None => {
                    counted += missed_share;
                    missing.push(representative.as_bytes().to_vec());
                }
            }
        }
    }
    // The opened clumps' representatives are texts too.
    let mut nearest = NearestTexts::new(n as usize);
    for (&row, distance) in opened.iter().zip(representatives.distances(&opened, query)) {
        nearest.offer(representatives.key(row), distance);
    }
    let started = Instant::now();
    if !missing.is_empty() {
        search_settings(conn, None).await?;
        let literal = vector_literal(query);
        let scored: Vec<(Vec<u8>, f64)> = sqlx::query_as(NEAREST_MEMBERS)
            .bind(&literal)
            .bind(&missing)
            .bind(i64::from(n))
            .fetch_all(&mut *conn)
            .await?;
        for (key, distance) in scored {
            if let Some(key) = TextKey::from_stored(&key) {
                nearest.offer(key, distance);
            }
        }
    }
    let missed_ms = ms_since(started);
    let started = Instant::now();
    let scored = score_clumps(&held, query, &mut nearest);
    tracing::debug!(
        representatives = representatives.len(),
        representatives_read,
        revisions_read,
        opened = opened.len(),
        ranked_ms,
        representatives_ms,
        missed = missing.len(),
        missed_ms,
        held = held.len(),
        members = held.iter().map(|c| c.len()).sum::<usize>(),
        scored,
        scan_ms = ms_since(started),
        "nearest texts: representatives and held clumps in memory, missed clumps by PostgreSQL"
    );
    Ok(nearest.into_sorted())
}

/// Reads every clump's revision into `cache`, and returns them.
async fn read_revisions(
    conn: &mut PgConnection,
    cache: &ClumpCache,
) -> Result<Arc<ClumpRevisions>, StoreError> {
    let rows: Vec<(i64, Option<Vec<u8>>, Option<i64>)> =
        sqlx::query_as(ALL_REVISIONS).fetch_all(&mut *conn).await?;
    let generation = rows.first().map_or(0, |(generation, _, _)| *generation);
    let read = Arc::new(ClumpRevisions::new(
        generation,
        rows.into_iter()
            .filter_map(|(_, key, revision)| Some((TextKey::from_stored(&key?)?, revision?)))
            .collect(),
    ));
    cache.set_revisions(Arc::clone(&read));
    Ok(read)
}

/// Reads every representative with its vector into `cache`, and returns them.
async fn read_representatives(
    conn: &mut PgConnection,
    cache: &ClumpCache,
) -> Result<Arc<Representatives>, StoreError> {
    let rows: Vec<(i64, Option<Vec<u8>>, Option<StoredVector>)> =
        sqlx::query_as(ALL_REPRESENTATIVES)
            .fetch_all(&mut *conn)
            .await?;
    let generation = rows.first().map_or(0, |(generation, _, _)| *generation);
    let read = Arc::new(
        Representatives::new(
            generation,
            rows.into_iter()
                .filter_map(|(_, key, vector)| Some((TextKey::from_stored(&key?)?, vector?.0)))
                .collect(),
        )
        .centred(cache),
    );
    cache.set_representatives(Arc::clone(&read));
    Ok(read)
}

/// Milliseconds since `started`, for the stage timings in debug logs.
fn ms_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

/// How many clumps [`fill_clump_cache`] reads in one statement.
const CLUMPS_PER_READ: usize = 64;

/// Reads the clumps searches missed ([`ClumpCache::has_wanted`]) into `cache`, at
/// their current revisions, unless another fill is at it; returns how many it
/// read. For off the search path: a task after a search, or a warm-up.
pub async fn fill_clump_cache(pool: &PgPool, cache: &ClumpCache) -> Result<usize, StoreError> {
    let Some(_turn) = cache.fill_turn() else {
        return Ok(0);
    };
    let mut read = 0;
    loop {
        let wanted = cache.take_wanted(CLUMPS_PER_READ);
        if wanted.is_empty() {
            if read > 0 {
                cache.centre_representatives();
            }
            return Ok(read);
        }
        let rows: Vec<ClumpMemberRow> = sqlx::query_as(CLUMP_MEMBERS)
            .bind(stored_keys(&wanted))
            .fetch_all(pool)
            .await?;
        // Each clump's revision and members (none for a clump left empty: held
        // as such, so searches stop missing it).
        let mut members: HashMap<TextKey, (i64, Vec<ClumpMember>)> = HashMap::new();
        for (representative, revision, key, vector) in rows {
            let Some(representative) = TextKey::from_stored(&representative) else {
                continue;
            };
            let clump = members
                .entry(representative)
                .or_insert_with(|| (revision, Vec::new()));
            if let (Some(key), Some(vector)) =
                (key.as_deref().and_then(TextKey::from_stored), vector)
            {
                clump.1.push((key, vector.0));
            }
        }
        read += members.len();
        for (representative, (revision, members)) in members {
            cache.insert(representative, Arc::new(Clump::new(revision, members)));
        }
    }
}

/// Fills `cache` at a server's start, before the searches miss: the
/// representatives and the clumps' revisions, then the largest
/// clumps first (PostgreSQL scores a member at ~1.3 µs, so they cost a search the
/// most) until they would take 90% of its capacity, then reads them
/// ([`fill_clump_cache`]). Returns how many clumps it read.
pub async fn warm_clump_cache(pool: &PgPool, cache: &ClumpCache) -> Result<usize, StoreError> {
    let sizes: Vec<(Vec<u8>, i64, i32)> = sqlx::query_as(
        "SELECT m.representative, count(*), max(vector_dims(r.embedding)) \
         FROM embedding_texts m JOIN embedding_texts r ON r.text_key = m.representative \
         WHERE m.representative IS NOT NULL \
         GROUP BY m.representative ORDER BY count(*) DESC",
    )
    .fetch_all(pool)
    .await?;
    let mut conn = pool.acquire().await?;
    read_representatives(&mut conn, cache).await?;
    read_revisions(&mut conn, cache).await?;
    drop(conn);
    let mut room = cache.capacity() - cache.capacity() / 10;
    let mut wanted = Vec::new();
    for (representative, members, dimensions) in sizes {
        let bytes = Clump::bytes_of(
            usize::try_from(members).unwrap_or(usize::MAX),
            usize::try_from(dimensions).unwrap_or(0),
        );
        if let (Some(key), true) = (TextKey::from_stored(&representative), bytes <= room) {
            room -= bytes;
            wanted.push(key);
        }
    }
    cache.want(wanted);
    fill_clump_cache(pool, cache).await
}

/// A clump member's key and vector, as read.
type ClumpMember = (TextKey, Vec<f32>);

/// A row of [`CLUMP_MEMBERS`]: representative, revision, and the member's key and
/// vector (none for a clump without members).
type ClumpMemberRow = (Vec<u8>, i64, Option<Vec<u8>>, Option<StoredVector>);

/// A pgvector `vector` in its binary form: the dimension (int16), an unused
/// int16, then that many float4, all big-endian.
struct StoredVector(Vec<f32>);

impl sqlx::Type<Postgres> for StoredVector {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("vector")
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for StoredVector {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let bytes = value.as_bytes()?;
        let (header, floats) = bytes
            .split_at_checked(4)
            .ok_or("a pgvector value shorter than its header")?;
        let dimensions = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if floats.len() != dimensions * 4 {
            return Err(format!(
                "a pgvector value of {dimensions} dimensions with {} bytes of floats",
                floats.len()
            )
            .into());
        }
        Ok(StoredVector(
            floats
                .chunks_exact(4)
                .map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ))
    }
}

/// The `events` nearest events to `query`: the `texts` nearest texts
/// ([`nearest_texts`], from the `ef_search` nearest representatives, at least
/// `texts`, members scored from `clumps` when given), each expanded to its newest
/// events, at most `per_text` of each. Runs on `conn`, inside the caller's
/// transaction.
pub async fn nearest(
    conn: &mut PgConnection,
    clumps: Option<&ClumpCache>,
    query: &[f32],
    texts: u32,
    ef_search: u32,
    per_text: u32,
    events: u32,
) -> Result<Vec<Neighbour>, StoreError> {
    let ef_search = ef_search.max(texts);
    let rows: Vec<(Uuid, DateTime<Utc>, f64)> = match clumps {
        Some(cache) => {
            let near = nearest_texts_with_cache(conn, cache, query, texts, ef_search).await?;
            search_settings(conn, None).await?;
            let keys: Vec<Vec<u8>> = near.iter().map(|(k, _)| k.as_bytes().to_vec()).collect();
            let distances: Vec<f64> = near.iter().map(|(_, d)| *d).collect();
            sqlx::query_as(&format!(
                "WITH near AS (SELECT * FROM unnest($1::bytea[], $2::float8[]) \
                     AS near(text_key, distance)) {}",
                events_of_near("$3", "$4")
            ))
            .bind(&keys)
            .bind(&distances)
            .bind(i64::from(per_text))
            .bind(i64::from(events))
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            search_settings(conn, Some(ef_search)).await?;
            // MATERIALIZED keeps the representatives one HNSW scan, done before the
            // expansions.
            sqlx::query_as(&format!(
                "WITH {NEAREST_TEXTS} {}",
                events_of_near("$4", "$5")
            ))
            .bind(vector_literal(query))
            .bind(i64::from(texts))
            .bind(i64::from(ef_search))
            .bind(i64::from(per_text))
            .bind(i64::from(events))
            .fetch_all(&mut *conn)
            .await?
        }
    };
    Ok(rows.into_iter().map(neighbour).collect())
}

/// The events of the texts in `near` (`text_key`, `distance`): each text's newest
/// `per_text`, nearest text first, at most `limit` of them (both placeholders).
fn events_of_near(per_text: &str, limit: &str) -> String {
    format!(
        "SELECT e.event_id, e.ts, 1 - near.distance FROM near \
         CROSS JOIN LATERAL ( \
             SELECT event_id, ts FROM event_vectors v WHERE v.text_key = near.text_key \
             ORDER BY ts DESC LIMIT {per_text}) e \
         ORDER BY near.distance, e.ts DESC, e.event_id LIMIT {limit}"
    )
}

/// Events to rank exactly ([`nearest_among`]).
#[derive(Debug, Clone, Copy)]
pub enum CandidateEvents<'a> {
    /// By id: their texts are looked up in `event_vectors`.
    Ids(&'a [Uuid]),
    /// With their time and text key already known (a SQL filter joined
    /// `event_vectors`): one lookup fewer per event.
    Keyed(&'a [(DateTime<Utc>, Uuid, TextKey)]),
}

impl CandidateEvents<'_> {
    /// How many events.
    pub fn len(&self) -> usize {
        match self {
            CandidateEvents::Ids(ids) => ids.len(),
            CandidateEvents::Keyed(events) => events.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The distances of the texts `$2` to `$1` (a vector), by PostgreSQL.
const TEXT_DISTANCES: &str = "\
    SELECT text_key, embedding <=> $1::vector FROM embedding_texts WHERE text_key = ANY($2)";

/// The `k` nearest to `query` among `candidates`, by an exact distance scan over
/// their texts' vectors, each distinct text once (never loses a candidate; for
/// candidate sets of thousands).
///
/// With `clumps` and candidates that carry their texts, the texts whose vectors
/// the cache holds are scored in memory and PostgreSQL scores the rest
/// ([`ClumpCache::distances`]); the events are then ranked here, as the SQL
/// would: nearest, then newest, then by id.
pub async fn nearest_among(
    conn: &mut PgConnection,
    clumps: Option<&ClumpCache>,
    query: &[f32],
    candidates: CandidateEvents<'_>,
    k: u32,
) -> Result<Vec<Neighbour>, StoreError> {
    if let (Some(cache), CandidateEvents::Keyed(events)) = (clumps, &candidates) {
        return nearest_among_keyed(conn, cache, query, events, k).await;
    }
    search_settings(conn, None).await?;
    // The materialised steps fence the lookups, so the planner cannot trade them
    // for an HNSW scan that filters afterwards and may come back short.
    let ranked = "near AS MATERIALIZED ( \
             SELECT text_key, embedding <=> $1::vector AS distance FROM embedding_texts \
             WHERE text_key IN (SELECT text_key FROM candidates)) \
         SELECT c.event_id, c.ts, 1 - near.distance FROM candidates c JOIN near USING (text_key) \
         ORDER BY near.distance, c.ts DESC, c.event_id LIMIT $2";
    let rows: Vec<(Uuid, DateTime<Utc>, f64)> = match candidates {
        CandidateEvents::Ids(ids) => {
            sqlx::query_as(&format!(
                "WITH candidates AS MATERIALIZED ( \
                     SELECT event_id, ts, text_key FROM event_vectors \
                     WHERE event_id = ANY($3::uuid[])), {ranked}"
            ))
            .bind(vector_literal(query))
            .bind(i64::from(k))
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?
        }
        CandidateEvents::Keyed(events) => {
            let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.0).collect();
            let ids: Vec<Uuid> = events.iter().map(|e| e.1).collect();
            let keys: Vec<Vec<u8>> = events.iter().map(|e| e.2.as_bytes().to_vec()).collect();
            sqlx::query_as(&format!(
                "WITH candidates AS MATERIALIZED ( \
                     SELECT * FROM unnest($3::uuid[], $4::timestamptz[], $5::bytea[]) \
                         AS c(event_id, ts, text_key)), {ranked}"
            ))
            .bind(vector_literal(query))
            .bind(i64::from(k))
            .bind(&ids)
            .bind(&times)
            .bind(&keys)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    Ok(rows.into_iter().map(neighbour).collect())
}

/// [`nearest_among`] for candidates with their texts, scored from `cache` where
/// it holds them. Sets `plan_cache_mode` (only) when PostgreSQL scores the rest.
async fn nearest_among_keyed(
    conn: &mut PgConnection,
    cache: &ClumpCache,
    query: &[f32],
    events: &[(DateTime<Utc>, Uuid, TextKey)],
    k: u32,
) -> Result<Vec<Neighbour>, StoreError> {
    let started = Instant::now();
    let texts: Vec<TextKey> = events
        .iter()
        .map(|(_, _, key)| *key)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (found, missing) = cache.distances(&texts, query);
    let in_memory = found.len();
    let mut distances: HashMap<TextKey, f64> = found.into_iter().collect();
    if !missing.is_empty() {
        search_settings(conn, None).await?;
        let rows: Vec<(Vec<u8>, f64)> = sqlx::query_as(TEXT_DISTANCES)
            .bind(vector_literal(query))
            .bind(stored_keys(&missing))
            .fetch_all(&mut *conn)
            .await?;
        distances.extend(
            rows.into_iter()
                .filter_map(|(key, distance)| Some((TextKey::from_stored(&key)?, distance))),
        );
    }
    // A candidate whose text has no vector is left out, as the join leaves it.
    let mut ranked: Vec<(f64, DateTime<Utc>, Uuid)> = events
        .iter()
        .filter_map(|(ts, id, key)| distances.get(key).map(|d| (*d, *ts, *id)))
        .collect();
    ranked.sort_unstable_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then_with(|| b.1.cmp(&a.1))
            .then_with(|| a.2.cmp(&b.2))
    });
    ranked.truncate(k as usize);
    tracing::debug!(
        events = events.len(),
        texts = texts.len(),
        in_memory,
        by_postgres = missing.len(),
        took_ms = ms_since(started),
        "nearest among candidates: their texts scored in memory where held"
    );
    Ok(ranked
        .into_iter()
        .map(|(distance, ts, id)| Neighbour {
            id,
            ts,
            similarity: 1.0 - distance,
        })
        .collect())
}

fn neighbour((id, ts, similarity): (Uuid, DateTime<Utc>, f64)) -> Neighbour {
    Neighbour { id, ts, similarity }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_is_pgvector_text() {
        assert_eq!(vector_literal(&[0.5, -1.0, 0.1]), "[0.5,-1,0.1]");
        assert_eq!(vector_literal(&[]), "[]");
    }

    #[test]
    fn pgvector_text_reads_back() {
        let v = vec![0.5, -1.0, 0.123_456_79];
        assert_eq!(parse_vector(&vector_literal(&v)), Some(v));
        assert_eq!(parse_vector("[]"), Some(vec![]));
        assert_eq!(parse_vector("[1,x]"), None);
        assert_eq!(parse_vector("1,2"), None);
    }

    #[test]
    fn text_key_depends_on_model_version_and_text() {
        let int8 = Provenance {
            model: "all-MiniLM-L6-v2:int8".into(),
            text_version: 1,
        };
        let key = TextKey::of(&int8, "sudo | cat /etc/shadow");
        assert_eq!(key, TextKey::of(&int8.clone(), "sudo | cat /etc/shadow"));
        assert_ne!(key, TextKey::of(&int8, "sudo | cat /etc/passwd"));
        let fp32 = Provenance {
            model: "all-MiniLM-L6-v2:fp32".into(),
            ..int8.clone()
        };
        assert_ne!(key, TextKey::of(&fp32, "sudo | cat /etc/shadow"));
        let v2 = Provenance {
            text_version: 2,
            ..int8
        };
        assert_ne!(key, TextKey::of(&v2, "sudo | cat /etc/shadow"));
        assert_eq!(TextKey::from_stored(key.as_bytes()), Some(key));
        assert_eq!(TextKey::from_stored(&[1, 2, 3]), None);
    }

    #[test]
    fn a_batch_part_keeps_only_its_events_texts() {
        let provenance = Provenance {
            model: "m".into(),
            text_version: 1,
        };
        let (a, b) = (TextKey::of(&provenance, "a"), TextKey::of(&provenance, "b"));
        let event = |n: u128, key| EventText {
            id: Uuid::from_u128(n),
            ts: DateTime::<Utc>::UNIX_EPOCH,
            key,
            labels: EventLabels::default(),
        };
        let text = |key, t: &str| TextVector {
            key,
            text: t.into(),
            embedding: vec![1.0],
            representative: None,
        };
        let all = BatchVectors {
            events: vec![event(1, a), event(2, b), event(3, a)],
            texts: vec![text(a, "a"), text(b, "b")],
        };
        let part = all.for_events(&[Uuid::from_u128(3)]);
        assert_eq!(part.events, vec![event(3, a)]);
        assert_eq!(part.texts, vec![text(a, "a")]);
        assert_eq!(all.for_events(&[]), BatchVectors::default());
    }
}
