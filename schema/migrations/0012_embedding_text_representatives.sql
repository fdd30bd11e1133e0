-- Near-duplicate texts leave the HNSW graph: each clump has one representative.
--
-- Log and alert texts come in tight clumps: the same line with another IP, user or
-- path. Every member of a clump was a node of the HNSW graph, and with hundreds of
-- near-identical nodes a clump's links stay inside it: a search for a hunting
-- phrase that enters the wrong clump does not leave it, and one that should end in
-- a clump may never enter it (recall@50 of 0.45–0.70 on the benchmark corpus,
-- BENCHMARKS.md "Semantic hunting").
--
-- Now a new text whose nearest representative lies within a small cosine distance
-- (the vectors projection's `representative_distance`, see core/src/vectors.rs)
-- keeps its own vector but names that text as its `representative`, and only
-- representatives are in the graph. A search takes the nearest representatives by
-- HNSW, adds their members, and ranks them all by their own exact distance.
--
-- Texts stored before this migration represent themselves.

ALTER TABLE embedding_texts ADD COLUMN representative bytea;

-- A clump's members, for the expansion after the HNSW search.
CREATE INDEX embedding_texts_representative ON embedding_texts (representative)
    WHERE representative IS NOT NULL;

DROP INDEX IF EXISTS embedding_texts_hnsw;
CREATE INDEX embedding_texts_hnsw ON embedding_texts
    USING hnsw (embedding vector_cosine_ops) WITH (m = 32, ef_construction = 200)
    WHERE representative IS NULL;
