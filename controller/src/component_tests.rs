//! Component tests of the reconciler and the provisioners against the in-memory API server
//! ([`crate::testutil::MockApi`]) and the local ARM endpoint (the test-only `kaito_fake_arm`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kaito_api::{FINALIZER, Workspace};
use kube::Resource;
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};

use crate::azure::AzureSettings;
use crate::config::{Cloud, Config, Provisioner};
use crate::naming;
use crate::plan::plan;
use crate::provision::{Aks, AnyProvisioner, Karpenter, NodeProvisioner};
use crate::reconcile::{Context, reconcile};
use crate::telemetry::Metrics;
use crate::testutil::{MockApi, obj, ws};

const PHI: &str = include_str!("../../examples/inference/kaito_workspace_phi_3.yaml");
const NAME: &str = "workspace-phi-3-mini";

fn phi(uid: &str) -> Workspace {
    let mut w = ws(PHI);
    w.metadata.uid = Some(uid.into());
    w.metadata.finalizers = Some(vec![FINALIZER.into()]);
    w
}

fn ws_path(ns: &str, name: &str) -> String {
    format!("{}/{name}", Workspace::url_path(&(), Some(ns)))
}

fn claim_path(name: &str) -> String {
    format!("/apis/karpenter.sh/v1/nodeclaims/{name}")
}

fn svc_path(name: &str) -> String {
    format!("/api/v1/namespaces/default/services/{name}")
}

/// A ready GPU node provisioned for `w`.
fn node_for(w: &Workspace) -> Node {
    obj(&format!(
        "metadata: {{name: n1, labels: {{apps: phi-3, kaito.sh/workspace: {}, kaito.sh/workspacenamespace: {}}}}}\n\
         status:\n  conditions: [{{type: Ready, status: \"True\"}}]\n  allocatable: {{nvidia.com/gpu: \"1\"}}",
        naming::name(w),
        naming::namespace(w)
    ))
}

fn context(
    mock: &MockApi,
    provisioner: Provisioner,
    p: AnyProvisioner,
    nodes: Vec<Node>,
) -> Arc<Context> {
    let (store, mut writer) = reflector::store::<Node>();
    for n in nodes {
        writer.apply_watcher_event(&watcher::Event::Apply(n));
    }
    Arc::new(Context::new(
        mock.client.clone(),
        Config::new(Cloud::Azure, provisioner),
        p,
        store,
        Arc::new(Metrics::new()),
    ))
}

/// The Karpenter provisioner against `mock`.
fn karpenter(mock: &MockApi) -> Karpenter {
    let cfg = Config::new(Cloud::Azure, Provisioner::Karpenter);
    Karpenter::new(mock.client.clone(), cfg.karpenter.clone())
}

/// [`phi`] with UID `uid-1`, stored in `mock`.
fn stored_phi(mock: &MockApi) -> Workspace {
    let w = phi("uid-1");
    mock.put(&ws_path("default", NAME), serde_json::to_value(&w).unwrap());
    w
}

/// A reconciler context with the Karpenter provisioner and a ready node for `w`.
fn karpenter_context(mock: &MockApi, w: &Workspace) -> Arc<Context> {
    let p = AnyProvisioner::Karpenter(Box::new(karpenter(mock)));
    context(mock, Provisioner::Karpenter, p, vec![node_for(w)])
}

/// The `status` bodies the reconciler patched onto the workspace.
fn status_patches(mock: &MockApi, ns: &str, name: &str) -> Vec<Value> {
    mock.calls("PATCH", &format!("{}/status", ws_path(ns, name)))
        .into_iter()
        .map(|r| r.body["status"].clone())
        .collect()
}

fn condition(status: &Value, type_: &str) -> Option<Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

#[tokio::test]
async fn a_service_named_like_the_workspace_is_left_alone_and_reported() {
    let mock = MockApi::start().await;
    let w = stored_phi(&mock);
    let theirs = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": "default", "uid": "svc-uid"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "theirs"},
                 "ports": [{"port": 443, "targetPort": 8443}]}
    });
    mock.put(&svc_path(NAME), theirs.clone());
    let ctx = karpenter_context(&mock, &w);
    let _ = reconcile(Arc::new(w), ctx).await;

    assert!(
        mock.calls("PATCH", &svc_path(NAME)).is_empty(),
        "the foreign Service was patched"
    );
    assert_eq!(
        mock.get(&svc_path(NAME)),
        Some(theirs),
        "the foreign Service changed"
    );
    let sts = format!("/apis/apps/v1/namespaces/default/statefulsets/{NAME}");
    assert!(
        mock.calls("PATCH", &sts).is_empty(),
        "no workload without its Service"
    );
    let patches = status_patches(&mock, "default", NAME);
    let last = patches.last().expect("a status patch");
    let c = condition(last, "InferenceReady").expect("InferenceReady");
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "ChildNameTaken", "{c}");
    let msg = c["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&format!("Service default/{NAME}")), "{msg}");
    assert!(msg.contains("rename or delete"), "{msg}");
}

