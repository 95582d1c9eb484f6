//! Command handlers: collect → compute → render, then print.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::time::Duration;

use futures::{AsyncBufReadExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kaito_api::Workspace;
use kaito_api::admission::{self, AdmissionConfig};
use kaito_presets::sizing::Mode;
use kaito_presets::{PresetCatalog, SkuCatalog};
use kube::Api;
use kube::api::{DeleteParams, LogParams};
use kube::runtime::watcher;

use crate::chat::{self, ReplCommand, Session, Transport};
use crate::cli::*;
use crate::collect::{self, Ctx};
use crate::compute;
use crate::error::{Error, Result, chain};
use crate::render;

fn out(text: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.flush()?;
    Ok(())
}

fn to_yaml<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_yaml::to_string(v).map_err(|e| Error::Parse {
        what: "output".into(),
        message: e.to_string(),
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| Error::Parse {
            what: "output".into(),
            message: e.to_string(),
        })
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Version => out(&format!("kubectl-kaito {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Completion { shell } => {
            use clap::CommandFactory as _;
            let mut cmd = Cli::command().bin_name("kubectl-kaito");
            let mut buf = Vec::new();
            let sh = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(sh, &mut cmd, "kubectl-kaito", &mut buf);
            out(&String::from_utf8_lossy(&buf))
        }
        Command::Models(m) => models(m).await,
        Command::Skus(a) => {
            let cloud = a.cloud;
            match a.output {
                Output::Table | Output::Wide => {
                    out(&render::skus_table(SkuCatalog::builtin(), cloud))
                }
                o => out(&format_values(&skus_values(cloud), o)?),
            }
        }
        Command::Create(a) => create(&g, a).await,
        Command::Get(a) => get(&g, a).await,
        Command::Status(a) => status(&g, a).await,
        Command::Logs(a) => logs(&g, a).await,
        Command::Chat(a) => chat_cmd(&g, a).await,
        Command::Delete(a) => delete(&g, a).await,
    }
}

fn format_values(v: &serde_json::Value, o: Output) -> Result<String> {
    match o {
        Output::Json => to_json(v),
        _ => to_yaml(v),
    }
}

fn skus_values(cloud: kaito_presets::Cloud) -> serde_json::Value {
    SkuCatalog::builtin()
        .list(cloud)
        .iter()
        .map(|k| {
            serde_json::json!({
                "name": k.name, "gpus": k.gpus, "gpuModel": k.gpu_model,
                "gpuMemory": k.gpu_memory.to_string(),
                "computeCapability": k.compute_capability.map(|c| c.to_string()),
                "vcpus": k.vcpus,
                "memory": k.memory.map(|m| m.to_string()),
            })
        })
        .collect()
}

async fn models(m: ModelsCommand) -> Result<()> {
    let catalog = PresetCatalog::builtin();
    match m {
        ModelsCommand::List { output } => match output {
            Output::Table | Output::Wide => out(&render::models_table(catalog)),
            o => {
                let v: serde_json::Value = catalog
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "name": p.name, "architecture": p.architecture,
                            "huggingface": {"repo": p.huggingface.repo, "revision": p.huggingface.revision},
                            "weights": p.weights.to_string(),
                            "serveGpuMemory": p.serve.gpu_memory.to_string(),
                            "contextLength": p.context_length,
                            "tuning": p.tuning.as_ref().map(|t| serde_json::json!({
                                "loraGpuMemory": t.lora_gpu_memory.to_string(),
                                "qloraGpuMemory": t.qlora_gpu_memory.to_string()})),
                            "gated": p.download_needs_token,
                            "deprecated": p.deprecated,
                            "runtimeSupported": p.runtime_supported,
                        })
                    })
                    .collect();
                out(&format_values(&v, o)?)
            }
        },
        ModelsCommand::Describe {
            name,
            cloud,
            tuning,
            hf_endpoint,
            token,
            hub_timeout,
        } if kaito_presets::hub_model::is_hub_id(&name) => {
            if tuning.is_some() {
                return Err(Error::Usage(format!(
                    "{name} is a Hugging Face id: ids can be served, not tuned\n  fix: drop \
                     --tuning, or describe a catalog preset that supports tuning"
                )));
            }
            let id = kaito_presets::HubId::parse(&name).map_err(|e| {
                Error::Usage(format!("{e}\n  fix: write org/model or org/model@revision"))
            })?;
            let facts = crate::hub::resolve(
                &hf_endpoint,
                &id,
                token.as_deref().filter(|t| !t.is_empty()),
                Duration::from_secs(hub_timeout.max(1)),
            )
            .await
            .map_err(|e| Error::Usage(format!("{e}")))?;
            let preset = facts.preset(&name, catalog.runtime_architectures());
            let mut text =
                render::model_describe(&preset, Mode::Serve, SkuCatalog::builtin(), cloud);
            text.push_str(&render::hub_pin(
                &facts,
                &hf_endpoint,
                catalog.runtime_architectures(),
            ));
            out(&text)
        }
        ModelsCommand::Describe {
            name,
            cloud,
            tuning,
            ..
        } => {
            let preset = catalog.get(&name).ok_or_else(|| {
                let near = catalog.suggestions(&name, 3);
                let hint = if near.is_empty() {
                    String::new()
                } else {
                    format!(" Did you mean {}?", near.join(", "))
                };
                Error::Usage(format!(
                    "unknown preset {name:?}.{hint}\n  fix: list presets with `kubectl kaito models list`"
                ))
            })?;
            let mode = match tuning {
                None => Mode::Serve,
                Some(Method::Lora) => Mode::TuneLora,
                Some(Method::Qlora) => Mode::TuneQlora,
            };
            out(&render::model_describe(
                preset,
                mode,
                SkuCatalog::builtin(),
                cloud,
            ))
        }
    }
}

