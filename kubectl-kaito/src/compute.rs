//! Pure computation: flags → Workspace, durations, ages, table rows, the next step.
//! Nothing here does I/O, so all of it is unit-tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kaito_api::{
    ANNOTATION_ENABLE_LB, AdapterSpec, DataDestination, DataSource, GROUP, InferenceSpec,
    PresetOptions, PresetSpec, Reason, TuningSpec, Workspace,
};
use kaito_presets::Plan;

use crate::cli::WorkspaceFlags;
use crate::error::{Error, Result};

/// Parses `30s`, `10m`, `2h`, `1d` or plain seconds into seconds.
pub fn parse_duration(s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 30s, 10m, 2h or 1d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: use e.g. 30s, 10m, 2h or 1d"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// kubectl's age: `45s`, `3m`, `5h`, `2d`, `1y`; `<unknown>` without a time.
pub fn age(then: Option<jiff::Timestamp>, now: jiff::Timestamp) -> String {
    let Some(then) = then else {
        return "<unknown>".into();
    };
    let secs = (now.as_second() - then.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s if s < 86400 * 365 => format!("{}d", s / 86400),
        s => format!("{}y", s / (86400 * 365)),
    }
}

fn key_value(s: &str, what: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(Error::Usage(format!(
            "invalid {what} {s:?}: write it as key=value"
        ))),
    }
}

/// Parses `--adapter name=image[,strength=0.8]`.
pub fn parse_adapter(s: &str) -> Result<AdapterSpec> {
    let mut parts = s.split(',');
    let first = parts.next().unwrap_or_default();
    let (name, image) = key_value(first, "--adapter").map_err(|_| {
        Error::Usage(format!(
            "invalid --adapter {s:?}: write it as name=image[,strength=0.8]"
        ))
    })?;
    let mut strength = None;
    for p in parts {
        match p.split_once('=') {
            Some(("strength", v)) => {
                let f: f64 = v.parse().map_err(|_| {
                    Error::Usage(format!(
                        "invalid adapter strength {v:?} in {s:?}: use a number from 0.0 to 1.0"
                    ))
                })?;
                if !(0.0..=1.0).contains(&f) {
                    return Err(Error::Usage(format!(
                        "adapter strength {v} in {s:?} is out of range: use 0.0 to 1.0"
                    )));
                }
                strength = Some(v.to_string());
            }
            _ => {
                return Err(Error::Usage(format!(
                    "unknown adapter option {p:?} in {s:?}: only strength=S is allowed"
                )));
            }
        }
    }
    Ok(AdapterSpec {
        source: Some(DataSource {
            name: Some(name),
            image: Some(image),
            ..DataSource::default()
        }),
        strength,
    })
}

fn pvc_source(claim: &str) -> serde_json::Value {
    serde_json::json!({"persistentVolumeClaim": {"claimName": claim}})
}