#[tokio::test]
async fn an_own_service_is_applied() {
    let mock = MockApi::start().await;
    let w = stored_phi(&mock);
    let ours = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": "default",
                     "ownerReferences": [{"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                                          "name": NAME, "uid": "uid-1", "controller": true}]},
        "spec": {"type": "ClusterIP"}
    });
    mock.put(&svc_path(NAME), ours);
    let ctx = karpenter_context(&mock, &w);
    reconcile(Arc::new(w), ctx).await.expect("reconcile");
    assert_eq!(mock.calls("PATCH", &svc_path(NAME)).len(), 1);
    let sts = format!("/apis/apps/v1/namespaces/default/statefulsets/{NAME}");
    assert_eq!(mock.calls("PATCH", &sts).len(), 1);
}

#[tokio::test]
async fn nodeclaims_of_another_workspace_uid_are_neither_adopted_nor_deleted() {
    let mock = MockApi::start().await;
    let w = phi("uid-1");
    let karpenter = karpenter(&mock);
    let p = plan(&w, Cloud::Azure, None).expect("plan");
    let mut names = Vec::new();
    for i in [0, 3] {
        let name = naming::nodeclaim_name("default", NAME, i);
        let claim = json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": name, "labels": {
                "kaito.sh/workspace": NAME, "kaito.sh/workspacenamespace": "default",
                "kaito.sh/workspaceuid": "uid-of-a-deleted-workspace"}},
            "spec": {}
        });
        mock.put(&claim_path(&name), claim);
        names.push(name);
    }
    let rep = karpenter.ensure(&w, &p).await.expect("ensure");
    let (reason, message) = rep.failure.expect("a failure naming the claim");
    assert_eq!(reason, kaito_api::Reason::ChildNameTaken);
    assert!(message.contains(&names[0]), "{message}");
    assert!(message.contains("uid-of-a-deleted-workspace"), "{message}");
    assert!(karpenter.release(&w).await.expect("release"));
    for n in &names {
        let path = claim_path(n);
        assert!(mock.calls("DELETE", &path).is_empty(), "{n} deleted");
        assert!(mock.calls("PATCH", &path).is_empty(), "{n} patched");
        assert!(mock.get(&path).is_some(), "{n} gone");
    }
}

#[tokio::test]
async fn own_nodeclaims_are_released() {
    let mock = MockApi::start().await;
    let w = phi("uid-1");
    let karpenter = karpenter(&mock);
    let p = plan(&w, Cloud::Azure, None).expect("plan");
    let rep = karpenter.ensure(&w, &p).await.expect("ensure");
    assert!(rep.failure.is_none(), "{rep:?}");
    let name = naming::nodeclaim_name("default", NAME, 0);
    let stored = mock.get(&claim_path(&name)).expect("claim created");
    assert_eq!(
        stored["metadata"]["labels"]["kaito.sh/workspaceuid"],
        "uid-1"
    );
    assert!(!karpenter.release(&w).await.expect("release"));
    assert_eq!(mock.calls("DELETE", &claim_path(&name)).len(), 1);
    assert!(karpenter.release(&w).await.expect("release"));
}