fn read_workspaces(path: &std::path::Path) -> Result<Vec<Workspace>> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_path_buf(),
            source,
        })?
    };
    compute::parse_workspaces(&text, &path.display().to_string())
}

/// `--dry-run=client` for one workspace: the defaulted object and the trailer, or the
/// webhook's rejection.
pub fn dry_run_client(
    ws: &Workspace,
    cfg: &AdmissionConfig,
    json: bool,
) -> Result<(String, String)> {
    let admission::Admission {
        workspace: ws,
        verdict,
        plan,
    } = admission::admit(None, ws, cfg);
    if !verdict.is_allowed() {
        return Err(Error::Invalid {
            name: ws.metadata.name.clone().unwrap_or_default(),
            message: verdict.message(),
        });
    }
    let body = if json { to_json(&ws)? } else { to_yaml(&ws)? };
    let trailer = render::dry_run_trailer(&plan, ws.resource.count.unwrap_or(1), &verdict.warnings);
    Ok((body, trailer))
}

async fn create(g: &GlobalArgs, a: CreateArgs) -> Result<()> {
    let objects = match (&a.file, &a.what) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage(
                "-f and `create workspace NAME` cannot be combined: use one of them".into(),
            ));
        }
        (Some(path), None) => read_workspaces(path)?,
        (None, Some(CreateWhat::Workspace(flags))) => {
            vec![compute::build_workspace(flags, g.namespace.as_deref())?]
        }
        (None, None) => {
            return Err(Error::Usage(
                "nothing to create: use `kubectl kaito create workspace NAME --preset P` or `kubectl kaito create -f FILE` (see --help)".into(),
            ));
        }
    };
    let json = match a.output {
        None | Some(Output::Yaml) => false,
        Some(Output::Json) => true,
        Some(o) => {
            return Err(Error::Usage(format!(
                "-o {o:?} does not apply to create: use -o yaml or -o json"
            )));
        }
    };
    match a.dry_run {
        DryRun::Client => {
            let cfg = AdmissionConfig::new(a.cloud, a.provisioner);
            let mut first = true;
            for ws in &objects {
                let (body, trailer) = dry_run_client(ws, &cfg, json)?;
                if json {
                    out(&body)?;
                    eprint!("{trailer}");
                } else {
                    if !first {
                        out("---\n")?;
                    }
                    out(&body)?;
                    out(&trailer)?;
                }
                first = false;
            }
            Ok(())
        }
        DryRun::None if a.output.is_some() => {
            for (i, ws) in objects.iter().enumerate() {
                if json {
                    out(&to_json(ws)?)?;
                } else {
                    if i > 0 {
                        out("---\n")?;
                    }
                    out(&to_yaml(ws)?)?;
                }
            }
            Ok(())
        }
        mode => {
            let ctx = collect::connect(g).await?;
            let server_dry = mode == DryRun::Server;
            for ws in &objects {
                let ns = g
                    .namespace
                    .clone()
                    .or_else(|| ws.metadata.namespace.clone())
                    .unwrap_or_else(|| ctx.namespace.clone());
                let created = collect::create_workspace(&ctx, ws, &ns, server_dry).await?;
                match a.output {
                    Some(Output::Json) => out(&to_json(&created)?)?,
                    Some(_) => out(&to_yaml(&created)?)?,
                    None => {
                        let name = created.metadata.name.clone().unwrap_or_default();
                        let suffix = if server_dry { " (server dry run)" } else { "" };
                        let mut line = format!("workspace.kaito.sh/{name} created{suffix}\n");
                        if let Some(why) = created.annotation(kaito_api::ANNOTATION_SIZING) {
                            line.push_str(&format!("  sizing: {why}\n"));
                        }
                        if !server_dry {
                            line.push_str(&format!(
                                "  next: kubectl kaito get {name} -n {ns} -w, then kubectl kaito status {name} -n {ns}\n"
                            ));
                        }
                        out(&line)?;
                    }
                }
            }
            Ok(())
        }
    }
}

