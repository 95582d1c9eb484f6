//! Secret mode: the webhook manages its own certificates, with no cert-manager.
//!
//! Two Secrets in its namespace: the serving Secret `secret_name` (`server-key.pem`,
//! `server-cert.pem`, and `ca-cert.pem`, the CA bundle) and the CA Secret `ca_secret_name`
//! (`ca-cert.pem`, `ca-key.pem`). The CA key is read only when a serving certificate is issued
//! and never sits beside the serving key.
//!
//! On start, and then every `check_interval`, the webhook reads the serving Secret. When it is
//! usable (issued for these names, not expiring within `rotate_before`), its bundle is written
//! into the `caBundle` of every webhook of the named Mutating/ValidatingWebhookConfigurations
//! where it differs, and then its certificate is served. Otherwise a new serving certificate is
//! issued, signed by the CA of the CA Secret (a new CA when that is missing or would not outlive
//! the certificate; written with the read resourceVersion, so racing replicas agree on one), and
//!
//! 1. the new bundle (the current CA, plus the previous CA while it is valid, so the
//!    certificates other replicas still serve keep verifying) is written into the
//!    configurations **first**,
//! 2. then the serving Secret (create, or replace at the read resourceVersion: a replica that
//!    loses the race re-reads and uses the winner's certificate),
//! 3. and only then is the new certificate served.
//!
//! A 409 Conflict on a configuration or Secret write is retried at once with a short backoff
//! (re-reading the object); a failed round is retried after 5 s, doubling up to
//! `check_interval`, not an hour later. A serving Secret of the older layout that still holds
//! `ca-key.pem` is migrated: its CA moves into the CA Secret and the serving Secret is rewritten
//! without the key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ByteString, ClusterResourceScope};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::certs::{self, CertError, PemPair, ReloadingResolver};
use crate::metrics::Metrics;
use crate::tls::install;

/// Secret key of the serving private key.
pub const SERVER_KEY: &str = "server-key.pem";
/// Secret key of the serving certificate.
pub const SERVER_CERT: &str = "server-cert.pem";
/// Secret key of the CA bundle (serving Secret: current CA first) or the CA (CA Secret).
pub const CA_CERT: &str = "ca-cert.pem";
/// Secret key of the CA private key (CA Secret only).
pub const CA_KEY: &str = "ca-key.pem";
/// Annotation on the serving Secret listing the names the certificate was issued for.
pub const SANS_ANNOTATION: &str = "kaito.sh/webhook-cert-sans";
/// Attempts of a write that keeps meeting 409 Conflict.
const CONFLICT_ATTEMPTS: u32 = 6;
/// First pause after a 409 Conflict; doubled per attempt.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(100);
/// First pause after a failed round; doubled per failure, up to `check_interval`.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Errors of the Secret mode.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The client error.
        source: kube::Error,
    },
    /// An object kept changing under us.
    #[error(
        "{object} kept changing while writing it ({CONFLICT_ATTEMPTS} conflicts); retrying shortly"
    )]
    Contended {
        /// kind namespace/name.
        object: String,
    },
    /// Certificate generation or parsing failed.
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// Configuration of the Secret mode.
#[derive(Clone, Debug)]
pub struct SecretConfig {
    /// Namespace of the Secrets and the Service.
    pub namespace: String,
    /// Name of the serving Secret.
    pub secret_name: String,
    /// Name of the CA Secret.
    pub ca_secret_name: String,
    /// Name of the webhook's Service; the certificate is for `<service>.<namespace>.svc`.
    pub service_name: String,
    /// More names or IPs to put in the certificate.
    pub extra_sans: Vec<String>,
    /// MutatingWebhookConfiguration whose `caBundle` to keep up to date.
    pub mutating_webhook: Option<String>,
    /// ValidatingWebhookConfiguration whose `caBundle` to keep up to date.
    pub validating_webhook: Option<String>,
    /// Lifetime of a new CA.
    pub ca_validity: Duration,
    /// Lifetime of a new serving certificate.
    pub cert_validity: Duration,
    /// Renew a certificate when it expires within this.
    pub rotate_before: Duration,
    /// How often to re-check the Secret and the expiry.
    pub check_interval: Duration,
}

