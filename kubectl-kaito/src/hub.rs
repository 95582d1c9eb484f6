//! `kubectl kaito models describe org/model[@revision]`: a Hugging Face id resolved through the
//! hub (`HF_ENDPOINT`) the way the admission webhook resolves it — the same client
//! ([`kaito_hub_client`]: `api/models/{id}/revision/{rev}?blobs=true`, then `config.json` at
//! the commit) and the same pure code ([`kaito_presets::hub_model`]), so the facts, the preset and its sizing are those a
//! Workspace naming the id gets.

use std::time::Duration;

use kaito_hub_client::HubClient;
use kaito_presets::hub_model::{HubId, ModelFacts, ResolveError};

/// Default deadline of one resolution.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves `id` on the hub at `endpoint` within `timeout`, with `token` when given.
pub async fn resolve(
    endpoint: &str,
    id: &HubId,
    token: Option<&str>,
    timeout: Duration,
) -> Result<ModelFacts, ResolveError> {
    let client = HubClient::new(
        endpoint,
        timeout,
        concat!("kubectl-kaito/", env!("CARGO_PKG_VERSION")),
    )
    .map_err(|problem| ResolveError::Protocol {
        repo: id.repo.clone(),
        problem,
    })?;
    tokio::time::timeout(timeout, client.facts(id, token))
        .await
        .map_err(|_| ResolveError::Timeout {
            endpoint: client.endpoint().to_string(),
            repo: id.repo.clone(),
            secs: timeout.as_secs().max(1),
        })?
}
