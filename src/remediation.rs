//! The remediation hook: on each new P0 incident, launch an AWX (Ansible Tower)
//! job template with the host in `extra_vars`, and record the job id on the
//! incident.
//!
//! AWX's contract: `POST /api/v2/job_templates/{id}/launch/` with a bearer token
//! and a JSON body `{"extra_vars": {…}}`; the answer (201) carries the new job's
//! id as `job`. The template must prompt for extra variables on launch.
//!
//! AWX is reached over `https://` (verified against the system's roots, plus
//! `--awx-ca-file` for a private CA) or plain `http://` on a trusted network.

use clap::Args;
use palisade_core::correlation::{record_remediation, P0};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::client::ApiClient;

/// Where and how to launch remediation.
#[derive(Debug, Clone, Args)]
pub struct RemediationSettings {
    /// AWX base address, e.g. `https://awx.internal:443`; unset: no remediation.
    #[arg(long, env = "PALISADE_AWX_URL")]
    pub awx_url: Option<String>,

    /// The job template launched for each new P0 incident.
    #[arg(long, env = "PALISADE_AWX_JOB_TEMPLATE")]
    pub awx_job_template: Option<u64>,

    /// AWX OAuth2 token (sent as `Authorization: Bearer …`).
    #[arg(long, env = "PALISADE_AWX_TOKEN", hide_env_values = true)]
    pub awx_token: Option<String>,

    /// PEM file of extra CA certificates to trust for an `https://` AWX address.
    #[arg(long, env = "PALISADE_AWX_CA_FILE")]
    pub awx_ca_file: Option<std::path::PathBuf>,
}

/// A configured AWX launcher.
#[derive(Debug, Clone)]
pub struct AwxLauncher {
    client: ApiClient,
    template: u64,
}

impl RemediationSettings {
    /// The launcher, when both the address and the template are set.
    pub fn launcher(&self) -> anyhow::Result<Option<AwxLauncher>> {
        match (&self.awx_url, self.awx_job_template) {
            (None, None) => Ok(None),
            (Some(url), Some(template)) => Ok(Some(AwxLauncher {
                client: ApiClient::with_ca_file(
                    url,
                    self.awx_token.clone(),
                    self.awx_ca_file.as_deref(),
                )?,
                template,
            })),
            _ => anyhow::bail!(
                "remediation needs both --awx-url and --awx-job-template (or neither)"
            ),
        }
    }
}

impl AwxLauncher {
    /// Launches the template for `incident`; the new job's id.
    pub async fn launch(&self, incident: &P0) -> Result<i64, String> {
        let body = json!({
            "extra_vars": {
                "palisade_host": incident.host,
                "palisade_incident": incident.id,
                "palisade_cve": incident.vulnerability_id,
                "palisade_package": incident.package,
                "palisade_version": incident.version,
            }
        });
        let path = format!("/api/v2/job_templates/{}/launch/", self.template);
        let answer = self
            .client
            .post_json(&path, &body)
            .await
            .map_err(|e| e.to_string())?;
        answer["job"]
            .as_i64()
            .or_else(|| answer["id"].as_i64())
            .ok_or_else(|| format!("AWX answered without a job id: {answer}"))
    }

    /// Launches a job for each incident received, recording each outcome on its
    /// incident, until the sender is dropped.
    pub async fn run(self, pool: sqlx::PgPool, mut incidents: UnboundedReceiver<P0>) {
        while let Some(incident) = incidents.recv().await {
            let outcome = self.launch(&incident).await;
            match &outcome {
                Ok(job) => tracing::info!(incident = %incident.id, host = %incident.host, job,
                    "remediation job launched"),
                Err(e) => {
                    tracing::error!(incident = %incident.id, host = %incident.host, error = %e,
                    "remediation launch failed")
                }
            }
            if let Err(e) = record_remediation(&pool, incident.id, outcome).await {
                tracing::error!(incident = %incident.id, error = %e, "recording the remediation failed");
            }
        }
    }
}
