//! Trivy reports (`scan.trivy.>`): SchemaVersion 2 JSON, bare as `trivy --format json`
//! writes it, or wrapped in our envelope, which names the host, the agent, the time
//! and the kind of target.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use super::envelope::Header;
use super::{invalid, non_empty, parse_json, parse_time, DecodeError};
use crate::model::{Decoded, Finding, Package, ScanReport, Severity};

/// Contract name in errors.
pub(super) const CONTRACT: &str = "trivy report";

/// The only Trivy report schema this decoder reads.
const SCHEMA_VERSION: u64 = 2;

/// Values our envelope's `target_kind` may take.
const TARGET_KINDS: [&str; 4] = ["host", "container_image", "filesystem", "repository"];

/// Tells the two shapes apart: an object with a non-null `report` is our envelope.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Trivy report or envelope object")]
struct Probe {
    report: Option<IgnoredAny>,
}

/// The envelope as it comes; every field optional so a missing one gets a precise error.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Trivy envelope object")]
struct RawEnvelope {
    v: Option<Value>,
    ts: Option<String>,
    host: Option<String>,
    agent_id: Option<String>,
    target_kind: Option<String>,
    report: RawReport,
}

/// The part of a Trivy report we read; everything else is ignored.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Trivy report object")]
#[serde(rename_all = "PascalCase")]
struct RawReport {
    schema_version: Option<Value>,
    created_at: Option<String>,
    artifact_name: Option<String>,
    artifact_type: Option<String>,
    metadata: Option<RawMetadata>,
    results: Option<Vec<RawResult>>,
}

/// `Metadata`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Metadata object")]
struct RawMetadata {
    #[serde(rename = "OS")]
    os: Option<RawOs>,
}

/// `Metadata.OS`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an OS object")]
#[serde(rename_all = "PascalCase")]
struct RawOs {
    family: Option<String>,
    name: Option<String>,
}

/// One of `Results[]`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Result object")]
#[serde(rename_all = "PascalCase")]
struct RawResult {
    target: Option<String>,
    #[serde(rename = "Type")]
    result_type: Option<String>,
    packages: Option<Vec<RawPackage>>,
    vulnerabilities: Option<Vec<RawVulnerability>>,
}

/// One of `Results[].Packages[]`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Package object")]
#[serde(rename_all = "PascalCase")]
struct RawPackage {
    name: Option<String>,
    version: Option<String>,
    file_path: Option<String>,
    pkg_path: Option<String>,
    installed_files: Option<Vec<String>>,
}

/// One of `Results[].Vulnerabilities[]`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Vulnerability object")]
#[serde(rename_all = "PascalCase")]
struct RawVulnerability {
    #[serde(rename = "VulnerabilityID")]
    vulnerability_id: Option<String>,
    pkg_name: Option<String>,
    pkg_path: Option<String>,
    installed_version: Option<String>,
    fixed_version: Option<String>,
    severity: Option<String>,
    title: Option<String>,
    description: Option<String>,
    #[serde(rename = "PrimaryURL")]
    primary_url: Option<String>,
}

/// What our envelope overrides in the report.
struct Overrides {
    header: Header,
    target_kind: Option<String>,
}

/// Decodes a bare or wrapped Trivy report into one [`ScanReport`].
pub(super) fn decode(payload: &[u8]) -> Result<Decoded, DecodeError> {
    let probe: Probe = parse_json(CONTRACT, payload)?;
    let (report, overrides) = if probe.report.is_some() {
        let raw: RawEnvelope = parse_json(CONTRACT, payload)?;
        let header = Header::check(CONTRACT, raw.v, raw.ts, raw.host, raw.agent_id)?;
        let target_kind = non_empty(raw.target_kind);
        if let Some(kind) = &target_kind {
            if !TARGET_KINDS.contains(&kind.as_str()) {
                return Err(invalid(
                    CONTRACT,
                    format!(
                        "target_kind {kind:?} is not one of {}",
                        TARGET_KINDS.join(", ")
                    ),
                ));
            }
        }
        (
            raw.report,
            Some(Overrides {
                header,
                target_kind,
            }),
        )
    } else {
        (parse_json::<RawReport>(CONTRACT, payload)?, None)
    };
    Ok(Decoded::Scan(scan(report, overrides)?))
}

