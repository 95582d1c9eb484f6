//! The HTTPS server on a loopback port, in file mode: replacing the certificate files changes
//! the certificate served to new connections, with no failed request meanwhile; shutdown is
//! graceful.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kaito_api::admission::{AdmissionConfig, Provisioner};
use kaito_presets::Cloud;
use kaito_webhook::certs::{self, PemPair};
use kaito_webhook::{AppState, admission_router, server, tls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

mod common;

fn client_config(ca_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(certs::provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(common::roots(ca_pem)?)
        .with_no_client_auth();
    // A resumed session reports the certificate of the session it resumes: do full handshakes
    // so every connection shows what the server serves now.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// One TLS connection and one POST /validate; returns the served certificate (DER) and the
/// HTTP status line.
async fn one_request(connector: &TlsConnector, port: u16) -> anyhow::Result<(Vec<u8>, String)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1")?;
    let mut tls = connector.connect(name, tcp).await?;
    let served = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| anyhow::anyhow!("no peer certificate"))?;
    let text = common::post_validate(&mut tls).await?;
    let status = text.lines().next().unwrap_or_default().to_owned();
    anyhow::ensure!(
        text.contains("\"allowed\":true"),
        "unexpected response: {text}"
    );
    Ok((served, status))
}

fn der_of(pem: &str) -> anyhow::Result<Vec<u8>> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())?;
    Ok(der.as_ref().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_files_are_served_without_a_failed_request() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    let ca = certs::generate_ca("test CA", Duration::from_secs(3600))?;
    let sans = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let first: PemPair = certs::issue_serving_cert(&ca, &sans, Duration::from_secs(3600))?;
    std::fs::write(&cert_path, &first.cert_pem)?;
    std::fs::write(&key_path, &first.key_pem)?;

    let state = AppState::new(AdmissionConfig::new(Cloud::Azure, Provisioner::Aks));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let watcher = tls::load_and_watch_files(
        cert_path.clone(),
        key_path.clone(),
        Duration::from_millis(50),
        state.resolver.clone(),
        state.metrics.clone(),
        shutdown_rx.clone(),
    )
    .await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server_config = Arc::new(certs::server_config(state.resolver.clone())?);
    let server = tokio::spawn(server::serve_tls(
        listener,
        server_config,
        admission_router(state.clone()),
        shutdown_rx,
        Duration::from_secs(5),
        server::Limits::default(),
    ));

    let connector = TlsConnector::from(client_config(&ca.cert_pem)?);
    let (served, status) = one_request(&connector, port).await?;
    assert_eq!(served, der_of(&first.cert_pem)?);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    // Clients hammer the server while the files are replaced.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let second = certs::issue_serving_cert(&ca, &sans, Duration::from_secs(3600))?;
    let second_der = der_of(&second.cert_pem)?;
    let seen_second = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (connector, ok, failed, stop, seen, want) = (
            connector.clone(),
            ok.clone(),
            failed.clone(),
            stop.clone(),
            seen_second.clone(),
            second_der.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match one_request(&connector, port).await {
                    Ok((served, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if served == want {
                            seen.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(err) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(err.to_string());
                    }
                }
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Not atomic on purpose: for a moment the new certificate sits next to the old key.
    std::fs::write(&cert_path, &second.cert_pem)?;
    tokio::time::sleep(Duration::from_millis(120)).await;
    std::fs::write(&key_path, &second.key_pem)?;

    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen_second.load(Ordering::Relaxed) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for c in clients {
        errors.extend(c.await?);
    }
    assert!(
        seen_second.load(Ordering::Relaxed),
        "the new certificate was never served"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests: {errors:?}"
    );
    assert!(
        ok.load(Ordering::Relaxed) >= 10,
        "too few requests to prove anything"
    );
    let (served, _) = one_request(&connector, port).await?;
    assert_eq!(served, second_der);

    // Graceful shutdown: the server returns and the port is closed.
    shutdown_tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(10), server).await??;
    watcher.await?;
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    Ok(())
}

/// A client that connects and says nothing holds a connection slot only until the header
/// timeout: with one slot, a second client is served once the silent one is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_dropped_after_the_header_timeout_and_frees_its_slot()
-> anyhow::Result<()> {
    let ca = certs::generate_ca("test CA", Duration::from_secs(3600))?;
    let serving =
        certs::issue_serving_cert(&ca, &["127.0.0.1".to_owned()], Duration::from_secs(3600))?;
    let state = AppState::new(AdmissionConfig::new(Cloud::Azure, Provisioner::Aks));
    tls::install(&state.resolver, &state.metrics, &serving, "test")?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let limits = server::Limits {
        max_connections: 1,
        header_timeout: Duration::from_secs(1),
        ..server::Limits::default()
    };
    let server = tokio::spawn(server::serve_tls(
        listener,
        Arc::new(certs::server_config(state.resolver.clone())?),
        admission_router(state),
        shutdown_rx,
        Duration::from_secs(2),
        limits,
    ));
    // The silent client: TCP only, no handshake.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let connector = TlsConnector::from(client_config(&ca.cert_pem)?);
    let (_, status) =
        tokio::time::timeout(Duration::from_secs(10), one_request(&connector, port)).await??;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(5),
        "the second client waited {waited:?} for the only slot"
    );
    // The silent connection was closed by the server.
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), silent.read(&mut buf)).await?;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let _ = shutdown_tx.send(true);
    server.await?;
    Ok(())
}
