//! The real admission and health routers, called with AdmissionReview fixtures in the form the
//! kube-apiserver sends (`tests/fixtures/*.json`).

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kaito_api::admission::{AdmissionConfig, Provisioner};
use kaito_presets::Cloud;
use kaito_webhook::{AppState, admission_router, health_router};
use serde_json::Value;
use tower::ServiceExt;

fn state() -> AppState {
    AppState::new(AdmissionConfig::new(Cloud::Azure, Provisioner::Aks))
}

fn fixture(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

async fn call(app: Router, path: &str, body: Vec<u8>) -> anyhow::Result<(StatusCode, Value)> {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))?;
    let resp = app.oneshot(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "response is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    Ok((status, value))
}

async fn review(path: &str, name: &str) -> anyhow::Result<(StatusCode, Value)> {
    call(admission_router(state()), path, fixture(name)?).await
}

fn response(v: &Value) -> &Value {
    &v["response"]
}

/// Calls `path` of a fresh admission router with `review`.
async fn call_with(path: &str, review: &Value) -> anyhow::Result<(StatusCode, Value)> {
    call(admission_router(state()), path, serde_json::to_vec(review)?).await
}

/// The response's status message ("" when there is none).
fn message(body: &Value) -> &str {
    response(body)["status"]["message"]
        .as_str()
        .unwrap_or_default()
}

/// Applies the response's JSONPatch to the request's object.
fn patched_object(request_fixture: &str, resp: &Value) -> anyhow::Result<Value> {
    let review: Value = serde_json::from_slice(&fixture(request_fixture)?)?;
    let mut object = review["request"]["object"].clone();
    assert_eq!(resp["patchType"], "JSONPatch", "{resp:#}");
    // kube writes the patch bytes as a JSON array of numbers, which the apiserver accepts.
    let bytes: Vec<u8> = serde_json::from_value(resp["patch"].clone())
        .map_err(|e| anyhow::anyhow!("no patch ({e}): {resp:#}"))?;
    let patch: json_patch::Patch = serde_json::from_slice(&bytes)?;
    json_patch::patch(&mut object, &patch)?;
    Ok(object)
}

#[tokio::test]
async fn mutate_seed_fills_defaults_and_keeps_what_was_written() -> anyhow::Result<()> {
    let (status, body) = review("/mutate", "create-seed-phi-3-v1alpha1.json").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let resp = response(&body);
    assert_eq!(resp["uid"], "4b9a7c1e-0d2f-4e6a-8b3c-5d7e9f1a2b3c");
    assert_eq!(resp["allowed"], true, "{resp:#}");
    let object = patched_object("create-seed-phi-3-v1alpha1.json", resp)?;
    assert_eq!(object["resource"]["count"], 1, "{object:#}");
    assert_eq!(object["resource"]["instanceType"], "Standard_NC6s_v3");
    assert_eq!(
        object["resource"]["labelSelector"]["matchLabels"]["apps"],
        "phi-3"
    );
    assert_eq!(
        object["inference"]["preset"]["name"],
        "phi-3-mini-4k-instruct"
    );
    // Fields the typed model does not know, and metadata, are untouched.
    assert_eq!(
        object["metadata"]["managedFields"][0]["manager"],
        "kubectl-client-side-apply"
    );
    Ok(())
}

#[tokio::test]
async fn mutate_without_instance_type_picks_a_size_and_says_why() -> anyhow::Result<()> {
    let (status, body) = review("/mutate", "create-no-instance-type-v1beta1.json").await?;
    assert_eq!(status, StatusCode::OK);
    let resp = response(&body);
    assert_eq!(resp["allowed"], true, "{resp:#}");
    let object = patched_object("create-no-instance-type-v1beta1.json", resp)?;
    let sku = object["resource"]["instanceType"]
        .as_str()
        .unwrap_or_default();
    assert!(sku.starts_with("Standard_N"), "{object:#}");
    let why = object["metadata"]["annotations"]["kaito.sh/sizing"]
        .as_str()
        .unwrap_or_default();
    assert!(!why.is_empty(), "no kaito.sh/sizing annotation: {object:#}");
    // The other annotation is kept.
    assert!(
        object["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    assert!(
        object["resource"]["labelSelector"].is_object(),
        "{object:#}"
    );

    // The defaulted object then validates, and defaulting it again changes nothing.
    let mut again: Value =
        serde_json::from_slice(&fixture("create-no-instance-type-v1beta1.json")?)?;
    again["request"]["object"] = object;
    let bytes = serde_json::to_vec(&again)?;
    let (_, body) = call(admission_router(state()), "/validate", bytes.clone()).await?;
    assert_eq!(response(&body)["allowed"], true, "{body:#}");
    let (_, body) = call(admission_router(state()), "/mutate", bytes).await?;
    assert!(
        response(&body).get("patch").is_none(),
        "defaulting is not idempotent: {body:#}"
    );
    Ok(())
}

#[tokio::test]
async fn validate_seed_allows() -> anyhow::Result<()> {
    let (status, body) = review("/validate", "create-seed-phi-3-v1alpha1.json").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response(&body)["allowed"], true, "{body:#}");
    assert!(response(&body).get("patch").is_none());
    Ok(())
}

