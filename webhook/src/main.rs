//! The `kaito-webhook` binary: flags and environment, certificates, and the two servers.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use kaito_api::admission::{AdmissionConfig, Provisioner};
use kaito_presets::{Cloud, PresetCatalog, SkuCatalog};
use kaito_webhook::secret::SecretConfig;
use kaito_webhook::{AppState, certs, secret, server, tls};
use tokio::net::TcpListener;
use tokio::sync::watch;

const DAY: u64 = 24 * 3600;

/// Where the serving certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TlsMode {
    /// `--tls-cert-file`/`--tls-key-file`, re-read when they change (cert-manager, mounted Secret).
    Files,
    /// A CA and certificate made at start for `--tls-self-signed-for` (local runs, e2e).
    SelfSigned,
    /// A Secret the webhook creates, rotates and publishes into the webhook configurations' caBundle.
    Secret,
}

/// Log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Admission webhook for kaito.sh Workspaces: defaults (POST /mutate) and validation
/// (POST /validate) over HTTPS; /healthz, /readyz and /metrics over plain HTTP.
#[derive(Debug, Parser)]
#[command(name = "kaito-webhook", version)]
struct Args {
    /// Cloud whose GPU sizes apply: azure or aws.
    #[arg(long, env = "KAITO_CLOUD", default_value = "azure")]
    cloud: Cloud,
    /// How GPU nodes appear: aks (node auto-provisioning), karpenter, or byo (bring your own).
    #[arg(long, env = "KAITO_PROVISIONER", default_value = "aks")]
    provisioner: Provisioner,
    /// Model preset catalog file replacing the built-in one.
    #[arg(long, env = "KAITO_PRESET_CATALOG")]
    preset_catalog: Option<PathBuf>,
    /// GPU SKU catalog file replacing the built-in one.
    #[arg(long, env = "KAITO_SKU_CATALOG")]
    sku_catalog: Option<PathBuf>,

    /// Address the HTTPS admission server binds.
    #[arg(long, env = "WEBHOOK_BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Port of the HTTPS admission server.
    #[arg(long, env = "WEBHOOK_PORT", default_value_t = 9443)]
    port: u16,
    /// Address of the plain-HTTP health and metrics server.
    #[arg(long, env = "WEBHOOK_HEALTH_BIND_ADDRESS", default_value = "0.0.0.0")]
    health_bind_address: IpAddr,
    /// Port of the plain-HTTP health and metrics server.
    #[arg(long, env = "WEBHOOK_HEALTH_PORT", default_value_t = 8080)]
    health_port: u16,
    /// Largest accepted AdmissionReview, in bytes.
    #[arg(long, env = "WEBHOOK_MAX_BODY_BYTES", default_value_t = server::DEFAULT_MAX_BODY)]
    max_body_bytes: usize,
    /// Admission requests read and handled at once; more wait (up to --request-timeout-secs)
    /// for a slot. With the body limit this bounds memory: see the chart README.
    #[arg(long, env = "WEBHOOK_MAX_CONCURRENT_ADMISSIONS", default_value_t = server::Limits::default().max_admissions)]
    max_concurrent_admissions: usize,
    /// Open HTTPS connections at most; more wait in the listen backlog.
    #[arg(long, env = "WEBHOOK_MAX_CONNECTIONS", default_value_t = server::Limits::default().max_connections)]
    max_connections: usize,
    /// Seconds from a request's headers to its answer (waiting for a slot included); then it
    /// is answered 503. Keep it under the webhook configurations' timeoutSeconds.
    #[arg(long, env = "WEBHOOK_REQUEST_TIMEOUT_SECS", default_value_t = server::Limits::default().request_timeout.as_secs())]
    request_timeout_secs: u64,
    /// Seconds a client has to finish the TLS handshake and send a request's headers.
    #[arg(long, default_value_t = server::Limits::default().header_timeout.as_secs())]
    header_timeout_secs: u64,
    /// Threads serving requests (default: the CPUs, at most 4; each thread has its own
    /// allocator arena, so more threads cost memory without adding capacity).
    #[arg(long, env = "WEBHOOK_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Seconds open requests may take to finish after SIGTERM.
    #[arg(long, default_value_t = 10)]
    shutdown_grace_secs: u64,

