//! Who owns what (pure decisions, plus the workspace lookup the orphan sweepers share): the
//! controller changes or deletes only what it made for the workspace at hand. Namespaced children must carry a controller owner reference with the
//! workspace's UID; agent pools and NodeClaims (which cannot carry owner references) must
//! carry its UID in a tag or label ([`LABEL_WORKSPACE_UID`]). Anything else that holds a name
//! the controller needs is left untouched and reported with the fix.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kaito_api::{FINALIZER, Workspace};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::naming::{self, LABEL_WORKSPACE_UID};

/// Condition type (and reason) set while releasing the workspace's cloud resources fails.
pub const CONDITION_DELETION_BLOCKED: &str = "DeletionBlocked";

/// Whether `meta` has a controller owner reference to `ws` (same UID).
pub fn controlled_by(meta: &ObjectMeta, ws: &Workspace) -> bool {
    let uid = naming::uid(ws);
    !uid.is_empty()
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// A namespaced child the controller needs exists without its owner reference: what is in
/// the way and how to clear it.
pub fn child_name_taken(kind: &str, meta: &ObjectMeta, ws: &Workspace) -> String {
    let ns = meta.namespace.as_deref().unwrap_or(naming::namespace(ws));
    let name = meta.name.as_deref().unwrap_or_default();
    let holder = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("it is controlled by {} {}", o.kind, o.name))
        .unwrap_or_else(|| "it has no controller owner reference to this workspace".into());
    format!(
        "{kind} {ns}/{name} already exists and was not created for this workspace ({holder}); \
         the controller leaves it untouched: rename or delete that {kind}, or recreate the \
         workspace under another name"
    )
}

/// Whether the UID mark (`kaito.sh/workspaceuid` tag or label) of a pool or NodeClaim says it
/// was made for `ws`; Err says why not.
pub fn marked_for(mark: Option<&str>, ws: &Workspace) -> Result<(), String> {
    let uid = naming::uid(ws);
    match mark {
        Some(m) if !uid.is_empty() && m == uid => Ok(()),
        Some(m) => Err(format!(
            "its {LABEL_WORKSPACE_UID} is {m}, not this workspace's UID {uid} (it was made for \
             another workspace of the same name, or collides with this one's name)"
        )),
        None => Err(format!(
            "it carries no {LABEL_WORKSPACE_UID}, so the controller cannot tell it was made for \
             this workspace"
        )),
    }
}

/// What a pool or NodeClaim says about the workspace it was made for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    /// The pool's or claim's name.
    pub name: String,
    /// `kaito.sh/workspacenamespace`.
    pub namespace: Option<String>,
    /// `kaito.sh/workspace`.
    pub workspace: Option<String>,
    /// `kaito.sh/workspaceuid`.
    pub uid: Option<String>,
}

/// What the API server says of the workspace a [`Mark`] names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not found (404).
    Missing,
    /// Found, with this UID.
    Found(String),
}

/// Whether a marked pool or claim is an orphan: its workspace is gone, or was recreated (the
/// live one has another UID). Unmarked objects (no workspace labels) are not the controller's;
/// ones without a UID (made by an older controller) count only when their workspace is gone.
pub fn is_orphan(mark: &Mark, lookup: &Lookup) -> bool {
    if mark.namespace.is_none() || mark.workspace.is_none() {
        return false;
    }
    match lookup {
        Lookup::Missing => true,
        Lookup::Found(live) => mark.uid.as_ref().is_some_and(|u| u != live),
    }
}

/// The kinds of object that carry a [`Mark`] instead of an owner reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marked {
    /// A Karpenter NodeClaim.
    NodeClaim,
    /// An AKS agent pool.
    AgentPool,
}

/// Whether the pool or claim `mark` describes is an orphan (see [`is_orphan`]), asking the API
/// server for its workspace; logs that it is being deleted. A workspace that cannot be looked
/// up is logged and counts as not an orphan (it is looked at again on the next sweep).
pub async fn orphaned(client: &Client, mark: &Mark, kind: Marked) -> bool {
    let (Some(ns), Some(ws)) = (&mark.namespace, &mark.workspace) else {
        return false;
    };
    let api: Api<Workspace> = Api::namespaced(client.clone(), ns);
    let lookup = match api.get_opt(ws).await {
        Ok(None) => Lookup::Missing,
        Ok(Some(w)) => Lookup::Found(naming::uid(&w).to_string()),
        Err(e) => {
            match kind {
                Marked::NodeClaim => {
                    warn!(claim = %mark.name, error = %e, "cannot look up the workspace of a NodeClaim");
                }
                Marked::AgentPool => {
                    warn!(pool = %mark.name, error = %e, "cannot look up the workspace of an agent pool");
                }
            }
            return false;
        }
    };
    if !is_orphan(mark, &lookup) {
        return false;
    }
    match kind {
        Marked::NodeClaim => {
            info!(claim = %mark.name, workspace = %ws, namespace = %ns, "deleting orphaned NodeClaim");
        }
        Marked::AgentPool => {
            info!(pool = %mark.name, workspace = %ws, namespace = %ns, "deleting orphaned agent pool");
        }
    }
    true
}

