//! The command line: kubectl's conventions (`--kubeconfig`, `--context`, `-n`, `-A`, `-o`).

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kaito_api::admission::{Cloud, Provisioner};

/// Output formats (`-o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// Aligned columns with more of them.
    Wide,
    /// YAML documents.
    Yaml,
    /// JSON.
    Json,
}

/// `--dry-run` modes, as kubectl spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Really create.
    None,
    /// Default and validate locally with the webhook's own code; nothing is sent.
    Client,
    /// Ask the API server (and so the admission webhook) without persisting.
    Server,
}

/// `--cloud`: parses into the one [`Cloud`] type the webhook and the controller use, and lists
/// the names in `--help`.
pub fn cloud_parser() -> impl TypedValueParser<Value = Cloud> {
    PossibleValuesParser::new(Cloud::ALL.map(Cloud::as_str)).try_map(|s| s.parse::<Cloud>())
}

/// `--provisioner`: parses into the one [`Provisioner`] type the webhook and the controller
/// use, and lists the names in `--help`.
pub fn provisioner_parser() -> impl TypedValueParser<Value = Provisioner> {
    PossibleValuesParser::new(Provisioner::ALL.map(Provisioner::as_str))
        .try_map(|s| s.parse::<Provisioner>())
}

/// Tuning methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// LoRA on 16-bit base weights.
    Lora,
    /// LoRA on 4-bit (NF4) base weights.
    Qlora,
}

impl Method {
    /// The spelling in `tuning.method`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lora => "lora",
            Self::Qlora => "qlora",
        }
    }
}

/// Shells for `completion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

const ROOT_EXAMPLES: &str = "\
Examples:
  # Which models exist, and what GPU does one need?
  kubectl kaito models list
  kubectl kaito models describe phi-3-mini-4k-instruct --cloud azure

  # See what a workspace would become, without creating it
  kubectl kaito create workspace phi3 --preset phi-3-mini-4k-instruct --dry-run=client

  # Create it, watch it become ready, and talk to it
  kubectl kaito create workspace phi3 --preset phi-3-mini-4k-instruct
  kubectl kaito get -w
  kubectl kaito status phi3
  kubectl kaito chat phi3 --prompt \"What is Kubernetes?\"";

/// kubectl kaito: create, inspect, chat with and delete KAITO workspaces.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-kaito",
    bin_name = "kubectl kaito",
    about = "Create, inspect, chat with and delete KAITO workspaces (kaito.sh).",
    after_help = ROOT_EXAMPLES,
    disable_version_flag = true,
    // The same help everywhere, README included: wrapped at 100 columns whatever the terminal
    // and however the plugin is built.
    term_width = 100
)]
pub struct Cli {
    /// Connection flags shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's connection flags.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
}

/// The commands.
// Parsed once per process; boxing would only complicate the derive.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a workspace from flags or a file.
    #[command(visible_alias = "deploy", after_help = CREATE_EXAMPLES)]
    Create(CreateArgs),
    /// List workspaces, or show one.
    #[command(after_help = GET_EXAMPLES)]
    Get(GetArgs),
    /// Explain a workspace: conditions, nodes, pods, events, endpoint, next step.
    #[command(visible_alias = "describe", after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// Print the logs of a workspace's serving pod(s) or tuning pod.
    #[command(after_help = LOGS_EXAMPLES)]
    Logs(LogsArgs),
    /// Chat with a served model (interactive, or one-shot with --prompt or stdin).
    #[command(after_help = CHAT_EXAMPLES)]
    Chat(ChatArgs),
    /// Delete a workspace and wait until it is gone.
    #[command(after_help = DELETE_EXAMPLES)]
    Delete(DeleteArgs),
    /// The model presets this build knows.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// The VM sizes (SKUs) of a cloud: GPU sizes and CPU-only ones.
    #[command(after_help = SKUS_EXAMPLES)]
    Skus(SkusArgs),
    /// Print a shell completion script.
    #[command(after_help = COMPLETION_EXAMPLES)]
    Completion {
        /// bash, zsh or fish.
        shell: Shell,
    },
    /// Print the plugin's version.
    #[command(after_help = "Examples:\n  kubectl kaito version")]
    Version,
}

