//! Pure rendering: every function takes data and returns the text to print. Snapshot-tested
//! with inline expected text.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kaito_api::Workspace;
use kaito_api::admission::{PlanError, WorkspacePlan};
use kaito_presets::sizing::{self, Mode, RuntimeParams};
use kaito_presets::{Cloud, ModelFacts, Preset, PresetCatalog, SkuCatalog};

use crate::compute::{self, WorkspaceRow};

/// Left-aligned columns separated by three spaces, like kubectl's tables (no trailing
/// spaces).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                l.push_str("   ");
            }
            l.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            l.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `models list`.
pub fn models_table(catalog: &PresetCatalog) -> String {
    let rows: Vec<Vec<String>> = catalog
        .iter()
        .map(|p| {
            let tuning = match &p.tuning {
                Some(t) => format!("lora {} / qlora {}", t.lora_gpu_memory, t.qlora_gpu_memory),
                None => "-".into(),
            };
            let mut notes = Vec::new();
            if p.download_needs_token {
                notes.push("gated (needs --model-access-secret)".to_string());
            }
            if !p.runtime_supported {
                notes.push("not served by this runtime".to_string());
            }
            if p.deprecated.is_some() {
                notes.push("deprecated".to_string());
            }
            vec![
                p.name.clone(),
                p.architecture.clone(),
                p.weights.to_string(),
                p.serve.gpu_memory.to_string(),
                p.context_length.to_string(),
                tuning,
                if notes.is_empty() {
                    "-".into()
                } else {
                    notes.join(", ")
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ARCHITECTURE",
            "WEIGHTS",
            "SERVE-GPU-MEMORY",
            "CONTEXT",
            "TUNING-GPU-MEMORY",
            "NOTES",
        ],
        &rows,
    )
}

/// `models describe NAME --cloud C`: the preset and every size of the cloud that fits,
/// smallest first, each with its plan summary.
pub fn model_describe(preset: &Preset, mode: Mode, skus: &SkuCatalog, cloud: Cloud) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Name:          {}", preset.name);
    let _ = writeln!(
        s,
        "Source:        huggingface.co/{} @ {}",
        preset.huggingface.repo, preset.huggingface.revision
    );
    let _ = writeln!(s, "Architecture:  {}", preset.architecture);
    let _ = writeln!(s, "Weights:       {}", preset.weights);
    let _ = writeln!(
        s,
        "Serving needs: {} of GPU memory on one node (at least {} per GPU, {} GPU(s))",
        preset.serve.gpu_memory, preset.serve.per_gpu_memory, preset.serve.min_gpus
    );
    let cpu = sizing::cpu_serving_memory(preset, preset.context_length);
    let _ = writeln!(
        s,
        "On a CPU:      {} of memory with the full context ({} weights, {} KV cache, {} runtime; f32), on a CPU-only size",
        cpu.total(),
        cpu.weights,
        cpu.kv_cache,
        cpu.runtime
    );
    let _ = writeln!(s, "Context:       {} tokens", preset.context_length);
    let _ = writeln!(s, "Disk:          {}", preset.disk);
    match &preset.tuning {
        Some(t) => {
            let _ = writeln!(
                s,
                "Tuning needs:  LoRA {} / QLoRA {} per GPU",
                t.lora_gpu_memory, t.qlora_gpu_memory
            );
        }
        None => {
            let _ = writeln!(s, "Tuning:        not supported");
        }
    }
    let _ = writeln!(
        s,
        "Gated:         {}",
        if preset.download_needs_token {
            "yes: create the workspace with --model-access-secret (a Secret with HF_TOKEN)"
        } else {
            "no"
        }
    );
    if let Some(d) = &preset.deprecated {
        let _ = writeln!(s, "Deprecated:    {d}");
    }
    if !preset.runtime_supported {
        let _ = writeln!(
            s,
            "Runtime:       the serving runtime cannot load {}",
            preset.architecture
        );
    }
    let fits = sizing::fitting_skus(preset, mode, RuntimeParams::default(), skus, cloud);
    let _ = writeln!(s);
    if fits.is_empty() {
        let _ = writeln!(s, "No {cloud} GPU size fits {mode} of {}.", preset.name);
    } else {
        let _ = writeln!(
            s,
            "{} {cloud} GPU sizes fit {mode}, smallest first (1 node each; more nodes add replicas):",
            fits.len()
        );
        plan_rows(&mut s, &fits);
    }
    if mode == Mode::Serve {
        let cpu = sizing::fitting_cpu_skus(preset, mode, RuntimeParams::default(), skus, cloud);
        let _ = writeln!(s);
        if cpu.is_empty() {
            let _ = writeln!(
                s,
                "No {cloud} CPU-only size has the memory to serve {} on the CPU.",
                preset.name
            );
        } else {
            let _ = writeln!(
                s,
                "{} {cloud} CPU-only sizes serve it on the CPU (f32, slow; ask for one with --instance-type), least memory first:",
                cpu.len()
            );
            plan_rows(&mut s, &cpu);
        }
    }
    s
}

/// What `models describe org/model` adds for a Hugging Face id: where it was resolved, the
/// commit a Workspace naming it is pinned to, and whether admission accepts its architecture.
pub fn hub_pin(facts: &ModelFacts, endpoint: &str, runtime_architectures: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Hugging Face id, resolved through {endpoint}: commit {} (a Workspace naming it is \
         pinned to the commit the webhook resolves, in the kaito.sh/model-revision annotation).",
        facts.revision
    );
    if !runtime_architectures.contains(&facts.architecture) {
        let _ = writeln!(
            s,
            "Admission refuses it: the runtime loads {}, not {}.",
            runtime_architectures.join(", "),
            facts.architecture
        );
    }
    s
}

