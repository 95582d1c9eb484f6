//! The project's generated CRDs install into a real kube-apiserver and become Established.

use kaito_e2e::{Cluster, in_order};

/// The printer columns every served Workspace version must have, in this order.
const WORKSPACE_COLUMNS: &[&str] = &[
    "Instance",
    "ResourceReady",
    "InferenceReady",
    "JobStarted",
    "WorkspaceReady",
    "Age",
];

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn kaito_crds_install_and_become_established() -> anyhow::Result<()> {
    let cluster = Cluster::shared();
    let names = cluster.install_kaito_crds()?;
    assert!(
        names.iter().any(|n| n.ends_with("/workspaces.kaito.sh")),
        "charts/kaito/crds has no workspaces.kaito.sh CRD; applied: {names:?}"
    );

    for name in &names {
        let crd = cluster.get_json([name.as_str()])?;
        let established = crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        assert!(
            established,
            "{name} is not Established: {:#}",
            crd["status"]
        );
        let names_accepted = crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "NamesAccepted" && c["status"] == "True");
        assert!(
            names_accepted,
            "{name}: names not accepted: {:#}",
            crd["status"]
        );
    }

    let crd = cluster.get_json(["crd", "workspaces.kaito.sh"])?;
    assert_eq!(crd["spec"]["group"], "kaito.sh");
    assert_eq!(crd["spec"]["names"]["kind"], "Workspace");
    assert_eq!(crd["spec"]["names"]["plural"], "workspaces");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let versions = crd["spec"]["versions"].as_array().expect("versions");
    let served: Vec<&str> = versions
        .iter()
        .filter(|v| v["served"] == true)
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["v1alpha1", "v1beta1"] {
        assert!(served.contains(&v), "{v} is not served; served: {served:?}");
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    assert_eq!(storage, 1, "exactly one storage version");
    for v in versions {
        let columns: Vec<String> = v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect();
        assert!(
            in_order(&columns, WORKSPACE_COLUMNS),
            "version {} has printer columns {columns:?}, want {WORKSPACE_COLUMNS:?} in order",
            v["name"]
        );
    }
    assert_eq!(
        crd["status"]["acceptedNames"]["kind"], "Workspace",
        "the apiserver accepted the names"
    );

    // Discovery serves the resource, so `kubectl get workspace` resolves it.
    let resources = cluster.kubectl_ok(["api-resources", "--api-group=kaito.sh", "-o", "name"])?;
    assert!(
        resources.lines().any(|l| l.trim() == "workspaces.kaito.sh"),
        "discovery does not list workspaces.kaito.sh: {resources}"
    );
    let explain = cluster.kubectl_ok(["explain", "workspace.resource.instanceType"])?;
    assert!(explain.contains("instanceType"), "{explain}");
    Ok(())
}