#[tokio::test]
async fn validate_denies_phi_3_medium_on_a_16_gib_gpu_with_a_422_message() -> anyhow::Result<()> {
    let (status, body) = review("/validate", "create-deny-phi-3-medium-on-nc6s-v3.json").await?;
    assert_eq!(status, StatusCode::OK);
    let resp = response(&body);
    assert_eq!(resp["allowed"], false, "{resp:#}");
    assert_eq!(resp["status"]["code"], 422);
    assert_eq!(resp["status"]["reason"], "Invalid");
    let msg = resp["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("resource.instanceType"), "{msg}");
    assert!(msg.contains("Standard_NC6s_v3"), "{msg}");
    assert!(msg.contains("phi-3-medium-4k-instruct"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn validate_reports_every_error_one_per_line() -> anyhow::Result<()> {
    let (_, body) = review("/validate", "create-deny-eleven-adapters-and-strength.json").await?;
    let resp = response(&body);
    assert_eq!(resp["allowed"], false, "{resp:#}");
    let msg = resp["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.lines().count() >= 2, "{msg}");
    assert!(msg.contains("inference.adapters"), "{msg}");
    assert!(msg.contains("inference.adapters[3].strength"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn validate_denies_changing_the_preset_on_update() -> anyhow::Result<()> {
    let (_, body) = review("/validate", "update-deny-preset-name-change.json").await?;
    let resp = response(&body);
    assert_eq!(resp["allowed"], false, "{resp:#}");
    let msg = resp["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("inference.preset.name"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn delete_and_status_updates_are_allowed_unchanged() -> anyhow::Result<()> {
    for path in ["/mutate", "/validate"] {
        for name in ["delete-allow.json", "update-status-subresource-allow.json"] {
            let (status, body) = review(path, name).await?;
            assert_eq!(status, StatusCode::OK, "{path} {name}");
            assert_eq!(response(&body)["allowed"], true, "{path} {name}: {body:#}");
            assert!(response(&body).get("patch").is_none(), "{path} {name}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn unknown_kinds_are_allowed_with_a_warning() -> anyhow::Result<()> {
    for path in ["/mutate", "/validate"] {
        let (status, body) = review(path, "unknown-kind-pod.json").await?;
        assert_eq!(status, StatusCode::OK);
        let resp = response(&body);
        assert_eq!(resp["allowed"], true, "{resp:#}");
        assert!(resp.get("patch").is_none());
        let warning = resp["warnings"][0].as_str().unwrap_or_default();
        assert!(
            warning.contains("handles only kaito.sh Workspace"),
            "{resp:#}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_undecodable_workspace_is_denied_naming_the_field() -> anyhow::Result<()> {
    for path in ["/mutate", "/validate"] {
        let (status, body) = review(path, "create-deny-undecodable-count.json").await?;
        assert_eq!(status, StatusCode::OK);
        let resp = response(&body);
        assert_eq!(resp["allowed"], false, "{resp:#}");
        let msg = resp["status"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with("resource.count: "), "{msg}");
    }
    Ok(())
}

#[tokio::test]
async fn malformed_bodies_get_a_400_admission_review() -> anyhow::Result<()> {
    for name in ["malformed-truncated.json", "malformed-no-request.json"] {
        for path in ["/mutate", "/validate"] {
            let (status, body) = review(path, name).await?;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
            assert_eq!(body["kind"], "AdmissionReview");
            assert_eq!(response(&body)["allowed"], false);
            assert!(
                response(&body)["status"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
    }
    for garbage in [&b""[..], b"null", b"[]", b"{\"request\": 5}", b"\xff\xfe"] {
        let (status, body) = call(admission_router(state()), "/validate", garbage.to_vec()).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(response(&body)["allowed"], false);
    }
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_get_a_400_admission_review() -> anyhow::Result<()> {
    let mut st = state();
    st.max_body = 4096;
    // No Content-Length header here: the limit is enforced while reading the body.
    let mut big = fixture("create-seed-phi-3-v1alpha1.json")?;
    big.extend(std::iter::repeat_n(b' ', 8192));
    let (status, body) = call(admission_router(st.clone()), "/mutate", big).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = message(&body);
    assert!(msg.contains("larger than"), "{msg}");
    // A body within the limit that declares a larger Content-Length is refused up front.
    let req = Request::post("/validate")
        .header("content-length", "999999999")
        .body(Body::from(fixture("create-seed-phi-3-v1alpha1.json")?))?;
    let resp = admission_router(st).oneshot(req).await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn admission_review_v1beta1_is_echoed() -> anyhow::Result<()> {
    let mut review: Value = serde_json::from_slice(&fixture("create-seed-phi-3-v1alpha1.json")?)?;
    review["apiVersion"] = Value::String("admission.k8s.io/v1beta1".into());
    let (status, body) = call_with("/validate", &review).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1beta1");
    Ok(())
}

#[tokio::test]
async fn health_and_metrics() -> anyhow::Result<()> {
    let st = state();
    // Not ready until a certificate is loaded.
    let resp = health_router(st.clone())
        .oneshot(Request::get("/readyz").body(Body::empty())?)
        .await?;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let resp = health_router(st.clone())
        .oneshot(Request::get("/healthz").body(Body::empty())?)
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);

    call(
        admission_router(st.clone()),
        "/validate",
        fixture("create-deny-phi-3-medium-on-nc6s-v3.json")?,
    )
    .await?;
    call(
        admission_router(st.clone()),
        "/mutate",
        fixture("create-seed-phi-3-v1alpha1.json")?,
    )
    .await?;
    call(admission_router(st.clone()), "/mutate", b"{".to_vec()).await?;
    let resp = health_router(st)
        .oneshot(Request::get("/metrics").body(Body::empty())?)
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(resp.into_body().collect().await?.to_bytes().to_vec())?;
    for want in [
        r#"kaito_webhook_admissions_total{endpoint="validate",operation="CREATE",kind="Workspace",verdict="denied"} 1"#,
        r#"kaito_webhook_admissions_total{endpoint="mutate",operation="CREATE",kind="Workspace",verdict="patched"} 1"#,
        r#"kaito_webhook_admissions_total{endpoint="mutate",operation="unknown",kind="unknown",verdict="bad_request"} 1"#,
        r#"kaito_webhook_admission_duration_seconds_count{endpoint="mutate"} 2"#,
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    Ok(())
}

#[tokio::test]
async fn admissions_wait_for_a_free_slot_and_get_a_503_review_when_none_frees_up()
-> anyhow::Result<()> {
    let limits = kaito_webhook::server::Limits {
        max_admissions: 1,
        request_timeout: std::time::Duration::from_millis(300),
        ..kaito_webhook::server::Limits::default()
    };
    let st = state().with_limits(&limits);
    // The only slot is taken: the request waits, then is answered 503 with a review.
    let slot = st.admissions.clone().acquire_owned().await?;
    let started = std::time::Instant::now();
    let (status, body) = call(
        admission_router(st.clone()),
        "/validate",
        fixture("create-seed-phi-3-v1alpha1.json")?,
    )
    .await?;
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:#}");
    assert_eq!(response(&body)["allowed"], false);
    let msg = message(&body);
    assert!(
        msg.contains("busy") && msg.contains("--max-concurrent-admissions"),
        "{msg}"
    );
    // A slot freed while waiting is taken: the request is answered normally.
    let waiting = tokio::spawn(call(
        admission_router(st.clone()),
        "/validate",
        fixture("create-seed-phi-3-v1alpha1.json")?,
    ));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(slot);
    let (status, body) = waiting.await??;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response(&body)["allowed"], true, "{body:#}");
    assert_eq!(st.admissions.available_permits(), 1);
    Ok(())
}

#[tokio::test]
async fn a_body_of_too_many_json_values_is_refused_before_it_is_parsed() -> anyhow::Result<()> {
    let mut review: Value = serde_json::from_slice(&fixture("create-seed-phi-3-v1alpha1.json")?)?;
    let n = kaito_webhook::review::MAX_JSON_VALUES;
    review["request"]["object"]["junk"] = Value::Array(vec![Value::from(0); n]);
    let (status, body) = call_with("/mutate", &review).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = message(&body);
    assert!(msg.contains(&format!("more than {n} JSON values")), "{msg}");
    // The same workspace with a modest extra list is handled as before.
    review["request"]["object"]["junk"] = Value::Array(vec![Value::from(0); 100]);
    let (status, body) = call_with("/mutate", &review).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response(&body)["allowed"], true, "{body:#}");
    Ok(())
}
