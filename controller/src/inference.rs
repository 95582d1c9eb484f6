//! Serving workload builders: the StatefulSet and the two Services (pure).
//!
//! A StatefulSet rather than a Deployment: replicas get stable names and DNS entries through
//! `<ws>-headless` (multi-node serving needs to find its peers), `Parallel` pod management
//! starts all replicas at once like a Deployment would, and a rolling update replaces one
//! replica at a time so the model stays served while adapters change.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, KeyToPath, LocalObjectReference, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kaito_api::admission::EngineParams;
use kaito_api::{ANNOTATION_ENABLE_LB, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, Workspace};
use serde_json::Value;

use crate::config::{Provisioner, RuntimeImageError, WorkloadConfig};
use crate::naming::{self, RUNTIME_PORT, headless_service};
use crate::nodes::GPU_RESOURCE;
use crate::plan::WorkspacePlan;

/// A workload cannot be built: a `volumeSource` the user wrote that the API types reject, or
/// a runtime image that cannot be chosen.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The JSON did not deserialize into the typed object.
    #[error("building {what}: {source}")]
    Shape {
        /// Which object.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON has a field the API type does not have (a misspelling): it would have
    /// vanished silently on the way to the API server.
    #[error("building {what}: unknown field {path} (not in the Kubernetes API type)")]
    UnknownField {
        /// Which object.
        what: &'static str,
        /// Where, e.g. `tuning.output.volumeSource.persistentVolumeClaim.claimNme`.
        path: String,
    },
    /// A `volumeSource` the user wrote is not a volume source object: an adapter's that is
    /// not an object or names the volume (admission refuses both; a workspace stored before
    /// that check could still carry one), or a tuning input's or output's that is not an
    /// object.
    #[error(
        "{field}: not a volume source; give one volume type, e.g. \
         {{persistentVolumeClaim: {{claimName: my-claim}}}}"
    )]
    VolumeSource {
        /// `inference.adapters[i].source.volumeSource`, `tuning.input.volumeSource` or
        /// `tuning.output.volumeSource`.
        field: String,
    },
    /// The runtime image cannot be chosen for the nodes (the reconciler reports it as an
    /// invalid spec before building; see [`serving_image`]).
    #[error(transparent)]
    RuntimeImage(#[from] RuntimeImageError),
}

/// The typed object the JSON `v` describes (a `volumeSource` the user wrote: see
/// [`user_volume`]). Strict: a key of `v` the type does not keep (a misspelt or misplaced
/// field, which serde would drop without a word) is a [`BuildError::UnknownField`].
pub(crate) fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    what: &'static str,
    v: Value,
) -> Result<T, BuildError> {
    let built: T =
        serde_json::from_value(v.clone()).map_err(|source| BuildError::Shape { what, source })?;
    let back = serde_json::to_value(&built).map_err(|source| BuildError::Shape { what, source })?;
    match dropped_field(&v, &back, "") {
        Some(path) => Err(BuildError::UnknownField { what, path }),
        None => Ok(built),
    }
}

/// The first key (as a path) of `written` that `kept` lacks. Values are not compared (the
/// types normalize some), only the presence of keys; a `null` written is no field.
fn dropped_field(written: &Value, kept: &Value, at: &str) -> Option<String> {
    match (written, kept) {
        (Value::Object(w), Value::Object(k)) => w.iter().find_map(|(key, value)| {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            match k.get(key) {
                _ if value.is_null() => None,
                None => Some(path),
                Some(kept) => dropped_field(value, kept, &path),
            }
        }),
        (Value::Array(w), Value::Array(k)) => w
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(i, (w, k))| dropped_field(w, k, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// The controller owner reference to `ws`.
pub fn owner_reference(ws: &Workspace) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/{}", kaito_api::GROUP, kaito_api::V1BETA1),
        kind: kaito_api::KIND.into(),
        name: naming::name(ws).into(),
        uid: ws.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Seconds the startup probe allows: 5 minutes plus 1 minute per GiB of weights (download
/// or copy plus load), at most 2 hours.
pub fn startup_budget_seconds(plan: &WorkspacePlan) -> i64 {
    let gib = plan
        .preset
        .as_ref()
        .map(|p| p.weights.as_gib())
        .unwrap_or(0.0);
    let secs = 300.0 + 60.0 * gib.ceil();
    (secs as i64).clamp(300, 7200)
}

/// Tolerations every GPU pod carries (a pod on a CPU-only size carries none: its nodes have
/// no GPU taint).
pub fn gpu_tolerations() -> Vec<Toleration> {
    let no_schedule = |key: &str, operator: &str, value: Option<&str>| Toleration {
        key: Some(key.into()),
        operator: Some(operator.into()),
        value: value.map(String::from),
        effect: Some("NoSchedule".into()),
        ..Toleration::default()
    };
    vec![
        no_schedule("nvidia.com/gpu", "Exists", None),
        no_schedule("sku", "Equal", Some("gpu")),
    ]
}

/// The securityContext of every container the controller writes: no privilege escalation and
/// no Linux capabilities. `non_root`: the container runs one of this project's images (they run
/// as a numeric non-root user), so the kubelet refuses it if it would run as root; the
/// trainer and a user's data image keep the user their image names.
pub fn container_security(non_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        run_as_non_root: non_root.then_some(true),
        ..SecurityContext::default()
    }
}

/// The pod securityContext of every pod the controller writes: the container runtime's default
/// seccomp profile.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Required node affinity: the user's selector (matchLabels and matchExpressions), plus
/// `kaito.sh/workspace=<ws>` and `kaito.sh/workspacenamespace=<namespace>` for provisioned
/// nodes. Bring-your-own nodes do not carry the
/// workspace label (the controller never labels nodes it did not create), so there the
/// user's selector alone picks them.
pub fn node_affinity(ws: &Workspace, provisioner: Provisioner) -> Affinity {
    let is = |key: String, value: String| NodeSelectorRequirement {
        key,
        operator: "In".into(),
        values: Some(vec![value]),
    };
    let mut exprs: Vec<NodeSelectorRequirement> = ws
        .match_labels()
        .into_iter()
        .map(|(k, v)| is(k, v))
        .collect();
    if let Some(extra) = ws
        .resource
        .label_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_ref())
    {
        exprs.extend(extra.iter().map(|e| NodeSelectorRequirement {
            key: e.key.clone(),
            operator: e.operator.clone(),
            values: e.values.clone(),
        }));
    }
    if provisioner != Provisioner::Byo {
        // Name and namespace: same-named workspaces of two namespaces have nodes of their own.
        exprs.push(is(LABEL_WORKSPACE.into(), naming::name(ws).into()));
        exprs.push(is(
            LABEL_WORKSPACE_NAMESPACE.into(),
            naming::namespace(ws).into(),
        ));
    }
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(exprs),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// The env var `name=value`.
pub(crate) fn env_var(name: impl Into<String>, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The mount of volume `name` at `path`, read-only when `read_only` (else no `readOnly`).
pub(crate) fn mount(
    name: impl Into<String>,
    path: impl Into<String>,
    read_only: bool,
) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The emptyDir volume `name`.
pub(crate) fn empty_dir(name: impl Into<String>, source: EmptyDirVolumeSource) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(source),
        ..Volume::default()
    }
}

/// The memory-backed `/dev/shm` of serving and training pods (the container runtime's 64 MiB
/// default is too small for NCCL and data loaders): the volume, and [`shm_mount`] its mount.
pub(crate) fn shm_volume() -> Volume {
    empty_dir(
        SHM_VOLUME,
        EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            ..EmptyDirVolumeSource::default()
        },
    )
}

/// The mount of [`shm_volume`].
pub(crate) fn shm_mount() -> VolumeMount {
    mount(SHM_VOLUME, "/dev/shm", false)
}

const SHM_VOLUME: &str = "dshm";

/// The volume `name` holding the `.dockerconfigjson` of the docker-config Secret `secret` as
/// `config.json`.
pub(crate) fn docker_config_volume(name: impl Into<String>, secret: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(vec![KeyToPath {
                key: ".dockerconfigjson".into(),
                path: "config.json".into(),
                ..KeyToPath::default()
            }]),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// `gpus` of [`GPU_RESOURCE`], requested and as the limit.
pub(crate) fn gpu_resources(gpus: &str) -> ResourceRequirements {
    let gpus = BTreeMap::from([(GPU_RESOURCE.to_string(), Quantity(gpus.into()))]);
    ResourceRequirements {
        requests: Some(gpus.clone()),
        limits: Some(gpus),
        ..ResourceRequirements::default()
    }
}

/// The volume `name` of a volume source the user wrote at `field` (e.g.
/// `tuning.output.volumeSource`): an object naming the volume type, any `name` in it replaced.
/// Strict like [`typed`] (`what`: the object it goes into): a key no volume type has is a
/// [`BuildError::UnknownField`] with its path under `field`.
pub(crate) fn user_volume(
    what: &'static str,
    field: String,
    name: String,
    source: &Value,
) -> Result<Volume, BuildError> {
    let Some(source) = source.as_object() else {
        return Err(BuildError::VolumeSource { field });
    };
    let mut volume = source.clone();
    volume.insert("name".into(), Value::String(name));
    typed(what, Value::Object(volume)).map_err(|e| match e {
        BuildError::UnknownField { what, path } => BuildError::UnknownField {
            what,
            path: format!("{field}.{path}"),
        },
        e => e,
    })
}

fn selector_labels(ws: &Workspace) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_WORKSPACE.to_string(), naming::name(ws).to_string())])
}