const CREATE_EXAMPLES: &str = "\
Examples:
  # Serve a preset; the webhook picks the smallest GPU size that fits
  kubectl kaito create workspace phi3 --preset phi-3-mini-4k-instruct

  # Preview the defaulted Workspace and its sizing plan (nothing is sent)
  kubectl kaito create workspace phi3 --preset phi-3-mini-4k-instruct --dry-run=client

  # Ask the API server and the admission webhook, without creating
  kubectl kaito create workspace phi3 --preset phi-3-mini-4k-instruct --dry-run=server

  # Print the Workspace YAML instead of creating it
  kubectl kaito create workspace phi3 --preset phi-3-mini-4k-instruct \\
      --instance-type Standard_NC6s_v3 --label apps=phi-3 -o yaml

  # An adapter on top of the preset
  kubectl kaito create workspace phi3-adapter --preset phi-3-mini-128k-instruct \\
      --adapter phi-3-adapter=myacr.azurecr.io/adapter:0.0.1,strength=0.8

  # Fine-tune with QLoRA and push the adapter to a registry
  kubectl kaito create workspace tune-phi3 --tuning --method qlora \\
      --preset phi-3-mini-128k-instruct --input-url https://example.com/data.parquet \\
      --output-image myacr.azurecr.io/phi3-tuned:0.0.1 --output-secret acr-push

  # Create from a file
  kubectl kaito create -f examples/inference/kaito_workspace_phi_3.yaml";

const GET_EXAMPLES: &str = "\
Examples:
  kubectl kaito get                    # workspaces of the current namespace
  kubectl kaito get -A -o wide         # every namespace, with preset, nodes and endpoint
  kubectl kaito get phi3 -o yaml       # one workspace as YAML
  kubectl kaito get -w                 # watch for changes";

const STATUS_EXAMPLES: &str = "\
Examples:
  kubectl kaito status phi3
  kubectl kaito describe phi3 -n team-a";

const LOGS_EXAMPLES: &str = "\
Examples:
  kubectl kaito logs phi3                     # the first ready serving pod
  kubectl kaito logs phi3 -f --tail 20        # follow
  kubectl kaito logs phi3 --all-pods --since 10m";

const CHAT_EXAMPLES: &str = "\
Examples:
  kubectl kaito chat phi3                                  # interactive; /help lists commands
  kubectl kaito chat phi3 --prompt \"Write a haiku about GPUs\"
  echo \"Summarise: ...\" | kubectl kaito chat phi3 --max-tokens 64
  kubectl kaito chat phi3 --endpoint http://127.0.0.1:5000 --raw-chat --prompt hi";

const DELETE_EXAMPLES: &str = "\
Examples:
  kubectl kaito delete phi3                # waits until the workspace is gone
  kubectl kaito delete phi3 --wait=false   # returns at once";

const SKUS_EXAMPLES: &str = "\
Examples:
  kubectl kaito skus
  kubectl kaito skus --cloud aws -o json";

const COMPLETION_EXAMPLES: &str = "\
Examples:
  source <(kubectl kaito completion bash)
  kubectl kaito completion zsh > \"${fpath[1]}/_kubectl-kaito\"
  kubectl kaito completion fish > ~/.config/fish/completions/kubectl-kaito.fish";

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Create from a YAML file (one or more Workspaces; '-' reads stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// client: default and validate locally (the webhook's code); server: ask the API server.
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "client", default_value = "none", global = true)]
    pub dry_run: DryRun,
    /// Print the Workspace (yaml|json) instead of creating it.
    #[arg(short = 'o', long = "output", value_name = "FORMAT", global = true)]
    pub output: Option<Output>,
    /// Cloud whose GPU sizes --dry-run=client sizes against.
    #[arg(long, value_parser = cloud_parser(), default_value = "azure", global = true)]
    pub cloud: Cloud,
    /// Provisioner --dry-run=client assumes (byo: instanceType is not defaulted).
    #[arg(long, value_parser = provisioner_parser(), default_value = "aks", global = true)]
    pub provisioner: Provisioner,
    /// What to create.
    #[command(subcommand)]
    pub what: Option<CreateWhat>,
}

/// `create <what>`.
#[derive(Debug, Subcommand)]
pub enum CreateWhat {
    /// A Workspace serving (or, with --tuning, fine-tuning) a preset.
    #[command(after_help = CREATE_EXAMPLES)]
    Workspace(WorkspaceFlags),
}

