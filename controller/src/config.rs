//! Controller configuration: which provisioner, which images, which commands. Everything that
//! names an image or a binary of another component is configurable here, because those
//! components (the runtime, the tuning trainer, the adapter publisher/puller) are built
//! separately.

use kaito_presets::GpuShape;
pub use kaito_presets::{Cloud, Provisioner};

/// Default image of the data downloader, the adapter publisher and the adapter puller: the
/// `kaito-adapter` binary (adapter/) and nothing else.
pub const ADAPTER_IMAGE: &str = "ghcr.io/kaito-rs/kaito-adapter:0.1.0";

/// Where the serving container's weights volume is mounted (as upstream KAITO).
pub const WEIGHTS_DIR: &str = "/workspace/weights";

/// Placeholder of the serving and tuning images replaced by the preset name.
pub const PRESET_PLACEHOLDER: &str = "{preset}";
/// Placeholder of the serving image replaced by the CUDA compute capability of the
/// workspace's GPU without the dot (`70`, `75`, `80`, `86`, `89`, `90`), or by `cpu` on a
/// CPU-only size: one runtime image per capability, as `runtime/Dockerfile` builds them
/// (`CUDA_COMPUTE_CAP`).
pub const COMPUTE_CAPABILITY_PLACEHOLDER: &str = "{computeCapability}";

/// The serving image has `{computeCapability}` but the nodes' compute capability is unknown.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the runtime image cannot be chosen: workloads.runtime.image (--runtime-image, \
     KAITO_RUNTIME_IMAGE) {image:?} contains {{computeCapability}}, and the CUDA compute \
     capability of {node} is not known; set resource.instanceType to a GPU size of the SKU \
     catalog, give the nodes the labels nvidia.com/cuda.compute.major and \
     nvidia.com/cuda.compute.minor (NVIDIA GPU feature discovery sets them), or set \
     workloads.runtime.image without {{computeCapability}}"
)]
pub struct RuntimeImageError {
    /// The configured image.
    pub image: String,
    /// The nodes' description.
    pub node: String,
}

/// Default longest run of a tuning Job: three days.
pub const DEFAULT_TUNING_DEADLINE_SECONDS: u64 = 3 * 24 * 3600;