/// The message of the `DeletionBlocked` condition: why releasing failed, how to let the
/// deletion finish, and what is left to clean up by hand then.
pub fn deletion_blocked(ws: &Workspace, error: &str, cleanup: &str) -> String {
    let name = naming::name(ws);
    let ns = naming::namespace(ws);
    format!(
        "the workspace cannot be deleted: releasing its nodes failed: {error}. Fix the cloud \
         credentials or permissions and the controller retries with backoff; or release the \
         workspace by hand with `kubectl patch workspace {name} -n {ns} --type=json -p \
         '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]'` (this removes every \
         finalizer, {FINALIZER} included) and then delete what the controller could not: \
         {cleanup}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{obj, ws};

    fn w() -> Workspace {
        ws("metadata: {name: phi, namespace: ns1, uid: uid-1}")
    }

    #[test]
    fn only_a_controller_reference_with_the_workspace_uid_makes_a_child_ours() {
        let meta = |refs: &str| -> ObjectMeta {
            obj(&format!(
                "{{name: phi, namespace: ns1, ownerReferences: {refs}}}"
            ))
        };
        let ours = meta(
            "[{apiVersion: kaito.sh/v1beta1, kind: Workspace, name: phi, uid: uid-1, controller: true}]",
        );
        assert!(controlled_by(&ours, &w()));
        for (what, refs) in [
            ("none", "[]"),
            (
                "another uid",
                "[{apiVersion: kaito.sh/v1beta1, kind: Workspace, name: phi, uid: uid-0, controller: true}]",
            ),
            (
                "not controller",
                "[{apiVersion: kaito.sh/v1beta1, kind: Workspace, name: phi, uid: uid-1}]",
            ),
            (
                "another kind",
                "[{apiVersion: apps/v1, kind: Deployment, name: web, uid: d-1, controller: true}]",
            ),
        ] {
            assert!(!controlled_by(&meta(refs), &w()), "{what}");
        }
        let no_uid = ws("metadata: {name: phi, namespace: ns1}");
        let mut no_uid = no_uid;
        no_uid.metadata.uid = None;
        assert!(
            !controlled_by(&ours, &no_uid),
            "a workspace without UID owns nothing"
        );
        let msg = child_name_taken(
            "Service",
            &meta(
                "[{apiVersion: apps/v1, kind: Deployment, name: web, uid: d-1, controller: true}]",
            ),
            &w(),
        );
        assert!(msg.contains("Service ns1/phi"), "{msg}");
        assert!(msg.contains("controlled by Deployment web"), "{msg}");
        assert!(msg.contains("rename or delete that Service"), "{msg}");
    }

    #[test]
    fn pools_and_claims_are_ours_only_with_our_uid() {
        assert_eq!(marked_for(Some("uid-1"), &w()), Ok(()));
        let other = marked_for(Some("uid-0"), &w()).expect_err("another uid");
        assert!(
            other.contains("uid-0") && other.contains("uid-1"),
            "{other}"
        );
        let none = marked_for(None, &w()).expect_err("no uid");
        assert!(none.contains("kaito.sh/workspaceuid"), "{none}");
    }

    #[test]
    fn orphans_are_marked_objects_of_gone_or_recreated_workspaces() {
        let mark = |ns: Option<&str>, ws: Option<&str>, uid: Option<&str>| Mark {
            name: "p".into(),
            namespace: ns.map(Into::into),
            workspace: ws.map(Into::into),
            uid: uid.map(Into::into),
        };
        let live = Lookup::Found("uid-1".into());
        let table = [
            (mark(Some("ns"), Some("w"), Some("uid-1")), &live, false),
            (mark(Some("ns"), Some("w"), Some("uid-0")), &live, true),
            (mark(Some("ns"), Some("w"), None), &live, false),
            (mark(Some("ns"), Some("w"), None), &Lookup::Missing, true),
            (
                mark(Some("ns"), Some("w"), Some("uid-1")),
                &Lookup::Missing,
                true,
            ),
            (
                mark(None, Some("w"), Some("uid-1")),
                &Lookup::Missing,
                false,
            ),
            (mark(Some("ns"), None, None), &Lookup::Missing, false),
        ];
        for (m, l, want) in table {
            assert_eq!(is_orphan(&m, l), want, "{m:?} {l:?}");
        }
    }

    #[test]
    fn a_blocked_deletion_says_why_and_how_to_release_it() {
        let msg = deletion_blocked(&w(), "azure: 401 AuthenticationFailed", "agent pool abc");
        assert!(msg.contains("401 AuthenticationFailed"), "{msg}");
        assert!(msg.contains(
            r#"kubectl patch workspace phi -n ns1 --type=json -p '[{"op":"remove","path":"/metadata/finalizers"}]'"#
        ), "{msg}");
        assert!(msg.ends_with("agent pool abc"), "{msg}");
    }
}
