//! The hand-off between fine-tuning and serving, with the real parts and no cluster: a LoRA
//! adapter is published to a real OCI registry (`docker-registry` on loopback, htpasswd auth)
//! with `kaito-adapter publish`, as the tuning Job's publisher does; pulled back with
//! `kaito-adapter pull` into `<adapters>/<name>`, as the serving pod's init container does; and
//! served by `kaito-runtime` with the strength env var the controller sets from the seed's
//! `adapters[].strength`. Strength 0 must answer exactly like the base model, the seed's
//! strength (1.0) differently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kaito_e2e::registry::{PASSWORD, Registry};
use kaito_e2e::{free_port, http_request, repo_root, run_command, workspace_bin};

const STEP: Duration = Duration::from_secs(120);

/// A `kaito-runtime` serving a model on a free loopback port; killed on drop.
struct Runtime {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Runtime {
    fn start(
        work: &Path,
        label: &str,
        model: &Path,
        adapters: &Path,
        env: &[(&str, &str)],
    ) -> Result<Runtime> {
        let port = free_port()?;
        let log = work.join(format!("runtime-{label}.log"));
        let out = std::fs::File::create(&log)?;
        let hub = work.join(format!("hub-{label}"));
        let mut cmd = Command::new(workspace_bin("kaito-runtime", "KAITO_RUNTIME_BIN")?);
        cmd.arg("--model-dir")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--served-model-name",
                "phi-3-mini-128k-instruct",
                "--dtype",
                "f32",
            ])
            .arg("--adapters-dir")
            .arg(adapters)
            .env("HF_HUB_CACHE", hub)
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting kaito-runtime")?;
        Ok(Runtime { child, port, log })
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("kaito-runtime exited ({status}):\n{}", self.log_text());
            }
            let health = http_request(self.port, "GET", "/health", None, Duration::from_secs(5));
            if matches!(health, Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "kaito-runtime not ready after {STEP:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The greedy `/chat` answer to `prompt`.
    fn chat(&self, prompt: &str) -> Result<String> {
        let body = serde_json::json!({
            "prompt": prompt,
            "return_full_text": false,
            "generate_kwargs": {"do_sample": false, "max_new_tokens": 24},
        });
        let (code, text) = http_request(self.port, "POST", "/chat", Some(&body.to_string()), STEP)?;
        if code != 200 {
            bail!("/chat answered {code}: {text}");
        }
        let json: serde_json::Value = serde_json::from_str(&text)?;
        json["Result"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no Result in {text}"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn adapter_command(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(workspace_bin("kaito-adapter", "KAITO_ADAPTER_BIN")?);
    cmd.args(args)
        .env_remove("DOCKER_CONFIG")
        .env("HOME", "/nonexistent");
    run_command(cmd, None, STEP)?.ok()
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 temp path")
}

#[test]
#[ignore = "end-to-end tier: run by tests/e2e.sh (needs the workspace binaries)"]
fn an_adapter_pulled_from_the_registry_changes_the_served_output_by_strength() -> Result<()> {
    let Some(registry) = Registry::start()? else {
        return Ok(());
    };
    // The adapter's name and strength, as the user wrote them.
    let seed: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        repo_root().join("examples/inference/kaito_workspace_phi_3_with_adapters.yaml"),
    )?)?;
    let adapter = &seed["inference"]["adapters"][0];
    let name = adapter["source"]["name"].as_str().context("adapter name")?;
    let strength = adapter["strength"].as_str().context("adapter strength")?;
    assert_eq!((name, strength), ("phi-3-adapter", "1.0"));

    // The trainer's output: a tiny Phi-3-shaped model and a matching PEFT adapter.
    let work = tempfile::tempdir()?;
    let (model, trained) = (work.path().join("model"), work.path().join("results"));
    let mut generate = Command::new(workspace_bin("kaito-runtime", "KAITO_RUNTIME_BIN")?);
    generate
        .args([
            "gen-model",
            "--arch",
            "phi3",
            "--size",
            "tiny",
            "--seed",
            "11",
        ])
        .arg("--out")
        .arg(&model)
        .arg("--adapter-out")
        .arg(&trained);
    run_command(generate, None, STEP)?.ok()?;

    // Publisher, then puller, authenticated with a Kubernetes-style .dockerconfigjson.
    let image = format!("{}/tuning/workspace-tuning-phi-3:0.0.1", registry.host());
    let docker_config = registry.docker_config(work.path(), PASSWORD)?;
    let manifest = adapter_command(&[
        "publish",
        "--source",
        path(&trained)?,
        "--target",
        &image,
        "--insecure-registry",
        registry.host(),
        "--docker-config",
        path(&docker_config)?,
    ])
    .with_context(|| format!("registry log:\n{}", registry.log()))?;
    let manifest: serde_json::Value = serde_json::from_str(&manifest)?;
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(1));

    let adapters = work.path().join("adapter");
    let pulled = adapters.join(name);
    adapter_command(&[
        "pull",
        "--image",
        &image,
        "--output",
        path(&pulled)?,
        "--insecure-registry",
        registry.host(),
        "--docker-config",
        path(&docker_config)?,
    ])?;
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        assert_eq!(
            std::fs::read(pulled.join(file))?,
            std::fs::read(trained.join(file))?,
            "{file} must arrive byte for byte"
        );
    }

    // The base model, the pulled adapter at strength 0, and at the seed's strength.
    let no_adapters = work.path().join("no-adapters");
    std::fs::create_dir(&no_adapters)?;
    let mut base = Runtime::start(work.path(), "base", &model, &no_adapters, &[])?;
    let mut off = Runtime::start(work.path(), "off", &model, &adapters, &[(name, "0")])?;
    let mut on = Runtime::start(work.path(), "on", &model, &adapters, &[(name, strength)])?;
    for r in [&mut base, &mut off, &mut on] {
        r.wait_ready()?;
    }
    let prompt = "Summarise the adapter hand-off";
    let (b, z, o) = (base.chat(prompt)?, off.chat(prompt)?, on.chat(prompt)?);
    println!("base: {b:?}\nstrength 0: {z:?}\nstrength {strength}: {o:?}");
    assert!(!b.is_empty(), "the base model answered nothing");
    assert_eq!(z, b, "strength 0 must answer exactly like the base model");
    assert_ne!(o, b, "strength {strength} must change the answer");
    assert!(
        on.log_text().contains(name),
        "the runtime's log names the adapter it loaded:\n{}",
        on.log_text()
    );
    Ok(())
}