/// Builds the Workspace the flags describe (not defaulted: that is the webhook's job).
/// `namespace` is written only when given explicitly, as `kubectl create -o yaml` does.
pub fn build_workspace(f: &WorkspaceFlags, namespace: Option<&str>) -> Result<Workspace> {
    let mut ws = Workspace::new(&f.name, namespace.unwrap_or_default());
    if namespace.is_none() {
        ws.metadata.namespace = None;
    }
    ws.api_version = format!("{GROUP}/{}", f.api_version);
    if f.enable_load_balancer {
        ws.metadata
            .annotations
            .get_or_insert_default()
            .insert(ANNOTATION_ENABLE_LB.into(), "True".into());
    }
    ws.resource.instance_type = f.instance_type.clone();
    ws.resource.count = f.count;
    if !f.labels.is_empty() {
        let labels = f
            .labels
            .iter()
            .map(|l| key_value(l, "--label"))
            .collect::<Result<BTreeMap<_, _>>>()?;
        ws.resource.label_selector = Some(LabelSelector {
            match_labels: Some(labels),
            ..LabelSelector::default()
        });
    }
    let preset = PresetSpec {
        name: f.preset.clone(),
        access_mode: None,
        preset_options: f.model_access_secret.as_ref().map(|s| PresetOptions {
            model_access_secret: Some(s.clone()),
            ..PresetOptions::default()
        }),
    };
    if f.tuning {
        if !f.adapters.is_empty() {
            return Err(Error::Usage(
                "--adapter serves adapters and cannot be combined with --tuning".into(),
            ));
        }
        let Some(method) = f.method else {
            return Err(Error::Usage(
                "--tuning needs --method lora or --method qlora".into(),
            ));
        };
        let inputs = usize::from(!f.input_urls.is_empty())
            + usize::from(f.input_image.is_some())
            + usize::from(f.input_pvc.is_some());
        if inputs != 1 {
            return Err(Error::Usage(
                "--tuning needs exactly one input: --input-url URL (repeatable), --input-image IMAGE or --input-pvc PVC".into(),
            ));
        }
        let output = match (&f.output_image, &f.output_pvc) {
            (Some(image), None) => {
                let Some(secret) = &f.output_secret else {
                    return Err(Error::Usage(
                        "--output-image needs --output-secret SECRET (the docker-config Secret used to push)".into(),
                    ));
                };
                DataDestination {
                    image: Some(image.clone()),
                    image_push_secret: Some(secret.clone()),
                    volume_source: None,
                }
            }
            (None, Some(pvc)) => DataDestination {
                volume_source: Some(pvc_source(pvc)),
                ..DataDestination::default()
            },
            _ => {
                return Err(Error::Usage(
                    "--tuning needs exactly one output: --output-image IMAGE --output-secret SECRET, or --output-pvc PVC".into(),
                ));
            }
        };
        ws.tuning = Some(TuningSpec {
            preset: Some(preset),
            method: Some(method.as_str().into()),
            config: f.config.clone(),
            input: Some(DataSource {
                urls: (!f.input_urls.is_empty()).then(|| f.input_urls.clone()),
                image: f.input_image.clone(),
                volume_source: f.input_pvc.as_deref().map(pvc_source),
                ..DataSource::default()
            }),
            output: Some(output),
        });
    } else {
        if f.method.is_some()
            || !f.input_urls.is_empty()
            || f.input_image.is_some()
            || f.input_pvc.is_some()
            || f.output_image.is_some()
            || f.output_pvc.is_some()
        {
            return Err(Error::Usage(
                "--method, --input-* and --output-* are tuning flags: add --tuning".into(),
            ));
        }
        let adapters = f
            .adapters
            .iter()
            .map(|a| parse_adapter(a))
            .collect::<Result<Vec<_>>>()?;
        ws.inference = Some(InferenceSpec {
            preset: Some(preset),
            template: None,
            config: f.config.clone(),
            adapters: (!adapters.is_empty()).then_some(adapters),
        });
    }
    Ok(ws)
}

/// The one-line human summary of a plan for `count` nodes, e.g.
/// `1 × Standard_NC6s_v3 (V100 16 GiB), f16, fits: needs 9 GiB`, or on a CPU-only size
/// `1 × Standard_D4s_v3 (no GPU, 16 GiB memory: served on the CPU), f32, fits: needs 1.44 GiB`.
pub fn plan_headline(count: i32, plan: &Plan) -> String {
    let shape = &plan.shape;
    let gpus = if shape.gpus == 0 {
        match shape.memory {
            Some(m) => format!("no GPU, {m} memory: served on the CPU"),
            None => "no GPU".to_string(),
        }
    } else if shape.gpus == 1 {
        format!("{} {}", shape.gpu_model, shape.per_gpu_memory())
    } else {
        format!(
            "{}× {} {}",
            shape.gpus,
            shape.gpu_model,
            shape.per_gpu_memory()
        )
    };
    let verdict = if plan.fits() {
        format!("fits: needs {}", plan.needs)
    } else {
        let problems = plan
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        format!("does not fit: {problems}")
    };
    let mut s = format!(
        "{count} × {} ({gpus}), {}, {verdict}",
        shape.source, plan.dtype
    );
    if let Some(len) = plan.max_model_len {
        s.push_str(&format!(", context {len}"));
    }
    s
}

