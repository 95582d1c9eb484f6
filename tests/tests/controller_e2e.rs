//! End-to-end tests of `kaito-controller` (controller/) against the local control plane: the
//! controller runs as a process scoped to the test's namespace; the real scheduler places its
//! pods on simulated (kwok) GPU nodes.
//!
//! - byo: the seed inference workspace on a matching GPU node → ResourceReady, InferenceReady,
//!   WorkspaceReady True in `kubectl get workspace`; delete → finalizer released;
//! - karpenter: NodeClaims (a stand-in CRD) turned into kwok nodes by a small test provisioner
//!   here → all True; delete → claims removed, finalizer released, nothing leaked;
//! - a pod that cannot be scheduled → InferenceReady False, reason Unschedulable, with the
//!   scheduler's message;
//! - a LoadBalancer Service of the workspace's name made by someone else → left as it is
//!   (type, selector, no owner reference, kept after the workspace is deleted), InferenceReady
//!   False ChildNameTaken;
//! - a Workspace that passes the CRD schema but does not decode → the others are still served;
//! - the seed tuning workspace → a Job whose init containers download (`kaito-adapter fetch`)
//!   and train, and whose one container publishes (`kaito-adapter publish` with the push
//!   Secret as docker config); kwok completes it → WorkspaceSucceeded True;
//! - the seed adapter workspace → a StatefulSet with the `kaito-adapter pull` init container
//!   and the adapter's strength env var.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use kaito_e2e::{
    Cluster, ControllerProcess, GpuNode, NodeGuard, TestNamespace, condition, repo_root,
    unique_name, wait_for,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);

fn cluster() -> &'static Cluster {
    kaito_e2e::running_cluster()
}

/// The seed inference workspace (phi-3).
const PHI_3: &str = "inference/kaito_workspace_phi_3.yaml";

/// The columns a ready inference workspace shows True in.
const INFERENCE_READY: &[&str] = &["RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY"];

/// The cluster with the CRDs, a namespace `ns_prefix-…`, and a label `label_prefix-…` that a
/// GPU node carries ([`GpuNode::for_apps`]): the node the seeds of that label select.
fn namespace_with_node(
    ns_prefix: &str,
    label_prefix: &str,
) -> Result<(TestNamespace<'static>, String, NodeGuard<'static>)> {
    namespace_with(ns_prefix, label_prefix, |node| node)
}

/// Like [`namespace_with_node`], the node changed by `node`.
fn namespace_with(
    ns_prefix: &str,
    label_prefix: &str,
    node: impl FnOnce(GpuNode) -> GpuNode,
) -> Result<(TestNamespace<'static>, String, NodeGuard<'static>)> {
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    let ns = cluster.namespace(ns_prefix)?;
    let label = unique_name(label_prefix);
    let node = cluster.add_gpu_node(&node(GpuNode::for_apps("gpu", &label)))?;
    Ok((ns, label, node))
}

/// Starts a byo controller in `ns`, then applies the seed `file` as `name` for the nodes
/// labelled `apps=label`.
fn start_with_seed<'a>(
    ns: &'a TestNamespace<'a>,
    file: &str,
    name: &str,
    label: &str,
) -> Result<ControllerProcess<'a>> {
    let ctl = ControllerProcess::start(ns, "byo")?;
    ns.apply(&kaito_e2e::seed_workspace(file, name, label)?)?;
    Ok(ctl)
}

/// Waits for the workspace's InferenceReady condition with the reason `reason`; returns it.
fn wait_inference_reason(
    ns: &TestNamespace<'_>,
    name: &str,
    reason: &str,
    ctl: &ControllerProcess<'_>,
) -> Result<Value> {
    wait_for(
        &format!("InferenceReady=False/{reason}"),
        WAIT,
        POLL,
        || {
            Ok(condition(&ns.workspace_conditions(name)?, "InferenceReady")
                .filter(|c| c["reason"] == reason))
        },
    )
    .with_context(|| ctl.log_tail())
}