/// Images and commands of the workloads the controller builds.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadConfig {
    /// Serving image; `{preset}` is replaced by the preset name, `{computeCapability}` by the
    /// GPU's compute capability without the dot (`80`) or `cpu` on a CPU-only size. A value
    /// without placeholders is used as is.
    pub runtime_image: String,
    /// Command of the serving container (the runtime binary).
    pub runtime_command: Vec<String>,
    /// Where the serving pod's weights volume is mounted; the runtime downloads the preset's
    /// repository there before it loads.
    pub model_dir: String,
    /// The Hugging Face hub (or mirror) the runtime downloads from: `HF_ENDPOINT` in the
    /// serving container; `None`: the runtime's default, huggingface.co.
    pub hf_endpoint: Option<String>,
    /// A node-local weights cache: a host directory (it must exist, writable by the runtime's
    /// user) under which each preset revision gets `<org>--<name>/<revision>`, so a restarted
    /// or rescheduled pod on the same node does not download again (the runtime verifies what
    /// it finds). `None`: an emptyDir sized from the preset's `disk`.
    pub weights_cache_host_path: Option<String>,
    /// Image of the adapter puller init container of the serving pod (holds `kaito-adapter`).
    pub adapter_puller_image: String,
    /// Command of the adapter puller; gets `--image <ref> --output /mnt/adapter/<name>` and,
    /// with an adapter pull secret, `--docker-config <file>` appended.
    pub adapter_puller_command: Vec<String>,
    /// Image of the tuning Job's data-download init container (holds `kaito-adapter`).
    pub data_downloader_image: String,
    /// Command of the data downloader; gets `--output /mnt/data <urls...>` appended.
    pub data_downloader_command: Vec<String>,
    /// Tuning image; `{preset}` is replaced by the preset name. The default is upstream
    /// KAITO's per-preset image (weights in `/workspace/tfs/weights`, its HF/PEFT trainer
    /// `/workspace/tfs/fine_tuning.py`), which reads `training_config.yaml` from
    /// `$YAML_FILE_PATH`, the dataset from `$DATASET_FOLDER_PATH` and writes the adapter to
    /// `TrainingArguments.output_dir` (`/mnt/results`).
    pub trainer_image: String,
    /// Command of the trainer init container; `{gpus}` is replaced by the GPUs per node.
    /// Nothing is appended: the trainer finds its inputs through the environment above.
    pub trainer_command: Vec<String>,
    /// Image of the adapter publisher container (holds `kaito-adapter`).
    pub publisher_image: String,
    /// Command of the publisher; gets `--source /mnt/results --target <image>` and, with
    /// `output.imagePushSecret`, `--docker-config <file>` appended.
    pub publisher_command: Vec<String>,
    /// Registries (`host:port`) the adapter publisher and pullers speak plain http to (an
    /// in-cluster registry without TLS): `--insecure-registry` for each.
    pub insecure_registries: Vec<String>,
    /// TESTS ONLY: the one non-public address tuning input may come from (a test cluster's data
    /// server); passed to the data downloader as `KAITO_TEST_ONLY_ALLOW_DATA_ADDRESS`.
    pub test_only_allow_data_address: Option<String>,
    /// Longest a tuning Job may run (`activeDeadlineSeconds`): a hung trainer or download
    /// fails the Job (reason `DeadlineExceeded`) and frees its GPU node instead of holding it.
    pub tuning_deadline_seconds: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            runtime_image: "ghcr.io/kaito-rs/kaito-runtime:0.1.0".into(),
            runtime_command: vec!["kaito-runtime".into()],
            model_dir: WEIGHTS_DIR.into(),
            hf_endpoint: None,
            weights_cache_host_path: None,
            adapter_puller_image: ADAPTER_IMAGE.into(),
            adapter_puller_command: vec!["kaito-adapter".into(), "pull".into()],
            data_downloader_image: ADAPTER_IMAGE.into(),
            data_downloader_command: vec!["kaito-adapter".into(), "fetch".into()],
            trainer_image: UPSTREAM_TRAINER_IMAGE.into(),
            trainer_command: UPSTREAM_TRAINER_COMMAND.map(String::from).to_vec(),
            publisher_image: ADAPTER_IMAGE.into(),
            publisher_command: vec!["kaito-adapter".into(), "publish".into()],
            insecure_registries: Vec::new(),
            test_only_allow_data_address: None,
            tuning_deadline_seconds: DEFAULT_TUNING_DEADLINE_SECONDS,
        }
    }
}

