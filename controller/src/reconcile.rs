//! The reconcile loop: kube-runtime's finalizer around the pipeline of [`crate::pipeline`]
//! (fetch → plan → provision → desired children → apply what differs → status), the
//! error policy, Events, metrics and the watches that wake it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kaito_api::{
    CONDITION_RESOURCE_READY, FINALIZER, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, Reason,
    Workspace,
};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{Config, Provisioner};
use crate::naming::{self, FIELD_MANAGER};
use crate::nodes;
use crate::ownership;
use crate::pipeline::apply::{self, Applied, ApplyError};
use crate::pipeline::desired::{self, Desired};
use crate::pipeline::fetch::ChildCaches;
use crate::pipeline::{fetch, next_action};
use crate::provision::{
    AnyProvisioner, NodeProvisioner, ProvisionError, ProvisionReport, nodeclaim_resource,
};
use crate::status::{self, Observed};
use crate::telemetry::{ErrorLabels, Metrics, WriteLabels};

pub(crate) use crate::pipeline::fetch::named;

/// Workspaces reconciled at the same time (the rest wait in kube-runtime's queue).
const MAX_CONCURRENT_RECONCILES: u16 = 16;
/// How often a deleted workspace looks again whether its nodes are gone.
const RELEASE_POLL: Duration = Duration::from_secs(2);

/// Why a reconcile did not finish. Invalid specs and objects the API server rejects are not
/// errors: they become an `InvalidSpec` condition and wait for a change of the spec.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The Kubernetes API failed (transient: retried with backoff).
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The provisioner failed (transient: retried with backoff).
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// A child's name is held by an object the workspace does not own (reported in its
    /// status; looked at again with backoff, since nothing watches that object for us).
    #[error("{0}")]
    NameTaken(String),
    /// The workspace is deleted and its nodes are still going away: look again soon (not a
    /// failure; the finalizer stays until they are gone).
    #[error("waiting for the workspace's nodes to be removed")]
    Releasing,
    /// Adding or removing the finalizer failed (transient).
    #[error("finalizer: {0}")]
    Finalizer(kube::Error),
    /// The object cannot be handled at all (no name): retrying does not help.
    #[error("{0}")]
    Permanent(String),
}

/// What the error policy does with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Again after the workspace's exponential backoff (1 s … 5 min).
    Backoff,
    /// Again after this fixed delay, without counting as a failure.
    After(Duration),
    /// Not until the workspace changes.
    Never,
}

impl ReconcileError {
    /// Category label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Provision(_) => "provision",
            Self::NameTaken(_) => "name_taken",
            Self::Releasing => "releasing",
            Self::Finalizer(_) => "finalizer",
            Self::Permanent(_) => "permanent",
        }
    }

    /// Transient errors are retried with backoff; a deletion in progress is polled; a
    /// permanent one waits for a change (no hot requeue).
    pub fn retry(&self) -> Retry {
        match self {
            Self::Kube(_) | Self::Provision(_) | Self::NameTaken(_) | Self::Finalizer(_) => {
                Retry::Backoff
            }
            Self::Releasing => Retry::After(RELEASE_POLL),
            Self::Permanent(_) => Retry::Never,
        }
    }
}

impl From<finalizer::Error<ReconcileError>> for ReconcileError {
    fn from(e: finalizer::Error<ReconcileError>) -> Self {
        match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                Self::Finalizer(e)
            }
            e @ (finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer) => {
                Self::Permanent(e.to_string())
            }
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
    /// Watch caches of the children and their pods (None: read them from the API server).
    pub caches: Option<ChildCaches>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    failures: Mutex<HashMap<String, u32>>,
    /// The status last written per workspace, with the resourceVersion it was written over,
    /// until the watch delivers the write (see [`Context::status_written_over`]).
    written: Mutex<HashMap<String, Written>>,
}

/// A status this controller wrote, over which version of the workspace, and when.
struct Written {
    over: Option<String>,
    status: kaito_api::WorkspaceStatus,
    at: std::time::Instant,
}

