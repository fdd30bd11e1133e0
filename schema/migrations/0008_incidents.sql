-- Running vs dormant vulnerabilities: the correlation of open critical/high findings
-- with what runs now (core/src/correlation.rs).
--
-- One open incident per host + CVE + package (name and version). `state` says whether a live process
-- belongs to the vulnerable package now (`running`: priority P0) or not (`dormant`:
-- scheduled for the next maintenance window); the correlation pass moves it between
-- the two as processes start and stop, and resolves it when the finding is resolved
-- (a later scan no longer reports it).

CREATE TABLE incidents (
    id               uuid        PRIMARY KEY,
    host             text        NOT NULL,
    -- by value, not by reference: replaying the vulns projection rebuilds
    -- `vulnerabilities` and `packages` (new package ids) and leaves incidents be
    vulnerability_id text        NOT NULL,
    package          text        NOT NULL,
    version          text        NOT NULL,
    ecosystem        text        NOT NULL,
    severity         text        NOT NULL,
    severity_level   smallint    NOT NULL,
    -- 'running' or 'dormant'
    state            text        NOT NULL,
    -- 'P0' (running) or 'scheduled' (dormant)
    priority         text        NOT NULL,
    -- the live processes that make it running: [{pid, exe, matched_by}]
    evidence         jsonb       NOT NULL DEFAULT '[]',
    opened_at        timestamptz NOT NULL,
    -- when it last became P0 (null while it never was)
    escalated_at     timestamptz,
    updated_at       timestamptz NOT NULL,
    resolved_at      timestamptz,
    -- the AWX job launched for it, or why launching failed
    remediation_job  bigint,
    remediation_error text
);

CREATE UNIQUE INDEX incidents_open ON incidents (host, vulnerability_id, package, version)
    WHERE resolved_at IS NULL;
CREATE INDEX incidents_state ON incidents (priority, opened_at) WHERE resolved_at IS NULL;
CREATE INDEX processes_running_package ON processes (host, package) WHERE stopped_at IS NULL;