/// Waits until `kubectl get workspace` prints True in the named columns.
fn wait_columns_true(
    ns: &TestNamespace<'_>,
    name: &str,
    columns: &[&str],
    ctl: &ControllerProcess<'_>,
) -> Result<String> {
    wait_for(&format!("{columns:?} True for {name}"), WAIT, POLL, || {
        let table = ns.kubectl_ok(["get", "workspace", name])?;
        // Columns are read by their offset in the header: empty cells (JobStarted of an
        // inference workspace) would shift a whitespace split.
        let header = table.lines().next().unwrap_or_default();
        let row = table.lines().nth(1).unwrap_or_default();
        let ok = columns.iter().all(|c| {
            header
                .find(&format!(" {c} "))
                .or_else(|| header.find(&format!(" {c}")))
                .and_then(|i| row.get(i + 1..))
                .is_some_and(|cell| cell.starts_with("True"))
        });
        Ok(ok.then_some(table))
    })
    .with_context(|| format!("{}\n{:?}", ctl.log_tail(), ns.workspace_conditions(name)))
}

fn wait_deleted(ns: &TestNamespace<'_>, name: &str) -> Result<()> {
    ns.kubectl_ok(["delete", "workspace", name, "--wait=false"])?;
    wait_for(
        "the workspace to be gone (finalizer released)",
        WAIT,
        POLL,
        || Ok((!ns.kubectl(["get", "workspace", name])?.success()).then_some(())),
    )
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn controller_byo_seed_inference_becomes_ready_and_deletes_cleanly() -> Result<()> {
    let (ns, label, _node) = namespace_with_node("ctl-byo", "byo")?;
    let cluster = cluster();
    let name = "workspace-phi-3-mini";
    let ctl = start_with_seed(&ns, PHI_3, name, &label)?;
    let table = wait_columns_true(&ns, name, INFERENCE_READY, &ctl)?;
    assert!(table.contains("Standard_NC6s_v3"), "{table}");

    let ws = ns.get_json(["workspace", name])?;
    assert_eq!(ws["status"]["state"], "Ready");
    assert_eq!(
        ws["status"]["workerNodes"],
        serde_json::json!([_node.name()])
    );
    assert_eq!(ws["status"]["targetNodeCount"], 1);
    assert!(
        ws["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.contains(&Value::from("workspace.finalizer.kaito.sh")))
    );
    let sts = ns.get_json(["statefulset", name])?;
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    assert_eq!(sts["spec"]["serviceName"], format!("{name}-headless"));
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "1"
    );
    assert_eq!(sts["metadata"]["ownerReferences"][0]["kind"], "Workspace");
    let pod = ns.get_json(["pod", &format!("{name}-0")])?;
    assert_eq!(pod["spec"]["nodeName"], _node.name());
    let svc = ns.get_json(["service", name])?;
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    ns.get_json(["service", &format!("{name}-headless")])?;
    let events = wait_for("the WorkloadCreated event", WAIT, POLL, || {
        let events = ns.kubectl_ok(["get", "events", "-o", "json"])?;
        Ok(events.contains("WorkloadCreated").then_some(events))
    })?;
    assert!(events.contains(name), "{events}");
    let metrics = ctl.http_get("/metrics")?;
    assert!(
        metrics.contains("kaito_controller_reconciles_total"),
        "{metrics}"
    );
    ctl.http_get("/healthz")?;

    // A node status heartbeat (kubelets and kwok write one every few seconds) must not wake
    // the workspace; a change the controller reads of the node (a label) must.
    let reconciles = || -> Result<f64> {
        metric_sum(
            &ctl.http_get("/metrics")?,
            "kaito_controller_reconciles_total",
        )
    };
    let settled = wait_for("the controller to go idle", WAIT, Duration::from_secs(2), {
        let mut last = -1.0;
        move || {
            let now = reconciles()?;
            let idle = now == last;
            last = now;
            Ok(idle.then_some(now))
        }
    })?;
    let node = _node.name();
    for at in ["2030-01-01T00:00:00Z", "2030-01-01T00:00:10Z"] {
        cluster.kubectl_ok([
            "patch",
            "node",
            node,
            "--subresource=status",
            "--type=strategic",
            "-p",
            &format!(
                r#"{{"status":{{"conditions":[{{"type":"Ready","lastHeartbeatTime":"{at}"}}]}}}}"#
            ),
        ])?;
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert_eq!(
        reconciles()?,
        settled,
        "a heartbeat alone reconciled the workspace"
    );
    cluster.kubectl_ok(["label", "node", node, "kaito-e2e-touched=1"])?;
    wait_for(
        "a reconcile after the node's labels changed",
        WAIT,
        POLL,
        || Ok((reconciles()? > settled).then_some(())),
    )
    .with_context(|| ctl.log_tail())?;

    wait_deleted(&ns, name)?;
    Ok(())
}

/// The sum of every series of the Prometheus counter or gauge `name` in a /metrics text.
fn metric_sum(text: &str, name: &str) -> Result<f64> {
    let mut sum = 0.0;
    let mut found = false;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no value in {line:?}"))?;
        sum += value;
        found = true;
    }
    if !found {
        bail!("no series {name} in the metrics:\n{text}");
    }
    Ok(sum)
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn controller_reports_a_pod_the_scheduler_cannot_place() -> Result<()> {
    // A Ready GPU node that matches, but with a taint the workload does not tolerate.
    let (ns, label, _node) = namespace_with("ctl-unsched", "unsched", |node| {
        node.taint("dedicated=other:NoSchedule")
    })?;
    let name = "unschedulable";
    let ctl = start_with_seed(&ns, PHI_3, name, &label)?;
    let cond = wait_inference_reason(&ns, name, "Unschedulable", &ctl)?;
    assert_eq!(cond["status"], "False");
    let msg = cond["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("untolerated taint"),
        "the scheduler's message is passed on: {msg}"
    );
    let conds = ns.workspace_conditions(name)?;
    assert_eq!(
        condition(&conds, "ResourceReady").map(|c| c["status"].clone()),
        Some(Value::from("True"))
    );
    let ws = condition(&conds, "WorkspaceSucceeded").context("WorkspaceSucceeded")?;
    assert_eq!(ws["reason"], "Unschedulable");
    wait_deleted(&ns, name)?;
    Ok(())
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn controller_leaves_a_service_it_did_not_create_alone() -> Result<()> {
    let (ns, label, _node) = namespace_with_node("ctl-taken", "taken")?;
    let name = "workspace-phi-3-mini";
    // Someone's LoadBalancer Service that happens to have the workspace's name.
    ns.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: LoadBalancer\n  \
         selector: {{app: theirs}}\n  ports: [{{port: 443, targetPort: 8443}}]\n"
    ))?;
    let ctl = start_with_seed(&ns, PHI_3, name, &label)?;
    let cond = wait_inference_reason(&ns, name, "ChildNameTaken", &ctl)?;
    let msg = cond["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("Service {}/{name}", ns.name())) && msg.contains("rename or delete"),
        "{msg}"
    );
    let svc = ns.get_json(["service", name])?;
    assert_eq!(svc["spec"]["type"], "LoadBalancer", "{svc}");
    assert_eq!(
        svc["spec"]["selector"],
        serde_json::json!({"app": "theirs"})
    );
    assert!(svc["metadata"]["ownerReferences"].is_null(), "{svc}");
    assert!(
        !ns.kubectl(["get", "statefulset", name])?.success(),
        "no workload without its Service"
    );
    // Deleting the workspace does not take the Service with it.
    wait_deleted(&ns, name)?;
    assert_eq!(
        ns.get_json(["service", name])?["spec"]["type"],
        "LoadBalancer"
    );
    Ok(())
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn controller_serves_the_others_when_one_workspace_does_not_decode() -> Result<()> {
    let (ns, label, _node) = namespace_with_node("ctl-undecodable", "undec")?;
    // The CRD keeps inference.template as it is (preserve-unknown-fields), so this is stored
    // (no webhook here), but it does not decode as a Workspace.
    ns.apply(
        "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: broken\n\
         resource: {count: 1, labelSelector: {matchLabels: {apps: nothing}}}\n\
         inference:\n  template:\n    spec: {containers: not-a-list}\n",
    )?;
    let name = "workspace-phi-3-mini";
    let ctl = start_with_seed(&ns, PHI_3, name, &label)?;
    wait_columns_true(&ns, name, INFERENCE_READY, &ctl)?;
    wait_deleted(&ns, name)?;
    ns.kubectl_ok(["delete", "workspace", "broken", "--wait=false"])?;
    Ok(())
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn controller_seed_tuning_runs_a_job_to_success() -> Result<()> {
    let (ns, label, _node) = namespace_with_node("ctl-tune", "tune")?;
    let name = "workspace-tuning-phi-3";
    let ctl = start_with_seed(
        &ns,
        "fine-tuning/kaito_workspace_tuning_phi_3.yaml",
        name,
        &label,
    )?;
    let job = wait_for("the tuning Job", WAIT, POLL, || {
        Ok(ns.get_json(["job", name]).ok())
    })
    .with_context(|| ctl.log_tail())?;
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    // Ordering by init containers: download, then train; the publisher is the only container,
    // so the Job completes when it has pushed the adapter the trainer wrote.
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(
        names(&pod["initContainers"]),
        ["data-downloader", "trainer"]
    );
    assert_eq!(names(&pod["containers"]), ["publisher"]);
    let adapter_image = "ghcr.io/kaito-rs/kaito-adapter:0.1.0";
    let download = &pod["initContainers"][0];
    assert_eq!(download["image"], adapter_image);
    assert_eq!(
        download["command"],
        serde_json::json!([
            "kaito-adapter",
            "fetch",
            "--output",
            "/mnt/data",
            "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/train-00000-of-00001-54e3756291ca09c6.parquet?download=true"
        ])
    );
    let trainer = &pod["initContainers"][1];
    assert_eq!(
        trainer["command"],
        serde_json::json!([
            "accelerate",
            "launch",
            "--num_processes=1",
            "/workspace/tfs/fine_tuning.py"
        ])
    );
    assert_eq!(trainer["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert!(
        trainer["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "config"
                && m["mountPath"] == "/mnt/config"
                && m["readOnly"] == true),
        "{trainer}"
    );
    let publisher = &pod["containers"][0];
    assert_eq!(publisher["image"], adapter_image);
    assert_eq!(
        publisher["command"],
        serde_json::json!([
            "kaito-adapter",
            "publish",
            "--source",
            "/mnt/results",
            "--target",
            "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1",
            "--docker-config",
            "/mnt/push-secret/config.json"
        ])
    );
    assert!(
        publisher["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "push-secret"
                && m["mountPath"] == "/mnt/push-secret"
                && m["readOnly"] == true),
        "{publisher}"
    );
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    let volume = |n: &str| volumes.iter().find(|v| v["name"] == n).cloned();
    assert_eq!(
        volume("push-secret").map(|v| v["secret"].clone()),
        Some(
            serde_json::json!({"secretName": "ACR_REGISTRY_SECRET_HERE", "defaultMode": 420,
            "items": [{"key": ".dockerconfigjson", "path": "config.json"}]})
        )
    );
    assert_eq!(
        volume("config").map(|v| v["configMap"]["name"].clone()),
        Some(Value::from(format!("{name}-tuning-config")))
    );
    for v in ["data", "results"] {
        assert!(volume(v).is_some(), "volume {v} in {volumes:?}");
    }
    let cm = ns.get_json(["configmap", &format!("{name}-tuning-config")])?;
    let cfg = cm["data"]["training_config.yaml"]
        .as_str()
        .unwrap_or_default();
    assert!(
        cfg.contains("bnb_4bit_quant_type: \"nf4\"") && cfg.contains("r: 8"),
        "{cfg}"
    );
    wait_columns_true(
        &ns,
        name,
        &["RESOURCEREADY", "JOBSTARTED", "WORKSPACEREADY"],
        &ctl,
    )?;
    let ws = ns.get_json(["workspace", name])?;
    assert_eq!(ws["status"]["state"], "Succeeded");
    wait_deleted(&ns, name)?;
    Ok(())
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn controller_seed_adapter_gets_the_puller_init_container() -> Result<()> {
    let (ns, label, _node) = namespace_with_node("ctl-adapter", "adapter")?;
    let name = "workspace-phi-3-mini-adapter";
    let ctl = start_with_seed(
        &ns,
        "inference/kaito_workspace_phi_3_with_adapters.yaml",
        name,
        &label,
    )?;
    let sts = wait_for("the serving StatefulSet", WAIT, POLL, || {
        Ok(ns.get_json(["statefulset", name]).ok())
    })
    .with_context(|| ctl.log_tail())?;
    let pod = &sts["spec"]["template"]["spec"];
    let init = pod["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(init.len(), 1, "{init:?}");
    assert_eq!(init[0]["name"], "adapter-phi-3-adapter");
    assert_eq!(init[0]["image"], "ghcr.io/kaito-rs/kaito-adapter:0.1.0");
    assert_eq!(
        init[0]["command"],
        serde_json::json!([
            "kaito-adapter",
            "pull",
            "--image",
            "ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1",
            "--output",
            "/mnt/adapter/phi-3-adapter"
        ])
    );
    let model = &pod["containers"][0];
    assert!(
        model["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == "phi-3-adapter" && e["value"] == "1.0"),
        "{model}"
    );
    assert!(
        model["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "adapters" && m["mountPath"] == "/mnt/adapter"),
        "{model}"
    );
    wait_deleted(&ns, name)?;
    Ok(())
}

/// Stands in for Karpenter: every NodeClaim of `namespace` without a node gets a kwok GPU node
/// of the requested instance type with the claim's labels; nodes whose claim is gone go too.
fn karpenter_pass<'c>(
    cluster: &'c Cluster,
    namespace: &str,
    nodes: &mut Vec<NodeGuard<'c>>,
) -> Result<Vec<Value>> {
    let claims = cluster.get_json([
        "nodeclaims",
        "-l",
        &format!("kaito.sh/workspacenamespace={namespace}"),
    ])?;
    let claims = claims["items"].as_array().cloned().unwrap_or_default();
    let names: Vec<String> = claims
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str().map(String::from))
        .collect();
    nodes.retain(|n| names.iter().any(|c| c == n.name()));
    for c in &claims {
        let Some(name) = c["metadata"]["name"].as_str() else {
            continue;
        };
        if nodes.iter().any(|n| n.name() == name) {
            continue;
        }
        let sku = c["spec"]["requirements"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["key"] == "node.kubernetes.io/instance-type")
            .and_then(|r| r["values"][0].as_str())
            .context("claim without an instance type")?;
        let mut node = GpuNode::new(name).sku(sku);
        for (k, v) in c["metadata"]["labels"].as_object().into_iter().flatten() {
            node = node.label(k, v.as_str().unwrap_or_default());
        }
        nodes.push(cluster.add_gpu_node(&node)?);
        cluster.kubectl_ok([
            "patch",
            "nodeclaim",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"nodeName":"{name}"}}}}"#),
        ])?;
    }
    Ok(claims)
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn controller_karpenter_nodeclaims_become_nodes_and_are_removed_on_delete() -> Result<()> {
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    cluster.kubectl_ok([
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &repo_root()
            .join("controller/testdata/karpenter-nodeclaim-crd.yaml")
            .display()
            .to_string(),
    ])?;
    cluster.kubectl_ok([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/nodeclaims.karpenter.sh",
    ])?;
    let ns = cluster.namespace("ctl-karp")?;
    let ctl = ControllerProcess::start(&ns, "karpenter")?;
    let name = "workspace-phi-3-mini";
    let label = unique_name("karp");
    ns.apply(&kaito_e2e::seed_workspace(PHI_3, name, &label)?)?;
    let mut nodes = Vec::new();
    let claims = wait_for("a NodeClaim", WAIT, POLL, || {
        let c = karpenter_pass(cluster, ns.name(), &mut nodes)?;
        Ok((!c.is_empty()).then_some(c))
    })
    .with_context(|| ctl.log_tail())?;
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    assert_eq!(
        claim["metadata"]["labels"]["karpenter.sh/nodepool"],
        "kaito"
    );
    assert_eq!(claim["metadata"]["labels"]["kaito.sh/workspace"], name);
    assert_eq!(claim["metadata"]["labels"]["apps"], label.as_str());
    assert_eq!(
        claim["spec"]["taints"][0],
        serde_json::json!({"key": "sku", "value": "gpu", "effect": "NoSchedule"})
    );
    assert!(
        claim["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .is_some_and(|s| s.ends_with("Gi"))
    );
    wait_columns_true(&ns, name, INFERENCE_READY, &ctl)?;
    let pod = ns.get_json(["pod", &format!("{name}-0")])?;
    assert_eq!(pod["spec"]["nodeName"], claim["metadata"]["name"]);

    ns.kubectl_ok(["delete", "workspace", name, "--wait=false"])?;
    wait_for(
        "the claims removed and the finalizer released",
        WAIT,
        POLL,
        || {
            let claims = karpenter_pass(cluster, ns.name(), &mut nodes)?;
            let gone = !ns.kubectl(["get", "workspace", name])?.success();
            Ok((claims.is_empty() && gone).then_some(()))
        },
    )
    .with_context(|| ctl.log_tail())?;
    if !nodes.is_empty() {
        bail!(
            "nodes left behind: {:?}",
            nodes
                .iter()
                .map(|n| n.name().to_string())
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}
