//! Unit and snapshot tests: argument parsing, the flag → Workspace builder against the
//! seed documents, the pure renderers (inline expected text), chat's protocol pieces.

use clap::{CommandFactory as _, Parser as _};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateWaiting, ContainerStatus, Event, ObjectReference, Pod,
    PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kaito_api::admission::{AdmissionConfig, Provisioner};
use kaito_api::{Workspace, WorkspaceStatus};
use kaito_presets::Cloud;

use crate::app;
use crate::chat::{self, ReplCommand, Session, SseEvent, SseParser};
use crate::cli::{Cli, Command, CreateWhat, DryRun, Output};
use crate::compute;
use crate::error::Error;
use crate::render;

fn parse(args: &[&str]) -> Cli {
    let mut v = vec!["kubectl-kaito"];
    v.extend_from_slice(args);
    match Cli::try_parse_from(v) {
        Ok(c) => c,
        Err(e) => panic!("{args:?} did not parse: {e}"),
    }
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().expect("timestamp literal")
}

fn seed(file: &str) -> serde_json::Value {
    let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("seed readable");
    serde_yaml::from_str(&text).expect("seed is YAML")
}

fn flags_workspace(args: &[&str]) -> serde_json::Value {
    let cli = parse(args);
    let Command::Create(c) = cli.command else {
        panic!("not create")
    };
    let Some(CreateWhat::Workspace(f)) = c.what else {
        panic!("not create workspace")
    };
    let ws = compute::build_workspace(&f, cli.global.namespace.as_deref()).expect("builds");
    serde_json::to_value(ws).expect("serialises")
}

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

#[test]
fn tuning_flags_build_exactly_the_seed() {
    let built = flags_workspace(&[
        "create",
        "workspace",
        "workspace-tuning-phi-3",
        "--api-version",
        "v1alpha1",
        "--instance-type",
        "Standard_NC6s_v3",
        "--label",
        "app=tuning-phi-3",
        "--tuning",
        "--method",
        "qlora",
        "--preset",
        "phi-3-mini-128k-instruct",
        "--input-url",
        "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/train-00000-of-00001-54e3756291ca09c6.parquet?download=true",
        "--output-image",
        "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1",
        "--output-secret",
        "ACR_REGISTRY_SECRET_HERE",
    ]);
    assert_eq!(built, seed("fine-tuning/kaito_workspace_tuning_phi_3.yaml"));
}

#[test]
fn inference_flags_build_exactly_the_seeds() {
    let built = flags_workspace(&[
        "create",
        "workspace",
        "workspace-phi-3-mini",
        "--api-version",
        "v1alpha1",
        "--instance-type",
        "Standard_NC6s_v3",
        "--label",
        "apps=phi-3",
        "--preset",
        "phi-3-mini-4k-instruct",
    ]);
    assert_eq!(built, seed("inference/kaito_workspace_phi_3.yaml"));
    let built = flags_workspace(&[
        "create",
        "workspace",
        "workspace-phi-3-mini-adapter",
        "--api-version",
        "v1alpha1",
        "--instance-type",
        "Standard_NC6s_v3",
        "--label",
        "apps=phi-3-adapter",
        "--preset",
        "phi-3-mini-128k-instruct",
        "--adapter",
        "phi-3-adapter=ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1,strength=1.0",
    ]);
    assert_eq!(
        built,
        seed("inference/kaito_workspace_phi_3_with_adapters.yaml")
    );
}

