//! The real-node tier: the system as a user deploys it. The repository's images (built by
//! `scripts/images.sh` from this checkout's binaries, pushed to the cluster's registry) are
//! installed with `helm install` of `charts/kaito` (byo provisioner) into the local cluster's
//! real node (kubelet + containerd, `cluster.sh up --real-node`); the webhook and controller
//! run as the chart's Deployments with the chart's arguments, environment and ServiceAccounts
//! and talk to the API server through the `kubernetes` Service; the serving pods download their
//! weights from a local Hugging Face hub on the node's bridge, load and answer.
//!
//! `tests/e2e.sh` runs this file against a cluster of its own with a real node, after the
//! simulated-node tier (nothing else runs in that cluster, so the chart's cluster-wide webhook
//! configurations and controller disturb no other test).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use kaito_e2e::hub::{self, Hub, HubRepo};
use kaito_e2e::{
    Cluster, CmdOutput, TestNamespace, cluster_script, repo_root, run_command, wait_for,
};
use serde_json::Value;

const RELEASE: &str = "kaito";
const RELEASE_NS: &str = "kaito-system";
/// The repositories and revisions the catalog pins for the two Phi-3 presets of the seeds.
const PHI3_REPOS: [(&str, &str); 2] = [
    (
        "microsoft/Phi-3-mini-4k-instruct",
        "0a67737cc96d2554230f90338b163bc6380a2a85",
    ),
    (
        "microsoft/Phi-3-mini-128k-instruct",
        "072cb7562cb8c4adf682a8e186aaafa49469eb5d",
    ),
];
/// The tuning seed's training data, served by the local hub (any file does: the stand-in
/// trainer does not read it).
const DATA_REPO: &str = "kaito-e2e/dolly-sample";
const DATA_FILE: &str = "train-00000-of-00001.parquet";
/// The stand-in trainer: the runtime image writes a PEFT LoRA adapter for the generated tiny
/// Phi-3 (same seed, same shapes as the model the hub serves) where the upstream trainer would
/// (the upstream trainer needs a GPU and its registry).
const STAND_IN_TRAINER: &str =
    "kaito-runtime gen-model --arch phi3 --out /tmp/base-model --adapter-out /mnt/results";

/// SmolLM2 on a CPU-only size (upstream's open request): served without a GPU.
const CPU_WORKSPACE: &str = "apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-smollm2-cpu
resource:
  instanceType: Standard_D4s_v3
  labelSelector:
    matchLabels:
      apps: smollm2-cpu
inference:
  preset:
    name: smollm2-135m-instruct
";

/// The cluster's real node: its name, IP (the bridge's, where the hub listens) and registry.
struct RealNode {
    cluster: &'static Cluster,
    name: String,
    ip: String,
    registry: String,
}

fn script(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("bash");
    cmd.arg(cluster_script())
        .args(args)
        .env("KAITO_CLUSTER_DIR", cluster.state_dir())
        .env("KAITO_CLUSTER_BIN", cluster.bin_dir());
    let out = run_command(cmd, None, Duration::from_secs(120))?
        .ok()
        .with_context(|| format!("cluster.sh {}", args.join(" ")))?;
    Ok(out.trim().to_owned())
}

fn real_node() -> Result<RealNode> {
    let cluster = Cluster::shared();
    let registry = script(cluster, &["registry"]).context(
        "this tier needs the cluster's real node: tests/e2e.sh starts one \
         (KAITO_CLUSTER_REAL_NODE=1 tests/cluster/cluster.sh up)",
    )?;
    let name = script(cluster, &["node-name"])?;
    let ip = registry
        .split_once(':')
        .map(|(h, _)| h.to_owned())
        .context("registry host:port")?;
    Ok(RealNode {
        cluster,
        name,
        ip,
        registry,
    })
}

/// The images `scripts/images.sh` built and pushed: name → reference. Built once per run.
fn images(node: &RealNode) -> Result<&'static [(String, String)]> {
    static IMAGES: OnceLock<std::result::Result<Vec<(String, String)>, String>> = OnceLock::new();
    let built = IMAGES.get_or_init(|| {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/images.sh"))
            .arg(&node.registry)
            .arg("e2e");
        let out = run_command(cmd, None, Duration::from_secs(900)).map_err(|e| format!("{e:#}"))?;
        eprintln!("{}", out.stderr.trim_end());
        let stdout = out.ok().map_err(|e| format!("scripts/images.sh: {e:#}"))?;
        Ok(stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    });
    built.as_deref().map_err(|e| anyhow::anyhow!("{e}"))
}

