//! Property tests (the fuzzing of issue 4) over AdmissionReview decoding, defaulting and
//! validation, with workspace-shaped JSON mixed with arbitrary values, and with raw bytes:
//!
//! - `handle` never panics and always answers an AdmissionReview (HTTP 200 or 400);
//! - defaulting is idempotent, through the whole path: mutate, apply the patch, mutate again
//!   gives no patch;
//! - an object that validates still validates once defaulted, and a defaulted object that
//!   validates is left alone by defaulting.
//!
//! A quick run is part of `cargo test` (PROPTEST_CASES, default 256 per property). The long run:
//! `PROPTEST_CASES=2000000 cargo test -p kaito-webhook --release --test fuzz -- --nocapture`
//! (see webhook/README.md for the figures).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use kaito_api::admission::{AdmissionConfig, Provisioner, apply_defaults, validate};
use kaito_presets::{Cloud, PresetCatalog, SkuCatalog};
use kaito_webhook::review::{self, Endpoint};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

static CONFIGS: LazyLock<Vec<AdmissionConfig>> = LazyLock::new(|| {
    vec![
        AdmissionConfig::new(Cloud::Azure, Provisioner::Aks),
        AdmissionConfig::new(Cloud::Azure, Provisioner::Byo),
        AdmissionConfig::new(Cloud::Aws, Provisioner::Karpenter),
    ]
});
static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

fn presets() -> Vec<String> {
    let mut names: Vec<String> = PresetCatalog::builtin()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    names.extend(["falcon-7b".into(), "no-such-model".into(), "".into()]);
    names
}

fn skus() -> Vec<String> {
    let catalog = SkuCatalog::builtin();
    let mut names: Vec<String> = catalog
        .list(Cloud::Azure)
        .iter()
        .map(|s| s.name.clone())
        .collect();
    names.extend(catalog.list(Cloud::Aws).iter().map(|s| s.name.clone()));
    names.extend([
        "Standard_D4s_v3".into(),
        "Standard_NC6s_v9".into(),
        "".into(),
    ]);
    names
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop::option::weighted(0.7, s).boxed()
}

fn strength() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("1.0")),
        Just(json!("0.5")),
        Just(json!("0")),
        Just(json!("1.5")),
        Just(json!("-0.1")),
        Just(json!("abc")),
        Just(json!("NaN")),
        Just(json!(1.0)),
    ]
}

fn url() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("https://huggingface.co/datasets/x/train.parquet".to_owned()),
        Just("http://169.254.169.254/x".to_owned()),
        Just("http://localhost/x".to_owned()),
        Just("http://10.0.0.1/x".to_owned()),
        Just("http://[::1]/x".to_owned()),
        Just("ftp://example.com/x".to_owned()),
        Just("http://0x7f000001/x".to_owned()),
        ".{0,20}",
    ]
}

fn adapter() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["a", "b", "c", "Bad_Name", ""]),
        opt(Just("example.azurecr.io/adapter:1".to_owned())),
        opt(prop::collection::vec(url(), 0..3)),
        opt(strength()),
    )
        .prop_map(|(name, image, urls, strength)| {
            let mut source = json!({"name": name});
            if let Some(image) = image {
                source["image"] = json!(image);
            }
            if let Some(urls) = urls {
                source["urls"] = json!(urls);
            }
            let mut a = json!({"source": source});
            if let Some(s) = strength {
                a["strength"] = s;
            }
            a
        })
}

