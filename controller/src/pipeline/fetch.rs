//! The fetch stage: everything a reconcile reads, and nothing else. Nodes come from the
//! reflector's store (no request); the children and the pods from the watch caches of
//! [`ChildCaches`] when the controller runs them (a child the cache lacks is looked up on the
//! API server before it is created: it may be another owner's object the cache does not hold,
//! or one just written whose watch event has not arrived); the ConfigMaps from the API server,
//! each only when a later stage needs it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use kaito_api::admission::{
    EngineParams, FieldError, INFERENCE_CONFIG_KEY, parse_inference_config_map,
};
use kaito_api::{LABEL_WORKSPACE, Workspace};
use kaito_presets::GpuShape;
use kube::api::ListParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};

use super::desired::{Found, Lookup};
use crate::config::{Config, Provisioner};
use crate::naming;
use crate::nodes::{self, NodeCensus};
use crate::ownership::controlled_by;
use crate::plan;

/// Watch caches (reflector stores) of the children the controller writes and of their pods
/// (objects carrying `kaito.sh/workspace`), so that a reconcile of a workspace whose children
/// exist reads nothing from the API server. Kept lean: `managedFields` keep their manager and
/// subresource, not the field sets; StatefulSets and Jobs lose their pod template, pods all
/// of their spec but the containers' names and environment.
#[derive(Clone)]
pub struct ChildCaches {
    /// StatefulSets.
    pub statefulsets: Store<StatefulSet>,
    /// Services.
    pub services: Store<Service>,
    /// Jobs.
    pub jobs: Store<Job>,
    /// Pods.
    pub pods: Store<Pod>,
}

/// Drops what the controller never reads of a cached object (the field sets of its
/// `managedFields`, the bulk of most objects), keeping who wrote it.
pub fn slim<K: Resource>(obj: &mut K) {
    for m in obj.meta_mut().managed_fields.iter_mut().flatten() {
        m.fields_v1 = None;
    }
}

/// [`slim`], and the pod template: of a StatefulSet found, the controller reads its metadata
/// (the spec hash, the managers), `spec.replicas` and `status`.
pub fn slim_statefulset(sts: &mut StatefulSet) {
    slim(sts);
    if let Some(spec) = sts.spec.as_mut() {
        spec.template = Default::default();
    }
}

/// [`slim`], and of the spec only the containers' names and environment: of a pod the
/// controller reads its metadata, its status and where a container's `HF_TOKEN` comes from.
pub fn slim_pod(pod: &mut Pod) {
    slim(pod);
    if let Some(spec) = pod.spec.as_mut() {
        let containers = std::mem::take(&mut spec.containers)
            .into_iter()
            .map(|c| k8s_openapi::api::core::v1::Container {
                name: c.name,
                env: c.env,
                ..Default::default()
            })
            .collect();
        *spec = k8s_openapi::api::core::v1::PodSpec {
            containers,
            ..Default::default()
        };
    }
}

/// [`slim`], and the pod template: of a Job found, the controller reads its metadata and
/// `status`.
pub fn slim_job(job: &mut Job) {
    slim(job);
    if let Some(spec) = job.spec.as_mut() {
        spec.template = Default::default();
    }
}

/// The object `name` in `ns`: from `cache` when it holds it, else what `lookup` (a request to
/// the API server, not sent on a hit) finds.
async fn cached_or<K>(
    cache: Option<&Store<K>>,
    ns: &str,
    name: &str,
    lookup: impl Future<Output = Result<Option<K>, kube::Error>>,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone,
{
    match cache.and_then(|c| c.get(&ObjectRef::new(name).within(ns))) {
        Some(hit) => Ok(Some((*hit).clone())),
        None => lookup.await,
    }
}

/// What the plan needs: the nodes and the runtime parameters.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// The workspace's nodes, ready or not.
    pub census: NodeCensus,
    /// Bring-your-own: the shape of the ready GPU nodes, from their labels.
    pub byo_shape: Option<GpuShape>,
    /// The parameters of `inference.config`, or why they cannot be read.
    pub engine: Result<EngineParams, String>,
}

