-- Security events: Falco alerts, XDP drops, malware findings, log lines.
-- One row per event; the id is derived from the event's stream position, so a
-- replayed or redelivered message writes the same (ts, id) and is skipped.

SELECT palisade_create_timeseries('events', $cols$
    ts             timestamptz NOT NULL,
    id             uuid        NOT NULL,
    host           text,
    source         text        NOT NULL,
    type           text        NOT NULL,
    severity       text        NOT NULL,
    severity_level smallint    NOT NULL,
    rule           text,
    message        text        NOT NULL,
    attributes     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    subject        text        NOT NULL,
    stream         text        NOT NULL,
    stream_seq     bigint      NOT NULL,
    PRIMARY KEY (ts, id)
$cols$);

CREATE INDEX events_host_ts ON events (host, ts);

CREATE TABLE hosts (
    name       text PRIMARY KEY,
    -- the agent that last reported for this host (null when no envelope named one)
    agent_id   text,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL
);
