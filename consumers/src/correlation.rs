//! The correlation stage after the processes and vulns projections write a batch:
//! the running-vs-dormant pass for the batch's hosts
//! ([`palisade_core::correlation::correlate`]), each incident that became P0
//! published on `incidents.p0` and handed to remediation.
//!
//! ```text
//! processes / vulns batch ──► write ──► correlate(hosts) ──► incidents (PG)
//!                                              └─► new P0 ──► incidents.p0 (JetStream)
//!                                                        └──► remediation (AWX), if configured
//! ```
//!
//! A pass that fails (PostgreSQL away) is not retried here: the periodic full pass
//! ([`Correlator::full_pass`], run by the maintenance loop) catches every host up.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use async_nats::jetstream;
use async_nats::HeaderMap;
use chrono::{SubsecRound, Utc};
use palisade_core::correlation::{correlate, CorrelationReport, P0};
use palisade_core::model::{Decoded, ProcessDelta};
use palisade_core::store::{Batch, Store};
use tokio::sync::mpsc::UnboundedSender;

use crate::Namespace;

/// The subject new P0 incidents are published on.
pub const P0_SUBJECT: &str = "incidents.p0";

/// Runs correlation passes and announces new P0 incidents.
#[derive(Debug)]
pub struct Correlator {
    js: jetstream::Context,
    store: Arc<Store>,
    namespace: Namespace,
    remediation: OnceLock<UnboundedSender<P0>>,
}

impl Correlator {
    /// A correlator writing through `store` and publishing with `js` in `namespace`.
    pub fn new(js: jetstream::Context, store: Arc<Store>, namespace: Namespace) -> Self {
        Correlator {
            js,
            store,
            namespace,
            remediation: OnceLock::new(),
        }
    }

    /// Hands every new P0 to `remediation` from now on (once; later calls are
    /// ignored).
    pub fn set_remediation(&self, remediation: UnboundedSender<P0>) {
        let _ = self.remediation.set(remediation);
    }

    /// The pass for `hosts` (those a written batch touched: see [`hosts_of`]);
    /// nothing when there are none.
    pub async fn after_write(&self, hosts: &[String]) {
        if hosts.is_empty() {
            return;
        }
        match correlate(self.store.pool(), Some(hosts), Utc::now().trunc_subsecs(6)).await {
            Ok(report) => self.announce(&report).await,
            Err(e) => tracing::warn!(error = %e, hosts = hosts.len(),
                "correlation pass failed; the next full pass will catch up"),
        }
    }

    /// A pass over every host.
    pub async fn full_pass(&self) -> Result<CorrelationReport, sqlx::Error> {
        let report = correlate(self.store.pool(), None, Utc::now().trunc_subsecs(6)).await?;
        self.announce(&report).await;
        Ok(report)
    }

    async fn announce(&self, report: &CorrelationReport) {
        if report.opened > 0 || report.resolved > 0 || !report.escalated.is_empty() {
            tracing::info!(
                findings = report.findings,
                opened = report.opened,
                p0 = report.escalated.len(),
                downgraded = report.downgraded,
                resolved = report.resolved,
                "incidents correlated"
            );
        }
        for p0 in &report.escalated {
            tracing::warn!(host = %p0.host, cve = %p0.vulnerability_id, package = %p0.package,
                "P0: a vulnerable package is running");
            if let Err(e) = self.publish(p0).await {
                tracing::error!(error = %e, incident = %p0.id, "publishing a P0 incident failed");
            }
            if let Some(remediation) = self.remediation.get() {
                let _ = remediation.send(p0.clone());
            }
        }
    }

    /// Publishes `p0` on `incidents.p0`, stored once per escalation.
    async fn publish(&self, p0: &P0) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        let id = format!("p0/{}/{}", p0.id, p0.escalated_at.timestamp_micros());
        headers.insert("Nats-Msg-Id", id.as_str());
        let payload = serde_json::to_vec(p0).map_err(|e| e.to_string())?;
        self.js
            .publish_with_headers(self.namespace.subject(P0_SUBJECT), headers, payload.into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The hosts whose processes or scans `batch` carries, in order.
pub fn hosts_of(batch: &Batch) -> Vec<String> {
    let mut hosts = BTreeSet::new();
    for (_, decoded) in &batch.records {
        match decoded {
            Decoded::Processes(deltas) => {
                hosts.extend(deltas.iter().map(|d| match d {
                    ProcessDelta::Started(start) => start.host.clone(),
                    ProcessDelta::Stopped { host, .. } => host.clone(),
                }));
            }
            Decoded::Scan(report) => {
                hosts.insert(report.host.clone());
            }
            _ => {}
        }
    }
    hosts.into_iter().collect()
}