/// The flags that build a Workspace.
#[derive(Debug, Clone, Default, Args)]
pub struct WorkspaceFlags {
    /// Name of the workspace.
    pub name: String,
    /// Model preset (see `kubectl kaito models list`).
    #[arg(long, value_name = "PRESET")]
    pub preset: String,
    /// VM size, e.g. Standard_NC6s_v3 (default: the smallest GPU size that fits); a CPU-only
    /// size (e.g. Standard_D4s_v3) serves a small preset on the CPU.
    #[arg(long, value_name = "SKU")]
    pub instance_type: Option<String>,
    /// Number of nodes (serving replicas).
    #[arg(long, value_name = "N")]
    pub count: Option<i32>,
    /// Label the nodes carry (resource.labelSelector.matchLabels), repeatable: k=v.
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Adapter: name=image[,strength=0.8], repeatable.
    #[arg(long = "adapter", value_name = "NAME=IMAGE[,strength=S]")]
    pub adapters: Vec<String>,
    /// Runtime (inference) or training (tuning) config: a ConfigMap name.
    #[arg(long, value_name = "CONFIGMAP")]
    pub config: Option<String>,
    /// Expose the workspace through a LoadBalancer Service.
    #[arg(long)]
    pub enable_load_balancer: bool,
    /// Secret with HF_TOKEN for gated models.
    #[arg(long, value_name = "SECRET")]
    pub model_access_secret: Option<String>,
    /// API version to write: v1alpha1 or v1beta1.
    #[arg(long, default_value = "v1beta1", value_parser = ["v1alpha1", "v1beta1"])]
    pub api_version: String,
    /// Fine-tune instead of serving.
    #[arg(long, help_heading = "Tuning")]
    pub tuning: bool,
    /// Tuning method.
    #[arg(long, value_enum, requires = "tuning", help_heading = "Tuning")]
    pub method: Option<Method>,
    /// Training data URL, repeatable.
    #[arg(
        long = "input-url",
        value_name = "URL",
        requires = "tuning",
        help_heading = "Tuning"
    )]
    pub input_urls: Vec<String>,
    /// Training data in an OCI image.
    #[arg(
        long,
        value_name = "IMAGE",
        requires = "tuning",
        help_heading = "Tuning"
    )]
    pub input_image: Option<String>,
    /// Training data on a PersistentVolumeClaim.
    #[arg(long, value_name = "PVC", requires = "tuning", help_heading = "Tuning")]
    pub input_pvc: Option<String>,
    /// Image to push the adapter to.
    #[arg(
        long,
        value_name = "IMAGE",
        requires = "tuning",
        help_heading = "Tuning"
    )]
    pub output_image: Option<String>,
    /// Secret used to push --output-image.
    #[arg(
        long,
        value_name = "SECRET",
        requires = "output_image",
        help_heading = "Tuning"
    )]
    pub output_secret: Option<String>,
    /// PersistentVolumeClaim to write the adapter to.
    #[arg(
        long,
        value_name = "PVC",
        requires = "tuning",
        conflicts_with = "output_image",
        help_heading = "Tuning"
    )]
    pub output_pvc: Option<String>,
}

/// `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// One workspace (default: all of the namespace).
    pub name: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    /// After listing, print each change.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The workspace.
    pub name: String,
    /// How many recent Events to show.
    #[arg(long, default_value_t = 10)]
    pub events: usize,
}

/// `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The workspace.
    pub name: String,
    /// Keep streaming new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Lines from the end of each log.
    #[arg(long, value_name = "N")]
    pub tail: Option<i64>,
    /// Only lines newer than this duration (e.g. 30s, 10m, 2h).
    #[arg(long, value_name = "DURATION", value_parser = crate::compute::parse_duration)]
    pub since: Option<i64>,
    /// Every pod of the workspace, each line prefixed with its pod name.
    #[arg(long)]
    pub all_pods: bool,
    /// Container (default: the pod's main container).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
}

/// `chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The workspace.
    pub name: String,
    /// One-shot: send this prompt, print the reply, exit. Without it, a piped stdin is the prompt.
    #[arg(short = 'p', long)]
    pub prompt: Option<String>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Most tokens to generate.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Nucleus sampling.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Talk to this URL (http://host:port) instead of port-forwarding to a pod.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Use KAITO's /chat endpoint instead of /v1/chat/completions (no streaming).
    #[arg(long)]
    pub raw_chat: bool,
    /// Seconds to wait for a reply.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The workspace.
    pub name: String,
    /// Wait until the workspace is gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub wait: bool,
    /// Seconds to wait.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// `models`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the presets.
    #[command(
        after_help = "Examples:\n  kubectl kaito models list\n  kubectl kaito models list -o json"
    )]
    List {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Show a preset, or a Hugging Face model by its id, and which sizes of a cloud fit it (GPU,
    /// and CPU-only for serving).
    #[command(
        after_help = "Examples:\n  kubectl kaito models describe phi-3-mini-4k-instruct\n  kubectl kaito models describe llama-3.1-8b-instruct --cloud aws\n  kubectl kaito models describe Qwen/Qwen2.5-7B-Instruct@main"
    )]
    Describe {
        /// The preset, or a Hugging Face id `org/model[@revision]`, resolved through the hub as
        /// the webhook resolves it.
        name: String,
        /// The Hugging Face hub that resolves an id.
        #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
        hf_endpoint: String,
        /// Token for a gated or private repository.
        #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Seconds to wait for the hub.
        #[arg(long, default_value_t = crate::hub::DEFAULT_TIMEOUT.as_secs())]
        hub_timeout: u64,
        /// Cloud whose sizes to check.
        #[arg(long, value_parser = cloud_parser(), default_value = "azure")]
        cloud: Cloud,
        /// Size for LoRA or QLoRA tuning instead of serving.
        #[arg(long, value_enum)]
        tuning: Option<Method>,
    },
}