fn image<'a>(images: &'a [(String, String)], name: &str) -> Result<&'a str> {
    images
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, r)| r.as_str())
        .with_context(|| format!("scripts/images.sh built no {name}"))
}

/// `helm install` of the chart; `helm uninstall` on drop.
struct Release<'a> {
    cluster: &'a Cluster,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = run_command(
            helm(
                self.cluster,
                &["uninstall", RELEASE, "-n", RELEASE_NS, "--wait"],
            ),
            None,
            Duration::from_secs(120),
        );
    }
}

fn helm(cluster: &Cluster, args: &[&str]) -> Command {
    let mut cmd = Command::new(cluster.bin_dir().join("helm"));
    cmd.args(args).env("KUBECONFIG", cluster.kubeconfig());
    cmd
}

fn helm_install<'a>(node: &'a RealNode, hub_endpoint: &str) -> Result<Release<'a>> {
    let images = images(node)?;
    let (webhook, controller) = (
        image(images, "kaito-webhook")?,
        image(images, "kaito-controller")?,
    );
    let (runtime, adapter) = (
        image(images, "kaito-runtime")?,
        image(images, "kaito-adapter")?,
    );
    let split = |r: &'a str| r.rsplit_once(':').expect("a tagged reference");
    let sets = [
        "provisioner=byo".to_owned(),
        "webhook.replicas=1".to_owned(),
        "controller.replicas=1".to_owned(),
        format!("webhook.image.repository={}", split(webhook).0),
        format!("webhook.image.tag={}", split(webhook).1),
        format!("controller.image.repository={}", split(controller).0),
        format!("controller.image.tag={}", split(controller).1),
        format!("workloads.runtime.image={runtime}"),
        format!("workloads.adapterPullerImage={adapter}"),
        format!("workloads.publisherImage={adapter}"),
        format!("workloads.dataDownloaderImage={adapter}"),
        format!("workloads.huggingfaceEndpoint={hub_endpoint}"),
        // Tuning: the stand-in trainer, the cluster's plain-http registry, the data server on
        // the node bridge (a private address: allowed by the test-only setting).
        format!("workloads.trainerImage={runtime}"),
        format!("workloads.trainerCommand={STAND_IN_TRAINER}"),
        format!("workloads.insecureRegistries={{{}}}", node.registry),
        format!("testOnly.allowDataAddress={}", node.ip),
    ];
    let chart = repo_root().join("charts/kaito");
    let mut args = vec![
        "install".to_owned(),
        RELEASE.to_owned(),
        chart.display().to_string(),
        "-n".to_owned(),
        RELEASE_NS.to_owned(),
        "--create-namespace".to_owned(),
        "--wait".to_owned(),
        "--timeout".to_owned(),
        "5m".to_owned(),
    ];
    for s in &sets {
        args.push("--set".to_owned());
        args.push(s.clone());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = run_command(helm(node.cluster, &refs), None, Duration::from_secs(360))?;
    let release = Release {
        cluster: node.cluster,
    };
    if !out.success() {
        let pods = node
            .cluster
            .kubectl(["get", "pods", "-n", RELEASE_NS, "-o", "wide"])
            .map(|o| o.stdout)
            .unwrap_or_default();
        bail!(
            "helm install failed:\n{}\n{}\npods:\n{pods}",
            out.stdout,
            out.stderr
        );
    }
    eprintln!(
        "[real-node] helm install --wait: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(release)
}

/// The local hub on the node's bridge, serving the real SmolLM2 GGUF and a generated tiny
/// Phi-3 model under the repositories and revisions the catalog pins, and the tuning data.
fn start_hub(node: &RealNode, scratch: &Path) -> Result<Hub> {
    let gguf = hub::smollm2_gguf()?.context(
        "the real model is needed here: scripts/fetch-model.sh (the test command runs it)",
    )?;
    let phi3 = scratch.join("phi3");
    let mut cmd = Command::new(kaito_e2e::workspace_bin(
        "kaito-runtime",
        "KAITO_RUNTIME_BIN",
    )?);
    cmd.args(["gen-model", "--arch", "phi3", "--out"])
        .arg(&phi3);
    run_command(cmd, None, Duration::from_secs(120))?.ok()?;
    let data = scratch.join(DATA_FILE);
    std::fs::write(&data, b"PAR1 stand-in training rows")?;
    let mut repos = vec![
        hub::smollm2_repo(&gguf)?,
        HubRepo::new(DATA_REPO, &[(DATA_FILE, &data)], None)?,
    ];
    for (repo, revision) in PHI3_REPOS {
        repos.push(HubRepo::from_dir(repo, &phi3, None)?.with_commit(revision));
    }
    Hub::start_on(&format!("{}:0", node.ip), repos)
}

/// An example file with its placeholders (and only those) replaced.
fn example_with(file: &str, replace: &[(&str, &str)]) -> Result<String> {
    let mut text = std::fs::read_to_string(repo_root().join(file))?;
    for (from, to) in replace {
        ensure!(text.contains(from), "{file} no longer contains {from:?}");
        text = text.replace(from, to);
    }
    Ok(text)
}

fn plugin(ns: &TestNamespace<'_>, args: &[&str]) -> Result<CmdOutput> {
    let mut cmd = Command::new(kaito_e2e::workspace_bin(
        "kubectl-kaito",
        "KUBECTL_KAITO_BIN",
    )?);
    cmd.arg("--kubeconfig")
        .arg(ns.cluster().kubeconfig())
        .args(["-n", ns.name()])
        .args(args);
    run_command(cmd, None, Duration::from_secs(300))
}

/// The condition `type_` of the workspace `ws` as (status, reason, message).
fn condition(ws: &Value, type_: &str) -> Option<(String, String, String)> {
    let c = kaito_e2e::condition(ws["status"]["conditions"].as_array()?, type_)?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Some((s("status"), s("reason"), s("message")))
}

/// The real node as the seeds' GPU size (`Standard_NC6s_v3`, one GPU advertised), labelled for
/// one seed's `labelSelector`.
fn advertise_seed_size(cluster: &Cluster, label: &str) -> Result<String> {
    script(
        cluster,
        &[
            "advertise-gpus",
            "--sku",
            "Standard_NC6s_v3",
            "--label",
            label,
        ],
    )
}

/// `kubectl kaito chat` (greedy) of the real model in `ws`, which must answer Paris; the reply.
fn ask_the_capital_of_france(ns: &TestNamespace<'_>, ws: &str) -> Result<String> {
    let out = plugin(
        ns,
        &[
            "chat",
            ws,
            "--temperature",
            "0",
            "--max-tokens",
            "24",
            "--prompt",
            "What is the capital of France? Answer in one word.",
        ],
    )?;
    ensure!(
        out.success() && out.stdout.contains("Paris"),
        "{ws}: kubectl kaito chat did not answer Paris: {:?} {}",
        out.stdout,
        out.stderr
    );
    Ok(out.stdout)
}

/// Applies an example file unchanged, waits until the Workspace succeeds, and returns the
/// serving pod.
fn serve_example(ns: &TestNamespace<'_>, node: &RealNode, file: &str, name: &str) -> Result<Value> {
    let path: PathBuf = repo_root().join(file);
    ns.kubectl_ok(["apply", "-f", &path.display().to_string()])?;
    serve(ns, node, file, name)
}

/// Waits until the Workspace `name` succeeds, and returns its serving pod.
fn serve(ns: &TestNamespace<'_>, node: &RealNode, file: &str, name: &str) -> Result<Value> {
    let started = Instant::now();
    let ws = wait_for(
        &format!("Workspace {name} to succeed"),
        Duration::from_secs(600),
        Duration::from_secs(1),
        || {
            let ws = ns.get_json(["workspace", name])?;
            if let Some((status, reason, message)) = condition(&ws, "InferenceReady")
                && status == "False"
                && [
                    "ModelDownloadFailed",
                    "ModelNotFound",
                    "ModelLoadFailed",
                    "ImagePullError",
                ]
                .contains(&reason.as_str())
            {
                bail!("{name}: InferenceReady=False {reason}: {message}");
            }
            Ok(
                matches!(condition(&ws, "WorkspaceSucceeded"), Some((s, _, _)) if s == "True")
                    .then_some(ws),
            )
        },
    )
    .with_context(|| {
        let pods = ns
            .kubectl(["get", "pods", "-o", "wide"])
            .map(|o| o.stdout)
            .unwrap_or_default();
        let logs = ns
            .kubectl(["logs", &format!("{name}-0"), "--tail", "30"])
            .map(|o| o.stdout + &o.stderr)
            .unwrap_or_default();
        format!("pods:\n{pods}\nlogs:\n{logs}")
    })?;
    eprintln!(
        "[real-node] {file}: Workspace succeeded {:.1}s after apply",
        started.elapsed().as_secs_f64()
    );
    for c in ["ResourceReady", "InferenceReady"] {
        ensure!(
            matches!(condition(&ws, c), Some((s, _, _)) if s == "True"),
            "{c} is not True: {:?}",
            condition(&ws, c)
        );
    }
    let pod = ns.get_json(["pod", &format!("{name}-0")])?;
    ensure!(
        pod["spec"]["nodeName"] == node.name.as_str(),
        "the serving pod runs on {} (expected the real node {})",
        pod["spec"]["nodeName"],
        node.name
    );
    ensure!(
        pod["status"]["containerStatuses"][0]["ready"] == true,
        "the serving container is not Ready: {}",
        pod["status"]["containerStatuses"]
    );
    Ok(pod)
}

/// The seed guides' command lines, run by bash as a user types them: `kubectl` on PATH, a
/// kubeconfig whose current namespace is the test's.
struct Guide {
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    path: String,
}

impl Guide {
    fn new(ns: &TestNamespace<'_>) -> Result<Guide> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::copy(ns.cluster().kubeconfig(), &kubeconfig)?;
        let path = format!(
            "{}:{}",
            ns.cluster().bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let guide = Guide {
            _dir: dir,
            kubeconfig,
            path,
        };
        guide.run(&format!(
            "kubectl config set-context --current --namespace={}",
            ns.name()
        ))?;
        Ok(guide)
    }

    /// Runs `lines` with bash (`-e`) in a pseudo-terminal: whether they succeeded, and the output.
    fn exec(&self, lines: &str) -> Result<(bool, String)> {
        // In a terminal, as the user types them (`kubectl run -it` attaches to one): script(1)
        // gives bash a pseudo-terminal.
        let file = self._dir.path().join("lines.sh");
        std::fs::write(&file, lines)?;
        let mut cmd = Command::new("script");
        cmd.args(["-qefc", &format!("bash -e {}", file.display()), "/dev/null"])
            .current_dir(repo_root())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", &self.path);
        let out = run_command(cmd, None, Duration::from_secs(300))?;
        let all = format!("{}{}", out.stdout, out.stderr).replace('\r', "");
        eprintln!(
            "[real-node] $ {}\n{}",
            lines.replace('\n', "\n$ "),
            all.trim_end()
        );
        Ok((out.success(), all))
    }

    /// Runs `lines`, which must succeed; returns their output.
    fn run(&self, lines: &str) -> Result<String> {
        let (ok, all) = self.exec(lines)?;
        ensure!(ok, "the guide's lines failed:\n{lines}\n---\n{all}");
        Ok(all)
    }

    /// Runs `lines` that must fail (a guide step that cannot work); returns their output.
    fn run_expecting_failure(&self, lines: &str) -> Result<String> {
        let (ok, all) = self.exec(lines)?;
        ensure!(!ok, "expected to fail:\n{lines}\n---\n{all}");
        Ok(all)
    }

    /// The guides' test of a served model: the Service, its ClusterIP, and `/chat` from a
    /// curl pod through that ClusterIP (kube-proxy's data path, not a port-forward).
    fn chat_through_the_cluster_ip(&self, ws: &str) -> Result<()> {
        let svc = self.run(&format!("kubectl get svc {ws}"))?;
        ensure!(svc.contains("ClusterIP"), "kubectl get svc {ws}: {svc}");
        // `kubectl run -it` attaches once the container runs; curl may finish before that (kubectl
        // then prints "If you don't see a command prompt" and no reply), as for any user: the
        // guide's line is typed again, up to five times.
        let line = format!(
            r#"export CLUSTERIP=$(kubectl get svc {ws} -o jsonpath="{{.spec.clusterIPs[0]}}")
kubectl run -it --rm --restart=Never curl --image=curlimages/curl -- curl -X POST http://$CLUSTERIP/chat -H "accept: application/json" -H "Content-Type: application/json" -d "{{\"prompt\":\"YOUR QUESTION HERE\"}}""#
        );
        let mut out = String::new();
        for _ in 0..5 {
            out = self.run(&line)?;
            if out.contains("{\"Result\"") {
                break;
            }
        }
        let Some(start) = out.find("{\"Result\"") else {
            // Diagnose: the same request from a pod that is not attached to.
            let (_, diag) = self.exec(&format!(
                r#"export CLUSTERIP=$(kubectl get svc {ws} -o jsonpath="{{.spec.clusterIPs[0]}}")
kubectl run --restart=Never curl-diag --image=curlimages/curl -- curl -sS -v -m 60 -X POST http://$CLUSTERIP/chat -H "Content-Type: application/json" -d "{{\"prompt\":\"YOUR QUESTION HERE\"}}"
kubectl wait --for=jsonpath='{{.status.phase}}'=Succeeded pod/curl-diag --timeout=90s || true
kubectl logs curl-diag; kubectl get pod curl-diag -o wide; kubectl delete pod curl-diag --wait=false"#
            ))?;
            bail!("no JSON reply from /chat through the ClusterIP:\n{out}\n--- diagnosis:\n{diag}");
        };
        let reply: Value = serde_json::Deserializer::from_str(&out[start..])
            .into_iter::<Value>()
            .next()
            .context("/chat: no JSON value")?
            .with_context(|| format!("/chat answered no JSON: {}", &out[start..]))?;
        ensure!(
            reply["Result"].as_str().is_some_and(|r| !r.is_empty()),
            "/chat through the ClusterIP: {reply}"
        );
        Ok(())
    }
}

/// Deletes the Workspace and checks that what the controller made is gone.
fn delete_workspace(ns: &TestNamespace<'_>, name: &str) -> Result<()> {
    ns.kubectl_ok(["delete", "workspace", name, "--wait", "--timeout=120s"])?;
    wait_for(
        &format!("{name}'s StatefulSet, Services and pods to go"),
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let sel = format!("kaito.sh/workspace={name}");
            let left =
                ns.kubectl_ok(["get", "statefulset,service,pod", "-l", &sel, "-o", "name"])?;
            let direct = ns.kubectl(["get", "statefulset", name, "-o", "name"])?;
            Ok((left.trim().is_empty() && !direct.success()).then_some(()))
        },
    )
}

#[test]
#[ignore = "real-node tier: needs the cluster's real node and root; run tests/e2e.sh"]
fn real_node_helm_install_serves_the_seed_examples_in_real_containers() -> Result<()> {
    let node = real_node()?;
    let scratch = tempfile::tempdir()?;
    let hub = start_hub(&node, scratch.path())?;
    let endpoint = hub.endpoint();
    let _release = helm_install(&node, &endpoint)?;
    let cluster = node.cluster;

    // The chart's webhook and controller run as its Deployments on the real node, from the
    // local images; the webhook made its certificate and filled in both caBundles.
    let pods = cluster.get_json(["pods", "-n", RELEASE_NS])?;
    let pods = pods["items"].as_array().context("pods")?;
    for component in ["webhook", "controller"] {
        let pod = pods
            .iter()
            .find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{RELEASE}-{component}")))
            })
            .with_context(|| format!("no {component} pod"))?;
        ensure!(
            pod["spec"]["nodeName"] == node.name.as_str(),
            "{component} not on the real node"
        );
        let img = pod["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            img.starts_with(&node.registry),
            "{component} runs {img}, not the local build"
        );
    }
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        let cfg = cluster.get_json([kind, &format!("{RELEASE}-webhook")])?;
        let ca = cfg["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            !ca.is_empty(),
            "{kind}: the webhook did not fill in the caBundle"
        );
    }

    // The real node as the seed's GPU size: labels and one advertised GPU.
    advertise_seed_size(cluster, "apps=smollm2")?;
    let ns = cluster.namespace("real")?;

    // The real trained model, from an example file applied unchanged.
    let started = Instant::now();
    serve_example(
        &ns,
        &node,
        "examples/inference/kaito_workspace_smollm2.yaml",
        "workspace-smollm2",
    )?;
    let answer = ask_the_capital_of_france(&ns, "workspace-smollm2")?;
    eprintln!(
        "[real-node] kubectl apply -f examples/inference/kaito_workspace_smollm2.yaml → chat answer {:?}: {:.1}s",
        answer.trim(),
        started.elapsed().as_secs_f64()
    );
    let logs = plugin(&ns, &["logs", "workspace-smollm2"])?;
    ensure!(logs.success(), "kubectl kaito logs failed: {}", logs.stderr);
    for line in ["download: complete", "model loaded; ready"] {
        ensure!(
            logs.stdout.contains(line),
            "the runtime's log lacks {line:?}:\n{}",
            logs.stdout
        );
    }
    ensure!(
        !logs.stdout.contains('\u{1b}'),
        "the pod's log has terminal colour codes"
    );
    delete_workspace(&ns, "workspace-smollm2")?;

    // CPU-only serving: the same model on a CPU-only size asks for no GPU at all.
    cluster.kubectl_ok([
        "label",
        "node",
        &node.name,
        "--overwrite",
        "apps=smollm2-cpu",
        "node.kubernetes.io/instance-type=Standard_D4s_v3",
    ])?;
    ns.apply(CPU_WORKSPACE)?;
    let pod = serve(&ns, &node, "a CPU-only Workspace", "workspace-smollm2-cpu")?;
    let container = &pod["spec"]["containers"][0];
    ensure!(
        container["resources"]["requests"]["nvidia.com/gpu"].is_null()
            && container["resources"]["limits"]["nvidia.com/gpu"].is_null(),
        "a CPU-only size must not request a GPU: {}",
        container["resources"]
    );
    ensure!(
        container["args"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "--cpu")),
        "the runtime is not told to use the CPU: {}",
        container["args"]
    );
    ask_the_capital_of_france(&ns, "workspace-smollm2-cpu")?;
    delete_workspace(&ns, "workspace-smollm2-cpu")?;

    // The Phi-3 seed, unchanged: a generated tiny Phi-3 stands in for the weights (the hub
    // cannot be reached); the runtime serves it on the CPU.
    advertise_seed_size(cluster, "apps=phi-3")?;
    // The guide's own command lines, typed as written (the namespace is the kubeconfig's).
    let guide = Guide::new(&ns)?;
    guide.run("kubectl apply -f examples/inference/kaito_workspace_phi_3.yaml")?;
    serve(
        &ns,
        &node,
        "examples/inference/kaito_workspace_phi_3.yaml",
        "workspace-phi-3-mini",
    )?;
    guide.chat_through_the_cluster_ip("workspace-phi-3-mini")?;
    delete_workspace(&ns, "workspace-phi-3-mini")?;

    // The tuning seed with its placeholders filled in: the data from the local server, the
    // adapter pushed to the cluster's registry with a push secret of our own.
    let adapter_image = format!("{}/adapters/phi-3-tuned:0.0.1", node.registry);
    let data_url = format!("{endpoint}/{DATA_REPO}/resolve/main/{DATA_FILE}");
    let tuning = example_with(
        "examples/fine-tuning/kaito_workspace_tuning_phi_3.yaml",
        &[
            (
                "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/train-00000-of-00001-54e3756291ca09c6.parquet?download=true",
                &data_url,
            ),
            (
                "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1",
                &adapter_image,
            ),
            ("ACR_REGISTRY_SECRET_HERE", "adapter-push"),
        ],
    )?;
    advertise_seed_size(cluster, "app=tuning-phi-3")?;
    // The push secret the seed names (the registry takes any credentials: it has no auth).
    ns.kubectl_ok([
        "create",
        "secret",
        "docker-registry",
        "adapter-push",
        &format!("--docker-server={}", node.registry),
        "--docker-username=kaito",
        "--docker-password=unused",
    ])?;
    ns.apply(&tuning)?;
    let started = Instant::now();
    wait_for(
        "the tuning Workspace to succeed (fetch, train, publish)",
        Duration::from_secs(600),
        Duration::from_secs(1),
        || {
            let ws = ns.get_json(["workspace", "workspace-tuning-phi-3"])?;
            if let Some((status, reason, message)) = condition(&ws, "WorkspaceSucceeded")
                && status == "False"
                && reason.contains("Failed")
            {
                bail!("tuning failed: {reason}: {message}");
            }
            Ok(
                matches!(condition(&ws, "WorkspaceSucceeded"), Some((s, _, _)) if s == "True")
                    .then_some(()),
            )
        },
    )
    .with_context(|| {
        let pods = ns
            .kubectl(["get", "pods", "-o", "wide"])
            .map(|o| o.stdout)
            .unwrap_or_default();
        let logs = ns
            .kubectl([
                "logs",
                "job/workspace-tuning-phi-3",
                "--all-containers",
                "--tail",
                "20",
            ])
            .map(|o| o.stdout + &o.stderr)
            .unwrap_or_default();
        format!("pods:\n{pods}\nlogs:\n{logs}")
    })?;
    eprintln!(
        "[real-node] tuning seed: fetched, trained (stand-in), published {adapter_image} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // The guide then looks for a Service of the tuning workspace: there is none (a tuning
    // workspace serves nothing), and `kubectl kaito status` says what to do instead.
    let svc = guide.run_expecting_failure("kubectl get svc workspace-tuning-phi-3")?;
    ensure!(svc.contains("NotFound"), "{svc}");
    let status = plugin(&ns, &["status", "workspace-tuning-phi-3"])?;
    ensure!(
        status.success()
            && status
                .stdout
                .contains(&format!("published to {adapter_image}"))
            && status.stdout.contains("no Service workspace-tuning-phi-3"),
        "kubectl kaito status of the finished tuning workspace:\n{}{}",
        status.stdout,
        status.stderr
    );
    eprintln!(
        "[real-node] $ kubectl kaito status workspace-tuning-phi-3\n{}",
        status.stdout.trim_end()
    );
    let job_logs = ns.kubectl_ok(["logs", "job/workspace-tuning-phi-3", "--all-containers"])?;
    ensure!(
        job_logs.contains(DATA_FILE),
        "the data downloader did not fetch {DATA_FILE}:\n{job_logs}"
    );

    // The adapter seed with its placeholder filled in: the puller takes the adapter the tuning
    // Job published, the runtime serves it with its strength.
    let adapter = example_with(
        "examples/inference/kaito_workspace_phi_3_with_adapters.yaml",
        &[(
            "ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1",
            &adapter_image,
        )],
    )?;
    advertise_seed_size(cluster, "apps=phi-3-adapter")?;
    ns.apply(&adapter)?;
    let pod = serve(
        &ns,
        &node,
        "examples/inference/kaito_workspace_phi_3_with_adapters.yaml",
        "workspace-phi-3-mini-adapter",
    )?;
    let puller = pod["status"]["initContainerStatuses"]
        .as_array()
        .and_then(|s| s.iter().find(|c| c["name"] == "adapter-phi-3-adapter"))
        .context("no adapter puller init container")?;
    ensure!(
        puller["state"]["terminated"]["exitCode"] == 0,
        "the adapter puller did not succeed: {puller}"
    );
    let env = &pod["spec"]["containers"][0]["env"];
    ensure!(
        env.as_array().is_some_and(|e| e
            .iter()
            .any(|v| v["name"] == "phi-3-adapter" && v["value"] == "1.0")),
        "the adapter's strength is not in the serving container's env: {env}"
    );
    let logs = plugin(&ns, &["logs", "workspace-phi-3-mini-adapter"])?;
    ensure!(
        logs.stdout.contains("adapters=1"),
        "the runtime did not load the adapter:\n{}",
        logs.stdout
    );
    guide.chat_through_the_cluster_ip("workspace-phi-3-mini-adapter")?;
    delete_workspace(&ns, "workspace-phi-3-mini-adapter")?;
    ns.kubectl_ok([
        "delete",
        "workspace",
        "workspace-tuning-phi-3",
        "--wait",
        "--timeout=120s",
    ])?;
    drop(hub);
    Ok(())
}