/// One row of `get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `resource.instanceType`.
    pub instance: String,
    /// ResourceReady's status.
    pub resource_ready: String,
    /// InferenceReady's (or, for tuning, JobStarted's) status.
    pub inference_ready: String,
    /// WorkspaceSucceeded's status.
    pub workspace_ready: String,
    /// Age.
    pub age: String,
    /// Preset name.
    pub preset: String,
    /// Worker nodes.
    pub nodes: String,
    /// Where the model answers.
    pub endpoint: String,
}

fn cond_status(ws: &Workspace, t: &str) -> String {
    ws.condition(t)
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "-".into())
}

/// The `get` row of a workspace; `endpoint` comes from its Service, if any.
pub fn workspace_row(ws: &Workspace, endpoint: Option<&str>, now: jiff::Timestamp) -> WorkspaceRow {
    let second = if ws.tuning.is_some() {
        kaito_api::CONDITION_JOB_STARTED
    } else {
        kaito_api::CONDITION_INFERENCE_READY
    };
    let nodes = ws
        .status
        .as_ref()
        .and_then(|s| s.worker_nodes.as_ref())
        .filter(|n| !n.is_empty())
        .map(|n| n.join(","))
        .unwrap_or_else(|| "-".into());
    WorkspaceRow {
        namespace: ws.metadata.namespace.clone().unwrap_or_default(),
        name: ws.metadata.name.clone().unwrap_or_default(),
        instance: ws
            .resource
            .instance_type
            .clone()
            .unwrap_or_else(|| "-".into()),
        resource_ready: cond_status(ws, kaito_api::CONDITION_RESOURCE_READY),
        inference_ready: cond_status(ws, second),
        workspace_ready: cond_status(ws, kaito_api::CONDITION_WORKSPACE_SUCCEEDED),
        age: age(ws.metadata.creation_timestamp.as_ref().map(|t| t.0), now),
        preset: ws
            .preset()
            .map(|p| p.name.clone())
            .unwrap_or_else(|| "-".into()),
        nodes,
        endpoint: endpoint.unwrap_or("-").to_string(),
    }
}

/// True when the workspace serves (or has finished tuning).
pub fn is_ready(ws: &Workspace) -> bool {
    ws.condition(kaito_api::CONDITION_WORKSPACE_SUCCEEDED)
        .is_some_and(|c| c.status == "True")
}

/// The one thing to do next when the workspace is not ready; `None` when it is.
pub fn next_step(ws: &Workspace) -> Option<String> {
    let name = ws.metadata.name.as_deref().unwrap_or_default();
    if is_ready(ws) {
        return None;
    }
    if ws.metadata.deletion_timestamp.is_some() {
        return Some(
            "the workspace is being deleted; its finalizer waits until its nodes are gone".into(),
        );
    }
    let conds = ws
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .filter(|c| !c.is_empty());
    let Some(conds) = conds else {
        return Some(
            "no status yet: check that kaito-controller is running (kubectl get pods -A -l app.kubernetes.io/name=kaito) and see its logs".into(),
        );
    };
    let order = [
        kaito_api::CONDITION_RESOURCE_READY,
        kaito_api::CONDITION_INFERENCE_READY,
        kaito_api::CONDITION_JOB_STARTED,
        kaito_api::CONDITION_WORKSPACE_SUCCEEDED,
    ];
    let failing = order
        .iter()
        .filter_map(|t| conds.iter().find(|c| c.type_ == *t))
        .find(|c| c.status != "True");
    let Some(c) = failing else {
        return Some(format!(
            "waiting for the controller to mark it ready; run `kubectl kaito status {name}` again"
        ));
    };
    let again = || {
        format!(
            "{} is {} ({}): run `kubectl kaito status {name}` again in a moment",
            c.type_, c.status, c.reason
        )
    };
    // Exhaustive over the reasons the controller writes: a new one must get its next step here.
    let Ok(reason) = c.reason.parse::<Reason>() else {
        return Some(again());
    };
    Some(match reason {
        Reason::Unschedulable => "the scheduler cannot place the pod: add a GPU node that matches resource.labelSelector and has enough free nvidia.com/gpu (and tolerates its taints), or recreate the workspace with another --instance-type".to_string(),
        Reason::NodesNotReady | Reason::Provisioning => format!(
            "GPU nodes are not ready yet: wait, or check the nodes (kubectl get nodes -l kaito.sh/workspace={name}); with bring-your-own nodes, label GPU nodes to match resource.labelSelector"
        ),
        Reason::InvalidSpec => "the spec cannot work as written: read the message above, then delete and recreate the workspace with the fix".to_string(),
        Reason::QuotaExceeded => "the cloud refused for lack of GPU quota: request more quota for this VM family or choose another --instance-type".to_string(),
        Reason::SkuNotAvailable => "the VM size is not offered in this region: recreate the workspace with another --instance-type (see `kubectl kaito models describe`)".to_string(),
        Reason::CloudError => "the cloud API failed: read the message above; the controller retries".to_string(),
        Reason::ImagePullError => "an image cannot be pulled: check its name and the pull secrets (presetOptions.imagePullSecrets)".to_string(),
        Reason::CrashLoopBackOff
        | Reason::OomKilled
        | Reason::JobFailed
        | Reason::ModelDownloadUnauthorized
        | Reason::ModelNotFound
        | Reason::ModelDownloadFailed
        | Reason::ModelLoadFailed => {
            format!("the container fails: read `kubectl kaito logs {name}`")
        }
        Reason::Loading => format!(
            "the model is loading; follow it with `kubectl kaito logs {name} -f`"
        ),
        Reason::ContainerConfigError => "a container refers to a Secret or ConfigMap that does not exist: create the one the message above names".to_string(),
        Reason::ChildNameTaken => "an object the workspace needs has its name taken by someone else's: rename or delete the one the message above names, or recreate the workspace under another name".to_string(),
        Reason::DeletionBlocked => "the deletion waits for its cloud resources to be released: the message above says why and how to end it".to_string(),
        Reason::Ready | Reason::JobRunning | Reason::JobSucceeded => again(),
    })
}

