-- The host index also carries each event's id, severity and type, so the
-- candidates of a hybrid query such as `host:H AND severity:>=high | SIMILAR_TO(…)`
-- (their (ts, id) keys) come from the index alone, without visiting the table.
--
-- One host's month on the benchmark corpus is ~20,000 events spread over as many
-- table pages: 218 ms to list their keys through `events_host_ts` with a cold
-- cache, 12 ms by an index-only scan of this one (BENCHMARKS.md, "Semantic
-- hunting"). It serves every query the old index served.

CREATE INDEX events_host_ts_covering ON events (host, ts) INCLUDE (id, severity_level, type);
DROP INDEX events_host_ts;
