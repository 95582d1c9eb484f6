//! Collect: the only module that talks to the API server (besides chat's and logs'
//! streams). Each function fetches what a command shows and returns plain data.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use kaito_api::{GROUP, KIND, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, PLURAL, Workspace};
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::cli::GlobalArgs;
use crate::error::{Error, Result, chain};

/// A connected client and the namespace commands act in.
#[derive(Clone)]
pub struct Ctx {
    /// The client.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

/// Loads the kubeconfig (honouring `--kubeconfig`, `--context`, `-n`) and builds a client.
pub async fn connect(g: &GlobalArgs) -> Result<Ctx> {
    let opts = KubeConfigOptions {
        context: g.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&g.kubeconfig, &g.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| Error::Kubeconfig(format!("{}: {}", path.display(), chain(&e))))?;
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| Error::Kubeconfig(chain(&e)))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| Error::Kubeconfig(chain(&e)))?,
        (None, None) => Config::infer()
            .await
            .map_err(|e| Error::Kubeconfig(chain(&e)))?,
    };
    let namespace = g
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(chain(&e)))?;
    Ok(Ctx { client, namespace })
}

/// The ApiResource of Workspaces in `version` (`v1alpha1` or `v1beta1`).
pub fn workspace_resource(version: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: version.into(),
        api_version: format!("{GROUP}/{version}"),
        kind: KIND.into(),
        plural: PLURAL.into(),
    }
}

/// Creates `ws` in `namespace` through the version it is written in; `dry_run` asks the
/// server (and so the admission webhook) without persisting.
pub async fn create_workspace(
    ctx: &Ctx,
    ws: &Workspace,
    namespace: &str,
    dry_run: bool,
) -> Result<Workspace> {
    let name = ws.metadata.name.clone().unwrap_or_default();
    let version = ws
        .api_version
        .strip_prefix(&format!("{GROUP}/"))
        .unwrap_or(kaito_api::V1BETA1);
    let ar = workspace_resource(version);
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &ar);
    let mut value = serde_json::to_value(ws).map_err(|e| Error::Parse {
        what: format!("workspace {name:?}"),
        message: e.to_string(),
    })?;
    value["metadata"]["namespace"] = serde_json::Value::String(namespace.into());
    let obj: DynamicObject = serde_json::from_value(value).map_err(|e| Error::Parse {
        what: format!("workspace {name:?}"),
        message: e.to_string(),
    })?;
    let pp = PostParams {
        dry_run,
        field_manager: Some("kubectl-kaito".into()),
    };
    let created = api
        .create(&pp, &obj)
        .await
        .map_err(|e| Error::from_kube(e, Some(&name), namespace))?;
    let back = serde_json::to_value(&created).map_err(|e| Error::Parse {
        what: "the API server's answer".into(),
        message: e.to_string(),
    })?;
    serde_json::from_value(back).map_err(|e| Error::Parse {
        what: "the API server's answer".into(),
        message: e.to_string(),
    })
}

/// The Workspace API of a namespace, or of all (`namespace` None).
pub fn workspaces(ctx: &Ctx, namespace: Option<&str>) -> Api<Workspace> {
    match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}

/// Lists workspaces sorted by namespace and name.
pub async fn list_workspaces(ctx: &Ctx, namespace: Option<&str>) -> Result<Vec<Workspace>> {
    let list = workspaces(ctx, namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::from_kube(e, None, namespace.unwrap_or("")))?;
    let mut items = list.items;
    items.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    Ok(items)
}

/// One workspace.
pub async fn get_workspace(ctx: &Ctx, name: &str) -> Result<Workspace> {
    workspaces(ctx, Some(&ctx.namespace))
        .get(name)
        .await
        .map_err(|e| Error::from_kube(e, Some(name), &ctx.namespace))
}

