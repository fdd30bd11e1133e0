-- An embedded event's host, type and severity, copied from its `events` row.
--
-- A hunt's filter most often names the host, the alert type, the severity or a time
-- range (`host:H | SIMILAR_TO(…)`). To rank such a filter's candidates, the query
-- needs their text keys, which only `event_vectors` holds: joined with `events`,
-- PostgreSQL probed `event_vectors` once per matching event, ~39 ms for one host's
-- 20,885 events on the benchmark corpus (10,456 of them embedded). With the
-- columns here, under the names they have in `events`, such a filter reads one
-- range of the index below and nothing else (BENCHMARKS.md, "Hybrid: filters
-- read event_vectors alone").
--
-- An event's row never changes, so the copies never go stale. They are NULL only
-- for vectors whose event row was not committed yet when this ran; those match
-- no host, type or severity filter.

ALTER TABLE event_vectors
    ADD COLUMN host text,
    ADD COLUMN type text,
    ADD COLUMN severity_level smallint;

UPDATE event_vectors v
SET host = e.host, type = e.type, severity_level = e.severity_level
FROM events e
WHERE e.id = v.event_id AND e.ts = v.ts;

-- One host's embedded events in time order, with everything a candidate read and a
-- type or severity condition need, so the read is index-only.
CREATE INDEX event_vectors_host_ts ON event_vectors (host, ts)
    INCLUDE (type, severity_level, event_id, text_key);
