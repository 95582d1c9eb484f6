//! The apply stage: server-side apply (one field manager, forced) of the desired children
//! that differ from what exists, and nothing else.
//!
//! "Differs" is decided with a hash annotation: each applied object carries
//! [`ANNOTATION_SPEC_HASH`], the SHA-256 of the object the controller built (before the
//! annotation was added). The next reconcile builds the object again and skips the write when
//! the object found carries the same hash and no other field manager has written its fields
//! since (`metadata.managedFields`: an entry of another manager for the object itself, not
//! its `status`). Why a hash rather than comparing the found object with the desired one
//! field by field: the API server adds defaults (protocols, termination message paths, pull
//! policies, `clusterIP`…) and normalises values (quantities), so a field-by-field
//! comparison has to know all of them, and each one it misses is a write on every reconcile
//! again. The hash is exact about what the controller asked for; edits by anyone else show up
//! as their managedFields entry, and the object is applied again (forced), as before.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use super::desired::{Child, Desired, Found};
use crate::naming::FIELD_MANAGER;

/// Annotation on each applied child: the hash of the object the controller built.
pub const ANNOTATION_SPEC_HASH: &str = "kaito.sh/spec-hash";

/// The hash of `child` as built (hex SHA-256 of its JSON, without [`ANNOTATION_SPEC_HASH`]).
pub fn spec_hash(child: &Child) -> String {
    let mut bare = child.clone();
    if let Some(a) = bare.meta_mut().annotations.as_mut() {
        a.remove(ANNOTATION_SPEC_HASH);
        if a.is_empty() {
            bare.meta_mut().annotations = None;
        }
    }
    let json = match &bare {
        Child::Service(o) => serde_json::to_vec(o),
        Child::StatefulSet(o) => serde_json::to_vec(o),
        Child::ConfigMap(o) => serde_json::to_vec(o),
        Child::Job(o) => serde_json::to_vec(o),
    }
    .unwrap_or_default();
    Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `child` with its [`ANNOTATION_SPEC_HASH`] set.
pub fn stamped(mut child: Child) -> Child {
    let hash = spec_hash(&child);
    child
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_SPEC_HASH.into(), hash);
    child
}

/// Whether a field manager other than the controller has written the object itself (not its
/// status or scale subresource): someone edited it, so it is applied again.
fn written_by_others(meta: &ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() != Some(FIELD_MANAGER)
            && m.subresource.as_deref().unwrap_or_default().is_empty()
    })
}

/// Whether the object `found` already is the stamped `child`: same hash, and nobody else
/// wrote it.
pub fn up_to_date(child: &Child, found: Option<&ObjectMeta>) -> bool {
    let want = child
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_SPEC_HASH));
    found.is_some_and(|m| {
        want.is_some()
            && m.annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_SPEC_HASH))
                == want
            && !written_by_others(m)
    })
}

/// The desired children that have to be written (stamped), in order.
pub fn to_write(desired: &Desired, found: &Found) -> Vec<Child> {
    desired
        .children
        .iter()
        .cloned()
        .map(stamped)
        .filter(|c| !up_to_date(c, c.found(found)))
        .collect()
}

/// Why an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused the object as invalid (400, 422): it will refuse it again until
    /// the spec changes, so it is reported in the status instead of retried.
    #[error("the API server rejected {kind} {name}: {message}")]
    Rejected {
        /// The child's kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API server's message.
        message: String,
    },
    /// Any other API failure (retried with backoff).
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What the apply stage wrote, and the workload as it is now.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// The serving StatefulSet as applied, or as found when it was up to date.
    pub statefulset: Option<StatefulSet>,
    /// The tuning Job as applied, or as found.
    pub job: Option<Job>,
    /// (kind, name, created) of each object written.
    pub written: Vec<(&'static str, String, bool)>,
}

async fn patch<K>(client: &Client, ns: &str, name: &str, obj: &K) -> Result<K, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    Api::<K>::namespaced(client.clone(), ns)
        .patch(name, &pp, &Patch::Apply(obj))
        .await
}

/// What one write returned that the status needs.
enum Wrote {
    Other,
    StatefulSet(StatefulSet),
    Job(Job),
}