impl WorkloadConfig {
    /// `--insecure-registry R` for each plain-http registry (publisher and pullers).
    pub fn registry_args(&self) -> impl Iterator<Item = String> + '_ {
        self.insecure_registries
            .iter()
            .flat_map(|r| ["--insecure-registry".to_owned(), r.clone()])
    }

    /// The serving image for `preset` on nodes of `shape`: `{preset}` replaced by the preset
    /// name, `{computeCapability}` by the shape's compute capability without the dot (`70` for
    /// a V100, `80` for an A100) or by `cpu` when the shape has no GPU. An error when the
    /// image has `{computeCapability}` and the GPU's capability is not known (bring-your-own
    /// nodes without the GPU feature discovery labels).
    pub fn runtime_image_for(
        &self,
        preset: &str,
        shape: &GpuShape,
    ) -> Result<String, RuntimeImageError> {
        let image = self.runtime_image.replace(PRESET_PLACEHOLDER, preset);
        if !image.contains(COMPUTE_CAPABILITY_PLACEHOLDER) {
            return Ok(image);
        }
        let capability = if shape.is_cpu_only() {
            "cpu".to_string()
        } else {
            shape
                .compute_capability
                .map(|c| c.digits())
                .ok_or_else(|| RuntimeImageError {
                    image: self.runtime_image.clone(),
                    node: shape.describe(),
                })?
        };
        Ok(image.replace(COMPUTE_CAPABILITY_PLACEHOLDER, &capability))
    }

    /// The serving image may only hold the placeholders the controller replaces.
    pub fn validate_runtime_image(&self) -> Result<(), String> {
        let mut rest = self.runtime_image.as_str();
        while let Some(open) = rest.find('{') {
            let tail = &rest[open..];
            let end = tail.find('}').map_or(tail.len(), |i| i + 1);
            let placeholder = &tail[..end];
            if placeholder != PRESET_PLACEHOLDER && placeholder != COMPUTE_CAPABILITY_PLACEHOLDER {
                return Err(format!(
                    "--runtime-image (KAITO_RUNTIME_IMAGE, chart value workloads.runtime.image) \
                     {:?} holds {placeholder:?}, which the controller does not replace: use \
                     {PRESET_PLACEHOLDER} and {COMPUTE_CAPABILITY_PLACEHOLDER} only (spelled so)",
                    self.runtime_image
                ));
            }
            rest = &tail[end..];
        }
        Ok(())
    }
    /// The tuning image for `preset`.
    pub fn trainer_image_for(&self, preset: &str) -> String {
        self.trainer_image.replace("{preset}", preset)
    }
    /// The trainer command for a node with `gpus` GPUs.
    pub fn trainer_command_for(&self, gpus: &str) -> Vec<String> {
        self.trainer_command
            .iter()
            .map(|a| a.replace("{gpus}", gpus))
            .collect()
    }
}

/// Upstream KAITO's tuning image for a preset (tag 0.1.1 is the current tag of every preset
/// that supports tuning in upstream's `supported_models.yaml`).
pub const UPSTREAM_TRAINER_IMAGE: &str = "mcr.microsoft.com/aks/kaito/kaito-{preset}:0.1.1";
/// Upstream KAITO's tuning command: one training process per GPU under accelerate.
pub const UPSTREAM_TRAINER_COMMAND: [&str; 4] = [
    "accelerate",
    "launch",
    "--num_processes={gpus}",
    "/workspace/tfs/fine_tuning.py",
];

/// The NodeClass a `karpenter.sh/v1` NodeClaim references (`spec.nodeClassRef`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeClassRef {
    /// API group of the cloud's Karpenter provider.
    pub group: String,
    /// Kind of the cloud's NodeClass.
    pub kind: String,
    /// Name of the NodeClass; it must exist (Karpenter launches nothing for a claim whose
    /// NodeClass is missing).
    pub name: String,
}

/// Default `--karpenter-node-class-name`: the NodeClass AKS node auto-provisioning and the
/// Karpenter getting-started guides create.
pub const DEFAULT_NODE_CLASS: &str = "default";
/// Default `--karpenter-node-pool-name` (upstream KAITO's NodePool label).
pub const DEFAULT_NODE_POOL: &str = "kaito";

/// What the karpenter provisioner puts into its NodeClaims besides the workspace's needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KarpenterConfig {
    /// The NodeClass every claim references: the cloud's kind, the configured name.
    pub node_class: NodeClassRef,
    /// The NodePool named by each claim's `karpenter.sh/nodepool` label and requirement.
    pub node_pool: String,
    /// How often NodeClaims of workspaces that no longer exist are looked for and deleted.
    pub orphan_interval: std::time::Duration,
}

/// How often the karpenter provisioner sweeps for orphaned NodeClaims.
pub const DEFAULT_NODECLAIM_ORPHAN_INTERVAL: std::time::Duration =
    std::time::Duration::from_secs(300);

impl KarpenterConfig {
    /// The NodeClass `node_class_name` of `cloud`'s Karpenter provider (Azure:
    /// `karpenter.azure.com` AKSNodeClass; AWS: `karpenter.k8s.aws` EC2NodeClass) and the
    /// NodePool `node_pool`.
    pub fn new(cloud: Cloud, node_class_name: &str, node_pool: &str) -> Self {
        let (group, kind) = match cloud {
            Cloud::Azure => ("karpenter.azure.com", "AKSNodeClass"),
            Cloud::Aws => ("karpenter.k8s.aws", "EC2NodeClass"),
        };
        Self {
            node_class: NodeClassRef {
                group: group.into(),
                kind: kind.into(),
                name: node_class_name.into(),
            },
            node_pool: node_pool.into(),
            orphan_interval: DEFAULT_NODECLAIM_ORPHAN_INTERVAL,
        }
    }

