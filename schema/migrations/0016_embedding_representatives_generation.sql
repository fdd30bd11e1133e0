-- A number that changes whenever the set of representatives does.
--
-- A search over a million texts took the nearest representatives by HNSW at
-- ~5 ms (ef_search 600 over 3,247 representatives: the graph is small, and the
-- search visits most of it). The query server now keeps the representatives'
-- vectors in memory and ranks them all exactly, in well under a millisecond
-- (core/src/clumps.rs). It reads this number in the same statement as the
-- chosen clumps' revisions (migration 0015), and reads the representatives again
-- when it changed.
--
-- The trigger that keeps the clumps' revisions keeps it too, so every writer is
-- covered: a statement that adds or removes a representative, or updates one
-- (a reclustering moves texts in and out), gives it a fresh number from the same
-- sequence. Adding members to clumps leaves it alone: that is what revisions
-- are for, and it is most of what the vectors projection writes. Writers that
-- add representatives queue on this one row until they commit; the projection
-- is one consumer, and new representatives are rare once a corpus is seen
-- (3,247 for a million texts).

CREATE TABLE embedding_representatives_generation (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    generation bigint NOT NULL
);

INSERT INTO embedding_representatives_generation (generation)
VALUES (nextval('embedding_clump_revisions'));

-- The representatives, for reading them all without a pass over every text.
CREATE INDEX embedding_texts_representatives ON embedding_texts (text_key)
    WHERE representative IS NULL;

CREATE OR REPLACE FUNCTION embedding_clumps_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- In key order, so concurrent writers lock the rows in the same order.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO embedding_clumps (representative, revision)
        SELECT representative, nextval('embedding_clump_revisions')
        FROM (SELECT DISTINCT representative FROM new_rows
              WHERE representative IS NOT NULL ORDER BY 1) c
        ON CONFLICT (representative) DO UPDATE SET revision = EXCLUDED.revision;
        IF EXISTS (SELECT 1 FROM new_rows WHERE representative IS NULL) THEN
            UPDATE embedding_representatives_generation
            SET generation = nextval('embedding_clump_revisions');
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO embedding_clumps (representative, revision)
        SELECT representative, nextval('embedding_clump_revisions')
        FROM (SELECT representative FROM new_rows WHERE representative IS NOT NULL
              UNION
              SELECT representative FROM old_rows WHERE representative IS NOT NULL
              ORDER BY 1) c
        ON CONFLICT (representative) DO UPDATE SET revision = EXCLUDED.revision;
        IF EXISTS (SELECT 1 FROM new_rows WHERE representative IS NULL)
           OR EXISTS (SELECT 1 FROM old_rows WHERE representative IS NULL) THEN
            UPDATE embedding_representatives_generation
            SET generation = nextval('embedding_clump_revisions');
        END IF;
    ELSE
        DELETE FROM embedding_clumps
        WHERE representative IN (SELECT text_key FROM old_rows);
        UPDATE embedding_clumps c SET revision = nextval('embedding_clump_revisions')
        FROM (SELECT DISTINCT representative FROM old_rows
              WHERE representative IS NOT NULL ORDER BY 1) d
        WHERE c.representative = d.representative;
        IF EXISTS (SELECT 1 FROM old_rows WHERE representative IS NULL) THEN
            UPDATE embedding_representatives_generation
            SET generation = nextval('embedding_clump_revisions');
        END IF;
    END IF;
    RETURN NULL;
END
$$;
