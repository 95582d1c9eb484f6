//! The reconcile loop: fetch → plan → build → apply → status, with the finalizer, watches,
//! Events and metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kaito_api::admission::{
    EngineParams, FieldError, INFERENCE_CONFIG_KEY, parse_inference_config_map,
};
use kaito_api::{
    CONDITION_RESOURCE_READY, FINALIZER, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, Workspace,
};
use kaito_presets::GpuShape;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{Config, Provisioner};

/// Workspaces reconciled at the same time (the rest wait in kube-runtime's queue).
const MAX_CONCURRENT_RECONCILES: u16 = 16;
use crate::inference::{self, BuildError};
use crate::naming::{self, FIELD_MANAGER};
use crate::nodes;
use crate::ownership::{self, controlled_by};
use crate::plan::{self, WorkloadKind};
use crate::provision::{
    AnyProvisioner, NodeProvisioner, ProvisionError, ProvisionReport, nodeclaim_resource,
};
use crate::status::{self, Observed};
use crate::telemetry::{ErrorLabels, Metrics};
use crate::tuning;

/// A reconcile failed for a reason worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A builder failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The provisioner failed.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// Serialization failed.
    #[error("serializing: {0}")]
    Serde(#[from] serde_json::Error),
    /// A child's name is held by an object the workspace does not own (reported in its
    /// status; looked at again with backoff).
    #[error("{0}")]
    NameTaken(String),
}

impl ReconcileError {
    /// Category label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Build(_) => "build",
            Self::Provision(_) => "provision",
            Self::Serde(_) => "serde",
            Self::NameTaken(_) => "name_taken",
        }
    }
}

