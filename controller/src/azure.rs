//! Azure Resource Manager wiring for the aks provisioner: the HTTP transport handed to
//! `azure_core` 0.10 (the workspace's reqwest with rustls, honouring `Retry-After` on 429), the
//! credentials (workload identity, managed identity through `azure_identity`, or a static
//! bearer token for a local test endpoint), and the generated `azure_mgmt_containerservice`
//! client.
//!
//! `azure_core` 0.10 would bring reqwest 0.11 (and OpenSSL with its default TLS) if its
//! `enable_reqwest*` features were on; they are off, and [`Transport`] implements its
//! `HttpClient` trait instead, so the controller has one HTTP/TLS stack.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::auth::{AccessToken, TokenCredential, TokenResponse};
use azure_core::error::{Error as AzError, ErrorKind};
use azure_core::headers::{HeaderName, HeaderValue, Headers};
use azure_core::{Body, HttpClient, Request, Response, StatusCode};
use futures::TryStreamExt;
use time::OffsetDateTime;

/// The public-cloud ARM endpoint.
pub const PUBLIC_ENDPOINT: &str = "https://management.azure.com";

/// Where the controller's agent pools live and how it authenticates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AzureSettings {
    /// Subscription of the cluster.
    pub subscription_id: String,
    /// Resource group of the cluster.
    pub resource_group: String,
    /// Name of the AKS cluster.
    pub cluster_name: String,
    /// ARM endpoint (default [`PUBLIC_ENDPOINT`]).
    pub endpoint: Option<String>,
    /// A static bearer token (local test endpoints only); none: workload identity when
    /// `AZURE_FEDERATED_TOKEN_FILE` is set, managed identity (IMDS) otherwise.
    pub static_token: Option<String>,
    /// Extra root certificate (PEM) trusted for the endpoint, e.g. a local test endpoint's CA.
    pub ca_pem: Option<String>,
    /// How often orphaned pools (tagged with a workspace that no longer exists) are looked for.
    pub orphan_interval: Duration,
}

/// Building the Azure client failed.
#[derive(Debug, thiserror::Error)]
pub enum AzureSetupError {
    /// A required setting is missing.
    #[error("aks provisioner: set {0}")]
    Missing(&'static str),
    /// The CA file is not PEM.
    #[error("aks provisioner: the CA certificate is not PEM: {0}")]
    BadCa(reqwest::Error),
    /// reqwest could not build a client.
    #[error("aks provisioner: HTTP client: {0}")]
    Http(reqwest::Error),
}

/// `azure_core`'s `HttpClient` over the workspace's reqwest (rustls), and the only place that
/// retries: a 429 with a `Retry-After` of at most [`Transport::MAX_RETRY_AFTER`] is waited out
/// (`azure_core` 0.10's policy ignores that header), 5xx, 408 and connection errors are retried
/// with exponential backoff, up to [`Transport::MAX_RETRIES`] times.
#[derive(Clone, Debug)]
pub struct Transport {
    client: reqwest::Client,
}

impl Transport {
    /// The longest `Retry-After` waited out inside one call.
    pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
    /// Retries of one request (throttling, 5xx, 408, connection errors) after the first try.
    pub const MAX_RETRIES: u32 = 3;
    const FIRST_BACKOFF: Duration = Duration::from_millis(200);
    const MAX_BACKOFF: Duration = Duration::from_secs(2);

    /// The wait before the next retry; doubles `backoff` up to [`Self::MAX_BACKOFF`].
    fn next_backoff(backoff: &mut Duration) -> Duration {
        let wait = *backoff;
        *backoff = (wait * 2).min(Self::MAX_BACKOFF);
        wait
    }

    /// A transport trusting the system roots plus `ca_pem`.
    pub fn new(ca_pem: Option<&str>) -> Result<Self, AzureSetupError> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        if let Some(pem) = ca_pem {
            let cert =
                reqwest::Certificate::from_pem(pem.as_bytes()).map_err(AzureSetupError::BadCa)?;
            b = b.add_root_certificate(cert);
        }
        Ok(Self {
            client: b.build().map_err(AzureSetupError::Http)?,
        })
    }