    /// Both names must be Kubernetes object names; the NodePool's is also a label value, so
    /// at most 63 characters.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.node_class.name;
        if !is_dns1123_subdomain(name) {
            return Err(format!(
                "--karpenter-node-class-name (KAITO_KARPENTER_NODE_CLASS_NAME, chart value \
                 karpenter.nodeClassName) {name:?} is not a {} name: use the name of an \
                 existing {} (lowercase letters, digits, '-' and '.')",
                self.node_class.kind, self.node_class.kind
            ));
        }
        let pool = &self.node_pool;
        if pool.len() > 63 || !is_dns1123_subdomain(pool) {
            return Err(format!(
                "--karpenter-node-pool-name (KAITO_KARPENTER_NODE_POOL_NAME, chart value \
                 karpenter.nodePoolName) {pool:?} is not a NodePool name usable as a label \
                 value: at most 63 lowercase letters, digits, '-' and '.'"
            ));
        }
        Ok(())
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    s.len() <= 253 && s.split('.').all(label)
}

/// Whole-controller configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Whose SKU table sizes workspaces (the webhook's `--cloud`, from the same setting).
    pub cloud: Cloud,
    /// The node provisioner.
    pub provisioner: Provisioner,
    /// Images and commands of the workloads.
    pub workload: WorkloadConfig,
    /// Azure settings of the aks provisioner.
    pub azure: crate::azure::AzureSettings,
    /// NodeClaim settings of the karpenter provisioner.
    pub karpenter: KarpenterConfig,
}

impl Config {
    /// Defaults for `cloud` and `provisioner`.
    pub fn new(cloud: Cloud, provisioner: Provisioner) -> Self {
        Self {
            cloud,
            provisioner,
            workload: WorkloadConfig::default(),
            azure: crate::azure::AzureSettings::default(),
            karpenter: KarpenterConfig::new(cloud, DEFAULT_NODE_CLASS, DEFAULT_NODE_POOL),
        }
    }

    /// Whether the controller can run with this configuration: the provisioner works on the
    /// cloud, and the aks provisioner knows its cluster. The error names the setting (flag
    /// and environment variable) to fix.
    pub fn validate(&self) -> Result<(), String> {
        self.provisioner.check_cloud(self.cloud)?;
        self.workload.validate_runtime_image()?;
        match self.provisioner {
            Provisioner::Aks => self.azure.check().map_err(|e| e.to_string()),
            Provisioner::Karpenter => self.karpenter.validate(),
            Provisioner::Byo => Ok(()),
        }
    }

