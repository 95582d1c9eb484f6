//! `/validate` of a tuning workspace naming a ConfigMap (`tuning.config`): the real admission
//! router with a `kube::Client` whose API server is a fake in this process (it serves the
//! ConfigMaps below, 404 for any other, and records the paths asked for).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kaito_api::Workspace;
use kaito_api::admission::{AdmissionConfig, Provisioner, apply_defaults};
use kaito_presets::Cloud;
use kaito_webhook::{AppState, admission_router};
use serde_json::{Value, json};
use tower::ServiceExt;

const QLORA: &str = "training_config:\n  ModelConfig:\n    torch_dtype: bfloat16\n  \
                     QuantizationConfig:\n    load_in_4bit: true\n  LoraConfig:\n    r: 8\n";

fn cfg() -> AdmissionConfig {
    AdmissionConfig::new(Cloud::Azure, Provisioner::Aks)
}

/// A kube Client answering from `config_maps` (name → data) in namespace `ns`.
fn fake_client(
    config_maps: Vec<(&'static str, Value)>,
    seen: Arc<Mutex<Vec<String>>>,
) -> kube::Client {
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let path = req.uri().path().to_owned();
        if let Ok(mut seen) = seen.lock() {
            seen.push(format!("{} {path}", req.method()));
        }
        let found = config_maps
            .iter()
            .find(|(name, _)| path == format!("/api/v1/namespaces/ns/configmaps/{name}"));
        let (status, body) = match found {
            Some((name, data)) => (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name, "namespace": "ns"}, "data": data}),
            ),
            None => (
                StatusCode::NOT_FOUND,
                json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                       "reason": "NotFound", "code": 404, "message": "configmaps not found"}),
            ),
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

/// A CREATE AdmissionReview of a defaulted qlora workspace with `tuning.config: config`.
fn review(config: &str) -> Vec<u8> {
    let mut ws: Workspace = serde_json::from_value(json!({
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": "tune", "namespace": "ns"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
        "tuning": {
            "preset": {"name": "phi-3-mini-128k-instruct"}, "method": "qlora", "config": config,
            "input": {"urls": ["https://huggingface.co/datasets/x/resolve/main/train.parquet"]},
            "output": {"image": "example.azurecr.io/out:1", "imagePushSecret": "push-secret"},
        },
    }))
    .expect("test workspace");
    apply_defaults(&mut ws, &cfg());
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "7", "operation": "CREATE", "namespace": "ns", "name": "tune",
            "kind": {"group": "kaito.sh", "version": "v1beta1", "kind": "Workspace"},
            "resource": {"group": "kaito.sh", "version": "v1beta1", "resource": "workspaces"},
            "userInfo": {"username": "test"},
            "object": ws,
        }
    })
    .to_string()
    .into_bytes()
}

async fn validate(client: Option<kube::Client>, config: &str) -> anyhow::Result<Value> {
    let mut state = AppState::new(cfg());
    state.client = client;
    let req = Request::post("/validate")
        .header("content-type", "application/json")
        .body(Body::from(review(config)))?;
    let resp = admission_router(state).oneshot(req).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await?.to_bytes();
    let body: Value = serde_json::from_slice(&bytes)?;
    Ok(body["response"].clone())
}

fn config_maps() -> Vec<(&'static str, Value)> {
    vec![
        ("good", json!({"training_config.yaml": QLORA})),
        (
            "eight",
            json!({"training_config.yaml": QLORA.replace("load_in_4bit", "load_in_8bit")}),
        ),
        ("wrong-key", json!({"config.yaml": QLORA})),
    ]
}

#[tokio::test]
async fn a_valid_training_config_map_is_admitted_after_reading_it() -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let resp = validate(Some(fake_client(config_maps(), seen.clone())), "good").await?;
    assert_eq!(resp["allowed"], true, "{resp:#}");
    assert_eq!(
        *seen.lock().expect("lock"),
        vec!["GET /api/v1/namespaces/ns/configmaps/good".to_owned()]
    );
    Ok(())
}

#[tokio::test]
async fn qlora_with_load_in_8bit_is_denied_naming_the_config_map_and_the_field()
-> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let resp = validate(Some(fake_client(config_maps(), seen)), "eight").await?;
    assert_eq!(resp["allowed"], false, "{resp:#}");
    assert_eq!(resp["status"]["code"], 422);
    let message = resp["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "tuning.config: ConfigMap \"eight\" training_config.QuantizationConfig.load_in_8bit \
             must not be true for method qlora"
        ),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_config_map_or_key_is_denied_naming_it() -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let resp = validate(Some(fake_client(config_maps(), seen.clone())), "absent").await?;
    assert_eq!(resp["allowed"], false, "{resp:#}");
    let message = resp["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("tuning.config: ConfigMap \"absent\" not found in namespace \"ns\""),
        "{message}"
    );
    let resp = validate(Some(fake_client(config_maps(), seen)), "wrong-key").await?;
    let message = resp["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("ConfigMap \"wrong-key\" has no key training_config.yaml"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn without_a_client_the_config_map_is_not_checked_and_a_warning_says_so() -> anyhow::Result<()>
{
    let resp = validate(None, "eight").await?;
    assert_eq!(resp["allowed"], true, "{resp:#}");
    let warnings = resp["warnings"].to_string();
    assert!(
        warnings.contains("tuning.config: ConfigMap \\\"eight\\\" was not checked"),
        "{warnings}"
    );
    Ok(())
}

/// A denial about a ConfigMap names the bad keys and the fix, never a value or a line of its
/// text: the ConfigMap is read with the webhook's rights, the answer goes to the requester.
#[tokio::test]
async fn denials_name_the_bad_keys_but_echo_nothing_of_the_config_map() -> anyhow::Result<()> {
    const SECRET: &str = "sk-live-0123456789abcdef";
    let maps = vec![
        (
            "values",
            json!({"training_config.yaml": format!(
                "training_config:\n  QuantizationConfig:\n    load_in_4bit: \"{SECRET}\"\n    \
                 load_in_8bit: [\"{SECRET}\"]\n  TrainingArguments:\n    output_dir: \"/{SECRET}\"\n  \
                 LoraConfig: \"{SECRET}\"\n"
            )}),
        ),
        (
            "syntax",
            json!({"training_config.yaml": format!("training_config:\n  ModelConfig: {{token: \"{SECRET}\"\n")}),
        ),
        (
            "keys",
            json!({"training_config.yaml": format!("training_config:\n  ? [\"{SECRET}\"]\n  : 1\n")}),
        ),
    ];
    for name in ["values", "syntax", "keys"] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let resp = validate(Some(fake_client(maps.clone(), seen)), name).await?;
        assert_eq!(resp["allowed"], false, "{name}: {resp:#}");
        let text = resp.to_string();
        assert!(
            !text.contains(SECRET),
            "{name}: the answer echoes the ConfigMap: {text}"
        );
        let message = resp["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("ConfigMap \"{name}\"")),
            "{message}"
        );
        if name == "values" {
            for key in [
                "QuantizationConfig.load_in_4bit must be true or false",
                "QuantizationConfig.load_in_8bit must be true or false",
                "TrainingArguments.output_dir",
                "training_config.LoraConfig must be a mapping",
            ] {
                assert!(message.contains(key), "{key}: {message}");
            }
        }
        if name == "syntax" {
            assert!(message.contains("is not valid YAML (line "), "{message}");
        }
    }
    Ok(())
}
