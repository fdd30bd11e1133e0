//! The vector store: one sentence embedding per event worth embedding, in the
//! pgvector table `event_vectors` (HNSW, cosine), and the nearest-neighbour
//! searches `SIMILAR_TO` runs on it.
//!
//! Vectors are keyed by the event's deterministic id, so a redelivered or replayed
//! message writes nothing new. They are bound as pgvector's text form
//! (`[0.1,0.2,…]::vector`): no extra client type, and the statement stays
//! prepared.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{record_offsets, Batch, Store, StoreError, WriteSummary};

/// The embedding of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventVector {
    /// The event's id (its `events` row's id).
    pub id: Uuid,
    /// The event's time (its `events` row's partition key).
    pub ts: DateTime<Utc>,
    /// The unit-length sentence embedding.
    pub embedding: Vec<f32>,
}

/// Which model and embedding-text version produced a batch of vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// E.g. `all-MiniLM-L6-v2:int8`.
    pub model: String,
    /// Version of the function that made each event's text.
    pub text_version: i16,
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

impl Store {
    /// Writes `vectors` (skipping ids already stored) and the batch's offsets for
    /// `projection` in one transaction. Dead letters are the events projection's
    /// to record: it reads the same messages.
    pub async fn write_vectors(
        &self,
        projection: &str,
        slot: i32,
        batch: &Batch,
        provenance: &Provenance,
        vectors: &[EventVector],
    ) -> Result<WriteSummary, StoreError> {
        let mut tx = self.pool().begin().await?;
        let mut summary = WriteSummary {
            records: vectors.len() as u64,
            ..WriteSummary::default()
        };
        if !vectors.is_empty() {
            let ids: Vec<Uuid> = vectors.iter().map(|v| v.id).collect();
            let times: Vec<DateTime<Utc>> = vectors.iter().map(|v| v.ts).collect();
            let embeddings: Vec<String> = vectors
                .iter()
                .map(|v| vector_literal(&v.embedding))
                .collect();
            summary.rows_inserted = sqlx::query(
                "INSERT INTO event_vectors (event_id, ts, model, text_version, embedding) \
                 SELECT id, ts, $4, $5, embedding::vector \
                 FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS v(id, ts, embedding) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&times)
            .bind(&embeddings)
            .bind(&provenance.model)
            .bind(provenance.text_version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        record_offsets(&mut tx, projection, slot, batch).await?;
        tx.commit().await?;
        Ok(summary)
    }
}

/// The `k` nearest events to `query` through the HNSW index, searching
/// `ef_search` candidates (pgvector's default is 40; more finds more of the true
/// neighbours). Runs on `conn`, inside the caller's transaction.
pub async fn nearest(
    conn: &mut PgConnection,
    query: &[f32],
    k: u32,
    ef_search: u32,
) -> Result<Vec<Neighbour>, StoreError> {
    // SET LOCAL takes no parameters; the value is a number we formatted.
    sqlx::query(&format!(
        "SET LOCAL hnsw.ef_search = {}",
        ef_search.clamp(1, 1000)
    ))
    .execute(&mut *conn)
    .await?;
    let rows: Vec<(Uuid, DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT event_id, ts, 1 - (embedding <=> $1::vector) \
         FROM event_vectors ORDER BY embedding <=> $1::vector LIMIT $2",
    )
    .bind(vector_literal(query))
    .bind(i64::from(k))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(neighbour).collect())
}

/// The `k` nearest to `query` among the events `ids`, by an exact distance scan
/// over their vectors (never loses a candidate; for candidate sets of thousands).
pub async fn nearest_among(
    conn: &mut PgConnection,
    query: &[f32],
    ids: &[Uuid],
    k: u32,
) -> Result<Vec<Neighbour>, StoreError> {
    // `OFFSET 0` fences the id lookup, so the planner cannot trade it for an HNSW
    // scan that filters afterwards and may come back short.
    let rows: Vec<(Uuid, DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT event_id, ts, 1 - (embedding <=> $1::vector) FROM \
         (SELECT event_id, ts, embedding FROM event_vectors \
          WHERE event_id = ANY($2::uuid[]) OFFSET 0) c \
         ORDER BY embedding <=> $1::vector LIMIT $3",
    )
    .bind(vector_literal(query))
    .bind(ids)
    .bind(i64::from(k))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(neighbour).collect())
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
}
