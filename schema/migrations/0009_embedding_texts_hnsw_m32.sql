-- A denser HNSW graph for the embedding texts: m 32, ef_construction 200 (pgvector's
-- defaults are 16 and 64).
--
-- Log and alert texts form tight clumps (the same line with another IP or user; the
-- stored text checked by hand had its 50 nearest within cosine distance 0.006), and a
-- hunting phrase is far from all of them. With 16 links per node a clump's links stay inside it, and a search that
-- enters the wrong clump cannot leave. On the benchmark corpus (58,121 texts, 50
-- hunting phrases, ef_search 100) recall@50 went from 0.45 to 0.58 and the index
-- build from 14 s to 42 s (BENCHMARKS.md, "Semantic hunting").
DROP INDEX IF EXISTS embedding_texts_hnsw;
CREATE INDEX embedding_texts_hnsw ON embedding_texts
    USING hnsw (embedding vector_cosine_ops) WITH (m = 32, ef_construction = 200);
