//! Each seed example (`examples/**/*.yaml`), applied with the real `kubectl apply -f`, is stored as
//! written, and `kubectl get workspace` prints the seed's columns.

use kaito_e2e::{example_files, in_order, json_subset, table_header, wait_for};
use std::time::Duration;

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn seed_examples_apply_store_and_print_columns() -> anyhow::Result<()> {
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    let ns = cluster.namespace("seed-examples")?;

    let files = example_files()?;
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let seed: serde_json::Value = serde_yaml::from_str(&text)?;
        let name = seed["metadata"]["name"]
            .as_str()
            .expect("seed has a name")
            .to_owned();
        let api_version = seed["apiVersion"].as_str().expect("seed has an apiVersion");
        let version = api_version.rsplit('/').next().expect("group/version");
        let path = file.display().to_string();

        // The CRD may still be settling into discovery right after it became Established.
        let applied = wait_for(
            &format!("kubectl apply -f {path}"),
            Duration::from_secs(30),
            Duration::from_millis(500),
            || {
                let out = ns.kubectl(["apply", "-f", &path])?;
                if out.success() {
                    return Ok(Some(out.stdout));
                }
                if out.stderr.contains("no matches for kind") {
                    return Ok(None);
                }
                anyhow::bail!(
                    "kubectl apply -f {path} was rejected: {}",
                    out.stderr.trim()
                )
            },
        )?;
        assert!(
            applied.contains(&format!("workspace.kaito.sh/{name} created"))
                || applied.contains(&format!("workspace.kaito.sh/{name} configured")),
            "{path}: {applied}"
        );

        // Stored as written: every field of the seed comes back in the version it was written in.
        let stored = ns.get_json([format!("workspaces.{version}.kaito.sh"), name.clone()])?;
        let mut expected = seed.clone();
        let meta = expected["metadata"].as_object_mut().expect("metadata");
        meta.retain(|k, _| k == "name");
        if let Some(diff) = json_subset(&expected, &stored) {
            panic!("{path} was not stored as written: {diff}\nstored: {stored:#}");
        }
        assert_eq!(stored["metadata"]["namespace"], ns.name());

        // `kubectl get workspace NAME` prints the seed's columns.
        let table = ns.kubectl_ok(["get", "workspace", &name])?;
        let header = table_header(&table);
        let want = [
            "NAME",
            "INSTANCE",
            "RESOURCEREADY",
            "INFERENCEREADY",
            "WORKSPACEREADY",
            "AGE",
        ];
        assert!(
            in_order(&header, &want),
            "{path}: header {header:?} lacks {want:?} in order:\n{table}"
        );
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(row.first().copied(), Some(name.as_str()), "{table}");
        let instance = seed["resource"]["instanceType"]
            .as_str()
            .expect("seed has an instanceType");
        let col = header
            .iter()
            .position(|h| h == "INSTANCE")
            .expect("INSTANCE column");
        assert_eq!(row.get(col).copied(), Some(instance), "{path}:\n{table}");
        assert_eq!(instance, "Standard_NC6s_v3");
    }

    // All seeds are listed together.
    let list = ns.kubectl_ok(["get", "workspaces", "-o", "name"])?;
    assert_eq!(list.lines().count(), files.len(), "{list}");
    Ok(())
}