/// An adapter of the serving pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adapter {
    /// The adapter's name (a DNS-1123 label): env var name and `/mnt/adapter/<name>`.
    pub name: String,
    /// Strength, `"1.0"` when not given.
    pub strength: String,
    /// The adapter image, pulled by the puller init container.
    pub image: Option<String>,
    /// A volume holding the adapter (`adapter_config.json` and `adapter_model.safetensors`
    /// at its root), mounted read-only at `/mnt/adapter/<name>` in the serving container.
    pub volume_source: Option<Value>,
    /// The adapter's index in `inference.adapters`, for messages.
    pub index: usize,
    /// The docker-config Secret the puller authenticates with: the first of the source's
    /// `imagePullSecrets` (`kaito-adapter pull` reads one docker config file).
    pub pull_secret: Option<String>,
}

/// Where the serving container finds adapters (the runtime's `--adapters-dir`): one directory
/// per adapter, `<name>/adapter_config.json` and `<name>/adapter_model.safetensors`.
pub const ADAPTERS_DIR: &str = "/mnt/adapter";

/// Where an adapter's pull Secret is mounted in its puller.
pub const ADAPTER_PULL_SECRET_DIR: &str = "/mnt/pull-secret";
/// The docker config file the puller gets as `--docker-config`.
pub const ADAPTER_DOCKER_CONFIG: &str = "/mnt/pull-secret/config.json";

