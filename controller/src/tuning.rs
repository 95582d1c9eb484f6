//! Tuning workload builders: the Job `<ws>` and the built-in `training_config.yaml` (pure).
//!
//! The Job's pod: an init container fetches the input (`urls` with curl, URL checks and
//! retries; `image` with the adapter puller; `volumeSource` is mounted as is) into
//! `/mnt/data`; the trainer reads `/mnt/config/training_config.yaml` and writes the adapter
//! to `/mnt/results`, ending with `/mnt/results/.done`; the publisher waits for that file and
//! pushes `/mnt/results` to `output.image` with the push Secret as its docker config.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kaito_api::Workspace;
use kaito_presets::Dtype;
use serde_json::{Value, json};

use crate::config::{ProvisionerKind, WorkloadConfig};
use crate::inference::{BuildError, gpu_tolerations, node_affinity, owner_reference, typed};
use crate::naming;
use crate::plan::WorkspacePlan;

/// Key of the training config in its ConfigMap.
pub const TRAINING_CONFIG_KEY: &str = "training_config.yaml";
/// File the trainer writes last; the publisher starts when it appears.
pub const DONE_MARKER: &str = "/mnt/results/.done";

/// Name of the ConfigMap the controller writes when the user gives none.
pub fn default_config_name(ws: &str) -> String {
    format!("{ws}-tuning-config")
}

/// The built-in `training_config.yaml`: LoRA r 8, alpha 8, dropout 0; QLoRA adds 4-bit NF4
/// with double quantization, computing in bf16 (f16 on GPUs before compute capability 8).
pub fn training_config(qlora: bool, dtype: Dtype) -> String {
    let torch = match dtype {
        Dtype::Bf16 => "bfloat16",
        Dtype::F16 => "float16",
    };
    let mut s = format!(
        "training_config:\n  ModelConfig:\n    torch_dtype: \"{torch}\"\n    local_files_only: true\n    device_map: \"auto\"\n"
    );
    if qlora {
        s.push_str(&format!(
            "  QuantizationConfig:\n    load_in_4bit: true\n    bnb_4bit_quant_type: \"nf4\"\n    bnb_4bit_compute_dtype: \"{torch}\"\n    bnb_4bit_use_double_quant: true\n"
        ));
    }
    s.push_str(&format!(
        "  LoraConfig:\n    r: 8\n    lora_alpha: 8\n    lora_dropout: 0.0\n    target_modules: \"all-linear\"\n  TrainingArguments:\n    output_dir: \"/mnt/results\"\n    save_strategy: \"epoch\"\n    per_device_train_batch_size: 1\n    {}: true\n  DataCollator:\n    mlm: true\n  DatasetConfig:\n    shuffle_dataset: true\n    train_test_split: 1\n",
        if dtype == Dtype::Bf16 { "bf16" } else { "fp16" }
    ));
    s
}

/// The ConfigMap with the built-in training config, or None when the user named one.
pub fn default_config_map(
    ws: &Workspace,
    plan: &WorkspacePlan,
) -> Result<Option<ConfigMap>, BuildError> {
    let Some(t) = &ws.tuning else { return Ok(None) };
    if t.config.is_some() {
        return Ok(None);
    }
    let qlora = t.method.as_deref().unwrap_or("qlora") == "qlora";
    let dtype = plan.sizing.as_ref().map(|s| s.dtype).unwrap_or(Dtype::F16);
    typed(
        "ConfigMap",
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": default_config_name(naming::name(ws)), "namespace": naming::namespace(ws),
                         "labels": naming::workspace_labels(ws), "ownerReferences": [owner_reference(ws)]},
            "data": {TRAINING_CONFIG_KEY: training_config(qlora, dtype)},
        }),
    )
    .map(Some)
}

const DOWNLOAD_SCRIPT: &str = r#"set -eu
i=0
for u in "$@"; do
  case "$u" in
    https://*|http://*) ;;
    *) echo "refusing input URL '$u': only http(s) URLs are downloaded" >&2; exit 2 ;;
  esac
  i=$((i+1))
  path="${u%%\?*}"
  name="${path##*/}"
  [ -n "$name" ] || name="input-$i"
  echo "downloading $u -> /mnt/data/$name"
  curl -fsSL --retry 5 --retry-delay 5 --retry-all-errors --connect-timeout 30 -o "/mnt/data/$name" "$u" \
    || { echo "download of $u failed after retries" >&2; exit 1; }
  [ -s "/mnt/data/$name" ] || { echo "download of $u is empty" >&2; exit 1; }
done
"#;

