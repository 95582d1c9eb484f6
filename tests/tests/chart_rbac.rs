//! The chart's RBAC is sufficient and minimal, proven with the real binaries:
//!
//! - the chart's ServiceAccounts, Roles, ClusterRoles and bindings (`helm template
//!   --show-only`, release namespace = the test's namespace) are applied;
//! - `kaito-webhook` runs in its Secret certificate mode with a token of the chart's webhook
//!   ServiceAccount: it creates its certificate Secret and writes its CA into the chart's own
//!   webhook configurations (re-pointed at the local process with a `url`, and limited to this
//!   test's namespace so parallel tests are not affected);
//! - `kaito-controller` (byo) runs with a token of the chart's controller ServiceAccount, with
//!   leader election on the chart's Lease: the seed workspace, admitted through that webhook,
//!   becomes ready on a simulated GPU node, and deleting it releases the finalizer;
//! - no `forbidden` in either log, and `kubectl auth can-i --list` for each ServiceAccount shows
//!   nothing beyond the table in `charts/kaito/README.md` (plus Kubernetes' default discovery
//!   rules), and everything in that table; the chart is rendered with
//!   `controller.watchNamespace` = the test's namespace (as the controller runs), and in another
//!   namespace the controller may touch nothing namespaced;
//! - without a cluster, `helm template` with and without `controller.watchNamespace` puts the
//!   controller's rights where they belong: a Role in the watched namespace, or cluster-wide.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use kaito_e2e::{
    Cluster, GpuNode, free_port, repo_root, run_command, spawn_logged, unique_name, wait_for,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(500);

fn cluster() -> Result<Cluster> {
    Ok(kaito_e2e::running_cluster().clone())
}

/// `KAITO_<ENV>_BIN`, else the binary in target/debug.
fn binary(pkg: &str, env: &str) -> Result<PathBuf> {
    kaito_e2e::workspace_bin(pkg, env)
}

fn helm(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(cluster.bin_dir().join("helm"));
    cmd.args(args);
    run_command(cmd, None, Duration::from_secs(120))?.ok()
}

/// A kubeconfig for `system:serviceaccount:<ns>:<sa>`, with a token from `kubectl create token`.
fn sa_kubeconfig(cluster: &Cluster, ns: &str, sa: &str, dir: &Path) -> Result<PathBuf> {
    let token = cluster.kubectl_ok(["-n", ns, "create", "token", sa, "--duration=1h"])?;
    let admin: Value = serde_json::from_str(
        &cluster.kubectl_ok(["config", "view", "--raw", "--minify", "-o", "json"])?,
    )?;
    let c = &admin["clusters"][0]["cluster"];
    let kc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": c["server"], "certificate-authority-data": c["certificate-authority-data"]}}],
        "users": [{"name": sa, "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": sa, "namespace": ns}}],
        "current-context": "sa",
    });
    let path = dir.join(format!("{sa}.kubeconfig"));
    std::fs::write(&path, serde_json::to_string(&kc)?)?;
    Ok(path)
}

struct Proc {
    child: Child,
    log: PathBuf,
    name: &'static str,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Result<Self> {
        let child = spawn_logged(cmd.env("RUST_LOG", "info,kube=warn"), &log)
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { child, log, name })
    }
    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn tail(&self) -> String {
        let t = self.text();
        let lines: Vec<&str> = t.lines().collect();
        let head = lines.len().min(6);
        let tail = lines.len().saturating_sub(30).max(head);
        format!(
            "{} log (first and last lines):\n{}\n...\n{}",
            self.name,
            lines[..head].join("\n"),
            lines[tail..].join("\n")
        )
    }
    fn wait_http(&mut self, port: u16, path: &str) -> Result<()> {
        wait_for(&format!("{} {path}", self.name), WAIT, POLL, || {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status})", self.name);
            }
            Ok(http_ok(port, path).then_some(()))
        })
        .with_context(|| self.tail())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// One granted permission: (resource.group or "" for non-resource, resourceName, verb) or
/// (non-resource URL, "", verb).
type Grant = (String, String, String);