    async fn once(&self, request: &Request) -> azure_core::Result<reqwest::Response> {
        let method = reqwest::Method::from_bytes(request.method().to_string().as_bytes())
            .map_err(|e| AzError::full(ErrorKind::Other, e, "unsupported HTTP method"))?;
        let mut req = self.client.request(method, request.url().as_str());
        for (name, value) in request.headers().iter() {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = match request.body() {
            Body::Bytes(bytes) => req.body(bytes.clone()),
            Body::SeekableStream(_) => {
                return Err(AzError::message(
                    ErrorKind::Other,
                    "streamed request bodies are not supported by this transport",
                ));
            }
        };
        req.send()
            .await
            .map_err(|e| AzError::full(ErrorKind::Io, e, "ARM request failed"))
    }
}

/// Seconds of a `Retry-After` header (delta-seconds form).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[async_trait]
impl HttpClient for Transport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<Response> {
        // Every retry lives here, on tokio's timer. azure_core 0.10's retry policy sleeps with a
        // thread whose wake can come before the future sees the thread finished, after which
        // nothing polls it again: a reconcile hung forever (seen in the component tests).
        let mut backoff = Self::FIRST_BACKOFF;
        let mut attempt = 0;
        let rsp = loop {
            let last = attempt >= Self::MAX_RETRIES;
            attempt += 1;
            let rsp = match self.once(request).await {
                Ok(rsp) => rsp,
                Err(e) if !last => {
                    tracing::debug!(error = %e, url = %request.url(), "ARM request failed; retrying");
                    tokio::time::sleep(Self::next_backoff(&mut backoff)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let code = rsp.status();
            if last {
                break rsp;
            }
            if code == reqwest::StatusCode::TOO_MANY_REQUESTS {
                match retry_after(rsp.headers()) {
                    Some(wait) if wait <= Self::MAX_RETRY_AFTER => {
                        tracing::debug!(?wait, url = %request.url(), "ARM throttled; waiting Retry-After");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Some(_) => break rsp,
                    None => {}
                }
            } else if !(code.is_server_error() || code == reqwest::StatusCode::REQUEST_TIMEOUT) {
                break rsp;
            }
            tracing::debug!(status = %code, url = %request.url(), "ARM answered a transient error; retrying");
            tokio::time::sleep(Self::next_backoff(&mut backoff)).await;
        };
        let status = StatusCode::try_from(rsp.status().as_u16()).map_err(|_| {
            AzError::message(ErrorKind::DataConversion, "invalid HTTP status from ARM")
        })?;
        let headers: std::collections::HashMap<HeaderName, HeaderValue> = rsp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from(k.as_str().to_owned()),
                    HeaderValue::from(v.to_str().ok()?.to_owned()),
                ))
            })
            .collect();
        let body = rsp
            .bytes_stream()
            .map_err(|e| AzError::full(ErrorKind::Io, e, "reading the ARM response"));
        Ok(Response::new(
            status,
            Headers::from(headers),
            Box::pin(body),
        ))
    }
}

/// A fixed bearer token: for a local ARM test endpoint, never for Azure.
#[derive(Debug)]
pub struct StaticToken(pub String);

