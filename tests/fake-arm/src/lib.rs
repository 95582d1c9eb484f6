//! A test double, never shipped: a local HTTPS Azure Resource Manager endpoint for tests of the
//! controller's aks provisioner. It speaks the agentPools REST API that
//! `azure_mgmt_containerservice` 0.10 calls (PUT, GET, DELETE, list; api-version
//! [`API_VERSION`]) with `provisioningState`,
//! `Azure-AsyncOperation` and ARM error bodies, and injects faults (quota exceeded, 429 with
//! `Retry-After`, 500, slow operations). Pools that finish creating or deleting are reported on
//! a channel, so a caller can materialise (or remove) simulated nodes for them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The api-version this endpoint speaks: the one `azure_mgmt_containerservice` 0.10 sends by
/// default (`kaito_controller::provision::aks::API_VERSION`; the controller's `aks_component`
/// test checks that the two agree).
pub const API_VERSION: &str = "2023-01-02-preview";

/// Faults to inject; set with `POST /_faults`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Faults {
    /// PUTs of new pools fail with 409 QuotaExceeded while set.
    pub quota_exceeded: bool,
    /// The next N requests answer 429 with `Retry-After: 1`.
    pub throttle: u32,
    /// The next N requests answer 500.
    pub server_error: u32,
    /// How long creating, scaling or deleting a pool takes (milliseconds).
    pub operation_ms: u64,
}

/// A pool that finished an operation.
#[derive(Clone, Debug, PartialEq)]
pub enum PoolEvent {
    /// Created or scaled: its body (vmSize, count, nodeLabels, nodeTaints).
    Ready {
        /// Pool name.
        name: String,
        /// ARM body.
        body: Value,
    },
    /// Deleted.
    Deleted {
        /// Pool name.
        name: String,
    },
}

#[derive(Clone, Debug)]
struct Pool {
    body: Value,
    state: String,
    done_at: Instant,
    op: String,
}

#[derive(Default)]
struct Inner {
    pools: BTreeMap<String, Pool>,
    ops: HashMap<String, (String, Instant)>,
    faults: Faults,
    next_op: u64,
    requests: u64,
}

/// The endpoint's shared state.
#[derive(Clone)]
pub struct FakeArm {
    inner: Arc<Mutex<Inner>>,
    token: String,
    base: String,
    events: mpsc::UnboundedSender<PoolEvent>,
}

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
        .into_response()
}

