//! A pod's container run as a local process, as written: how the tests (and the demo) check
//! that what the controller writes into a pod spec is what the binaries accept.
//!
//! The container's `command[0]` names one of the workspace's binaries (found with
//! [`crate::workspace_bin`]); its other command words, `args` and `env` are passed as written,
//! with nothing else in the environment but `PATH` and `HOME`. What a pod would provide is
//! mapped: each `volumeMount` to a directory under `dir`, the container port to `port`, a
//! Secret key to its value (through `secret`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// The binary that plays `command[0]` of a container.
fn binary_for(name: &str) -> Result<PathBuf> {
    let env = format!("{}_BIN", name.replace('-', "_").to_ascii_uppercase());
    crate::workspace_bin(name, &env)
}

/// The local command for `container` of the pod spec `pod`. `secret(name, key)` reads a
/// Secret's key for `valueFrom.secretKeyRef`.
pub fn local_command(
    pod: &Value,
    container: &Value,
    dir: &Path,
    port: u16,
    secret: &dyn Fn(&str, &str) -> Result<String>,
) -> Result<Command> {
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mut mounts: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (i, m) in container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = m["name"].as_str().unwrap_or_default();
        ensure!(
            volumes.contains(&name),
            "mount of an undeclared volume {name:?}"
        );
        let path = m["mountPath"]
            .as_str()
            .context("a volumeMount without mountPath")?;
        let local = dir.join(format!("mount-{i}-{name}"));
        std::fs::create_dir_all(&local)?;
        mounts.insert(path.to_string(), local);
    }
    let port_in_pod = container["ports"][0]["containerPort"]
        .as_u64()
        .map(|p| p.to_string());
    let map = |word: &str| -> String {
        if Some(word) == port_in_pod.as_deref() {
            return port.to_string();
        }
        for (mount, local) in &mounts {
            if word == mount {
                return local.display().to_string();
            }
            if let Some(rest) = word.strip_prefix(&format!("{mount}/")) {
                return local.join(rest).display().to_string();
            }
        }
        word.to_string()
    };
    let words: Vec<&str> = container["command"]
        .as_array()
        .context("the container has no command")?
        .iter()
        .chain(container["args"].as_array().into_iter().flatten())
        .map(|w| w.as_str().context("a command word that is not a string"))
        .collect::<Result<_>>()?;
    let (program, rest) = words.split_first().context("an empty command")?;
    let mut cmd = Command::new(binary_for(program)?);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", dir);
    cmd.args(rest.iter().map(|w| map(w)));
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().context("an env entry without a name")?;
        let value = if let Some(v) = e["value"].as_str() {
            map(v)
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            secret(
                r.get("name").and_then(Value::as_str).unwrap_or_default(),
                r.get("key").and_then(Value::as_str).unwrap_or_default(),
            )?
        } else {
            bail!("env {name}: {e} is neither a value nor a Secret key");
        };
        cmd.env(name, value);
    }
    Ok(cmd)
}

/// The path and port of a container's HTTP probe (`startupProbe`, `livenessProbe`,
/// `readinessProbe`); the probe must check the container's own port.
pub fn probe_path(container: &Value, probe: &str) -> Result<String> {
    let p = &container[probe]["httpGet"];
    ensure!(
        p["port"].as_u64().is_some() && p["port"] == container["ports"][0]["containerPort"],
        "{probe} does not check the container's port: {p}"
    );
    Ok(p["path"]
        .as_str()
        .with_context(|| format!("{probe} has no path"))?
        .to_string())
}

/// The value of `key` in a Secret read as JSON (`kubectl get secret -o json`).
pub fn secret_value(secret: &Value, key: &str) -> Result<String> {
    use base64::Engine as _;
    let name = secret["metadata"]["name"].as_str().unwrap_or("?");
    let data = secret["data"][key]
        .as_str()
        .with_context(|| format!("Secret {name} has no key {key}"))?;
    Ok(String::from_utf8(
        base64::engine::general_purpose::STANDARD.decode(data)?,
    )?)
}