/// `http://…` endpoints of workspaces' Services, by (namespace, name); empty when
/// Services cannot be listed.
pub async fn endpoints(ctx: &Ctx, namespace: Option<&str>) -> BTreeMap<(String, String), String> {
    let api: Api<Service> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let lp = ListParams::default().labels(LABEL_WORKSPACE);
    let Ok(list) = api.list(&lp).await else {
        return BTreeMap::new();
    };
    list.items
        .iter()
        .filter_map(|svc| {
            let labels = svc.metadata.labels.as_ref()?;
            let ws = labels.get(LABEL_WORKSPACE)?;
            // The serving Service is named after the workspace; the headless one is not an endpoint.
            if svc.metadata.name.as_deref() != Some(ws.as_str()) {
                return None;
            }
            Some((
                (
                    svc.metadata.namespace.clone().unwrap_or_default(),
                    ws.clone(),
                ),
                service_endpoint(svc)?,
            ))
        })
        .collect()
}

/// Where a Service answers: the load balancer's address, else the cluster IP.
pub fn service_endpoint(svc: &Service) -> Option<String> {
    let port = svc
        .spec
        .as_ref()?
        .ports
        .as_ref()
        .and_then(|p| p.first())
        .map(|p| p.port)
        .unwrap_or(80);
    if let Some(ing) = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| i.first())
        && let Some(addr) = ing.ip.clone().or_else(|| ing.hostname.clone())
    {
        return Some(format!("http://{addr}:{port}"));
    }
    let ip = svc.spec.as_ref()?.cluster_ip.clone()?;
    if ip.is_empty() || ip == "None" {
        return None;
    }
    Some(format!("http://{ip}:{port}"))
}

/// Pods of a workspace (label `kaito.sh/workspace=NAME`), sorted by name.
pub async fn workspace_pods(ctx: &Ctx, name: &str) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let lp = ListParams::default().labels(&format!("{LABEL_WORKSPACE}={name}"));
    let mut pods = api
        .list(&lp)
        .await
        .map_err(|e| Error::from_kube(e, Some(name), &ctx.namespace))?
        .items;
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(pods)
}

/// Everything `status` shows.
pub struct StatusData {
    /// The workspace.
    pub ws: Workspace,
    /// Its pods.
    pub pods: Vec<Pod>,
    /// Its nodes.
    pub nodes: Vec<Node>,
    /// Events about it and its children, oldest first.
    pub events: Vec<Event>,
    /// Its endpoint.
    pub endpoint: Option<String>,
}

/// Fetches a workspace and what `status` explains about it. Nodes, Events and Services
/// that cannot be read (RBAC) are left out rather than failing the command.
pub async fn status_data(ctx: &Ctx, name: &str) -> Result<StatusData> {
    let ws = get_workspace(ctx, name).await?;
    let ns = ctx.namespace.clone();
    let pods = workspace_pods(ctx, name).await.unwrap_or_default();

    let nodes_api: Api<Node> = Api::all(ctx.client.clone());
    let mut nodes: Vec<Node> = nodes_api
        .list(&ListParams::default().labels(&format!(
            "{LABEL_WORKSPACE}={name},{LABEL_WORKSPACE_NAMESPACE}={ns}"
        )))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut wanted: Vec<String> = ws
        .status
        .as_ref()
        .and_then(|s| s.worker_nodes.clone())
        .unwrap_or_default();
    wanted.extend(
        pods.iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone()),
    );
    for n in wanted {
        if !nodes
            .iter()
            .any(|x| x.metadata.name.as_deref() == Some(n.as_str()))
            && let Ok(node) = nodes_api.get(&n).await
        {
            nodes.push(node);
        }
    }
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    let mut objects: Vec<String> = vec![name.to_string()];
    objects.extend(pods.iter().filter_map(|p| p.metadata.name.clone()));
    let events_api: Api<Event> = Api::namespaced(ctx.client.clone(), &ns);
    let mut events: Vec<Event> = events_api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.involved_object
                .name
                .as_ref()
                .is_some_and(|n| objects.contains(n))
        })
        .collect();
    events.sort_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .or(e.first_timestamp.as_ref())
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });

    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let endpoint = svc_api.get_opt(name).await.ok().flatten().and_then(|svc| {
        service_endpoint(&svc)
            .map(|e| format!("{e} (Service {name}; in-cluster: http://{name}.{ns}.svc)"))
    });
    Ok(StatusData {
        ws,
        pods,
        nodes,
        events,
        endpoint,
    })
}
