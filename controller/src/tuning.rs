//! Tuning workload builders: the Job `<ws>` and the built-in `training_config.yaml` (pure).
//!
//! The Job's pod (see [`job`]): init containers fetch the input into `/mnt/data` (`urls` with
//! `kaito-adapter fetch`, `image` by running the data image, `volumeSource` is mounted as is)
//! and then train (GPUs; `/mnt/config/training_config.yaml` → adapter in `/mnt/results`); the
//! one regular container, `publisher`, pushes `/mnt/results` to `output.image` with
//! `kaito-adapter publish`, the push Secret mounted as its docker config.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, LocalObjectReference,
    PodSpec, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kaito_api::Workspace;
use kaito_presets::Dtype;

use crate::config::{Provisioner, WorkloadConfig};
use crate::inference::{
    BuildError, child_meta, container_security, docker_config_volume, empty_dir, env_var,
    gpu_resources, gpu_tolerations, mount, node_affinity, pod_security, shm_mount, shm_volume,
    user_volume,
};
use crate::naming;
use crate::plan::WorkspacePlan;

/// Key of the training config in its ConfigMap, where the trainer reads the data and where it
/// writes the adapter: the same constants admission names in its checks and messages.
pub use kaito_api::admission::{DATA_DIR, RESULTS_DIR, TRAINING_CONFIG_KEY};

/// Where the trainer finds `training_config.yaml` (the ConfigMap is mounted at `/mnt/config`).
pub const TRAINING_CONFIG_PATH: &str = "/mnt/config/training_config.yaml";

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
        // Tuning on a CPU size is refused at admission; a hand-written plan still gets a
        // valid config.
        Dtype::F32 => "float32",
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
        "  LoraConfig:\n    r: 8\n    lora_alpha: 8\n    lora_dropout: 0.0\n    target_modules: \"all-linear\"\n  TrainingArguments:\n    output_dir: \"{RESULTS_DIR}\"\n    save_strategy: \"epoch\"\n    per_device_train_batch_size: 1\n    {}: true\n  DataCollator:\n    mlm: true\n  DatasetConfig:\n    shuffle_dataset: true\n    train_test_split: 1\n",
        if dtype == Dtype::Bf16 { "bf16" } else { "fp16" }
    ));
    s
}

/// The ConfigMap with the built-in training config, or None when the user named one.
pub fn default_config_map(ws: &Workspace, plan: &WorkspacePlan) -> Option<ConfigMap> {
    if ws.tuning.as_ref()?.config.is_some() {
        return None;
    }
    // The plan's mode: what `tuning.method` says (planning refuses a workspace without one).
    let qlora = plan
        .sizing
        .as_ref()
        .is_some_and(|s| s.mode == kaito_presets::Mode::TuneQlora);
    let dtype = plan.sizing.as_ref().map(|s| s.dtype).unwrap_or(Dtype::F16);
    Some(ConfigMap {
        metadata: child_meta(ws, default_config_name(naming::name(ws))),
        data: Some(
            [(
                TRAINING_CONFIG_KEY.to_string(),
                training_config(qlora, dtype),
            )]
            .into(),
        ),
        ..ConfigMap::default()
    })
}

/// Where the `output.imagePushSecret`'s `.dockerconfigjson` is mounted in the publisher.
pub const PUSH_SECRET_DIR: &str = "/mnt/push-secret";
/// The docker config file the publisher gets as `--docker-config`.
pub const PUSH_DOCKER_CONFIG: &str = "/mnt/push-secret/config.json";
/// Shell command of the init container that copies an `input.image`'s `/data` into
/// `/mnt/data` (the data image runs itself, as in upstream KAITO, so it needs `sh` and `cp`).
pub const DATA_IMAGE_COPY: &str = "cp -R /data/. /mnt/data/ && ls -la /mnt/data";

