//! Secret mode against a fake API server in this process (Secrets and the two webhook
//! configurations, resourceVersions, injectable 409 Conflicts): the CA key lives in its own
//! Secret, the caBundle is written before the certificate it must verify is served, and a
//! conflicting write is retried at once.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use kaito_webhook::certs::ReloadingResolver;
use kaito_webhook::metrics::Metrics;
use kaito_webhook::secret::{self, SecretConfig};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

const NS: &str = "kaito";
const DAY: u64 = 24 * 3600;

#[derive(Default)]
struct World {
    /// path → object
    objects: BTreeMap<String, Value>,
    next_rv: u64,
    /// "METHOD path served=<which>" per call.
    log: Vec<String>,
    /// PUTs of these paths answered 409 this many more times.
    conflicts: BTreeMap<String, u32>,
}

fn status(code: u16, reason: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
           "reason": reason, "message": reason})
}

/// A kube Client over `world`; each call records which certificate `resolver` served then.
fn fake_client(world: Arc<Mutex<World>>, resolver: Arc<ReloadingResolver>) -> kube::Client {
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let world = world.clone();
        let resolver = resolver.clone();
        async move {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let bytes = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let sent: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let mut w = world.lock().expect("world");
            let served = resolver
                .current_der()
                .map(|d| format!("{}", d.len() + d.iter().map(|b| *b as usize).sum::<usize>()))
                .unwrap_or_else(|| "none".to_owned());
            w.log.push(format!("{method} {path} served={served}"));
            let (code, body) = if method == Method::GET {
                match w.objects.get(&path) {
                    Some(obj) => (200, obj.clone()),
                    None => (404, status(404, "NotFound")),
                }
            } else if method == Method::POST {
                let name = sent["metadata"]["name"].as_str().unwrap_or_default();
                let key = format!("{path}/{name}");
                if w.objects.contains_key(&key) {
                    (409, status(409, "AlreadyExists"))
                } else {
                    w.next_rv += 1;
                    let mut obj = sent.clone();
                    obj["metadata"]["resourceVersion"] = json!(w.next_rv.to_string());
                    w.objects.insert(key, obj.clone());
                    (201, obj)
                }
            } else if method == Method::PUT {
                let pending = w.conflicts.get(&path).copied().unwrap_or(0);
                let stored_rv = w
                    .objects
                    .get(&path)
                    .map(|o| o["metadata"]["resourceVersion"].clone());
                if pending > 0 {
                    w.conflicts.insert(path.clone(), pending - 1);
                    // Someone else wrote meanwhile: the stored version moves on.
                    w.next_rv += 1;
                    let rv = w.next_rv.to_string();
                    if let Some(obj) = w.objects.get_mut(&path) {
                        obj["metadata"]["resourceVersion"] = json!(rv);
                    }
                    (409, status(409, "Conflict"))
                } else if stored_rv.as_ref() != Some(&sent["metadata"]["resourceVersion"]) {
                    (409, status(409, "Conflict"))
                } else {
                    w.next_rv += 1;
                    let mut obj = sent.clone();
                    obj["metadata"]["resourceVersion"] = json!(w.next_rv.to_string());
                    w.objects.insert(path.clone(), obj.clone());
                    (200, obj)
                }
            } else {
                (405, status(405, "MethodNotAllowed"))
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .status(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST))
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .expect("a valid response"),
            )
        }
    });
    kube::Client::new(service, "default")
}

const MUTATING: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/kaito-webhook";
const VALIDATING: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/kaito-webhook";
const SERVING: &str = "/api/v1/namespaces/kaito/secrets/kaito-webhook-cert";
const CA: &str = "/api/v1/namespaces/kaito/secrets/kaito-webhook-ca";

fn world() -> Arc<Mutex<World>> {
    let mut w = World::default();
    for (path, kind) in [
        (MUTATING, "MutatingWebhookConfiguration"),
        (VALIDATING, "ValidatingWebhookConfiguration"),
    ] {
        w.next_rv += 1;
        w.objects.insert(
            path.to_owned(),
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                   "metadata": {"name": "kaito-webhook", "resourceVersion": w.next_rv.to_string()},
                   "webhooks": [{"name": "x.kaito.sh", "admissionReviewVersions": ["v1"],
                                 "sideEffects": "None",
                                 "clientConfig": {"service": {"name": "kaito-webhook",
                                                              "namespace": NS}}}]}),
        );
    }
    Arc::new(Mutex::new(w))
}