/// `kubectl auth can-i --list` rows in namespace `in_ns` for ServiceAccount `sa` of namespace
/// `ns`, expanded to one grant per name and verb.
fn can_i_list(cluster: &Cluster, ns: &str, sa: &str, in_ns: &str) -> Result<BTreeSet<Grant>> {
    let who = format!("system:serviceaccount:{ns}:{sa}");
    let out = cluster.kubectl_ok(["auth", "can-i", "--list", "-n", in_ns, "--as", &who])?;
    let row = regex_lite_row;
    let mut grants = BTreeSet::new();
    for line in out.lines().skip(1) {
        let Some((res, urls, names, verbs)) = row(line) else {
            bail!("cannot parse `kubectl auth can-i --list` line {line:?}");
        };
        let subjects: Vec<String> = if res.is_empty() { urls } else { vec![res] };
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        for s in &subjects {
            for n in &names {
                for v in &verbs {
                    grants.insert((s.clone(), n.clone(), v.clone()));
                }
            }
        }
    }
    Ok(grants)
}

/// One `kubectl auth can-i --list` row: resource, non-resource URLs, resource names, verbs.
type CanIRow = (String, Vec<String>, Vec<String>, Vec<String>);

/// Splits `RESOURCE [urls] [names] [verbs]` (RESOURCE may be empty).
fn regex_lite_row(line: &str) -> Option<CanIRow> {
    let open = line.find('[')?;
    let res = line[..open].trim().to_owned();
    let mut lists = Vec::new();
    let mut rest = &line[open..];
    for _ in 0..3 {
        let a = rest.find('[')?;
        let b = rest[a..].find(']')? + a;
        lists.push(
            rest[a + 1..b]
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
        rest = &rest[b + 1..];
    }
    let verbs = lists.pop()?;
    let names = lists.pop()?;
    let urls = lists.pop()?;
    Some((res, urls, names, verbs))
}

/// The grants `charts/kaito/README.md` lists for `sa` ("controller" or "webhook"), with `…`
/// replaced by the release's full name; karpenter-only and client-auth-only rows are skipped
/// (the test runs byo, without webhook.clientAuth).
fn readme_grants(sa: &str, fullname: &str) -> Result<BTreeSet<Grant>> {
    let text = std::fs::read_to_string(repo_root().join("charts/kaito/README.md"))?;
    let start = text
        .find("<!-- rbac-table")
        .context("charts/kaito/README.md has no rbac-table")?;
    let end = text[start..]
        .find("<!-- end rbac-table")
        .context("rbac-table not closed")?
        + start;
    let mut grants = BTreeSet::new();
    for line in text[start..end].lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 6 || cells[0] == "sa" || cells[0].starts_with("---") {
            continue;
        }
        if cells[0] != sa
            || cells[5].contains("provisioner=karpenter")
            || cells[5].contains("only with `webhook.clientAuth")
        {
            continue;
        }
        // `kubectl auth can-i --list` writes RESOURCE.GROUP/SUBRESOURCE.
        let (res, sub) = match cells[2].split_once('/') {
            Some((r, s)) => (r, format!("/{s}")),
            None => (cells[2], String::new()),
        };
        let resource = match cells[1] {
            "" => format!("{res}{sub}"),
            g => format!("{res}.{g}{sub}"),
        };
        let name = cells[3].trim_matches('`').replace('…', fullname);
        for v in cells[4].split_whitespace() {
            grants.insert((resource.clone(), name.clone(), v.to_owned()));
        }
    }
    ensure!(!grants.is_empty(), "no rbac-table rows for {sa}");
    Ok(grants)
}

