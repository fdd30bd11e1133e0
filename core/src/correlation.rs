//! Running vs dormant: which open critical and high vulnerabilities are in a
//! package that a live process belongs to right now.
//!
//! A finding (host, CVE, package) is **running** when a process that has not
//! stopped belongs to the package, by, in order:
//!
//! 1. `package`: the package the agent reported for the process (exact name);
//! 2. `file`: for a process without a reported package, its executable is one of
//!    the package's installed files, where the scan lists them (Trivy's
//!    `InstalledFiles`, kept in `package_files`);
//! 3. `name`: for a process without a reported package whose executable no
//!    package on its host lists as an installed file, the executable's file name
//!    equals the package name, case-insensitively (`/usr/sbin/nginx` ↔ `nginx`).
//!    Libraries (`libssl`) are never matched by name: a process maps a library,
//!    it does not run it as its executable.
//!
//! A running critical/high finding is a **P0** incident; the same finding with no
//! live process is **dormant**, scheduled for the next maintenance window. Each
//! [`correlate`] pass brings the open incidents of the hosts it looks at in line
//! with the findings and processes: it opens incidents, moves them between P0 and
//! scheduled, and resolves those whose finding is resolved. One open incident per
//! host + CVE + package.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// Lowest severity level that makes an incident (`high`).
pub const MIN_SEVERITY_LEVEL: i16 = 3;

/// An incident that became P0 in a pass: newly opened while running, or a dormant
/// one whose package started running.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct P0 {
    /// The incident's id.
    pub id: Uuid,
    /// The host.
    pub host: String,
    /// CVE or advisory id.
    pub vulnerability_id: String,
    /// The vulnerable package's name.
    pub package: String,
    /// Its installed version.
    pub version: String,
    /// `critical` or `high`.
    pub severity: String,
    /// The live processes of the package: `[{pid, exe, matched_by}]`.
    pub evidence: Value,
    /// When it became P0.
    pub escalated_at: DateTime<Utc>,
}

/// What one pass changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CorrelationReport {
    /// Open critical/high findings looked at.
    pub findings: u64,
    /// Incidents opened.
    pub opened: u64,
    /// Incidents that are now P0 and were not before (opened running, or
    /// dormant → running).
    pub escalated: Vec<P0>,
    /// Incidents that went from running back to dormant.
    pub downgraded: u64,
    /// Incidents resolved because their finding was resolved.
    pub resolved: u64,
}

/// One row of a pass: `resolved` first (true for an incident the pass resolved,
/// whose other columns are then empty), then an upserted incident's id, host, CVE,
/// package, version, severity, evidence, escalation time, whether it was inserted
/// and whether it went from running to dormant.
type PassRow = (
    bool,
    Uuid,
    String,
    String,
    String,
    String,
    String,
    Value,
    Option<DateTime<Utc>>,
    bool,
    bool,
);