/// `SKU  PLAN` rows, indented, with each plan's notes.
fn plan_rows(s: &mut String, fits: &[(&kaito_presets::Sku, sizing::Plan)]) {
    let rows: Vec<Vec<String>> = fits
        .iter()
        .map(|(sku, plan)| {
            let notes = if plan.notes.is_empty() {
                String::new()
            } else {
                format!(" — {}", plan.notes.join("; "))
            };
            vec![sku.name.clone(), format!("{}{notes}", plan.summary())]
        })
        .collect();
    for line in table(&["SKU", "PLAN"], &rows).lines() {
        let _ = writeln!(s, "  {line}");
    }
}

/// `skus`.
pub fn skus_table(skus: &SkuCatalog, cloud: Cloud) -> String {
    let rows: Vec<Vec<String>> = skus
        .list(cloud)
        .iter()
        .map(|k| {
            let shape = k.shape();
            vec![
                k.name.clone(),
                k.gpus.to_string(),
                k.gpu_model.clone().unwrap_or_else(|| "-".into()),
                if k.gpus == 0 {
                    "-".into()
                } else {
                    shape.per_gpu_memory().to_string()
                },
                k.gpu_memory.to_string(),
                k.compute_capability
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                k.vcpus.to_string(),
                k.memory
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "GPUS",
            "GPU",
            "MEMORY-PER-GPU",
            "GPU-MEMORY",
            "COMPUTE",
            "VCPUS",
            "MEMORY",
        ],
        &rows,
    )
}

/// `get` as a table; `namespaces` adds the NAMESPACE column, `wide` adds PRESET, NODES,
/// ENDPOINT. `header` false prints rows only (for watch updates).
pub fn workspaces_table(
    rows: &[WorkspaceRow],
    namespaces: bool,
    wide: bool,
    header: bool,
) -> String {
    let mut head = Vec::new();
    if namespaces {
        head.push("NAMESPACE");
    }
    head.extend([
        "NAME",
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "WORKSPACEREADY",
        "AGE",
    ]);
    if wide {
        head.extend(["PRESET", "NODES", "ENDPOINT"]);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = Vec::new();
            if namespaces {
                c.push(r.namespace.clone());
            }
            c.extend([
                r.name.clone(),
                r.instance.clone(),
                r.resource_ready.clone(),
                r.inference_ready.clone(),
                r.workspace_ready.clone(),
                r.age.clone(),
            ]);
            if wide {
                c.extend([r.preset.clone(), r.nodes.clone(), r.endpoint.clone()]);
            }
            c
        })
        .collect();
    let t = table(&head, &cells);
    if header {
        t
    } else {
        t.lines().skip(1).map(|l| format!("{l}\n")).collect()
    }
}

