-- A clump's members come with their vectors from the index alone.
--
-- A search expands the clumps of the nearest representatives (migration 0012) and
-- scores every member by its own vector. Through `embedding_texts_representative`
-- each member was a visit to another table page: 15,179 members, 15,063 pages and
-- 46 ms for one phrase over 193,101 texts. With the members' keys and vectors in
-- the index, in clump order, the same expansion reads ~4,300 index pages by an
-- index-only scan, and the top-50 search over those texts went from 40 to 22 ms
-- at p50 (BENCHMARKS.md, "Semantic hunting").
--
-- The price is a second copy of every member's vector (about the table's size).
-- It serves every lookup the old index served (`representative = …`).

CREATE INDEX embedding_texts_clump_members ON embedding_texts (representative)
    INCLUDE (text_key, embedding) WHERE representative IS NOT NULL;
DROP INDEX embedding_texts_representative;
