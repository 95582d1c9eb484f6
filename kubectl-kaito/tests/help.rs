//! The README shows exactly what `kubectl kaito --help` prints.
//!
//! The block between `<!-- help -->` and `<!-- end help -->` in kubectl-kaito/README.md is
//! compared with the output of the built binary (run as kubectl runs a plugin, with stdout a
//! pipe) and with clap's in-process rendering of the same command. To regenerate the block after
//! changing the CLI:
//!
//! ```text
//! KAITO_UPDATE_README=1 cargo test -p kubectl-kaito --test help
//! ```

use std::path::PathBuf;
use std::process::Command;

use clap::CommandFactory as _;

const BEGIN: &str = "<!-- help -->";
const END: &str = "<!-- end help -->";
const REGENERATE: &str = "KAITO_UPDATE_README=1 cargo test -p kubectl-kaito --test help";

fn readme_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")
}

/// `kubectl kaito --help` from the binary, with a fixed, colourless environment.
fn binary_help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-kaito"))
        .arg("--help")
        .env_remove("COLUMNS")
        .env_remove("CLICOLOR_FORCE")
        .env("NO_COLOR", "1")
        .output()
        .expect("kubectl-kaito --help runs");
    assert!(out.status.success(), "kubectl-kaito --help failed: {out:?}");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The fenced block as it must appear in the README.
fn block(help: &str) -> String {
    format!("{BEGIN}\n```text\n$ kubectl kaito --help\n{help}```\n{END}")
}

/// The README's current block (markers included), and its byte range.
fn readme_block(readme: &str) -> (usize, usize) {
    let start = readme
        .find(BEGIN)
        .unwrap_or_else(|| panic!("README.md has no {BEGIN} marker; add one and run {REGENERATE}"));
    let end = readme[start..]
        .find(END)
        .map(|i| start + i + END.len())
        .unwrap_or_else(|| panic!("README.md has no {END} after {BEGIN}; run {REGENERATE}"));
    (start, end)
}

#[test]
fn help_uses_the_kubectl_plugin_name() {
    let help = binary_help();
    assert!(
        help.contains("Usage: kubectl kaito [OPTIONS] <COMMAND>"),
        "{help}"
    );
    // The width the binary uses with stdout a pipe (and the cap in a terminal): 100 columns.
    // `--help` prints the short form: no flag of the root command has a separate long help.
    let in_process = kubectl_kaito::cli::Cli::command()
        .term_width(100)
        .render_help()
        .to_string();
    assert_eq!(
        in_process, help,
        "Cli::command() renders a different help than the binary prints"
    );
    // Subcommands name themselves the way kubectl users type them.
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-kaito"))
        .args(["create", "--help"])
        .env("NO_COLOR", "1")
        .output()
        .expect("kubectl-kaito create --help runs");
    let create = String::from_utf8_lossy(&out.stdout);
    assert!(create.contains("Usage: kubectl kaito create"), "{create}");
}

#[test]
fn readme_shows_the_help_output() {
    let path = readme_path();
    let readme = std::fs::read_to_string(&path).expect("README.md is readable");
    let (start, end) = readme_block(&readme);
    let want = block(&binary_help());
    let have = &readme[start..end];
    if have == want {
        return;
    }
    if std::env::var_os("KAITO_UPDATE_README").is_some() {
        let updated = format!("{}{want}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).expect("README.md is writable");
        return;
    }
    panic!(
        "kubectl-kaito/README.md's help block differs from `kubectl kaito --help`.\n\
         Regenerate it with:\n    {REGENERATE}\n\n--- README ---\n{have}\n--- binary ---\n{want}\n"
    );
}