/// Everything `status` shows, as collected.
pub struct StatusView<'a> {
    /// The workspace.
    pub ws: &'a Workspace,
    /// Its pods.
    pub pods: &'a [Pod],
    /// Its nodes (worker nodes and nodes labelled for it).
    pub nodes: &'a [Node],
    /// Events about it and its pods, oldest first.
    pub events: &'a [Event],
    /// How many events to show.
    pub max_events: usize,
    /// The Service endpoint, if any.
    pub endpoint: Option<String>,
    /// Now, for ages.
    pub now: jiff::Timestamp,
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why a pod is not running, in a word or two (waiting reason, Unschedulable, …).
fn pod_reason(p: &Pod) -> String {
    let Some(st) = p.status.as_ref() else {
        return "-".into();
    };
    for cs in st
        .init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
    {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            return w.reason.clone().unwrap_or_else(|| "Waiting".into());
        }
        if let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref())
            && t.exit_code != 0
        {
            return t
                .reason
                .clone()
                .unwrap_or_else(|| format!("exit {}", t.exit_code));
        }
    }
    if let Some(c) = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return c.reason.clone().unwrap_or_else(|| "Unschedulable".into());
    }
    "-".into()
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `status NAME`.
pub fn status(v: &StatusView<'_>) -> String {
    let ws = v.ws;
    let mut s = String::new();
    let name = ws.metadata.name.as_deref().unwrap_or_default();
    let _ = writeln!(s, "Name:        {name}");
    let _ = writeln!(
        s,
        "Namespace:   {}",
        ws.metadata.namespace.as_deref().unwrap_or_default()
    );
    let kind = if ws.tuning.is_some() {
        "tuning"
    } else {
        "inference"
    };
    let preset = ws.preset().map(|p| p.name.as_str()).unwrap_or("(template)");
    let method = ws
        .tuning
        .as_ref()
        .and_then(|t| t.method.as_deref())
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    let _ = writeln!(s, "Workload:    {kind}{method} of {preset}");
    let _ = writeln!(
        s,
        "Instance:    {} × {}",
        ws.resource.count.unwrap_or(1),
        ws.resource
            .instance_type
            .as_deref()
            .unwrap_or("(bring-your-own nodes)")
    );
    let state = ws
        .status
        .as_ref()
        .and_then(|st| st.state.as_deref())
        .unwrap_or("(no status yet)");
    let _ = writeln!(s, "State:       {state}");
    let _ = writeln!(
        s,
        "Age:         {}",
        compute::age(ws.metadata.creation_timestamp.as_ref().map(|t| t.0), v.now)
    );
    if let Some(why) = ws.annotation(kaito_api::ANNOTATION_SIZING) {
        let _ = writeln!(s, "Sizing:      {why}");
    }
    if ws.tuning.is_none() {
        let _ = writeln!(
            s,
            "Endpoint:    {}",
            v.endpoint
                .as_deref()
                .unwrap_or("(none yet: the Service is created with the workload)")
        );
    }

    let _ = writeln!(s, "\nConditions:");
    let conds = ws
        .status
        .as_ref()
        .and_then(|st| st.conditions.clone())
        .unwrap_or_default();
    if conds.is_empty() {
        let _ = writeln!(
            s,
            "  (none: the controller has not reported on this workspace)"
        );
    } else {
        let rows: Vec<Vec<String>> = conds
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    compute::age(Some(c.last_transition_time.0), v.now),
                    one_line(&c.message),
                ]
            })
            .collect();
        for line in table(&["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], &rows).lines() {
            let _ = writeln!(s, "  {line}");
        }
    }

    let _ = writeln!(s, "\nNodes:");
    if v.nodes.is_empty() {
        let _ = writeln!(s, "  (none)");
    } else {
        let rows: Vec<Vec<String>> = v
            .nodes
            .iter()
            .map(|n| {
                let labels = n.metadata.labels.clone().unwrap_or_default();
                let gpus = n
                    .status
                    .as_ref()
                    .and_then(|st| st.allocatable.as_ref())
                    .and_then(|a| a.get("nvidia.com/gpu"))
                    .map(|q| q.0.clone())
                    .unwrap_or_else(|| "0".into());
                vec![
                    n.metadata.name.clone().unwrap_or_default(),
                    if node_ready(n) { "Ready" } else { "NotReady" }.to_string(),
                    labels
                        .get("node.kubernetes.io/instance-type")
                        .cloned()
                        .unwrap_or_else(|| "-".into()),
                    gpus,
                ]
            })
            .collect();
        for line in table(&["NAME", "STATUS", "INSTANCE", "GPUS"], &rows).lines() {
            let _ = writeln!(s, "  {line}");
        }
    }

    let _ = writeln!(s, "\nPods:");
    if v.pods.is_empty() {
        let _ = writeln!(s, "  (none)");
    } else {
        let rows: Vec<Vec<String>> = v
            .pods
            .iter()
            .map(|p| {
                let st = p.status.as_ref();
                vec![
                    p.metadata.name.clone().unwrap_or_default(),
                    st.and_then(|st| st.phase.clone())
                        .unwrap_or_else(|| "-".into()),
                    if pod_ready(p) { "True" } else { "False" }.to_string(),
                    p.spec
                        .as_ref()
                        .and_then(|sp| sp.node_name.clone())
                        .unwrap_or_else(|| "-".into()),
                    pod_reason(p),
                ]
            })
            .collect();
        for line in table(&["NAME", "PHASE", "READY", "NODE", "REASON"], &rows).lines() {
            let _ = writeln!(s, "  {line}");
        }
    }

    let _ = writeln!(s, "\nEvents:");
    if v.events.is_empty() {
        let _ = writeln!(s, "  (none)");
    } else {
        let skip = v.events.len().saturating_sub(v.max_events);
        let rows: Vec<Vec<String>> = v.events[skip..]
            .iter()
            .map(|e| {
                let when = e
                    .last_timestamp
                    .as_ref()
                    .or(e.first_timestamp.as_ref())
                    .map(|t| t.0)
                    .or_else(|| e.event_time.as_ref().map(|t| t.0))
                    .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
                vec![
                    compute::age(when, v.now),
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    format!(
                        "{}/{}",
                        e.involved_object
                            .kind
                            .as_deref()
                            .unwrap_or_default()
                            .to_lowercase(),
                        e.involved_object.name.as_deref().unwrap_or_default()
                    ),
                    one_line(e.message.as_deref().unwrap_or_default()),
                ]
            })
            .collect();
        for line in table(&["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"], &rows).lines() {
            let _ = writeln!(s, "  {line}");
        }
    }

    let _ = writeln!(s);
    match compute::next_step(ws) {
        Some(step) => {
            let _ = writeln!(s, "Next step: {step}");
        }
        None if ws.tuning.is_some() => {
            let _ = writeln!(s, "{}", tuning_done(ws));
        }
        None => {
            let _ = writeln!(s, "Ready: try `kubectl kaito chat {name}`.");
        }
    }
    s
}

