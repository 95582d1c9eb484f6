//! `kubectl kaito models describe org/model[@revision]`: a Hugging Face id resolved through the
//! hub (`HF_ENDPOINT`) the way the admission webhook resolves it — the same calls
//! (`api/models/{id}/revision/{rev}?blobs=true`, then `config.json` at the commit) and the same
//! pure code ([`kaito_presets::hub_model`]), so the facts, the preset and its sizing are those a
//! Workspace naming the id gets.

use std::time::Duration;

use kaito_presets::hub_model::{
    HubId, MAX_CONFIG_BYTES, MAX_INFO_BYTES, ModelFacts, ResolveError, facts_from_config,
    parse_revision_info, resolve_path, revision_info_path,
};

/// Default deadline of one resolution.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves `id` on the hub at `endpoint` within `timeout`, with `token` when given.
pub async fn resolve(
    endpoint: &str,
    id: &HubId,
    token: Option<&str>,
    timeout: Duration,
) -> Result<ModelFacts, ResolveError> {
    let base = endpoint.trim_end_matches('/').to_string() + "/";
    let protocol = |problem: String| ResolveError::Protocol {
        repo: id.repo.clone(),
        problem,
    };
    let base =
        reqwest::Url::parse(&base).map_err(|e| protocol(format!("HF_ENDPOINT {base}: {e}")))?;
    let client = reqwest::Client::builder()
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("kubectl-kaito/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| protocol(format!("HTTP client: {e}")))?;
    let revision = id.revision_or_main();
    let get = |path: String, limit: usize| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let url = base
                .join(&path)
                .map_err(|e| protocol(format!("{path}: {e}")))?;
            let unreachable = |e: reqwest::Error| ResolveError::Unreachable {
                endpoint: base.to_string(),
                repo: id.repo.clone(),
                problem: e.to_string(),
            };
            let mut req = client.get(url.clone());
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let mut resp = req.send().await.map_err(unreachable)?;
            let status = resp.status().as_u16();
            if status != 200 {
                return Err(ResolveError::from_status(
                    status,
                    &id.repo,
                    revision,
                    url.as_str(),
                    token.is_some(),
                ));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
                if body.len() + chunk.len() > limit {
                    return Err(protocol(format!("{url} answered more than {limit} bytes")));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        }
    };
    let work = async {
        let info = get(revision_info_path(&id.repo, revision), MAX_INFO_BYTES).await?;
        let info = parse_revision_info(&id.repo, &info)?;
        let config = get(
            resolve_path(&id.repo, &info.sha, "config.json"),
            MAX_CONFIG_BYTES,
        )
        .await?;
        Ok(facts_from_config(
            &id.repo,
            &info.sha,
            &String::from_utf8_lossy(&config),
            &info.files,
            info.gated || token.is_some(),
        )?)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ResolveError::Timeout {
            endpoint: base.to_string(),
            repo: id.repo.clone(),
            secs: timeout.as_secs().max(1),
        })?
}