#[test]
fn other_flags_land_in_their_fields() {
    let v = flags_workspace(&[
        "-n",
        "team",
        "create",
        "workspace",
        "w",
        "--preset",
        "p",
        "--count",
        "2",
        "--enable-load-balancer",
        "--model-access-secret",
        "hf",
        "--config",
        "cm",
    ]);
    assert_eq!(v["apiVersion"], "kaito.sh/v1beta1");
    assert_eq!(v["metadata"]["namespace"], "team");
    assert_eq!(v["metadata"]["annotations"]["kaito.sh/enablelb"], "True");
    assert_eq!(v["resource"]["count"], 2);
    assert_eq!(v["inference"]["config"], "cm");
    assert_eq!(
        v["inference"]["preset"]["presetOptions"]["modelAccessSecret"],
        "hf"
    );
    let v = flags_workspace(&[
        "create",
        "workspace",
        "t",
        "--preset",
        "p",
        "--tuning",
        "--method",
        "lora",
        "--input-pvc",
        "data",
        "--output-pvc",
        "out",
    ]);
    assert_eq!(
        v["tuning"]["input"]["volumeSource"]["persistentVolumeClaim"]["claimName"],
        "data"
    );
    assert_eq!(
        v["tuning"]["output"]["volumeSource"]["persistentVolumeClaim"]["claimName"],
        "out"
    );
}

#[test]
fn bad_flags_are_refused_with_the_fix() {
    let cli = parse(&[
        "create",
        "workspace",
        "t",
        "--preset",
        "p",
        "--tuning",
        "--method",
        "lora",
        "--output-pvc",
        "o",
    ]);
    let Command::Create(c) = cli.command else {
        panic!()
    };
    let Some(CreateWhat::Workspace(f)) = c.what else {
        panic!()
    };
    let e = compute::build_workspace(&f, None).expect_err("no input");
    assert!(e.to_string().contains("--input-url"), "{e}");

    for bad in ["noequals", "a=b,strength=2", "a=b,color=red"] {
        let e = compute::parse_adapter(bad).expect_err(bad);
        assert!(matches!(e, Error::Usage(_)), "{bad}: {e}");
    }
    let a = compute::parse_adapter("x=img:1,strength=0.8").expect("valid");
    assert_eq!(a.strength.as_deref(), Some("0.8"));
}

