-- One vector per distinct embedding text, not per event.
--
-- The embedding text keeps an event's salient fields (rule, command line, file) and
-- drops host and time, so the same alert on 500 hosts is one text 500 times. Stored
-- per event, those copies filled the HNSW graph's neighbour lists with one point
-- and split it into islands a search could not leave (recall@50 of 0.45–0.51 on the
-- benchmark corpus, where 70% of the vectors were copies); they also cost an
-- embedding each. Now:
--
--   embedding_texts  one row per (model, text version, text): the vector, HNSW
--   event_vectors    one row per embedded event: which text it has
--
-- `text_key` is SHA-256 over "<model>\n<text version>\n<text>" (see
-- core/src/vectors.rs, `text_key`), so another model or text version is another row.

CREATE TABLE embedding_texts (
    text_key     bytea       PRIMARY KEY,
    model        text        NOT NULL,
    text_version smallint    NOT NULL,
    -- NULL only for vectors carried over from 0006, which did not keep the text
    text         text,
    embedding    vector(384) NOT NULL,
    embedded_at  timestamptz NOT NULL DEFAULT now()
);

-- Carry the vectors already stored over. Their texts were not kept, so each distinct
-- vector becomes its own row, keyed by a hash of the vector (a prefix no text key
-- can produce: those start with the model name and a newline).
ALTER TABLE event_vectors ADD COLUMN text_key bytea;
UPDATE event_vectors
SET text_key = sha256(convert_to('0006:' || model || ':' || text_version || ':' || embedding::text, 'UTF8'));
INSERT INTO embedding_texts (text_key, model, text_version, embedding, embedded_at)
SELECT DISTINCT ON (text_key) text_key, model, text_version, embedding, embedded_at
FROM event_vectors
ORDER BY text_key, embedded_at;

DROP INDEX event_vectors_hnsw;
ALTER TABLE event_vectors
    DROP COLUMN embedding,
    DROP COLUMN model,
    DROP COLUMN text_version,
    DROP COLUMN embedded_at,
    ALTER COLUMN text_key SET NOT NULL;

-- A text's events, newest first (SIMILAR_TO expands each near text to its events).
CREATE INDEX event_vectors_text ON event_vectors (text_key, ts DESC);
CREATE INDEX embedding_texts_hnsw ON embedding_texts USING hnsw (embedding vector_cosine_ops);
