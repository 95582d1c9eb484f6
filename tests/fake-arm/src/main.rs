//! `kaito-fake-arm`: the local HTTPS ARM test endpoint (the `kaito_fake_arm` library) as a
//! process. Writes its URL, CA and token to `--state-dir` (`url`, `ca.pem`, `token`, `pid`) and,
//! with `--cluster-script`, materialises one kwok GPU node per pool node with AKS's labels
//! (`cluster.sh add-gpu-node ... --agentpool <pool>`), removing them when the pool is deleted.
//! Faults: `curl --cacert ca.pem -X POST $url/_faults -d '{"quotaExceeded":true}'`.

use std::path::PathBuf;

use clap::Parser;
use kaito_fake_arm::{self as fake_arm, PoolEvent};
use tokio::process::Command;

#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: std::net::SocketAddr,
    /// Directory for url, ca.pem, token, pid.
    #[arg(long)]
    state_dir: PathBuf,
    /// Bearer token to accept.
    #[arg(long, default_value = "fake-arm-token")]
    token: String,
    /// tests/cluster/cluster.sh, to materialise kwok nodes for pools.
    #[arg(long)]
    cluster_script: Option<PathBuf>,
    /// Milliseconds each pool operation takes.
    #[arg(long, default_value_t = 500)]
    operation_ms: u64,
}

async fn run(cmd: &mut Command) {
    match cmd.output().await {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "fake-arm: {:?} failed: {}",
            cmd.as_std(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("fake-arm: {:?}: {e}", cmd.as_std()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One process-wide TLS crypto provider (ring). A workspace-wide build can also link
    // aws-lc-rs through other crates, and rustls then refuses to pick one on its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        anyhow::bail!("the fake ARM endpoint listens on loopback only");
    }
    let mut r = fake_arm::start(args.addr, &args.token).await?;
    let mut f = r.arm.faults();
    f.operation_ms = args.operation_ms;
    r.arm.set_faults(f);
    std::fs::create_dir_all(&args.state_dir)?;
    std::fs::write(args.state_dir.join("ca.pem"), &r.ca_pem)?;
    std::fs::write(args.state_dir.join("token"), &r.token)?;
    std::fs::write(args.state_dir.join("pid"), std::process::id().to_string())?;
    std::fs::write(args.state_dir.join("url"), &r.url)?;
    eprintln!("fake-arm: serving {}", r.url);
    while let Some(ev) = r.events.recv().await {
        let Some(script) = &args.cluster_script else {
            continue;
        };
        match ev {
            PoolEvent::Ready { name, body } => {
                let p = &body["properties"];
                let count = p["count"].as_u64().unwrap_or(1);
                let sku = p["vmSize"].as_str().unwrap_or("Standard_NC6s_v3");
                for i in 0..count {
                    let node = format!("aks-{name}-{i}");
                    let mut c = Command::new(script);
                    c.args(["add-gpu-node", &node, "--sku", sku, "--agentpool", &name]);
                    for (k, v) in p["nodeLabels"].as_object().into_iter().flatten() {
                        c.args(["--label", &format!("{k}={}", v.as_str().unwrap_or(""))]);
                    }
                    for t in p["nodeTaints"].as_array().into_iter().flatten() {
                        if let Some(t) = t.as_str() {
                            c.args(["--taint", t]);
                        }
                    }
                    run(&mut c).await;
                }
            }
            PoolEvent::Deleted { name } => {
                let mut c = Command::new("kubectl");
                c.args([
                    "delete",
                    "node",
                    "-l",
                    &format!("kubernetes.azure.com/agentpool={name}"),
                    "--wait=false",
                ]);
                run(&mut c).await;
            }
        }
    }
    Ok(())
}