#[async_trait]
impl TokenCredential for StaticToken {
    async fn get_token(&self, _resource: &str) -> azure_core::Result<TokenResponse> {
        Ok(TokenResponse::new(
            AccessToken::new(self.0.clone()),
            OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

/// Azure workload identity: exchanges the projected service-account token
/// (`AZURE_FEDERATED_TOKEN_FILE`) for an ARM token at `AZURE_AUTHORITY_HOST`
/// (`azure_identity` 0.10 has no credential for this flow).
#[derive(Debug)]
pub struct WorkloadIdentity {
    http: Arc<dyn HttpClient>,
    authority: String,
    tenant_id: String,
    client_id: String,
    token_file: String,
}

impl WorkloadIdentity {
    /// From the environment the workload-identity webhook injects; None if it is not there.
    pub fn from_env(http: Arc<dyn HttpClient>) -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Self {
            http,
            authority: var("AZURE_AUTHORITY_HOST")
                .unwrap_or_else(|| "https://login.microsoftonline.com/".into()),
            tenant_id: var("AZURE_TENANT_ID")?,
            client_id: var("AZURE_CLIENT_ID")?,
            token_file: var("AZURE_FEDERATED_TOKEN_FILE")?,
        })
    }
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: i64,
}

#[async_trait]
impl TokenCredential for WorkloadIdentity {
    async fn get_token(&self, resource: &str) -> azure_core::Result<TokenResponse> {
        let assertion = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| AzError::full(ErrorKind::Credential, e, "reading the federated token"))?;
        let scope = if resource.ends_with("/.default") {
            resource.to_owned()
        } else {
            format!("{}/.default", resource.trim_end_matches('/'))
        };
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority.trim_end_matches('/'),
            self.tenant_id
        );
        let url = azure_core::Url::parse(&url)
            .map_err(|e| AzError::full(ErrorKind::Credential, e, "authority URL"))?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.client_id)
            .append_pair("scope", &scope)
            .append_pair(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            )
            .append_pair("client_assertion", assertion.trim())
            .append_pair("grant_type", "client_credentials")
            .finish();
        let mut req = Request::new(url, azure_core::Method::Post);
        req.insert_header(
            azure_core::headers::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
        req.set_body(bytes::Bytes::from(form));
        let rsp = self.http.execute_request(&req).await?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await?;
        if !status.is_success() {
            return Err(AzError::message(
                ErrorKind::Credential,
                format!(
                    "workload identity token exchange failed ({status}): {}",
                    String::from_utf8_lossy(&body)
                ),
            ));
        }
        let t: TokenAnswer = serde_json::from_slice(&body)?;
        Ok(TokenResponse::new(
            AccessToken::new(t.access_token),
            OffsetDateTime::now_utc() + time::Duration::seconds(t.expires_in),
        ))
    }
}

/// The generated agent pools client plus what is needed to follow an operation's
/// `Azure-AsyncOperation` URL (the generated code fetches only the first response).
#[derive(Clone)]
pub struct Arm {
    /// The `azure_mgmt_containerservice` client (its agent-pools client is not `Clone`).
    pub client: azure_mgmt_containerservice::Client,
    /// The transport.
    pub http: Arc<dyn HttpClient>,
    /// The credential.
    pub credential: Arc<dyn TokenCredential>,
    /// The token scope.
    pub scope: String,
}

impl Arm {
    /// The agent pools operations.
    pub fn pools(&self) -> azure_mgmt_containerservice::agent_pools::Client {
        self.client.agent_pools_client()
    }

    /// GETs an `Azure-AsyncOperation` URL: (status, error code, error message).
    pub async fn operation(
        &self,
        url: &str,
    ) -> azure_core::Result<(String, Option<String>, Option<String>)> {
        let url = azure_core::Url::parse(url)
            .map_err(|e| AzError::full(ErrorKind::Other, e, "operation URL"))?;
        let mut req = Request::new(url, azure_core::Method::Get);
        let token = self.credential.get_token(&self.scope).await?;
        req.insert_header(
            azure_core::headers::AUTHORIZATION,
            format!("Bearer {}", token.token.secret()),
        );
        let rsp = self.http.execute_request(&req).await?;
        let body = rsp.into_body().collect().await?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        Ok((
            v["status"].as_str().unwrap_or("").to_owned(),
            v["error"]["code"].as_str().map(str::to_owned),
            v["error"]["message"].as_str().map(str::to_owned),
        ))
    }
}

impl AzureSettings {
    /// Settings for cluster `cluster` of resource group `rg` in subscription `sub` behind the
    /// local ARM endpoint `url`, trusting `ca_pem` and sending `token`, orphans looked for every
    /// minute: what `--azure-endpoint`, `--azure-ca-file` and `--azure-token-file` set up for
    /// the tests (the aks component tests against `kaito-fake-arm`).
    pub fn local_endpoint(url: &str, ca_pem: &str, token: &str) -> Self {
        Self {
            subscription_id: "sub".into(),
            resource_group: "rg".into(),
            cluster_name: "cluster".into(),
            endpoint: Some(url.into()),
            static_token: Some(token.into()),
            ca_pem: Some(ca_pem.into()),
            orphan_interval: Duration::from_secs(60),
        }
    }

