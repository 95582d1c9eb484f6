//! Typed errors of the plugin. Every variant names the cause and, where one exists, the fix;
//! `main` prints `error: <Display>` and exits non-zero, never a debug dump.

use std::path::PathBuf;

/// Everything that can go wrong in `kubectl kaito`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be loaded or has no usable context.
    #[error(
        "cannot load the kubeconfig: {0}\n  fix: point --kubeconfig or KUBECONFIG at a valid file, or pick a context with --context (see `kubectl config get-contexts`)"
    )]
    Kubeconfig(String),

    /// The apiserver could not be reached.
    #[error(
        "cannot reach the Kubernetes API server: {0}\n  fix: check that the cluster is running and that --context/--kubeconfig select it (`kubectl cluster-info`)"
    )]
    Unreachable(String),

    /// The Workspace API is not served (CRD missing).
    #[error(
        "the cluster does not serve workspaces.kaito.sh ({0})\n  fix: install KAITO's CRDs: kubectl apply -f charts/kaito/crds/ (or helm install the kaito chart)"
    )]
    CrdMissing(String),

    /// A named workspace does not exist.
    #[error(
        "workspace {name:?} not found in namespace {namespace:?}\n  fix: list workspaces with `kubectl kaito get -n {namespace}` or `kubectl kaito get -A`"
    )]
    NotFound {
        /// The workspace's name.
        name: String,
        /// Its namespace.
        namespace: String,
    },

    /// A workspace of that name already exists.
    #[error(
        "workspace {name:?} already exists in namespace {namespace:?}\n  fix: pick another name, or delete it first with `kubectl kaito delete {name} -n {namespace}`"
    )]
    AlreadyExists {
        /// The workspace's name.
        name: String,
        /// Its namespace.
        namespace: String,
    },

    /// The apiserver (or an admission webhook) rejected the request; the message is verbatim.
    #[error("{0}")]
    Rejected(String),

    /// RBAC forbids the request.
    #[error(
        "forbidden: {0}\n  fix: ask a cluster admin for access (check with `kubectl auth can-i`)"
    )]
    Forbidden(String),

    /// Another API error.
    #[error("the API server answered {code} {reason}: {message}")]
    Api {
        /// HTTP status.
        code: u16,
        /// Machine-readable reason.
        reason: String,
        /// Human-readable message.
        message: String,
    },

    /// Client-side validation (`--dry-run=client`) failed; the text is the webhook's.
    #[error("workspace {name:?} would be rejected by admission:\n{message}")]
    Invalid {
        /// The workspace's name.
        name: String,
        /// One `field: message` per line, as the webhook words them.
        message: String,
    },

    /// A command-line value is wrong.
    #[error("{0}")]
    Usage(String),

    /// A file could not be read.
    #[error("cannot read {path}: {source}\n  fix: check the path and its permissions")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// A file or response is not a valid Workspace.
    #[error("{what} is not a valid Workspace: {message}")]
    Parse {
        /// What was parsed.
        what: String,
        /// The parser's message.
        message: String,
    },

    /// The workspace is not ready for what was asked (chat, logs).
    #[error("{0}")]
    NotReady(String),

    /// Talking to the model server failed.
    #[error("{0}")]
    Chat(String),

    /// Waiting for something took too long.
    #[error("{0}")]
    Timeout(String),

    /// Writing to the terminal failed.
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
}

/// Result with the plugin's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps a kube client error to one that says what happened and what to do, using
    /// `name`/`namespace` for not-found and already-exists.
    pub fn from_kube(err: kube::Error, name: Option<&str>, namespace: &str) -> Self {
        match err {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                match (status.code, status.reason.as_str()) {
                    (404, _)
                        if name.is_none()
                            || message.contains("could not find the requested resource") =>
                    {
                        Self::CrdMissing(message)
                    }
                    (404, _) => Self::NotFound {
                        name: name.unwrap_or_default().to_string(),
                        namespace: namespace.to_string(),
                    },
                    (409, "AlreadyExists") => Self::AlreadyExists {
                        name: name.unwrap_or_default().to_string(),
                        namespace: namespace.to_string(),
                    },
                    (403, _) => Self::Forbidden(message),
                    (400 | 422 | 409, _) => Self::Rejected(message),
                    (code, reason) => Self::Api {
                        code,
                        reason: reason.to_string(),
                        message,
                    },
                }
            }
            kube::Error::InferConfig(e) => Self::Kubeconfig(e.to_string()),
            kube::Error::Auth(e) => Self::Kubeconfig(e.to_string()),
            other => Self::Unreachable(chain(&other)),
        }
    }
}

/// `err: cause: cause…` — the whole source chain on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let t = e.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = e.source();
    }
    s
}