fn cfg() -> SecretConfig {
    SecretConfig {
        namespace: NS.into(),
        secret_name: "kaito-webhook-cert".into(),
        ca_secret_name: "kaito-webhook-ca".into(),
        service_name: "kaito-webhook".into(),
        extra_sans: vec![],
        mutating_webhook: Some("kaito-webhook".into()),
        validating_webhook: Some("kaito-webhook".into()),
        ca_validity: Duration::from_secs(10 * DAY),
        cert_validity: Duration::from_secs(DAY),
        rotate_before: Duration::from_secs(3600),
        check_interval: Duration::from_secs(3600),
    }
}

/// A fresh world, a resolver serving nothing yet, and a client over both.
fn setup() -> (Arc<Mutex<World>>, Arc<ReloadingResolver>, kube::Client) {
    let world = world();
    let resolver = Arc::new(ReloadingResolver::new());
    let client = fake_client(world.clone(), resolver.clone());
    (world, resolver, client)
}

/// The text of a base64 string value ("" when absent or not base64 UTF-8).
fn decoded(value: &Value) -> String {
    value
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

fn text(obj: &Value, key: &str) -> String {
    decoded(&obj["data"][key])
}

fn bundle_of(obj: &Value) -> String {
    decoded(&obj["webhooks"][0]["clientConfig"]["caBundle"])
}

/// The index in `log` of the first entry starting with `prefix`.
fn at(log: &[String], prefix: &str) -> usize {
    log.iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {log:#?}"))
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default()
}

#[tokio::test]
async fn first_start_publishes_the_bundle_before_serving_and_keeps_the_ca_key_apart()
-> anyhow::Result<()> {
    let (world, resolver, client) = setup();
    let mut current = None;
    secret::reconcile_once(&client, &cfg(), &resolver, &Metrics::new(), &mut current).await?;

    let w = world.lock().expect("world");
    let log = &w.log;
    let put_mutating = at(log, &format!("PUT {MUTATING}"));
    let put_validating = at(log, &format!("PUT {VALIDATING}"));
    let create_serving = at(log, "POST /api/v1/namespaces/kaito/secrets served=none");
    // Both bundles are written before the serving Secret, and nothing was served meanwhile.
    assert!(
        put_mutating < put_validating && put_validating < log.len(),
        "{log:#?}"
    );
    assert!(
        log[put_mutating].ends_with("served=none") && log[put_validating].ends_with("served=none"),
        "{log:#?}"
    );
    let posts: Vec<&String> = log.iter().filter(|l| l.starts_with("POST")).collect();
    assert_eq!(
        posts.len(),
        2,
        "the CA Secret, then the serving Secret: {log:#?}"
    );
    assert!(put_validating < log.iter().rposition(|l| l.starts_with("POST")).unwrap_or(0));
    assert!(create_serving < log.len());
    assert!(resolver.is_loaded());

    // The serving Secret has no CA key; the CA Secret has it; the bundle holds the CA.
    let serving = &w.objects[SERVING];
    let ca = &w.objects[CA];
    assert!(serving["data"].get("ca-key.pem").is_none(), "{serving:#}");
    assert!(text(ca, "ca-key.pem").contains("PRIVATE KEY"));
    let ca_pem = text(ca, "ca-cert.pem");
    assert_eq!(bundle_of(&w.objects[MUTATING]), ca_pem);
    assert_eq!(bundle_of(&w.objects[VALIDATING]), ca_pem);
    assert_eq!(
        resolver.current_der(),
        Some(der(&text(serving, "server-cert.pem")))
    );
    Ok(())
}

#[tokio::test]
async fn rotation_to_a_new_ca_writes_both_cas_first_retrying_conflicts_then_serves()
-> anyhow::Result<()> {
    let (world, resolver, client) = setup();
    let metrics = Metrics::new();
    let mut current = None;
    secret::reconcile_once(&client, &cfg(), &resolver, &metrics, &mut current).await?;
    let (old_ca, old_cert) = {
        let w = world.lock().expect("world");
        (
            text(&w.objects[CA], "ca-cert.pem"),
            text(&w.objects[SERVING], "server-cert.pem"),
        )
    };
    let old_served = resolver.current_der();
    assert_eq!(old_served, Some(der(&old_cert)));

    // Certificates now live 20 days and are renewed 2 days ahead: the 1-day certificate is
    // due, and the 10-day CA cannot sign a 20-day one: a new CA.
    let mut later = cfg();
    later.cert_validity = Duration::from_secs(20 * DAY);
    later.rotate_before = Duration::from_secs(2 * DAY);
    later.ca_validity = Duration::from_secs(100 * DAY);
    {
        let mut w = world.lock().expect("world");
        w.log.clear();
        // Another writer touches the mutating configuration twice meanwhile.
        w.conflicts.insert(MUTATING.to_owned(), 2);
    }
    let started = std::time::Instant::now();
    secret::reconcile_once(&client, &later, &resolver, &metrics, &mut current).await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "conflicts are retried at once, not on the next pass"
    );

    let w = world.lock().expect("world");
    let log = &w.log;
    let puts: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with(&format!("PUT {MUTATING}")))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(puts.len(), 3, "two conflicts, then the write: {log:#?}");
    let put_validating = at(log, &format!("PUT {VALIDATING}"));
    let put_serving = at(log, &format!("PUT {SERVING}"));
    assert!(
        puts[2] < put_serving && put_validating < put_serving,
        "bundles before the serving Secret: {log:#?}"
    );
    // While the bundles were written, the old certificate was still being served.
    let old_mark = log[0]
        .rsplit("served=")
        .next()
        .unwrap_or_default()
        .to_owned();
    for i in puts.iter().copied().chain([put_validating, put_serving]) {
        assert!(log[i].ends_with(&format!("served={old_mark}")), "{log:#?}");
    }
    let new_ca = text(&w.objects[CA], "ca-cert.pem");
    assert_ne!(new_ca, old_ca);
    let bundle = bundle_of(&w.objects[MUTATING]);
    assert!(
        bundle.starts_with(&new_ca) && bundle.ends_with(&old_ca),
        "{bundle}"
    );
    assert_eq!(bundle_of(&w.objects[VALIDATING]), bundle);
    // Now the new certificate is served.
    let new_cert = text(&w.objects[SERVING], "server-cert.pem");
    assert_ne!(new_cert, old_cert);
    assert_eq!(resolver.current_der(), Some(der(&new_cert)));
    Ok(())
}