fn workspace() -> impl Strategy<Value = Value> {
    let resource = (
        opt(prop::sample::select(skus())),
        opt(-2i32..5),
        opt(Just(json!({"matchLabels": {"apps": "x"}}))),
        opt(prop::collection::vec("[a-z]{1,6}", 0..3)),
    )
        .prop_map(|(sku, count, selector, preferred)| {
            let mut r = json!({});
            if let Some(s) = sku {
                r["instanceType"] = json!(s);
            }
            if let Some(c) = count {
                r["count"] = json!(c);
            }
            if let Some(s) = selector {
                r["labelSelector"] = s;
            }
            if let Some(p) = preferred {
                r["preferredNodes"] = json!(p);
            }
            r
        });
    let inference = (
        opt(prop::sample::select(presets())),
        opt(prop::collection::vec(adapter(), 0..12)),
        opt(Just(
            json!({"spec": {"containers": [{"name": "c", "image": "i"}]}}),
        )),
    )
        .prop_map(|(preset, adapters, template)| {
            let mut i = json!({});
            if let Some(p) = preset {
                i["preset"] = json!({"name": p});
            }
            if let Some(a) = adapters {
                i["adapters"] = json!(a);
            }
            if let Some(t) = template {
                i["template"] = t;
            }
            i
        });
    let tuning = (
        opt(prop::sample::select(presets())),
        opt(prop::sample::select(vec!["qlora", "lora", "full", ""])),
        opt(prop::collection::vec(url(), 0..3)),
        opt(Just("example.azurecr.io/data:1".to_owned())),
        opt(Just("example.azurecr.io/out:1".to_owned())),
        opt(Just("push-secret".to_owned())),
    )
        .prop_map(|(preset, method, urls, in_image, out_image, secret)| {
            let mut t = json!({});
            if let Some(p) = preset {
                t["preset"] = json!({"name": p});
            }
            if let Some(m) = method {
                t["method"] = json!(m);
            }
            let mut input = json!({"name": "data"});
            if let Some(u) = urls {
                input["urls"] = json!(u);
            }
            if let Some(i) = in_image {
                input["image"] = json!(i);
            }
            t["input"] = input;
            let mut output = json!({});
            if let Some(i) = out_image {
                output["image"] = json!(i);
            }
            if let Some(s) = secret {
                output["imagePushSecret"] = json!(s);
            }
            t["output"] = output;
            t
        });
    (
        prop::sample::select(vec!["kaito.sh/v1alpha1", "kaito.sh/v1beta1"]),
        any::<bool>(),
        opt(resource),
        opt(inference),
        opt(tuning),
        // Arbitrary junk at an arbitrary place, sometimes.
        prop::option::weighted(
            0.2,
            (
                prop::sample::select(vec!["resource", "inference", "tuning", "metadata", "x"]),
                "[a-zA-Z]{0,10}",
                arb_json(),
            ),
        ),
    )
        .prop_map(|(api, bypass, resource, inference, tuning, junk)| {
            let mut annotations = json!({});
            if bypass {
                annotations["kaito.sh/bypass-resource-checks"] = json!("True");
            }
            let mut ws = json!({
                "apiVersion": api,
                "kind": "Workspace",
                "metadata": {"name": "w", "namespace": "ns", "annotations": annotations},
            });
            if let Some(r) = resource {
                ws["resource"] = r;
            }
            if let Some(i) = inference {
                ws["inference"] = i;
            }
            if let Some(t) = tuning {
                ws["tuning"] = t;
            }
            if let Some((top, key, value)) = junk {
                if key.is_empty() {
                    ws[top] = value;
                } else if let Some(obj) = ws.get_mut(top).and_then(Value::as_object_mut) {
                    obj.insert(key, value);
                } else {
                    ws[top] = json!({ key: value });
                }
            }
            ws
        })
}

fn review_of(op: &str, object: &Value, old: Option<&Value>) -> Value {
    let version = object["apiVersion"]
        .as_str()
        .unwrap_or("kaito.sh/v1beta1")
        .rsplit('/')
        .next()
        .unwrap_or("v1beta1")
        .to_owned();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "kaito.sh", "version": version, "kind": "Workspace"},
            "resource": {"group": "kaito.sh", "version": version, "resource": "workspaces"},
            "name": "w",
            "namespace": "ns",
            "operation": op,
            "userInfo": {"username": "fuzz"},
            "object": object,
            "oldObject": old,
            "dryRun": false,
        }
    })
}

/// Checks the answer is a well-formed AdmissionReview; returns its response.
fn answered(
    endpoint: Endpoint,
    body: &[u8],
    cfg: &AdmissionConfig,
) -> Result<(u16, Value), TestCaseError> {
    EXECUTIONS.fetch_add(1, Ordering::Relaxed);
    let out = review::handle(endpoint, body, cfg);
    prop_assert!(
        out.http_status == 200 || out.http_status == 400,
        "status {}",
        out.http_status
    );
    let v: Value =
        serde_json::from_slice(&out.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&v["kind"], "AdmissionReview");
    prop_assert!(v["response"]["allowed"].is_boolean());
    Ok((out.http_status, v["response"].clone()))
}