fn json_response(status: StatusCode, v: &Value, extra: &[(&str, String)]) -> Response {
    let mut r = (
        status,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response();
    for (k, val) in extra {
        if let (Ok(k), Ok(val)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(val),
        ) {
            r.headers_mut().insert(k, val);
        }
    }
    r
}

impl FakeArm {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Current faults.
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }

    /// Pool names and states.
    pub fn pools(&self) -> BTreeMap<String, (String, Value)> {
        self.advance();
        self.lock()
            .pools
            .iter()
            .map(|(k, p)| (k.clone(), (p.state.clone(), p.body.clone())))
            .collect()
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// Finishes operations whose time has come.
    fn advance(&self) {
        let now = Instant::now();
        let mut events = Vec::new();
        {
            let mut g = self.lock();
            let mut gone = Vec::new();
            let mut finished = Vec::new();
            for (name, p) in g.pools.iter_mut() {
                if p.done_at > now {
                    continue;
                }
                match p.state.as_str() {
                    "Creating" | "Updating" | "Scaling" => {
                        p.state = "Succeeded".into();
                        p.body["properties"]["provisioningState"] = json!("Succeeded");
                        finished.push(p.op.clone());
                        events.push(PoolEvent::Ready {
                            name: name.clone(),
                            body: p.body.clone(),
                        });
                    }
                    "Deleting" => {
                        gone.push(name.clone());
                        finished.push(p.op.clone());
                    }
                    _ => {}
                }
            }
            for op in finished {
                if let Some(o) = g.ops.get_mut(&op) {
                    o.0 = "Succeeded".into();
                }
            }
            for name in gone {
                g.pools.remove(&name);
                events.push(PoolEvent::Deleted { name });
            }
        }
        for e in events {
            let _ = self.events.send(e);
        }
    }

    fn new_op(&self, g: &mut Inner) -> (String, String) {
        g.next_op += 1;
        let id = format!("op-{}", g.next_op);
        g.ops
            .insert(id.clone(), ("InProgress".into(), Instant::now()));
        let url = format!("{}/operations/{id}?api-version={API_VERSION}", self.base);
        (id, url)
    }

    fn handle(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Response {
        self.advance();
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != format!("Bearer {}", self.token) {
            return arm_error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "missing or wrong bearer token",
            );
        }
        let query = uri.query().unwrap_or("");
        if !query
            .split('&')
            .any(|kv| kv == format!("api-version={API_VERSION}"))
        {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                &format!("this endpoint speaks api-version {API_VERSION}"),
            );
        }
        let mut g = self.lock();
        g.requests += 1;
        if g.faults.throttle > 0 {
            g.faults.throttle -= 1;
            let mut r = arm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "throttled by the test endpoint",
            );
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            return r;
        }
        if g.faults.server_error > 0 {
            g.faults.server_error -= 1;
            return arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "injected server error",
            );
        }
        let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
        if parts.len() == 2 && parts[0] == "operations" {
            return match g.ops.get(parts[1]) {
                Some((status, _)) => json_response(StatusCode::OK, &json!({"status": status}), &[]),
                None => arm_error(StatusCode::NOT_FOUND, "NotFound", "no such operation"),
            };
        }
        // subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ContainerService/
        // managedClusters/{c}/agentPools[/{pool}]
        let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
        let ok_prefix = parts.len() >= 8
            && lower[0] == "subscriptions"
            && lower[2] == "resourcegroups"
            && lower[4] == "providers"
            && lower[5] == "microsoft.containerservice"
            && lower[6] == "managedclusters"
            && lower.get(8).map(String::as_str) == Some("agentpools");
        if !ok_prefix {
            return arm_error(StatusCode::NOT_FOUND, "NotFound", "unknown path");
        }
        let id_base = parts[..9].join("/");
        match (method.clone(), parts.get(9)) {
            (Method::GET, None) => {
                let value: Vec<Value> = g
                    .pools
                    .iter()
                    .map(|(n, p)| pool_view(&id_base, n, &p.body))
                    .collect();
                json_response(StatusCode::OK, &json!({"value": value}), &[])
            }
            (Method::GET, Some(name)) => match g.pools.get(*name) {
                Some(p) => json_response(StatusCode::OK, &pool_view(&id_base, name, &p.body), &[]),
                None => arm_error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("agent pool {name} not found"),
                ),
            },
            (Method::PUT, Some(name)) => {
                let name = (*name).to_owned();
                let mut want: Value = match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => {
                        return arm_error(
                            StatusCode::BAD_REQUEST,
                            "InvalidRequestContent",
                            &e.to_string(),
                        );
                    }
                };
                let exists = g.pools.contains_key(&name);
                if !exists && g.faults.quota_exceeded {
                    let vm = want["properties"]["vmSize"]
                        .as_str()
                        .unwrap_or("?")
                        .to_owned();
                    return arm_error(
                        StatusCode::CONFLICT,
                        "QuotaExceeded",
                        &format!(
                            "Operation could not be completed as it results in exceeding approved {vm} Family Cores quota. Current Limit: 0."
                        ),
                    );
                }
                if let Some(p) = g.pools.get(&name)
                    && in_progress(&p.state)
                {
                    return arm_error(
                        StatusCode::CONFLICT,
                        "OperationNotAllowed",
                        &format!("agent pool {name} is {}", p.state),
                    );
                }
                let state = if exists { "Updating" } else { "Creating" };
                want["properties"]["provisioningState"] = json!(state);
                let (op, url) = self.new_op(&mut g);
                let delay = Duration::from_millis(g.faults.operation_ms);
                g.pools.insert(
                    name.clone(),
                    Pool {
                        body: want.clone(),
                        state: state.into(),
                        done_at: Instant::now() + delay,
                        op,
                    },
                );
                json_response(
                    if exists {
                        StatusCode::OK
                    } else {
                        StatusCode::CREATED
                    },
                    &pool_view(&id_base, &name, &want),
                    &[("azure-asyncoperation", url)],
                )
            }
            (Method::DELETE, Some(name)) => {
                let name = (*name).to_owned();
                if !g.pools.contains_key(&name) {
                    return StatusCode::NO_CONTENT.into_response();
                }
                let (op, url) = self.new_op(&mut g);
                let delay = Duration::from_millis(g.faults.operation_ms);
                if let Some(p) = g.pools.get_mut(&name) {
                    p.state = "Deleting".into();
                    p.body["properties"]["provisioningState"] = json!("Deleting");
                    p.done_at = Instant::now() + delay;
                    p.op = op;
                }
                let mut r = StatusCode::ACCEPTED.into_response();
                if let Ok(v) = axum::http::HeaderValue::from_str(&url) {
                    r.headers_mut().insert("azure-asyncoperation", v);
                }
                r
            }
            _ => arm_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "unsupported",
            ),
        }
    }
}