async fn get(g: &GlobalArgs, a: GetArgs) -> Result<()> {
    let ctx = collect::connect(g).await?;
    let scope = if a.all_namespaces {
        None
    } else {
        Some(ctx.namespace.as_str())
    };
    let wide = a.output == Output::Wide;
    if let Some(name) = &a.name {
        if a.all_namespaces {
            return Err(Error::Usage(
                "a name cannot be combined with -A: use -n NAMESPACE".into(),
            ));
        }
        let ws = collect::get_workspace(&ctx, name).await?;
        match a.output {
            Output::Yaml => return out(&to_yaml(&ws)?),
            Output::Json => return out(&to_json(&ws)?),
            _ => {}
        }
        let eps = if wide {
            collect::endpoints(&ctx, scope).await
        } else {
            Default::default()
        };
        let ns = ws.metadata.namespace.clone().unwrap_or_default();
        let ep = eps.get(&(ns, name.clone())).map(String::as_str);
        out(&render::workspaces_table(
            &[compute::workspace_row(&ws, ep, now())],
            false,
            wide,
            true,
        ))?;
        if a.watch {
            return watch(&ctx, scope, Some(name), false, wide).await;
        }
        return Ok(());
    }
    let items = collect::list_workspaces(&ctx, scope).await?;
    match a.output {
        Output::Yaml | Output::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            let text = if a.output == Output::Json {
                to_json(&list)?
            } else {
                to_yaml(&list)?
            };
            return out(&text);
        }
        _ => {}
    }
    let eps = if wide {
        collect::endpoints(&ctx, scope).await
    } else {
        Default::default()
    };
    let t = now();
    let rows: Vec<_> = items
        .iter()
        .map(|ws| {
            let key = (
                ws.metadata.namespace.clone().unwrap_or_default(),
                ws.metadata.name.clone().unwrap_or_default(),
            );
            compute::workspace_row(ws, eps.get(&key).map(String::as_str), t)
        })
        .collect();
    if rows.is_empty() && !a.watch {
        let where_ = match scope {
            Some(ns) => format!("in namespace {ns}"),
            None => "in any namespace".into(),
        };
        eprintln!("No workspaces found {where_}.");
        return Ok(());
    }
    out(&render::workspaces_table(
        &rows,
        a.all_namespaces,
        wide,
        true,
    ))?;
    if a.watch {
        return watch(&ctx, scope, None, a.all_namespaces, wide).await;
    }
    Ok(())
}

async fn watch(
    ctx: &Ctx,
    scope: Option<&str>,
    name: Option<&str>,
    namespaces: bool,
    wide: bool,
) -> Result<()> {
    let api = collect::workspaces(ctx, scope);
    let mut cfg = watcher::Config::default();
    if let Some(n) = name {
        cfg = cfg.fields(&format!("metadata.name={n}"));
    }
    let mut stream = watcher(api, cfg).boxed();
    let mut initial = true;
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(|e| Error::Unreachable(format!("the watch failed: {}", chain(&e))))?;
        match ev {
            watcher::Event::Init => initial = true,
            watcher::Event::InitDone => initial = false,
            watcher::Event::InitApply(_) => {}
            watcher::Event::Apply(ws) | watcher::Event::Delete(ws) if !initial => {
                out(&render::workspaces_table(
                    &[compute::workspace_row(&ws, None, now())],
                    namespaces,
                    wide,
                    false,
                ))?;
            }
            _ => {}
        }
    }
    Ok(())
}

