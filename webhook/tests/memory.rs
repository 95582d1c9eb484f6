//! Memory under hostile load: the real `kaito-webhook` binary on loopback (self-signed mode),
//! flooded by many concurrent connections that each send crafted AdmissionReviews at the body
//! limit (wide arrays of numbers, many small objects, deep nesting, one long string, in
//! `object` and `oldObject`), to both endpoints. Its peak RSS (`VmHWM` of /proc/PID/status)
//! must stay under the memory limit the chart gives the webhook (`webhook.resources.limits.memory`
//! in charts/kaito/values.yaml), and it must still admit a normal request afterwards.
//!
//! The figures are printed (`--nocapture`):
//! `cargo test -p kaito-webhook --test memory -- --nocapture`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kaito_webhook::certs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const GOOD: &str = include_str!("fixtures/create-seed-phi-3-v1alpha1.json");
/// The body limit the chart sets (`webhook.maxBodyBytes`) and the binary's default.
const BODY_LIMIT: usize = kaito_webhook::server::DEFAULT_MAX_BODY;
/// Clients sending at once.
const CLIENTS: usize = 48;
/// Requests per client (one connection each).
const ROUNDS: usize = 3;

/// `webhook.resources.limits.memory` of the chart, in bytes.
fn chart_memory_limit() -> anyhow::Result<u64> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/kaito/values.yaml");
    let text = std::fs::read_to_string(&path)?;
    let webhook = text
        .split("\nwebhook:\n")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("{}: no webhook section", path.display()))?;
    let section = webhook.split("\n\n").next().unwrap_or(webhook);
    let limits = section
        .lines()
        .find(|l| l.trim_start().starts_with("limits:"))
        .ok_or_else(|| anyhow::anyhow!("webhook.resources.limits not found"))?;
    let value = limits
        .split("memory:")
        .nth(1)
        .map(|v| v.trim().trim_end_matches('}').trim())
        .ok_or_else(|| anyhow::anyhow!("no memory in {limits:?}"))?;
    let mib: u64 = value
        .strip_suffix("Mi")
        .ok_or_else(|| anyhow::anyhow!("memory limit {value:?} is not in Mi"))?
        .parse()?;
    Ok(mib * 1024 * 1024)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `VmHWM` and `VmRSS` of `pid`, in bytes.
fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// An AdmissionReview for a Workspace whose `object` and `oldObject` carry `payload` (raw JSON)
/// in an unknown field, padded to just under the body limit.
fn crafted(payload: &dyn Fn(usize) -> String) -> String {
    let head = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"group":"kaito.sh","version":"v1beta1","kind":"Workspace"},"resource":{"group":"kaito.sh","version":"v1beta1","resource":"workspaces"},"operation":"UPDATE","namespace":"ns","name":"w","userInfo":{"username":"x"},"object":{"apiVersion":"kaito.sh/v1beta1","kind":"Workspace","metadata":{"name":"w","namespace":"ns"},"junk":"#;
    let mid = r#"},"oldObject":{"apiVersion":"kaito.sh/v1beta1","kind":"Workspace","metadata":{"name":"w","namespace":"ns"},"junk":"#;
    let tail = "}}}";
    let room = BODY_LIMIT - head.len() - mid.len() - tail.len() - 64;
    let each = payload(room / 2);
    format!("{head}{each}{mid}{each}{tail}")
}

/// The crafted payloads, each about `n` bytes of JSON.
fn payloads() -> Vec<(&'static str, String)> {
    let wide = |n: usize| format!("[{}0]", "0,".repeat(n / 2 - 1));
    let objects = |n: usize| format!("[{}{{}}]", "{},".repeat(n / 3 - 1));
    let deep = |n: usize| {
        // Nesting as deep as serde_json allows (128), repeated side by side.
        let one = format!("{}{}", "[".repeat(120), "]".repeat(120));
        let count = n / (one.len() + 1) - 1;
        format!("[{}{one}]", format!("{one},").repeat(count))
    };
    let string = |n: usize| format!("\"{}\"", "x".repeat(n - 2));
    vec![
        ("wide array", crafted(&wide)),
        ("many objects", crafted(&objects)),
        ("deep arrays", crafted(&deep)),
        ("long string", crafted(&string)),
    ]
}

