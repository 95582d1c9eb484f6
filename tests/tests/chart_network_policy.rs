//! `workloads.networkPolicy`: the chart's NetworkPolicy for the pods the controller makes for
//! Workspaces (serving StatefulSet pods and tuning Job pods, all labelled
//! `kaito.sh/workspace`), rendered with `helm template` (no cluster). Whether a CNI enforces it
//! cannot be tested here: the local cluster's pods are simulated by kwok (no pod network), and
//! its real-node tier's bridge CNI does not enforce NetworkPolicies.

use anyhow::{Context, Result, ensure};
use kaito_e2e::chart::{render, render_error};
use serde_json::{Value, json};

const RELEASE_NS: &str = "kaito-system";
/// The label the controller puts on every pod it makes for a Workspace
/// (`kaito_api::LABEL_WORKSPACE`; controller/src/inference.rs and tuning.rs).
const LABEL_WORKSPACE: &str = "kaito.sh/workspace";

/// The workloads' NetworkPolicies of a rendering, by namespace.
fn policies(sets: &[(&str, &str)]) -> Result<Vec<Value>> {
    let docs = render("rel", RELEASE_NS, sets, &[])?;
    Ok(docs
        .into_iter()
        .filter(|d| {
            d["kind"] == "NetworkPolicy"
                && d["metadata"]["labels"]["app.kubernetes.io/component"] == "workloads"
        })
        .collect())
}

/// The peer every policy admits: the workspace pods of its own namespace.
fn workspace_pods() -> Value {
    json!({"podSelector": {"matchExpressions": [{"key": LABEL_WORKSPACE, "operator": "Exists"}]}})
}

fn check_shape(p: &Value, ns: &str, peers: &[Value]) -> Result<()> {
    ensure!(p["metadata"]["namespace"] == ns, "namespace of {p}");
    ensure!(
        p["spec"]["podSelector"] == workspace_pods()["podSelector"],
        "it must select the workspace pods: {p}"
    );
    ensure!(p["spec"]["policyTypes"] == json!(["Ingress"]), "{p}");
    let ingress = p["spec"]["ingress"].as_array().context("ingress")?;
    ensure!(ingress.len() == 1, "one ingress rule: {p}");
    ensure!(
        ingress[0].get("ports").is_none(),
        "every port of the allowed peers (a multi-node workspace's pods talk on more than the \
         serving port): {p}"
    );
    ensure!(
        ingress[0]["from"] == json!(peers),
        "peers of the policy in {ns}:\n{}\nwanted:\n{}",
        ingress[0]["from"],
        json!(peers)
    );
    Ok(())
}

#[test]
#[ignore = "end-to-end tier: needs helm (tests/cluster/build.sh); run tests/e2e.sh"]
fn off_by_default() -> Result<()> {
    ensure!(policies(&[])?.is_empty());
    ensure!(policies(&[("controller.watchNamespace", "team-a")])?.is_empty());
    Ok(())
}

#[test]
#[ignore = "end-to-end tier: needs helm (tests/cluster/build.sh); run tests/e2e.sh"]
fn guards_the_watched_namespace_with_its_own_and_the_release_namespace_admitted() -> Result<()> {
    let ps = policies(&[
        ("workloads.networkPolicy.enabled", "true"),
        ("controller.watchNamespace", "team-a"),
    ])?;
    ensure!(ps.len() == 1, "one policy: {ps:?}");
    check_shape(
        &ps[0],
        "team-a",
        &[
            workspace_pods(),
            json!({"podSelector": {}}),
            json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": RELEASE_NS}}}),
        ],
    )
}

#[test]
#[ignore = "end-to-end tier: needs helm (tests/cluster/build.sh); run tests/e2e.sh"]
fn listed_namespaces_and_peers_replace_the_defaults() -> Result<()> {
    let ps = policies(&[
        ("workloads.networkPolicy.enabled", "true"),
        ("workloads.networkPolicy.namespaces", "{team-b,team-c}"),
        ("workloads.networkPolicy.allowSameNamespace", "false"),
        ("workloads.networkPolicy.allowReleaseNamespace", "false"),
        (
            "workloads.networkPolicy.from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name",
            "ingress-nginx",
        ),
        ("controller.watchNamespace", "team-a"),
    ])?;
    let nss: Vec<&str> = ps
        .iter()
        .filter_map(|p| p["metadata"]["namespace"].as_str())
        .collect();
    ensure!(nss == ["team-b", "team-c"], "namespaces {nss:?}");
    let gateway = json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}});
    for (p, ns) in ps.iter().zip(nss) {
        check_shape(p, ns, &[workspace_pods(), gateway.clone()])?;
    }
    Ok(())
}

#[test]
#[ignore = "end-to-end tier: needs helm (tests/cluster/build.sh); run tests/e2e.sh"]
fn enabled_without_a_namespace_is_refused() -> Result<()> {
    let err = render_error(
        "rel",
        RELEASE_NS,
        &[("workloads.networkPolicy.enabled", "true")],
    )?;
    ensure!(
        err.contains("workloads.networkPolicy.namespaces"),
        "the refusal names the value to set: {err}"
    );
    let err = render_error(
        "rel",
        RELEASE_NS,
        &[
            ("workloads.networkPolicy.enabled", "true"),
            ("workloads.networkPolicy.namespaces", "{Not_A_Namespace}"),
        ],
    )?;
    ensure!(err.contains("namespaces"), "{err}");
    Ok(())
}
