//! `kaito-controller`: leader election, the reconcile loop, and the metrics/health server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kaito_controller::azure::AzureSettings;
use kaito_controller::config::{
    Cloud, Config, DEFAULT_NODE_CLASS, DEFAULT_NODE_POOL, KarpenterConfig, Provisioner,
    WorkloadConfig,
};
use kaito_controller::leader::{LeaderElector, Timing};
use kaito_controller::reconcile;
use kaito_controller::telemetry::{Health, Metrics, router};
use kube::{Api, Client};
use tracing::{error, info, warn};

/// Turns KAITO Workspaces into GPU nodes and serving/tuning workloads.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Cloud whose GPU sizes workspaces are planned with: azure or aws (the webhook's
    /// setting of the same name).
    #[arg(long, env = "KAITO_CLOUD", default_value = "azure")]
    cloud: Cloud,
    /// Node provisioner: aks, karpenter or byo.
    #[arg(long, env = "KAITO_PROVISIONER", default_value = "karpenter")]
    provisioner: Provisioner,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "KAITO_METRICS_ADDR", default_value = "127.0.0.1:8080")]
    metrics_addr: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "KAITO_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "KAITO_LEADER_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "kaito-controller")]
    leader_election_name: String,
    /// Disable leader election (single replica).
    #[arg(long)]
    no_leader_election: bool,
    /// Seconds a standby waits after it last saw the Lease change (on its own clock) before it
    /// takes it; written into the Lease.
    #[arg(long, env = "KAITO_LEADER_LEASE_DURATION", default_value_t = 15)]
    leader_election_lease_duration_secs: u64,
    /// Seconds the leader goes on without a successful renewal before it exits (shorter than
    /// the lease duration); each Lease API call times out after half of it.
    #[arg(long, env = "KAITO_LEADER_RENEW_DEADLINE", default_value_t = 10)]
    leader_election_renew_deadline_secs: u64,
    /// Seconds between two renewals (or two looks at the Lease by a standby); shorter than
    /// the renew deadline.
    #[arg(long, env = "KAITO_LEADER_RETRY_PERIOD", default_value_t = 2)]
    leader_election_retry_period_secs: u64,
    /// Identity in the Lease (default: hostname-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Serving image: `{preset}` is replaced by the preset name, `{computeCapability}` by the
    /// workspace's GPU's CUDA compute capability without the dot (70, 75, 80, 86, 89, 90) or by
    /// `cpu` on a CPU-only size; a value without placeholders is used as is.
    #[arg(long, env = "KAITO_RUNTIME_IMAGE")]
    runtime_image: Option<String>,
    /// Serving command (space-separated).
    #[arg(long, env = "KAITO_RUNTIME_COMMAND")]
    runtime_command: Option<String>,
    /// Hugging Face hub (or mirror) the serving pods download weights from (their HF_ENDPOINT).
    #[arg(long, env = "KAITO_HF_ENDPOINT")]
    hf_endpoint: Option<String>,
    /// Node-local weights cache directory (hostPath); default: an emptyDir per pod.
    #[arg(long, env = "KAITO_WEIGHTS_CACHE_HOST_PATH")]
    weights_cache_host_path: Option<String>,
    /// Adapter puller image (runs `kaito-adapter pull`).
    #[arg(long, env = "KAITO_ADAPTER_PULLER_IMAGE")]
    adapter_puller_image: Option<String>,
    /// Trainer image (`{preset}` is replaced).
    #[arg(long, env = "KAITO_TRAINER_IMAGE")]
    trainer_image: Option<String>,
    /// Trainer command (space-separated; `{gpus}` is replaced by the GPUs per node).
    #[arg(long, env = "KAITO_TRAINER_COMMAND")]
    trainer_command: Option<String>,
    /// Longest a tuning Job may run, in seconds (its activeDeadlineSeconds).
    #[arg(long, env = "KAITO_TUNING_DEADLINE_SECONDS",
          default_value_t = kaito_controller::config::DEFAULT_TUNING_DEADLINE_SECONDS)]
    tuning_deadline_seconds: u64,
    /// Publisher image (runs `kaito-adapter publish`).
    #[arg(long, env = "KAITO_PUBLISHER_IMAGE")]
    publisher_image: Option<String>,
    /// Data downloader image (runs `kaito-adapter fetch`).
    #[arg(long, env = "KAITO_DATA_DOWNLOADER_IMAGE")]
    data_downloader_image: Option<String>,
    /// Registries (host:port) the adapter publisher and pullers speak plain http to.
    #[arg(
        long = "insecure-registry",
        env = "KAITO_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// TESTS ONLY: the one non-public address tuning input may come from (a test cluster's
    /// data server); never set it in production.
    #[arg(long, env = "KAITO_TEST_ONLY_ALLOW_DATA_ADDRESS")]
    test_only_allow_data_address: Option<std::net::IpAddr>,
    /// JSON logs.
    #[arg(long, env = "KAITO_LOG_JSON")]
    log_json: bool,
    /// aks: subscription of the cluster.
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID", default_value = "")]
    azure_subscription_id: String,
    /// aks: resource group of the cluster.
    #[arg(long, env = "AZURE_RESOURCE_GROUP", default_value = "")]
    azure_resource_group: String,
    /// aks: name of the AKS cluster.
    #[arg(long, env = "AZURE_CLUSTER_NAME", default_value = "")]
    azure_cluster_name: String,
    /// aks: Azure Resource Manager endpoint (tests: a local ARM endpoint).
    #[arg(long, env = "KAITO_AZURE_ENDPOINT")]
    azure_endpoint: Option<String>,
    /// aks: file holding a static bearer token, for a local ARM test endpoint only (default:
    /// workload identity when AZURE_FEDERATED_TOKEN_FILE is set, else managed identity).
    #[arg(long, env = "KAITO_AZURE_TOKEN_FILE")]
    azure_token_file: Option<std::path::PathBuf>,
    /// aks: PEM file of an extra CA trusted for the ARM endpoint.
    #[arg(long, env = "KAITO_AZURE_CA_FILE")]
    azure_ca_file: Option<std::path::PathBuf>,
    /// aks: seconds between sweeps for orphaned agent pools.
    #[arg(long, env = "KAITO_AZURE_ORPHAN_INTERVAL", default_value_t = 60)]
    azure_orphan_interval_secs: u64,
    /// karpenter: name of the NodeClass every NodeClaim references (its group and kind follow
    /// --cloud: AKSNodeClass on azure, EC2NodeClass on aws); it must exist.
    #[arg(long, env = "KAITO_KARPENTER_NODE_CLASS_NAME", default_value = DEFAULT_NODE_CLASS)]
    karpenter_node_class_name: String,
    /// karpenter: NodePool named in each NodeClaim's karpenter.sh/nodepool label and
    /// requirement.
    #[arg(long, env = "KAITO_KARPENTER_NODE_POOL_NAME", default_value = DEFAULT_NODE_POOL)]
    karpenter_node_pool_name: String,
    /// Parse the flags and environment, validate them (the provisioner's required settings
    /// included), print the effective configuration as JSON and exit: 0 when the controller
    /// could start with it, 1 with the setting to fix. Nothing is contacted.
    #[arg(long)]
    check_config: bool,
    /// Preset catalog (YAML) instead of the built-in one; the webhook's setting of the same
    /// name, so both size with the same catalog.
    #[arg(long, env = "KAITO_PRESET_CATALOG")]
    preset_catalog: Option<std::path::PathBuf>,
    /// SKU (GPU size) catalog (YAML) instead of the built-in one; the webhook's setting.
    #[arg(long, env = "KAITO_SKU_CATALOG")]
    sku_catalog: Option<std::path::PathBuf>,
}