#[test]
fn dry_run_client_defaults_sizes_and_summarises_the_seed() {
    let text = std::fs::read_to_string(format!(
        "{}/../examples/inference/kaito_workspace_phi_3.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("seed");
    let ws = compute::parse_workspaces(&text, "seed").expect("parses");
    let cfg = AdmissionConfig::new(Cloud::Azure, Provisioner::Aks);
    let (body, trailer) = app::dry_run_client(&ws[0], &cfg, false).expect("valid");
    let defaulted: Workspace = serde_yaml::from_str(&body).expect("YAML");
    assert_eq!(defaulted.resource.count, Some(1));
    assert_eq!(
        defaulted
            .inference
            .as_ref()
            .and_then(|i| i.preset.as_ref())
            .and_then(|p| p.access_mode.as_deref()),
        Some("public")
    );
    assert!(
        trailer.contains("# Summary: 1 × Standard_NC6s_v3 (V100 16 GiB), f16, fits: needs"),
        "{trailer}"
    );
    assert!(trailer.lines().all(|l| l.starts_with('#')), "{trailer}");

    // No instance type: the smallest fitting size is chosen and explained.
    let cli = parse(&[
        "create",
        "workspace",
        "auto",
        "--preset",
        "phi-3-mini-4k-instruct",
    ]);
    let Command::Create(c) = cli.command else {
        panic!()
    };
    let Some(CreateWhat::Workspace(f)) = c.what else {
        panic!()
    };
    let ws = compute::build_workspace(&f, None).expect("builds");
    let (body, trailer) = app::dry_run_client(&ws, &cfg, false).expect("valid");
    assert!(body.contains("kaito.sh/sizing"), "{body}");
    assert!(trailer.contains("fits"), "{trailer}");
}

#[test]
fn dry_run_client_rejects_as_the_webhook_words_it() {
    let mut ws = Workspace::new("bad", "default");
    ws.inference = Some(kaito_api::InferenceSpec {
        preset: Some(kaito_api::PresetSpec {
            name: "no-such-model".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let cfg = AdmissionConfig::new(Cloud::Azure, Provisioner::Aks);
    let e = app::dry_run_client(&ws, &cfg, false).expect_err("unknown preset");
    let mut expected = ws.clone();
    kaito_api::admission::apply_defaults(&mut expected, &cfg);
    let verdict = kaito_api::admission::validate(None, &expected, &cfg);
    let Error::Invalid { message, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(message, &verdict.message());
    assert!(message.contains("inference.preset"), "{message}");
}

#[test]
fn parse_workspaces_names_the_problem() {
    let e = compute::parse_workspaces("apiVersion: v1\nkind: ConfigMap\n", "f.yaml")
        .expect_err("not a ws");
    assert!(e.to_string().contains("kind: Workspace only"), "{e}");
    let e = compute::parse_workspaces("", "f.yaml").expect_err("empty");
    assert!(e.to_string().contains("no document"), "{e}");
    let two = "kind: Workspace\nmetadata: {name: a}\n---\nkind: Workspace\nmetadata: {name: b}\n";
    assert_eq!(compute::parse_workspaces(two, "f").expect("two").len(), 2);
}

#[test]
fn durations_and_ages() {
    assert_eq!(compute::parse_duration("45"), Ok(45));
    assert_eq!(compute::parse_duration("10m"), Ok(600));
    assert_eq!(compute::parse_duration("2h"), Ok(7200));
    assert!(compute::parse_duration("5w").is_err());
    let now = ts("2026-01-02T00:00:00Z");
    assert_eq!(compute::age(Some(ts("2026-01-01T23:59:15Z")), now), "45s");
    assert_eq!(compute::age(Some(ts("2026-01-01T23:00:00Z")), now), "60m");
    assert_eq!(compute::age(Some(ts("2026-01-01T12:00:00Z")), now), "12h");
    assert_eq!(compute::age(Some(ts("2025-12-20T00:00:00Z")), now), "13d");
    assert_eq!(compute::age(None, now), "<unknown>");
}

#[test]
fn table_snapshot() {
    let t = render::table(
        &["NAME", "X"],
        &[
            vec!["a".into(), "1".into()],
            vec!["longer-name".into(), "".into()],
        ],
    );
    assert_eq!(t, "NAME          X\na             1\nlonger-name\n");
}

fn cond(t: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: t.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(ts("2026-01-01T23:58:00Z")),
        observed_generation: None,
    }
}

fn sample_ws(conditions: Vec<Condition>) -> Workspace {
    seed_ws(
        "inference/kaito_workspace_phi_3.yaml",
        conditions,
        "Pending",
    )
}

/// The seed `file` in namespace default, created 5 minutes before the tests' "now", with this
/// status on one node.
fn seed_ws(file: &str, conditions: Vec<Condition>, state: &str) -> Workspace {
    let mut ws: Workspace = serde_json::from_value(seed(file)).expect("seed");
    ws.metadata.namespace = Some("default".into());
    ws.metadata.creation_timestamp = Some(Time(ts("2026-01-01T23:55:00Z")));
    ws.status = Some(WorkspaceStatus {
        worker_nodes: Some(vec!["gpu-1".into()]),
        conditions: Some(conditions),
        state: Some(state.into()),
        target_node_count: Some(1),
    });
    ws
}

#[test]
fn get_table_snapshots() {
    let now = ts("2026-01-02T00:00:00Z");
    let ready = sample_ws(vec![
        cond("ResourceReady", "True", "Ready", "1/1 nodes ready"),
        cond("InferenceReady", "True", "Ready", "1/1 replicas"),
        cond("WorkspaceSucceeded", "True", "Ready", "serving"),
    ]);
    let mut pending = sample_ws(vec![cond("ResourceReady", "False", "NodesNotReady", "0/1")]);
    pending.metadata.name = Some("other".into());
    pending.metadata.namespace = Some("team".into());
    if let Some(st) = pending.status.as_mut() {
        st.worker_nodes = None;
    }
    let rows = vec![
        compute::workspace_row(&ready, Some("http://10.96.0.10:80"), now),
        compute::workspace_row(&pending, None, now),
    ];
    assert_eq!(
        render::workspaces_table(&rows, false, false, true),
        "\
NAME                   INSTANCE           RESOURCEREADY   INFERENCEREADY   WORKSPACEREADY   AGE
workspace-phi-3-mini   Standard_NC6s_v3   True            True             True             300s
other                  Standard_NC6s_v3   False           -                -                300s
"
        .replace("300s", "5m")
    );
    assert_eq!(
        render::workspaces_table(&rows, true, true, true),
        "\
NAMESPACE   NAME                   INSTANCE           RESOURCEREADY   INFERENCEREADY   WORKSPACEREADY   AGE   PRESET                   NODES   ENDPOINT
default     workspace-phi-3-mini   Standard_NC6s_v3   True            True             True             5m    phi-3-mini-4k-instruct   gpu-1   http://10.96.0.10:80
team        other                  Standard_NC6s_v3   False           -                -                5m    phi-3-mini-4k-instruct   -       -
"
    );
    assert_eq!(
        render::workspaces_table(&rows[1..], false, false, false),
        "other   Standard_NC6s_v3   False           -                -                5m\n"
    );
}

#[test]
fn status_explains_an_unschedulable_workspace() {
    let now = ts("2026-01-02T00:00:00Z");
    let ws = sample_ws(vec![
        cond("ResourceReady", "True", "Ready", "1/1 GPU nodes ready"),
        cond(
            "InferenceReady",
            "False",
            "Unschedulable",
            "pod workspace-phi-3-mini-0: 0/2 nodes are available: 1 Insufficient nvidia.com/gpu.",
        ),
        cond(
            "WorkspaceSucceeded",
            "False",
            "Unschedulable",
            "not serving",
        ),
    ]);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("workspace-phi-3-mini-0".into()),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        status: Some(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    };
    let event = Event {
        type_: Some("Warning".into()),
        reason: Some("FailedScheduling".into()),
        message: Some("0/2 nodes are available: 1 Insufficient nvidia.com/gpu.".into()),
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            name: Some("workspace-phi-3-mini-0".into()),
            ..Default::default()
        },
        last_timestamp: Some(Time(ts("2026-01-01T23:59:30Z"))),
        ..Default::default()
    };
    let text = render::status(&render::StatusView {
        ws: &ws,
        pods: &[pod],
        nodes: &[],
        events: &[event],
        max_events: 10,
        endpoint: None,
        now,
    });
    assert_eq!(
        text,
        "\
Name:        workspace-phi-3-mini
Namespace:   default
Workload:    inference of phi-3-mini-4k-instruct
Instance:    1 × Standard_NC6s_v3
State:       Pending
Age:         5m
Endpoint:    (none yet: the Service is created with the workload)

Conditions:
  TYPE                 STATUS   REASON          SINCE   MESSAGE
  ResourceReady        True     Ready           2m      1/1 GPU nodes ready
  InferenceReady       False    Unschedulable   2m      pod workspace-phi-3-mini-0: 0/2 nodes are available: 1 Insufficient nvidia.com/gpu.
  WorkspaceSucceeded   False    Unschedulable   2m      not serving

Nodes:
  (none)

Pods:
  NAME                     PHASE     READY   NODE   REASON
  workspace-phi-3-mini-0   Pending   False   -      Unschedulable

Events:
  AGE   TYPE      REASON             OBJECT                       MESSAGE
  30s   Warning   FailedScheduling   pod/workspace-phi-3-mini-0   0/2 nodes are available: 1 Insufficient nvidia.com/gpu.

Next step: the scheduler cannot place the pod: add a GPU node that matches resource.labelSelector and has enough free nvidia.com/gpu (and tolerates its taints), or recreate the workspace with another --instance-type
"
    );
}

#[test]
fn status_of_a_ready_workspace_says_how_to_use_it() {
    let ws = sample_ws(vec![cond("WorkspaceSucceeded", "True", "Ready", "serving")]);
    let mut pod = Pod::default();
    pod.metadata.name = Some("p".into());
    pod.status = Some(PodStatus {
        container_statuses: Some(vec![ContainerStatus {
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ImagePullBackOff".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let text = render::status(&render::StatusView {
        ws: &ws,
        pods: &[pod],
        nodes: &[],
        events: &[],
        max_events: 10,
        endpoint: Some("http://10.96.0.10:80".into()),
        now: ts("2026-01-02T00:00:00Z"),
    });
    assert!(
        text.contains("Endpoint:    http://10.96.0.10:80\n"),
        "{text}"
    );
    assert!(text.contains("ImagePullBackOff"), "{text}");
    assert!(
        text.ends_with("Ready: try `kubectl kaito chat workspace-phi-3-mini`.\n"),
        "{text}"
    );
}

#[test]
fn next_step_covers_missing_status_and_reasons() {
    let mut ws = sample_ws(vec![]);
    ws.status = None;
    assert!(
        compute::next_step(&ws)
            .expect("step")
            .contains("kaito-controller")
    );
    let ws = sample_ws(vec![cond("ResourceReady", "False", "ImagePullError", "x")]);
    assert!(compute::next_step(&ws).expect("step").contains("pull"));
    let ws = sample_ws(vec![
        cond("ResourceReady", "True", "Ready", ""),
        cond("InferenceReady", "False", "CrashLoopBackOff", "x"),
    ]);
    assert!(
        compute::next_step(&ws)
            .expect("step")
            .contains("kubectl kaito logs")
    );
    // Every reason the controller writes has a next step of its own or the "again" line.
    for r in kaito_api::Reason::ALL {
        let ws = sample_ws(vec![cond("ResourceReady", "False", r.as_str(), "x")]);
        let step = compute::next_step(&ws).expect("step");
        assert!(!step.is_empty(), "{r}");
    }
    let ws = sample_ws(vec![cond("InferenceReady", "False", "ChildNameTaken", "x")]);
    assert!(
        compute::next_step(&ws)
            .expect("step")
            .contains("rename or delete")
    );
}

#[test]
fn dry_run_trailer_snapshot() {
    let cfg = AdmissionConfig::new(Cloud::Azure, Provisioner::Aks);
    let w: Workspace = serde_yaml::from_str(
        "metadata: {name: w}\nresource: {instanceType: Standard_NC6s_v3}\ninference: {preset: {name: phi-3-mini-4k-instruct}}",
    )
    .expect("a workspace");
    let planned = kaito_api::admission::plan(&w, &cfg, None);
    let t = render::dry_run_trailer(&planned, 1, &["w1".into()]);
    let plan = planned.expect("plans").sizing.expect("sized");
    let expected = format!(
        "# Sizing plan (computed locally by the webhook's code):\n#   {}\n{}# Summary: {}\n# Warning: w1\n",
        plan.summary(),
        plan.notes
            .iter()
            .map(|n| format!("#   note: {n}\n"))
            .collect::<String>(),
        compute::plan_headline(1, &plan)
    );
    assert_eq!(t, expected);
    // Bring-your-own nodes without a size: planned when the nodes join; other reasons shown.
    let byo = render::dry_run_trailer(
        &Err(kaito_api::admission::PlanError::NoInstanceType {
            cloud: Cloud::Azure,
            example: "x",
        }),
        1,
        &[],
    );
    assert!(byo.contains("bring-your-own nodes"), "{byo}");
    let bad = render::dry_run_trailer(&Err(kaito_api::admission::PlanError::BadCount(0)), 1, &[]);
    assert!(
        bad.contains("Sizing plan: none (`resource.count` must be at least 1"),
        "{bad}"
    );
    assert!(
        compute::plan_headline(1, &plan)
            .starts_with("1 × Standard_NC6s_v3 (V100 16 GiB), f16, fits: needs "),
        "{}",
        compute::plan_headline(1, &plan)
    );
}

#[test]
fn models_and_skus_render_from_the_catalog() {
    let models = render::models_table(kaito_presets::PresetCatalog::builtin());
    let first = models.lines().next().expect("header");
    assert_eq!(
        first.split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "ARCHITECTURE",
            "WEIGHTS",
            "SERVE-GPU-MEMORY",
            "CONTEXT",
            "TUNING-GPU-MEMORY",
            "NOTES"
        ]
    );
    assert!(models.contains("phi-3-mini-4k-instruct"));
    assert_eq!(
        models.lines().count(),
        kaito_presets::PresetCatalog::builtin().iter().count() + 1
    );
    let skus = render::skus_table(kaito_presets::SkuCatalog::builtin(), Cloud::Azure);
    let row = skus
        .lines()
        .find(|l| l.starts_with("Standard_NC6s_v3 "))
        .expect("NC6s_v3 row");
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [
            "Standard_NC6s_v3",
            "1",
            "V100",
            "16",
            "GiB",
            "16",
            "GiB",
            "7.0",
            "6",
            "-"
        ]
    );
    let cpu = skus
        .lines()
        .find(|l| l.starts_with("Standard_D4s_v3 "))
        .expect("D4s_v3 row");
    assert_eq!(
        cpu.split_whitespace().collect::<Vec<_>>(),
        [
            "Standard_D4s_v3",
            "0",
            "-",
            "-",
            "0",
            "GiB",
            "-",
            "4",
            "16",
            "GiB"
        ]
    );
    let d = render::model_describe(
        kaito_presets::PresetCatalog::builtin()
            .get("phi-3-mini-4k-instruct")
            .expect("preset"),
        kaito_presets::Mode::Serve,
        kaito_presets::SkuCatalog::builtin(),
        Cloud::Azure,
    );
    assert!(
        d.lines().any(|l| l.starts_with("  Standard_NC6s_v3 ")
            && l.contains("Standard_NC6s_v3 (1× V100, 16 GiB): fits serving")),
        "{d}"
    );
    assert!(
        d.contains("azure GPU sizes fit serving, smallest first"),
        "{d}"
    );
    assert!(
        d.contains("azure CPU-only sizes serve it on the CPU")
            && d.lines().any(|l| l.starts_with("  Standard_D8s_v3 ")
                && l.contains("(no GPU, 32 GiB memory): fits serving")),
        "{d}"
    );
    assert!(
        d.contains("On a CPU:      18.24 GiB of memory with the full context"),
        "{d}"
    );
    let big = render::model_describe(
        kaito_presets::PresetCatalog::builtin()
            .get("llama-3.3-70b-instruct")
            .expect("preset"),
        kaito_presets::Mode::Serve,
        kaito_presets::SkuCatalog::builtin(),
        Cloud::Azure,
    );
    assert!(
        big.contains("No azure CPU-only size has the memory to serve llama-3.3-70b-instruct"),
        "{big}"
    );
    let tuning = render::model_describe(
        kaito_presets::PresetCatalog::builtin()
            .get("phi-3-mini-4k-instruct")
            .expect("preset"),
        kaito_presets::Mode::TuneQlora,
        kaito_presets::SkuCatalog::builtin(),
        Cloud::Azure,
    );
    assert!(!tuning.contains("CPU-only sizes"), "{tuning}");
}

#[test]
fn a_cpu_only_plan_reads_as_served_on_the_cpu() {
    let preset = kaito_presets::PresetCatalog::builtin()
        .get("smollm2-135m-instruct")
        .expect("preset");
    let sku = kaito_presets::SkuCatalog::builtin()
        .get(Cloud::Aws, "m5.xlarge")
        .expect("sku");
    let plan = kaito_presets::sizing::plan(
        preset,
        kaito_presets::Mode::Serve,
        Default::default(),
        &sku.shape(),
    );
    let headline = compute::plan_headline(2, &plan);
    assert!(
        headline.starts_with(
            "2 × m5.xlarge (no GPU, 16 GiB memory: served on the CPU), f32, fits: needs "
        ) && headline.ends_with(", context 8192"),
        "{headline}"
    );
    assert!(!headline.contains("GPU)"), "{headline}");
}

#[test]
fn sse_parser_handles_split_chunks_done_and_errors() {
    let mut p = SseParser::default();
    let a = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\nda";
    let b = "ta: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r\n\r\ndata: [DONE]\n\n";
    let mut evs = p.push(a.as_bytes());
    evs.extend(p.push(b.as_bytes()));
    assert_eq!(
        evs,
        vec![
            SseEvent::Token("Hel".into()),
            SseEvent::Token("lo".into()),
            SseEvent::Done
        ]
    );
    let evs = p.push(b"data: {\"error\":{\"message\":\"boom\"}}\n");
    assert_eq!(evs, vec![SseEvent::Error("boom".into())]);
    assert_eq!(
        chat::error_body_message(br#"{"error":{"message":"model is loading"}}"#),
        "model is loading"
    );
}

#[test]
fn repl_commands_and_session() {
    assert_eq!(chat::parse_repl("  "), ReplCommand::Empty);
    assert_eq!(chat::parse_repl("/quit"), ReplCommand::Quit);
    assert_eq!(chat::parse_repl("/clear"), ReplCommand::Clear);
    assert_eq!(
        chat::parse_repl("/set temperature 0.2"),
        ReplCommand::Set("temperature".into(), "0.2".into())
    );
    assert_eq!(
        chat::parse_repl("/system be brief"),
        ReplCommand::System("be brief".into())
    );
    assert_eq!(
        chat::parse_repl("/nope"),
        ReplCommand::Unknown("nope".into())
    );
    assert_eq!(
        chat::parse_repl("hi there"),
        ReplCommand::Message("hi there".into())
    );

    let mut s = Session::default();
    assert!(s.set("temperature", "0.2").is_ok());
    assert!(s.set("temperature", "hot").is_err());
    assert!(s.set("max-tokens", "16").is_ok());
    assert!(s.set("top_p", "0").is_err());
    assert!(s.set("colour", "1").is_err());
    s.system = Some("be brief".into());
    s.record("hi", "hello");
    let body = s.openai_body("again");
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["max_tokens"], 16);
    assert_eq!(body["stream"], true);
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    let raw = s.raw_body("again");
    assert_eq!(raw["generate_kwargs"]["max_new_tokens"], 16);
    assert_eq!(raw["return_full_text"], false);
}

#[test]
fn endpoints_parse() {
    let chat::Transport::Endpoint { addr, base } =
        chat::parse_endpoint("http://127.0.0.1:5000/").expect("ok")
    else {
        panic!()
    };
    assert_eq!((addr.as_str(), base.as_str()), ("127.0.0.1:5000", ""));
    let chat::Transport::Endpoint { addr, base } =
        chat::parse_endpoint("http://svc.ns/prefix").expect("ok")
    else {
        panic!()
    };
    assert_eq!((addr.as_str(), base.as_str()), ("svc.ns:80", "/prefix"));
    assert!(chat::parse_endpoint("https://x").is_err());
}

#[test]
fn log_pods_prefer_a_ready_one() {
    let mk = |name: &str, ready: bool| {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    };
    let pods = vec![mk("a", false), mk("b", true)];
    let names = |v: Vec<&Pod>| {
        v.iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(compute::pick_log_pods(&pods, false)), ["b"]);
    assert_eq!(names(compute::pick_log_pods(&pods, true)), ["a", "b"]);
    assert_eq!(names(compute::pick_log_pods(&pods[..1], false)), ["a"]);
}

#[test]
fn status_of_a_finished_tuning_workspace_names_the_adapter_and_how_to_serve_it() {
    let ws = seed_ws(
        "fine-tuning/kaito_workspace_tuning_phi_3.yaml",
        vec![
            cond("ResourceReady", "True", "Ready", "1/1 GPU nodes ready"),
            cond("JobStarted", "True", "Running", "job started"),
            cond("WorkspaceSucceeded", "True", "Succeeded", "tuning finished"),
        ],
        "Succeeded",
    );
    let text = render::status(&render::StatusView {
        ws: &ws,
        pods: &[],
        nodes: &[],
        events: &[],
        max_events: 10,
        endpoint: None,
        now: ts("2026-01-02T00:00:00Z"),
    });
    for want in [
        "published to ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1",
        "there is no Service workspace-tuning-phi-3",
        "--preset phi-3-mini-128k-instruct --adapter workspace-tuning-phi-3=ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}
