//! Where the serving certificate comes from: files re-read on change (cert-manager, e2e), a
//! self-signed CA made at start (local runs), or a Kubernetes Secret managed by the webhook
//! itself ([`crate::secret`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::certs::{self, CertError, PemPair, ReloadingResolver};
use crate::metrics::Metrics;

/// Errors of the file and self-signed modes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A certificate or key could not be parsed or generated.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The CA file could not be written.
    #[error("writing the CA to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Loads the certificate in `pair` into `resolver` and records it in the metrics.
pub fn install(
    resolver: &ReloadingResolver,
    metrics: &Metrics,
    pair: &PemPair,
    what: &str,
) -> Result<(), CertError> {
    let key = certs::certified_key(pair, what)?;
    let (_, not_after) = certs::validity(&pair.cert_pem, what)?;
    resolver.set(key);
    metrics.certificate_loaded(not_after.unix_timestamp());
    Ok(())
}

fn read_pair(cert: &Path, key: &Path) -> Result<PemPair, TlsError> {
    let cert_pem = std::fs::read_to_string(cert).map_err(|source| TlsError::Read {
        path: cert.to_owned(),
        source,
    })?;
    let key_pem = std::fs::read_to_string(key).map_err(|source| TlsError::Read {
        path: key.to_owned(),
        source,
    })?;
    Ok(PemPair { cert_pem, key_pem })
}

/// File mode: loads `cert`/`key` now (an error stops the start), then re-reads them every
/// `interval` until `shutdown` and serves a changed pair as soon as it parses and matches. A
/// half-written pair (new certificate, old key) is skipped until both files agree.
pub async fn load_and_watch_files(
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    resolver: Arc<ReloadingResolver>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, TlsError> {
    let what = cert.display().to_string();
    let mut current = read_pair(&cert, &key)?;
    install(&resolver, &metrics, &current, &what)?;
    tracing::info!(cert = %cert.display(), key = %key.display(), "serving certificate loaded from files");
    Ok(tokio::spawn(async move {
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            let pair = match read_pair(&cert, &key) {
                Ok(pair) => pair,
                Err(err) => {
                    let msg = err.to_string();
                    if last_error.as_deref() != Some(&msg) {
                        tracing::warn!(error = %msg, "cannot re-read the certificate files; keeping the current certificate");
                        last_error = Some(msg);
                    }
                    continue;
                }
            };
            if pair == current {
                continue;
            }
            match install(&resolver, &metrics, &pair, &what) {
                Ok(()) => {
                    tracing::info!(cert = %cert.display(), "serving certificate reloaded");
                    current = pair;
                    last_error = None;
                }
                Err(err) => {
                    let msg = err.to_string();
                    if last_error.as_deref() != Some(&msg) {
                        tracing::warn!(error = %msg, "changed certificate files are not usable yet; keeping the current certificate");
                        last_error = Some(msg);
                    }
                }
            }
        }
    }))
}

/// Self-signed mode: a fresh CA and a serving certificate for `hosts` (DNS names or IPs),
/// valid for `validity`; the CA is written to `ca_out` (for a webhook configuration's
/// `caBundle`) when given.
pub fn self_signed(
    hosts: &[String],
    validity: Duration,
    ca_out: Option<&Path>,
    resolver: &ReloadingResolver,
    metrics: &Metrics,
) -> Result<PemPair, TlsError> {
    let ca = certs::generate_ca("kaito-webhook self-signed CA", validity)?;
    let serving = certs::issue_serving_cert(&ca, hosts, validity)?;
    install(resolver, metrics, &serving, "self-signed certificate")?;
    if let Some(path) = ca_out {
        // Write then rename, so a reader never sees half a CA.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, ca.cert_pem.as_bytes())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| TlsError::Write {
                path: path.to_owned(),
                source,
            })?;
    }
    tracing::info!(hosts = ?hosts, ca_out = ?ca_out, "serving a self-signed certificate");
    Ok(ca)
}