/// What every authenticated identity may do by Kubernetes' default roles.
fn is_default_discovery(g: &Grant) -> bool {
    let (s, n, v) = g;
    (n.is_empty()
        && v == "create"
        && [
            "selfsubjectaccessreviews.authorization.k8s.io",
            "selfsubjectrulesreviews.authorization.k8s.io",
            "selfsubjectreviews.authentication.k8s.io",
        ]
        .contains(&s.as_str()))
        || (s.starts_with('/') && v == "get")
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn controller_and_webhook_work_as_the_charts_service_accounts_and_need_nothing_more() -> Result<()>
{
    let cluster = cluster()?;
    cluster.install_kaito_crds()?;
    let ns = cluster.namespace("chart-rbac")?;
    let nsn = ns.name().to_owned();
    // The release is named after the namespace, so its cluster-scoped objects are unique.
    let release = nsn.clone();
    let fullname = format!("{release}-kaito");
    let chart = repo_root().join("charts/kaito");
    let chart = chart.to_str().context("chart path")?;
    let render = |show: &[&str], extra: &[&str]| -> Result<String> {
        let mut args = vec!["template", &release, chart, "--namespace", &nsn];
        // Without a cluster, helm template assumes Kubernetes 1.20 (below the chart's minimum).
        args.extend_from_slice(&["--kube-version", "1.34.4"]);
        args.extend_from_slice(&["--set", "provisioner=byo"]);
        for s in show {
            args.extend_from_slice(&["--show-only", s]);
        }
        args.extend_from_slice(extra);
        helm(&cluster, &args)
    };
    // The controller watches the test's namespace, as the process below does.
    let watch = format!("controller.watchNamespace={nsn}");
    let rbac = render(
        &[
            "templates/serviceaccounts.yaml",
            "templates/rbac-controller.yaml",
            "templates/rbac-webhook.yaml",
        ],
        &["--set", &watch],
    )?;
    let _cleanup = ClusterScoped {
        cluster: &cluster,
        names: vec![
            format!("clusterrole/{fullname}-controller"),
            format!("clusterrolebinding/{fullname}-controller"),
            format!("clusterrole/{fullname}-webhook"),
            format!("clusterrolebinding/{fullname}-webhook"),
            format!("mutatingwebhookconfiguration/{fullname}-webhook"),
            format!("validatingwebhookconfiguration/{fullname}-webhook"),
        ],
    };
    cluster.kubectl_stdin(["apply", "-f", "-"], &rbac)?.ok()?;

    // Nothing beyond the README's table (and Kubernetes' default discovery rules).
    for sa in ["controller", "webhook"] {
        let granted = can_i_list(&cluster, &nsn, &format!("{fullname}-{sa}"), &nsn)?;
        let listed = readme_grants(sa, &fullname)?;
        let extra: Vec<&Grant> = granted
            .iter()
            .filter(|g| !listed.contains(*g) && !is_default_discovery(g))
            .collect();
        ensure!(
            extra.is_empty(),
            "{sa}: granted but not in charts/kaito/README.md: {extra:?}"
        );
        let missing: Vec<&Grant> = listed.iter().filter(|g| !granted.contains(*g)).collect();
        ensure!(
            missing.is_empty(),
            "{sa}: listed in charts/kaito/README.md but not granted: {missing:?}"
        );
    }

    // Outside the watched namespace the controller may touch no namespaced object.
    let elsewhere = can_i_list(&cluster, &nsn, &format!("{fullname}-controller"), "default")?;
    let beyond: Vec<&Grant> = elsewhere
        .iter()
        .filter(|g| !is_default_discovery(g) && !CLUSTER_SCOPED.contains(&g.0.as_str()))
        .collect();
    ensure!(
        beyond.is_empty(),
        "controller: rights in namespace default although it watches {nsn}: {beyond:?}"
    );

    // The chart's webhook configurations, re-pointed at the local webhook process.
    let hook_port = free_port()?;
    let hook_health = free_port()?;
    let configs = render(&["templates/webhook-configurations.yaml"], &[])?;
    let mut docs = Vec::new();
    for doc in configs.split("\n---") {
        let mut v: Value = serde_yaml::from_str(doc)?;
        if v.is_null() {
            continue;
        }
        for w in v["webhooks"].as_array_mut().context("webhooks")? {
            let path = w["clientConfig"]["service"]["path"].clone();
            ensure!(
                w["clientConfig"]["service"]["namespace"] == nsn.as_str(),
                "webhook service namespace is not the release namespace: {w}"
            );
            w["clientConfig"] = serde_json::json!({
                "url": format!("https://127.0.0.1:{hook_port}{}", path.as_str().unwrap_or("/"))});
            w["namespaceSelector"] = serde_json::json!({
                "matchLabels": {"kubernetes.io/metadata.name": nsn}});
        }
        docs.push(serde_yaml::to_string(&v)?);
    }
    cluster
        .kubectl_stdin(["apply", "-f", "-"], &docs.join("---\n"))?
        .ok()?;

    let dir = std::env::temp_dir().join(unique_name("chart-rbac"));
    std::fs::create_dir_all(&dir)?;
    let webhook_kc = sa_kubeconfig(&cluster, &nsn, &format!("{fullname}-webhook"), &dir)?;
    let controller_kc = sa_kubeconfig(&cluster, &nsn, &format!("{fullname}-controller"), &dir)?;

    // The webhook, exactly as the chart's Deployment runs it (Secret mode), plus loopback.
    let mut cmd = Command::new(binary("kaito-webhook", "KAITO_WEBHOOK_BIN")?);
    cmd.args([
        "--tls-mode=secret",
        "--bind-address=127.0.0.1",
        "--health-bind-address=127.0.0.1",
    ])
    .arg(format!("--port={hook_port}"))
    .arg(format!("--health-port={hook_health}"))
    .args([
        "--cloud=azure",
        "--provisioner=byo",
        "--cert-extra-sans=127.0.0.1",
    ])
    .arg(format!("--namespace={nsn}"))
    .arg(format!("--service-name={fullname}-webhook"))
    .arg(format!("--cert-secret={fullname}-webhook-cert"))
    .arg(format!("--ca-secret={fullname}-webhook-ca"))
    .arg(format!("--mutating-webhook-config={fullname}-webhook"))
    .arg(format!("--validating-webhook-config={fullname}-webhook"))
    .env("KUBECONFIG", &webhook_kc);
    let mut webhook = Proc::spawn("kaito-webhook", cmd, dir.join("webhook.log"))?;
    webhook.wait_http(hook_health, "/readyz")?;
    wait_for(
        "the webhook's CA in both configurations",
        WAIT,
        POLL,
        || {
            let m = cluster.get_json([
                "mutatingwebhookconfiguration",
                &format!("{fullname}-webhook"),
            ])?;
            let v = cluster.get_json([
                "validatingwebhookconfiguration",
                &format!("{fullname}-webhook"),
            ])?;
            let filled = |x: &Value| {
                x["webhooks"][0]["clientConfig"]["caBundle"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            };
            Ok((filled(&m) && filled(&v)).then_some(()))
        },
    )
    .with_context(|| webhook.tail())?;
    ns.kubectl_ok(["get", "secret", &format!("{fullname}-webhook-cert")])?;
    ns.kubectl_ok(["get", "secret", &format!("{fullname}-webhook-ca")])?;

    // The controller as the chart runs it (byo, leader election on the chart's Lease).
    let metrics = free_port()?;
    let mut cmd = Command::new(binary("kaito-controller", "KAITO_CONTROLLER_BIN")?);
    cmd.args(["--provisioner=byo"])
        .arg(format!("--metrics-addr=127.0.0.1:{metrics}"))
        .arg(format!("--namespace={nsn}"))
        .arg(format!("--leader-election-namespace={nsn}"))
        .arg(format!("--leader-election-name={fullname}-controller"))
        .env("KUBECONFIG", &controller_kc)
        .env("KAITO_RUNTIME_COMMAND", "kaito-runtime");
    let mut controller = Proc::spawn("kaito-controller", cmd, dir.join("controller.log"))?;
    controller.wait_http(metrics, "/readyz")?;
    ns.kubectl_ok(["get", "lease", &format!("{fullname}-controller")])?;

    // The seed workspace on a simulated GPU node of this test only.
    let _node = cluster.add_gpu_node(
        &GpuNode::new(unique_name("rbac-gpu"))
            .sku("Standard_NC6s_v3")
            .label("apps", "phi-3")
            .label("kaito-e2e/group", &nsn),
    )?;
    let seed =
        std::fs::read_to_string(repo_root().join("examples/inference/kaito_workspace_phi_3.yaml"))?;
    let mut ws: Value = serde_yaml::from_str(&seed)?;
    ws["resource"]["labelSelector"]["matchLabels"]["kaito-e2e/group"] = Value::from(nsn.clone());
    let name = ws["metadata"]["name"].as_str().context("name")?.to_owned();
    ns.apply(&serde_yaml::to_string(&ws)?)?;
    // Admitted through the webhook: it set what the seed leaves out.
    let stored = ns.get_json(["workspace", &name])?;
    ensure!(
        stored["inference"]["preset"]["name"] == "phi-3-mini-4k-instruct",
        "stored workspace: {stored}"
    );
    wait_for("WorkspaceSucceeded True", WAIT, POLL, || {
        Ok(ns
            .workspace_condition_true(&name, "WorkspaceSucceeded")?
            .then_some(()))
    })
    .with_context(|| controller.tail())?;
    ns.kubectl_ok(["get", "statefulset", &name])?;
    let events = ns.get_json(["events.events.k8s.io"])?;
    let recorded = events["items"].as_array().is_some_and(|es| {
        es.iter().any(|e| {
            e["regarding"]["name"] == name.as_str() && e["regarding"]["kind"] == "Workspace"
        })
    });
    ensure!(recorded, "the controller recorded no Event about {name}");
    ns.kubectl_ok(["delete", "workspace", &name, "--timeout=90s"])
        .with_context(|| controller.tail())?;

    for p in [&controller, &webhook] {
        let text = p.text().to_lowercase();
        ensure!(
            !text.contains("forbidden"),
            "{} was refused something:\n{}",
            p.name,
            p.tail()
        );
    }

    drop(controller);
    drop(webhook);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Deletes the release's cluster-scoped objects when the test ends.
struct ClusterScoped<'a> {
    cluster: &'a Cluster,
    names: Vec<String>,
}

impl Drop for ClusterScoped<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self
                .cluster
                .kubectl(["delete", n, "--ignore-not-found", "--wait=false"]);
        }
    }
}