/// Checks a report and applies the envelope's overrides.
fn scan(raw: RawReport, overrides: Option<Overrides>) -> Result<ScanReport, DecodeError> {
    match &raw.schema_version {
        None | Some(Value::Null) => return Err(invalid(CONTRACT, "missing SchemaVersion")),
        Some(v) if v.as_u64() != Some(SCHEMA_VERSION) => {
            return Err(invalid(
                CONTRACT,
                format!("unsupported SchemaVersion {v} (this decoder reads {SCHEMA_VERSION})"),
            ))
        }
        Some(_) => {}
    }
    let scanned_at = match (&overrides, raw.created_at.as_deref()) {
        (Some(o), _) => o.header.ts,
        (None, Some(created_at)) => parse_time(CONTRACT, "CreatedAt", created_at)?,
        (None, None) => return Err(invalid(CONTRACT, "missing CreatedAt (and no envelope ts)")),
    };
    let os = raw.metadata.and_then(|m| m.os).and_then(|os| {
        let parts: Vec<_> = [os.family, os.name]
            .into_iter()
            .flatten()
            .filter(|p| !p.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    });

    let mut packages = Vec::new();
    let mut findings = Vec::new();
    let results = raw.results.unwrap_or_default();
    let first_target = results.first().and_then(|r| r.target.clone());
    for (r, result) in results.into_iter().enumerate() {
        let at = format!("Results[{r}]");
        let target = result
            .target
            .ok_or_else(|| invalid(CONTRACT, format!("{at}: missing Target")))?;
        let ecosystem = non_empty(result.result_type).unwrap_or_else(|| "unknown".to_owned());
        for (p, package) in result.packages.unwrap_or_default().into_iter().enumerate() {
            let at = format!("{at}.Packages[{p}]");
            packages.push(Package {
                name: required(&at, "Name", package.name)?,
                version: required(&at, "Version", package.version)?,
                ecosystem: ecosystem.clone(),
                path: non_empty(package.file_path).or(non_empty(package.pkg_path)),
                installed_files: absolute_paths(package.installed_files.unwrap_or_default()),
            });
        }
        for (v, vulnerability) in result
            .vulnerabilities
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let at = format!("{at}.Vulnerabilities[{v}]");
            findings.push(Finding {
                vulnerability_id: required(&at, "VulnerabilityID", vulnerability.vulnerability_id)?,
                package: Package {
                    name: required(&at, "PkgName", vulnerability.pkg_name)?,
                    version: vulnerability.installed_version.unwrap_or_default(),
                    ecosystem: ecosystem.clone(),
                    path: non_empty(vulnerability.pkg_path),
                    installed_files: Vec::new(),
                },
                fixed_version: non_empty(vulnerability.fixed_version),
                severity: severity(&at, vulnerability.severity.as_deref())?,
                title: non_empty(vulnerability.title),
                description: non_empty(vulnerability.description),
                primary_url: non_empty(vulnerability.primary_url),
                target: target.clone(),
            });
        }
    }

    let artifact_name = non_empty(raw.artifact_name)
        .or_else(|| artifact_from_target(first_target.as_deref(), os.as_deref()));
    let (host, artifact_name, artifact_type, agent_id) = match overrides {
        Some(o) => {
            let artifact_name = artifact_name.unwrap_or_else(|| o.header.host.clone());
            let artifact_type = o.target_kind.or(non_empty(raw.artifact_type));
            (
                o.header.host,
                artifact_name,
                artifact_type,
                o.header.agent_id,
            )
        }
        None => {
            let artifact_name = artifact_name.ok_or_else(|| {
                invalid(
                    CONTRACT,
                    "no ArtifactName to name the host: send it in our envelope",
                )
            })?;
            (
                artifact_name.clone(),
                artifact_name,
                non_empty(raw.artifact_type),
                None,
            )
        }
    };

    Ok(ScanReport {
        scanned_at,
        host,
        artifact_name,
        artifact_type: artifact_type.unwrap_or_else(|| "unknown".to_owned()),
        os,
        packages,
        findings,
        agent_id,
    })
}

/// A required field of the report element `at`.
fn required(at: &str, field: &str, value: Option<String>) -> Result<String, DecodeError> {
    non_empty(value).ok_or_else(|| invalid(CONTRACT, format!("{at}: missing {field}")))
}