fn patch_of(resp: &Value) -> Result<Option<json_patch::Patch>, TestCaseError> {
    if resp.get("patch").is_none() {
        return Ok(None);
    }
    let bytes: Vec<u8> = serde_json::from_value(resp["patch"].clone())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let patch = serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(Some(patch))
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), mutate in any::<bool>()) {
        let endpoint = if mutate { Endpoint::Mutate } else { Endpoint::Validate };
        let (status, _) = answered(endpoint, &bytes, &CONFIGS[0])?;
        prop_assert_eq!(status, 400);
    }

    #[test]
    fn arbitrary_json_reviews_never_panic(request in arb_json(), object in arb_json(), mutate in any::<bool>()) {
        let endpoint = if mutate { Endpoint::Mutate } else { Endpoint::Validate };
        let mut review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
        answered(endpoint, &serde_json::to_vec(&review).unwrap_or_default(), &CONFIGS[0])?;
        review = review_of("CREATE", &object, None);
        answered(endpoint, &serde_json::to_vec(&review).unwrap_or_default(), &CONFIGS[0])?;
    }

    #[test]
    fn workspaces_default_idempotently_and_validate_consistently(
        ws in workspace(),
        old in workspace(),
        cfg_index in 0usize..3,
    ) {
        let cfg = &CONFIGS[cfg_index];
        let body = serde_json::to_vec(&review_of("CREATE", &ws, None)).unwrap_or_default();
        let (_, vresp) = answered(Endpoint::Validate, &body, cfg)?;
        let (_, mresp) = answered(Endpoint::Mutate, &body, cfg)?;
        // Updates against an arbitrary old object never panic either.
        let update = serde_json::to_vec(&review_of("UPDATE", &ws, Some(&old))).unwrap_or_default();
        answered(Endpoint::Validate, &update, cfg)?;
        answered(Endpoint::Mutate, &update, cfg)?;

        let Ok(typed) = review::workspace_from_value(&ws) else {
            // Not a Workspace: both endpoints deny.
            prop_assert_eq!(&vresp["allowed"], false);
            prop_assert_eq!(&mresp["allowed"], false);
            return Ok(());
        };
        prop_assert_eq!(&mresp["allowed"], true, "mutate denied a decodable workspace: {}", mresp);

        // Pure defaulting is idempotent.
        let mut once = typed.clone();
        apply_defaults(&mut once, cfg);
        let mut twice = once.clone();
        apply_defaults(&mut twice, cfg);
        prop_assert_eq!(&once, &twice);

        // Through the wire: the patch applies to the object sent, and mutating the result again
        // gives no patch.
        let mut patched = ws.clone();
        if let Some(patch) = patch_of(&mresp)? {
            json_patch::patch(&mut patched, &patch).map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}")))?;
        }
        let defaulted = review::workspace_from_value(&patched).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&defaulted, &once);
        let body2 = serde_json::to_vec(&review_of("CREATE", &patched, None)).unwrap_or_default();
        let (_, mresp2) = answered(Endpoint::Mutate, &body2, cfg)?;
        prop_assert!(mresp2.get("patch").is_none(), "second mutate patched again: {}", mresp2);

        // Valid stays valid once defaulted.
        let before = validate(None, &typed, cfg);
        let after = validate(None, &once, cfg);
        if before.is_allowed() {
            prop_assert!(after.is_allowed(), "valid {} became invalid once defaulted: {}", ws, after.message());
        }
        let (_, vresp2) = answered(Endpoint::Validate, &body2, cfg)?;
        prop_assert_eq!(&vresp2["allowed"], &Value::Bool(after.is_allowed()));
        // Updating a valid defaulted object to itself is allowed (no immutability violation;
        // some create-only rules do not run on updates, so the converse need not hold).
        if after.is_allowed() {
            let same = serde_json::to_vec(&review_of("UPDATE", &patched, Some(&patched))).unwrap_or_default();
            let (_, vresp3) = answered(Endpoint::Validate, &same, cfg)?;
            prop_assert_eq!(&vresp3["allowed"], true, "{}", vresp3);
        }
    }
}

#[test]
fn zz_report_executions() {
    // Printed with --nocapture at the end of a long run (test order is alphabetical within a
    // thread only; with --test-threads=1 this runs last).
    eprintln!(
        "fuzz: handle() executions so far in this process: {}",
        EXECUTIONS.load(Ordering::Relaxed)
    );
}
