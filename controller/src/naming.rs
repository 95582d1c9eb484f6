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

/// Label (on NodeClaims, and thus their nodes) and tag (on AKS agent pools) holding the UID
/// of the workspace they were made for: the controller updates or deletes a pool or claim
/// only when it carries the UID of the workspace at hand, since a name alone can be shared by
/// a deleted and a recreated workspace.
pub const LABEL_WORKSPACE_UID: &str = "kaito.sh/workspaceuid";

/// SHA-256 of `namespace/name` (a namespace has no `/`, so the pair is unambiguous).
fn digest(namespace: &str, name: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(format!("{namespace}/{name}").as_bytes()).into()
}

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// 36^11: the base-36 digits after the pool name's leading letter.
const POOL_TAIL: u64 = 131_621_703_842_267_136;

/// The AKS agent pool name of a workspace: 12 lowercase alphanumerics starting with a letter
/// (the limit AKS sets for Linux pools), all of them spent on SHA-256 of `namespace/name`: a
/// letter then 11 base-36 digits, 26 × 36^11 names (61.6 bits). The same after any restart.
/// A name is not proof of ownership: pools also carry the workspace's UID
/// ([`LABEL_WORKSPACE_UID`]), checked before any update or delete.
pub fn pool_name(namespace: &str, name: &str) -> String {
    let d = digest(namespace, name);
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    let v = u64::from_be_bytes(first) % (26 * POOL_TAIL);
    let mut out = vec![b'a' + (v / POOL_TAIL) as u8];
    let mut tail = v % POOL_TAIL;
    let mut digits = [b'0'; 11];
    for slot in digits.iter_mut().rev() {
        *slot = BASE36[(tail % 36) as usize];
        tail /= 36;
    }
    out.extend_from_slice(&digits);
    String::from_utf8_lossy(&out).into_owned()
}

/// Name of the `index`-th NodeClaim of a workspace (cluster-scoped, so namespaced by hash):
/// `ws` + 96 bits of SHA-256 of `namespace/name` in hex + `-<index>`.
pub fn nodeclaim_name(namespace: &str, name: &str, index: u32) -> String {
    let d = digest(namespace, name);
    let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("ws{hex}-{index}")
}

/// The workspace's UID ("" when unset, which the API server never serves).
pub fn uid(ws: &Workspace) -> &str {
    ws.metadata.uid.as_deref().unwrap_or_default()
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

/// `namespace/name`: the workspace's key in the controller's per-workspace memory (backoff,
/// status written).
pub fn key(ws: &Workspace) -> String {
    format!("{}/{}", namespace(ws), name(ws))
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
            assert!(p.starts_with(|c: char| c.is_ascii_lowercase()), "{p}");
            assert!(
                p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            );
            assert_eq!(p, pool_name(ns, n));
        }
        assert_ne!(pool_name("a", "bc"), pool_name("ab", "c"));
        assert_ne!(pool_name("ns", "w1"), pool_name("ns", "w2"));
    }

    #[test]
    fn names_are_a_long_sha256_of_namespace_and_name() {
        // Pinned (computed independently with Python's hashlib): a change here would orphan
        // every existing pool and NodeClaim.
        assert_eq!(pool_name("default", "workspace-phi-3-mini"), "wjnwg5sszhz9");
        assert_eq!(pool_name("a", "b"), "bto2ckufheot");
        assert_eq!(
            nodeclaim_name("default", "workspace-phi-3-mini", 0),
            "ws292eeeef427c21c54e17985f-0"
        );
        // 26 * 36^11 pool names (61.6 bits, all that 12 characters starting with a letter
        // allow); 96 bits for NodeClaims.
        let claim = nodeclaim_name("ns", "w", 0);
        assert_eq!(claim.len(), 2 + 24 + 2, "{claim}");
        // Many workspaces, no collision in either scheme.
        let mut pools = std::collections::BTreeSet::new();
        let mut claims = std::collections::BTreeSet::new();
        for i in 0..20_000 {
            assert!(pools.insert(pool_name("ns", &format!("w{i}"))));
            assert!(claims.insert(nodeclaim_name("ns", &format!("w{i}"), 0)));
        }
    }

    #[test]
    fn claim_names_are_indexed() {
        let first = nodeclaim_name("ns", "w", 0);
        let third = nodeclaim_name("ns", "w", 2);
        assert_eq!(third.strip_suffix("-2"), first.strip_suffix("-0"));
        assert_ne!(nodeclaim_name("ns", "w", 0), nodeclaim_name("ns2", "w", 0));
    }
}