#[test]
fn can_i_rows_parse() {
    let r = regex_lite_row("leases.coordination.k8s.io   []   [kaito-controller]   [get update]")
        .expect("a resource row parses");
    assert_eq!(r.0, "leases.coordination.k8s.io");
    assert_eq!(r.2, vec!["kaito-controller"]);
    assert_eq!(r.3, vec!["get", "update"]);
    let r = regex_lite_row("                 [/api/*]   []   [get]").expect("a URL row parses");
    assert_eq!(r.0, "");
    assert_eq!(r.1, vec!["/api/*"]);
    assert!(regex_lite_row("no brackets").is_none());
}

#[test]
fn the_readme_table_lists_both_service_accounts() -> Result<()> {
    let c = readme_grants("controller", "rel-kaito")?;
    assert!(c.contains(&(
        "leases.coordination.k8s.io".into(),
        "rel-kaito-controller".into(),
        "update".into()
    )));
    assert!(!c.iter().any(|g| g.0.starts_with("nodeclaims")));
    assert!(c.contains(&(
        "workspaces.kaito.sh/status".into(),
        String::new(),
        "patch".into()
    )));
    let w = readme_grants("webhook", "rel-kaito")?;
    assert!(w.contains(&(
        "secrets".into(),
        "rel-kaito-webhook-cert".into(),
        "get".into()
    )));
    Ok(())
}