/// What a finished tuning workspace tells its user: where the adapter went, that a tuning
/// workspace serves nothing (no Service to curl), and how to serve the adapter.
fn tuning_done(ws: &Workspace) -> String {
    let name = ws.metadata.name.as_deref().unwrap_or_default();
    let output = ws.tuning.as_ref().and_then(|t| t.output.as_ref());
    let preset = ws
        .tuning
        .as_ref()
        .and_then(|t| t.preset.as_ref())
        .map(|p| p.name.as_str())
        .unwrap_or("PRESET");
    match output.and_then(|o| o.image.as_deref()) {
        Some(image) => format!(
            "Ready: tuning finished and the adapter was published to {image}.\n\
             A tuning workspace serves nothing: there is no Service {name} to call. Next step: \
             serve the adapter on its base model with an inference workspace, e.g.\n  \
             kubectl kaito create workspace {name}-serve --preset {preset} \
             --adapter {name}={image} --instance-type <size>\n\
             (or list it under inference.adapters, as in \
             examples/inference/kaito_workspace_phi_3_with_adapters.yaml)."
        ),
        None => format!(
            "Ready: tuning finished and the adapter was written to the output volume.\n\
             A tuning workspace serves nothing: there is no Service {name} to call. Next step: \
             serve the adapter from that volume with an inference workspace \
             (inference.adapters[].source.volumeSource)."
        ),
    }
}

