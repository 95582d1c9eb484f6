//! Resolving a Hugging Face id (`inference.preset.name: org/model[@revision]`) through the hub
//! at admission: the I/O around [`kaito_presets::hub_model`].
//!
//! On CREATE of a Workspace whose `inference.preset.name` is a Hugging Face id, `/mutate` asks
//! the hub (`HF_ENDPOINT`) for the revision's commit, file sizes and gating
//! (`GET /api/models/{id}/revision/{rev}?blobs=true`) and for `config.json` at that commit
//! (`GET /{id}/resolve/{commit}/config.json`); the pure code turns them into
//! [`ModelFacts`], which the mutation records on the Workspace (see
//! [`kaito_api::admission::record_hub_model`]). `/validate` resolves the recorded commit again
//! (a cache hit) and denies facts that are not the hub's.
//!
//! Bounds: the whole resolution (the token's Secret included) finishes within
//! `--hub-timeout-secs` or the request is denied with a retryable message (never a hang, never
//! an allow); answers are read up to [`MAX_INFO_BYTES`] and [`MAX_CONFIG_BYTES`]. Results of
//! public repositories are cached for `--hub-cache-ttl-secs` per `id@revision`.
//!
//! A gated repository answers 401/403 without a token: the webhook then reads the token
//! (key `HF_TOKEN`) from the Secret named in `inference.preset.presetOptions.modelAccessSecret`
//! in the workspace's namespace — only when it authenticates its callers (`--client-ca-file`),
//! as for ConfigMaps, since the request names the namespace and the Secret.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kaito_hub_client::HubClient;
use kaito_presets::hub_model::{HubId, ModelFacts, ResolveError, is_hub_id};

use crate::review::Call;

/// Default deadline of one resolution (the API server gives the whole call 10 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default lifetime of a cached resolution.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// Most cached resolutions.
const CACHE_ENTRIES: usize = 256;
/// The Secret key holding the token.
pub const TOKEN_KEY: &str = "HF_TOKEN";

/// What the webhook found for a request's Hugging Face id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubLookup {
    /// The request names no Hugging Face id to resolve.
    NotNeeded,
    /// Resolved.
    Resolved(ModelFacts),
    /// Not resolved; the message says why (and whether to retry).
    Failed {
        /// For the user.
        message: String,
        /// The same request may succeed later.
        retryable: bool,
    },
}

/// The part of the hub the webhook speaks, with its deadline and cache.
pub struct HubResolver {
    client: HubClient,
    timeout: Duration,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, ModelFacts)>>,
}

impl std::fmt::Debug for HubResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubResolver")
            .field("endpoint", &self.client.endpoint())
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl HubResolver {
    /// A resolver for the hub at `endpoint` (`HF_ENDPOINT`), giving up after `timeout`.
    pub fn new(endpoint: &str, timeout: Duration, ttl: Duration) -> Result<Self, String> {
        let client = HubClient::new(
            endpoint,
            timeout,
            concat!("kaito-webhook/", env!("CARGO_PKG_VERSION")),
        )?;
        Ok(Self {
            client,
            timeout,
            ttl,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// `HF_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    /// The deadline of one resolution.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn cached(&self, key: &str) -> Option<ModelFacts> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, f)| f.clone())
    }

    fn remember(&self, key: String, facts: &ModelFacts) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), facts.clone()));
    }

    /// Resolves `id` within the deadline; `token` is asked for (once) when the hub wants one.
    pub async fn resolve<F, Fut>(&self, id: &HubId, token: F) -> Result<ModelFacts, ResolveError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, ResolveError>>,
    {
        let key = format!("{}@{}", id.repo, id.revision_or_main());
        if let Some(facts) = self.cached(&key) {
            return Ok(facts);
        }
        let work = async {
            match self.client.facts(id, None).await {
                Err(ResolveError::NeedsToken { repo, status }) => match token().await? {
                    Some(t) => self.client.facts(id, Some(&t)).await,
                    None => Err(ResolveError::NeedsToken { repo, status }),
                },
                other => other,
            }
        };
        let facts = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ResolveError::Timeout {
                endpoint: self.client.endpoint().to_string(),
                repo: id.repo.clone(),
                secs: self.timeout.as_secs().max(1),
            })??;
        // Gated facts are not shared: another namespace must show its own token.
        if !facts.gated {
            self.remember(key, &facts);
            self.remember(format!("{}@{}", facts.repo, facts.revision), &facts);
        }
        Ok(facts)
    }
}

/// What a request's body says about its Hugging Face id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRef {
    /// The workspace's namespace.
    pub namespace: String,
    /// The id to resolve (for `/validate`: at the recorded commit).
    pub id: HubId,
    /// `presetOptions.modelAccessSecret`.
    pub secret: Option<String>,
}

/// The Hugging Face id to resolve for an admission call: only a CREATE of a Workspace (no
/// subresource) whose `inference.preset.name` is a well-formed id. For `validate`, the id at
/// the commit the mutation recorded (`None` when none is recorded: validation says so).
pub fn hub_ref(call: &Call, validate: bool) -> Option<HubRef> {
    let (namespace, ws) = call.created()?;
    let preset = ws.inference.as_ref()?.preset.as_ref()?;
    if !is_hub_id(&preset.name) {
        return None;
    }
    let mut id = HubId::parse(&preset.name).ok()?;
    if validate {
        let pinned = ws.annotation(kaito_api::admission::ANNOTATION_MODEL_REVISION)?;
        id.revision = Some(pinned.to_owned());
    }
    Some(HubRef {
        namespace: namespace.to_owned(),
        id,
        secret: preset
            .preset_options
            .as_ref()
            .and_then(|o| o.model_access_secret.clone())
            .filter(|s| !s.is_empty()),
    })
}

