//! `kaito-runtime`: the KAITO serving runtime on mistral.rs (see the library for the layers).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kaito_runtime::testmodel::{self, Arch, ModelSpec};
use kaito_runtime::{ServeArgs, run};

#[derive(Parser, Debug)]
#[command(name = "kaito-runtime", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Serving flags (used when no subcommand is given).
    #[command(flatten)]
    serve: ServeArgs,
    /// Log as JSON lines.
    #[arg(long, env = "LOG_JSON", global = true)]
    log_json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a random-weight test model (and optionally a PEFT adapter) in Hugging Face layout.
    GenModel {
        /// Output directory of the model.
        #[arg(long)]
        out: PathBuf,
        /// Architecture.
        #[arg(long, value_enum, default_value = "llama")]
        arch: Arch,
        /// Size: `tiny` (2 layers, hidden 64) or `bench` (~100M parameters).
        #[arg(long, default_value = "tiny", value_parser = ["tiny", "bench"])]
        size: String,
        /// Seed of the generator.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Also write a matching PEFT LoRA adapter here.
        #[arg(long)]
        adapter_out: Option<PathBuf>,
        /// Rank of the adapter.
        #[arg(long, default_value_t = 8)]
        adapter_rank: usize,
    },
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a pod's log (`kubectl logs`) gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let result = match cli.command {
        Some(Command::GenModel {
            out,
            arch,
            size,
            seed,
            adapter_out,
            adapter_rank,
        }) => {
            let spec = if size == "bench" {
                ModelSpec::bench(arch, seed)
            } else {
                ModelSpec::tiny(arch, seed)
            };
            testmodel::write_model(&out, &spec)
                .and_then(|()| match &adapter_out {
                    Some(dir) => testmodel::write_adapter(dir, &spec, adapter_rank, seed),
                    None => Ok(()),
                })
                .map(|()| {
                    println!(
                        "wrote {arch:?} model ({} parameters) to {}",
                        spec.parameter_count(),
                        out.display()
                    );
                })
                .map_err(anyhow::Error::from)
        }
        None => run(cli.serve, kaito_runtime::cli::termination_signal())
            .await
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "kaito-runtime failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