fn in_progress(state: &str) -> bool {
    !matches!(state, "Succeeded" | "Failed" | "Canceled")
}

fn pool_view(id_base: &str, name: &str, body: &Value) -> Value {
    let mut v = body.clone();
    v["id"] = json!(format!("/{id_base}/{name}"));
    v["name"] = json!(name);
    v["type"] = json!("Microsoft.ContainerService/managedClusters/agentPools");
    v
}

async fn any(
    State(arm): State<FakeArm>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() == "/_faults" {
        if method == Method::POST {
            match serde_json::from_slice::<Faults>(&body) {
                Ok(f) => arm.set_faults(f),
                Err(e) => return arm_error(StatusCode::BAD_REQUEST, "BadFaults", &e.to_string()),
            }
        }
        return json_response(StatusCode::OK, &json!(arm.faults()), &[]);
    }
    if uri.path() == "/_pools" {
        let pools: BTreeMap<String, Value> = arm
            .pools()
            .into_iter()
            .map(|(k, (state, body))| (k, json!({"state": state, "body": body})))
            .collect();
        return json_response(StatusCode::OK, &json!(pools), &[]);
    }
    arm.handle(&method, &uri, &headers, &body)
}

/// A running endpoint.
pub struct Running {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The CA certificate to trust (PEM).
    pub ca_pem: String,
    /// The bearer token it accepts.
    pub token: String,
    /// The state, for faults and inspection.
    pub arm: FakeArm,
    /// Pools that finished an operation.
    pub events: mpsc::UnboundedReceiver<PoolEvent>,
}

/// Setting up the endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum FakeArmError {
    /// Certificates.
    #[error("certificates: {0}")]
    Cert(#[from] rcgen::Error),
    /// TLS configuration.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// Binding.
    #[error("bind: {0}")]
    Io(#[from] std::io::Error),
}

/// Starts the endpoint on `addr` (port 0: any) with bearer `token`.
pub async fn start(addr: SocketAddr, token: &str) -> Result<Running, FakeArmError> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kaito fake ARM CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone(), ca_cert.der().clone()], key_der)?;
    let mut tls = tls;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let url = format!("https://127.0.0.1:{}", local.port());
    let (tx, rx) = mpsc::unbounded_channel();
    let arm = FakeArm {
        inner: Arc::new(Mutex::new(Inner {
            faults: Faults {
                operation_ms: 500,
                ..Faults::default()
            },
            ..Inner::default()
        })),
        token: token.to_owned(),
        base: url.clone(),
        events: tx,
    };
    let app = Router::new().fallback(any).with_state(arm.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tokio::spawn(async move {
        let builder = Builder::new(TokioExecutor::new());
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(app.clone());
            let builder = builder.clone();
            tokio::spawn(async move {
                if let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                {
                    let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                }
            });
        }
    });
    // Finish operations on time even when nobody polls.
    let ticker = arm.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            ticker.advance();
        }
    });
    Ok(Running {
        url,
        ca_pem: ca_cert.pem(),
        token: token.to_owned(),
        arm,
        events: rx,
    })
}