/// Shared state of the reconciler.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Configuration.
    pub config: Config,
    /// The node provisioner.
    pub provisioner: AnyProvisioner,
    /// All nodes (reflector store).
    pub nodes: Store<Node>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context.
    pub fn new(
        client: Client,
        config: Config,
        provisioner: AnyProvisioner,
        nodes: Store<Node>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Self {
            client,
            config,
            provisioner,
            nodes,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn backoff(&self, key: &str, failed: bool) -> Duration {
        let Ok(mut m) = self.failures.lock() else {
            return Duration::from_secs(5);
        };
        if !failed {
            m.remove(key);
            return Duration::ZERO;
        }
        let n = m.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs((1u64 << (*n).min(8)).min(300))
    }
}

async fn publish(
    ctx: &Context,
    ws: &Workspace,
    warning: bool,
    reason: &str,
    note: String,
    action: &str,
) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.chars().take(128).collect(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &ws.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}

/// Reconciles one workspace.
pub async fn reconcile(ws: Arc<Workspace>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = naming::name(&ws).to_string();
    let ns = naming::namespace(&ws).to_string();
    let span = info_span!("reconcile", workspace = %name, namespace = %ns);
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let result = reconcile_inner(&ws, &ctx).instrument(span.clone()).await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    let key = format!("{ns}/{name}");
    if let Err(e) = &result {
        ctx.metrics
            .errors
            .get_or_create(&ErrorLabels {
                category: e.category().into(),
            })
            .inc();
        span.in_scope(|| warn!(error = %e, "reconcile failed; retrying with backoff"));
    } else {
        ctx.backoff(&key, false);
    }
    result
}

/// Requeue with per-workspace exponential backoff (1 s … 5 min) on transient errors.
pub fn error_policy(ws: Arc<Workspace>, _err: &ReconcileError, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", naming::namespace(&ws), naming::name(&ws));
    Action::requeue(ctx.backoff(&key, true))
}

async fn reconcile_inner(ws: &Workspace, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = naming::name(ws);
    let ns = naming::namespace(ws);
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), ns);
    if ws.metadata.deletion_timestamp.is_some() {
        return finalize(ws, ctx, &api).await;
    }
    if !ws.finalizers().iter().any(|f| f == FINALIZER) {
        let mut fins = ws.finalizers().to_vec();
        fins.push(FINALIZER.into());
        let patch =
            json!({"metadata": {"finalizers": fins, "resourceVersion": ws.resource_version()}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        info!("finalizer added");
        return Ok(Action::await_change());
    }

    // Fetch: nodes from the reflector, the byo shape from their labels.
    let byo = ctx.config.provisioner == Provisioner::Byo;
    let all_nodes = ctx.nodes.state();
    let cpu_only = plan::cpu_only_size(ws, ctx.config.cloud);
    let census = nodes::census(ws, all_nodes.iter().map(|n| n.as_ref()), byo, cpu_only);
    let byo_shape = if byo && !cpu_only {
        let labelled: Vec<(String, std::collections::BTreeMap<String, String>)> = all_nodes
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

    // Fetch: the runtime parameters of `inference.config`.
    let engine = match ws.inference.as_ref().and_then(|i| i.config.as_deref()) {
        Some(cm) if !cm.is_empty() => {
            let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
            let data = cm_api.get_opt(cm).await?.map(|c| c.data);
            match data {
                Some(data) => parse_inference_config_map(cm, data.as_ref()).map(|c| c.params),
                None => Err(vec![FieldError {
                    field: "inference.config".into(),
                    message: format!(
                        "ConfigMap {cm:?} not found in namespace {ns:?}: create it (key \
                         {INFERENCE_CONFIG_KEY}) or remove inference.config"
                    ),
                }]),
            }
        }
        _ => Ok(EngineParams::default()),
    };

    // Plan (pure).
    let planned = plan::plan(ws, ctx.config.cloud, byo_shape.as_ref());
    let target = ws.resource.count.unwrap_or(1);
    // The serving image depends on the planned nodes (`{computeCapability}`); one that cannot
    // be chosen is reported like an invalid spec, with the fix.
    let planned = planned
        .map_err(|e| e.to_string())
        .and_then(|p| match p.kind {
            WorkloadKind::Inference if p.preset.is_some() => {
                match inference::serving_image(ws, &p, &ctx.config.workload) {
                    Ok(_) => Ok(p),
                    Err(e) => Err(e.to_string()),
                }
            }
            _ => Ok(p),
        });
    let (plan, invalid) = match (planned, engine.as_ref()) {
        (Ok(p), Ok(_)) => (Some(p), None),
        (Err(e), _) => (None, Some(e)),
        (Ok(_), Err(errors)) => {
            let why: Vec<String> = errors.iter().map(ToString::to_string).collect();
            (None, Some(why.join("; ")))
        }
    };
    let engine = engine.unwrap_or_default();

    // Provision.
    let report = match &plan {
        Some(p) => ctx.provisioner.ensure(ws, p).await?,
        None => ProvisionReport::default(),
    };

    // Build and apply the workload once the nodes are ready (and keep it afterwards).
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let resources_ready = census.ready.len() >= usize::try_from(target.max(1)).unwrap_or(1);
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let job_api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let mut sts = None;
    let mut job = None;
    let mut name_taken = None;
    if let Some(p) = &plan {
        match p.kind {
            WorkloadKind::Inference => {
                let existing = sts_api.get_opt(name).await?;
                let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
                let services = inference::services(ws)?;
                // Never take over an object of a child's name that is not this workspace's.
                if let Some(s) = existing
                    .as_ref()
                    .filter(|s| !controlled_by(&s.metadata, ws))
                {
                    name_taken = Some(ownership::child_name_taken("StatefulSet", &s.metadata, ws));
                } else if resources_ready || existing.is_some() {
                    for svc in &services {
                        if let Some(have) = named(&svc_api, &svc.name_any()).await?
                            && !controlled_by(&have.metadata, ws)
                        {
                            name_taken =
                                Some(ownership::child_name_taken("Service", &have.metadata, ws));
                            break;
                        }
                    }
                }
                if name_taken.is_none() && (resources_ready || existing.is_some()) {
                    for svc in services {
                        let n = svc.name_any();
                        svc_api.patch(&n, &pp, &Patch::Apply(&svc)).await?;
                    }
                    let want = inference::statefulset(
                        ws,
                        p,
                        &ctx.config.workload,
                        ctx.config.provisioner,
                        &engine,
                    )?;
                    let applied = sts_api.patch(name, &pp, &Patch::Apply(&want)).await?;
                    if existing.is_none() {
                        publish(
                            ctx,
                            ws,
                            false,
                            "WorkloadCreated",
                            format!(
                                "created StatefulSet {name} and Services {name}, {name}-headless"
                            ),
                            "Create",
                        )
                        .await;
                    }
                    sts = Some(applied);
                }
            }
            WorkloadKind::Tuning => {
                let existing = job_api.get_opt(name).await?;
                match existing {
                    Some(j) if !controlled_by(&j.metadata, ws) => {
                        name_taken = Some(ownership::child_name_taken("Job", &j.metadata, ws));
                    }
                    Some(j) => job = Some(j),
                    None if resources_ready => {
                        if let Some(cm) = tuning::default_config_map(ws, p)? {
                            let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
                            if let Some(have) = cm_api.get_opt(&cm.name_any()).await?
                                && !controlled_by(&have.metadata, ws)
                            {
                                name_taken = Some(ownership::child_name_taken(
                                    "ConfigMap",
                                    &have.metadata,
                                    ws,
                                ));
                            } else {
                                cm_api
                                    .patch(&cm.name_any(), &pp, &Patch::Apply(&cm))
                                    .await?;
                            }
                        }
                        // Without its ConfigMap the Job waits until that name is free.
                        if name_taken.is_none() {
                            // Job templates are immutable: create once.
                            let want =
                                tuning::job(ws, p, &ctx.config.workload, ctx.config.provisioner)?;
                            job = Some(job_api.patch(name, &pp, &Patch::Apply(&want)).await?);
                            publish(
                                ctx,
                                ws,
                                false,
                                "JobCreated",
                                format!("created tuning Job {name}"),
                                "Create",
                            )
                            .await;
                        }
                    }
                    None => {}
                }
            }
        }
    } else if let Some(existing) = sts_api.get_opt(name).await?
        && controlled_by(&existing.metadata, ws)
    {
        sts = Some(existing);
    }
    let pods = if sts.is_some() || job.is_some() {
        let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        pod_api
            .list(&ListParams::default().labels(&format!("{LABEL_WORKSPACE}={name}")))
            .await?
            .items
    } else {
        Vec::new()
    };

    // Status (recomputed from what was observed).
    let observed = Observed {
        provisioner: ctx.config.provisioner,
        kind: plan.as_ref().map(|p| p.kind),
        invalid: invalid.clone(),
        target,
        census: &census,
        provision: &report,
        statefulset: sts.as_ref(),
        job: job.as_ref(),
        pods: &pods,
        name_taken: name_taken.clone(),
    };
    let now = Time(jiff::Timestamp::now());
    let new = status::compute(ws, &observed, &now);
    let old = ws.status.clone().unwrap_or_default();
    if new != old {
        let old_conds = old.conditions.clone().unwrap_or_default();
        let new_conds = new.conditions.clone().unwrap_or_default();
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": new})),
        )
        .await?;
        for (type_, reason, message, warning) in status::transitions(&old_conds, &new_conds) {
            if type_ == CONDITION_RESOURCE_READY
                && reason == kaito_api::reason::READY
                && let Some(created) = &ws.metadata.creation_timestamp
            {
                let secs = (now.0.as_second() - created.0.as_second()).max(0);
                ctx.metrics.provisioning.observe(secs as f64);
            }
            publish(
                ctx,
                ws,
                warning,
                &reason,
                format!("{type_}: {message}"),
                "Reconcile",
            )
            .await;
        }
        info!(state = ?new.state, "status updated");
    }
    let done = matches!(
        new.state.as_deref(),
        Some(kaito_api::state::READY) | Some(kaito_api::state::SUCCEEDED)
    );
    if let Some(why) = name_taken {
        // Not watched (it has no owner reference to us): look again with backoff.
        return Err(ReconcileError::NameTaken(why));
    }
    Ok(if let Some(after) = report.requeue_after {
        // A cloud operation in progress, or a cloud failure whose cause is outside the spec.
        Action::requeue(after)
    } else if done || invalid.is_some() {
        // Converged, or an invalid spec: wait for a change instead of looping.
        Action::await_change()
    } else {
        // Watches wake us on every change; this is only a safety net.
        Action::requeue(Duration::from_secs(300))
    })
}

async fn finalize(
    ws: &Workspace,
    ctx: &Context,
    api: &Api<Workspace>,
) -> Result<Action, ReconcileError> {
    if !ws.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let gone = match ctx.provisioner.release(ws).await {
        Ok(gone) => gone,
        Err(e) => {
            // E.g. the cloud credentials are gone: say why deletion hangs and how to end it.
            let message =
                ownership::deletion_blocked(ws, &e.to_string(), &ctx.provisioner.cleanup_hint(ws));
            let old = ws
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let unchanged = old
                .iter()
                .any(|c| c.type_ == ownership::CONDITION_DELETION_BLOCKED && c.message == message);
            if !unchanged {
                let now = Time(jiff::Timestamp::now());
                let conditions =
                    status::with_deletion_blocked(&old, &message, &now, ws.metadata.generation);
                if let Err(pe) = api
                    .patch_status(
                        naming::name(ws),
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": {"conditions": conditions}})),
                    )
                    .await
                {
                    warn!(error = %pe, "could not report the blocked deletion");
                }
                publish(
                    ctx,
                    ws,
                    true,
                    ownership::CONDITION_DELETION_BLOCKED,
                    message,
                    "Delete",
                )
                .await;
            }
            return Err(e.into());
        }
    };
    if !gone {
        info!("waiting for the workspace's nodes to be removed");
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let fins: Vec<String> = ws
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": fins, "resourceVersion": ws.resource_version()}});
    match api
        .patch(
            naming::name(ws),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    info!("cloud nodes released; finalizer removed");
    Ok(Action::await_change())
}

/// A Workspace from the object a watch delivered; Err: why it does not decode (a field of the
/// wrong type that the CRD schema let through, e.g. inside `inference.template`).
pub fn decode_workspace(obj: &DynamicObject) -> Result<Workspace, serde_json::Error> {
    serde_json::to_value(obj).and_then(serde_json::from_value)
}

/// A watch event on Workspaces as untyped objects, decoded one object at a time, so that one
/// Workspace that does not decode is skipped (and logged) instead of failing the whole list
/// and stopping every reconcile, as a typed watch does. An update that no longer decodes
/// becomes a deletion of the stored copy (reconciling a stale copy would act on an old spec).
pub fn decode_event(ev: watcher::Event<DynamicObject>) -> Option<watcher::Event<Workspace>> {
    let decoded = |obj: &DynamicObject| {
        decode_workspace(obj).map_err(|e| {
            warn!(
                workspace = %obj.metadata.name.as_deref().unwrap_or_default(),
                namespace = %obj.metadata.namespace.as_deref().unwrap_or_default(),
                error = %e,
                "a Workspace that does not decode is skipped; fix or delete it"
            );
        })
    };
    let stub = |obj: &DynamicObject| Workspace {
        metadata: obj.metadata.clone(),
        ..Workspace::default()
    };
    match ev {
        watcher::Event::Init => Some(watcher::Event::Init),
        watcher::Event::InitDone => Some(watcher::Event::InitDone),
        watcher::Event::InitApply(o) => decoded(&o).ok().map(watcher::Event::InitApply),
        watcher::Event::Apply(o) => Some(match decoded(&o) {
            Ok(w) => watcher::Event::Apply(w),
            Err(()) => watcher::Event::Delete(stub(&o)),
        }),
        watcher::Event::Delete(o) => Some(watcher::Event::Delete(
            decode_workspace(&o).unwrap_or_else(|_| stub(&o)),
        )),
    }
}

/// The object called `name`, through `list` with a field selector (the controller's role may
/// list but not get Services and NodeClaims).
pub(crate) async fn named<K>(api: &Api<K>, name: &str) -> Result<Option<K>, kube::Error>
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

/// The workspace a labelled object belongs to.
fn owner_from_labels(
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<ObjectRef<Workspace>> {
    let name = labels.get(LABEL_WORKSPACE)?;
    let ns = labels.get(LABEL_WORKSPACE_NAMESPACE)?;
    Some(ObjectRef::new(name).within(ns))
}

/// Runs the controller until shutdown.
///
/// `namespace`: watch only that namespace's workspaces (and their children); None: all.
pub async fn run(
    client: Client,
    config: Config,
    namespace: Option<String>,
    metrics: Arc<Metrics>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), String> {
    let provisioner = AnyProvisioner::new(&config, client.clone())?;
    let nodes_api: Api<Node> = Api::all(client.clone());
    let (node_store, writer) = reflector::store();
    // Nodes enter the store projected to what the controller reads (see nodes::project_node).
    let node_stream = reflector(
        writer,
        watcher(nodes_api, watcher::Config::default().any_semantic()).modify(nodes::project_node),
    )
    .default_backoff();
    fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    // Workspaces are watched untyped and decoded one by one (decode_event): with a typed
    // watch, one object that does not decode fails the whole list and nothing is reconciled.
    let ws_resource = ApiResource::erase::<Workspace>(&());
    let workspaces: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ws_resource),
        None => Api::all_with(client.clone(), &ws_resource),
    };
    let (ws_reader, ws_writer) = reflector::store::<Workspace>();
    let decoded = watcher(workspaces, watcher::Config::default().any_semantic()).filter_map(|r| {
        futures::future::ready(match r {
            Ok(ev) => decode_event(ev).map(Ok),
            Err(e) => Some(Err(e)),
        })
    });
    let ws_trigger = reflector(ws_writer, decoded).applied_objects();
    // Bounded concurrency: with hundreds of workspaces applied at once, unbounded reconciles
    // flooded a loaded apiserver with requests until they timed out (504s in the benchmark).
    let controller = Controller::for_stream(ws_trigger, ws_reader).with_config(
        kube::runtime::controller::Config::default()
            .concurrency(MAX_CONCURRENT_RECONCILES)
            .debounce(Duration::from_millis(200)),
    );
    let ws_store = controller.store();
    let byo = config.provisioner == Provisioner::Byo;
    let node_mapper = move |node: Node| -> Vec<ObjectRef<Workspace>> {
        if let Some(r) = owner_from_labels(node.labels()) {
            return vec![r];
        }
        if !byo {
            return Vec::new();
        }
        ws_store
            .state()
            .iter()
            .filter(|w| nodes::selector_matches(w, node.labels()))
            .map(|w| ObjectRef::from_obj(w.as_ref()))
            .collect()
    };
    // The node reflector feeds the census store; its events also wake the workspaces they
    // concern (provisioned nodes by label, bring-your-own nodes by selector).
    let (tx, node_triggers) = futures::channel::mpsc::unbounded::<ObjectRef<Workspace>>();
    // Only events that change what the controller reads of a node wake workspaces (see
    // nodes::node_fingerprint); deletions always do.
    tokio::spawn(async move {
        let mut s = std::pin::pin!(node_stream);
        let mut seen: HashMap<String, u64> = HashMap::new();
        while let Some(ev) = s.next().await {
            let node = match ev {
                Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                    let fp = nodes::node_fingerprint(&node);
                    if seen.insert(node.name_any(), fp) == Some(fp) {
                        continue;
                    }
                    node
                }
                Ok(watcher::Event::Delete(node)) => {
                    seen.remove(&node.name_any());
                    node
                }
                // A relist: every node counts as new again (one missed while the watch was
                // down may have changed).
                Ok(watcher::Event::Init) => {
                    seen.clear();
                    continue;
                }
                Ok(watcher::Event::InitDone) | Err(_) => continue,
            };
            for r in node_mapper(node) {
                if tx.unbounded_send(r).is_err() {
                    return;
                }
            }
        }
    });
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.clone(),
        provisioner,
        node_store.clone(),
        metrics,
    ));
    let pods: Api<Pod> = scoped(&client, ns);
    let mut controller = controller
        .owns(
            scoped::<StatefulSet>(&client, ns),
            watcher::Config::default().any_semantic(),
        )
        .owns(
            scoped::<Job>(&client, ns),
            watcher::Config::default().any_semantic(),
        )
        .owns(
            scoped::<Service>(&client, ns),
            watcher::Config::default()
                .labels(LABEL_WORKSPACE)
                .any_semantic(),
        )
        .watches(
            pods,
            watcher::Config::default()
                .labels(LABEL_WORKSPACE)
                .any_semantic(),
            |pod: Pod| {
                let ns = pod.namespace()?;
                let name = pod.labels().get(LABEL_WORKSPACE)?.clone();
                Some(ObjectRef::new(&name).within(&ns))
            },
        );
    if config.provisioner == Provisioner::Karpenter {
        let ar = nodeclaim_resource();
        let claims: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &ar);
        let selector = match ns {
            Some(ns) => format!("{LABEL_WORKSPACE_NAMESPACE}={ns}"),
            None => LABEL_WORKSPACE.to_string(),
        };
        controller = controller.watches_with(
            claims,
            ar,
            watcher::Config::default().labels(&selector).any_semantic(),
            |c: kube::api::DynamicObject| owner_from_labels(c.labels()),
        );
    }
    let _ = node_store.wait_until_ready().await;
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    info!(cloud = %config.cloud, provisioner = %config.provisioner, "controller started");
    controller
        .reconcile_on(node_triggers)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
            futures::future::ready(())
        })
        .await;
    Ok(())
}