/// One pass over `hosts` (every host when `None`) at time `now`; see the
/// [module docs](self). Passes are serialised by an advisory lock, so concurrent
/// triggers (a process batch and a scan at once) never race on an incident.
pub async fn correlate(
    pool: &sqlx::PgPool,
    hosts: Option<&[String]>,
    now: DateTime<Utc>,
) -> Result<CorrelationReport, sqlx::Error> {
    // PostgreSQL keeps microseconds: compare escalation times at that precision.
    let now = now.trunc_subsecs(6);
    let mut tx = pool.begin().await?;
    // Every join below is between whole sets (findings, live processes, open
    // incidents): hash joins. A nested loop over two CTE scans of 50,000 rows each
    // took minutes where the hash join takes a second; a merge join of the
    // installed-files matches with `host_packages` sorted 500,000 rows where hashing
    // them took a third of the time.
    for statement in [
        "SELECT pg_advisory_xact_lock(hashtext('palisade.correlation'))",
        "SET LOCAL enable_nestloop = off",
        "SET LOCAL enable_mergejoin = off",
        "SET LOCAL work_mem = '64MB'",
    ] {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    let hosts: Option<Vec<String>> = hosts.map(<[String]>::to_vec);
    // Findings of the hosts, the live processes that match each, the upsert, and
    // the resolution of incidents whose finding is gone: one statement.
    let rows: Vec<PassRow> = sqlx::query_as(
        "WITH findings AS ( \
             SELECT hv.host, hv.vulnerability_id, p.id AS package_id, p.name, p.version, \
                    p.ecosystem, max(hv.severity_level) AS severity_level \
             FROM host_vulnerabilities hv JOIN packages p ON p.id = hv.package_id \
             WHERE hv.resolved_at IS NULL AND hv.severity_level >= $3 \
               AND ($1::text[] IS NULL OR hv.host = ANY($1)) \
             GROUP BY hv.host, hv.vulnerability_id, p.id, p.name, p.version, p.ecosystem), \
         live AS ( \
             SELECT host, pid, exe, package, \
                    lower(regexp_replace(coalesce(exe, ''), '^.*/', '')) AS exe_name \
             FROM processes WHERE stopped_at IS NULL \
               AND ($1::text[] IS NULL OR host = ANY($1))), \
         owned AS ( \
             SELECT DISTINCT l.host, l.exe FROM live l \
             JOIN package_files pf ON pf.path = l.exe \
             JOIN host_packages hp ON hp.package_id = pf.package_id AND hp.host = l.host \
             WHERE l.package IS NULL), \
         matches AS ( \
             SELECT f.host, f.vulnerability_id, f.name, f.version, l.pid, l.exe, \
                    'package' AS matched_by \
             FROM findings f JOIN live l ON l.host = f.host AND l.package = f.name \
             UNION ALL \
             SELECT f.host, f.vulnerability_id, f.name, f.version, l.pid, l.exe, 'file' \
             FROM findings f JOIN package_files pf ON pf.package_id = f.package_id \
             JOIN live l ON l.host = f.host AND l.package IS NULL AND l.exe = pf.path \
             UNION ALL \
             SELECT f.host, f.vulnerability_id, f.name, f.version, l.pid, l.exe, 'name' \
             FROM findings f JOIN live l ON l.host = f.host AND l.package IS NULL \
                  AND l.exe_name = lower(f.name) \
             WHERE NOT EXISTS (SELECT 1 FROM owned o WHERE o.host = l.host AND o.exe = l.exe)), \
         evidence AS ( \
             SELECT host, vulnerability_id, name, version, \
                    jsonb_agg(jsonb_build_object('pid', pid, 'exe', exe, 'matched_by', matched_by) \
                              ORDER BY pid) AS evidence \
             FROM matches GROUP BY host, vulnerability_id, name, version), \
         desired AS ( \
             SELECT f.host, f.vulnerability_id, f.name AS package, f.version, f.ecosystem, \
                    f.severity_level, \
                    CASE f.severity_level WHEN 4 THEN 'critical' ELSE 'high' END AS severity, \
                    coalesce(e.evidence, '[]'::jsonb) AS evidence, \
                    CASE WHEN e.evidence IS NULL THEN 'dormant' ELSE 'running' END AS state \
             FROM findings f LEFT JOIN evidence e USING (host, vulnerability_id, name, version)), \
         before AS ( \
             SELECT i.host, i.vulnerability_id, i.package, i.version, i.state FROM incidents i \
             JOIN desired d USING (host, vulnerability_id, package, version) \
             WHERE i.resolved_at IS NULL), \
         upserted AS ( \
             INSERT INTO incidents (id, host, vulnerability_id, package, version, ecosystem, \
                 severity, severity_level, state, priority, evidence, opened_at, escalated_at, \
                 updated_at) \
             SELECT gen_random_uuid(), host, vulnerability_id, package, version, ecosystem, \
                    severity, severity_level, state, \
                    CASE state WHEN 'running' THEN 'P0' ELSE 'scheduled' END, \
                    evidence, $2, CASE state WHEN 'running' THEN $2::timestamptz END, $2 \
             FROM desired \
             ON CONFLICT (host, vulnerability_id, package, version) WHERE resolved_at IS NULL \
             DO UPDATE SET state = EXCLUDED.state, priority = EXCLUDED.priority, \
                 evidence = EXCLUDED.evidence, severity = EXCLUDED.severity, \
                 severity_level = EXCLUDED.severity_level, \
                 escalated_at = CASE WHEN incidents.state = 'dormant' AND EXCLUDED.state = 'running' \
                                     THEN $2 ELSE incidents.escalated_at END, \
                 updated_at = CASE WHEN (incidents.state, incidents.evidence, incidents.severity) \
                                        IS DISTINCT FROM (EXCLUDED.state, EXCLUDED.evidence, EXCLUDED.severity) \
                                   THEN $2 ELSE incidents.updated_at END \
             RETURNING id, host, vulnerability_id, package, version, severity, state, evidence, \
                       escalated_at, (xmax = 0) AS inserted), \
         resolved AS ( \
             UPDATE incidents i SET resolved_at = $2, updated_at = $2 \
             WHERE i.resolved_at IS NULL AND ($1::text[] IS NULL OR i.host = ANY($1)) \
               AND NOT EXISTS (SELECT 1 FROM desired d WHERE d.host = i.host \
                   AND d.vulnerability_id = i.vulnerability_id AND d.package = i.package \
                   AND d.version = i.version) \
             RETURNING i.id) \
         SELECT false, u.id, u.host, u.vulnerability_id, u.package, u.version, u.severity, \
                u.evidence, u.escalated_at, u.inserted, \
                coalesce(b.state = 'running' AND u.state = 'dormant', false) \
         FROM upserted u LEFT JOIN before b USING (host, vulnerability_id, package, version) \
         UNION ALL \
         SELECT true, id, '', '', '', '', '', 'null'::jsonb, NULL, false, false FROM resolved",
    )
    .bind(hosts.as_deref())
    .bind(now)
    .bind(MIN_SEVERITY_LEVEL)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let mut report = CorrelationReport::default();
    for (
        resolved,
        id,
        host,
        vulnerability_id,
        package,
        version,
        severity,
        evidence,
        escalated_at,
        inserted,
        downgraded,
    ) in rows
    {
        if resolved {
            report.resolved += 1;
            continue;
        }
        report.findings += 1;
        report.opened += u64::from(inserted);
        report.downgraded += u64::from(downgraded);
        if escalated_at == Some(now) {
            report.escalated.push(P0 {
                id,
                host,
                vulnerability_id,
                package,
                version,
                severity,
                evidence,
                escalated_at: now,
            });
        }
    }
    Ok(report)
}

/// Records the remediation job launched for incident `id`, or why launching
/// failed.
pub async fn record_remediation(
    pool: &sqlx::PgPool,
    id: Uuid,
    outcome: Result<i64, String>,
) -> Result<(), sqlx::Error> {
    let (job, error) = match outcome {
        Ok(job) => (Some(job), None),
        Err(error) => (None, Some(error)),
    };
    sqlx::query("UPDATE incidents SET remediation_job = $2, remediation_error = $3 WHERE id = $1")
        .bind(id)
        .bind(job)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// Which incidents to list.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only open ones (default) or only resolved ones; `None`: both.
    pub open: Option<bool>,
    /// Only `running` or only `dormant` ones.
    pub state: Option<String>,
    /// Only this host's.
    pub host: Option<String>,
    /// At most this many (P0 first, then the most severe, then the newest).
    pub limit: u32,
}

/// Incidents as JSON objects: id, host, CVE, package and version, severity,
/// state, priority, evidence, times and remediation.
pub async fn list_incidents(
    pool: &sqlx::PgPool,
    filter: &IncidentFilter,
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT jsonb_build_object('id', i.id, 'host', i.host, \
                'vulnerability_id', i.vulnerability_id, 'title', v.title, \
                'package', i.package, 'version', i.version, 'ecosystem', i.ecosystem, \
                'severity', i.severity, 'state', i.state, 'priority', i.priority, \
                'evidence', i.evidence, 'opened_at', i.opened_at, \
                'escalated_at', i.escalated_at, 'updated_at', i.updated_at, \
                'resolved_at', i.resolved_at, 'remediation_job', i.remediation_job, \
                'remediation_error', i.remediation_error) \
         FROM incidents i LEFT JOIN vulnerabilities v ON v.id = i.vulnerability_id \
         WHERE ($1::bool IS NULL OR (i.resolved_at IS NULL) = $1) \
           AND ($2::text IS NULL OR i.state = $2) AND ($3::text IS NULL OR i.host = $3) \
         ORDER BY i.priority = 'P0' DESC, i.severity_level DESC, i.opened_at DESC, i.id \
         LIMIT $4",
    )
    .bind(filter.open)
    .bind(&filter.state)
    .bind(&filter.host)
    .bind(i64::from(filter.limit))
    .fetch_all(pool)
    .await
}
