//! A Hugging Face id as `inference.preset.name`: the real admission router resolving it through
//! the test harness's local hub (`kaito_e2e::hub`, the hub's own HTTP protocol on loopback), with
//! a `kube::Client` whose API server is a fake in this process (it serves the token Secret).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kaito_api::admission::{
    ANNOTATION_MODEL_FACTS, ANNOTATION_MODEL_REVISION, AdmissionConfig, Provisioner,
};
use kaito_e2e::hub::{Hub, HubRepo};
use kaito_presets::sizing::{self, Mode, RuntimeParams};
use kaito_presets::{Cloud, ModelFacts, PresetCatalog, SkuCatalog};
use kaito_webhook::hub::HubResolver;
use kaito_webhook::{AppState, admission_router};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "hf_secret_token";

/// A tiny Llama-shaped config.json (2 layers, 4 heads, 2 KV heads, head dim 16, 2048 tokens).
fn config(architecture: &str) -> String {
    json!({"architectures": [architecture], "model_type": "llama", "hidden_size": 64,
           "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
           "intermediate_size": 128, "max_position_embeddings": 2048, "vocab_size": 256})
    .to_string()
}

/// A repository `id` with `config.json` for `architecture` and 3 MiB of safetensors weights
/// in two shards.
fn repo(dir: &std::path::Path, id: &str, architecture: &str, token: Option<&str>) -> HubRepo {
    let sub = dir.join(id.replace('/', "--"));
    std::fs::create_dir_all(&sub).expect("dir");
    std::fs::write(sub.join("config.json"), config(architecture)).expect("config");
    std::fs::write(
        sub.join("model-00001-of-00002.safetensors"),
        vec![0u8; 2 << 20],
    )
    .expect("w");
    std::fs::write(
        sub.join("model-00002-of-00002.safetensors"),
        vec![0u8; 1 << 20],
    )
    .expect("w");
    std::fs::write(sub.join("README.md"), "# test model\n").expect("readme");
    HubRepo::from_dir(id, &sub, token).expect("repo")
}

struct Fixture {
    _dir: tempfile::TempDir,
    hub: Hub,
}

fn hub() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let repos = vec![
        repo(dir.path(), "test-org/tiny-llama", "LlamaForCausalLM", None),
        repo(
            dir.path(),
            "test-org/tiny-falcon",
            "FalconForCausalLM",
            None,
        ),
        repo(
            dir.path(),
            "gated-org/tiny-llama",
            "LlamaForCausalLM",
            Some(TOKEN),
        ),
    ];
    Fixture {
        hub: Hub::start(repos).expect("hub"),
        _dir: dir,
    }
}

fn cfg() -> AdmissionConfig {
    AdmissionConfig::new(Cloud::Azure, Provisioner::Aks)
}

/// A kube Client whose API server has Secret `ns/hf` with `HF_TOKEN: token` (and nothing else).
fn fake_client(token: &'static str) -> kube::Client {
    use base64::Engine as _;
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let (status, body) = if req.uri().path() == "/api/v1/namespaces/ns/secrets/hf" {
            let b64 = base64::engine::general_purpose::STANDARD.encode(token);
            (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "hf", "namespace": "ns"}, "data": {"HF_TOKEN": b64}}),
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                       "reason": "NotFound", "code": 404, "message": "not found"}),
            )
        };
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .expect("a valid response"),
            )
        }
    });
    kube::Client::new(service, "default")
}

fn state(endpoint: &str, timeout: Duration, client: Option<kube::Client>) -> AppState {
    let mut state = AppState::new(cfg());
    state.hub = Some(Arc::new(
        HubResolver::new(endpoint, timeout, Duration::from_secs(60)).expect("resolver"),
    ));
    state.client = client;
    state
}

/// A CREATE AdmissionReview of a workspace serving `name`.
fn review(object: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "7", "operation": "CREATE", "namespace": "ns", "name": "w",
            "kind": {"group": "kaito.sh", "version": "v1beta1", "kind": "Workspace"},
            "resource": {"group": "kaito.sh", "version": "v1beta1", "resource": "workspaces"},
            "userInfo": {"username": "test"},
            "object": object,
        }
    })
}

fn workspace(name: &str, secret: Option<&str>) -> Value {
    let mut preset = json!({"name": name});
    if let Some(s) = secret {
        preset["presetOptions"] = json!({"modelAccessSecret": s});
    }
    json!({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
           "metadata": {"name": "w", "namespace": "ns"},
           "resource": {"labelSelector": {"matchLabels": {"apps": "w"}}},
           "inference": {"preset": preset}})
}