impl SecretConfig {
    /// The names the serving certificate is issued for.
    pub fn sans(&self) -> Vec<String> {
        let svc = &self.service_name;
        let ns = &self.namespace;
        let mut sans = vec![
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
            format!("{svc}.{ns}"),
            svc.clone(),
        ];
        for extra in &self.extra_sans {
            if !sans.contains(extra) {
                sans.push(extra.clone());
            }
        }
        sans
    }
}

/// What the serving Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCerts {
    /// The serving certificate and key.
    pub serving: PemPair,
    /// The CA bundle (current CA first, possibly followed by the previous one).
    pub ca_bundle: String,
    /// The names the serving certificate was issued for (annotation).
    pub sans: Vec<String>,
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> SecretError {
    let action = action.into();
    move |source| SecretError::Kube { action, source }
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

async fn conflict_pause(attempt: u32) {
    tokio::time::sleep(CONFLICT_BACKOFF * 2u32.saturating_pow(attempt)).await;
}

/// Writes the Secret `build` makes (given the resourceVersion to replace) as `name`: in place
/// of `existing`, or as a new one. Ok(true) once written, Ok(false) on a 409 Conflict (someone
/// else wrote first: read again).
async fn write_secret(
    api: &Api<Secret>,
    cfg: &SecretConfig,
    name: &str,
    existing: Option<Secret>,
    build: impl FnOnce(Option<String>) -> Secret,
) -> Result<bool, SecretError> {
    let result = match existing {
        Some(secret) => {
            let secret = build(secret.metadata.resource_version);
            api.replace(name, &PostParams::default(), &secret).await
        }
        None => api.create(&PostParams::default(), &build(None)).await,
    };
    match result {
        Ok(_) => Ok(true),
        Err(err) if is_conflict(&err) => Ok(false),
        Err(source) => Err(SecretError::Kube {
            action: format!("writing Secret {}/{name}", cfg.namespace),
            source,
        }),
    }
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn read_stored(secret: &Secret) -> Option<StoredCerts> {
    let sans = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SANS_ANNOTATION))
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    Some(StoredCerts {
        serving: PemPair {
            cert_pem: secret_text(secret, SERVER_CERT)?,
            key_pem: secret_text(secret, SERVER_KEY)?,
        },
        ca_bundle: secret_text(secret, CA_CERT)?,
        sans,
    })
}

/// The CA of a CA Secret (or, for migration, of an old-layout serving Secret).
fn read_ca(secret: &Secret) -> Option<PemPair> {
    Some(PemPair {
        cert_pem: first_pem(&secret_text(secret, CA_CERT)?),
        key_pem: secret_text(secret, CA_KEY)?,
    })
}

/// The first PEM block of a bundle (the current CA).
fn first_pem(bundle: &str) -> String {
    const END: &str = "-----END CERTIFICATE-----";
    match bundle.find(END) {
        Some(i) => format!("{}\n", &bundle[..i + END.len()]),
        None => bundle.to_owned(),
    }
}

/// Why `stored` cannot be served as is under `cfg`, or `None`.
pub fn needs_renewal(stored: &StoredCerts, cfg: &SecretConfig) -> Option<&'static str> {
    if stored.sans != cfg.sans() {
        return Some("the certificate was issued for other names");
    }
    if certs::expires_within(&first_pem(&stored.ca_bundle), cfg.rotate_before) {
        return Some("the CA expires soon");
    }
    if certs::expires_within(&stored.serving.cert_pem, cfg.rotate_before) {
        return Some("the serving certificate expires soon");
    }
    if certs::certified_key(&stored.serving, "stored certificate").is_err() {
        return Some("the stored certificate and key are not usable");
    }
    None
}

/// Whether the CA `ca` can sign a new serving certificate: it must outlive one by the
/// rotation margin.
pub fn ca_usable(ca: &PemPair, cfg: &SecretConfig) -> bool {
    !certs::expires_within(&ca.cert_pem, cfg.cert_validity + cfg.rotate_before)
        && rcgen::KeyPair::from_pem(&ca.key_pem).is_ok()
}