async fn status(g: &GlobalArgs, a: StatusArgs) -> Result<()> {
    let ctx = collect::connect(g).await?;
    let d = collect::status_data(&ctx, &a.name).await?;
    out(&render::status(&render::StatusView {
        ws: &d.ws,
        pods: &d.pods,
        nodes: &d.nodes,
        events: &d.events,
        max_events: a.events,
        endpoint: d.endpoint.clone(),
        now: now(),
    }))
}

async fn logs(g: &GlobalArgs, a: LogsArgs) -> Result<()> {
    let ctx = collect::connect(g).await?;
    let ws = collect::get_workspace(&ctx, &a.name).await?;
    let pods = collect::workspace_pods(&ctx, &a.name).await?;
    let chosen = compute::pick_log_pods(&pods, a.all_pods);
    if chosen.is_empty() {
        let step = compute::next_step(&ws).unwrap_or_default();
        return Err(Error::NotReady(format!(
            "workspace {:?} has no pods yet (label {}={}).\n  next: {step}",
            a.name,
            kaito_api::LABEL_WORKSPACE,
            a.name
        )));
    }
    let prefix = chosen.len() > 1;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut streams = Vec::new();
    for p in chosen {
        let pod = p.metadata.name.clone().unwrap_or_default();
        let lp = LogParams {
            container: compute::log_container(p, a.container.as_deref()),
            follow: a.follow,
            tail_lines: a.tail,
            since_seconds: a.since,
            ..LogParams::default()
        };
        let reader = api.log_stream(&pod, &lp).await.map_err(|e| match e {
            kube::Error::Api(s) => Error::NotReady(format!(
                "cannot read the logs of pod {pod}: {}\n  fix: wait until the pod runs (`kubectl kaito status {}`)",
                s.message, a.name
            )),
            other => Error::Unreachable(chain(&other)),
        })?;
        let tag = if prefix {
            format!("[{pod}] ")
        } else {
            String::new()
        };
        streams.push(
            reader
                .lines()
                .map_ok(move |l| format!("{tag}{l}\n"))
                .boxed(),
        );
    }
    let mut merged = futures::stream::select_all(streams);
    while let Some(line) = merged.next().await {
        let line = line.map_err(|e| Error::Unreachable(format!("the log stream broke: {e}")))?;
        out(&line)?;
    }
    Ok(())
}

async fn ready_pod(ctx: &Ctx, name: &str) -> Result<String> {
    let ws = collect::get_workspace(ctx, name).await?;
    if ws.tuning.is_some() {
        return Err(Error::Usage(format!(
            "workspace {name:?} tunes a model; it serves nothing to chat with. Serve the adapter with `kubectl kaito create workspace NAME --preset P --adapter name=IMAGE`"
        )));
    }
    let pods = collect::workspace_pods(ctx, name).await?;
    if let Some(p) = pods.iter().find(|p| compute::pod_is_ready(p)) {
        return Ok(p.metadata.name.clone().unwrap_or_default());
    }
    let step =
        compute::next_step(&ws).unwrap_or_else(|| "wait until a serving pod is Ready".into());
    Err(Error::NotReady(format!(
        "workspace {name:?} is not ready to chat yet: no serving pod is Ready ({} pod(s) found).\n  next: {step}\n  watch: kubectl kaito get {name} -n {} -w",
        pods.len(),
        ctx.namespace
    )))
}