async fn call(state: &AppState, path: &str, review: &Value) -> (Value, Duration) {
    let started = Instant::now();
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(review.to_string()))
        .expect("request");
    let resp = admission_router(state.clone())
        .oneshot(req)
        .await
        .expect("answer");
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "always a 200 AdmissionReview"
    );
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let body: Value = serde_json::from_slice(&bytes).expect("JSON");
    (body["response"].clone(), started.elapsed())
}

/// `/mutate`, the patch applied to the object: the object the API server stores.
async fn mutate(state: &AppState, object: &Value) -> (Value, Value) {
    let (resp, _) = call(state, "/mutate", &review(object)).await;
    let mut patched = object.clone();
    if resp["allowed"] == true {
        let bytes: Vec<u8> = serde_json::from_value(resp["patch"].clone()).expect("a patch");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("JSONPatch");
        json_patch::patch(&mut patched, &patch).expect("applies");
    }
    (resp, patched)
}

fn message(resp: &Value) -> &str {
    resp["status"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_hub_id_is_resolved_pinned_sized_and_admitted() {
    let f = hub();
    let commit = f.hub.repo("test-org/tiny-llama").expect("repo").commit;
    let st = state(&f.hub.endpoint(), Duration::from_secs(5), None);
    let (resp, stored) = mutate(&st, &workspace("test-org/tiny-llama", None)).await;
    assert_eq!(resp["allowed"], true, "{resp:#}");
    let annotations = &stored["metadata"]["annotations"];
    assert_eq!(annotations[ANNOTATION_MODEL_REVISION], commit.as_str());
    let facts = ModelFacts::from_json(annotations[ANNOTATION_MODEL_FACTS].as_str().unwrap_or(""))
        .expect("facts recorded");
    assert_eq!(facts.repo, "test-org/tiny-llama");
    assert_eq!(
        facts.weights_bytes,
        3 << 20,
        "both shards, not README/config"
    );
    assert_eq!(facts.kv_bytes_per_token, 2 * 2 * 2 * 16 * 2);
    assert_eq!(facts.context_length, 2048);
    // Sized as the preset these facts make.
    let preset = facts.preset(
        "test-org/tiny-llama",
        PresetCatalog::builtin().runtime_architectures(),
    );
    let (sku, _) = sizing::smallest_fitting_sku(
        &preset,
        Mode::Serve,
        RuntimeParams::default(),
        SkuCatalog::builtin(),
        Cloud::Azure,
    )
    .expect("a size fits");
    assert_eq!(stored["resource"]["instanceType"], sku.name.as_str());
    // /validate resolves the pinned commit again and admits the stored object.
    let (resp, _) = call(&st, "/validate", &review(&stored)).await;
    assert_eq!(resp["allowed"], true, "{resp:#}");
    // The hub was asked for the sizes (blobs=true) and config.json at the commit.
    let paths: Vec<String> = f.hub.requests().into_iter().map(|s| s.path).collect();
    assert!(
        paths
            .iter()
            .any(|p| p == "/api/models/test-org/tiny-llama/revision/main?blobs=true"),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p == &format!("/test-org/tiny-llama/resolve/{commit}/config.json")),
        "{paths:?}"
    );
}

#[tokio::test]
async fn a_revision_in_the_id_is_resolved_and_an_unknown_one_is_refused() {
    let f = hub();
    let commit = f.hub.repo("test-org/tiny-llama").expect("repo").commit;
    let st = state(&f.hub.endpoint(), Duration::from_secs(5), None);
    let (resp, stored) = mutate(
        &st,
        &workspace(&format!("test-org/tiny-llama@{commit}"), None),
    )
    .await;
    assert_eq!(resp["allowed"], true, "{resp:#}");
    assert_eq!(
        stored["metadata"]["annotations"][ANNOTATION_MODEL_REVISION],
        commit.as_str()
    );
    let (resp, _) = mutate(&st, &workspace("test-org/tiny-llama@nope", None)).await;
    assert_eq!(resp["allowed"], false);
    assert_eq!(resp["status"]["code"], 422);
    assert!(
        message(&resp).contains("is not on the Hugging Face hub"),
        "{resp:#}"
    );
    let (resp, _) = mutate(&st, &workspace("test-org/missing", None)).await;
    assert!(message(&resp).contains("test-org/missing@main"), "{resp:#}");
}

#[tokio::test]
async fn forged_facts_are_denied_at_validation() {
    let f = hub();
    let st = state(&f.hub.endpoint(), Duration::from_secs(5), None);
    let (_, mut stored) = mutate(&st, &workspace("test-org/tiny-llama", None)).await;
    let text = stored["metadata"]["annotations"][ANNOTATION_MODEL_FACTS]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut facts = ModelFacts::from_json(&text).expect("facts");
    facts.weights_bytes = 1;
    stored["metadata"]["annotations"][ANNOTATION_MODEL_FACTS] = json!(facts.to_json());
    let (resp, _) = call(&st, "/validate", &review(&stored)).await;
    assert_eq!(resp["allowed"], false);
    assert!(
        message(&resp).contains("is not what the Hugging Face hub says"),
        "{resp:#}"
    );
}

#[tokio::test]
async fn an_architecture_the_runtime_cannot_load_is_denied_with_the_list() {
    let f = hub();
    let st = state(&f.hub.endpoint(), Duration::from_secs(5), None);
    let (resp, stored) = mutate(&st, &workspace("test-org/tiny-falcon", None)).await;
    assert_eq!(
        resp["allowed"], true,
        "mutation records the facts: {resp:#}"
    );
    let (resp, _) = call(&st, "/validate", &review(&stored)).await;
    assert_eq!(resp["allowed"], false);
    let msg = message(&resp);
    assert!(
        msg.contains("inference.preset.name")
            && msg.contains("FalconForCausalLM")
            && msg.contains(&PresetCatalog::builtin().runtime_architectures().join(", ")),
        "{msg}"
    );
}

#[tokio::test]
async fn a_gated_repository_is_read_with_the_token_of_model_access_secret() {
    let f = hub();
    let endpoint = f.hub.endpoint();
    let timeout = Duration::from_secs(5);
    let id = "gated-org/tiny-llama";
    // No Secret named: the denial says to name one.
    let st = state(&endpoint, timeout, Some(fake_client(TOKEN)));
    let (resp, _) = mutate(&st, &workspace(id, None)).await;
    assert_eq!(resp["allowed"], false);
    assert!(message(&resp).contains("modelAccessSecret"), "{resp:#}");
    // A Secret named, but the webhook does not authenticate its callers: it reads no Secret.
    let st = state(&endpoint, timeout, None);
    let (resp, _) = mutate(&st, &workspace(id, Some("hf"))).await;
    assert_eq!(resp["allowed"], false);
    assert!(message(&resp).contains("webhook.clientAuth"), "{resp:#}");
    // A wrong token.
    let st = state(&endpoint, timeout, Some(fake_client("hf_wrong")));
    let (resp, _) = mutate(&st, &workspace(id, Some("hf"))).await;
    assert_eq!(resp["allowed"], false);
    assert!(message(&resp).contains("refused the token"), "{resp:#}");
    // The right one: resolved, recorded as gated, admitted with the Secret.
    let st = state(&endpoint, timeout, Some(fake_client(TOKEN)));
    let (resp, stored) = mutate(&st, &workspace(id, Some("hf"))).await;
    assert_eq!(resp["allowed"], true, "{resp:#}");
    let facts = ModelFacts::from_json(
        stored["metadata"]["annotations"][ANNOTATION_MODEL_FACTS]
            .as_str()
            .unwrap_or(""),
    )
    .expect("facts");
    assert!(facts.gated);
    let (resp, _) = call(&st, "/validate", &review(&stored)).await;
    assert_eq!(resp["allowed"], true, "{resp:#}");
    // The hub saw the token only on the gated repository's requests.
    let statuses: Vec<u16> = f.hub.requests().iter().map(|s| s.status).collect();
    assert!(statuses.contains(&401) && statuses.contains(&403) && statuses.contains(&200));
}

#[tokio::test]
async fn a_hub_that_does_not_answer_is_a_retryable_denial_within_the_deadline() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            open.push(conn);
        }
    });
    let st = state(&format!("http://{addr}"), Duration::from_secs(1), None);
    let (resp, elapsed) = call(
        &st,
        "/mutate",
        &review(&workspace("test-org/tiny-llama", None)),
    )
    .await;
    held.abort();
    assert_eq!(resp["allowed"], false, "never a silent allow: {resp:#}");
    assert_eq!(resp["status"]["code"], 503);
    assert_eq!(resp["status"]["reason"], "ServiceUnavailable");
    let msg = message(&resp);
    assert!(
        msg.contains("did not answer within 1 s") && msg.contains("try again"),
        "{msg}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    // A port nobody listens on: unreachable, also retryable.
    drop(held);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let st = state(
        &format!("http://127.0.0.1:{port}"),
        Duration::from_secs(1),
        None,
    );
    let (resp, _) = call(
        &st,
        "/mutate",
        &review(&workspace("test-org/tiny-llama", None)),
    )
    .await;
    assert_eq!(resp["status"]["code"], 503, "{resp:#}");
    assert!(message(&resp).contains("could not be reached"), "{resp:#}");
}

#[tokio::test]
async fn catalog_presets_never_ask_the_hub() {
    let st = state("http://127.0.0.1:9", Duration::from_secs(1), None);
    let (resp, _) = call(
        &st,
        "/mutate",
        &review(&workspace("phi-3-mini-4k-instruct", None)),
    )
    .await;
    assert_eq!(resp["allowed"], true, "{resp:#}");
}
