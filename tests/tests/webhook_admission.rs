//! The admission webhook (`kaito-webhook`) against the real kube-apiserver of the local cluster.
//!
//! Each test starts its own `kaito-webhook` process ([`kaito_e2e::WebhookProcess`]) on
//! 127.0.0.1 with a self-signed certificate (`--tls-self-signed-for 127.0.0.1,localhost
//! --tls-ca-out FILE`; `KUBECONFIG` is the cluster's, for the ConfigMaps tuning workspaces
//! name), registers a Mutating and a Validating WebhookConfiguration for `kaito.sh` workspaces
//! (v1alpha1 and v1beta1, failurePolicy Fail, sideEffects None) at
//! `https://127.0.0.1:PORT/mutate|validate`, scoped by a `namespaceSelector` to a label only
//! this test's namespace carries (so other tests in the same cluster are untouched), and
//! removes both configurations and stops the process (SIGTERM, graceful) at the end, also when
//! the test fails.
//!
//! The binary is taken from `KAITO_WEBHOOK_BIN`, else from the test binary's own target
//! profile dir (`target/debug/kaito-webhook`): build it first with
//! `cargo build -p kaito-webhook --bin kaito-webhook`.

use anyhow::{Context, Result};
use kaito_e2e::{WebhookProcess, example_files, json_subset};
use serde_json::Value;

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn webhook_defaults_seed_examples_sizing_and_dry_run() -> Result<()> {
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    let ns = cluster.namespace("webhook-defaults")?;
    let mut hook = WebhookProcess::start(cluster, &ns, "aks")?;

    // Each seed is accepted, stored as written, with the defaults filled in.
    for file in example_files()? {
        let path = file.display().to_string();
        let seed: Value = serde_yaml::from_str(&std::fs::read_to_string(&file)?)?;
        let name = seed["metadata"]["name"]
            .as_str()
            .context("seed has a name")?
            .to_owned();
        let out = ns.kubectl(["apply", "-f", &path])?;
        assert!(
            out.success(),
            "kubectl apply -f {path} failed: {}\nwebhook log:\n{}",
            out.stderr,
            hook.log()
        );
        // Read back in the version the seed was written in.
        let version = seed["apiVersion"]
            .as_str()
            .and_then(|v| v.rsplit('/').next())
            .context("seed has an apiVersion")?
            .to_owned();
        let stored = ns.get_json([format!("workspaces.{version}.kaito.sh"), name.clone()])?;
        let mut expected = seed.clone();
        if let Some(meta) = expected["metadata"].as_object_mut() {
            meta.retain(|k, _| k == "name");
        }
        if let Some(diff) = json_subset(&expected, &stored) {
            panic!("{path} was not stored as written: {diff}\nstored: {stored:#}");
        }
        assert_eq!(stored["resource"]["count"], 1, "{path}: {stored:#}");
        if let Some(inference) = stored.get("inference") {
            assert_eq!(
                inference["preset"]["accessMode"], "public",
                "{path}: {stored:#}"
            );
            for adapter in inference["adapters"].as_array().into_iter().flatten() {
                assert!(adapter["strength"].is_string(), "{path}: {stored:#}");
            }
        }
        // `kubectl get -o yaml` shows them too.
        let yaml = ns.kubectl_ok(["get", "workspace", &name, "-o", "yaml"])?;
        assert!(yaml.contains("count: 1"), "{yaml}");
    }

    // An adapter without strength gets "1.0"; a workspace without instanceType gets the
    // smallest size that fits, with the reason in kaito.sh/sizing.
    let auto = r#"apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: phi-3-auto
inference:
  preset:
    name: phi-3-mini-4k-instruct
  adapters:
  - source:
      name: my-adapter
      image: example.azurecr.io/adapter:0.0.1
"#;
    ns.apply(auto)
        .context("applying a workspace with no instanceType")?;
    let stored = ns.get_json(["workspace", "phi-3-auto"])?;
    let sku = stored["resource"]["instanceType"]
        .as_str()
        .unwrap_or_default();
    assert!(
        sku.starts_with("Standard_N"),
        "no instanceType defaulted: {stored:#}"
    );
    let why = stored["metadata"]["annotations"]["kaito.sh/sizing"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains(sku),
        "kaito.sh/sizing does not explain {sku}: {stored:#}"
    );
    assert_eq!(
        stored["resource"]["labelSelector"]["matchLabels"]["apps"], "phi-3-auto",
        "{stored:#}"
    );
    assert_eq!(
        stored["inference"]["adapters"][0]["strength"], "1.0",
        "{stored:#}"
    );
    let yaml = ns.kubectl_ok(["get", "workspace", "phi-3-auto", "-o", "yaml"])?;
    assert!(yaml.contains(&format!("instanceType: {sku}")), "{yaml}");

    // --dry-run=server returns the defaulted object and stores nothing.
    let dry = auto.replace("phi-3-auto", "phi-3-dry");
    let out = ns.server_dry_run(&dry)?;
    assert!(out.success(), "{}", out.stderr);
    let obj: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(obj["resource"]["instanceType"], sku, "{obj:#}");
    assert_eq!(obj["resource"]["count"], 1);
    assert!(obj["metadata"]["annotations"]["kaito.sh/sizing"].is_string());
    let gone = ns.kubectl(["get", "workspace", "phi-3-dry"])?;
    assert!(!gone.success(), "a dry run stored the object");

    // Metrics counted the admissions; the process stops cleanly on SIGTERM.
    let (code, metrics) = hook.http_get("/metrics")?;
    assert_eq!(code, 200);
    assert!(
        metrics.contains(r#"kaito_webhook_admissions_total{endpoint="mutate",operation="CREATE",kind="Workspace",verdict="patched"}"#),
        "{metrics}"
    );
    let status = hook.stop()?;
    assert!(
        status.success(),
        "kaito-webhook exited with {status} after SIGTERM: {}",
        hook.log()
    );
    Ok(())
}

/// Workspaces the webhook must refuse, with words the user must read in kubectl's error.
fn rejections() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let ws = |name: &str, body: &str| {
        format!("apiVersion: kaito.sh/v1alpha1\nkind: Workspace\nmetadata:\n  name: {name}\n{body}")
    };
    let inference = |sku: &str, preset: &str| {
        format!("resource:\n  instanceType: {sku}\ninference:\n  preset:\n    name: {preset}\n")
    };
    let adapters = |list: &str| {
        format!(
            "resource:\n  instanceType: Standard_NC24ads_A100_v4\ninference:\n  preset:\n    name: phi-3-mini-4k-instruct\n  adapters:\n{list}"
        )
    };
    let adapter = |name: &str, extra: &str| {
        format!(
            "  - source:\n      name: {name}\n      image: example.azurecr.io/{name}:1\n{extra}"
        )
    };
    let tuning = |count: u32, input: &str, output: &str| {
        format!(
            "resource:\n  instanceType: Standard_NC24ads_A100_v4\n  count: {count}\ntuning:\n  preset:\n    name: phi-3-mini-128k-instruct\n  method: qlora\n  input:\n{input}  output:\n{output}"
        )
    };
    let urls = |url: &str| format!("    urls:\n    - \"{url}\"\n");
    let good_input = urls("https://huggingface.co/datasets/x/resolve/main/train.parquet");
    let good_output = "    image: example.azurecr.io/out:1\n    imagePushSecret: push-secret\n";
    let eleven: String = (0..11).map(|i| adapter(&format!("a{i}"), "")).collect();
    vec![
        (
            "unknown-sku",
            ws(
                "unknown-sku",
                &inference("Standard_NC6s_v9", "phi-3-mini-4k-instruct"),
            ),
            vec!["resource.instanceType", "Standard_NC6s_v9"],
        ),
        (
            "phi-3-medium-small-gpu",
            ws(
                "phi-3-medium",
                &inference("Standard_NC6s_v3", "phi-3-medium-4k-instruct"),
            ),
            vec![
                "resource.instanceType",
                "Standard_NC6s_v3",
                "phi-3-medium-4k-instruct",
                "GiB",
            ],
        ),
        (
            "cpu-only-size",
            ws(
                "cpu-only",
                &inference("Standard_D4s_v3", "phi-3-mini-4k-instruct"),
            ),
            vec!["resource.instanceType", "Standard_D4s_v3"],
        ),
        (
            "falcon-7b",
            ws(
                "falcon",
                &inference("Standard_NC24ads_A100_v4", "falcon-7b"),
            ),
            vec!["inference.preset.name", "falcon-7b"],
        ),
        (
            "eleven-adapters",
            ws("eleven", &adapters(&eleven)),
            vec!["inference.adapters", "10"],
        ),
        (
            "duplicate-adapter-names",
            ws(
                "dup",
                &adapters(&format!("{}{}", adapter("same", ""), adapter("same", ""))),
            ),
            vec!["inference.adapters[1]", "same"],
        ),
        (
            "adapter-from-urls",
            ws(
                "adapter-urls",
                &adapters(
                    "  - source:\n      name: from-url\n      urls:\n      - https://example.com/adapter.safetensors\n",
                ),
            ),
            vec!["inference.adapters[0].source"],
        ),
        (
            "strength-1.5",
            ws(
                "strength",
                &adapters(&adapter("strong", "    strength: \"1.5\"\n")),
            ),
            vec!["inference.adapters[0].strength", "1.5"],
        ),
        (
            "tuning-count-2",
            ws("tuning-count", &tuning(2, &good_input, good_output)),
            vec!["resource.count"],
        ),
        (
            "output-without-push-secret",
            ws(
                "no-push-secret",
                &tuning(1, &good_input, "    image: example.azurecr.io/out:1\n"),
            ),
            vec!["tuning.output.imagePushSecret"],
        ),
        (
            "input-metadata-ip",
            ws(
                "url-metadata",
                &tuning(1, &urls("http://169.254.169.254/x"), good_output),
            ),
            vec!["tuning.input.urls[0]", "169.254.169.254"],
        ),
        (
            "input-localhost",
            ws(
                "url-localhost",
                &tuning(1, &urls("http://localhost/x"), good_output),
            ),
            vec!["tuning.input.urls[0]", "localhost"],
        ),
        (
            "input-private-ip",
            ws(
                "url-private",
                &tuning(1, &urls("http://10.0.0.1/x"), good_output),
            ),
            vec!["tuning.input.urls[0]", "10.0.0.1"],
        ),
    ]
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn webhook_rejections_reach_kubectl_with_the_message() -> Result<()> {
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    let ns = cluster.namespace("webhook-rejections")?;
    let mut hook = WebhookProcess::start(cluster, &ns, "aks")?;

    let mut failures = Vec::new();
    for (case, yaml, words) in rejections() {
        let out = cluster.kubectl_stdin(["-n", ns.name(), "apply", "-f", "-"], &yaml)?;
        if out.success() {
            failures.push(format!("{case}: accepted:\n{yaml}"));
            continue;
        }
        let err = &out.stderr;
        let mut missing: Vec<&str> = words.iter().copied().filter(|w| !err.contains(w)).collect();
        if !err.contains("denied the request") {
            missing.push("denied the request");
        }
        if !missing.is_empty() {
            failures.push(format!("{case}: kubectl's error lacks {missing:?}: {err}"));
        }
    }

    // Updates: the preset and the instance type are immutable.
    let base = "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: immutable\n\
                resource:\n  instanceType: Standard_NC24ads_A100_v4\n\
                inference:\n  preset:\n    name: phi-3-mini-4k-instruct\n";
    ns.apply(base).context("creating the workspace to update")?;
    for (case, yaml, field) in [
        (
            "change-preset",
            base.replace("phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct"),
            "inference.preset.name",
        ),
        (
            "change-instance-type",
            base.replace("Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4"),
            "resource.instanceType",
        ),
    ] {
        let out = cluster.kubectl_stdin(["-n", ns.name(), "apply", "-f", "-"], &yaml)?;
        if out.success() || !out.stderr.contains(field) {
            failures.push(format!(
                "{case}: expected a rejection naming {field}, got {:?} / {}",
                out.stdout, out.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nwebhook log:\n{}",
        failures.join("\n"),
        hook.log()
    );

    let (code, metrics) = hook.http_get("/metrics")?;
    assert_eq!(code, 200);
    assert!(
        metrics.contains(r#"kaito_webhook_admissions_total{endpoint="validate",operation="UPDATE",kind="Workspace",verdict="denied"} 2"#),
        "{metrics}"
    );
    let status = hook.stop()?;
    assert!(
        status.success(),
        "kaito-webhook exited with {status} after SIGTERM"
    );
    Ok(())
}

/// `tuning.config`: the webhook reads the named ConfigMap with its own client (the cluster's
/// kubeconfig here) and refuses a training config that contradicts the method.
#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn webhook_checks_the_tuning_config_map() -> Result<()> {
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    let ns = cluster.namespace("webhook-tuning-config")?;
    let mut hook = WebhookProcess::start(cluster, &ns, "aks")?;

    let config_map = |name: &str, quantization: &str| {
        let training = format!(
            "training_config:\n  ModelConfig:\n    torch_dtype: bfloat16\n  \
             QuantizationConfig:\n    {quantization}: true\n  LoraConfig:\n    r: 8\n  \
             TrainingArguments:\n    output_dir: /mnt/results\n"
        );
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"training_config.yaml": training},
        })
        .to_string()
    };
    ns.apply(&config_map("eight-bit", "load_in_8bit"))?;
    ns.apply(&config_map("four-bit", "load_in_4bit"))?;
    let workspace = |name: &str, config: &str| {
        format!(
            "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: {name}\n\
             resource:\n  instanceType: Standard_NC24ads_A100_v4\n\
             tuning:\n  preset:\n    name: phi-3-mini-128k-instruct\n  method: qlora\n  \
             config: {config}\n  input:\n    urls:\n    - \
             \"https://huggingface.co/datasets/x/resolve/main/train.parquet\"\n  output:\n    \
             image: example.azurecr.io/out:1\n    imagePushSecret: push-secret\n"
        )
    };

    let mut failures = Vec::new();
    for (config, words) in [
        (
            "eight-bit",
            "tuning.config: ConfigMap \"eight-bit\" training_config.QuantizationConfig.\
             load_in_8bit must not be true for method qlora",
        ),
        (
            "absent",
            "tuning.config: ConfigMap \"absent\" not found in namespace",
        ),
    ] {
        let out = cluster.kubectl_stdin(
            ["-n", ns.name(), "apply", "-f", "-"],
            &workspace(&format!("tune-{config}"), config),
        )?;
        if out.success()
            || !out.stderr.contains(words)
            || !out.stderr.contains("denied the request")
        {
            failures.push(format!(
                "{config}: expected a denial with {words:?}, got {:?} / {}",
                out.stdout, out.stderr
            ));
        }
    }
    let out = cluster.kubectl_stdin(
        ["-n", ns.name(), "apply", "-f", "-"],
        &workspace("tune-four-bit", "four-bit"),
    )?;
    if !out.success() {
        failures.push(format!("four-bit: refused: {}", out.stderr));
    } else if out.stderr.contains("not checked") {
        failures.push(format!("four-bit: admitted unchecked: {}", out.stderr));
    }
    assert!(
        failures.is_empty(),
        "{}\nwebhook log:\n{}",
        failures.join("\n"),
        hook.log()
    );
    let status = hook.stop()?;
    assert!(
        status.success(),
        "kaito-webhook exited with {status} after SIGTERM"
    );
    Ok(())
}

/// `inference.config`: the webhook reads the named ConfigMap, refuses a missing one or a bad
/// value naming the key, and admits upstream's format with a warning for each vLLM knob
/// `kaito-runtime` does not apply (kubectl prints admission warnings).
#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn webhook_checks_the_inference_config_map() -> Result<()> {
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    let ns = cluster.namespace("webhook-inference-config")?;
    let mut hook = WebhookProcess::start(cluster, &ns, "aks")?;
    let config_map = |name: &str, params: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"inference_config.yaml": params},
        })
        .to_string()
    };
    ns.apply(&config_map(
        "upstream",
        "max_probe_steps: 6\nvllm:\n  gpu-memory-utilization: 0.95\n  max-model-len: 2048\n",
    ))?;
    ns.apply(&config_map("bad", "vllm:\n  max-model-len: lots\n"))?;
    let workspace = |name: &str, config: &str| {
        format!(
            "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: {name}\n\
             resource:\n  instanceType: Standard_NC6s_v3\n\
             inference:\n  preset:\n    name: phi-3-mini-4k-instruct\n  config: {config}\n"
        )
    };
    let apply = |name: &str, config: &str| {
        cluster.kubectl_stdin(
            ["-n", ns.name(), "apply", "-f", "-"],
            &workspace(name, config),
        )
    };
    let mut failures = Vec::new();
    for (config, words) in [
        (
            "absent",
            "inference.config: ConfigMap \"absent\" not found in namespace",
        ),
        (
            "bad",
            "inference.config: ConfigMap \"bad\": vllm.max-model-len must be a positive whole number",
        ),
    ] {
        let out = apply(&format!("serve-{config}"), config)?;
        if out.success() || !out.stderr.contains(words) {
            failures.push(format!(
                "{config}: expected a denial with {words:?}, got {:?} / {}",
                out.stdout, out.stderr
            ));
        }
    }
    let out = apply("serve-upstream", "upstream")?;
    if !out.success() {
        failures.push(format!("upstream: refused: {}", out.stderr));
    } else if !out
        .stderr
        .contains("vllm.gpu-memory-utilization is not applied")
    {
        failures.push(format!("upstream: no warning: {}", out.stderr));
    }
    assert!(
        failures.is_empty(),
        "{}\nwebhook log:\n{}",
        failures.join("\n"),
        hook.log()
    );
    hook.stop()?;
    Ok(())
}
