//! The part of the Hugging Face hub protocol that resolves a model id: the revision info
//! (`api/models/{repo}/revision/{rev}?blobs=true`: the commit, the files and their sizes,
//! whether the repository is gated), then `config.json` at that commit, each answer read up to
//! a size limit. What the answers mean is pure code in [`kaito_presets::hub_model`]; deadlines,
//! caching and where a token comes from are the caller's (the admission webhook and
//! `kubectl kaito models describe`).

use kaito_presets::hub_model::{
    HubId, MAX_CONFIG_BYTES, MAX_INFO_BYTES, ModelFacts, ResolveError, facts_from_config,
    parse_revision_info, resolve_path, revision_info_path,
};
use reqwest::Url;

/// A client of the hub at one endpoint (`HF_ENDPOINT`).
#[derive(Clone, Debug)]
pub struct HubClient {
    client: reqwest::Client,
    endpoint: Url,
}

impl HubClient {
    /// A client of the hub at `endpoint` (an http(s) URL) that gives up connecting after
    /// `connect_timeout` and names itself `user_agent`.
    pub fn new(
        endpoint: &str,
        connect_timeout: std::time::Duration,
        user_agent: &str,
    ) -> Result<Self, String> {
        let base = endpoint.trim_end_matches('/').to_string() + "/";
        let endpoint = Url::parse(&base).map_err(|e| format!("HF_ENDPOINT {base:?}: {e}"))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(format!("HF_ENDPOINT {base:?} must be an http(s) URL"));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(user_agent)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self { client, endpoint })
    }

    /// The endpoint, ending in `/`.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// What the hub says about `id` (at its revision, `main` when none), asking with `token`
    /// when given. No deadline of its own: the caller bounds it.
    pub async fn facts(&self, id: &HubId, token: Option<&str>) -> Result<ModelFacts, ResolveError> {
        let revision = id.revision_or_main();
        let info_path = revision_info_path(&id.repo, revision);
        let info = self
            .get(&id.repo, revision, &info_path, token, MAX_INFO_BYTES)
            .await?;
        let info = parse_revision_info(&id.repo, &info)?;
        let config_path = resolve_path(&id.repo, &info.sha, "config.json");
        let config = self
            .get(&id.repo, revision, &config_path, token, MAX_CONFIG_BYTES)
            .await?;
        Ok(facts_from_config(
            &id.repo,
            &info.sha,
            &String::from_utf8_lossy(&config),
            &info.files,
            info.gated || token.is_some(),
        )?)
    }

    /// GETs `path` (relative to the endpoint), reading at most `limit` bytes of the answer.
    async fn get(
        &self,
        repo: &str,
        revision: &str,
        path: &str,
        token: Option<&str>,
        limit: usize,
    ) -> Result<Vec<u8>, ResolveError> {
        let url = self
            .endpoint
            .join(path)
            .map_err(|e| ResolveError::Protocol {
                repo: repo.to_string(),
                problem: format!("{path}: {e}"),
            })?;
        let unreachable = |e: reqwest::Error| ResolveError::Unreachable {
            endpoint: self.endpoint.to_string(),
            repo: repo.to_string(),
            problem: e.to_string(),
        };
        let mut req = self.client.get(url.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(ResolveError::from_status(
                status,
                repo,
                revision,
                url.as_str(),
                token.is_some(),
            ));
        }
        let too_large = || ResolveError::Protocol {
            repo: repo.to_string(),
            problem: format!("{url} answered more than {limit} bytes"),
        };
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_must_be_http() {
        let d = std::time::Duration::from_secs(1);
        assert!(HubClient::new("ftp://hub", d, "t").is_err());
        let c = HubClient::new("http://127.0.0.1:1/base", d, "t").expect("http");
        assert_eq!(c.endpoint(), "http://127.0.0.1:1/base/");
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_not_read_to_the_end() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A hub that answers every request with 200 and an endless JSON body (no length).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                        .await;
                    let chunk = format!("{:x}\r\n{}\r\n", 65536, " ".repeat(65536));
                    while s.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        let c = HubClient::new(
            &format!("http://127.0.0.1:{port}"),
            std::time::Duration::from_secs(5),
            "test",
        )
        .expect("client");
        let id = HubId::parse("org/model").expect("id");
        let err = c.facts(&id, None).await.expect_err("too large");
        assert!(err.to_string().contains("more than"), "{err}");
    }
}
