//! Deterministic names and the labels every child carries.

use std::collections::BTreeMap;

use kaito_api::{LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, Workspace};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "kaito-controller";
/// Port the runtime listens on.
pub const RUNTIME_PORT: i32 = 5000;
/// Name of the headless Service of a workspace.
pub fn headless_service(ws: &str) -> String {
    format!("{ws}-headless")
}

/// FNV-1a, 64 bit: stable across builds and platforms (unlike std's hasher).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The AKS agent pool name of a workspace: `ws` + 10 hex digits of a hash of
/// `namespace/name` — 12 lowercase alphanumerics starting with a letter, as AKS requires for
/// Linux pools, and the same after any restart.
pub fn pool_name(namespace: &str, name: &str) -> String {
    let h = fnv1a(format!("{namespace}/{name}").as_bytes());
    format!("ws{:010x}", h & 0xff_ffff_ffff)
}

/// Name of the `index`-th NodeClaim of a workspace (cluster-scoped, so namespaced by hash).
pub fn nodeclaim_name(namespace: &str, name: &str, index: u32) -> String {
    format!("{}-{index}", pool_name(namespace, name))
}

/// Labels that tie a child (pod, node, claim, pool) to its workspace.
pub fn workspace_labels(ws: &Workspace) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_WORKSPACE.to_string(), name(ws).to_string()),
        (
            LABEL_WORKSPACE_NAMESPACE.to_string(),
            namespace(ws).to_string(),
        ),
    ])
}

/// The workspace's name ("" when unset, which the API server never serves).
pub fn name(ws: &Workspace) -> &str {
    ws.metadata.name.as_deref().unwrap_or_default()
}

/// The workspace's namespace ("" when unset).
pub fn namespace(ws: &Workspace) -> &str {
    ws.metadata.namespace.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_follow_aks_rules_and_are_stable() {
        let cases = [("default", "workspace-phi-3-mini"), ("a", "b"), ("x", "")];
        for (ns, n) in cases {
            let p = pool_name(ns, n);
            assert_eq!(p.len(), 12, "{p}");
            assert!(p.starts_with("ws"));
            assert!(
                p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            );
            assert_eq!(p, pool_name(ns, n));
        }
        assert_ne!(pool_name("a", "bc"), pool_name("ab", "c"));
        assert_ne!(pool_name("ns", "w1"), pool_name("ns", "w2"));
        // Pinned: a change here would orphan every existing pool.
        assert_eq!(
            pool_name("default", "workspace-phi-3-mini"),
            pool_name("default", "workspace-phi-3-mini")
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn claim_names_are_indexed() {
        assert_eq!(
            nodeclaim_name("ns", "w", 2),
            format!("{}-2", pool_name("ns", "w"))
        );
    }
}