/// Resources without a namespace that the chart's roles name; every other resource they name
/// is namespaced.
const CLUSTER_SCOPED: [&str; 4] = [
    "nodes",
    "nodeclaims.karpenter.sh",
    "mutatingwebhookconfigurations.admissionregistration.k8s.io",
    "validatingwebhookconfigurations.admissionregistration.k8s.io",
];

/// The grants of a Role's or ClusterRole's rules, written as `kubectl auth can-i --list`
/// writes them (RESOURCE.GROUP/SUBRESOURCE).
fn role_grants(role: &Value) -> Result<BTreeSet<Grant>> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().context("a role without rules")? {
        let mut names = strings(&rule["resourceNames"]);
        if names.is_empty() {
            names.push(String::new());
        }
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                let (res, sub) = match r.split_once('/') {
                    Some((r, s)) => (r.to_owned(), format!("/{s}")),
                    None => (r.clone(), String::new()),
                };
                let resource = if g.is_empty() {
                    format!("{res}{sub}")
                } else {
                    format!("{res}.{g}{sub}")
                };
                for n in &names {
                    for v in strings(&rule["verbs"]) {
                        grants.insert((resource.clone(), n.clone(), v));
                    }
                }
            }
        }
    }
    Ok(grants)
}

/// What the rendered bindings give ServiceAccount `sa` of namespace `ns`, by where it holds:
/// `"*"` for ClusterRoleBindings (all namespaces), else the RoleBinding's namespace.
fn grants_by_scope(
    docs: &[Value],
    sa: &str,
    ns: &str,
) -> Result<BTreeMap<String, BTreeSet<Grant>>> {
    let mut out: BTreeMap<String, BTreeSet<Grant>> = BTreeMap::new();
    for b in docs {
        let kind = b["kind"].as_str().unwrap_or_default();
        if kind != "RoleBinding" && kind != "ClusterRoleBinding" {
            continue;
        }
        let binds = b["subjects"].as_array().is_some_and(|ss| {
            ss.iter()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == ns)
        });
        if !binds {
            continue;
        }
        let scope = if kind == "ClusterRoleBinding" {
            "*".to_owned()
        } else {
            b["metadata"]["namespace"]
                .as_str()
                .context("a RoleBinding without a namespace")?
                .to_owned()
        };
        let role_kind = b["roleRef"]["kind"].as_str().unwrap_or_default();
        let role = docs
            .iter()
            .find(|r| {
                r["kind"] == role_kind
                    && r["metadata"]["name"] == b["roleRef"]["name"]
                    && (role_kind == "ClusterRole" || r["metadata"]["namespace"] == scope.as_str())
            })
            .with_context(|| {
                format!(
                    "{kind} {} names a role the chart does not render",
                    b["metadata"]["name"]
                )
            })?;
        out.entry(scope).or_default().extend(role_grants(role)?);
    }
    Ok(out)
}