#[tokio::test]
async fn the_nodeclaim_sweeper_deletes_claims_of_gone_or_recreated_workspaces() {
    let mock = MockApi::start().await;
    let karpenter = karpenter(&mock);
    let live = phi("uid-live");
    mock.put(
        &ws_path("default", NAME),
        serde_json::to_value(&live).unwrap(),
    );
    let claim = |name: &str, ws: &str, uid: Option<&str>| {
        let mut labels =
            json!({"kaito.sh/workspace": ws, "kaito.sh/workspacenamespace": "default"});
        if let Some(u) = uid {
            labels["kaito.sh/workspaceuid"] = json!(u);
        }
        mock.put(
            &claim_path(name),
            json!({"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
                   "metadata": {"name": name, "labels": labels}, "spec": {}}),
        );
    };
    claim("live-0", NAME, Some("uid-live"));
    claim("legacy-0", NAME, None);
    claim("gone-0", "deleted-workspace", Some("uid-gone"));
    claim("recreated-0", NAME, Some("uid-before"));
    mock.put(
        &claim_path("not-ours"),
        json!({"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
               "metadata": {"name": "not-ours", "labels": {"team": "x"}}, "spec": {}}),
    );
    let mut deleted = karpenter.delete_orphans(&mock.client).await.expect("sweep");
    deleted.sort();
    assert_eq!(deleted, ["gone-0", "recreated-0"]);
    for kept in ["live-0", "legacy-0", "not-ours"] {
        assert!(mock.get(&claim_path(kept)).is_some(), "{kept} deleted");
    }
    for gone in ["gone-0", "recreated-0"] {
        assert!(mock.get(&claim_path(gone)).is_none(), "{gone} kept");
    }
}