    /// Certificate source; default: files when --tls-cert-file is given, self-signed when
    /// --tls-self-signed-for is given, else secret.
    #[arg(long, env = "WEBHOOK_TLS_MODE", value_enum)]
    tls_mode: Option<TlsMode>,
    /// PEM certificate (chain) file (files mode).
    #[arg(long, env = "WEBHOOK_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key file (files mode).
    #[arg(long, env = "WEBHOOK_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// How often the files are checked for changes, in milliseconds (files mode).
    #[arg(long, default_value_t = 2000)]
    tls_reload_interval_ms: u64,
    /// Comma-separated DNS names / IPs for a self-signed certificate (self-signed mode).
    #[arg(long, value_delimiter = ',')]
    tls_self_signed_for: Vec<String>,
    /// Where to write the self-signed CA (PEM), for a webhook configuration's caBundle.
    #[arg(long)]
    tls_ca_out: Option<PathBuf>,

    /// Namespace of the webhook's Service and certificate Secret (secret mode).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kaito-system")]
    namespace: String,
    /// Name of the webhook's Service; the certificate is for <service>.<namespace>.svc.
    #[arg(long, env = "WEBHOOK_SERVICE_NAME", default_value = "kaito-webhook")]
    service_name: String,
    /// Name of the Secret holding the certificates.
    #[arg(
        long,
        env = "WEBHOOK_CERT_SECRET",
        default_value = "kaito-webhook-cert"
    )]
    cert_secret: String,
    /// Name of the Secret holding the CA certificate and key (secret mode); only read when a
    /// serving certificate is issued.
    #[arg(long, env = "WEBHOOK_CA_SECRET", default_value = "kaito-webhook-ca")]
    ca_secret: String,
    /// More names/IPs in the serving certificate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    cert_extra_sans: Vec<String>,
    /// MutatingWebhookConfiguration whose caBundle the webhook keeps up to date ("" for none).
    #[arg(long, env = "WEBHOOK_MUTATING_CONFIG", default_value = "kaito-webhook")]
    mutating_webhook_config: String,
    /// ValidatingWebhookConfiguration whose caBundle the webhook keeps up to date ("" for none).
    #[arg(
        long,
        env = "WEBHOOK_VALIDATING_CONFIG",
        default_value = "kaito-webhook"
    )]
    validating_webhook_config: String,
    /// Lifetime of a new CA, in days.
    #[arg(long, default_value_t = 3650)]
    ca_validity_days: u64,
    /// Lifetime of a new serving certificate, in days.
    #[arg(long, default_value_t = 365)]
    cert_validity_days: u64,
    /// Renew certificates this many days before they expire.
    #[arg(long, default_value_t = 30)]
    rotate_before_days: u64,
    /// How often the Secret and expiry are re-checked, in seconds.
    #[arg(long, default_value_t = 3600)]
    cert_check_interval_secs: u64,

    /// PEM CA that signs the API server's webhook client certificate. When set, every admission
    /// connection must present a certificate it signed (and, with --client-allowed-names, one
    /// of those names), and only then does the webhook read the ConfigMaps that tuning.config
    /// and inference.config name. Unset: callers are not authenticated and no ConfigMap is read
    /// at admission (the controller reports a bad one on the Workspace).
    #[arg(long, env = "WEBHOOK_CLIENT_CA_FILE")]
    client_ca_file: Option<PathBuf>,
    /// Names (subject CN or DNS SAN) a client certificate must carry, comma-separated; empty:
    /// any certificate --client-ca-file signed.
    #[arg(long, env = "WEBHOOK_CLIENT_ALLOWED_NAMES", value_delimiter = ',')]
    client_allowed_names: Vec<String>,

    /// The Hugging Face hub that resolves `inference.preset.name: org/model[@revision]` (its
    /// commit, config.json and file sizes, recorded on the Workspace at creation).
    #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
    hf_endpoint: String,
    /// Seconds one Hugging Face id may take to resolve (the token's Secret included); then the
    /// Workspace is denied with a message to try again. Keep it under --request-timeout-secs.
    #[arg(long, env = "WEBHOOK_HUB_TIMEOUT_SECS", default_value_t = kaito_webhook::hub::DEFAULT_TIMEOUT.as_secs())]
    hub_timeout_secs: u64,
    /// Seconds a resolved public id@revision is remembered.
    #[arg(long, env = "WEBHOOK_HUB_CACHE_TTL_SECS", default_value_t = kaito_webhook::hub::DEFAULT_CACHE_TTL.as_secs())]
    hub_cache_ttl_secs: u64,

    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,

    /// Parse the flags and environment, validate them (cloud and provisioner, the catalog
    /// files, the certificate source's required flags), print the effective configuration as
    /// JSON and exit: 0 when the webhook could start with it, 1 with the setting to fix.
    /// Nothing is bound or contacted.
    #[arg(long)]
    check_config: bool,
    /// TESTS ONLY: tuning input URLs may also name this one address (private or not). For a
    /// test cluster whose data server sits on a private address; never set it in production.
    #[arg(long, env = "KAITO_TEST_ONLY_ALLOW_DATA_ADDRESS")]
    test_only_allow_data_address: Option<std::net::IpAddr>,
    /// Most nodes (`resource.count`) one Workspace may ask for.
    #[arg(long, env = "KAITO_MAX_NODES_PER_WORKSPACE",
          default_value_t = kaito_api::admission::DEFAULT_MAX_NODES_PER_WORKSPACE)]
    max_nodes_per_workspace: u32,
    /// Admit hostPath volumes in inference.template and in volumeSource fields.
    #[arg(long, env = "KAITO_ALLOW_HOST_PATH")]
    allow_host_path: bool,
    /// Admit privileged containers, host namespaces and capabilities beyond the Pod Security
    /// Standards' baseline in inference.template.
    #[arg(long, env = "KAITO_ALLOW_PRIVILEGED")]
    allow_privileged: bool,
}