/// Installed files as absolute paths: Trivy writes dpkg and rpm files absolute and
/// apk files relative to the root (`usr/bin/curl`). Empty entries are dropped.
fn absolute_paths(files: Vec<String>) -> Vec<String> {
    files
        .into_iter()
        .filter(|f| !f.trim().is_empty())
        .map(|f| {
            if f.starts_with('/') {
                f
            } else {
                format!("/{f}")
            }
        })
        .collect()
}

/// Trivy's severity names; a missing one is `UNKNOWN`.
fn severity(at: &str, name: Option<&str>) -> Result<Severity, DecodeError> {
    match name.map(str::to_ascii_uppercase).as_deref() {
        Some("CRITICAL") => Ok(Severity::Critical),
        Some("HIGH") => Ok(Severity::High),
        Some("MEDIUM") => Ok(Severity::Medium),
        Some("LOW") => Ok(Severity::Low),
        Some("UNKNOWN") | None => Ok(Severity::Info),
        Some(_) => Err(invalid(
            CONTRACT,
            format!("{at}: unknown Severity {:?}", name.unwrap_or("")),
        )),
    }
}

/// The artifact of a report without `ArtifactName` (older Trivy writes `""`), from
/// the OS result's target, which Trivy writes as `<artifact> (<family> <name>)`.
fn artifact_from_target(target: Option<&str>, os: Option<&str>) -> Option<String> {
    let suffix = format!(" ({})", os?);
    let artifact = target?.strip_suffix(&suffix)?;
    (!artifact.is_empty()).then(|| artifact.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decode::{decode as decode_subject, test_support::*};

    const SUBJECT: &str = "scan.trivy.results";

    fn report(payload: &str) -> ScanReport {
        match decode_subject(SUBJECT, payload.as_bytes()) {
            Ok(Decoded::Scan(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn error(payload: &str) -> String {
        decode_subject(SUBJECT, payload.as_bytes())
            .unwrap_err()
            .to_string()
    }

    fn count(r: &ScanReport, s: Severity) -> usize {
        r.findings.iter().filter(|f| f.severity == s).count()
    }

    #[test]
    fn alpine_image() {
        let r = report(TRIVY_ALPINE);
        assert_eq!(r.findings.len(), 6);
        assert_eq!(
            (count(&r, Severity::Critical), count(&r, Severity::Medium)),
            (2, 4)
        );
        assert!(r.packages.is_empty());
        assert_eq!(r.os.as_deref(), Some("alpine 3.9.4"));
        assert_eq!(r.artifact_name, "testdata/fixtures/images/alpine-39.tar.gz");
        assert_eq!(
            r.host, r.artifact_name,
            "a bare report's host is its artifact"
        );
        assert_eq!(r.artifact_type, "container_image");
        assert_eq!(
            r.scanned_at.timestamp_nanos_opt(),
            Some(1_629_894_030_000_000_005)
        );
        let f = &r.findings[0];
        assert_eq!(f.vulnerability_id, "CVE-2019-1549");
        assert_eq!(
            f.package,
            Package {
                name: "libcrypto1.1".into(),
                version: "1.1.1b-r1".into(),
                ecosystem: "alpine".into(),
                path: None,
                installed_files: vec![],
            }
        );
        assert_eq!(f.fixed_version.as_deref(), Some("1.1.1d-r0"));
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(
            f.title.as_deref(),
            Some("openssl: information disclosure in fork()")
        );
        assert!(f
            .description
            .as_deref()
            .unwrap()
            .starts_with("OpenSSL 1.1.1 introduced"));
        assert_eq!(
            f.primary_url.as_deref(),
            Some("https://avd.aquasec.com/nvd/cve-2019-1549")
        );
        assert_eq!(
            f.target,
            "testdata/fixtures/images/alpine-39.tar.gz (alpine 3.9.4)"
        );
    }

    #[test]
    fn debian_image() {
        let r = report(TRIVY_DEBIAN);
        assert_eq!(r.findings.len(), 5);
        assert_eq!(
            (count(&r, Severity::Medium), count(&r, Severity::Low)),
            (4, 1)
        );
        assert_eq!(r.os.as_deref(), Some("debian 9.9"));
        let bash = &r.findings[0];
        assert_eq!(
            (bash.package.name.as_str(), bash.fixed_version.clone()),
            ("bash", None)
        );
        assert!(r.findings.iter().all(|f| f.package.ecosystem == "debian"));
    }

    #[test]
    fn real_user_report_without_artifact_name() {
        let r = report(TRIVY_DEFECTDOJO);
        assert_eq!(r.findings.len(), 13);
        assert_eq!(
            (count(&r, Severity::Low), count(&r, Severity::Medium)),
            (12, 1)
        );
        assert_eq!(r.os.as_deref(), Some("debian 10.13"));
        assert_eq!(
            r.artifact_name, "noppaknopsta/example-app:main-159",
            "taken from the OS target"
        );
        assert_eq!(r.host, "noppaknopsta/example-app:main-159");
        assert_eq!(
            r.scanned_at.to_rfc3339(),
            "2024-01-15T08:58:29.827537440+00:00"
        );
    }

    #[test]
    fn npm_repository_with_package_list() {
        let r = report(TRIVY_NPM);
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.packages.len(), 12);
        assert_eq!(r.os, None);
        assert_eq!(r.artifact_type, "repository");
        assert!(r.packages.iter().all(|p| p.ecosystem == "npm"));
        let jquery = r.packages.iter().find(|p| p.name == "jquery").unwrap();
        assert_eq!(
            jquery, &r.findings[0].package,
            "a finding names a listed package"
        );
        assert_eq!(r.findings[0].target, "package-lock.json");
        assert_eq!(r.findings[0].severity, Severity::Medium);
    }

    #[test]
    fn envelope_overrides_time_host_and_kind() {
        let wrapped = format!(
            r#"{{"v":1,"ts":"2026-11-24T14:00:00Z","host":"node-01","agent_id":"agent-1","target_kind":"filesystem","report":{TRIVY_ALPINE}}}"#
        );
        let r = report(&wrapped);
        let bare = report(TRIVY_ALPINE);
        assert_eq!(r.host, "node-01");
        assert_eq!(r.artifact_type, "filesystem");
        assert_eq!(r.scanned_at.to_rfc3339(), "2026-11-24T14:00:00+00:00");
        assert_eq!(r.artifact_name, bare.artifact_name);
        assert_eq!(
            (r.findings, r.packages, r.os),
            (bare.findings, bare.packages, bare.os)
        );

        let no_kind =
            format!(r#"{{"ts":"2026-11-24T14:00:00Z","host":"node-01","report":{TRIVY_NPM}}}"#);
        assert_eq!(
            report(&no_kind).artifact_type,
            "repository",
            "no target_kind: ArtifactType"
        );
    }

    #[test]
    fn wire_example_decodes() {
        let r = report(wire_example(SUBJECT));
        assert_eq!(r.host, "node-01");
        assert_eq!(r.artifact_name, "/");
        assert_eq!(
            r.artifact_type, "host",
            "target_kind wins over ArtifactType"
        );
        assert_eq!(r.os.as_deref(), Some("ubuntu 22.04"));
        assert_eq!(r.scanned_at.to_rfc3339(), "2026-11-24T14:00:00+00:00");
        assert_eq!(r.packages.len(), 2);
        assert_eq!(r.findings.len(), 1);
        let f = &r.findings[0];
        assert_eq!(f.vulnerability_id, "CVE-2024-6387");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.package, r.packages[1]);
        assert_eq!(f.package.ecosystem, "ubuntu");
        assert_eq!(f.fixed_version.as_deref(), Some("1:8.9p1-3ubuntu0.10"));
    }

    #[test]
    fn installed_files_become_absolute_paths() {
        // Trivy's apk analyser lists files relative to the root; dpkg and rpm absolute.
        let r = report(
            r#"{"SchemaVersion":2,"CreatedAt":"2026-11-24T14:00:00Z","ArtifactName":"x","Results":[
                {"Target":"x (alpine 3.20.3)","Type":"alpine","Packages":[
                    {"Name":"curl","Version":"8.9.1-r1","InstalledFiles":["usr/bin/curl",""]},
                    {"Name":"busybox","Version":"1.36.1-r29"}]},
                {"Target":"x (debian 12.7)","Type":"debian","Packages":[
                    {"Name":"nginx-core","Version":"1.22.1-9","InstalledFiles":["/usr/sbin/nginx"]}]}]}"#,
        );
        let files: Vec<_> = r
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.installed_files.clone()))
            .collect();
        assert_eq!(
            files,
            [
                ("curl", vec!["/usr/bin/curl".to_owned()]),
                ("busybox", vec![]),
                ("nginx-core", vec!["/usr/sbin/nginx".to_owned()]),
            ]
        );
    }

    #[test]
    fn results_may_lack_both_arrays() {
        let r = report(
            r#"{"SchemaVersion":2,"CreatedAt":"2026-11-24T14:00:00Z","ArtifactName":"x","Results":[{"Target":"Dockerfile","Class":"config"}],"Extra":{"a":1}}"#,
        );
        assert!(r.findings.is_empty() && r.packages.is_empty());
        assert_eq!(r.artifact_type, "unknown");
        let r =
            report(r#"{"SchemaVersion":2,"CreatedAt":"2026-11-24T14:00:00Z","ArtifactName":"x"}"#);
        assert!(r.findings.is_empty());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases = [
            (r#"{"SchemaVersion":1,"CreatedAt":"2026-11-24T14:00:00Z","ArtifactName":"x"}"#, "invalid trivy report: unsupported SchemaVersion 1 (this decoder reads 2)"),
            (r#"{"CreatedAt":"2026-11-24T14:00:00Z","ArtifactName":"x"}"#, "invalid trivy report: missing SchemaVersion"),
            (r#"{"SchemaVersion":2,"ArtifactName":"x"}"#, "invalid trivy report: missing CreatedAt (and no envelope ts)"),
            (r#"{"SchemaVersion":2,"CreatedAt":"2026-11-24T14:00:00Z"}"#, "invalid trivy report: no ArtifactName to name the host: send it in our envelope"),
            (r#"{"SchemaVersion":2,"CreatedAt":"2026-11-24T14:00:00Z","ArtifactName":"x","Results":[{"Type":"npm"}]}"#, "invalid trivy report: Results[0]: missing Target"),
            (r#"{"SchemaVersion":2,"CreatedAt":"2026-11-24T14:00:00Z","ArtifactName":"x","Results":[{"Target":"t","Vulnerabilities":[{"PkgName":"p"}]}]}"#, "invalid trivy report: Results[0].Vulnerabilities[0]: missing VulnerabilityID"),
            (r#"{"SchemaVersion":2,"CreatedAt":"2026-11-24T14:00:00Z","ArtifactName":"x","Results":[{"Target":"t","Vulnerabilities":[{"VulnerabilityID":"CVE-1","PkgName":"p","Severity":"DIRE"}]}]}"#, "invalid trivy report: Results[0].Vulnerabilities[0]: unknown Severity \"DIRE\""),
            (r#"{"SchemaVersion":2,"CreatedAt":"2026-11-24T14:00:00Z","ArtifactName":"x","Results":[{"Target":"t","Packages":[{"Name":"p"}]}]}"#, "invalid trivy report: Results[0].Packages[0]: missing Version"),
            (r#"{"ts":"2026-11-24T14:00:00Z","host":"n","target_kind":"vm","report":{"SchemaVersion":2}}"#, "invalid trivy report: target_kind \"vm\" is not one of host, container_image, filesystem, repository"),
            (r#"{"v":2,"ts":"2026-11-24T14:00:00Z","host":"n","report":{"SchemaVersion":2}}"#, "invalid trivy report: unsupported envelope version 2 (this decoder reads 1)"),
            (r#"{"ts":"2026-11-24T14:00:00Z","report":{"SchemaVersion":2}}"#, "invalid trivy report: missing host"),
        ];
        for (payload, want) in cases {
            assert_eq!(error(payload), want, "{payload}");
        }
        let err = error(r#"{"ts":"2026-11-24T14:00:00Z","host":"n","report":7}"#);
        assert!(err.starts_with("invalid JSON for trivy report: invalid type: integer `7`, expected a Trivy report object"), "{err}");
        assert!(error("not json").starts_with("invalid JSON for trivy report: expected ident"));
    }
}
