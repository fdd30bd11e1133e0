-- Ingest bookkeeping: how far each projection has applied each stream, and the
-- messages that were dead-lettered (they are also kept on dlq.<subject>).

CREATE TABLE projection_offsets (
    projection text        NOT NULL,
    stream     text        NOT NULL,
    -- writer slot: concurrent writers of one projection keep separate rows, so
    -- they never wait on each other's offset row.
    slot       integer     NOT NULL,
    last_seq   bigint      NOT NULL,
    messages   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (projection, stream, slot)
);

CREATE TABLE dead_letters (
    stream      text        NOT NULL,
    stream_seq  bigint      NOT NULL,
    projection  text        NOT NULL,
    subject     text        NOT NULL,
    reason      text        NOT NULL,
    payload     bytea       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream, stream_seq)
);