async fn fake_aks(token: &str) -> (kaito_fake_arm::Running, Aks) {
    let r = kaito_fake_arm::start("127.0.0.1:0".parse().unwrap(), "right-token")
        .await
        .expect("fake ARM");
    r.arm.set_faults(kaito_fake_arm::Faults {
        operation_ms: 100,
        ..Default::default()
    });
    let aks = Aks::new(AzureSettings {
        orphan_interval: Duration::from_secs(3600),
        ..AzureSettings::local_endpoint(&r.url, &r.ca_pem, token)
    })
    .expect("aks");
    (r, aks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_sweeper_deletes_pools_of_gone_or_recreated_workspaces() {
    let mock = MockApi::start().await;
    let (r, aks) = fake_aks("right-token").await;
    let mk = |name: &str, uid: &str| {
        let mut w = ws(&PHI.replace(NAME, name));
        w.metadata.uid = Some(uid.into());
        w
    };
    let live = mk("live", "uid-live");
    let gone = mk("gone", "uid-gone");
    let before = mk("recreated", "uid-before");
    let now = mk("recreated", "uid-now");
    for w in [&live, &gone, &before] {
        let p = plan(w, Cloud::Azure, None).expect("plan");
        let rep = aks.ensure(w, &p).await.expect("ensure");
        assert!(rep.failure.is_none(), "{rep:?}");
    }
    for w in [&live, &now] {
        mock.put(
            &ws_path("default", naming::name(w)),
            serde_json::to_value(w).unwrap(),
        );
    }
    let mut deleted = aks.delete_orphans(&mock.client).await.expect("sweep");
    deleted.sort();
    let mut want = vec![
        naming::pool_name("default", "gone"),
        naming::pool_name("default", "recreated"),
    ];
    want.sort();
    assert_eq!(deleted, want);
    let pools = r.arm.pools();
    let live_pool = naming::pool_name("default", "live");
    assert!(
        pools.get(&live_pool).is_some_and(|(s, _)| s != "Deleting"),
        "{pools:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_cloud_credentials_block_deletion_with_a_condition_naming_the_way_out() {
    let mock = MockApi::start().await;
    let (_r, aks) = fake_aks("expired-token").await;
    let mut w = phi("uid-1");
    w.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    mock.put(&ws_path("default", NAME), serde_json::to_value(&w).unwrap());
    let ctx = context(
        &mock,
        Provisioner::Aks,
        AnyProvisioner::Aks(Box::new(aks)),
        vec![],
    );
    let res = reconcile(Arc::new(w), ctx).await;
    assert!(res.is_err(), "a blocked deletion is retried with backoff");
    let stored = mock.get(&ws_path("default", NAME)).expect("workspace");
    assert_eq!(
        stored["metadata"]["finalizers"],
        json!([FINALIZER]),
        "the finalizer stays while the pool may exist"
    );
    let patches = status_patches(&mock, "default", NAME);
    let last = patches.last().expect("a status patch");
    let c = condition(last, "DeletionBlocked").expect("DeletionBlocked");
    assert_eq!(c["status"], "True");
    let msg = c["message"].as_str().unwrap_or_default();
    let pool = naming::pool_name("default", NAME);
    for want in [
        "AuthenticationFailed",
        &pool,
        "kubectl patch workspace workspace-phi-3-mini -n default --type=json -p '[{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}]'",
        "az aks nodepool delete",
    ] {
        assert!(msg.contains(want), "{want:?} missing from {msg}");
    }
}

#[test]
fn one_workspace_that_does_not_decode_does_not_hide_the_others() {
    use crate::reconcile::decode_event;
    use kube::api::{DynamicObject, ObjectList};
    // Passes the CRD schema (inference.template preserves unknown fields) but not serde.
    let bad = json!({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": "bad", "namespace": "default", "uid": "u-bad"},
        "inference": {"template": {"spec": {"containers": "not a list"}}}});
    let mut good = serde_json::to_value(phi("u-good")).unwrap();
    good["apiVersion"] = json!("kaito.sh/v1beta1");
    good["kind"] = json!("Workspace");
    let list = json!({"apiVersion": "kaito.sh/v1beta1", "kind": "WorkspaceList",
                      "metadata": {"resourceVersion": "7"}, "items": [bad.clone(), good.clone()]});
    // What a typed watch does with this list: the whole page fails, nothing is reconciled.
    assert!(serde_json::from_value::<ObjectList<Workspace>>(list.clone()).is_err());
    let items: ObjectList<DynamicObject> = serde_json::from_value(list).expect("untyped list");
    let decoded: Vec<_> = items
        .items
        .into_iter()
        .filter_map(|o| decode_event(watcher::Event::InitApply(o)))
        .collect();
    assert_eq!(decoded.len(), 1);
    match &decoded[0] {
        watcher::Event::InitApply(w) => {
            assert_eq!(naming::name(w), NAME);
            assert_eq!(naming::uid(w), "u-good");
            assert!(w.inference.is_some());
        }
        other => panic!("unexpected {other:?}"),
    }
    // An update that breaks a stored workspace removes the stale copy from the store.
    let broken: DynamicObject = serde_json::from_value(bad).unwrap();
    match decode_event(watcher::Event::Apply(broken)) {
        Some(watcher::Event::Delete(w)) => assert_eq!(naming::name(&w), "bad"),
        other => panic!("unexpected {other:?}"),
    }
}

/// The workspace as the mock stores it now (status and finalizers included).
fn stored(mock: &MockApi) -> Workspace {
    serde_json::from_value(mock.get(&ws_path("default", NAME)).expect("workspace")).unwrap()
}

fn sts_path() -> String {
    format!("/apis/apps/v1/namespaces/default/statefulsets/{NAME}")
}

/// The stored StatefulSet as its controller reports it once its one replica is ready.
fn statefulset_turns_ready(mock: &MockApi) -> Value {
    let mut sts = mock.get(&sts_path()).expect("statefulset");
    sts["metadata"]["generation"] = json!(1);
    sts["status"] = json!({"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                           "observedGeneration": 1});
    mock.put(&sts_path(), sts.clone());
    sts
}

/// The phi seed stored in `mock` and reconciled once with the Karpenter provisioner and a
/// ready node: its NodeClaim, both Services, the StatefulSet and the status are written.
async fn phi_created(mock: &MockApi) -> Arc<Context> {
    let w = stored_phi(mock);
    let ctx = karpenter_context(mock, &w);
    reconcile(Arc::new(w), ctx.clone())
        .await
        .expect("reconcile");
    ctx
}

/// A context like [`karpenter_context`]'s, reading children and pods from `caches`.
fn cached_context(mock: &MockApi, caches: crate::pipeline::fetch::ChildCaches) -> Arc<Context> {
    let p = AnyProvisioner::Karpenter(Box::new(karpenter(mock)));
    let ctx = context(
        mock,
        Provisioner::Karpenter,
        p,
        vec![node_for(&stored(mock))],
    );
    Arc::new(
        Arc::try_unwrap(ctx)
            .ok()
            .expect("one owner")
            .with_caches(caches),
    )
}

#[tokio::test]
async fn a_reconcile_on_the_workspace_as_it_was_before_its_status_write_does_not_write_it_again() {
    let mock = MockApi::start().await;
    let ctx = phi_created(&mock).await;
    let before = status_patches(&mock, "default", NAME).len();
    let mut sts = statefulset_turns_ready(&mock);
    // A child's event can wake a reconcile on the workspace as the watch last delivered it,
    // before the status write of the reconcile that just ran.
    let stale = Arc::new(stored(&mock));
    reconcile(stale.clone(), ctx.clone())
        .await
        .expect("reconcile");
    // Events, sent (POST) or counted again in a series (PATCH).
    let events = |m: &MockApi| {
        m.writes()
            .iter()
            .filter(|w| w.contains("/apis/events.k8s.io/v1/namespaces/default/events"))
            .count()
    };
    let ready_since = |m: &MockApi| {
        let last = status_patches(m, "default", NAME)
            .pop()
            .expect("a status write");
        condition(&last, "WorkspaceSucceeded").expect("WorkspaceSucceeded")["lastTransitionTime"]
            .clone()
    };
    let written = status_patches(&mock, "default", NAME).len();
    assert_eq!(
        written,
        before + 1,
        "the workspace turning ready is written"
    );
    let (events_at_ready, since) = (events(&mock), ready_since(&mock));
    reconcile(stale.clone(), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(
        status_patches(&mock, "default", NAME).len(),
        written,
        "the same status written twice"
    );
    // A status that differs from the one written (here its message) is written, over the
    // status written, not over the stale one: no second Ready Event, the same transition time.
    sts["status"]["readyReplicas"] = json!(2);
    mock.put(&sts_path(), sts);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    reconcile(stale, ctx.clone()).await.expect("reconcile");
    assert_eq!(status_patches(&mock, "default", NAME).len(), written + 1);
    assert_eq!(events(&mock), events_at_ready, "the Ready Event sent again");
    assert_eq!(ready_since(&mock), since);
    // Once the watch shows a newer version, a status that differs from it is written again.
    let mut reset = stored(&mock);
    reset.metadata.resource_version = Some("changed-by-someone".into());
    reset.status = None;
    reconcile(Arc::new(reset), ctx).await.expect("reconcile");
    assert_eq!(status_patches(&mock, "default", NAME).len(), written + 2);
}

#[tokio::test]
async fn a_second_reconcile_of_an_unchanged_ready_workspace_writes_nothing() {
    let mock = MockApi::start().await;
    let ctx = phi_created(&mock).await;
    let first = mock.writes();
    for want in [
        svc_path(NAME),
        svc_path(&format!("{NAME}-headless")),
        sts_path(),
    ] {
        assert!(
            first.contains(&format!("PATCH {want}")),
            "{want}: {first:?}"
        );
    }
    // The StatefulSet's pod turns ready: the status follows (one status write, no apply).
    statefulset_turns_ready(&mock);
    reconcile(Arc::new(stored(&mock)), ctx.clone())
        .await
        .expect("reconcile");
    let second: Vec<String> = mock.writes().split_off(first.len());
    assert!(
        second
            .iter()
            .any(|r| r.ends_with(&format!("{}/status", ws_path("default", NAME)))),
        "{second:?}"
    );
    assert!(
        !second
            .iter()
            .any(|r| r.contains("/services/") || r.contains("/statefulsets/")),
        "an unchanged child was applied again: {second:?}"
    );
    assert_eq!(
        stored(&mock).status.and_then(|s| s.state).as_deref(),
        Some("Ready")
    );
    // Nothing changed: nothing is written.
    let before = mock.writes().len();
    let action = reconcile(Arc::new(stored(&mock)), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(
        mock.writes().split_off(before),
        Vec::<String>::new(),
        "writes on an unchanged ready workspace"
    );
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    // A changed spec is applied again (the StatefulSet only).
    let mut changed = stored(&mock);
    changed
        .inference
        .as_mut()
        .expect("inference")
        .preset
        .as_mut()
        .expect("preset")
        .name = "phi-3-mini-128k-instruct".into();
    let before = mock.writes().len();
    reconcile(Arc::new(changed), ctx).await.expect("reconcile");
    let third = mock.writes().split_off(before);
    assert!(
        third.contains(&format!("PATCH {}", sts_path())),
        "{third:?}"
    );
    assert!(
        !third.iter().any(|r| r.contains("/services/")),
        "the unchanged Services were applied again: {third:?}"
    );
}

#[tokio::test]
async fn the_finalizer_comes_first_and_goes_once_the_nodes_are_gone() {
    let mock = MockApi::start().await;
    let mut w = phi("uid-1");
    w.metadata.finalizers = None;
    mock.put(&ws_path("default", NAME), serde_json::to_value(&w).unwrap());
    let ctx = karpenter_context(&mock, &w);
    // First the finalizer, nothing else (its watch event brings the workspace back).
    let action = reconcile(Arc::new(w), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert_eq!(
        mock.writes(),
        [format!("PATCH {}", ws_path("default", NAME))]
    );
    assert_eq!(
        stored(&mock).metadata.finalizers,
        Some(vec![FINALIZER.into()])
    );
    // Running: a NodeClaim.
    reconcile(Arc::new(stored(&mock)), ctx.clone())
        .await
        .expect("reconcile");
    let claim = claim_path(&naming::nodeclaim_name("default", NAME, 0));
    assert!(mock.get(&claim).is_some());
    // Deleted: the claim goes first, the finalizer stays until it is gone.
    let mut deleted = stored(&mock);
    deleted.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
    );
    let err = reconcile(Arc::new(deleted.clone()), ctx.clone())
        .await
        .expect_err("waiting for the nodes");
    assert!(
        matches!(err, crate::reconcile::ReconcileError::Releasing),
        "{err}"
    );
    assert_eq!(
        err.retry(),
        crate::reconcile::Retry::After(Duration::from_secs(2))
    );
    assert!(mock.get(&claim).is_none(), "claim not deleted");
    assert_eq!(
        stored(&mock).metadata.finalizers,
        Some(vec![FINALIZER.into()])
    );
    reconcile(Arc::new(deleted), ctx).await.expect("reconcile");
    assert_eq!(stored(&mock).metadata.finalizers, Some(vec![]));
}

#[test]
fn the_error_policy_looks_at_the_error() {
    use crate::reconcile::{ReconcileError, Retry};
    let api = kube::Error::Api(
        kube::core::Status::failure("etcd timeout", "Timeout")
            .with_code(504)
            .boxed(),
    );
    assert_eq!(ReconcileError::Kube(api).retry(), Retry::Backoff);
    assert_eq!(
        ReconcileError::NameTaken("x".into()).retry(),
        Retry::Backoff
    );
    assert_eq!(
        ReconcileError::Permanent("no name".into()).retry(),
        Retry::Never
    );
}

/// A store holding `objects`, as the controller's watch caches would.
fn store_of<K>(objects: Vec<K>) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    let (store, mut writer) = reflector::store::<K>();
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(o));
    }
    store
}

#[tokio::test]
async fn with_watch_caches_a_ready_workspace_is_reconciled_without_reading_its_children() {
    use crate::pipeline::fetch::ChildCaches;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{Pod, Service};
    let mock = MockApi::start().await;
    phi_created(&mock).await;
    // The children as the watch caches hold them once the pod is ready.
    let sts = statefulset_turns_ready(&mock);
    let services: Vec<Service> = [NAME.to_string(), format!("{NAME}-headless")]
        .iter()
        .map(|n| serde_json::from_value(mock.get(&svc_path(n)).expect("service")).unwrap())
        .collect();
    let pod: Pod = obj(&format!(
        "metadata: {{name: {NAME}-0, namespace: default, labels: {{kaito.sh/workspace: {NAME}}}}}\n\
         status: {{phase: Running, conditions: [{{type: Ready, status: \"True\"}}]}}"
    ));
    // As the cache keeps it: without its pod template and field sets.
    let mut slimmed = serde_json::from_value::<StatefulSet>(sts).unwrap();
    crate::pipeline::fetch::slim_statefulset(&mut slimmed);
    assert!(slimmed.spec.as_ref().unwrap().template.spec.is_none());
    let caches = ChildCaches {
        statefulsets: store_of(vec![slimmed]),
        services: store_of(services),
        jobs: store_of(Vec::new()),
        pods: store_of(vec![pod]),
    };
    let cached = cached_context(&mock, caches);
    let before = mock.requests().len();
    reconcile(Arc::new(stored(&mock)), cached.clone())
        .await
        .expect("reconcile");
    let reads: Vec<String> = mock.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path.clone())
        .filter(|p| p.contains("/statefulsets") || p.contains("/services") || p.contains("/pods"))
        .collect();
    assert_eq!(
        reads,
        Vec::<String>::new(),
        "children read from the API server"
    );
    assert_eq!(
        stored(&mock).status.and_then(|s| s.state).as_deref(),
        Some("Ready"),
        "the status follows the cached children"
    );
    // A child the cache lacks is looked up on the API server before it is written.
    let cold = cached_context(
        &mock,
        ChildCaches {
            statefulsets: store_of(Vec::new()),
            services: store_of(Vec::new()),
            jobs: store_of(Vec::new()),
            pods: store_of(Vec::new()),
        },
    );
    let before = mock.requests().len();
    let writes_before = mock.writes().len();
    reconcile(Arc::new(stored(&mock)), cold)
        .await
        .expect("reconcile");
    assert!(
        mock.requests()[before..]
            .iter()
            .any(|r| r.method == "GET" && r.path == sts_path()),
        "a cache miss reads the API server"
    );
    assert!(
        !mock.writes()[writes_before..]
            .iter()
            .any(|r| r.contains("/statefulsets/") || r.contains("/services/")),
        "the children found on the API server were written again"
    );
}