/// The leader-election durations of the flags.
fn timing(args: &Args) -> Timing {
    Timing {
        lease_duration: Duration::from_secs(args.leader_election_lease_duration_secs),
        renew_deadline: Duration::from_secs(args.leader_election_renew_deadline_secs),
        retry_period: Duration::from_secs(args.leader_election_retry_period_secs),
    }
}

/// Loads `--preset-catalog`/`--sku-catalog` (if given) and sizes with them from now on.
fn catalogs(args: &Args) -> anyhow::Result<()> {
    let presets = args
        .preset_catalog
        .as_deref()
        .map(|p| {
            kaito_presets::PresetCatalog::from_file(p).with_context(|| {
                format!(
                    "loading the preset catalog {} (--preset-catalog)",
                    p.display()
                )
            })
        })
        .transpose()?;
    let skus = args
        .sku_catalog
        .as_deref()
        .map(|p| {
            kaito_presets::SkuCatalog::from_file(p)
                .with_context(|| format!("loading the SKU catalog {} (--sku-catalog)", p.display()))
        })
        .transpose()?;
    kaito_controller::plan::use_settings(args.cloud, args.provisioner, presets, skus)
        .map_err(anyhow::Error::msg)
}

/// The effective configuration `--check-config` prints: the controller's [`Config`] and the
/// process settings around it.
fn effective(args: &Args, config: &Config) -> serde_json::Value {
    let mut v = config.summary();
    v["namespace"] = serde_json::json!(args.namespace);
    v["metricsAddr"] = serde_json::json!(args.metrics_addr.to_string());
    v["leaderElection"] = serde_json::json!({
        "enabled": !args.no_leader_election,
        "namespace": args.leader_election_namespace,
        "name": args.leader_election_name,
        "identity": args.identity,
        "leaseDurationSeconds": args.leader_election_lease_duration_secs,
        "renewDeadlineSeconds": args.leader_election_renew_deadline_secs,
        "retryPeriodSeconds": args.leader_election_retry_period_secs,
    });
    v["logJson"] = serde_json::json!(args.log_json);
    let catalog = kaito_controller::plan::admission_config(args.cloud);
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    v["presetCatalog"] = serde_json::json!(path(&args.preset_catalog));
    v["skuCatalog"] = serde_json::json!(path(&args.sku_catalog));
    v["presets"] = serde_json::json!(catalog.presets.iter().count());
    v["gpuSizes"] = serde_json::json!(catalog.skus.gpu_skus(args.cloud).count());
    v
}