#[tokio::test]
async fn a_serving_secret_of_the_old_layout_gives_its_ca_to_the_ca_secret() -> anyhow::Result<()> {
    let (world, resolver, client) = setup();
    let cfg = cfg();
    // One Secret with everything, as earlier versions wrote it.
    let ca = kaito_webhook::certs::generate_ca("old layout", cfg.ca_validity)?;
    let serving = kaito_webhook::certs::issue_serving_cert(&ca, &cfg.sans(), cfg.cert_validity)?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    world.lock().expect("world").objects.insert(
        SERVING.to_owned(),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "kaito-webhook-cert", "namespace": NS, "resourceVersion": "50",
                            "annotations": {"kaito.sh/webhook-cert-sans": cfg.sans().join(",")}},
               "data": {"server-cert.pem": b64(&serving.cert_pem),
                        "server-key.pem": b64(&serving.key_pem),
                        "ca-cert.pem": b64(&ca.cert_pem), "ca-key.pem": b64(&ca.key_pem)}}),
    );
    let mut current = None;
    secret::reconcile_once(&client, &cfg, &resolver, &Metrics::new(), &mut current).await?;
    let w = world.lock().expect("world");
    assert!(w.objects[SERVING]["data"].get("ca-key.pem").is_none());
    assert_eq!(text(&w.objects[CA], "ca-key.pem"), ca.key_pem);
    assert_eq!(bundle_of(&w.objects[MUTATING]), ca.cert_pem);
    Ok(())
}