/// How long a written status is remembered at most: the watch delivers a write within
/// seconds; an entry of a workspace deleted without a reconcile (its finalizer removed by
/// hand) goes when a later write finds it this old.
const WRITTEN_KEPT: Duration = Duration::from_secs(300);

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
            caches: None,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
        }
    }

    /// This context, reading children and pods from `caches`.
    pub fn with_caches(mut self, caches: ChildCaches) -> Self {
        self.caches = Some(caches);
        self
    }

    /// The status this controller wrote over the very version of `ws` it is looking at, when
    /// the watch has not delivered that write yet: a reconcile woken by a child's event can
    /// run on the workspace as it was before its own status write, and its stored status is
    /// then the one written, not the one `ws` carries. Forgets the entry once the watch shows
    /// another version.
    fn status_written_over(&self, ws: &Workspace) -> Option<kaito_api::WorkspaceStatus> {
        let mut m = self.written.lock().ok()?;
        let key = naming::key(ws);
        match m.get(&key) {
            Some(w) if w.over == ws.metadata.resource_version => Some(w.status.clone()),
            Some(_) => {
                m.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers that `new` was written over this version of `ws` (and forgets entries older
    /// than [`WRITTEN_KEPT`]).
    fn status_written(&self, ws: &Workspace, new: &kaito_api::WorkspaceStatus) {
        if let Ok(mut m) = self.written.lock() {
            m.retain(|_, w| w.at.elapsed() < WRITTEN_KEPT);
            let key = naming::key(ws);
            let written = Written {
                over: ws.metadata.resource_version.clone(),
                status: new.clone(),
                at: std::time::Instant::now(),
            };
            m.insert(key, written);
        }
    }

    /// Forgets a deleted workspace's last written status.
    fn forget_status(&self, ws: &Workspace) {
        if let Ok(mut m) = self.written.lock() {
            m.remove(&naming::key(ws));
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

    /// Counts one write of the controller's (by what was written).
    fn wrote(&self, kind: &str) {
        self.metrics
            .writes
            .get_or_create(&WriteLabels { kind: kind.into() })
            .inc();
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
    ctx.wrote("Event");
    if let Err(e) = ctx.recorder.publish(&ev, &ws.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}

/// Reconciles one workspace: kube-runtime's finalizer around [`apply_workspace`] (and
/// [`cleanup`] once the workspace is deleted).
pub async fn reconcile(ws: Arc<Workspace>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = naming::name(&ws).to_string();
    let ns = naming::namespace(&ws).to_string();
    let key = naming::key(&ws);
    let span = info_span!("reconcile", workspace = %name, namespace = %ns);
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), &ns);
    if ws.metadata.deletion_timestamp.is_none() && !ws.finalizers().iter().any(|f| f == FINALIZER) {
        ctx.wrote("Workspace");
    }
    let result = finalizer(&api, FINALIZER, ws, |event| async {
        match event {
            finalizer::Event::Apply(ws) => apply_workspace(&ws, &ctx).await,
            finalizer::Event::Cleanup(ws) => cleanup(&ws, &ctx, &api).await,
        }
    })
    .instrument(span.clone())
    .await
    .map_err(ReconcileError::from);
    // The finalizer is already gone (the workspace was deleted meanwhile): nothing to do.
    let result = match result {
        Err(ReconcileError::Finalizer(kube::Error::Api(e))) if e.code == 404 => {
            Ok(Action::await_change())
        }
        r => r,
    };
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    match &result {
        Err(e) if e.retry() == Retry::After(RELEASE_POLL) => {
            span.in_scope(|| info!("{e}"));
        }
        Err(e) => {
            ctx.metrics
                .errors
                .get_or_create(&ErrorLabels {
                    category: e.category().into(),
                })
                .inc();
            span.in_scope(|| warn!(error = %e, "reconcile failed; retrying with backoff"));
        }
        Ok(_) => {
            ctx.backoff(&key, false);
        }
    }
    result
}

/// Looks at the error: transient → the workspace's exponential backoff (1 s … 5 min); a
/// deletion waiting for its nodes → a fixed poll; permanent → wait for a change.
pub fn error_policy(ws: Arc<Workspace>, err: &ReconcileError, ctx: Arc<Context>) -> Action {
    match err.retry() {
        Retry::Backoff => {
            let key = format!("{}/{}", naming::namespace(&ws), naming::name(&ws));
            Action::requeue(ctx.backoff(&key, true))
        }
        Retry::After(d) => Action::requeue(d),
        Retry::Never => Action::await_change(),
    }
}

/// The pipeline for a workspace that is not being deleted (see [`crate::pipeline`]).
async fn apply_workspace(ws: &Workspace, ctx: &Context) -> Result<Action, ReconcileError> {
    let client = &ctx.client;
    // Fetch: the nodes, the runtime parameters of `inference.config`.
    let inputs = fetch::inputs(client, &ctx.config, &ctx.nodes, ws).await?;
    // Plan (pure).
    let planned = desired::plan(ws, &ctx.config, inputs.byo_shape.as_ref(), &inputs.engine);
    let target = ws.resource.count.unwrap_or(1);
    let nodes_ready = status::nodes_ready(&inputs.census, target);
    // Provision.
    let report = match &planned {
        Ok(p) => ctx.provisioner.ensure(ws, p).await?,
        Err(_) => ProvisionReport::default(),
    };
    // Fetch the children; decide the desired ones (pure).
    let lookup = planned.as_ref().ok().map(|p| desired::lookup(ws, p));
    let found = fetch::children(
        client,
        ctx.caches.as_ref(),
        ws,
        lookup.as_ref(),
        nodes_ready,
    )
    .await?;
    let engine = inputs.engine.clone().unwrap_or_default();
    let (want, mut invalid) = match &planned {
        Ok(p) => match desired::children(ws, p, &ctx.config, &engine, &found, nodes_ready) {
            Ok(d) => (d, None),
            Err(e) => (Desired::default(), Some(e.to_string())),
        },
        Err(why) => (Desired::default(), Some(why.clone())),
    };
    // Apply what differs from what was found.
    let applied = match apply::apply(client, naming::namespace(ws), &want, &found).await {
        Ok(a) => a,
        Err(ApplyError::Rejected {
            kind,
            name,
            message,
        }) => {
            invalid = Some(format!(
                "the API server rejected {kind} {name} built from it: {message}"
            ));
            Applied {
                statefulset: found.statefulset.clone(),
                job: found.job.clone(),
                written: Vec::new(),
            }
        }
        Err(ApplyError::Kube(e)) => return Err(e.into()),
    };
    let pods = if applied.statefulset.is_some() || applied.job.is_some() {
        fetch::pods(client, ctx.caches.as_ref(), ws).await?
    } else {
        Vec::new()
    };
    // Status (pure), written when it changed.
    let observed = Observed {
        provisioner: ctx.config.provisioner,
        kind: planned
            .as_ref()
            .ok()
            .filter(|_| invalid.is_none())
            .map(|p| p.kind),
        invalid: invalid.clone(),
        target,
        census: &inputs.census,
        provision: &report,
        statefulset: applied.statefulset.as_ref(),
        job: applied.job.as_ref(),
        pods: &pods,
        name_taken: want.name_taken.clone(),
    };
    // The status is computed over the one stored: the one this controller wrote over this
    // version when the watch has not delivered it yet (so its transition times and Events
    // are not those of the older status `ws` carries).
    let current;
    let ws = match ctx.status_written_over(ws) {
        Some(status) => {
            current = Workspace {
                status: Some(status),
                ..ws.clone()
            };
            &current
        }
        None => ws,
    };
    let now = Time(jiff::Timestamp::now());
    let new = status::compute(ws, &observed, &now);
    // The creation Events and the status write (with its Events) go out together.
    let ((), written) = tokio::join!(
        announce(ctx, ws, &applied),
        write_status(ctx, ws, &new, &now)
    );
    written?;
    if let Some(why) = want.name_taken {
        // Not watched (it has no owner reference to us): look again with backoff.
        return Err(ReconcileError::NameTaken(why));
    }
    Ok(next_action(
        status::settled(&new),
        invalid.is_some(),
        report.requeue_after,
    ))
}

/// Counts the writes of the apply stage and announces what it created.
async fn announce(ctx: &Context, ws: &Workspace, applied: &Applied) {
    let name = naming::name(ws);
    for (kind, _, created) in &applied.written {
        ctx.wrote(kind);
        match (*kind, created) {
            ("StatefulSet", true) => {
                let note =
                    format!("created StatefulSet {name} and Services {name}, {name}-headless");
                publish(ctx, ws, false, "WorkloadCreated", note, "Create").await;
            }
            ("Job", true) => {
                let note = format!("created tuning Job {name}");
                publish(ctx, ws, false, "JobCreated", note, "Create").await;
            }
            _ => {}
        }
    }
}

/// Writes `new` when it differs from the stored status, with the Events the change is worth
/// ([`status::notices`]) and the provisioning-time metric.
async fn write_status(
    ctx: &Context,
    ws: &Workspace,
    new: &kaito_api::WorkspaceStatus,
    now: &Time,
) -> Result<(), ReconcileError> {
    let old = ws.status.clone().unwrap_or_default();
    if *new == old {
        return Ok(());
    }
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), naming::namespace(ws));
    let old_conds = old.conditions.clone().unwrap_or_default();
    let new_conds = new.conditions.clone().unwrap_or_default();
    api.patch_status(
        naming::name(ws),
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": new })),
    )
    .await?;
    ctx.wrote("WorkspaceStatus");
    ctx.status_written(ws, new);
    let became_ready =
        status::transitions(&old_conds, &new_conds)
            .iter()
            .any(|(type_, reason, _, _)| {
                type_ == CONDITION_RESOURCE_READY && reason == Reason::Ready.as_str()
            });
    if became_ready && let Some(created) = &ws.metadata.creation_timestamp {
        let secs = (now.0.as_second() - created.0.as_second()).max(0);
        ctx.metrics.provisioning.observe(secs as f64);
    }
    for n in status::notices(&old_conds, &new_conds) {
        publish(ctx, ws, n.warning, &n.reason, n.note, "Reconcile").await;
    }
    info!(state = ?new.state, "status updated");
    Ok(())
}

/// The workspace is deleted: release its nodes. Ok lets kube-runtime remove the finalizer;
/// [`ReconcileError::Releasing`] keeps it while the nodes go away.
async fn cleanup(
    ws: &Workspace,
    ctx: &Context,
    api: &Api<Workspace>,
) -> Result<Action, ReconcileError> {
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
                match api
                    .patch_status(
                        naming::name(ws),
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": {"conditions": conditions}})),
                    )
                    .await
                {
                    Ok(_) => ctx.wrote("WorkspaceStatus"),
                    Err(pe) => warn!(error = %pe, "could not report the blocked deletion"),
                }
                publish(
                    ctx,
                    ws,
                    true,
                    Reason::DeletionBlocked.as_str(),
                    message,
                    "Delete",
                )
                .await;
            }
            return Err(e.into());
        }
    };
    if !gone {
        return Err(ReconcileError::Releasing);
    }
    ctx.wrote("Workspace");
    ctx.forget_status(ws);
    info!("cloud nodes released; removing the finalizer");
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

/// The workspace a labelled object belongs to.
fn owner_from_labels(
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<ObjectRef<Workspace>> {
    let name = labels.get(LABEL_WORKSPACE)?;
    let ns = labels.get(LABEL_WORKSPACE_NAMESPACE)?;
    Some(ObjectRef::new(name).within(ns))
}

/// A watch cache of `api` (objects slimmed by `slim`) whose every event sends the
/// workspace `owner` names to `wake`.
fn cache<K>(
    api: Api<K>,
    config: watcher::Config,
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<Workspace>>,
    owner: fn(&kube::api::ObjectMeta) -> Option<ObjectRef<Workspace>>,
    slim: fn(&mut K),
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = reflector(writer, watcher(api, config).modify(slim))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(ev) = events.next().await {
            if let Ok(obj) = ev
                && let Some(r) = owner(obj.meta())
                && wake.unbounded_send(r).is_err()
            {
                return;
            }
        }
    });
    store
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
    let wake = tx.clone();
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
    // The children and their pods are cached (reflector stores) for the fetch stage, and
    // each of their events wakes the workspace that owns them.
    let by_owner = |meta: &kube::api::ObjectMeta| -> Option<ObjectRef<Workspace>> {
        let ns = meta.namespace.as_deref()?;
        meta.owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.kind == kaito_api::KIND)
            .map(|o| ObjectRef::new(&o.name).within(ns))
    };
    let by_label = |meta: &kube::api::ObjectMeta| -> Option<ObjectRef<Workspace>> {
        let ns = meta.namespace.as_deref()?;
        let name = meta.labels.as_ref()?.get(LABEL_WORKSPACE)?;
        Some(ObjectRef::new(name).within(ns))
    };
    // Only objects carrying kaito.sh/workspace (every child the controller writes does); one
    // of a child's name without it is found by the fetch stage's lookup on a cache miss.
    let labelled = watcher::Config::default()
        .labels(LABEL_WORKSPACE)
        .any_semantic();
    let caches = ChildCaches {
        statefulsets: cache(
            scoped(&client, ns),
            labelled.clone(),
            wake.clone(),
            by_owner,
            fetch::slim_statefulset,
        ),
        services: cache(
            scoped(&client, ns),
            labelled.clone(),
            wake.clone(),
            by_owner,
            fetch::slim,
        ),
        jobs: cache(
            scoped(&client, ns),
            labelled.clone(),
            wake.clone(),
            by_owner,
            fetch::slim_job,
        ),
        pods: cache(
            scoped(&client, ns),
            labelled,
            wake,
            by_label,
            fetch::slim_pod,
        ),
    };
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            config.clone(),
            provisioner,
            node_store.clone(),
            metrics,
        )
        .with_caches(caches.clone()),
    );
    let mut controller = controller;
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
    let _ = caches.statefulsets.wait_until_ready().await;
    let _ = caches.services.wait_until_ready().await;
    let _ = caches.jobs.wait_until_ready().await;
    let _ = caches.pods.wait_until_ready().await;
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
