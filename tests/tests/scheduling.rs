//! The real kube-scheduler is in the loop: GPU requests, taints/tolerations and node selection
//! on simulated (kwok) GPU nodes, and the controller-manager turns Deployments and Jobs into pods.

use kaito_e2e::{Cluster, GpuNode, TestNamespace, unique_name, wait_for};
use serde_json::Value;
use std::time::Duration;

/// A Deployment of one pod requesting `gpus` GPUs, pinned (by label) to the test's own nodes.
fn gpu_deployment(name: &str, group: &str, gpus: u32, tolerate: bool) -> String {
    let toleration = if tolerate {
        "      tolerations:\n      - key: sku\n        operator: Equal\n        value: gpu\n        effect: NoSchedule\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      nodeSelector:
        kaito-e2e/group: {group}
{toleration}      containers:
      - name: main
        image: registry.invalid/inference:latest
        resources:
          requests: {{cpu: "1", memory: 1Gi, nvidia.com/gpu: "{gpus}"}}
          limits: {{nvidia.com/gpu: "{gpus}"}}
        readinessProbe:
          httpGet: {{path: /health, port: 5000}}
"#
    )
}

/// The namespace's pods matching a label selector.
fn pods(ns: &TestNamespace<'_>, selector: &str) -> anyhow::Result<Vec<Value>> {
    let list = ns.get_json(["pods", "-l", selector])?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Waits until the app's single pod is unschedulable and returns the scheduler's message.
fn unschedulable_message(ns: &TestNamespace<'_>, app: &str) -> anyhow::Result<String> {
    let message = wait_for(
        "the pod to be marked unschedulable",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || {
            let pods = pods(ns, &format!("app={app}"))?;
            Ok(pods.first().and_then(|p| {
                let c = condition(p, "PodScheduled")?;
                (c["status"] == "False" && c["reason"] == "Unschedulable")
                    .then(|| c["message"].as_str().unwrap_or_default().to_owned())
            }))
        },
    )?;
    // The scheduler also records a FailedScheduling event.
    let events = wait_for(
        "a FailedScheduling event",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let ev = ns.get_json(["events", "--field-selector", "reason=FailedScheduling"])?;
            let items = ev["items"].as_array().cloned().unwrap_or_default();
            Ok((!items.is_empty()).then_some(items))
        },
    )?;
    assert!(
        events
            .iter()
            .any(|e| e["source"]["component"] == "default-scheduler"
                || e["reportingComponent"] == "default-scheduler"),
        "FailedScheduling events not from the scheduler: {events:?}"
    );
    // It stays Pending: still no node a few seconds later.
    std::thread::sleep(Duration::from_secs(3));
    for p in pods(ns, &format!("app={app}"))? {
        assert_eq!(p["status"]["phase"], "Pending", "{p:#}");
        assert!(p["spec"]["nodeName"].is_null(), "pod was bound: {p:#}");
    }
    Ok(message)
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn gpu_deployment_with_toleration_is_scheduled_onto_gpu_node_and_ready() -> anyhow::Result<()> {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("sched-tolerated")?;
    let group = ns.name().to_owned();
    let node = cluster.add_gpu_node(
        &GpuNode::new(unique_name("gpu-nc6"))
            .sku("Standard_NC6s_v3")
            .label("kaito-e2e/group", &group),
    )?;

    // The node looks like an AKS GPU node.
    let n = cluster.get_json(["node", node.name()])?;
    let labels = &n["metadata"]["labels"];
    assert_eq!(
        labels["node.kubernetes.io/instance-type"],
        "Standard_NC6s_v3"
    );
    assert_eq!(labels["nvidia.com/gpu.count"], "1");
    assert_eq!(labels["nvidia.com/gpu.product"], "Tesla-V100-PCIE-16GB");
    assert_eq!(labels["nvidia.com/gpu.memory"], "16384");
    assert_eq!(labels["nvidia.com/cuda.compute.major"], "7");
    assert_eq!(labels["nvidia.com/cuda.compute.minor"], "0");
    assert_eq!(n["status"]["allocatable"]["nvidia.com/gpu"], "1");
    assert_eq!(n["status"]["capacity"]["nvidia.com/gpu"], "1");
    let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t["key"] == "sku" && t["value"] == "gpu" && t["effect"] == "NoSchedule"),
        "{taints:?}"
    );

    ns.apply(&gpu_deployment("llm", &group, 1, true))?;
    ns.kubectl_ok(["rollout", "status", "deployment/llm", "--timeout=90s"])?;
    let running = pods(&ns, "app=llm")?;
    assert_eq!(running.len(), 1, "{running:?}");
    let pod = &running[0];
    assert_eq!(
        pod["spec"]["nodeName"],
        node.name(),
        "scheduled elsewhere: {pod:#}"
    );
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(
        condition(pod, "Ready").map(|c| c["status"].clone()),
        Some("True".into()),
        "{pod:#}"
    );
    assert!(
        pod["status"]["podIP"].is_string(),
        "kwok assigns a pod IP: {pod:#}"
    );

    // The node's single GPU is taken: a second GPU pod does not fit any more.
    ns.kubectl_ok(["scale", "deployment/llm", "--replicas=2"])?;
    let message = wait_for(
        "the second replica to be unschedulable",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || {
            Ok(pods(&ns, "app=llm")?.into_iter().find_map(|p| {
                let c = condition(&p, "PodScheduled")?;
                (c["reason"] == "Unschedulable")
                    .then(|| c["message"].as_str().unwrap_or_default().to_owned())
            }))
        },
    )?;
    assert!(message.contains("Insufficient nvidia.com/gpu"), "{message}");
    Ok(())
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn gpu_deployment_without_toleration_stays_pending_on_the_taint() -> anyhow::Result<()> {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("sched-untolerated")?;
    let group = ns.name().to_owned();
    let node = cluster
        .add_gpu_node(&GpuNode::new(unique_name("gpu-nc6")).label("kaito-e2e/group", &group))?;

    ns.apply(&gpu_deployment("llm", &group, 1, false))?;
    let message = unschedulable_message(&ns, "llm")?;
    // Kubernetes 1.34 says "N node(s) had untolerated taint(s)" without naming the taint.
    assert!(
        message.contains("untolerated taint"),
        "the scheduler should blame the node's taint: {message}"
    );

    // The taint was the only obstacle: with the toleration the same pod lands on the node.
    ns.kubectl_ok([
        "patch",
        "deployment/llm",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/spec/tolerations","value":[{"key":"sku","operator":"Equal","value":"gpu","effect":"NoSchedule"}]}]"#,
    ])?;
    ns.kubectl_ok(["rollout", "status", "deployment/llm", "--timeout=90s"])?;
    let running: Vec<Value> = pods(&ns, "app=llm")?
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    assert!(
        running.iter().any(|p| p["spec"]["nodeName"] == node.name()),
        "{running:?}"
    );
    Ok(())
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn gpu_request_larger_than_the_node_stays_pending() -> anyhow::Result<()> {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("sched-too-big")?;
    let group = ns.name().to_owned();
    let _node = cluster.add_gpu_node(
        &GpuNode::new(unique_name("gpu-nc12"))
            .sku("Standard_NC12s_v3")
            .label("kaito-e2e/group", &group),
    )?;

    ns.apply(&gpu_deployment("big", &group, 4, true))?;
    let message = unschedulable_message(&ns, "big")?;
    assert!(message.contains("Insufficient nvidia.com/gpu"), "{message}");

    // Two GPUs fit the NC12s_v3's two.
    ns.apply(&gpu_deployment("big", &group, 2, true))?;
    ns.kubectl_ok(["rollout", "status", "deployment/big", "--timeout=90s"])?;
    Ok(())
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn job_on_a_simulated_node_completes_and_is_garbage_collected() -> anyhow::Result<()> {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("job")?;
    let group = ns.name().to_owned();
    let _node = cluster
        .add_gpu_node(&GpuNode::new(unique_name("gpu-job")).label("kaito-e2e/group", &group))?;
    ns.apply(&format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: tune
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      nodeSelector: {{kaito-e2e/group: {group}}}
      tolerations: [{{key: sku, operator: Exists, effect: NoSchedule}}]
      containers:
      - name: main
        image: registry.invalid/tuning:latest
        resources: {{limits: {{nvidia.com/gpu: "1"}}}}
"#
    ))?;
    ns.kubectl_ok([
        "wait",
        "--for=condition=Complete",
        "job/tune",
        "--timeout=90s",
    ])?;
    let job = ns.get_json(["job", "tune"])?;
    assert_eq!(job["status"]["succeeded"], 1, "{job:#}");

    // Deleting the Job with background propagation: the garbage collector removes its pod.
    ns.kubectl_ok(["delete", "job", "tune", "--cascade=background"])?;
    wait_for(
        "the Job's pod to be garbage-collected",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || Ok(pods(&ns, "job-name=tune")?.is_empty().then_some(())),
    )
    .or_else(|_| {
        let left = ns.kubectl_ok(["get", "pods", "-o", "wide"])?;
        anyhow::bail!("pods left after deleting the Job:\n{left}")
    })?;
    Ok(())
}
