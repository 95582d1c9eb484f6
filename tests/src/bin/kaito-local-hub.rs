//! `kaito-local-hub`: the test harness's local Hugging Face hub as a process, for the demo and
//! for pods of the local cluster (see `kaito_e2e::hub`).
//!
//!   kaito-local-hub [--listen 127.0.0.1:0] --repo ORG/NAME=PATH [--commit SHA] [--token T] ...
//!
//! PATH is a directory (each regular file in it becomes a file of the repository) or one file.
//! `--commit` (the revision a catalog pins) and `--token` (gates the repository) apply to the
//! `--repo` before them. Prints `kaito-local-hub listening on http://ADDR` and serves until
//! killed.

use std::path::Path;

use anyhow::{Context, Result, bail};
use kaito_e2e::hub::{Hub, HubRepo};

const USAGE: &str =
    "usage: kaito-local-hub [--listen ADDR] --repo ORG/NAME=PATH [--commit SHA] [--token T] ...";

fn main() -> Result<()> {
    let mut listen = "127.0.0.1:0".to_string();
    let mut repos: Vec<HubRepo> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            "--listen" => listen = value()?,
            "--repo" => {
                let spec = value()?;
                let (id, path) = spec
                    .split_once('=')
                    .with_context(|| format!("--repo {spec}: expected ORG/NAME=PATH"))?;
                let path = Path::new(path);
                let repo = if path.is_dir() {
                    HubRepo::from_dir(id, path, None)?
                } else {
                    let name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .with_context(|| format!("--repo {spec}: no file name"))?;
                    HubRepo::new(id, &[(name, path)], None)?
                };
                repos.push(repo);
            }
            "--commit" | "--token" => {
                let v = value()?;
                let repo = repos
                    .pop()
                    .with_context(|| format!("{arg} must follow a --repo"))?;
                repos.push(if arg == "--commit" {
                    repo.with_commit(&v)
                } else {
                    HubRepo {
                        token: Some(v),
                        ..repo
                    }
                });
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    if repos.is_empty() {
        bail!("no --repo given; {USAGE}");
    }
    for r in &repos {
        eprintln!(
            "kaito-local-hub: {} at commit {} ({} files{})",
            r.id,
            r.commit,
            r.files.len(),
            if r.token.is_some() { ", gated" } else { "" }
        );
    }
    let hub = Hub::start_on(&listen, repos)?;
    println!("kaito-local-hub listening on {}", hub.endpoint());
    loop {
        std::thread::park();
    }
}