/// The tuning Job `<ws>`.
pub fn job(
    ws: &Workspace,
    plan: &WorkspacePlan,
    cfg: &WorkloadConfig,
    provisioner: ProvisionerKind,
) -> Result<Job, BuildError> {
    let name = naming::name(ws);
    let t = ws.tuning.clone().unwrap_or_default();
    let preset = t
        .preset
        .as_ref()
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let gpus = plan.gpus_per_node.max(1).to_string();
    let config_map = t
        .config
        .clone()
        .unwrap_or_else(|| default_config_name(name));
    let mut volumes = vec![
        json!({"name": "dshm", "emptyDir": {"medium": "Memory"}}),
        json!({"name": "config", "configMap": {"name": config_map}}),
        json!({"name": "results", "emptyDir": {}}),
    ];
    let mut init = Vec::new();
    let mut pull_secrets = Vec::new();
    let input = t.input.clone().unwrap_or_default();
    match (&input.urls, &input.image, &input.volume_source) {
        (_, _, Some(vs)) => {
            let mut v = vs.clone();
            v["name"] = json!("data");
            volumes.push(v);
        }
        (Some(urls), _, None) => {
            volumes.push(json!({"name": "data", "emptyDir": {}}));
            let mut cmd = vec![
                "sh".to_string(),
                "-c".into(),
                DOWNLOAD_SCRIPT.into(),
                "download".into(),
            ];
            cmd.extend(urls.iter().cloned());
            init.push(json!({
                "name": "data-downloader",
                "image": cfg.data_downloader_image,
                "command": cmd,
                "volumeMounts": [{"name": "data", "mountPath": "/mnt/data"}],
            }));
        }
        (None, Some(image), None) => {
            volumes.push(json!({"name": "data", "emptyDir": {}}));
            let mut cmd = cfg.adapter_puller_command.clone();
            cmd.extend([
                "--image".into(),
                image.clone(),
                "--output".into(),
                "/mnt/data".into(),
            ]);
            init.push(json!({
                "name": "data-downloader",
                "image": cfg.adapter_puller_image,
                "command": cmd,
                "volumeMounts": [{"name": "data", "mountPath": "/mnt/data"}],
            }));
            pull_secrets.extend(
                input
                    .image_pull_secrets
                    .iter()
                    .flatten()
                    .map(|s| json!({"name": s})),
            );
        }
        (None, None, None) => volumes.push(json!({"name": "data", "emptyDir": {}})),
    }
    let mut trainer_cmd = cfg.trainer_command.clone();
    trainer_cmd.extend(
        [
            "--config",
            "/mnt/config/training_config.yaml",
            "--data",
            "/mnt/data",
            "--output",
            "/mnt/results",
            "--done-marker",
            DONE_MARKER,
        ]
        .map(String::from),
    );
    let mut containers = vec![json!({
        "name": "trainer",
        "image": cfg.trainer_image_for(&preset),
        "command": trainer_cmd,
        "env": [{"name": "PRESET", "value": preset}],
        "resources": {"requests": {"nvidia.com/gpu": gpus}, "limits": {"nvidia.com/gpu": gpus}},
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "config", "mountPath": "/mnt/config", "readOnly": true},
            {"name": "data", "mountPath": "/mnt/data"},
            {"name": "results", "mountPath": "/mnt/results"},
        ],
    })];
    let output = t.output.clone().unwrap_or_default();
    if let Some(vs) = &output.volume_source {
        let mut v = vs.clone();
        v["name"] = json!("output");
        volumes.push(v);
        if let Some(m) = containers[0]["volumeMounts"].as_array_mut() {
            m.push(json!({"name": "output", "mountPath": "/mnt/output"}));
        }
    }
    if let Some(image) = &output.image {
        let mut cmd = cfg.publisher_command.clone();
        cmd.extend([
            "--source".into(),
            "/mnt/results".into(),
            "--target".into(),
            image.clone(),
            "--wait-for".into(),
            DONE_MARKER.into(),
        ]);
        let mut mounts =
            vec![json!({"name": "results", "mountPath": "/mnt/results", "readOnly": true})];
        if let Some(secret) = &output.image_push_secret {
            volumes.push(
                json!({"name": "push-secret", "secret": {"secretName": secret,
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}}),
            );
            mounts.push(
                json!({"name": "push-secret", "mountPath": "/root/.docker", "readOnly": true}),
            );
        }
        containers.push(json!({
            "name": "publisher",
            "image": cfg.publisher_image,
            "command": cmd,
            "env": [{"name": "DOCKER_CONFIG", "value": "/root/.docker"}],
            "volumeMounts": mounts,
        }));
    }
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "affinity": node_affinity(ws, provisioner),
        "tolerations": gpu_tolerations(),
        "initContainers": init,
        "containers": containers,
        "volumes": volumes,
    });
    if !pull_secrets.is_empty() {
        pod_spec["imagePullSecrets"] = Value::Array(pull_secrets);
    }
    typed(
        "Job",
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": naming::namespace(ws),
                         "labels": naming::workspace_labels(ws), "ownerReferences": [owner_reference(ws)]},
            "spec": {
                "backoffLimit": 2,
                "template": {"metadata": {"labels": naming::workspace_labels(ws)}, "spec": pod_spec},
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;
    use crate::testutil::ws;

    fn seed() -> Workspace {
        ws(include_str!("../../examples/tuning-phi-3.yaml"))
    }

    #[test]
    fn seed_job_has_downloader_trainer_and_publisher() {
        let w = seed();
        let p = plan(&w, None).expect("plan");
        let j = serde_json::to_value(
            job(
                &w,
                &p,
                &WorkloadConfig::default(),
                ProvisionerKind::Karpenter,
            )
            .expect("job"),
        )
        .expect("json");
        assert_eq!(j["metadata"]["name"], "workspace-tuning-phi-3");
        let pod = &j["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["initContainers"][0]["name"], "data-downloader");
        let cmd = pod["initContainers"][0]["command"].as_array().expect("cmd");
        assert!(
            cmd.last()
                .and_then(Value::as_str)
                .is_some_and(|u| u.starts_with("https://huggingface.co/"))
        );
        let names: Vec<&str> = pod["containers"]
            .as_array()
            .expect("c")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["trainer", "publisher"]);
        assert_eq!(
            pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
            "1"
        );
        let pubcmd = pod["containers"][1]["command"].as_array().expect("cmd");
        assert!(pubcmd.contains(&json!("ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1")));
        let vols = pod["volumes"].as_array().expect("vols");
        assert!(vols.contains(&json!({"name": "config", "configMap": {"name": "workspace-tuning-phi-3-tuning-config"}})));
        assert!(
            vols.iter()
                .any(|v| v["secret"]["secretName"] == "ACR_REGISTRY_SECRET_HERE")
        );
    }

    #[test]
    fn user_config_map_replaces_the_template() {
        let mut w = seed();
        w.tuning.as_mut().expect("tuning").config = Some("mine".into());
        let p = plan(&w, None).expect("plan");
        assert!(default_config_map(&w, &p).expect("ok").is_none());
        let j = serde_json::to_value(
            job(&w, &p, &WorkloadConfig::default(), ProvisionerKind::Byo).expect("job"),
        )
        .expect("json");
        assert!(
            j["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .expect("v")
                .iter()
                .any(|v| v["configMap"]["name"] == "mine")
        );
    }

    #[test]
    fn template_defaults_follow_method_and_gpu() {
        let table = [
            (
                true,
                Dtype::F16,
                vec![
                    "bnb_4bit_quant_type: \"nf4\"",
                    "bnb_4bit_compute_dtype: \"float16\"",
                    "bnb_4bit_use_double_quant: true",
                    "fp16: true",
                ],
            ),
            (
                true,
                Dtype::Bf16,
                vec!["bnb_4bit_compute_dtype: \"bfloat16\"", "bf16: true"],
            ),
            (
                false,
                Dtype::Bf16,
                vec![
                    "r: 8",
                    "lora_alpha: 8",
                    "lora_dropout: 0.0",
                    "output_dir: \"/mnt/results\"",
                ],
            ),
        ];
        for (qlora, dtype, want) in table {
            let text = training_config(qlora, dtype);
            let _: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
            for w in want {
                assert!(text.contains(w), "{qlora} {dtype}: no {w} in\n{text}");
            }
            assert_eq!(text.contains("load_in_4bit"), qlora);
        }
        let w = seed();
        let p = plan(&w, None).expect("plan");
        let cm = default_config_map(&w, &p).expect("ok").expect("built-in");
        let text = cm
            .data
            .expect("data")
            .remove(TRAINING_CONFIG_KEY)
            .expect("key");
        assert!(text.contains("float16"), "V100 computes in f16");
    }

    #[test]
    fn the_downloader_refuses_non_http_urls() {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                DOWNLOAD_SCRIPT,
                "download",
                "ftp://example.invalid/data.parquet",
            ])
            .output()
            .expect("sh runs");
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("only http(s) URLs"));
    }
}
