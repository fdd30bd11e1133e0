-- What runs where, what talks to what, and which vulnerable packages are installed.

CREATE TABLE processes (
    host         text        NOT NULL,
    pid          bigint      NOT NULL,
    started_at   timestamptz NOT NULL,
    ppid         bigint,
    exe          text,
    cmdline      text,
    user_name    text,
    container_id text,
    package      text,
    agent_id     text,
    stopped_at   timestamptz,
    PRIMARY KEY (host, pid, started_at)
);

CREATE INDEX processes_running ON processes (host, pid) WHERE stopped_at IS NULL;

SELECT palisade_create_timeseries('connections', $cols$
    ts          timestamptz NOT NULL,
    id          uuid        NOT NULL,
    host        text        NOT NULL,
    pid         bigint      NOT NULL,
    process     text,
    protocol    text        NOT NULL,
    local_ip    text        NOT NULL,
    local_port  integer     NOT NULL,
    remote_ip   text,
    remote_port integer,
    status      text        NOT NULL,
    agent_id    text,
    PRIMARY KEY (ts, id)
$cols$);

CREATE INDEX connections_host_ts ON connections (host, ts);
CREATE INDEX connections_remote_ip ON connections (remote_ip, ts) WHERE remote_ip IS NOT NULL;

-- One row per scan report received.
CREATE TABLE scans (
    id            uuid PRIMARY KEY,
    host          text        NOT NULL,
    artifact_name text        NOT NULL,
    artifact_type text        NOT NULL,
    os            text,
    scanned_at    timestamptz NOT NULL,
    packages      integer     NOT NULL,
    findings      integer     NOT NULL,
    agent_id      text,
    stream        text        NOT NULL,
    stream_seq    bigint      NOT NULL
);

CREATE INDEX scans_host_artifact ON scans (host, artifact_name, scanned_at);

CREATE TABLE packages (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ecosystem text NOT NULL,
    name      text NOT NULL,
    version   text NOT NULL,
    UNIQUE (ecosystem, name, version)
);

-- Packages installed on a host (or in an artifact on it), as of the latest scan.
CREATE TABLE host_packages (
    host          text        NOT NULL,
    artifact_name text        NOT NULL,
    package_id    bigint      NOT NULL REFERENCES packages (id),
    path          text        NOT NULL DEFAULT '',
    first_seen    timestamptz NOT NULL,
    scanned_at    timestamptz NOT NULL,
    PRIMARY KEY (host, artifact_name, package_id, path)
);

CREATE TABLE vulnerabilities (
    id             text PRIMARY KEY,
    severity       text        NOT NULL,
    severity_level smallint    NOT NULL,
    title          text,
    description    text,
    primary_url    text,
    updated_at     timestamptz NOT NULL
);

-- A vulnerability in a package installed on a host. A later scan of the same
-- artifact that no longer lists it sets resolved_at.
CREATE TABLE host_vulnerabilities (
    host             text        NOT NULL,
    artifact_name    text        NOT NULL,
    target           text        NOT NULL,
    vulnerability_id text        NOT NULL REFERENCES vulnerabilities (id),
    package_id       bigint      NOT NULL REFERENCES packages (id),
    fixed_version    text,
    severity         text        NOT NULL,
    severity_level   smallint    NOT NULL,
    first_seen       timestamptz NOT NULL,
    scanned_at       timestamptz NOT NULL,
    scan_id          uuid        NOT NULL,
    resolved_at      timestamptz,
    PRIMARY KEY (host, artifact_name, target, vulnerability_id, package_id)
);

CREATE INDEX host_vulnerabilities_open ON host_vulnerabilities (severity_level, host)
    WHERE resolved_at IS NULL;