async fn chat_cmd(g: &GlobalArgs, a: ChatArgs) -> Result<()> {
    let transport = match &a.endpoint {
        Some(url) => chat::parse_endpoint(url)?,
        None => {
            let ctx = collect::connect(g).await?;
            let pod = ready_pod(&ctx, &a.name).await?;
            Transport::PortForward {
                pods: Api::namespaced(ctx.client.clone(), &ctx.namespace),
                pod,
            }
        }
    };
    let mut session = Session {
        system: a.system.clone(),
        temperature: a.temperature,
        max_tokens: a.max_tokens,
        top_p: a.top_p,
        ..Session::default()
    };
    let timeout = Duration::from_secs(a.timeout);
    let one_shot = match &a.prompt {
        Some(p) => Some(p.clone()),
        None if !std::io::stdin().is_terminal() => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            Some(s)
        }
        None => None,
    };
    if let Some(prompt) = one_shot {
        let prompt = prompt.trim();
        if prompt.is_empty() {
            return Err(Error::Usage("the prompt is empty".into()));
        }
        let mut stdout = std::io::stdout();
        return tokio::time::timeout(
            timeout,
            chat::exchange(&transport, &session, prompt, a.raw_chat, &mut stdout),
        )
        .await
        .map_err(|_| {
            Error::Timeout(format!(
                "no complete reply within {}s (raise --timeout)",
                a.timeout
            ))
        })?
        .map(|_| ());
    }
    eprintln!(
        "Chatting with {} via {}. /help for commands, /quit to leave.",
        a.name,
        transport.describe()
    );
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
    loop {
        eprint!("> ");
        let Some(line) = lines.next_line().await? else {
            break;
        };
        match chat::parse_repl(&line) {
            ReplCommand::Empty => {}
            ReplCommand::Help => eprintln!("{}", chat::REPL_HELP),
            ReplCommand::Quit => break,
            ReplCommand::Clear => {
                session.history.clear();
                eprintln!("(history cleared)");
            }
            ReplCommand::System(s) => {
                session.system = (!s.is_empty()).then_some(s);
                eprintln!(
                    "(system prompt {})",
                    if session.system.is_some() {
                        "set"
                    } else {
                        "removed"
                    }
                );
            }
            ReplCommand::Set(k, v) => match session.set(&k, &v) {
                Ok(msg) => eprintln!("({msg})"),
                Err(msg) => eprintln!("error: {msg}"),
            },
            ReplCommand::Unknown(c) => eprintln!("unknown command /{c}; /help lists them"),
            ReplCommand::Message(m) => {
                let mut stdout = std::io::stdout();
                let r = tokio::time::timeout(
                    timeout,
                    chat::exchange(&transport, &session, &m, a.raw_chat, &mut stdout),
                )
                .await;
                match r {
                    Ok(Ok(reply)) => session.record(&m, &reply),
                    Ok(Err(e)) => eprintln!("error: {e}"),
                    Err(_) => eprintln!("error: no complete reply within {}s", a.timeout),
                }
            }
        }
    }
    Ok(())
}

async fn delete(g: &GlobalArgs, a: DeleteArgs) -> Result<()> {
    let ctx = collect::connect(g).await?;
    let api = collect::workspaces(&ctx, Some(&ctx.namespace));
    api.delete(&a.name, &DeleteParams::default())
        .await
        .map_err(|e| Error::from_kube(e, Some(&a.name), &ctx.namespace))?;
    if !a.wait {
        return out(&format!(
            "workspace.kaito.sh/{} deleted (not waiting)\n",
            a.name
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout);
    loop {
        match api.get_opt(&a.name).await {
            Ok(None) => break,
            Ok(Some(_)) => {}
            Err(e) => return Err(Error::from_kube(e, Some(&a.name), &ctx.namespace)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "workspace {:?} is still there after {}s: its finalizer waits for its nodes to go; see `kubectl kaito status {}`",
                a.name, a.timeout, a.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    out(&format!("workspace.kaito.sh/{} deleted\n", a.name))
}

#[cfg(test)]
mod tests {
    use kaito_api::admission::Provisioner;
    use kaito_presets::Cloud;

    use super::*;
    use crate::testutil::parse;

    #[test]
    fn dry_run_client_defaults_sizes_and_summarises_the_seed() {
        let text = std::fs::read_to_string(format!(
            "{}/../examples/inference/kaito_workspace_phi_3.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("seed");
        let ws = compute::parse_workspaces(&text, "seed").expect("parses");
        let cfg = AdmissionConfig::new(Cloud::Azure, Provisioner::Aks);
        let (body, trailer) = dry_run_client(&ws[0], &cfg, false).expect("valid");
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
        let (body, trailer) = dry_run_client(&ws, &cfg, false).expect("valid");
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
        let e = dry_run_client(&ws, &cfg, false).expect_err("unknown preset");
        let mut expected = ws.clone();
        kaito_api::admission::apply_defaults(&mut expected, &cfg);
        let verdict = kaito_api::admission::validate(None, &expected, &cfg);
        let Error::Invalid { message, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(message, &verdict.message());
        assert!(message.contains("inference.preset"), "{message}");
    }
}
