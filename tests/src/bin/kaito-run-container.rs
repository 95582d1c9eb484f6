//! `kaito-run-container`: runs a StatefulSet's container as a local process, as written
//! (see `kaito_e2e::container`) — the local demo's stand-in for a serving pod on a simulated
//! node.
//!
//!   kaito-run-container --namespace NS --statefulset NAME --dir DIR --port PORT
//!
//! Reads the StatefulSet and any Secret its env refers to with `kubectl` (KUBECONFIG), then
//! replaces itself with the container's program.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

fn kubectl_json(args: &[&str]) -> Result<Value> {
    let out = Command::new("kubectl")
        .args(args)
        .args(["-o", "json"])
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn main() -> Result<()> {
    let (mut ns, mut sts, mut dir, mut port) = (None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--namespace" => ns = Some(value()?),
            "--statefulset" => sts = Some(value()?),
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--port" => port = Some(value()?.parse::<u16>()?),
            other => bail!("unknown argument {other}"),
        }
    }
    let (ns, sts, dir, port) = (
        ns.context("--namespace")?,
        sts.context("--statefulset")?,
        dir.context("--dir")?,
        port.context("--port")?,
    );
    let object = kubectl_json(&["-n", &ns, "get", "statefulset", &sts])?;
    let pod = &object["spec"]["template"]["spec"];
    let secret = |name: &str, key: &str| {
        kaito_e2e::container::secret_value(&kubectl_json(&["-n", &ns, "get", "secret", name])?, key)
    };
    std::fs::create_dir_all(&dir)?;
    let mut cmd =
        kaito_e2e::container::local_command(pod, &pod["containers"][0], &dir, port, &secret)?;
    eprintln!("kaito-run-container: {cmd:?}");
    Err(cmd.exec().into())
}