/// Reads the token from `secret` in `namespace` with the webhook's client (`None`: callers are
/// not authenticated, so no Secret is read).
async fn read_token(
    client: Option<&kube::Client>,
    repo: &str,
    namespace: &str,
    secret: Option<&str>,
) -> Result<Option<String>, ResolveError> {
    let Some(name) = secret else {
        return Ok(None);
    };
    let refuse = |problem: String| ResolveError::Protocol {
        repo: repo.to_string(),
        problem,
    };
    let Some(client) = client else {
        return Err(refuse(format!(
            "the repository needs a token, and the webhook reads the modelAccessSecret {name:?} \
             only for callers it authenticates (chart: webhook.clientAuth); until then, serve \
             gated models through a catalog preset"
        )));
    };
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(refuse(format!(
                "Secret {name:?} (modelAccessSecret) not found in namespace {namespace:?}: create \
                 it with key {TOKEN_KEY} before the workspace"
            )));
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Err(refuse(format!(
                "the webhook may not read Secret {namespace}/{name} (modelAccessSecret): {}; \
                 the chart grants it with webhook.clientAuth",
                status.message
            )));
        }
        Err(e) => {
            return Err(ResolveError::Unreachable {
                endpoint: "the Kubernetes API".into(),
                repo: repo.to_string(),
                problem: format!("reading Secret {namespace}/{name}: {e}"),
            });
        }
    };
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
        .filter(|t| !t.is_empty());
    match token {
        Some(t) => Ok(Some(t)),
        None => Err(refuse(format!(
            "Secret {namespace}/{name} (modelAccessSecret) has no key {TOKEN_KEY}"
        ))),
    }
}

/// Resolves the Hugging Face id of an admission call, if it names one.
pub async fn lookup(
    resolver: Option<&HubResolver>,
    client: Option<&kube::Client>,
    call: &Call,
    validate: bool,
) -> HubLookup {
    let Some(r) = hub_ref(call, validate) else {
        return HubLookup::NotNeeded;
    };
    let Some(resolver) = resolver else {
        return HubLookup::Failed {
            message: "this webhook does not resolve Hugging Face ids (no hub configured)".into(),
            retryable: false,
        };
    };
    let started = Instant::now();
    let result = resolver
        .resolve(&r.id, || {
            read_token(client, &r.id.repo, &r.namespace, r.secret.as_deref())
        })
        .await;
    match result {
        Ok(facts) => {
            tracing::info!(
                namespace = %r.namespace,
                repo = %facts.repo,
                revision = %facts.revision,
                architecture = %facts.architecture,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "resolved a Hugging Face id"
            );
            HubLookup::Resolved(facts)
        }
        Err(err) => {
            tracing::warn!(
                namespace = %r.namespace,
                repo = %r.id.repo,
                error = %err,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "a Hugging Face id was not resolved"
            );
            HubLookup::Failed {
                retryable: err.retryable(),
                message: err.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hub_ref(body: &[u8], validate: bool) -> Option<HubRef> {
        super::hub_ref(&Call::parse(body).ok()?, validate)
    }

    fn body(op: &str, name: &str, annotations: serde_json::Value) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "request": {"uid": "1", "kind": {"group": "kaito.sh", "version": "v1beta1",
                 "kind": "Workspace"}, "operation": op, "namespace": "ns", "name": "w",
                 "resource": {"group": "kaito.sh", "version": "v1beta1", "resource": "workspaces"},
                 "userInfo": {"username": "u"},
                 "object": {"metadata": {"name": "w", "annotations": annotations},
                   "inference": {"preset": {"name": name,
                     "presetOptions": {"modelAccessSecret": "hf"}}}}}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn only_creates_of_hub_ids_are_resolved() {
        let r = hub_ref(&body("CREATE", "o/m@v1", json!({})), false).expect("an id");
        assert_eq!(r.id.repo, "o/m");
        assert_eq!(r.id.revision.as_deref(), Some("v1"));
        assert_eq!(r.namespace, "ns");
        assert_eq!(r.secret.as_deref(), Some("hf"));
        assert!(hub_ref(&body("UPDATE", "o/m", json!({})), false).is_none());
        assert!(hub_ref(&body("CREATE", "phi-4", json!({})), false).is_none());
        assert!(hub_ref(&body("CREATE", "o/m/x", json!({})), false).is_none());
        // Validation resolves the recorded commit, and nothing when none is recorded.
        assert!(hub_ref(&body("CREATE", "o/m", json!({})), true).is_none());
        let pinned = hub_ref(
            &body(
                "CREATE",
                "o/m",
                json!({"kaito.sh/model-revision": "0123456789abcdef0123456789abcdef01234567"}),
            ),
            true,
        )
        .expect("an id");
        assert_eq!(
            pinned.id.revision.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
    }
}