    /// The settings the aks provisioner cannot work without: the cluster's subscription,
    /// resource group and name (the chart's `azure.subscriptionId`, `azure.resourceGroup`,
    /// `azure.clusterName`).
    pub fn check(&self) -> Result<(), AzureSetupError> {
        let required = [
            (
                &self.subscription_id,
                "--azure-subscription-id (AZURE_SUBSCRIPTION_ID)",
            ),
            (
                &self.resource_group,
                "--azure-resource-group (AZURE_RESOURCE_GROUP)",
            ),
            (
                &self.cluster_name,
                "--azure-cluster-name (AZURE_CLUSTER_NAME)",
            ),
        ];
        match required.iter().find(|(value, _)| value.trim().is_empty()) {
            Some((_, setting)) => Err(AzureSetupError::Missing(setting)),
            None => Ok(()),
        }
    }
}

/// The agent pools client for `settings`.
pub fn agent_pools_client(settings: &AzureSettings) -> Result<Arm, AzureSetupError> {
    settings.check()?;
    let http: Arc<dyn HttpClient> = Arc::new(Transport::new(settings.ca_pem.as_deref())?);
    let endpoint = settings
        .endpoint
        .clone()
        .unwrap_or_else(|| PUBLIC_ENDPOINT.to_owned());
    let credential: Arc<dyn TokenCredential> = match &settings.static_token {
        Some(t) => Arc::new(StaticToken(t.clone())),
        None => {
            let inner: Arc<dyn TokenCredential> = match WorkloadIdentity::from_env(http.clone()) {
                Some(w) => Arc::new(w),
                None => {
                    let mut imds = azure_identity::ImdsManagedIdentityCredential::new(http.clone());
                    if let Ok(id) = std::env::var("AZURE_CLIENT_ID") {
                        imds = imds.with_client_id(id);
                    }
                    Arc::new(imds)
                }
            };
            Arc::new(azure_identity::AutoRefreshingTokenCredential::new(inner))
        }
    };
    // The scope is the resource ("https://management.azure.com/"), as IMDS expects it; the
    // workload-identity credential turns it into "<resource>/.default".
    let scope = format!("{}/", PUBLIC_ENDPOINT);
    let client = azure_mgmt_containerservice::Client::builder(credential.clone())
        .endpoint(endpoint)
        .scopes(&[scope.as_str()])
        .transport(azure_core::TransportOptions::new(http.clone()))
        // Retries are the transport's (see `Transport`): azure_core's own policy can hang.
        .retry(azure_core::RetryOptions::none())
        .build();
    Ok(Arm {
        client,
        http,
        credential,
        scope,
    })
}

/// The HTTP status and ARM error code/message of a failed call, if it was an HTTP answer.
pub fn http_failure(e: &AzError) -> Option<(u16, Option<String>, Option<String>)> {
    let h = e.as_http_error()?;
    Some((
        u16::from(h.status()),
        h.error_code().map(str::to_owned),
        h.error_message().map(str::to_owned),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("2"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
    }

    #[test]
    fn missing_settings_are_named() {
        let e = agent_pools_client(&AzureSettings::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("AZURE_SUBSCRIPTION_ID"), "{e}");
        let full = AzureSettings {
            subscription_id: "s".into(),
            resource_group: "rg".into(),
            cluster_name: "c".into(),
            ..AzureSettings::default()
        };
        assert!(full.check().is_ok());
        for (settings, named) in [
            (
                AzureSettings {
                    resource_group: " ".into(),
                    ..full.clone()
                },
                "--azure-resource-group (AZURE_RESOURCE_GROUP)",
            ),
            (
                AzureSettings {
                    cluster_name: String::new(),
                    ..full.clone()
                },
                "--azure-cluster-name (AZURE_CLUSTER_NAME)",
            ),
        ] {
            let e = settings.check().expect_err(named).to_string();
            assert_eq!(e, format!("aks provisioner: set {named}"));
        }
    }
}