/// The tuning Job `<ws>`.
///
/// Ordering is done by the pod itself, without sidecar tricks: init containers run one after
/// the other and each must exit 0 before the next starts, so
///
/// - `initContainers`: `data-downloader` (`urls`: `kaito-adapter fetch --output /mnt/data
///   URL...`) or `data-extractor` (`image`: the data image copies its `/data`), then `trainer`
///   (GPUs; reads `/mnt/config/training_config.yaml` and `/mnt/data`, writes `/mnt/results`);
/// - `containers`: `publisher` (`kaito-adapter publish --source /mnt/results --target IMAGE
///   [--docker-config /mnt/push-secret/config.json]`) for `output.image`.
///
/// The Job completes when the publisher exits 0, which it can only start after the trainer
/// succeeded; a failed trainer fails the pod (restartPolicy Never) and the Job retries it.
///
/// With `output.volumeSource` there is nothing to publish: the output volume is mounted at
/// `/mnt/results` and the trainer is the pod's only (regular) container, so the Job completes
/// when the adapter is written.
///
/// The input's and output's `volumeSource` are the user's JSON: one that is no volume source
/// (not an object, or a field no volume type has) is an error.
pub fn job(
    ws: &Workspace,
    plan: &WorkspacePlan,
    cfg: &WorkloadConfig,
    provisioner: Provisioner,
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
    let output = t.output.clone().unwrap_or_default();
    let mut volumes = vec![
        shm_volume(),
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map,
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    match (&output.image, &output.volume_source) {
        (None, Some(vs)) => volumes.push(user_volume(
            "Job",
            "tuning.output.volumeSource".into(),
            "results".into(),
            vs,
        )?),
        _ => volumes.push(empty_dir("results", EmptyDirVolumeSource::default())),
    }
    let mut init = Vec::new();
    let mut pull_secrets = Vec::new();
    let input = t.input.clone().unwrap_or_default();
    let data_mount = || vec![mount("data", DATA_DIR, false)];
    match (&input.urls, &input.image, &input.volume_source) {
        (_, _, Some(vs)) => volumes.push(user_volume(
            "Job",
            "tuning.input.volumeSource".into(),
            "data".into(),
            vs,
        )?),
        (Some(urls), _, None) => {
            volumes.push(empty_dir("data", EmptyDirVolumeSource::default()));
            let mut cmd = cfg.data_downloader_command.clone();
            cmd.extend(["--output".into(), DATA_DIR.into()]);
            cmd.extend(urls.iter().cloned());
            init.push(Container {
                name: "data-downloader".into(),
                image: Some(cfg.data_downloader_image.clone()),
                command: Some(cmd),
                env: cfg
                    .test_only_allow_data_address
                    .as_ref()
                    .map(|ip| vec![env_var("KAITO_TEST_ONLY_ALLOW_DATA_ADDRESS", ip)]),
                volume_mounts: Some(data_mount()),
                security_context: Some(container_security(true)),
                ..Container::default()
            });
        }
        (None, Some(image), None) => {
            volumes.push(empty_dir("data", EmptyDirVolumeSource::default()));
            init.push(Container {
                name: "data-extractor".into(),
                image: Some(image.clone()),
                command: Some(["sh", "-c", DATA_IMAGE_COPY].map(String::from).to_vec()),
                volume_mounts: Some(data_mount()),
                security_context: Some(container_security(false)),
                ..Container::default()
            });
            pull_secrets.extend(
                input
                    .image_pull_secrets
                    .iter()
                    .flatten()
                    .map(|s| LocalObjectReference { name: s.clone() }),
            );
        }
        (None, None, None) => volumes.push(empty_dir("data", EmptyDirVolumeSource::default())),
    }
    let mut trainer_env = vec![
        env_var("PRESET", &preset),
        env_var("YAML_FILE_PATH", TRAINING_CONFIG_PATH),
        env_var("DATASET_FOLDER_PATH", DATA_DIR),
        env_var("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),
    ];
    if preset.starts_with("phi-3") {
        // Phi-3's fused projections need explicit LoRA targets when the config names none.
        trainer_env.push(env_var(
            "DEFAULT_TARGET_MODULES",
            "k_proj,q_proj,v_proj,o_proj,gate_proj,down_proj,up_proj",
        ));
    }
    let trainer = Container {
        name: "trainer".into(),
        image: Some(cfg.trainer_image_for(&preset)),
        command: Some(cfg.trainer_command_for(&gpus)),
        env: Some(trainer_env),
        resources: Some(gpu_resources(&gpus)),
        volume_mounts: Some(vec![
            shm_mount(),
            mount("config", "/mnt/config", true),
            mount("data", DATA_DIR, false),
            mount("results", RESULTS_DIR, false),
        ]),
        security_context: Some(container_security(false)),
        ..Container::default()
    };
    let containers = if let Some(image) = &output.image {
        init.push(trainer);
        let mut cmd = cfg.publisher_command.clone();
        cmd.extend([
            "--source".into(),
            RESULTS_DIR.into(),
            "--target".into(),
            image.clone(),
        ]);
        cmd.extend(cfg.registry_args());
        let mut mounts = vec![mount("results", RESULTS_DIR, true)];
        if let Some(secret) = &output.image_push_secret {
            cmd.extend(["--docker-config".into(), PUSH_DOCKER_CONFIG.into()]);
            volumes.push(docker_config_volume("push-secret", secret));
            mounts.push(mount("push-secret", PUSH_SECRET_DIR, true));
        }
        vec![Container {
            name: "publisher".into(),
            image: Some(cfg.publisher_image.clone()),
            command: Some(cmd),
            volume_mounts: Some(mounts),
            security_context: Some(container_security(true)),
            ..Container::default()
        }]
    } else {
        vec![trainer]
    };
    Ok(Job {
        metadata: child_meta(ws, name.to_string()),
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            // Saturated: no deadline the API server takes is that long.
            active_deadline_seconds: Some(
                i64::try_from(cfg.tuning_deadline_seconds).unwrap_or(i64::MAX),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(naming::workspace_labels(ws)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    affinity: Some(node_affinity(ws, provisioner)),
                    tolerations: Some(gpu_tolerations()),
                    init_containers: Some(init),
                    containers,
                    volumes: Some(volumes),
                    security_context: Some(pod_security()),
                    image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cloud;
    use crate::plan::plan;
    use crate::testutil::ws;
    use serde_json::{Value, json};

    fn seed() -> Workspace {
        ws(include_str!(
            "../../examples/fine-tuning/kaito_workspace_tuning_phi_3.yaml"
        ))
    }

    fn job_json(w: &Workspace) -> Value {
        let p = plan(w, Cloud::Azure, None).expect("plan");
        serde_json::to_value(
            job(w, &p, &WorkloadConfig::default(), Provisioner::Karpenter).expect("job"),
        )
        .expect("json")
    }

    fn strings(v: &Value) -> Vec<&str> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("string"))
            .collect()
    }

    fn names(v: &Value) -> Vec<&str> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect()
    }

    #[test]
    fn every_container_of_the_tuning_job_runs_without_privileges() {
        let j = job_json(&seed());
        let pod = &j["spec"]["template"]["spec"];
        assert_eq!(
            pod["securityContext"],
            json!({"seccompProfile": {"type": "RuntimeDefault"}})
        );
        let restricted =
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
        let ours = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                          "runAsNonRoot": true});
        // The trainer's image is upstream's (it may run as root); the downloader and the
        // publisher are this project's non-root image.
        assert_eq!(pod["initContainers"][0]["securityContext"], ours);
        assert_eq!(pod["initContainers"][1]["securityContext"], restricted);
        assert_eq!(pod["containers"][0]["securityContext"], ours);
        let mut w = seed();
        let input = w
            .tuning
            .as_mut()
            .and_then(|t| t.input.as_mut())
            .expect("input");
        input.urls = None;
        input.image = Some("registry.example/data:1".into());
        let j = job_json(&w);
        let extractor = &j["spec"]["template"]["spec"]["initContainers"][0];
        assert_eq!(extractor["name"], "data-extractor");
        assert_eq!(extractor["securityContext"], restricted);
    }

    #[test]
    fn a_tuning_job_has_a_deadline_so_a_hung_trainer_frees_its_node() {
        let j = job_json(&seed());
        assert_eq!(j["spec"]["activeDeadlineSeconds"], 3 * 24 * 3600);
    }

    #[test]
    fn seed_job_downloads_then_trains_then_publishes() {
        let j = job_json(&seed());
        assert_eq!(j["metadata"]["name"], "workspace-tuning-phi-3");
        let pod = &j["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(
            names(&pod["initContainers"]),
            ["data-downloader", "trainer"]
        );
        assert_eq!(names(&pod["containers"]), ["publisher"]);
        let [download, trainer] = [&pod["initContainers"][0], &pod["initContainers"][1]];
        assert_eq!(download["image"], "ghcr.io/kaito-rs/kaito-adapter:0.1.0");
        assert_eq!(
            strings(&download["command"]),
            [
                "kaito-adapter",
                "fetch",
                "--output",
                "/mnt/data",
                "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/train-00000-of-00001-54e3756291ca09c6.parquet?download=true",
            ]
        );
        assert_eq!(
            download["volumeMounts"],
            json!([{"name": "data", "mountPath": "/mnt/data"}])
        );
        assert_eq!(
            trainer["image"],
            "mcr.microsoft.com/aks/kaito/kaito-phi-3-mini-128k-instruct:0.1.1"
        );
        assert_eq!(
            strings(&trainer["command"]),
            [
                "accelerate",
                "launch",
                "--num_processes=1",
                "/workspace/tfs/fine_tuning.py",
            ]
        );
        let env: Vec<(&str, &str)> = trainer["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().expect("name"),
                    e["value"].as_str().expect("value"),
                )
            })
            .collect();
        assert_eq!(
            env,
            [
                ("PRESET", "phi-3-mini-128k-instruct"),
                ("YAML_FILE_PATH", "/mnt/config/training_config.yaml"),
                ("DATASET_FOLDER_PATH", "/mnt/data"),
                ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),
                (
                    "DEFAULT_TARGET_MODULES",
                    "k_proj,q_proj,v_proj,o_proj,gate_proj,down_proj,up_proj"
                ),
            ]
        );
        assert_eq!(
            trainer["resources"],
            json!({"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}})
        );
        assert_eq!(
            trainer["volumeMounts"],
            json!([
                {"name": "dshm", "mountPath": "/dev/shm"},
                {"name": "config", "mountPath": "/mnt/config", "readOnly": true},
                {"name": "data", "mountPath": "/mnt/data"},
                {"name": "results", "mountPath": "/mnt/results"},
            ])
        );
        let publisher = &pod["containers"][0];
        assert_eq!(publisher["image"], "ghcr.io/kaito-rs/kaito-adapter:0.1.0");
        assert_eq!(
            strings(&publisher["command"]),
            [
                "kaito-adapter",
                "publish",
                "--source",
                "/mnt/results",
                "--target",
                "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1",
                "--docker-config",
                "/mnt/push-secret/config.json",
            ]
        );
        assert!(
            publisher["resources"].is_null(),
            "the publisher needs no GPU"
        );
        assert_eq!(
            publisher["volumeMounts"],
            json!([
                {"name": "results", "mountPath": "/mnt/results", "readOnly": true},
                {"name": "push-secret", "mountPath": "/mnt/push-secret", "readOnly": true},
            ])
        );
        assert_eq!(
            pod["volumes"],
            json!([
                {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                {"name": "config", "configMap": {"name": "workspace-tuning-phi-3-tuning-config"}},
                {"name": "results", "emptyDir": {}},
                {"name": "data", "emptyDir": {}},
                {"name": "push-secret", "secret": {"secretName": "ACR_REGISTRY_SECRET_HERE",
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}},
            ])
        );
        assert!(pod["imagePullSecrets"].is_null());
    }

    #[test]
    fn without_a_push_secret_the_publisher_gets_no_docker_config() {
        let mut w = seed();
        if let Some(o) = w.tuning.as_mut().and_then(|t| t.output.as_mut()) {
            o.image_push_secret = None;
        }
        let j = job_json(&w);
        let pod = &j["spec"]["template"]["spec"];
        let cmd = strings(&pod["containers"][0]["command"]);
        assert!(!cmd.contains(&"--docker-config"), "{cmd:?}");
        assert!(
            !pod["volumes"]
                .as_array()
                .expect("v")
                .iter()
                .any(|v| v["name"] == "push-secret")
        );
    }

    #[test]
    fn plain_http_registries_and_the_test_only_data_address_reach_their_containers() {
        let w = seed();
        let p = plan(&w, Cloud::Azure, None).expect("plan");
        let cfg = WorkloadConfig {
            insecure_registries: vec!["10.88.77.1:5000".into()],
            test_only_allow_data_address: Some("10.88.77.1".into()),
            ..WorkloadConfig::default()
        };
        let j = serde_json::to_value(job(&w, &p, &cfg, Provisioner::Karpenter).expect("job"))
            .expect("json");
        let pod = &j["spec"]["template"]["spec"];
        let cmd = strings(&pod["containers"][0]["command"]);
        assert!(
            cmd.windows(2)
                .any(|w| w == ["--insecure-registry", "10.88.77.1:5000"]),
            "{cmd:?}"
        );
        assert_eq!(
            pod["initContainers"][0]["env"],
            json!([{"name": "KAITO_TEST_ONLY_ALLOW_DATA_ADDRESS", "value": "10.88.77.1"}])
        );
        // Off by default.
        let j = job_json(&w);
        let pod = &j["spec"]["template"]["spec"];
        assert!(pod["initContainers"][0]["env"].is_null());
        let cmd = strings(&pod["containers"][0]["command"]);
        assert!(!cmd.contains(&"--insecure-registry"), "{cmd:?}");
    }

    #[test]
    fn volume_output_is_written_by_the_trainer_without_a_publisher() {
        let w = ws(r#"
metadata: {name: t}
resource: {instanceType: Standard_NC6s_v3}
tuning:
  method: qlora
  preset: {name: phi-3-mini-128k-instruct}
  input:
    image: registry.example.com/data:1
    imagePullSecrets: [data-pull]
  output:
    volumeSource: {persistentVolumeClaim: {claimName: adapters}}
"#);
        let j = job_json(&w);
        let pod = &j["spec"]["template"]["spec"];
        assert_eq!(names(&pod["initContainers"]), ["data-extractor"]);
        assert_eq!(names(&pod["containers"]), ["trainer"]);
        let extract = &pod["initContainers"][0];
        assert_eq!(extract["image"], "registry.example.com/data:1");
        assert_eq!(strings(&extract["command"]), ["sh", "-c", DATA_IMAGE_COPY]);
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "data-pull"}]));
        assert_eq!(
            pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
            "1"
        );
        let vols = pod["volumes"].as_array().expect("vols");
        assert!(vols.contains(
            &json!({"name": "results", "persistentVolumeClaim": {"claimName": "adapters"}})
        ));
        assert_eq!(
            vols.iter().filter(|v| v["name"] == "results").count(),
            1,
            "{vols:?}"
        );
    }

    #[test]
    fn user_config_map_replaces_the_template() {
        let mut w = seed();
        w.tuning.as_mut().expect("tuning").config = Some("mine".into());
        let p = plan(&w, Cloud::Azure, None).expect("plan");
        assert!(default_config_map(&w, &p).is_none());
        let j = serde_json::to_value(
            job(&w, &p, &WorkloadConfig::default(), Provisioner::Byo).expect("job"),
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
        let p = plan(&w, Cloud::Azure, None).expect("plan");
        let cm = default_config_map(&w, &p).expect("built-in");
        let text = cm
            .data
            .expect("data")
            .remove(TRAINING_CONFIG_KEY)
            .expect("key");
        assert!(text.contains("float16"), "V100 computes in f16");
    }
}