/// The admission configuration of `args`: cloud, provisioner and catalogs, checked.
fn admission_config(args: &Args) -> anyhow::Result<AdmissionConfig> {
    args.provisioner
        .check_cloud(args.cloud)
        .map_err(anyhow::Error::msg)?;
    let mut config = AdmissionConfig::new(args.cloud, args.provisioner);
    config.pod_policy = kaito_api::admission::PodPolicy {
        max_nodes_per_workspace: args.max_nodes_per_workspace,
        allow_host_path: args.allow_host_path,
        allow_privileged: args.allow_privileged,
    };
    if let Some(ip) = args.test_only_allow_data_address {
        tracing::warn!(%ip, "TESTS ONLY: tuning input URLs may name this address");
        config.url_policy = kaito_api::admission::UrlPolicy::TestOnlyAllowAddress(ip);
    }
    if let Some(path) = &args.preset_catalog {
        config.presets = PresetCatalog::from_file(path)
            .with_context(|| format!("loading the preset catalog {}", path.display()))?;
    }
    if let Some(path) = &args.sku_catalog {
        config.skus = SkuCatalog::from_file(path)
            .with_context(|| format!("loading the SKU catalog {}", path.display()))?;
    }
    Ok(config)
}

/// The certificate source of `args`, with the flags it needs checked.
fn tls_mode(args: &Args) -> anyhow::Result<TlsMode> {
    let mode = args.tls_mode.unwrap_or(if args.tls_cert_file.is_some() {
        TlsMode::Files
    } else if !args.tls_self_signed_for.is_empty() {
        TlsMode::SelfSigned
    } else {
        TlsMode::Secret
    });
    match mode {
        TlsMode::Files if args.tls_cert_file.is_none() || args.tls_key_file.is_none() => {
            anyhow::bail!("--tls-mode files needs --tls-cert-file and --tls-key-file")
        }
        TlsMode::SelfSigned if args.tls_self_signed_for.is_empty() => {
            anyhow::bail!("--tls-mode self-signed needs --tls-self-signed-for HOST[,HOST...]")
        }
        TlsMode::Secret
            if args.namespace.is_empty()
                || args.cert_secret.is_empty()
                || args.ca_secret.is_empty()
                || args.ca_secret == args.cert_secret =>
        {
            anyhow::bail!(
                "--tls-mode secret needs --namespace (POD_NAMESPACE), --cert-secret \
                 (WEBHOOK_CERT_SECRET) and a different --ca-secret (WEBHOOK_CA_SECRET)"
            )
        }
        mode => Ok(mode),
    }
}

/// The command-line spelling of a value (`self-signed`, `json`).
fn value_name(v: impl ValueEnum) -> Option<String> {
    v.to_possible_value().map(|p| p.get_name().to_owned())
}

