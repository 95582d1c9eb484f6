//! Writes the Workspace CRD generated from the Rust types.
//!
//! `cargo run -p kaito-api --bin crdgen` writes `charts/kaito/crds/kaito.sh_workspaces.yaml`
//! (relative to the repository root); `--stdout` prints it instead.

use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let yaml = kaito_api::crd::workspace_crd_yaml();
    if std::env::args().any(|a| a == "--stdout") {
        print!("{yaml}");
        return std::process::ExitCode::SUCCESS;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join(kaito_api::crd::CRD_PATH);
    match std::fs::write(&path, yaml) {
        Ok(()) => {
            println!("wrote {}", kaito_api::crd::CRD_PATH);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::ExitCode::FAILURE
        }
    }
}