/// `create --dry-run=client` trailer: the sizing plan, the human summary and the warnings,
/// as YAML comments so the whole output stays valid YAML.
pub fn dry_run_trailer(
    plan: &Result<WorkspacePlan, PlanError>,
    count: i32,
    warnings: &[String],
) -> String {
    let mut s = String::new();
    match plan {
        Ok(WorkspacePlan {
            sizing: Some(plan), ..
        }) => {
            let _ = writeln!(s, "# Sizing plan (computed locally by the webhook's code):");
            let _ = writeln!(s, "#   {}", plan.summary());
            for problem in &plan.problems {
                let _ = writeln!(
                    s,
                    "#   problem (admitted: resource checks bypassed): {problem}"
                );
            }
            for note in &plan.notes {
                let _ = writeln!(s, "#   note: {note}");
            }
            let _ = writeln!(s, "# Summary: {}", compute::plan_headline(count, plan));
        }
        Ok(WorkspacePlan { sizing: None, .. }) => {
            let _ = writeln!(
                s,
                "# Sizing plan: none (inference.template is served as given, on all the GPUs of each node)"
            );
        }
        Err(PlanError::NoInstanceType { .. }) => {
            let _ = writeln!(
                s,
                "# Sizing plan: none (bring-your-own nodes: sized from the nodes' labels when the controller runs)"
            );
        }
        Err(why) => {
            let _ = writeln!(s, "# Sizing plan: none ({why})");
        }
    }
    for w in warnings {
        let _ = writeln!(s, "# Warning: {w}");
    }
    s
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, ObjectReference, PodCondition,
        PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kaito_api::admission::{AdmissionConfig, Provisioner};

    use super::*;
    use crate::testutil::{cond, sample_ws, seed_ws, ts};

    #[test]
    fn table_snapshot() {
        let t = table(
            &["NAME", "X"],
            &[
                vec!["a".into(), "1".into()],
                vec!["longer-name".into(), "".into()],
            ],
        );
        assert_eq!(t, "NAME          X\na             1\nlonger-name\n");
    }

    #[test]
    fn get_table_snapshots() {
        let now = ts("2026-01-02T00:00:00Z");
        let ready = sample_ws(vec![
            cond("ResourceReady", "True", "Ready", "1/1 nodes ready"),
            cond("InferenceReady", "True", "Ready", "1/1 replicas"),
            cond("WorkspaceSucceeded", "True", "Ready", "serving"),
        ]);
        let mut pending = sample_ws(vec![cond("ResourceReady", "False", "NodesNotReady", "0/1")]);
        pending.metadata.name = Some("other".into());
        pending.metadata.namespace = Some("team".into());
        if let Some(st) = pending.status.as_mut() {
            st.worker_nodes = None;
        }
        let rows = vec![
            compute::workspace_row(&ready, Some("http://10.96.0.10:80"), now),
            compute::workspace_row(&pending, None, now),
        ];
        assert_eq!(
            workspaces_table(&rows, false, false, true),
            "\
NAME                   INSTANCE           RESOURCEREADY   INFERENCEREADY   WORKSPACEREADY   AGE
workspace-phi-3-mini   Standard_NC6s_v3   True            True             True             300s
other                  Standard_NC6s_v3   False           -                -                300s
"
            .replace("300s", "5m")
        );
        assert_eq!(
            workspaces_table(&rows, true, true, true),
            "\
NAMESPACE   NAME                   INSTANCE           RESOURCEREADY   INFERENCEREADY   WORKSPACEREADY   AGE   PRESET                   NODES   ENDPOINT
default     workspace-phi-3-mini   Standard_NC6s_v3   True            True             True             5m    phi-3-mini-4k-instruct   gpu-1   http://10.96.0.10:80
team        other                  Standard_NC6s_v3   False           -                -                5m    phi-3-mini-4k-instruct   -       -
"
        );
        assert_eq!(
            workspaces_table(&rows[1..], false, false, false),
            "other   Standard_NC6s_v3   False           -                -                5m\n"
        );
    }

    #[test]
    fn status_explains_an_unschedulable_workspace() {
        let now = ts("2026-01-02T00:00:00Z");
        let ws = sample_ws(vec![
            cond("ResourceReady", "True", "Ready", "1/1 GPU nodes ready"),
            cond(
                "InferenceReady",
                "False",
                "Unschedulable",
                "pod workspace-phi-3-mini-0: 0/2 nodes are available: 1 Insufficient nvidia.com/gpu.",
            ),
            cond(
                "WorkspaceSucceeded",
                "False",
                "Unschedulable",
                "not serving",
            ),
        ]);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("workspace-phi-3-mini-0".into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        let event = Event {
            type_: Some("Warning".into()),
            reason: Some("FailedScheduling".into()),
            message: Some("0/2 nodes are available: 1 Insufficient nvidia.com/gpu.".into()),
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("workspace-phi-3-mini-0".into()),
                ..Default::default()
            },
            last_timestamp: Some(Time(ts("2026-01-01T23:59:30Z"))),
            ..Default::default()
        };
        let text = status(&StatusView {
            ws: &ws,
            pods: &[pod],
            nodes: &[],
            events: &[event],
            max_events: 10,
            endpoint: None,
            now,
        });
        assert_eq!(
            text,
            "\
Name:        workspace-phi-3-mini
Namespace:   default
Workload:    inference of phi-3-mini-4k-instruct
Instance:    1 × Standard_NC6s_v3
State:       Pending
Age:         5m
Endpoint:    (none yet: the Service is created with the workload)

Conditions:
  TYPE                 STATUS   REASON          SINCE   MESSAGE
  ResourceReady        True     Ready           2m      1/1 GPU nodes ready
  InferenceReady       False    Unschedulable   2m      pod workspace-phi-3-mini-0: 0/2 nodes are available: 1 Insufficient nvidia.com/gpu.
  WorkspaceSucceeded   False    Unschedulable   2m      not serving

Nodes:
  (none)

Pods:
  NAME                     PHASE     READY   NODE   REASON
  workspace-phi-3-mini-0   Pending   False   -      Unschedulable

Events:
  AGE   TYPE      REASON             OBJECT                       MESSAGE
  30s   Warning   FailedScheduling   pod/workspace-phi-3-mini-0   0/2 nodes are available: 1 Insufficient nvidia.com/gpu.

Next step: the scheduler cannot place the pod: add a GPU node that matches resource.labelSelector and has enough free nvidia.com/gpu (and tolerates its taints), or recreate the workspace with another --instance-type
"
        );
    }

    #[test]
    fn status_of_a_ready_workspace_says_how_to_use_it() {
        let ws = sample_ws(vec![cond("WorkspaceSucceeded", "True", "Ready", "serving")]);
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        pod.status = Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ImagePullBackOff".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let text = status(&StatusView {
            ws: &ws,
            pods: &[pod],
            nodes: &[],
            events: &[],
            max_events: 10,
            endpoint: Some("http://10.96.0.10:80".into()),
            now: ts("2026-01-02T00:00:00Z"),
        });
        assert!(
            text.contains("Endpoint:    http://10.96.0.10:80\n"),
            "{text}"
        );
        assert!(text.contains("ImagePullBackOff"), "{text}");
        assert!(
            text.ends_with("Ready: try `kubectl kaito chat workspace-phi-3-mini`.\n"),
            "{text}"
        );
    }

    #[test]
    fn dry_run_trailer_snapshot() {
        let cfg = AdmissionConfig::new(Cloud::Azure, Provisioner::Aks);
        let w: Workspace = serde_yaml::from_str(
            "metadata: {name: w}\nresource: {instanceType: Standard_NC6s_v3}\ninference: {preset: {name: phi-3-mini-4k-instruct}}",
        )
        .expect("a workspace");
        let planned = kaito_api::admission::plan(&w, &cfg, None);
        let t = dry_run_trailer(&planned, 1, &["w1".into()]);
        let plan = planned.expect("plans").sizing.expect("sized");
        let expected = format!(
            "# Sizing plan (computed locally by the webhook's code):\n#   {}\n{}# Summary: {}\n# Warning: w1\n",
            plan.summary(),
            plan.notes
                .iter()
                .map(|n| format!("#   note: {n}\n"))
                .collect::<String>(),
            compute::plan_headline(1, &plan)
        );
        assert_eq!(t, expected);
        // Bring-your-own nodes without a size: planned when the nodes join; other reasons shown.
        let byo = dry_run_trailer(
            &Err(kaito_api::admission::PlanError::NoInstanceType {
                cloud: Cloud::Azure,
                example: "x",
            }),
            1,
            &[],
        );
        assert!(byo.contains("bring-your-own nodes"), "{byo}");
        let bad = dry_run_trailer(&Err(kaito_api::admission::PlanError::BadCount(0)), 1, &[]);
        assert!(
            bad.contains("Sizing plan: none (`resource.count` must be at least 1"),
            "{bad}"
        );
        assert!(
            compute::plan_headline(1, &plan)
                .starts_with("1 × Standard_NC6s_v3 (V100 16 GiB), f16, fits: needs "),
            "{}",
            compute::plan_headline(1, &plan)
        );
    }

    #[test]
    fn models_and_skus_render_from_the_catalog() {
        let models = models_table(kaito_presets::PresetCatalog::builtin());
        let first = models.lines().next().expect("header");
        assert_eq!(
            first.split_whitespace().collect::<Vec<_>>(),
            [
                "NAME",
                "ARCHITECTURE",
                "WEIGHTS",
                "SERVE-GPU-MEMORY",
                "CONTEXT",
                "TUNING-GPU-MEMORY",
                "NOTES"
            ]
        );
        assert!(models.contains("phi-3-mini-4k-instruct"));
        assert_eq!(
            models.lines().count(),
            kaito_presets::PresetCatalog::builtin().iter().count() + 1
        );
        let skus = skus_table(kaito_presets::SkuCatalog::builtin(), Cloud::Azure);
        let row = skus
            .lines()
            .find(|l| l.starts_with("Standard_NC6s_v3 "))
            .expect("NC6s_v3 row");
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [
                "Standard_NC6s_v3",
                "1",
                "V100",
                "16",
                "GiB",
                "16",
                "GiB",
                "7.0",
                "6",
                "-"
            ]
        );
        let cpu = skus
            .lines()
            .find(|l| l.starts_with("Standard_D4s_v3 "))
            .expect("D4s_v3 row");
        assert_eq!(
            cpu.split_whitespace().collect::<Vec<_>>(),
            [
                "Standard_D4s_v3",
                "0",
                "-",
                "-",
                "0",
                "GiB",
                "-",
                "4",
                "16",
                "GiB"
            ]
        );
        let d = model_describe(
            kaito_presets::PresetCatalog::builtin()
                .get("phi-3-mini-4k-instruct")
                .expect("preset"),
            kaito_presets::Mode::Serve,
            kaito_presets::SkuCatalog::builtin(),
            Cloud::Azure,
        );
        assert!(
            d.lines().any(|l| l.starts_with("  Standard_NC6s_v3 ")
                && l.contains("Standard_NC6s_v3 (1× V100, 16 GiB): fits serving")),
            "{d}"
        );
        assert!(
            d.contains("azure GPU sizes fit serving, smallest first"),
            "{d}"
        );
        assert!(
            d.contains("azure CPU-only sizes serve it on the CPU")
                && d.lines().any(|l| l.starts_with("  Standard_D8s_v3 ")
                    && l.contains("(no GPU, 32 GiB memory): fits serving")),
            "{d}"
        );
        assert!(
            d.contains("On a CPU:      18.24 GiB of memory with the full context"),
            "{d}"
        );
        let big = model_describe(
            kaito_presets::PresetCatalog::builtin()
                .get("llama-3.3-70b-instruct")
                .expect("preset"),
            kaito_presets::Mode::Serve,
            kaito_presets::SkuCatalog::builtin(),
            Cloud::Azure,
        );
        assert!(
            big.contains("No azure CPU-only size has the memory to serve llama-3.3-70b-instruct"),
            "{big}"
        );
        let tuning = model_describe(
            kaito_presets::PresetCatalog::builtin()
                .get("phi-3-mini-4k-instruct")
                .expect("preset"),
            kaito_presets::Mode::TuneQlora,
            kaito_presets::SkuCatalog::builtin(),
            Cloud::Azure,
        );
        assert!(!tuning.contains("CPU-only sizes"), "{tuning}");
    }

    #[test]
    fn status_of_a_finished_tuning_workspace_names_the_adapter_and_how_to_serve_it() {
        let ws = seed_ws(
            "fine-tuning/kaito_workspace_tuning_phi_3.yaml",
            vec![
                cond("ResourceReady", "True", "Ready", "1/1 GPU nodes ready"),
                cond("JobStarted", "True", "Running", "job started"),
                cond("WorkspaceSucceeded", "True", "Succeeded", "tuning finished"),
            ],
            "Succeeded",
        );
        let text = status(&StatusView {
            ws: &ws,
            pods: &[],
            nodes: &[],
            events: &[],
            max_events: 10,
            endpoint: None,
            now: ts("2026-01-02T00:00:00Z"),
        });
        for want in [
            "published to ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1",
            "there is no Service workspace-tuning-phi-3",
            "--preset phi-3-mini-128k-instruct --adapter workspace-tuning-phi-3=ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }
}