/// The effective configuration `--check-config` prints.
fn effective(args: &Args, config: &AdmissionConfig, mode: TlsMode) -> serde_json::Value {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    serde_json::json!({
        "cloud": config.cloud.to_string(),
        "provisioner": config.provisioner.to_string(),
        "presetCatalog": path(&args.preset_catalog),
        "skuCatalog": path(&args.sku_catalog),
        "presets": config.presets.iter().count(),
        "gpuSizes": config.skus.gpu_skus(config.cloud).count(),
        "https": SocketAddr::new(args.bind_address, args.port).to_string(),
        "health": SocketAddr::new(args.health_bind_address, args.health_port).to_string(),
        "maxBodyBytes": args.max_body_bytes,
        "maxConcurrentAdmissions": args.max_concurrent_admissions,
        "maxConnections": args.max_connections,
        "requestTimeoutSecs": args.request_timeout_secs,
        "headerTimeoutSecs": args.header_timeout_secs,
        "policy": {
            "maxNodesPerWorkspace": config.pod_policy.max_nodes_per_workspace,
            "allowHostPath": config.pod_policy.allow_host_path,
            "allowPrivileged": config.pod_policy.allow_privileged,
        },
        "tlsMode": value_name(mode),
        "namespace": args.namespace,
        "serviceName": args.service_name,
        "certSecret": args.cert_secret,
        "caSecret": args.ca_secret,
        "mutatingWebhookConfig": args.mutating_webhook_config,
        "validatingWebhookConfig": args.validating_webhook_config,
        "logFormat": value_name(args.log_format),
        "clientCaFile": path(&args.client_ca_file),
        "clientAllowedNames": args.client_allowed_names,
        "configMapChecks": args.client_ca_file.is_some(),
        "hfEndpoint": args.hf_endpoint,
        "hubTimeoutSecs": args.hub_timeout_secs,
        "hubCacheTtlSecs": args.hub_cache_ttl_secs,
    })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal(tx: watch::Sender<bool>) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    let _ = tx.send(true);
}

/// The client authentication of `args`: the CA file read and checked, or `None`.
fn client_auth(args: &Args) -> anyhow::Result<Option<certs::ClientAuth>> {
    let Some(path) = &args.client_ca_file else {
        anyhow::ensure!(
            args.client_allowed_names.is_empty(),
            "--client-allowed-names needs --client-ca-file (WEBHOOK_CLIENT_CA_FILE)"
        );
        return Ok(None);
    };
    let ca_pem = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading --client-ca-file {} (WEBHOOK_CLIENT_CA_FILE)",
            path.display()
        )
    })?;
    let auth = certs::ClientAuth {
        ca_pem,
        source: path.display().to_string(),
        allowed_names: args
            .client_allowed_names
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect(),
    };
    // Checked here so that --check-config refuses a bad file too.
    certs::server_config_with_client_auth(Arc::new(certs::ReloadingResolver::new()), &auth)?;
    Ok(Some(auth))
}

/// The Hugging Face id resolver of `args`, checked.
fn hub_resolver(args: &Args) -> anyhow::Result<kaito_webhook::hub::HubResolver> {
    anyhow::ensure!(
        args.hub_timeout_secs > 0 && args.hub_timeout_secs < args.request_timeout_secs,
        "--hub-timeout-secs (WEBHOOK_HUB_TIMEOUT_SECS) must be at least 1 and below \
         --request-timeout-secs ({}), so a hub that does not answer is a denial, not a timeout",
        args.request_timeout_secs
    );
    kaito_webhook::hub::HubResolver::new(
        &args.hf_endpoint,
        Duration::from_secs(args.hub_timeout_secs),
        Duration::from_secs(args.hub_cache_ttl_secs),
    )
    .map_err(|e| anyhow::anyhow!("--hf-endpoint (HF_ENDPOINT): {e}"))
}

/// The admission server's limits of `args`, checked.
fn limits(args: &Args) -> anyhow::Result<server::Limits> {
    anyhow::ensure!(
        args.max_concurrent_admissions > 0,
        "--max-concurrent-admissions (WEBHOOK_MAX_CONCURRENT_ADMISSIONS) must be at least 1"
    );
    anyhow::ensure!(
        args.max_connections > 0,
        "--max-connections (WEBHOOK_MAX_CONNECTIONS) must be at least 1"
    );
    anyhow::ensure!(
        args.request_timeout_secs > 0 && args.header_timeout_secs > 0,
        "--request-timeout-secs and --header-timeout-secs must be at least 1"
    );
    Ok(server::Limits {
        max_admissions: args.max_concurrent_admissions,
        max_connections: args.max_connections,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        header_timeout: Duration::from_secs(args.header_timeout_secs),
    })
}