/// The bundle to publish for CA `ca`: it first, then the current CA of `previous_bundle` while
/// that is still valid and another one (the certificates it signed are still served).
pub fn bundle_for(ca: &PemPair, previous_bundle: Option<&str>) -> String {
    let mut bundle = ca.cert_pem.clone();
    if let Some(previous) = previous_bundle {
        let old = first_pem(previous);
        if old.trim() != ca.cert_pem.trim() && !certs::expires_within(&old, Duration::ZERO) {
            bundle.push_str(&old);
        }
    }
    bundle
}

/// A serving certificate for `cfg`'s names signed by `ca`, with `bundle`.
pub fn issue(ca: &PemPair, bundle: String, cfg: &SecretConfig) -> Result<StoredCerts, CertError> {
    let sans = cfg.sans();
    let serving = certs::issue_serving_cert(ca, &sans, cfg.cert_validity)?;
    Ok(StoredCerts {
        serving,
        ca_bundle: bundle,
        sans,
    })
}

fn meta(cfg: &SecretConfig, name: &str, resource_version: Option<String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(cfg.namespace.clone()),
        resource_version,
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_owned(),
            "kaito-webhook".to_owned(),
        )])),
        ..ObjectMeta::default()
    }
}

fn data(entries: [(&str, &str); 2]) -> BTreeMap<String, ByteString> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

fn serving_secret(
    cfg: &SecretConfig,
    certs: &StoredCerts,
    resource_version: Option<String>,
) -> Secret {
    let mut metadata = meta(cfg, &cfg.secret_name, resource_version);
    metadata.annotations = Some(BTreeMap::from([(
        SANS_ANNOTATION.to_owned(),
        certs.sans.join(","),
    )]));
    let mut data = data([
        (SERVER_CERT, &certs.serving.cert_pem),
        (SERVER_KEY, &certs.serving.key_pem),
    ]);
    data.insert(
        CA_CERT.to_owned(),
        ByteString(certs.ca_bundle.clone().into_bytes()),
    );
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

fn ca_secret(cfg: &SecretConfig, ca: &PemPair, resource_version: Option<String>) -> Secret {
    Secret {
        metadata: meta(cfg, &cfg.ca_secret_name, resource_version),
        type_: Some("Opaque".to_owned()),
        data: Some(data([(CA_CERT, &ca.cert_pem), (CA_KEY, &ca.key_pem)])),
        ..Secret::default()
    }
}

/// The CA to sign with: the CA Secret's while usable, else a new one (or `adopt`, an
/// old-layout serving Secret's CA, while usable), written with the read resourceVersion so
/// racing replicas end up with one CA.
pub async fn ensure_ca(
    client: &kube::Client,
    cfg: &SecretConfig,
    adopt: Option<PemPair>,
) -> Result<PemPair, SecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let name = &cfg.ca_secret_name;
    for attempt in 0..CONFLICT_ATTEMPTS {
        let existing = api
            .get_opt(name)
            .await
            .map_err(kube_err(format!("reading Secret {}/{name}", cfg.namespace)))?;
        if let Some(ca) = existing.as_ref().and_then(read_ca)
            && ca_usable(&ca, cfg)
        {
            return Ok(ca);
        }
        let ca = match adopt.clone().filter(|ca| ca_usable(ca, cfg)) {
            Some(ca) => ca,
            None => certs::generate_ca("kaito-webhook CA", cfg.ca_validity)?,
        };
        tracing::info!(namespace = %cfg.namespace, secret = %name, "writing the webhook's CA");
        if write_secret(&api, cfg, name, existing, |rv| ca_secret(cfg, &ca, rv)).await? {
            return Ok(ca);
        }
        conflict_pause(attempt).await;
    }
    Err(SecretError::Contended {
        object: format!("Secret {}/{name}", cfg.namespace),
    })
}

