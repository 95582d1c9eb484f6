//! `kubectl-kaito`: parse, run, print the error (cause and fix) and exit non-zero on failure.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    // One process-wide TLS crypto provider (ring). A workspace-wide build can also link
    // aws-lc-rs through other crates, and rustls then refuses to pick one on its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = kubectl_kaito::cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(kubectl_kaito::app::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(kubectl_kaito::error::Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