/// Parses every non-empty YAML document of `text` as a Workspace.
pub fn parse_workspaces(text: &str, what: &str) -> Result<Vec<Workspace>> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = serde_yaml::Value::deserialize(doc).map_err(|e| Error::Parse {
            what: format!("{what} (document {})", i + 1),
            message: e.to_string(),
        })?;
        if v.is_null() {
            continue;
        }
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        if kind != kaito_api::KIND {
            return Err(Error::Parse {
                what: format!("{what} (document {})", i + 1),
                message: format!(
                    "kind is {kind:?}; this command creates kind: Workspace only (use kubectl apply for others)"
                ),
            });
        }
        let ws: Workspace = serde_yaml::from_value(v).map_err(|e| Error::Parse {
            what: format!("{what} (document {})", i + 1),
            message: e.to_string(),
        })?;
        out.push(ws);
    }
    if out.is_empty() {
        return Err(Error::Parse {
            what: what.to_string(),
            message: "it holds no document".into(),
        });
    }
    Ok(out)
}

/// Whether the pod is Ready and not being deleted.
pub fn pod_is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && p.metadata.deletion_timestamp.is_none()
}

/// The pods `logs` reads: all with `--all-pods`, else the first ready one, else the first.
pub fn pick_log_pods(pods: &[Pod], all: bool) -> Vec<&Pod> {
    if all {
        return pods.iter().collect();
    }
    pods.iter()
        .find(|p| pod_is_ready(p))
        .or_else(|| pods.first())
        .into_iter()
        .collect()
}

