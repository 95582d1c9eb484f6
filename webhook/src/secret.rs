//! Secret mode: the webhook manages its own certificates, with no cert-manager.
//!
//! On start, and then every `check_interval`, the webhook reads the Secret `secret_name` in its
//! namespace (`server-key.pem`, `server-cert.pem`, `ca-cert.pem`, plus `ca-key.pem` to sign
//! rotations). When the Secret is missing, unreadable, issued for other names, or a
//! certificate in it expires within `rotate_before`, it issues a new serving certificate
//! (reusing the CA while the CA itself is not about to expire) and writes the Secret (create,
//! or replace at the read resourceVersion so concurrent replicas do not overwrite each other:
//! the loser re-reads and uses the winner's certificate). The CA bundle is written into the
//! `caBundle` of every webhook of the named Mutating/ValidatingWebhookConfigurations whenever
//! it differs. When the CA is renewed, the bundle holds the new and the old CA until the old
//! one expires, so callers that still have the old bundle keep working.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::certs::{self, CertError, PemPair, ReloadingResolver};
use crate::metrics::Metrics;
use crate::tls::install;

/// Secret key of the serving private key.
pub const SERVER_KEY: &str = "server-key.pem";
/// Secret key of the serving certificate.
pub const SERVER_CERT: &str = "server-cert.pem";
/// Secret key of the CA bundle (current CA first).
pub const CA_CERT: &str = "ca-cert.pem";
/// Secret key of the CA private key (signs rotated serving certificates).
pub const CA_KEY: &str = "ca-key.pem";
/// Annotation on the Secret listing the names the serving certificate was issued for.
pub const SANS_ANNOTATION: &str = "kaito.sh/webhook-cert-sans";

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
    /// The Secret kept changing under us.
    #[error("Secret {secret} kept changing while writing it; giving up this round")]
    Contended {
        /// namespace/name.
        secret: String,
    },
    /// Certificate generation or parsing failed.
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// Configuration of the Secret mode.
#[derive(Clone, Debug)]
pub struct SecretConfig {
    /// Namespace of the Secret and the Service.
    pub namespace: String,
    /// Name of the Secret.
    pub secret_name: String,
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

/// The certificates held in the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCerts {
    /// The serving certificate and key.
    pub serving: PemPair,
    /// The CA bundle (current CA first, possibly followed by the previous one).
    pub ca_bundle: String,
    /// The current CA's key.
    pub ca_key: String,
    /// The names the serving certificate was issued for (annotation).
    pub sans: Vec<String>,
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> SecretError {
    let action = action.into();
    move |source| SecretError::Kube { action, source }
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
        ca_key: secret_text(secret, CA_KEY)?,
        sans,
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

/// Whether `stored` can be served as is under `cfg`.
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

/// Issues what `previous` lacks: a serving certificate, and a CA when there is none usable.
pub fn renew(previous: Option<&StoredCerts>, cfg: &SecretConfig) -> Result<StoredCerts, CertError> {
    let reusable_ca = previous.and_then(|p| {
        let ca_pem = first_pem(&p.ca_bundle);
        // The CA must outlive a new serving certificate by the rotation margin.
        let margin = cfg.cert_validity + cfg.rotate_before;
        (!certs::expires_within(&ca_pem, margin)).then(|| PemPair {
            cert_pem: ca_pem,
            key_pem: p.ca_key.clone(),
        })
    });
    let (ca, bundle) = match reusable_ca {
        Some(ca) => {
            let bundle = previous.map(|p| p.ca_bundle.clone()).unwrap_or_default();
            (ca, bundle)
        }
        None => {
            let ca = certs::generate_ca("kaito-webhook CA", cfg.ca_validity)?;
            let mut bundle = ca.cert_pem.clone();
            // Keep trusting the old CA while it is valid: callers may hold the old bundle.
            if let Some(p) = previous {
                let old = first_pem(&p.ca_bundle);
                if !certs::expires_within(&old, Duration::ZERO) {
                    bundle.push_str(&old);
                }
            }
            (ca, bundle)
        }
    };
    let sans = cfg.sans();
    let serving = certs::issue_serving_cert(&ca, &sans, cfg.cert_validity)?;
    Ok(StoredCerts {
        serving,
        ca_bundle: bundle,
        ca_key: ca.key_pem,
        sans,
    })
}

fn to_secret(cfg: &SecretConfig, certs: &StoredCerts, resource_version: Option<String>) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(
        SERVER_CERT.to_owned(),
        ByteString(certs.serving.cert_pem.clone().into_bytes()),
    );
    data.insert(
        SERVER_KEY.to_owned(),
        ByteString(certs.serving.key_pem.clone().into_bytes()),
    );
    data.insert(
        CA_CERT.to_owned(),
        ByteString(certs.ca_bundle.clone().into_bytes()),
    );
    data.insert(
        CA_KEY.to_owned(),
        ByteString(certs.ca_key.clone().into_bytes()),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(cfg.secret_name.clone()),
            namespace: Some(cfg.namespace.clone()),
            resource_version,
            annotations: Some(BTreeMap::from([(
                SANS_ANNOTATION.to_owned(),
                certs.sans.join(","),
            )])),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "kaito-webhook".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Makes sure the Secret holds usable certificates (creating or rotating them) and returns them.
pub async fn ensure_secret(
    client: &kube::Client,
    cfg: &SecretConfig,
) -> Result<StoredCerts, SecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let name = &cfg.secret_name;
    // A few rounds: a conflict means another replica wrote first; its certificates win.
    for _ in 0..3 {
        let existing = api
            .get_opt(name)
            .await
            .map_err(kube_err(format!("reading Secret {}/{name}", cfg.namespace)))?;
        let stored = existing.as_ref().and_then(read_stored);
        let reason = match &stored {
            Some(s) => match needs_renewal(s, cfg) {
                None => return Ok(s.clone()),
                Some(reason) => reason,
            },
            None if existing.is_some() => "the Secret holds no usable certificates",
            None => "the Secret does not exist",
        };
        let renewed = renew(stored.as_ref(), cfg)?;
        tracing::info!(namespace = %cfg.namespace, secret = %name, reason, "issuing a new serving certificate");
        let result = match existing {
            Some(secret) => {
                let rv = secret.metadata.resource_version.clone();
                api.replace(name, &PostParams::default(), &to_secret(cfg, &renewed, rv))
                    .await
            }
            None => {
                api.create(&PostParams::default(), &to_secret(cfg, &renewed, None))
                    .await
            }
        };
        match result {
            Ok(_) => return Ok(renewed),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::info!(secret = %name, "the Secret changed meanwhile; re-reading it");
                continue;
            }
            Err(source) => {
                return Err(SecretError::Kube {
                    action: format!("writing Secret {}/{name}", cfg.namespace),
                    source,
                });
            }
        }
    }
    Err(SecretError::Contended {
        secret: format!("{}/{name}", cfg.namespace),
    })
}

/// Writes `ca_bundle` into every webhook of the named configurations where it differs.
pub async fn sync_ca_bundle(
    client: &kube::Client,
    cfg: &SecretConfig,
    ca_bundle: &str,
) -> Result<(), SecretError> {
    let bundle = ByteString(ca_bundle.as_bytes().to_vec());
    if let Some(name) = &cfg.mutating_webhook {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let mut obj = api.get(name).await.map_err(kube_err(format!(
            "reading MutatingWebhookConfiguration {name}"
        )))?;
        let mut changed = false;
        for hook in obj.webhooks.iter_mut().flatten() {
            if hook.client_config.ca_bundle.as_ref() != Some(&bundle) {
                hook.client_config.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if changed {
            api.replace(name, &PostParams::default(), &obj)
                .await
                .map_err(kube_err(format!(
                    "writing caBundle of MutatingWebhookConfiguration {name}"
                )))?;
            tracing::info!(configuration = %name, "caBundle updated");
        }
    }
    if let Some(name) = &cfg.validating_webhook {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        let mut obj = api.get(name).await.map_err(kube_err(format!(
            "reading ValidatingWebhookConfiguration {name}"
        )))?;
        let mut changed = false;
        for hook in obj.webhooks.iter_mut().flatten() {
            if hook.client_config.ca_bundle.as_ref() != Some(&bundle) {
                hook.client_config.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if changed {
            api.replace(name, &PostParams::default(), &obj)
                .await
                .map_err(kube_err(format!(
                    "writing caBundle of ValidatingWebhookConfiguration {name}"
                )))?;
            tracing::info!(configuration = %name, "caBundle updated");
        }
    }
    Ok(())
}

/// One round: ensure the Secret, serve its certificate if it changed, sync the caBundle.
async fn reconcile_once(
    client: &kube::Client,
    cfg: &SecretConfig,
    resolver: &ReloadingResolver,
    metrics: &Metrics,
    current: &mut Option<StoredCerts>,
) -> Result<(), SecretError> {
    let stored = ensure_secret(client, cfg).await?;
    if current.as_ref() != Some(&stored) {
        install(
            resolver,
            metrics,
            &stored.serving,
            "certificate from the Secret",
        )?;
        tracing::info!(namespace = %cfg.namespace, secret = %cfg.secret_name, "serving the certificate from the Secret");
    }
    sync_ca_bundle(client, cfg, &stored.ca_bundle).await?;
    *current = Some(stored);
    Ok(())
}

/// Secret mode: the first round must succeed (the server cannot serve without a
/// certificate); later rounds run every `check_interval` until `shutdown`, and a failing round
/// is logged and retried.
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
        loop {
            tokio::select! {
                _ = tokio::time::sleep(cfg.check_interval) => {}
                _ = shutdown.changed() => return,
            }
            if let Err(err) = reconcile_once(&client, &cfg, &resolver, &metrics, &mut current).await
            {
                tracing::warn!(error = %err, "certificate check failed; retrying later");
            }
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
        let first = renew(None, &cfg)?;
        assert_eq!(needs_renewal(&first, &cfg), None);
        assert_eq!(first.sans[0], "kaito-webhook.kaito.svc");
        let mut other = cfg.clone();
        other.extra_sans = vec![];
        assert!(needs_renewal(&first, &other).is_some());
        // Renewing the serving certificate keeps the CA (and the bundle) while it is valid.
        let second = renew(Some(&first), &cfg)?;
        assert_eq!(second.ca_bundle, first.ca_bundle);
        assert_ne!(second.serving, first.serving);
        Ok(())
    }

    #[test]
    fn an_expiring_ca_is_replaced_and_the_old_one_kept_in_the_bundle() -> Result<(), CertError> {
        let mut short = cfg();
        short.ca_validity = Duration::from_secs(2 * 3600);
        let first = renew(None, &short)?;
        // The CA expires within the rotation margin plus a certificate's lifetime: new CA.
        let second = renew(Some(&first), &cfg())?;
        assert_ne!(first_pem(&second.ca_bundle), first_pem(&first.ca_bundle));
        assert!(second.ca_bundle.ends_with(&first_pem(&first.ca_bundle)));
        assert_eq!(second.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2);
        Ok(())
    }
}
