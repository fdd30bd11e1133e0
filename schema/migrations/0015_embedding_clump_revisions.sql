-- Each clump's revision: a number that changes whenever the clump's members do.
--
-- A search scores every member of the nearest representatives' clumps (migration
-- 0012). In PostgreSQL that costs ~1.3 µs a member, row by row, and a top-50
-- search over 193,101 texts scores 15,000 or more: 27 ms at p50 (BENCHMARKS.md,
-- "Semantic hunting"). The query server now keeps clumps' member vectors in
-- memory and scores them there (core/src/clumps.rs); this table tells it, in the
-- same snapshot as the HNSW search, whether the copy it holds is still the clump.
--
-- Triggers keep it, so every writer is covered (the vectors projection, retention,
-- a reclustering by hand): each statement that adds, removes or moves members
-- gives their clumps a fresh number from one sequence. Numbers are never reused,
-- so "equal" means "unchanged". A representative without a row has no members.

CREATE SEQUENCE embedding_clump_revisions;

CREATE TABLE embedding_clumps (
    representative bytea PRIMARY KEY,
    revision bigint NOT NULL
);

INSERT INTO embedding_clumps (representative, revision)
SELECT representative, nextval('embedding_clump_revisions')
FROM (SELECT DISTINCT representative FROM embedding_texts
      WHERE representative IS NOT NULL ORDER BY 1) c;

CREATE FUNCTION embedding_clumps_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- In key order, so concurrent writers lock the rows in the same order.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO embedding_clumps (representative, revision)
        SELECT representative, nextval('embedding_clump_revisions')
        FROM (SELECT DISTINCT representative FROM new_rows
              WHERE representative IS NOT NULL ORDER BY 1) c
        ON CONFLICT (representative) DO UPDATE SET revision = EXCLUDED.revision;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO embedding_clumps (representative, revision)
        SELECT representative, nextval('embedding_clump_revisions')
        FROM (SELECT representative FROM new_rows WHERE representative IS NOT NULL
              UNION
              SELECT representative FROM old_rows WHERE representative IS NOT NULL
              ORDER BY 1) c
        ON CONFLICT (representative) DO UPDATE SET revision = EXCLUDED.revision;
    ELSE
        DELETE FROM embedding_clumps
        WHERE representative IN (SELECT text_key FROM old_rows);
        UPDATE embedding_clumps c SET revision = nextval('embedding_clump_revisions')
        FROM (SELECT DISTINCT representative FROM old_rows
              WHERE representative IS NOT NULL ORDER BY 1) d
        WHERE c.representative = d.representative;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER embedding_clumps_insert AFTER INSERT ON embedding_texts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embedding_clumps_touch();
CREATE TRIGGER embedding_clumps_update AFTER UPDATE ON embedding_texts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embedding_clumps_touch();
CREATE TRIGGER embedding_clumps_delete AFTER DELETE ON embedding_texts
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embedding_clumps_touch();