/// The container `logs` reads: `--container`, the default-container annotation, else the
/// first app container.
pub fn log_container(p: &Pod, explicit: Option<&str>) -> Option<String> {
    if let Some(c) = explicit {
        return Some(c.to_string());
    }
    if let Some(c) = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
    {
        return Some(c.clone());
    }
    p.spec.as_ref()?.containers.first().map(|c| c.name.clone())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use kaito_presets::Cloud;

    use super::*;
    use crate::cli::{Command, CreateWhat};
    use crate::testutil::{cond, parse, sample_ws, seed, ts};

    fn flags_workspace(args: &[&str]) -> serde_json::Value {
        let cli = parse(args);
        let Command::Create(c) = cli.command else {
            panic!("not create")
        };
        let Some(CreateWhat::Workspace(f)) = c.what else {
            panic!("not create workspace")
        };
        let ws = build_workspace(&f, cli.global.namespace.as_deref()).expect("builds");
        serde_json::to_value(ws).expect("serialises")
    }

    #[test]
    fn tuning_flags_build_exactly_the_seed() {
        let built = flags_workspace(&[
            "create",
            "workspace",
            "workspace-tuning-phi-3",
            "--api-version",
            "v1alpha1",
            "--instance-type",
            "Standard_NC6s_v3",
            "--label",
            "app=tuning-phi-3",
            "--tuning",
            "--method",
            "qlora",
            "--preset",
            "phi-3-mini-128k-instruct",
            "--input-url",
            "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/train-00000-of-00001-54e3756291ca09c6.parquet?download=true",
            "--output-image",
            "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1",
            "--output-secret",
            "ACR_REGISTRY_SECRET_HERE",
        ]);
        assert_eq!(built, seed("fine-tuning/kaito_workspace_tuning_phi_3.yaml"));
    }

    #[test]
    fn inference_flags_build_exactly_the_seeds() {
        let built = flags_workspace(&[
            "create",
            "workspace",
            "workspace-phi-3-mini",
            "--api-version",
            "v1alpha1",
            "--instance-type",
            "Standard_NC6s_v3",
            "--label",
            "apps=phi-3",
            "--preset",
            "phi-3-mini-4k-instruct",
        ]);
        assert_eq!(built, seed("inference/kaito_workspace_phi_3.yaml"));
        let built = flags_workspace(&[
            "create",
            "workspace",
            "workspace-phi-3-mini-adapter",
            "--api-version",
            "v1alpha1",
            "--instance-type",
            "Standard_NC6s_v3",
            "--label",
            "apps=phi-3-adapter",
            "--preset",
            "phi-3-mini-128k-instruct",
            "--adapter",
            "phi-3-adapter=ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1,strength=1.0",
        ]);
        assert_eq!(
            built,
            seed("inference/kaito_workspace_phi_3_with_adapters.yaml")
        );
    }

    #[test]
    fn other_flags_land_in_their_fields() {
        let v = flags_workspace(&[
            "-n",
            "team",
            "create",
            "workspace",
            "w",
            "--preset",
            "p",
            "--count",
            "2",
            "--enable-load-balancer",
            "--model-access-secret",
            "hf",
            "--config",
            "cm",
        ]);
        assert_eq!(v["apiVersion"], "kaito.sh/v1beta1");
        assert_eq!(v["metadata"]["namespace"], "team");
        assert_eq!(v["metadata"]["annotations"]["kaito.sh/enablelb"], "True");
        assert_eq!(v["resource"]["count"], 2);
        assert_eq!(v["inference"]["config"], "cm");
        assert_eq!(
            v["inference"]["preset"]["presetOptions"]["modelAccessSecret"],
            "hf"
        );
        let v = flags_workspace(&[
            "create",
            "workspace",
            "t",
            "--preset",
            "p",
            "--tuning",
            "--method",
            "lora",
            "--input-pvc",
            "data",
            "--output-pvc",
            "out",
        ]);
        assert_eq!(
            v["tuning"]["input"]["volumeSource"]["persistentVolumeClaim"]["claimName"],
            "data"
        );
        assert_eq!(
            v["tuning"]["output"]["volumeSource"]["persistentVolumeClaim"]["claimName"],
            "out"
        );
    }

    #[test]
    fn bad_flags_are_refused_with_the_fix() {
        let cli = parse(&[
            "create",
            "workspace",
            "t",
            "--preset",
            "p",
            "--tuning",
            "--method",
            "lora",
            "--output-pvc",
            "o",
        ]);
        let Command::Create(c) = cli.command else {
            panic!()
        };
        let Some(CreateWhat::Workspace(f)) = c.what else {
            panic!()
        };
        let e = build_workspace(&f, None).expect_err("no input");
        assert!(e.to_string().contains("--input-url"), "{e}");

        for bad in ["noequals", "a=b,strength=2", "a=b,color=red"] {
            let e = parse_adapter(bad).expect_err(bad);
            assert!(matches!(e, Error::Usage(_)), "{bad}: {e}");
        }
        let a = parse_adapter("x=img:1,strength=0.8").expect("valid");
        assert_eq!(a.strength.as_deref(), Some("0.8"));
    }

    #[test]
    fn parse_workspaces_names_the_problem() {
        let e =
            parse_workspaces("apiVersion: v1\nkind: ConfigMap\n", "f.yaml").expect_err("not a ws");
        assert!(e.to_string().contains("kind: Workspace only"), "{e}");
        let e = parse_workspaces("", "f.yaml").expect_err("empty");
        assert!(e.to_string().contains("no document"), "{e}");
        let two =
            "kind: Workspace\nmetadata: {name: a}\n---\nkind: Workspace\nmetadata: {name: b}\n";
        assert_eq!(parse_workspaces(two, "f").expect("two").len(), 2);
    }

    #[test]
    fn durations_and_ages() {
        assert_eq!(parse_duration("45"), Ok(45));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert!(parse_duration("5w").is_err());
        let now = ts("2026-01-02T00:00:00Z");
        assert_eq!(age(Some(ts("2026-01-01T23:59:15Z")), now), "45s");
        assert_eq!(age(Some(ts("2026-01-01T23:00:00Z")), now), "60m");
        assert_eq!(age(Some(ts("2026-01-01T12:00:00Z")), now), "12h");
        assert_eq!(age(Some(ts("2025-12-20T00:00:00Z")), now), "13d");
        assert_eq!(age(None, now), "<unknown>");
    }

    #[test]
    fn next_step_covers_missing_status_and_reasons() {
        let mut ws = sample_ws(vec![]);
        ws.status = None;
        assert!(next_step(&ws).expect("step").contains("kaito-controller"));
        let ws = sample_ws(vec![cond("ResourceReady", "False", "ImagePullError", "x")]);
        assert!(next_step(&ws).expect("step").contains("pull"));
        let ws = sample_ws(vec![
            cond("ResourceReady", "True", "Ready", ""),
            cond("InferenceReady", "False", "CrashLoopBackOff", "x"),
        ]);
        assert!(next_step(&ws).expect("step").contains("kubectl kaito logs"));
        // Every reason the controller writes has a next step of its own or the "again" line.
        for r in kaito_api::Reason::ALL {
            let ws = sample_ws(vec![cond("ResourceReady", "False", r.as_str(), "x")]);
            let step = next_step(&ws).expect("step");
            assert!(!step.is_empty(), "{r}");
        }
        let ws = sample_ws(vec![cond("InferenceReady", "False", "ChildNameTaken", "x")]);
        assert!(next_step(&ws).expect("step").contains("rename or delete"));
    }

    #[test]
    fn a_cpu_only_plan_reads_as_served_on_the_cpu() {
        let preset = kaito_presets::PresetCatalog::builtin()
            .get("smollm2-135m-instruct")
            .expect("preset");
        let sku = kaito_presets::SkuCatalog::builtin()
            .get(Cloud::Aws, "m5.xlarge")
            .expect("sku");
        let plan = kaito_presets::sizing::plan(
            preset,
            kaito_presets::Mode::Serve,
            Default::default(),
            &sku.shape(),
        );
        let headline = plan_headline(2, &plan);
        assert!(
            headline.starts_with(
                "2 × m5.xlarge (no GPU, 16 GiB memory: served on the CPU), f32, fits: needs "
            ) && headline.ends_with(", context 8192"),
            "{headline}"
        );
        assert!(!headline.contains("GPU)"), "{headline}");
    }

    #[test]
    fn log_pods_prefer_a_ready_one() {
        let mk = |name: &str, ready: bool| {
            let mut p = Pod::default();
            p.metadata.name = Some(name.into());
            p.status = Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            p
        };
        let pods = vec![mk("a", false), mk("b", true)];
        let names = |v: Vec<&Pod>| {
            v.iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(pick_log_pods(&pods, false)), ["b"]);
        assert_eq!(names(pick_log_pods(&pods, true)), ["a", "b"]);
        assert_eq!(names(pick_log_pods(&pods[..1], false)), ["a"]);
    }
}