fn main() -> anyhow::Result<()> {
    // One process-wide TLS crypto provider (ring). A workspace-wide build can also link
    // aws-lc-rs through other crates, and rustls then refuses to pick one on its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let threads = args.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4)
    });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = admission_config(&args)?;
    let mode = tls_mode(&args)?;
    let limits = limits(&args)?;
    let client_auth = client_auth(&args)?;
    let hub = hub_resolver(&args)?;
    if args.check_config {
        println!(
            "{}",
            serde_json::to_string_pretty(&effective(&args, &config, mode))?
        );
        return Ok(());
    }
    init_tracing(args.log_format);

    let mut state = AppState::new(config).with_limits(&limits);
    state.max_body = args.max_body_bytes;
    state.hub = Some(Arc::new(hub));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut client = None;
    let cert_task = match mode {
        TlsMode::Files => {
            let (Some(cert), Some(key)) = (args.tls_cert_file.clone(), args.tls_key_file.clone())
            else {
                anyhow::bail!("--tls-mode files needs --tls-cert-file and --tls-key-file");
            };
            Some(
                tls::load_and_watch_files(
                    cert,
                    key,
                    Duration::from_millis(args.tls_reload_interval_ms.max(10)),
                    state.resolver.clone(),
                    state.metrics.clone(),
                    shutdown_rx.clone(),
                )
                .await?,
            )
        }
        TlsMode::SelfSigned => {
            tls::self_signed(
                &args.tls_self_signed_for,
                Duration::from_secs(args.cert_validity_days * DAY),
                args.tls_ca_out.as_deref(),
                &state.resolver,
                &state.metrics,
            )?;
            None
        }
        TlsMode::Secret => {
            let secret_client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API for the certificate Secret")?;
            client = Some(secret_client.clone());
            let cfg = SecretConfig {
                namespace: args.namespace.clone(),
                secret_name: args.cert_secret.clone(),
                ca_secret_name: args.ca_secret.clone(),
                service_name: args.service_name.clone(),
                extra_sans: args.cert_extra_sans.clone(),
                mutating_webhook: non_empty(&args.mutating_webhook_config),
                validating_webhook: non_empty(&args.validating_webhook_config),
                ca_validity: Duration::from_secs(args.ca_validity_days * DAY),
                cert_validity: Duration::from_secs(args.cert_validity_days * DAY),
                rotate_before: Duration::from_secs(args.rotate_before_days * DAY),
                check_interval: Duration::from_secs(args.cert_check_interval_secs.max(1)),
            };
            Some(
                secret::start(
                    secret_client,
                    cfg,
                    state.resolver.clone(),
                    state.metrics.clone(),
                    shutdown_rx.clone(),
                )
                .await?,
            )
        }
    };

    // The ConfigMaps named by tuning.config / inference.config are read with the webhook's
    // identity, and only for callers it authenticated: with anyone able to reach the port, a
    // request naming any namespace would make it read (and judge) any ConfigMap.
    let tls_config = match &client_auth {
        Some(auth) => {
            if client.is_none() {
                client = match kube::Client::try_default().await {
                    Ok(client) => Some(client),
                    Err(err) => {
                        tracing::warn!(
                            error = %err,
                            "no Kubernetes client: the ConfigMaps named in tuning.config and \
                             inference.config are not checked at admission"
                        );
                        None
                    }
                };
            }
            state.client = client;
            tracing::info!(
                client_ca = %auth.source,
                allowed_names = ?auth.allowed_names,
                "admission callers must present a client certificate; ConfigMap checks at \
                 admission are on"
            );
            certs::server_config_with_client_auth(state.resolver.clone(), auth)?
        }
        None => {
            state.client = None;
            tracing::warn!(
                "ConfigMap checks at admission are off: callers are not authenticated (no \
                 --client-ca-file), so the webhook reads no ConfigMap a request names; \
                 tuning.config and inference.config are admitted with a warning and checked \
                 when the controller reads them"
            );
            certs::server_config(state.resolver.clone())?
        }
    };
    let tls_config = Arc::new(tls_config);
    let addr = SocketAddr::new(args.bind_address, args.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let health_addr = SocketAddr::new(args.health_bind_address, args.health_port);
    let health_listener = TcpListener::bind(health_addr)
        .await
        .with_context(|| format!("binding {health_addr}"))?;
    tracing::info!(
        https = %listener.local_addr()?,
        health = %health_listener.local_addr()?,
        cloud = %args.cloud,
        provisioner = ?args.provisioner,
        tls_mode = ?mode,
        "kaito-webhook serving"
    );

    tokio::spawn(shutdown_signal(shutdown_tx));
    let health = tokio::spawn(server::serve_plain(
        health_listener,
        server::health_router(state.clone()),
        shutdown_rx.clone(),
    ));
    server::serve_tls(
        listener,
        tls_config,
        server::admission_router(state),
        shutdown_rx,
        Duration::from_secs(args.shutdown_grace_secs),
        limits,
    )
    .await;
    health
        .await
        .context("health server task")?
        .context("health server")?;
    if let Some(task) = cert_task {
        task.abort();
    }
    tracing::info!("kaito-webhook stopped");
    Ok(())
}
