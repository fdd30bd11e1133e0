-- Semantic alert grouping: "10,000 events, 3 attack patterns".
--
-- Every embedded event belongs to a group of its time window (tumbling windows,
-- their length configurable). Membership is by embedding text: the events of one
-- text in one window are in one group, so the assignment is one decision per
-- distinct text per window, and an event's group is found by joining its text and
-- time (event_vectors → alert_group_texts). Counts, hosts, rules and first/last seen
-- are aggregated from the events at query time, so a filter (`q=`) can narrow them
-- and a redelivered event is never counted twice.
--
-- A text joins the group of its window whose centroid is nearest, if the cosine
-- similarity reaches the threshold, else it opens a new group (core/src/grouping.rs).
-- A group's id is derived from its window and its founding text, so the same data
-- grouped again (a restart, a replay, `regroup`) gives the same ids.

CREATE TABLE alert_groups (
    id            uuid        PRIMARY KEY,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    -- the text that opened the group: its exemplar
    founder_key   bytea       NOT NULL,
    -- the sum of its texts' unit vectors (the centroid's direction); one text, one vote
    centroid_sum  vector(384) NOT NULL,
    texts         integer     NOT NULL,
    -- the threshold the group was built with
    threshold     real        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX alert_groups_window ON alert_groups (window_start);

CREATE TABLE alert_group_texts (
    text_key      bytea       NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    group_id      uuid        NOT NULL REFERENCES alert_groups (id) ON DELETE CASCADE,
    -- cosine similarity to the group's centroid when the text joined it
    similarity    real        NOT NULL,
    PRIMARY KEY (text_key, window_start)
);

CREATE INDEX alert_group_texts_group ON alert_group_texts (group_id);
CREATE INDEX alert_group_texts_window ON alert_group_texts (window_start);