/// Writes `ca_bundle` into every webhook of the named configurations where it differs,
/// retrying a 409 Conflict with a fresh read.
pub async fn sync_ca_bundle(
    client: &kube::Client,
    cfg: &SecretConfig,
    ca_bundle: &str,
) -> Result<(), SecretError> {
    let bundle = ByteString(ca_bundle.as_bytes().to_vec());
    sync_bundle::<MutatingWebhookConfiguration>(
        client,
        cfg.mutating_webhook.as_deref(),
        &bundle,
        |obj| {
            let hooks = obj.webhooks.iter_mut().flatten();
            hooks.map(|hook| &mut hook.client_config).collect()
        },
    )
    .await?;
    sync_bundle::<ValidatingWebhookConfiguration>(
        client,
        cfg.validating_webhook.as_deref(),
        &bundle,
        |obj| {
            let hooks = obj.webhooks.iter_mut().flatten();
            hooks.map(|hook| &mut hook.client_config).collect()
        },
    )
    .await
}

/// Writes `bundle` into the client configs (`configs`) of the webhook configuration `name`
/// of kind `K`, if one is named.
async fn sync_bundle<K>(
    client: &kube::Client,
    name: Option<&str>,
    bundle: &ByteString,
    configs: fn(&mut K) -> Vec<&mut WebhookClientConfig>,
) -> Result<(), SecretError>
where
    K: kube::Resource<DynamicType = (), Scope = ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let Some(name) = name else {
        return Ok(());
    };
    let api: Api<K> = Api::all(client.clone());
    sync_one(&api, &K::kind(&()), name, |obj| {
        set_bundle(configs(obj), bundle)
    })
    .await
}

/// Sets `bundle` as the caBundle of each client config where it differs; true if any changed.
fn set_bundle(configs: Vec<&mut WebhookClientConfig>, bundle: &ByteString) -> bool {
    let mut changed = false;
    for config in configs {
        if config.ca_bundle.as_ref() != Some(bundle) {
            config.ca_bundle = Some(bundle.clone());
            changed = true;
        }
    }
    changed
}

async fn sync_one<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
    mut update: impl FnMut(&mut K) -> bool,
) -> Result<(), SecretError>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    for attempt in 0..CONFLICT_ATTEMPTS {
        let mut obj = api
            .get(name)
            .await
            .map_err(kube_err(format!("reading {kind} {name}")))?;
        if !update(&mut obj) {
            return Ok(());
        }
        match api.replace(name, &PostParams::default(), &obj).await {
            Ok(_) => {
                tracing::info!(configuration = %name, kind, "caBundle updated");
                return Ok(());
            }
            Err(err) if is_conflict(&err) => {
                tracing::info!(configuration = %name, kind, "caBundle write conflicted; re-reading");
                conflict_pause(attempt).await;
            }
            Err(source) => {
                return Err(SecretError::Kube {
                    action: format!("writing caBundle of {kind} {name}"),
                    source,
                });
            }
        }
    }
    Err(SecretError::Contended {
        object: format!("{kind} {name}"),
    })
}

/// Serves `stored` unless it is what `current` already is.
fn serve(
    stored: StoredCerts,
    resolver: &ReloadingResolver,
    metrics: &Metrics,
    current: &mut Option<StoredCerts>,
    cfg: &SecretConfig,
) -> Result<(), SecretError> {
    if current.as_ref() != Some(&stored) {
        install(
            resolver,
            metrics,
            &stored.serving,
            "certificate from the Secret",
        )?;
        tracing::info!(namespace = %cfg.namespace, secret = %cfg.secret_name, "serving the certificate from the Secret");
    }
    *current = Some(stored);
    Ok(())
}

