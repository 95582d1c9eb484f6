//! Test helpers: workspaces and objects from inline YAML.

use kaito_api::Workspace;
use serde::de::DeserializeOwned;

/// A workspace from YAML; namespace `default` when the YAML has none.
#[allow(clippy::expect_used)]
pub fn ws(yaml: &str) -> Workspace {
    let mut w: Workspace = serde_yaml::from_str(yaml).expect("workspace YAML");
    if w.metadata.namespace.is_none() {
        w.metadata.namespace = Some("default".into());
    }
    if w.metadata.uid.is_none() {
        w.metadata.uid = Some("uid-1".into());
    }
    w
}

/// Any object from YAML.
#[allow(clippy::expect_used)]
pub fn obj<T: DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).expect("object YAML")
}

/// One request the mock API server answered.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The request body as JSON (Null when empty or not JSON).
    pub body: serde_json::Value,
}

#[derive(Default)]
struct MockState {
    objects: std::collections::BTreeMap<String, serde_json::Value>,
    requests: Vec<Recorded>,
}

/// A minimal in-memory Kubernetes API server on 127.0.0.1 (plain HTTP) for component tests:
/// objects live at their REST paths; GET of an object or of a collection (filtered by
/// `labelSelector` of `key`, `key=value` terms), PATCH (apply or merge: merged into the stored
/// object, `/status` into the object itself; a JSON patch: applied), POST (create, 409 when
/// it exists) and DELETE. Every request is recorded; [`MockApi::writes`] counts the writes.
#[derive(Clone)]
pub struct MockApi {
    state: std::sync::Arc<std::sync::Mutex<MockState>>,
    /// A client talking to it (default namespace `default`).
    pub client: kube::Client,
}

fn merge_json(into: &mut serde_json::Value, patch: &serde_json::Value) {
    match (into, patch) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge_json(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn status_json(code: u16, reason: &str) -> (u16, serde_json::Value) {
    (
        code,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": reason, "code": code, "message": reason}),
    )
}

fn selector_matches(selector: &str, obj: &serde_json::Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector
        .split(',')
        .filter(|t| !t.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => labels[k].as_str() == Some(v),
            None => !labels[term].is_null(),
        })
}

/// Collections the mock serves as lists (the last path segment).
const PLURALS: [&str; 9] = [
    "services",
    "statefulsets",
    "jobs",
    "configmaps",
    "pods",
    "nodeclaims",
    "workspaces",
    "events",
    "nodes",
];

impl MockState {
    fn answer(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.requests.push(Recorded {
            method: method.to_string(),
            path: path.to_string(),
            body: body.clone(),
        });
        let is_list = path
            .rsplit('/')
            .next()
            .is_some_and(|l| PLURALS.contains(&l));
        let store_path = path.strip_suffix("/status").unwrap_or(path).to_string();
        match method {
            "GET" if is_list => {
                let selector = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("labelSelector="))
                    .map(|s| {
                        url::form_urlencoded::parse(format!("s={s}").as_bytes())
                            .next()
                            .map(|(_, v)| v.into_owned())
                            .unwrap_or_default()
                    })
                    .unwrap_or_default();
                let items: Vec<serde_json::Value> = self
                    .objects
                    .iter()
                    .filter(|(p, o)| {
                        p.rsplit_once('/').map(|(parent, _)| parent) == Some(path)
                            && selector_matches(&selector, o)
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                (
                    200,
                    serde_json::json!({"apiVersion": "v1", "kind": "List",
                                       "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            "GET" => match self.objects.get(&store_path) {
                Some(o) => (200, o.clone()),
                None => status_json(404, "NotFound"),
            },
            "POST" => {
                let name = body["metadata"]["name"].as_str().unwrap_or("unnamed");
                let p = format!("{path}/{name}");
                if self.objects.contains_key(&p) {
                    return status_json(409, "AlreadyExists");
                }
                self.objects.insert(p, body.clone());
                (201, body)
            }
            // A JSON patch (kube-runtime's finalizer): applied as a whole, 422 when one of its
            // `test`s fails, 404 when there is no object.
            "PATCH" if body.is_array() => {
                let Some(slot) = self.objects.get_mut(&store_path) else {
                    return status_json(404, "NotFound");
                };
                let Ok(mut ops) = serde_json::from_value::<json_patch::Patch>(body) else {
                    return status_json(400, "BadRequest");
                };
                // As the API server's JSON patch does: `test` of null passes on a missing path.
                ops.0.retain(|op| match op {
                    json_patch::PatchOperation::Test(t) => {
                        !(t.value.is_null() && slot.pointer(t.path.as_str()).is_none())
                    }
                    _ => true,
                });
                let mut patched = slot.clone();
                if json_patch::patch(&mut patched, &ops).is_err() {
                    return status_json(422, "Invalid");
                }
                *slot = patched;
                (200, slot.clone())
            }
            "PATCH" => {
                let slot = self
                    .objects
                    .entry(store_path)
                    .or_insert(serde_json::json!({}));
                merge_json(slot, &body);
                (200, slot.clone())
            }
            "DELETE" => match self.objects.remove(&store_path) {
                Some(o) => (200, o),
                None => status_json(404, "NotFound"),
            },
            _ => status_json(405, "MethodNotAllowed"),
        }
    }
}

impl MockApi {
    /// Starts a server on a free port.
    #[allow(clippy::expect_used)]
    pub async fn start() -> Self {
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::{Method, Uri};
        use axum::response::IntoResponse;
        let state = std::sync::Arc::new(std::sync::Mutex::new(MockState::default()));
        async fn any(
            State(state): State<std::sync::Arc<std::sync::Mutex<MockState>>>,
            method: Method,
            uri: Uri,
            body: Bytes,
        ) -> axum::response::Response {
            let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let (code, v) = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .answer(method.as_str(), uri.path(), uri.query().unwrap_or(""), body);
            (
                axum::http::StatusCode::from_u16(code)
                    .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                [("content-type", "application/json")],
                v.to_string(),
            )
                .into_response()
        }
        let app = axum::Router::new().fallback(any).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url: axum::http::Uri = format!("http://{addr}").parse().expect("url");
        // kube builds a rustls connector even for plain HTTP: it needs a crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new(url);
        let client = kube::Client::try_from(config).expect("client");
        Self { state, client }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MockState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `obj` at `path` (e.g. `/api/v1/namespaces/default/services/x`).
    pub fn put(&self, path: &str, obj: serde_json::Value) {
        self.lock().objects.insert(path.to_string(), obj);
    }

    /// The object at `path`.
    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Writes so far (every request but GET), as `METHOD path`.
    pub fn writes(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// Requests with `method` to `path`.
    pub fn calls(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }
}