/// The adapters with a name, in spec order.
pub fn adapters(ws: &Workspace) -> Vec<Adapter> {
    ws.inference
        .as_ref()
        .and_then(|i| i.adapters.as_ref())
        .map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(index, a)| {
                    let src = a.source.as_ref()?;
                    Some(Adapter {
                        name: src.name.clone()?,
                        strength: a.strength.clone().unwrap_or_else(|| "1.0".into()),
                        image: src.image.clone(),
                        volume_source: src.volume_source.clone(),
                        index,
                        pull_secret: src
                            .image_pull_secrets
                            .as_ref()
                            .and_then(|s| s.first().cloned()),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The serving StatefulSet `<ws>`.
pub fn statefulset(
    ws: &Workspace,
    plan: &WorkspacePlan,
    cfg: &WorkloadConfig,
    provisioner: Provisioner,
    engine: &EngineParams,
) -> Result<StatefulSet, BuildError> {
    let name = naming::name(ws);
    // All the GPUs of the node; none on a CPU-only size.
    let gpus = (!plan.cpu_only()).then(|| plan.gpus_per_node.max(1).to_string());
    let mut labels = naming::workspace_labels(ws);
    labels.extend(selector_labels(ws));
    let mut template = match ws.inference.as_ref().and_then(|i| i.template.as_ref()) {
        Some(user) if plan.preset.is_none() => template_pod(ws, user, gpus.as_deref(), provisioner),
        _ => preset_pod(ws, plan, cfg, provisioner, gpus.as_deref(), engine)?,
    };
    template.metadata.get_or_insert_default().labels = Some(labels);
    Ok(StatefulSet {
        metadata: child_meta(ws, name.to_string()),
        spec: Some(StatefulSetSpec {
            replicas: Some(plan.node_count),
            pod_management_policy: Some("Parallel".into()),
            service_name: Some(headless_service(name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(ws)),
                ..LabelSelector::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            template,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

/// The serving container's image: a private preset's own image (it carries the weights), else
/// the configured runtime image for the preset on the plan's nodes — `{computeCapability}`
/// becomes the GPU's compute capability (`80`) or `cpu` (see
/// [`WorkloadConfig::runtime_image_for`]). The reconciler calls it before building, so that an
/// image that cannot be chosen is a status condition, not a retried error.
pub fn serving_image(
    ws: &Workspace,
    plan: &WorkspacePlan,
    cfg: &WorkloadConfig,
) -> Result<String, RuntimeImageError> {
    let spec = ws.preset();
    let private = spec.and_then(|p| p.access_mode.as_deref()) == Some("private");
    match spec
        .and_then(|p| p.preset_options.as_ref())
        .and_then(|o| o.image.clone())
    {
        Some(img) if private => Ok(img),
        _ => cfg.runtime_image_for(
            spec.map(|p| p.name.as_str()).unwrap_or_default(),
            &plan.shape,
        ),
    }
}

/// The pod of a preset. `gpus`: the GPUs it requests, `None` on a CPU-only size (then it
/// requests the sizing's CPU memory estimate, carries no GPU toleration, and the runtime is
/// told `--cpu`). `engine`: the runtime parameters of `inference.config`.
fn preset_pod(
    ws: &Workspace,
    plan: &WorkspacePlan,
    cfg: &WorkloadConfig,
    provisioner: Provisioner,
    gpus: Option<&str>,
    engine: &EngineParams,
) -> Result<PodTemplateSpec, BuildError> {
    let preset = ws.preset().map(|p| p.name.clone()).unwrap_or_default();
    let options = ws.preset().and_then(|p| p.preset_options.as_ref());
    let private = ws.preset().and_then(|p| p.access_mode.as_deref()) == Some("private");
    let image = serving_image(ws, plan, cfg)?;
    let sizing = plan.sizing.as_ref();
    let dtype = engine
        .dtype
        .unwrap_or_else(|| sizing.map(|s| s.dtype.as_str()).unwrap_or("auto"));
    let (command, base_args) = match cfg.runtime_command.split_first() {
        Some((c, rest)) => (vec![c.clone()], rest.to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    let mut args: Vec<String> = base_args;
    let (weights_volume, model_dir) = weights(plan, cfg);
    args.extend(["--model-dir".to_string(), model_dir]);
    // A private image carries its weights; otherwise the runtime downloads the preset's
    // pinned revision into the weights volume before it loads.
    let source = plan
        .preset
        .as_deref()
        .filter(|_| !private)
        .map(|p| &p.huggingface);
    if let Some(hf) = source {
        args.extend([
            "--model-repo".to_string(),
            hf.repo.clone(),
            "--model-revision".to_string(),
            hf.revision.clone(),
        ]);
        if let Some(file) = &hf.file {
            args.extend(["--model-file".to_string(), file.clone()]);
        }
    }
    args.extend(
        [
            "--served-model-name",
            &preset,
            "--port",
            &RUNTIME_PORT.to_string(),
            "--dtype",
            dtype,
            "--adapters-dir",
            ADAPTERS_DIR,
        ]
        .map(String::from),
    );
    if gpus.is_none() {
        // No GPU on the node: the runtime must not look for one (a CUDA build would fail to
        // initialize the device).
        args.push("--cpu".to_string());
    }
    args.extend(engine.args(sizing.and_then(|s| s.max_model_len).map(u64::from)));
    let mut env = vec![env_var("SERVED_MODEL_NAME", &preset)];
    if let Some(endpoint) = cfg.hf_endpoint.as_ref().filter(|_| source.is_some()) {
        env.push(env_var("HF_ENDPOINT", endpoint));
    }
    if let Some(len) = sizing.and_then(|s| s.max_model_len) {
        env.push(env_var("MAX_MODEL_LEN", len.to_string()));
    }
    if let Some(secret) = options.and_then(|o| o.model_access_secret.as_ref()) {
        env.push(EnvVar {
            name: "HF_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: "HF_TOKEN".into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    let adapters = adapters(ws);
    let mut init = Vec::new();
    let pull_secrets: Vec<LocalObjectReference> = options
        .and_then(|o| o.image_pull_secrets.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|name| LocalObjectReference { name })
        .collect();
    // One Secret volume per distinct adapter pull secret, mounted only into its pullers.
    let mut secret_volumes: Vec<(String, Volume)> = Vec::new();
    // Adapters on a volume: the volume itself, mounted where the runtime looks for adapters.
    let mut adapter_volumes: Vec<Volume> = Vec::new();
    let mut adapter_mounts: Vec<VolumeMount> = Vec::new();
    for a in &adapters {
        env.push(env_var(&a.name, &a.strength));
        if let Some(source) = &a.volume_source {
            let field = format!("inference.adapters[{}].source.volumeSource", a.index);
            if source.get("name").is_some() {
                return Err(BuildError::VolumeSource { field });
            }
            let volume = format!("adapter-volume-{}", adapter_volumes.len());
            adapter_volumes.push(user_volume("pod template", field, volume.clone(), source)?);
            adapter_mounts.push(mount(volume, format!("{ADAPTERS_DIR}/{}", a.name), true));
        }
        let Some(image) = &a.image else { continue };
        let mut cmd = cfg.adapter_puller_command.clone();
        cmd.extend([
            "--image".into(),
            image.clone(),
            "--output".into(),
            format!("{ADAPTERS_DIR}/{}", a.name),
        ]);
        cmd.extend(cfg.registry_args());
        let mut mounts = vec![mount("adapters", ADAPTERS_DIR, false)];
        if let Some(secret) = &a.pull_secret {
            let volume = match secret_volumes.iter().position(|(s, _)| s == secret) {
                Some(i) => format!("adapter-pull-secret-{i}"),
                None => {
                    let v = format!("adapter-pull-secret-{}", secret_volumes.len());
                    secret_volumes.push((secret.clone(), docker_config_volume(&v, secret)));
                    v
                }
            };
            cmd.extend(["--docker-config".into(), ADAPTER_DOCKER_CONFIG.into()]);
            mounts.push(mount(volume, ADAPTER_PULL_SECRET_DIR, true));
        }
        init.push(Container {
            name: format!("adapter-{}", a.name),
            image: Some(cfg.adapter_puller_image.clone()),
            command: Some(cmd),
            volume_mounts: Some(mounts),
            security_context: Some(container_security(true)),
            ..Container::default()
        });
    }
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(RUNTIME_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Probe::default()
    };
    let budget = i32::try_from(startup_budget_seconds(plan)).unwrap_or(i32::MAX);
    let mut volumes = vec![shm_volume(), weights_volume];
    let mut mounts = vec![shm_mount(), mount(WEIGHTS_VOLUME, &cfg.model_dir, false)];
    if !adapters.is_empty() {
        // The directory the runtime reads (image adapters are pulled into it); volume adapters
        // are mounted below it, after it (the kubelet mounts parents first).
        volumes.push(empty_dir("adapters", EmptyDirVolumeSource::default()));
        mounts.push(mount("adapters", ADAPTERS_DIR, false));
        volumes.extend(adapter_volumes);
        mounts.extend(adapter_mounts);
    }
    volumes.extend(secret_volumes.into_iter().map(|(_, v)| v));
    let resources = match gpus {
        Some(gpus) => gpu_resources(gpus),
        // The CPU memory estimate sizing admitted the size with (no limit: a request the
        // scheduler places by, not a cap that kills a pod over an estimate).
        None => ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity(format!(
                    "{}Mi",
                    sizing
                        .map(|s| s.needs.as_bytes())
                        .unwrap_or(0)
                        .div_ceil(1 << 20)
                )),
            )])),
            ..ResourceRequirements::default()
        },
    };
    Ok(PodTemplateSpec {
        metadata: None,
        spec: Some(PodSpec {
            affinity: Some(node_affinity(ws, provisioner)),
            init_containers: Some(init),
            containers: vec![Container {
                name: "model".into(),
                image: Some(image),
                command: Some(command),
                args: Some(args),
                env: Some(env),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: RUNTIME_PORT,
                    ..ContainerPort::default()
                }]),
                resources: Some(resources),
                // /health turns 200 once the weights are downloaded and loaded; /healthz
                // answers as long as the server runs, so a download is not killed as dead.
                startup_probe: Some(probe("/health", 10, budget / 10)),
                liveness_probe: Some(probe("/healthz", 10, 3)),
                readiness_probe: Some(probe("/health", 5, 2)),
                volume_mounts: Some(mounts),
                security_context: Some(container_security(true)),
                ..Container::default()
            }],
            volumes: Some(volumes),
            security_context: Some(pod_security()),
            tolerations: gpus.is_some().then(gpu_tolerations),
            image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
            ..PodSpec::default()
        }),
    })
}

/// The serving pod's weights volume.
pub const WEIGHTS_VOLUME: &str = "weights";

/// The weights volume and the runtime's `--model-dir`: with a node-local cache, the cache
/// directory (it must exist and be writable by the runtime's user) and in it the preset
/// revision's own directory `<org>--<name>/<revision>`; otherwise an emptyDir limited to the
/// preset's `disk`, which is the model directory itself.
fn weights(plan: &WorkspacePlan, cfg: &WorkloadConfig) -> (Volume, String) {
    match (&cfg.weights_cache_host_path, plan.preset.as_deref()) {
        (Some(root), Some(p)) => (
            Volume {
                name: WEIGHTS_VOLUME.into(),
                host_path: Some(HostPathVolumeSource {
                    path: root.trim_end_matches('/').into(),
                    type_: Some("Directory".into()),
                }),
                ..Volume::default()
            },
            format!(
                "{}/{}/{}",
                cfg.model_dir.trim_end_matches('/'),
                p.huggingface.repo.replace('/', "--"),
                p.huggingface.revision
            ),
        ),
        (_, Some(p)) => (
            empty_dir(
                WEIGHTS_VOLUME,
                EmptyDirVolumeSource {
                    size_limit: Some(Quantity(format!(
                        "{}Mi",
                        p.disk.as_bytes().div_ceil(1 << 20)
                    ))),
                    ..EmptyDirVolumeSource::default()
                },
            ),
            cfg.model_dir.clone(),
        ),
        (_, None) => (
            empty_dir(WEIGHTS_VOLUME, EmptyDirVolumeSource::default()),
            cfg.model_dir.clone(),
        ),
    }
}

/// A user's pod template, placed on the workspace's nodes; on a GPU size (`gpus` given) its
/// first container gets the node's GPUs unless it asks itself, and the pod the GPU
/// tolerations; on a CPU-only size it is left as written.
fn template_pod(
    ws: &Workspace,
    user: &PodTemplateSpec,
    gpus: Option<&str>,
    provisioner: Provisioner,
) -> PodTemplateSpec {
    let mut pod = user.clone();
    let spec = pod.spec.get_or_insert_default();
    spec.affinity = Some(node_affinity(ws, provisioner));
    if let Some(gpus) = gpus {
        spec.tolerations
            .get_or_insert_default()
            .extend(gpu_tolerations());
        if let Some(c) = spec.containers.first_mut() {
            let resources = c.resources.get_or_insert_default();
            if !resources
                .limits
                .as_ref()
                .is_some_and(|l| l.contains_key(GPU_RESOURCE))
            {
                for side in [&mut resources.limits, &mut resources.requests] {
                    side.get_or_insert_default()
                        .insert(GPU_RESOURCE.into(), Quantity(gpus.into()));
                }
            }
        }
    }
    pod
}

/// The Services `<ws>` (ClusterIP, or LoadBalancer with `kaito.sh/enablelb: "True"`; port
/// 80 → 5000) and `<ws>-headless`.
pub fn services(ws: &Workspace) -> [Service; 2] {
    let name = naming::name(ws);
    let lb = ws
        .annotation(ANNOTATION_ENABLE_LB)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let http = |port: i32| ServicePort {
        name: Some("http".into()),
        port,
        target_port: Some(IntOrString::Int(RUNTIME_PORT)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    let main = Service {
        metadata: child_meta(ws, name.to_string()),
        spec: Some(ServiceSpec {
            type_: Some(if lb { "LoadBalancer" } else { "ClusterIP" }.into()),
            selector: Some(selector_labels(ws)),
            ports: Some(vec![http(80)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let headless = Service {
        metadata: child_meta(ws, headless_service(name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(ws)),
            ports: Some(vec![http(RUNTIME_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    [main, headless]
}

/// The metadata of a child `name` of `ws`: its namespace, the workspace labels and the
/// controller owner reference.
pub fn child_meta(ws: &Workspace, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(naming::namespace(ws).to_string()),
        labels: Some(naming::workspace_labels(ws)),
        owner_references: Some(vec![owner_reference(ws)]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cloud;
    use crate::plan::plan;
    use crate::testutil::ws;
    use serde_json::json;

    fn sts_json(yaml: &str, provisioner: Provisioner) -> Value {
        sts_of(ws(yaml), provisioner)
    }

    fn sts_of(w: Workspace, provisioner: Provisioner) -> Value {
        let p = plan(&w, Cloud::Azure, None).expect("plans");
        let s = statefulset(
            &w,
            &p,
            &WorkloadConfig::default(),
            provisioner,
            &EngineParams::default(),
        )
        .expect("builds");
        serde_json::to_value(s).expect("json")
    }

    #[test]
    fn a_misspelt_field_is_an_error_naming_it_not_a_silent_drop() {
        let v = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPot": 5000}], "selector": null}});
        let err = typed::<Service>("Service", v).expect_err("targetPot is no field");
        assert!(
            matches!(&err, BuildError::UnknownField { path, .. } if path == "spec.ports[0].targetPot"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("unknown field spec.ports[0].targetPot"),
            "{err}"
        );
    }

    #[test]
    fn seed_statefulset_follows_the_contract() {
        let mut w = ws(include_str!(
            "../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        w.resource.count = Some(2);
        let s = sts_of(w, Provisioner::Karpenter);
        assert_eq!(s["spec"]["replicas"], 2);
        let spec = &s["spec"];
        assert_eq!(s["metadata"]["name"], "workspace-phi-3-mini");
        assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "Workspace");
        assert_eq!(s["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(spec["podManagementPolicy"], "Parallel");
        assert_eq!(spec["serviceName"], "workspace-phi-3-mini-headless");
        let c = &spec["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["requests"]["nvidia.com/gpu"], "1");
        assert_eq!(c["resources"]["limits"], c["resources"]["requests"]);
        assert_eq!(c["startupProbe"]["httpGet"]["path"], "/health");
        assert_eq!(c["startupProbe"]["httpGet"]["port"], 5000);
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"], "/healthz",
            "a pod downloading or loading its weights is alive"
        );
        assert_eq!(c["command"], json!(["kaito-runtime"]));
        let args = c["args"].as_array().expect("args");
        let pos = |flag: &str| args.iter().position(|a| a == flag).expect(flag);
        assert_eq!(
            args[pos("--served-model-name") + 1],
            "phi-3-mini-4k-instruct"
        );
        assert_eq!(args[pos("--dtype") + 1], "f16", "V100 has no bf16");
        assert_eq!(
            args[pos("--model-repo") + 1],
            "microsoft/Phi-3-mini-4k-instruct"
        );
        assert_eq!(
            args[pos("--model-revision") + 1],
            "0a67737cc96d2554230f90338b163bc6380a2a85"
        );
        assert_eq!(args[pos("--model-dir") + 1], "/workspace/weights");
        assert!(!args.contains(&json!("--model-file")));
        assert!(
            c["volumeMounts"]
                .as_array()
                .expect("mounts")
                .contains(&json!({"name": "weights", "mountPath": "/workspace/weights"}))
        );
        assert_eq!(args[pos("--port") + 1], "5000");
        let tol = &spec["template"]["spec"]["tolerations"];
        assert!(
            tol.as_array()
                .expect("tol")
                .iter()
                .any(|t| t["key"] == "sku" && t["value"] == "gpu")
        );
        assert!(
            tol.as_array()
                .expect("tol")
                .iter()
                .any(|t| t["key"] == "nvidia.com/gpu" && t["operator"] == "Exists")
        );
        let exprs = &spec["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"];
        assert!(
            exprs
                .as_array()
                .expect("exprs")
                .contains(&json!({"key": "apps", "operator": "In", "values": ["phi-3"]}))
        );
        assert!(exprs.as_array().expect("exprs").contains(&json!({"key": "kaito.sh/workspace", "operator": "In", "values": ["workspace-phi-3-mini"]})));
        // The name alone is shared by same-named workspaces of other namespaces.
        assert!(exprs.as_array().expect("exprs").contains(
            &json!({"key": "kaito.sh/workspacenamespace", "operator": "In", "values": ["default"]})
        ));
        let vols = &spec["template"]["spec"]["volumes"];
        assert_eq!(vols[0]["emptyDir"]["medium"], "Memory");
        assert_eq!(
            vols[1],
            json!({"name": "weights", "emptyDir": {"sizeLimit": "71680Mi"}}),
            "the catalog's disk (70Gi) bounds the weights volume"
        );
        assert_eq!(
            spec["template"]["metadata"]["labels"]["kaito.sh/workspace"],
            "workspace-phi-3-mini"
        );
    }

    fn sts_on(yaml: &str, cloud: Cloud, cfg: &WorkloadConfig, provisioner: Provisioner) -> Value {
        let w = ws(yaml);
        let p = plan(&w, cloud, None).expect("plans");
        let s = statefulset(&w, &p, cfg, provisioner, &EngineParams::default()).expect("builds");
        serde_json::to_value(s).expect("json")
    }

    fn arg_after<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
        let args = container["args"].as_array()?;
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).and_then(Value::as_str)
    }

    #[test]
    fn a_cpu_only_size_gets_a_cpu_pod_with_a_memory_request_and_no_gpu() {
        let yaml = "metadata: {name: small, namespace: n}
resource: {instanceType: Standard_D4s_v3, labelSelector: {matchLabels: {apps: small}}}
inference: {preset: {name: smollm2-135m-instruct}}";
        let cfg = WorkloadConfig {
            runtime_image: "r/kaito-runtime:1-cuda{computeCapability}".into(),
            ..WorkloadConfig::default()
        };
        for provisioner in [Provisioner::Byo, Provisioner::Karpenter, Provisioner::Aks] {
            let s = sts_on(yaml, Cloud::Azure, &cfg, provisioner);
            let pod = &s["spec"]["template"]["spec"];
            let c = &pod["containers"][0];
            assert!(
                !c.to_string().contains("nvidia.com/gpu"),
                "no GPU request or limit: {c}"
            );
            assert!(pod.get("tolerations").is_none(), "{pod}");
            assert!(!pod.to_string().contains("\"sku\""), "no GPU toleration");
            let w = ws(yaml);
            let p = plan(&w, Cloud::Azure, None).expect("plans");
            let needs = p.sizing.as_ref().expect("sized").needs;
            assert_eq!(
                c["resources"],
                json!({"requests": {"memory": format!("{}Mi", needs.as_bytes().div_ceil(1 << 20))}})
            );
            assert_eq!(
                needs,
                kaito_presets::sizing::cpu_serving_memory(
                    p.preset.as_deref().expect("preset"),
                    p.sizing
                        .as_ref()
                        .and_then(|s| s.max_model_len)
                        .expect("context")
                )
                .total()
            );
            assert_eq!(arg_after(c, "--dtype"), Some("f32"));
            assert!(
                c["args"]
                    .as_array()
                    .expect("args")
                    .contains(&json!("--cpu"))
            );
            assert_eq!(c["image"], "r/kaito-runtime:1-cudacpu");
            // The node affinity is the workspace's, as on a GPU size.
            let exprs = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchExpressions"];
            assert!(
                exprs
                    .as_array()
                    .expect("exprs")
                    .contains(&json!({"key": "apps", "operator": "In", "values": ["small"]}))
            );
        }
        // A GPU pod says neither --cpu nor a memory request.
        let gpu = sts_json(
            include_str!("../../examples/inference/kaito_workspace_phi_3.yaml"),
            Provisioner::Byo,
        );
        let c = &gpu["spec"]["template"]["spec"]["containers"][0];
        assert!(
            !c["args"]
                .as_array()
                .expect("args")
                .contains(&json!("--cpu"))
        );
        assert!(c["resources"]["requests"].get("memory").is_none());
    }

    #[test]
    fn a_template_on_a_cpu_only_size_is_left_without_gpus() {
        let yaml = "metadata: {name: t, namespace: n}
resource: {instanceType: Standard_D8s_v3, labelSelector: {matchLabels: {apps: t}}}
inference:
  template:
    spec:
      containers: [{name: c, image: example/server:1}]";
        let s = sts_on(
            yaml,
            Cloud::Azure,
            &WorkloadConfig::default(),
            Provisioner::Byo,
        );
        let pod = &s["spec"]["template"]["spec"];
        assert!(!pod.to_string().contains("nvidia.com/gpu"), "{pod}");
        assert!(pod["tolerations"].is_null(), "{pod}");
        let gpu = sts_on(
            &yaml.replace("Standard_D8s_v3", "Standard_NC6s_v3"),
            Cloud::Azure,
            &WorkloadConfig::default(),
            Provisioner::Byo,
        );
        let pod = &gpu["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
            "1"
        );
    }

    #[test]
    fn the_dtype_is_f16_below_compute_capability_8_bf16_from_8_and_f32_on_a_cpu() {
        let cfg = WorkloadConfig {
            runtime_image: "r:{computeCapability}".into(),
            ..WorkloadConfig::default()
        };
        for (cloud, size, dtype, image) in [
            (Cloud::Azure, "Standard_NC6s_v3", "f16", "r:70"),
            (Cloud::Azure, "Standard_NC4as_T4_v3", "f16", "r:75"),
            (Cloud::Azure, "Standard_NC24ads_A100_v4", "bf16", "r:80"),
            (Cloud::Azure, "Standard_NV36ads_A10_v5", "bf16", "r:86"),
            (Cloud::Aws, "g6.xlarge", "bf16", "r:89"),
            (Cloud::Azure, "Standard_NC40ads_H100_v5", "bf16", "r:90"),
            (Cloud::Azure, "Standard_D8s_v3", "f32", "r:cpu"),
        ] {
            let yaml = format!(
                "metadata: {{name: w, namespace: n}}\nresource: {{instanceType: {size}, labelSelector: {{matchLabels: {{apps: w}}}}}}\ninference: {{preset: {{name: phi-3-mini-4k-instruct}}}}"
            );
            let s = sts_on(&yaml, cloud, &cfg, Provisioner::Byo);
            let c = &s["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(arg_after(c, "--dtype"), Some(dtype), "{size}");
            assert_eq!(c["image"], image, "{size}");
        }
    }

    #[test]
    fn an_image_that_cannot_be_chosen_is_an_error_naming_the_fix() {
        let w = ws(
            "metadata: {name: w, namespace: n}\nresource: {labelSelector: {matchLabels: {apps: w}}}\ninference: {preset: {name: phi-3-mini-4k-instruct}}",
        );
        // Bring-your-own nodes whose labels give no compute capability.
        let mut shape =
            crate::plan::sku_shape(Cloud::Azure, "Standard_NC24ads_A100_v4").expect("A100");
        shape.source = "1 bring-your-own node(s)".into();
        shape.compute_capability = None;
        let p = plan(&w, Cloud::Azure, Some(&shape)).expect("plans");
        let cfg = WorkloadConfig {
            runtime_image: "r:{computeCapability}".into(),
            ..WorkloadConfig::default()
        };
        let err = serving_image(&w, &p, &cfg)
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("cannot be chosen"), "{err}");
        let built = statefulset(&w, &p, &cfg, Provisioner::Byo, &EngineParams::default());
        assert!(matches!(built, Err(BuildError::RuntimeImage(_))));
        // Without the placeholder the same nodes are served.
        assert!(serving_image(&w, &p, &WorkloadConfig::default()).is_ok());
    }

    #[test]
    fn byo_affinity_uses_only_the_user_selector() {
        let s = sts_json(
            include_str!("../../examples/inference/kaito_workspace_phi_3.yaml"),
            Provisioner::Byo,
        );
        assert_eq!(s["spec"]["replicas"], 1);
        let exprs = &s["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"];
        assert_eq!(
            exprs,
            &json!([{"key": "apps", "operator": "In", "values": ["phi-3"]}])
        );
    }

    #[test]
    fn every_container_of_a_preset_pod_runs_without_privileges() {
        let s = sts_json(
            include_str!("../../examples/inference/kaito_workspace_phi_3_with_adapters.yaml"),
            Provisioner::Aks,
        );
        let pod = &s["spec"]["template"]["spec"];
        assert_eq!(
            pod["securityContext"],
            json!({"seccompProfile": {"type": "RuntimeDefault"}})
        );
        let containers: Vec<&Value> = ["initContainers", "containers"]
            .iter()
            .flat_map(|k| pod[*k].as_array().expect("containers"))
            .collect();
        assert_eq!(
            containers.len(),
            2,
            "the adapter puller and the model server"
        );
        for c in containers {
            assert_eq!(
                c["securityContext"],
                json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                       "runAsNonRoot": true}),
                "{}",
                c["name"]
            );
        }
    }

    #[test]
    fn adapters_get_an_init_container_and_a_strength_env() {
        let s = sts_json(
            include_str!("../../examples/inference/kaito_workspace_phi_3_with_adapters.yaml"),
            Provisioner::Aks,
        );
        let pod = &s["spec"]["template"]["spec"];
        assert_eq!(pod["initContainers"].as_array().map(Vec::len), Some(1));
        let init = &pod["initContainers"][0];
        assert_eq!(init["name"], "adapter-phi-3-adapter");
        assert_eq!(init["image"], "ghcr.io/kaito-rs/kaito-adapter:0.1.0");
        assert_eq!(
            init["command"],
            json!([
                "kaito-adapter",
                "pull",
                "--image",
                "ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1",
                "--output",
                "/mnt/adapter/phi-3-adapter"
            ])
        );
        assert_eq!(
            init["volumeMounts"],
            json!([{"name": "adapters", "mountPath": "/mnt/adapter"}])
        );
        let env = pod["containers"][0]["env"].as_array().expect("env");
        assert!(env.contains(&json!({"name": "phi-3-adapter", "value": "1.0"})));
        assert!(
            pod["containers"][0]["volumeMounts"]
                .as_array()
                .expect("m")
                .contains(&json!({"name": "adapters", "mountPath": "/mnt/adapter"}))
        );
        assert!(
            pod["volumes"]
                .as_array()
                .expect("v")
                .contains(&json!({"name": "adapters", "emptyDir": {}}))
        );
        assert!(pod["imagePullSecrets"].is_null());
    }

    #[test]
    fn volume_adapters_are_mounted_where_the_runtime_reads_adapters() {
        let yaml = "metadata: {name: w, namespace: n}
resource: {instanceType: Standard_NC6s_v3, labelSelector: {matchLabels: {apps: x}}}
inference:
  preset: {name: phi-3-mini-128k-instruct}
  adapters:
    - source: {name: pulled, image: registry.example/adapter:1}
    - source: {name: tuned, volumeSource: {persistentVolumeClaim: {claimName: tuning-out}}}
      strength: \"0.5\"
    - source: {name: shared, volumeSource: {nfs: {server: nfs.example, path: /adapters/a}}}
";
        let s = sts_json(yaml, Provisioner::Byo);
        let pod = &s["spec"]["template"]["spec"];
        // Only the image adapter needs a puller.
        let init = pod["initContainers"].as_array().expect("init");
        assert_eq!(init.len(), 1);
        assert_eq!(init[0]["name"], "adapter-pulled");
        let model = &pod["containers"][0];
        assert!(
            model["args"]
                .as_array()
                .expect("args")
                .windows(2)
                .any(|w| w == [json!("--adapters-dir"), json!(ADAPTERS_DIR)])
        );
        let mounts = model["volumeMounts"].as_array().expect("mounts");
        let at = |m: &Value| mounts.iter().position(|x| x == m);
        let parent = at(&json!({"name": "adapters", "mountPath": "/mnt/adapter"}));
        let tuned = at(&json!({"name": "adapter-volume-0",
            "mountPath": "/mnt/adapter/tuned", "readOnly": true}));
        let shared = at(&json!({"name": "adapter-volume-1",
            "mountPath": "/mnt/adapter/shared", "readOnly": true}));
        assert!(
            parent.is_some() && tuned.is_some() && shared.is_some(),
            "{mounts:?}"
        );
        assert!(
            parent < tuned,
            "the adapters dir is mounted before the volumes in it"
        );
        let volumes = pod["volumes"].as_array().expect("volumes");
        assert!(volumes.contains(&json!({"name": "adapter-volume-0",
            "persistentVolumeClaim": {"claimName": "tuning-out"}})));
        assert!(volumes.contains(&json!({"name": "adapter-volume-1",
            "nfs": {"server": "nfs.example", "path": "/adapters/a"}})));
        let env = model["env"].as_array().expect("env");
        for (name, strength) in [("pulled", "1.0"), ("tuned", "0.5"), ("shared", "1.0")] {
            assert!(
                env.contains(&json!({"name": name, "value": strength})),
                "{name}: {env:?}"
            );
        }

        // A volume adapter alone: no init container, the adapters dir still exists.
        let only = sts_json(
            &yaml.replace(
                "    - source: {name: pulled, image: registry.example/adapter:1}\n",
                "",
            ),
            Provisioner::Byo,
        );
        let pod = &only["spec"]["template"]["spec"];
        assert_eq!(pod["initContainers"], json!([]));
        assert!(
            pod["volumes"]
                .as_array()
                .expect("v")
                .contains(&json!({"name": "adapters", "emptyDir": {}}))
        );

        // A volumeSource that is no volume source is an error naming the field.
        let mut bad = ws(yaml);
        if let Some(a) = bad.inference.as_mut().and_then(|i| i.adapters.as_mut()) {
            a[1].source.as_mut().expect("source").volume_source = Some(json!("tuning-out"));
        }
        let p = plan(&bad, Cloud::Azure, None).expect("plans");
        let err = statefulset(
            &bad,
            &p,
            &WorkloadConfig::default(),
            Provisioner::Byo,
            &EngineParams::default(),
        )
        .expect_err("not a volume source")
        .to_string();
        assert!(
            err.starts_with("inference.adapters[1].source.volumeSource: not a volume source"),
            "{err}"
        );
    }

    #[test]
    fn adapter_pull_secrets_become_the_pullers_docker_config() {
        let mut w = ws(include_str!(
            "../../examples/inference/kaito_workspace_phi_3_with_adapters.yaml"
        ));
        let list = w
            .inference
            .as_mut()
            .and_then(|i| i.adapters.as_mut())
            .expect("adapters");
        let mut second = list[0].clone();
        let mut third = list[0].clone();
        if let Some(src) = list[0].source.as_mut() {
            src.image_pull_secrets = Some(vec!["acr".into(), "unused".into()]);
        }
        if let Some(src) = second.source.as_mut() {
            src.name = Some("b".into());
            src.image_pull_secrets = Some(vec!["acr".into()]);
        }
        if let Some(src) = third.source.as_mut() {
            src.name = Some("c".into());
            src.image_pull_secrets = Some(vec!["other".into()]);
        }
        third.strength = Some("0.5".into());
        list.extend([second, third]);
        let s = sts_of(w, Provisioner::Byo);
        let pod = &s["spec"]["template"]["spec"];
        let init = pod["initContainers"].as_array().expect("init");
        assert_eq!(init.len(), 3);
        for (c, volume) in init.iter().zip([
            "adapter-pull-secret-0",
            "adapter-pull-secret-0",
            "adapter-pull-secret-1",
        ]) {
            let cmd = c["command"].as_array().expect("cmd");
            assert_eq!(
                cmd[cmd.len() - 2..],
                [
                    json!("--docker-config"),
                    json!("/mnt/pull-secret/config.json")
                ]
            );
            assert_eq!(
                c["volumeMounts"][1],
                json!({"name": volume, "mountPath": "/mnt/pull-secret", "readOnly": true})
            );
        }
        assert_eq!(init[2]["command"][5], "/mnt/adapter/c");
        let vols = pod["volumes"].as_array().expect("v");
        for (volume, secret) in [
            ("adapter-pull-secret-0", "acr"),
            ("adapter-pull-secret-1", "other"),
        ] {
            assert!(
                vols.contains(&json!({"name": volume, "secret": {"secretName": secret,
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}}))
            );
        }
        assert_eq!(
            vols.len(),
            5,
            "dshm, weights, adapters and two secrets: {vols:?}"
        );
        let env = pod["containers"][0]["env"].as_array().expect("env");
        assert!(env.contains(&json!({"name": "c", "value": "0.5"})));
        assert!(
            pod["imagePullSecrets"].is_null(),
            "the kubelet never pulls adapter images"
        );
    }

    #[test]
    fn gguf_presets_name_their_file_and_a_node_cache_keeps_each_revision_apart() {
        let w = ws(
            "metadata: {name: s}\nresource: {instanceType: Standard_NC6s_v3}\ninference: {preset: {name: smollm2-135m-instruct}}",
        );
        let p = plan(&w, Cloud::Azure, None).expect("plans");
        let cfg = WorkloadConfig {
            hf_endpoint: Some("http://hub.local:8080".into()),
            weights_cache_host_path: Some("/var/lib/kaito/weights/".into()),
            ..WorkloadConfig::default()
        };
        let s = serde_json::to_value(
            statefulset(&w, &p, &cfg, Provisioner::Byo, &EngineParams::default()).expect("builds"),
        )
        .expect("json");
        let pod = &s["spec"]["template"]["spec"];
        let args = pod["containers"][0]["args"].as_array().expect("args");
        let pos = |flag: &str| args.iter().position(|a| a == flag).expect(flag);
        assert_eq!(
            args[pos("--model-file") + 1],
            "SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        assert!(
            pod["containers"][0]["env"]
                .as_array()
                .expect("env")
                .contains(&json!({"name": "HF_ENDPOINT", "value": "http://hub.local:8080"}))
        );
        assert_eq!(
            pod["volumes"][1],
            json!({"name": "weights", "hostPath": {"path": "/var/lib/kaito/weights", "type": "Directory"}})
        );
        assert_eq!(
            args[pos("--model-dir") + 1],
            "/workspace/weights/QuantFactory--SmolLM2-135M-Instruct-GGUF/ab810cf68114990406fdf996510dd3d3c6adbdf5"
        );
    }

    #[test]
    fn inference_config_parameters_reach_the_runtime_flags() {
        let w = ws(include_str!(
            "../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        let p = plan(&w, Cloud::Azure, None).expect("plans");
        let engine = EngineParams {
            max_model_len: Some(2048),
            max_running: Some(4),
            dtype: Some("f32"),
        };
        let s = statefulset(
            &w,
            &p,
            &WorkloadConfig::default(),
            Provisioner::Byo,
            &engine,
        )
        .expect("builds");
        let s = serde_json::to_value(s).expect("json");
        let args: Vec<&str> = s["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let pos = |flag: &str| args.iter().position(|a| *a == flag).expect(flag);
        assert_eq!(
            args[pos("--dtype") + 1],
            "f32",
            "the user's dtype replaces the sizing's"
        );
        assert_eq!(args.iter().filter(|a| **a == "--dtype").count(), 1);
        assert_eq!(args[pos("--max-model-len") + 1], "2048");
        assert_eq!(args[pos("--max-running") + 1], "4");
    }

    #[test]
    fn services_expose_port_80_and_a_headless_twin() {
        for (annotation, want) in [
            ("", "ClusterIP"),
            (
                "  annotations: {kaito.sh/enablelb: \"True\"}\n",
                "LoadBalancer",
            ),
        ] {
            let w = ws(&format!(
                "metadata:\n  name: w\n{annotation}inference: {{preset: {{name: phi-3-mini-4k-instruct}}}}"
            ));
            let [main, headless] = services(&w);
            let main = serde_json::to_value(main).expect("json");
            let headless = serde_json::to_value(headless).expect("json");
            assert_eq!(main["spec"]["type"], want);
            assert_eq!(main["spec"]["ports"][0]["port"], 80);
            assert_eq!(main["spec"]["ports"][0]["targetPort"], 5000);
            assert_eq!(headless["metadata"]["name"], "w-headless");
            assert_eq!(headless["spec"]["clusterIP"], "None");
        }
    }

    #[test]
    fn startup_budget_grows_with_the_model() {
        let small = plan(
            &ws(include_str!(
                "../../examples/inference/kaito_workspace_phi_3.yaml"
            )),
            Cloud::Azure,
            None,
        )
        .expect("plan");
        let big = ws(
            "metadata: {name: b}\nresource: {instanceType: Standard_ND96asr_A100_v4}\ninference: {preset: {name: llama-3.3-70b-instruct}}",
        );
        let base = startup_budget_seconds(&small);
        assert!(base > 300, "{base}");
        let big = plan(&big, Cloud::Azure, None).expect("70b fits 8x A100 40 GiB");
        assert!(startup_budget_seconds(&big) > base + 60 * 100);
    }
}