async fn write(client: &Client, ns: &str, child: &Child) -> Result<Wrote, kube::Error> {
    let name = child.name();
    Ok(match child {
        Child::Service(o) => patch::<Service>(client, ns, name, o)
            .await
            .map(|_| Wrote::Other)?,
        Child::ConfigMap(o) => patch::<ConfigMap>(client, ns, name, o)
            .await
            .map(|_| Wrote::Other)?,
        Child::StatefulSet(o) => Wrote::StatefulSet(patch(client, ns, name, o).await?),
        Child::Job(o) => Wrote::Job(patch(client, ns, name, o).await?),
    })
}

/// Writes [`to_write`]'s children; the others are left alone. A ConfigMap goes first (the Job
/// mounts it); the rest at the same time (a workspace's Services and StatefulSet need not wait
/// for each other). Every write is attempted; the first failure is returned.
pub async fn apply(
    client: &Client,
    ns: &str,
    desired: &Desired,
    found: &Found,
) -> Result<Applied, ApplyError> {
    let mut out = Applied {
        statefulset: found.statefulset.clone(),
        job: found.job.clone(),
        written: Vec::new(),
    };
    let (first, rest): (Vec<Child>, Vec<Child>) = to_write(desired, found)
        .into_iter()
        .partition(|c| matches!(c, Child::ConfigMap(_)));
    let mut failure = None;
    for wave in [first, rest] {
        let results =
            futures::future::join_all(wave.iter().map(|child| write(client, ns, child))).await;
        for (child, res) in wave.iter().zip(results) {
            let (kind, name) = (child.kind(), child.name().to_string());
            match res {
                Ok(wrote) => {
                    match wrote {
                        Wrote::StatefulSet(s) => out.statefulset = Some(s),
                        Wrote::Job(j) => out.job = Some(j),
                        Wrote::Other => {}
                    }
                    out.written.push((kind, name, child.found(found).is_none()));
                }
                Err(kube::Error::Api(e)) if e.code == 400 || e.code == 422 => {
                    failure.get_or_insert(ApplyError::Rejected {
                        kind,
                        name,
                        message: e.message,
                    });
                }
                Err(e) => {
                    failure.get_or_insert(e.into());
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::obj;

    fn service(yaml: &str) -> Child {
        Child::Service(obj(yaml))
    }

    #[test]
    fn the_hash_follows_the_content_and_ignores_its_own_annotation() {
        let a = service("metadata: {name: s}\nspec: {ports: [{port: 80}]}");
        let b = service("metadata: {name: s}\nspec: {ports: [{port: 81}]}");
        assert_ne!(spec_hash(&a), spec_hash(&b));
        let stamped_a = stamped(a.clone());
        assert_eq!(spec_hash(&stamped_a), spec_hash(&a));
        assert_eq!(spec_hash(&stamped_a).len(), 64);
    }

    #[test]
    fn only_children_that_differ_are_written() {
        let want = Desired {
            children: vec![
                service("metadata: {name: s}\nspec: {ports: [{port: 80}]}"),
                service("metadata: {name: s-headless}\nspec: {clusterIP: None}"),
            ],
            name_taken: None,
        };
        // Nothing exists: both.
        assert_eq!(to_write(&want, &Found::default()).len(), 2);
        // As applied before (the API server added defaults): nothing.
        let as_stored = |c: &Child, extra: &str| -> Service {
            let hash = spec_hash(c);
            obj(&format!(
                "metadata: {{name: {}, annotations: {{kaito.sh/spec-hash: '{hash}'}}{extra}}}\nspec: {{clusterIP: 10.0.0.7, sessionAffinity: None}}",
                c.name()
            ))
        };
        let found = Found {
            services: want.children.iter().map(|c| as_stored(c, "")).collect(),
            ..Found::default()
        };
        assert!(to_write(&want, &found).is_empty());
        // The spec changed: that one.
        let mut changed = want.clone();
        changed.children[0] = service("metadata: {name: s}\nspec: {ports: [{port: 8080}]}");
        let w = to_write(&changed, &found);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].name(), "s");
        // Someone else edited one (their managedFields entry): that one, to restore it.
        let edited = Found {
            services: vec![
                as_stored(
                    &want.children[0],
                    ", managedFields: [{manager: kaito-controller, operation: Apply}, {manager: kubectl-edit, operation: Update}]",
                ),
                as_stored(
                    &want.children[1],
                    ", managedFields: [{manager: kaito-controller, operation: Apply}, {manager: cloud-controller, operation: Update, subresource: status}]",
                ),
            ],
            ..Found::default()
        };
        let w = to_write(&want, &edited);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].name(), "s");
    }
}