fn azure(args: &Args) -> anyhow::Result<AzureSettings> {
    let read = |p: &Option<std::path::PathBuf>| -> anyhow::Result<Option<String>> {
        p.as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|s| s.trim().to_owned())
                    .with_context(|| format!("reading {}", p.display()))
            })
            .transpose()
    };
    Ok(AzureSettings {
        subscription_id: args.azure_subscription_id.clone(),
        resource_group: args.azure_resource_group.clone(),
        cluster_name: args.azure_cluster_name.clone(),
        endpoint: args.azure_endpoint.clone(),
        static_token: read(&args.azure_token_file)?,
        ca_pem: read(&args.azure_ca_file)?,
        orphan_interval: Duration::from_secs(args.azure_orphan_interval_secs.max(1)),
    })
}

fn workload(args: &Args) -> WorkloadConfig {
    let mut w = WorkloadConfig::default();
    let set = |dst: &mut String, v: &Option<String>| {
        if let Some(v) = v {
            dst.clone_from(v);
        }
    };
    set(&mut w.runtime_image, &args.runtime_image);
    set(&mut w.adapter_puller_image, &args.adapter_puller_image);
    set(&mut w.trainer_image, &args.trainer_image);
    set(&mut w.publisher_image, &args.publisher_image);
    set(&mut w.data_downloader_image, &args.data_downloader_image);
    let words = |dst: &mut Vec<String>, v: &Option<String>| {
        if let Some(v) = v {
            *dst = v.split_whitespace().map(String::from).collect();
        }
    };
    words(&mut w.runtime_command, &args.runtime_command);
    w.hf_endpoint = args.hf_endpoint.clone().filter(|s| !s.is_empty());
    w.weights_cache_host_path = args
        .weights_cache_host_path
        .clone()
        .filter(|s| !s.is_empty());
    words(&mut w.trainer_command, &args.trainer_command);
    w.tuning_deadline_seconds = args.tuning_deadline_seconds;
    w.insecure_registries = args
        .insecure_registries
        .iter()
        .filter(|r| !r.is_empty())
        .cloned()
        .collect();
    w.test_only_allow_data_address = args.test_only_allow_data_address.map(|ip| ip.to_string());
    w
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One process-wide TLS crypto provider (ring). A workspace-wide build can also link
    // aws-lc-rs through other crates, and rustls then refuses to pick one on its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let config = Config {
        cloud: args.cloud,
        provisioner: args.provisioner,
        workload: workload(&args),
        azure: azure(&args)?,
        karpenter: KarpenterConfig::new(
            args.cloud,
            &args.karpenter_node_class_name,
            &args.karpenter_node_pool_name,
        ),
    };
    config.validate().map_err(anyhow::Error::msg)?;
    if !args.no_leader_election {
        timing(&args).validate()?;
    }
    catalogs(&args)?;
    if args.check_config {
        println!(
            "{}",
            serde_json::to_string_pretty(&effective(&args, &config))?
        );
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /metrics /healthz /readyz");
    let app = router(Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "metrics server stopped");
        }
    });

    if !args.no_leader_election {
        let identity = args.identity.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_default()
                    .trim(),
                std::process::id()
            )
        });
        let leases: Api<Lease> = Api::namespaced(client.clone(), &args.leader_election_namespace);
        let mut elector =
            LeaderElector::new(leases, &args.leader_election_name, &identity, timing(&args))?;
        info!(%identity, "waiting for leadership");
        let leadership = elector
            .acquire(|e| warn!(error = %e, "leader election"))
            .await;
        info!(%identity, "leading");
        tokio::spawn(async move {
            let why = elector
                .hold(
                    leadership,
                    |e| warn!(error = %e, "renewing the leader lease"),
                )
                .await;
            // Stop reconciling at once: a standby may take over once the lease expires.
            error!(error = %why, "no longer the leader; exiting");
            std::process::exit(1);
        });
    }
    reconcile::run(client, config, args.namespace.clone(), metrics, ready)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}