/// `skus`.
#[derive(Debug, Args)]
pub struct SkusArgs {
    /// Cloud.
    #[arg(long, value_parser = cloud_parser(), default_value = "azure")]
    pub cloud: Cloud,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;
    use crate::testutil::parse;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples_in_its_help() {
        let mut root = Cli::command();
        let root_help = root.render_long_help().to_string();
        assert!(root_help.contains("Examples:"), "{root_help}");
        for sub in Cli::command().get_subcommands_mut() {
            let name = sub.get_name().to_string();
            if sub.has_subcommands() {
                for inner in sub.get_subcommands_mut() {
                    let h = inner.render_long_help().to_string();
                    assert!(
                        h.contains("Examples:"),
                        "{name} {} lacks examples",
                        inner.get_name()
                    );
                }
            } else {
                let h = sub.render_long_help().to_string();
                assert!(h.contains("Examples:"), "{name} lacks examples:\n{h}");
            }
        }
    }

    #[test]
    fn kubectl_conventions_parse() {
        let c = parse(&[
            "get",
            "-A",
            "-o",
            "wide",
            "--context",
            "dev",
            "--kubeconfig",
            "/k",
        ]);
        assert_eq!(c.global.context.as_deref(), Some("dev"));
        assert_eq!(
            c.global.kubeconfig.as_deref(),
            Some(std::path::Path::new("/k"))
        );
        let Command::Get(g) = c.command else { panic!() };
        assert!(g.all_namespaces);
        assert_eq!(g.output, Output::Wide);

        let c = parse(&["-n", "team", "status", "ws"]);
        assert_eq!(c.global.namespace.as_deref(), Some("team"));
        let c = parse(&["describe", "ws", "-n", "team"]);
        assert!(matches!(c.command, Command::Status(_)));
        assert_eq!(c.global.namespace.as_deref(), Some("team"));

        let Command::Delete(d) = parse(&["delete", "ws", "--wait=false"]).command else {
            panic!()
        };
        assert!(!d.wait);
        let Command::Delete(d) = parse(&["delete", "ws"]).command else {
            panic!()
        };
        assert!(d.wait);

        let Command::Create(c) =
            parse(&["deploy", "workspace", "w", "--preset", "p", "--dry-run"]).command
        else {
            panic!()
        };
        assert_eq!(c.dry_run, DryRun::Client);
        let Command::Create(c) = parse(&[
            "create",
            "workspace",
            "w",
            "--preset",
            "p",
            "--dry-run=server",
        ])
        .command
        else {
            panic!()
        };
        assert_eq!(c.dry_run, DryRun::Server);
        let Command::Create(c) = parse(&["create", "-f", "x.yaml", "-o", "yaml"]).command else {
            panic!()
        };
        assert_eq!(c.output, Some(Output::Yaml));

        let Command::Logs(l) = parse(&[
            "logs",
            "w",
            "-f",
            "--tail",
            "5",
            "--since",
            "10m",
            "--all-pods",
        ])
        .command
        else {
            panic!()
        };
        assert!(l.follow && l.all_pods);
        assert_eq!((l.tail, l.since), (Some(5), Some(600)));

        assert!(Cli::try_parse_from(["kubectl-kaito", "get", "-o", "xml"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-kaito", "logs", "w", "--since", "ten"]).is_err());
        assert!(
            Cli::try_parse_from([
                "kubectl-kaito",
                "create",
                "workspace",
                "w",
                "--preset",
                "p",
                "--method",
                "lora"
            ])
            .is_err(),
            "--method without --tuning must be refused"
        );
    }
}