    /// The effective configuration as JSON (`kaito-controller --check-config` prints it).
    /// Secrets are not printed: a static token only shows as set.
    pub fn summary(&self) -> serde_json::Value {
        let w = &self.workload;
        let a = &self.azure;
        serde_json::json!({
            "cloud": self.cloud.to_string(),
            "provisioner": self.provisioner.to_string(),
            "workload": {
                "runtimeImage": w.runtime_image,
                "runtimeCommand": w.runtime_command,
                "modelDir": w.model_dir,
                "hfEndpoint": w.hf_endpoint,
                "weightsCacheHostPath": w.weights_cache_host_path,
                "adapterPullerImage": w.adapter_puller_image,
                "dataDownloaderImage": w.data_downloader_image,
                "trainerImage": w.trainer_image,
                "trainerCommand": w.trainer_command,
                "tuningDeadlineSeconds": w.tuning_deadline_seconds,
                "publisherImage": w.publisher_image,
            },
            "azure": {
                "subscriptionId": a.subscription_id,
                "resourceGroup": a.resource_group,
                "clusterName": a.cluster_name,
                "endpoint": a.endpoint,
                "staticToken": a.static_token.is_some(),
                "extraCa": a.ca_pem.is_some(),
                "orphanIntervalSecs": a.orphan_interval.as_secs(),
            },
            "karpenter": {
                "nodeClassRef": {
                    "group": self.karpenter.node_class.group,
                    "kind": self.karpenter.node_class.kind,
                    "name": self.karpenter.node_class.name,
                },
                "nodePool": self.karpenter.node_pool,
                "orphanIntervalSecs": self.karpenter.orphan_interval.as_secs(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_setting_to_fix() {
        assert_eq!(
            Config::new(Cloud::Aws, Provisioner::Karpenter).validate(),
            Ok(())
        );
        assert_eq!(
            Config::new(Cloud::Azure, Provisioner::Byo).validate(),
            Ok(())
        );
        let err = Config::new(Cloud::Aws, Provisioner::Aks)
            .validate()
            .expect_err("aks on aws");
        assert!(err.contains("--cloud=azure"), "{err}");
        let mut aks = Config::new(Cloud::Azure, Provisioner::Aks);
        aks.azure.subscription_id = "00000000-0000-0000-0000-000000000000".into();
        aks.azure.resource_group = "rg".into();
        let err = aks.validate().expect_err("no cluster name");
        assert!(err.contains("AZURE_CLUSTER_NAME"), "{err}");
        aks.azure.cluster_name = "aks-1".into();
        assert_eq!(aks.validate(), Ok(()));
        aks.azure.static_token = Some("secret-token".into());
        let summary = aks.summary();
        assert_eq!(summary["cloud"], "azure");
        assert_eq!(summary["provisioner"], "aks");
        assert_eq!(summary["azure"]["clusterName"], "aks-1");
        assert_eq!(summary["azure"]["staticToken"], true);
        assert!(
            !summary.to_string().contains("secret-token"),
            "the summary must not print the token"
        );
    }

    #[test]
    fn the_node_class_follows_the_cloud_and_names_are_checked() {
        let azure = KarpenterConfig::new(Cloud::Azure, "gpu", "gpu-pool");
        assert_eq!(
            azure.node_class,
            NodeClassRef {
                group: "karpenter.azure.com".into(),
                kind: "AKSNodeClass".into(),
                name: "gpu".into()
            }
        );
        let aws = Config::new(Cloud::Aws, Provisioner::Karpenter);
        assert_eq!(aws.karpenter.node_class.group, "karpenter.k8s.aws");
        assert_eq!(aws.karpenter.node_class.kind, "EC2NodeClass");
        assert_eq!(aws.karpenter.node_class.name, "default");
        assert_eq!(aws.karpenter.node_pool, "kaito");
        assert_eq!(aws.validate(), Ok(()));
        let summary = aws.summary();
        assert_eq!(summary["karpenter"]["nodeClassRef"]["kind"], "EC2NodeClass");

        let mut bad = aws.clone();
        bad.karpenter.node_class.name = "GPU_class".into();
        let err = bad.validate().expect_err("not a name");
        assert!(
            err.contains("KAITO_KARPENTER_NODE_CLASS_NAME")
                && err.contains("karpenter.nodeClassName")
                && err.contains("EC2NodeClass"),
            "{err}"
        );
        let mut bad = aws.clone();
        bad.karpenter.node_pool = "p".repeat(64);
        let err = bad.validate().expect_err("too long for a label value");
        assert!(err.contains("karpenter.nodePoolName"), "{err}");
        bad.karpenter.node_pool = String::new();
        assert!(bad.validate().is_err(), "an empty NodePool name");
        // Only the karpenter provisioner uses them.
        bad.provisioner = Provisioner::Byo;
        assert_eq!(bad.validate(), Ok(()));
    }

    fn shape(instance_type: &str) -> GpuShape {
        crate::plan::sku_shape(Cloud::Azure, instance_type)
            .or_else(|| crate::plan::sku_shape(Cloud::Aws, instance_type))
            .expect("a catalog size")
    }

    #[test]
    fn the_runtime_image_takes_the_compute_capability_of_the_size() {
        let w = WorkloadConfig {
            runtime_image: "ghcr.io/kaito-rs/kaito-runtime:0.1.0-cuda{computeCapability}".into(),
            ..WorkloadConfig::default()
        };
        for (size, tag) in [
            ("Standard_NC24ads_A100_v4", "cuda80"),
            ("Standard_NC6s_v3", "cuda70"),
            ("Standard_NC4as_T4_v3", "cuda75"),
            ("Standard_NV36ads_A10_v5", "cuda86"),
            ("g6.xlarge", "cuda89"),
            ("Standard_NC40ads_H100_v5", "cuda90"),
            ("Standard_D4s_v3", "cudacpu"),
            ("m5.xlarge", "cudacpu"),
        ] {
            assert_eq!(
                w.runtime_image_for("phi-3", &shape(size)),
                Ok(format!("ghcr.io/kaito-rs/kaito-runtime:0.1.0-{tag}")),
                "{size}"
            );
        }
        // Both placeholders at once.
        let both = WorkloadConfig {
            runtime_image: "r/{preset}:{computeCapability}".into(),
            ..WorkloadConfig::default()
        };
        assert_eq!(
            both.runtime_image_for("phi-3", &shape("Standard_NC6s_v3")),
            Ok("r/phi-3:70".into())
        );
        assert_eq!(both.validate_runtime_image(), Ok(()));
    }

    #[test]
    fn a_runtime_image_without_the_placeholder_is_used_as_is() {
        let w = WorkloadConfig::default();
        for size in [
            "Standard_NC24ads_A100_v4",
            "Standard_NC6s_v3",
            "Standard_D4s_v3",
        ] {
            assert_eq!(
                w.runtime_image_for("phi-3", &shape(size)),
                Ok("ghcr.io/kaito-rs/kaito-runtime:0.1.0".into())
            );
        }
        assert_eq!(w.validate_runtime_image(), Ok(()));
    }

    #[test]
    fn an_unknown_compute_capability_is_an_error_saying_how_to_fix_it() {
        let w = WorkloadConfig {
            runtime_image: "r:{computeCapability}".into(),
            ..WorkloadConfig::default()
        };
        let mut byo = shape("Standard_NC24ads_A100_v4");
        byo.source = "2 bring-your-own node(s)".into();
        byo.compute_capability = None;
        let err = w
            .runtime_image_for("phi-3", &byo)
            .expect_err("unknown capability")
            .to_string();
        for needle in [
            "workloads.runtime.image",
            "2 bring-your-own node(s)",
            "set resource.instanceType to a GPU size",
            "nvidia.com/cuda.compute.major",
            "without {computeCapability}",
        ] {
            assert!(err.contains(needle), "{needle:?} missing from {err}");
        }
        // Without the placeholder the capability is not needed.
        assert!(
            WorkloadConfig::default()
                .runtime_image_for("phi-3", &byo)
                .is_ok()
        );
    }

    #[test]
    fn a_misspelled_placeholder_in_the_runtime_image_is_refused_at_start() {
        for bad in ["r:{compute_capability}", "r:{preset", "r/{model}:1"] {
            let mut c = Config::new(Cloud::Azure, Provisioner::Byo);
            c.workload.runtime_image = bad.into();
            let err = c.validate().expect_err(bad);
            assert!(
                err.contains("workloads.runtime.image") && err.contains("{computeCapability}"),
                "{err}"
            );
        }
    }

    #[test]
    fn images_take_the_preset_name() {
        let w = WorkloadConfig {
            runtime_image: "r/{preset}:1".into(),
            ..WorkloadConfig::default()
        };
        assert_eq!(
            w.runtime_image_for("phi-3", &shape("Standard_NC6s_v3")),
            Ok("r/phi-3:1".into())
        );
        assert_eq!(
            w.trainer_image_for("phi-3"),
            "mcr.microsoft.com/aks/kaito/kaito-phi-3:0.1.1"
        );
        assert_eq!(
            w.trainer_command_for("2"),
            [
                "accelerate",
                "launch",
                "--num_processes=2",
                "/workspace/tfs/fine_tuning.py"
            ]
        );
    }
}
