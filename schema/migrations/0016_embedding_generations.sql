-- Numbers that change whenever the set of representatives, or any clump, does.
--
-- A search over a million texts took the nearest representatives by HNSW at
-- ~5 ms (ef_search 600 over 3,247 representatives: the graph is small, and the
-- search visits most of it), then read the chosen clumps' revisions. The query
-- server now keeps the representatives' vectors and every clump's revision in
-- memory and ranks the representatives exactly in well under a millisecond
-- (core/src/clumps.rs). Each search reads this one row; when `representatives`
-- moved on it reads the representatives again, when `clumps` did, the
-- revisions (migration 0015).
--
-- The trigger that keeps the clumps' revisions keeps it too, so every writer is
-- covered: each statement that changes texts gives `clumps` a fresh number from
-- the same sequence, and `representatives` too when it adds, removes or updates
-- a representative (a reclustering moves texts in and out). Writers queue on
-- this one row until they commit; the vectors projection is one consumer
-- writing one batch at a time, so it does not wait on itself.

CREATE TABLE embedding_generations (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    representatives bigint NOT NULL,
    clumps bigint NOT NULL
);

INSERT INTO embedding_generations (representatives, clumps)
VALUES (nextval('embedding_clump_revisions'), nextval('embedding_clump_revisions'));

-- The representatives, for reading them all without a pass over every text.
CREATE INDEX embedding_texts_representatives ON embedding_texts (text_key)
    WHERE representative IS NULL;

CREATE OR REPLACE FUNCTION embedding_clumps_touch() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    representatives_changed boolean;
BEGIN
    -- A statement that changed no row changes nothing (an upsert that found
    -- every text stored).
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
            RETURN NULL;
        END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM new_rows) THEN
        RETURN NULL;
    END IF;
    -- In key order, so concurrent writers lock the rows in the same order.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO embedding_clumps (representative, revision)
        SELECT representative, nextval('embedding_clump_revisions')
        FROM (SELECT DISTINCT representative FROM new_rows
              WHERE representative IS NOT NULL ORDER BY 1) c
        ON CONFLICT (representative) DO UPDATE SET revision = EXCLUDED.revision;
        representatives_changed := EXISTS (SELECT 1 FROM new_rows WHERE representative IS NULL);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO embedding_clumps (representative, revision)
        SELECT representative, nextval('embedding_clump_revisions')
        FROM (SELECT representative FROM new_rows WHERE representative IS NOT NULL
              UNION
              SELECT representative FROM old_rows WHERE representative IS NOT NULL
              ORDER BY 1) c
        ON CONFLICT (representative) DO UPDATE SET revision = EXCLUDED.revision;
        representatives_changed := EXISTS (SELECT 1 FROM new_rows WHERE representative IS NULL)
            OR EXISTS (SELECT 1 FROM old_rows WHERE representative IS NULL);
    ELSE
        DELETE FROM embedding_clumps
        WHERE representative IN (SELECT text_key FROM old_rows);
        UPDATE embedding_clumps c SET revision = nextval('embedding_clump_revisions')
        FROM (SELECT DISTINCT representative FROM old_rows
              WHERE representative IS NOT NULL ORDER BY 1) d
        WHERE c.representative = d.representative;
        representatives_changed := EXISTS (SELECT 1 FROM old_rows WHERE representative IS NULL);
    END IF;
    UPDATE embedding_generations SET
        clumps = nextval('embedding_clump_revisions'),
        representatives = CASE WHEN representatives_changed
                               THEN nextval('embedding_clump_revisions')
                               ELSE representatives END;
    RETURN NULL;
END
$$;