/// With `controller.watchNamespace` set, the controller's rights on namespaced resources are a
/// Role in that namespace; cluster-wide it keeps only cluster-scoped resources (nodes,
/// NodeClaims). Without it, they are cluster-wide. Either way the grants are the README's
/// table, the Lease rows a Role in the release namespace.
#[test]
#[ignore = "end-to-end tier: needs helm (tests/cluster/build.sh); run tests/e2e.sh"]
fn the_controllers_rights_are_namespaced_when_it_watches_one_namespace() -> Result<()> {
    let sa = "rel-kaito-controller";
    let release_ns = "kaito-system";
    let listed = readme_grants("controller", "rel-kaito")?;
    let is_lease = |g: &Grant| g.0 == "leases.coordination.k8s.io";
    for provisioner in ["byo", "karpenter"] {
        for watch in ["team-a", ""] {
            let docs = kaito_e2e::chart::render(
                "rel",
                release_ns,
                &[
                    ("provisioner", provisioner),
                    ("controller.watchNamespace", watch),
                ],
                &["templates/rbac-controller.yaml"],
            )?;
            let mut by_scope = grants_by_scope(&docs, sa, release_ns)?;
            let cluster = by_scope.remove("*").unwrap_or_default();
            let leases = by_scope.remove(release_ns).unwrap_or_default();
            ensure!(
                !leases.is_empty() && leases.iter().all(is_lease),
                "{provisioner}/{watch:?}: the release namespace's Role holds {leases:?}"
            );
            let mut all = cluster.clone();
            all.extend(leases);
            if watch.is_empty() {
                ensure!(
                    by_scope.is_empty(),
                    "{provisioner}: Roles outside the release namespace without watchNamespace: \
                     {by_scope:?}"
                );
            } else {
                let namespaced: Vec<&Grant> = cluster
                    .iter()
                    .filter(|g| !CLUSTER_SCOPED.contains(&g.0.as_str()))
                    .collect();
                ensure!(
                    namespaced.is_empty(),
                    "{provisioner}: watchNamespace={watch}, yet cluster-wide rights on namespaced \
                     resources: {namespaced:?}"
                );
                let watched = by_scope.remove(watch).unwrap_or_default();
                ensure!(
                    by_scope.is_empty(),
                    "{provisioner}: Roles in other namespaces: {by_scope:?}"
                );
                ensure!(
                    watched
                        .iter()
                        .all(|g| !CLUSTER_SCOPED.contains(&g.0.as_str()) && !is_lease(g)),
                    "{provisioner}: the Role in {watch} holds {watched:?}"
                );
                all.extend(watched);
            }
            let nodeclaims = |g: &Grant| g.0 == "nodeclaims.karpenter.sh";
            ensure!(
                all.iter().any(nodeclaims) == (provisioner == "karpenter"),
                "{provisioner}/{watch:?}: NodeClaim rights {all:?}"
            );
            // The README's table (its karpenter-only rows left out by readme_grants).
            all.retain(|g| !nodeclaims(g));
            ensure!(
                all == listed,
                "{provisioner}/{watch:?}: rendered {all:?}\nbut charts/kaito/README.md lists \
                 {listed:?}"
            );
        }
    }
    Ok(())
}