fn client_config(ca_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(certs::provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One connection, one POST; the status line and the body (empty when the server closed it).
async fn post(
    connector: &TlsConnector,
    port: u16,
    path: &str,
    body: &str,
) -> anyhow::Result<(String, String)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = connector
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(body.as_bytes()).await?;
    let mut response = Vec::new();
    // A server that closes early (limit reached) is an answer too.
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}

struct Webhook {
    child: Child,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crafted_bodies_from_many_clients_keep_rss_under_the_chart_limit() -> anyhow::Result<()> {
    let limit = chart_memory_limit()?;
    let dir = tempfile::tempdir()?;
    let ca_path = dir.path().join("ca.pem");
    let (port, health) = (free_port()?, free_port()?);
    let mut webhook = Webhook {
        child: Command::new(env!("CARGO_BIN_EXE_kaito-webhook"))
            .args([
                "--bind-address",
                "127.0.0.1",
                "--health-bind-address",
                "127.0.0.1",
            ])
            .args([
                "--port",
                &port.to_string(),
                "--health-port",
                &health.to_string(),
            ])
            .args(["--tls-self-signed-for", "127.0.0.1", "--tls-ca-out"])
            .arg(&ca_path)
            .env("RUST_LOG", "warn")
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .spawn()?,
    };
    let pid = webhook.child.id();
    let started = Instant::now();
    while !ca_path.exists() || TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        anyhow::ensure!(webhook.child.try_wait()?.is_none(), "kaito-webhook exited");
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "kaito-webhook did not listen within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connector = TlsConnector::from(client_config(&std::fs::read_to_string(&ca_path)?)?);
    let idle = memory_of(pid).map(|m| m.1).unwrap_or_default();

    // Watch the memory; kill the server at twice the limit so a failing run does not take the
    // machine's memory with it.
    let peak = Arc::new(AtomicU64::new(0));
    let watcher = {
        let peak = peak.clone();
        tokio::spawn(async move {
            while let Some((hwm, _)) = memory_of(pid) {
                peak.fetch_max(hwm, Ordering::Relaxed);
                if hwm > 2 * limit {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let payloads = Arc::new(payloads());
    let mut tasks = Vec::new();
    let load_started = Instant::now();
    for client in 0..CLIENTS {
        let payloads = payloads.clone();
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for round in 0..ROUNDS {
                let (_, body) = &payloads[(client + round) % payloads.len()];
                let path = if (client + round) % 2 == 0 {
                    "/validate"
                } else {
                    "/mutate"
                };
                match post(&connector, port, path, body).await {
                    Ok((status, _)) => statuses.push(status),
                    Err(err) => statuses.push(format!("error: {err}")),
                }
            }
            statuses
        }));
    }
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for task in tasks {
        for status in task.await? {
            *statuses.entry(status).or_default() += 1;
        }
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    // The server is still up and admits a normal workspace.
    let alive = webhook.child.try_wait()?.is_none();
    let after = if alive {
        post(&connector, port, "/validate", GOOD).await.ok()
    } else {
        None
    };
    if let Some((hwm, _)) = memory_of(pid) {
        peak.fetch_max(hwm, Ordering::Relaxed);
    }
    watcher.abort();
    let peak = peak.load(Ordering::Relaxed);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "memory: {} clients x {} requests of ~{:.1} MiB ({} kinds) in {load_secs:.1} s: \
         idle RSS {:.1} MiB, peak RSS (VmHWM) {:.1} MiB, chart limit {:.0} MiB; answers {statuses:?}",
        CLIENTS,
        ROUNDS,
        mib(BODY_LIMIT as u64),
        payloads.len(),
        mib(idle),
        mib(peak),
        mib(limit),
    );
    for (kind, body) in payloads.iter() {
        anyhow::ensure!(body.len() <= BODY_LIMIT, "{kind}: {} bytes", body.len());
    }
    anyhow::ensure!(
        alive,
        "kaito-webhook died (killed at twice the chart's limit, or crashed): peak {:.1} MiB",
        mib(peak)
    );
    anyhow::ensure!(
        peak < limit,
        "peak RSS {:.1} MiB is over the chart's limit of {:.0} MiB",
        mib(peak),
        mib(limit)
    );
    let (status, body) = after.unwrap_or_default();
    anyhow::ensure!(
        status.contains(" 200 ") && body.contains("\"allowed\":true"),
        "a normal request after the load: {status} {body}"
    );
    Ok(())
}
