-- Semantic hunting: one MiniLM sentence embedding per event worth embedding (the
-- vectors projection decides which; see embeddings/src/policy.rs).
--
-- Keyed by the event's id (the same deterministic id as its events row); `ts` is the
-- event's time, so a vector finds its row by (ts, id), the events primary key. Not
-- partitioned: one HNSW graph answers a top-k over every vector (a partitioned table
-- would search each partition's graph and merge). Retention deletes old rows with
-- the events' retention.

-- pgvector 0.5+ (HNSW). Creating it needs a role allowed to (our dev role is; on a
-- managed cluster, have the operator create it first: then this is a no-op).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE event_vectors (
    event_id     uuid        PRIMARY KEY,
    ts           timestamptz NOT NULL,
    -- which model produced the vector, e.g. 'all-MiniLM-L6-v2:int8'
    model        text        NOT NULL,
    -- which version of the embedding-text function fed it
    text_version smallint    NOT NULL,
    embedding    vector(384) NOT NULL,
    embedded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX event_vectors_hnsw ON event_vectors USING hnsw (embedding vector_cosine_ops);
CREATE INDEX event_vectors_ts ON event_vectors (ts);
