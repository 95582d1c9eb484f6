//! `kaito-adapter`: fetch training data, publish and pull LoRA adapter images.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kaito_adapter::fetch::{DEFAULT_DEADLINE, DEFAULT_MAX_BYTES, FetchOptions, fetch_all};
use kaito_adapter::registry::{RegistryOptions, publish, pull};

#[derive(Parser)]
#[command(
    name = "kaito-adapter",
    version,
    about = "Fine-tuning data fetcher and LoRA adapter images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct RegistryArgs {
    /// Docker config JSON with registry credentials (a kubernetes.io/dockerconfigjson Secret's
    /// .dockerconfigjson key). Default: $DOCKER_CONFIG/config.json; anonymous if none matches.
    #[arg(long, value_name = "FILE")]
    docker_config: Option<PathBuf>,
    /// Speak plain http to this registry (HOST:PORT); repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    insecure_registry: Vec<String>,
    /// Speak plain http to every registry.
    #[arg(long)]
    plain_http: bool,
    /// Extra PEM CA certificate to trust for the registry; repeatable.
    #[arg(long, value_name = "FILE")]
    ca_file: Vec<PathBuf>,
}

impl RegistryArgs {
    fn options(self) -> RegistryOptions {
        RegistryOptions {
            docker_config: self.docker_config,
            insecure_registries: self.insecure_registry,
            plain_http: self.plain_http,
            ca_files: self.ca_file,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Download every URL into --output (http/https to public addresses only).
    Fetch {
        /// Directory the files are written to.
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
        /// The most bytes one file may have.
        #[arg(long, default_value_t = DEFAULT_MAX_BYTES)]
        max_bytes: u64,
        /// Longest the whole download may take, in seconds (every URL, retries included).
        #[arg(long, default_value_t = DEFAULT_DEADLINE.as_secs())]
        deadline_secs: u64,
        /// Tests only: permit 127.0.0.1 and ::1 (never private or metadata addresses).
        #[arg(long, hide = true, env = "KAITO_FETCH_ALLOW_LOOPBACK", value_parser = clap::builder::FalseyValueParser::new())]
        allow_loopback: bool,
        /// TESTS ONLY: this one address may be reached whatever its kind (a test cluster's
        /// data server on a private address); never set it in production.
        #[arg(long, hide = true, env = "KAITO_TEST_ONLY_ALLOW_DATA_ADDRESS")]
        test_only_allow_address: Option<std::net::IpAddr>,
        /// The URLs to download.
        #[arg(required = true, value_name = "URL")]
        urls: Vec<String>,
    },
    /// Push DIR/adapter_config.json and DIR/adapter_model.safetensors as an OCI image.
    Publish {
        /// Directory holding the trained adapter.
        #[arg(long, value_name = "DIR")]
        source: PathBuf,
        /// Image reference to push, e.g. registry.example.com/adapters/phi-3-lora:v1.
        #[arg(long, value_name = "IMAGE")]
        target: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull an adapter image and extract its data/ files into --output.
    Pull {
        /// Image reference to pull.
        #[arg(long, value_name = "REF")]
        image: String,
        /// Directory the adapter files are written to.
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
        /// The most bytes extracted in all.
        #[arg(long, default_value_t = DEFAULT_MAX_BYTES)]
        max_bytes: u64,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Fetch {
            output,
            max_bytes,
            deadline_secs,
            allow_loopback,
            test_only_allow_address,
            urls,
        } => {
            let opts = FetchOptions {
                max_bytes,
                deadline: std::time::Duration::from_secs(deadline_secs),
                allow_loopback,
                test_only_allow_address,
                ..FetchOptions::new(output)
            };
            let files = fetch_all(&urls, &opts).await.map_err(|e| e.to_string())?;
            for f in files {
                println!("{}", f.display());
            }
        }
        Command::Publish {
            source,
            target,
            registry,
        } => {
            let published = publish(&source, &target, &registry.options()).await?;
            let manifest = serde_json::to_string_pretty(&published.manifest)
                .map_err(|e| format!("cannot print the manifest: {e}"))?;
            tracing::info!(image = %target, url = %published.manifest_url, "pushed");
            println!("{manifest}");
        }
        Command::Pull {
            image,
            output,
            max_bytes,
            registry,
        } => {
            let files = pull(&image, &output, max_bytes, &registry.options()).await?;
            for f in files {
                println!("{}", f.display());
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    kaito_adapter::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: an init container's log gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kaito-adapter: error: {e}");
            ExitCode::FAILURE
        }
    }
}
