//! Client authentication of the admission port (`--client-ca-file`, `--client-allowed-names`):
//! the HTTPS server on loopback answers only a client whose certificate the configured CA
//! signed and that carries an allowed name; without `--client-ca-file` the binary says at start
//! that ConfigMap checks at admission are off, and `--check-config` shows it.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kaito_api::admission::{AdmissionConfig, Provisioner};
use kaito_presets::Cloud;
use kaito_webhook::certs::{self, ClientAuth, PemPair};
use kaito_webhook::{AppState, admission_router, server, tls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

mod common;

const API_SERVER: &str = "kube-apiserver-webhook-client";

fn connector(server_ca: &str, client: Option<&PemPair>) -> anyhow::Result<TlsConnector> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(certs::provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(common::roots(server_ca)?);
    let config = match client {
        Some(pair) => {
            let chain = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes())?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// POST /validate; the response text, or the error that ended the exchange.
async fn validate(connector: &TlsConnector, port: u16) -> Result<String, String> {
    let run = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut tls = connector
            .connect(ServerName::try_from("127.0.0.1")?, tcp)
            .await?;
        common::post_validate(&mut tls).await
    };
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_client_certificate_of_the_ca_with_an_allowed_name_is_answered() -> anyhow::Result<()>
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let day = Duration::from_secs(24 * 3600);
    // The server's own certificate.
    let serving_ca = certs::generate_ca("serving CA", day)?;
    let state = AppState::new(AdmissionConfig::new(Cloud::Azure, Provisioner::Aks));
    let serving = certs::issue_serving_cert(&serving_ca, &["127.0.0.1".to_owned()], day)?;
    tls::install(&state.resolver, &state.metrics, &serving, "test")?;
    // The cluster's CA signs the API server's client certificate, and users' certificates.
    let cluster_ca = certs::generate_ca("cluster CA", day)?;
    let api_server = certs::issue_client_cert(&cluster_ca, API_SERVER, day)?;
    let user = certs::issue_client_cert(&cluster_ca, "jane", day)?;
    let other_ca = certs::generate_ca("other CA", day)?;
    let stranger = certs::issue_client_cert(&other_ca, API_SERVER, day)?;

    let auth = ClientAuth {
        ca_pem: cluster_ca.cert_pem.clone(),
        source: "cluster-ca.pem".to_owned(),
        allowed_names: vec![API_SERVER.to_owned()],
    };
    let config = Arc::new(certs::server_config_with_client_auth(
        state.resolver.clone(),
        &auth,
    )?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let server = tokio::spawn(server::serve_tls(
        listener,
        config,
        admission_router(state),
        shutdown_rx,
        Duration::from_secs(2),
        server::Limits::default(),
    ));

    let answer = validate(&connector(&serving_ca.cert_pem, Some(&api_server))?, port).await;
    let text = answer.unwrap_or_else(|e| e);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("\"allowed\":true"),
        "the API server's certificate: {text}"
    );
    for (who, client) in [
        ("no certificate", None),
        ("another CA's certificate", Some(&stranger)),
        ("a user's certificate of the same CA", Some(&user)),
    ] {
        let answer = validate(&connector(&serving_ca.cert_pem, client)?, port).await;
        if let Ok(text) = &answer {
            assert!(
                !text.contains("HTTP/1.1"),
                "{who}: answered: {}",
                text.lines().next().unwrap_or_default()
            );
        }
    }
    let _ = shutdown_tx.send(true);
    server.await?;
    Ok(())
}

#[test]
fn without_a_client_ca_configmap_checks_are_off_and_a_bad_ca_file_is_refused() -> anyhow::Result<()>
{
    let check = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kaito-webhook"))
            .env_clear()
            .args(["--check-config", "--tls-self-signed-for", "127.0.0.1"])
            .args(args)
            .output()
    };
    let out = check(&[])?;
    assert!(out.status.success(), "{out:?}");
    let config: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(config["configMapChecks"], false, "{config:#}");

    let dir = tempfile::tempdir()?;
    let ca = certs::generate_ca("cluster CA", Duration::from_secs(3600))?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem)?;
    let ca_arg = format!("--client-ca-file={}", ca_file.display());
    let out = check(&[&ca_arg, "--client-allowed-names", API_SERVER])?;
    assert!(out.status.success(), "{out:?}");
    let config: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(config["configMapChecks"], true, "{config:#}");
    assert_eq!(config["clientAllowedNames"][0], API_SERVER);

    std::fs::write(&ca_file, "not a certificate")?;
    let out = check(&[&ca_arg])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--client-ca-file") && err.contains("no PEM certificate"),
        "{err}"
    );
    let out = check(&["--client-allowed-names", API_SERVER])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --client-ca-file"));
    Ok(())
}