/// One round: the caBundle is published before a certificate it must verify is served.
pub async fn reconcile_once(
    client: &kube::Client,
    cfg: &SecretConfig,
    resolver: &ReloadingResolver,
    metrics: &Metrics,
    current: &mut Option<StoredCerts>,
) -> Result<(), SecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let name = &cfg.secret_name;
    for attempt in 0..CONFLICT_ATTEMPTS {
        let existing = api
            .get_opt(name)
            .await
            .map_err(kube_err(format!("reading Secret {}/{name}", cfg.namespace)))?;
        let stored = existing.as_ref().and_then(read_stored);
        let legacy_ca = existing.as_ref().and_then(read_ca);
        let reason = match &stored {
            Some(s) => match needs_renewal(s, cfg) {
                None if legacy_ca.is_none() => {
                    sync_ca_bundle(client, cfg, &s.ca_bundle).await?;
                    return serve(s.clone(), resolver, metrics, current, cfg);
                }
                None => "the Secret still holds the CA key (older layout)",
                Some(reason) => reason,
            },
            None if existing.is_some() => "the Secret holds no usable certificates",
            None => "the Secret does not exist",
        };
        tracing::info!(namespace = %cfg.namespace, secret = %name, reason, "issuing a new serving certificate");
        let ca = ensure_ca(client, cfg, legacy_ca).await?;
        let bundle = bundle_for(&ca, stored.as_ref().map(|s| s.ca_bundle.as_str()));
        let renewed = issue(&ca, bundle, cfg)?;
        // The bundle first: the API server must trust the new certificate before anyone
        // serves it.
        sync_ca_bundle(client, cfg, &renewed.ca_bundle).await?;
        let write = |rv| serving_secret(cfg, &renewed, rv);
        if write_secret(&api, cfg, name, existing, write).await? {
            return serve(renewed, resolver, metrics, current, cfg);
        }
        tracing::info!(secret = %name, "the Secret changed meanwhile; re-reading it");
        conflict_pause(attempt).await;
    }
    Err(SecretError::Contended {
        object: format!("Secret {}/{name}", cfg.namespace),
    })
}

/// Secret mode: the first round must succeed (the server cannot serve without a
/// certificate); later rounds run every `check_interval` until `shutdown`, and a failing round
/// is logged and retried after 5 s, doubling up to `check_interval`.
pub async fn start(
    client: kube::Client,
    cfg: SecretConfig,
    resolver: Arc<ReloadingResolver>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, SecretError> {
    let mut current = None;
    reconcile_once(&client, &cfg, &resolver, &metrics, &mut current).await?;
    Ok(tokio::spawn(async move {
        let mut wait = cfg.check_interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            wait = match reconcile_once(&client, &cfg, &resolver, &metrics, &mut current).await {
                Ok(()) => cfg.check_interval,
                Err(err) => {
                    let next = if wait >= cfg.check_interval {
                        RETRY_AFTER_FAILURE
                    } else {
                        wait * 2
                    }
                    .min(cfg.check_interval);
                    tracing::warn!(error = %err, retry_in = ?next, "certificate check failed");
                    next
                }
            };
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SecretConfig {
        SecretConfig {
            namespace: "kaito".into(),
            secret_name: "kaito-webhook-cert".into(),
            ca_secret_name: "kaito-webhook-ca".into(),
            service_name: "kaito-webhook".into(),
            extra_sans: vec!["127.0.0.1".into()],
            mutating_webhook: None,
            validating_webhook: None,
            ca_validity: Duration::from_secs(10 * 24 * 3600),
            cert_validity: Duration::from_secs(24 * 3600),
            rotate_before: Duration::from_secs(3600),
            check_interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn fresh_certs_are_reused_and_sans_change_forces_renewal() -> Result<(), CertError> {
        let cfg = cfg();
        let ca = certs::generate_ca("test CA", cfg.ca_validity)?;
        assert!(ca_usable(&ca, &cfg));
        let first = issue(&ca, bundle_for(&ca, None), &cfg)?;
        assert_eq!(needs_renewal(&first, &cfg), None);
        assert_eq!(first.sans[0], "kaito-webhook.kaito.svc");
        let mut other = cfg.clone();
        other.extra_sans = vec![];
        assert!(needs_renewal(&first, &other).is_some());
        // The same CA again: the bundle does not grow.
        assert_eq!(bundle_for(&ca, Some(&first.ca_bundle)), first.ca_bundle);
        Ok(())
    }

    #[test]
    fn a_new_ca_is_bundled_with_the_previous_one() -> Result<(), CertError> {
        let mut short = cfg();
        short.ca_validity = Duration::from_secs(2 * 3600);
        let old = certs::generate_ca("old", short.ca_validity)?;
        // It expires within a certificate's lifetime plus the margin: not usable.
        assert!(!ca_usable(&old, &cfg()));
        let new = certs::generate_ca("new", cfg().ca_validity)?;
        let bundle = bundle_for(&new, Some(&bundle_for(&old, None)));
        assert!(bundle.starts_with(&new.cert_pem));
        assert!(bundle.ends_with(&old.cert_pem));
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
        Ok(())
    }
}