/// Reads the nodes (from `nodes`) and the ConfigMap of `inference.config`.
pub async fn inputs(
    client: &Client,
    config: &Config,
    nodes: &Store<Node>,
    ws: &Workspace,
) -> Result<Inputs, kube::Error> {
    let byo = config.provisioner == Provisioner::Byo;
    let all_nodes = nodes.state();
    let cpu_only = plan::cpu_only_size(ws, config.cloud);
    let census = nodes::census(ws, all_nodes.iter().map(|n| n.as_ref()), byo, cpu_only);
    let byo_shape = if byo && !cpu_only {
        let labelled: Vec<(String, BTreeMap<String, String>)> = all_nodes
            .iter()
            .filter(|n| {
                census
                    .ready
                    .iter()
                    .any(|r| Some(r) == n.metadata.name.as_ref())
            })
            .map(|n| (n.name_any(), n.labels().clone()))
            .collect();
        GpuShape::uniform(&labelled).ok()
    } else {
        None
    };
    let ns = naming::namespace(ws);
    let engine = match ws.inference.as_ref().and_then(|i| i.config.as_deref()) {
        Some(cm) if !cm.is_empty() => {
            let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            let data = cm_api.get_opt(cm).await?.map(|c| c.data);
            let parsed = match data {
                Some(data) => parse_inference_config_map(cm, data.as_ref()).map(|c| c.params),
                None => Err(vec![FieldError {
                    field: "inference.config".into(),
                    message: format!(
                        "ConfigMap {cm:?} not found in namespace {ns:?}: create it (key \
                         {INFERENCE_CONFIG_KEY}) or remove inference.config"
                    ),
                }]),
            };
            parsed.map_err(|errors| {
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        }
        _ => Ok(EngineParams::default()),
    };
    Ok(Inputs {
        census,
        byo_shape,
        engine,
    })
}

/// Reads the children [`Lookup`] names (None: the spec is invalid; only the StatefulSet is
/// read, to report it while it exists). Services and the ConfigMap only matter once the
/// workload may be written: when the nodes are ready, or its StatefulSet exists.
pub async fn children(
    client: &Client,
    caches: Option<&ChildCaches>,
    ws: &Workspace,
    lookup: Option<&Lookup>,
    nodes_ready: bool,
) -> Result<Found, kube::Error> {
    let ns = naming::namespace(ws);
    let name = naming::name(ws);
    let mut found = Found::default();
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let sts_cache = caches.map(|c| &c.statefulsets);
    match lookup {
        None => {
            found.statefulset = cached_or(sts_cache, ns, name, sts_api.get_opt(name))
                .await?
                .filter(|s| controlled_by(&s.metadata, ws));
        }
        Some(Lookup::Inference) => {
            // The StatefulSet and both Services are looked up together when the workload may be
            // created (nodes ready), else the Services only once the StatefulSet exists.
            let svc_api: Api<Service> = Api::namespaced(client.clone(), ns);
            let svc_cache = caches.map(|c| &c.services);
            let headless = naming::headless_service(name);
            let services = || {
                futures::future::try_join(
                    cached_or(svc_cache, ns, name, svc_api.get_opt(name)),
                    cached_or(svc_cache, ns, &headless, svc_api.get_opt(&headless)),
                )
            };
            let (sts, svcs) = if nodes_ready {
                let (sts, svcs) = futures::future::try_join(
                    cached_or(sts_cache, ns, name, sts_api.get_opt(name)),
                    services(),
                )
                .await?;
                (sts, Some(svcs))
            } else {
                let sts = cached_or(sts_cache, ns, name, sts_api.get_opt(name)).await?;
                let svcs = match sts {
                    Some(_) => Some(services().await?),
                    None => None,
                };
                (sts, svcs)
            };
            let foreign = sts
                .as_ref()
                .is_some_and(|s| !controlled_by(&s.metadata, ws));
            found.statefulset = sts;
            if let (false, Some((main, headless))) = (foreign, svcs) {
                found.services.extend(main);
                found.services.extend(headless);
            }
        }
        Some(Lookup::Tuning { config_map }) => {
            let job_api: Api<Job> = Api::namespaced(client.clone(), ns);
            found.job = cached_or(caches.map(|c| &c.jobs), ns, name, job_api.get_opt(name)).await?;
            if found.job.is_none()
                && nodes_ready
                && let Some(cm) = config_map
            {
                let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                found.config_map = cm_api.get_opt(cm).await?;
            }
        }
    }
    Ok(found)
}

/// The workload's pods (by the workspace label): from the pod cache when there is one.
pub async fn pods(
    client: &Client,
    caches: Option<&ChildCaches>,
    ws: &Workspace,
) -> Result<Vec<Pod>, kube::Error> {
    let ns = naming::namespace(ws);
    let name = naming::name(ws);
    if let Some(c) = caches {
        return Ok(c
            .pods
            .state()
            .iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(ns)
                    && p.labels().get(LABEL_WORKSPACE).map(String::as_str) == Some(name)
            })
            .map(|p| (**p).clone())
            .collect());
    }
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{LABEL_WORKSPACE}={name}"));
    Ok(pod_api.list(&lp).await?.items)
}

/// The object called `name`, through `list` with a field selector (the controller's role may
/// list but not get NodeClaims).
pub async fn named<K>(api: &Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let lp = ListParams::default().fields(&format!("metadata.name={name}"));
    Ok(api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .find(|o| o.meta().name.as_deref() == Some(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::obj;

    #[test]
    fn a_cached_pod_keeps_what_the_status_reads() {
        let mut pod: Pod = obj(
            "metadata:\n  name: p\n  labels: {kaito.sh/workspace: w}\n  managedFields: [{manager: kubelet, operation: Update, fieldsType: FieldsV1, fieldsV1: {f:status: {}}, subresource: status}]\n\
             spec:\n  nodeName: n1\n  volumes: [{name: weights, emptyDir: {}}]\n  containers:\n  - name: model\n    image: runtime:1\n    args: [serve]\n    env: [{name: HF_TOKEN, valueFrom: {secretKeyRef: {name: hf, key: HF_TOKEN}}}]\n    readinessProbe: {httpGet: {path: /health, port: 5000}}\n\
             status: {phase: Running}",
        );
        slim_pod(&mut pod);
        let spec = pod.spec.as_ref().expect("spec");
        assert!(spec.volumes.is_none() && spec.node_name.is_none());
        let c = &spec.containers[0];
        assert_eq!(c.name, "model");
        assert!(c.image.is_none() && c.readiness_probe.is_none());
        let env = c.env.as_ref().expect("env");
        assert_eq!(
            env[0]
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|r| r.name.as_str()),
            Some("hf")
        );
        let managers = pod.metadata.managed_fields.as_ref().expect("managers");
        assert_eq!(managers[0].manager.as_deref(), Some("kubelet"));
        assert!(managers[0].fields_v1.is_none());
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    }
}
