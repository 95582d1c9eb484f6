//! The docs' command lines against the real thing (fast, in `cargo test`): every flag a README
//! gives `kaito-controller`, `kaito-webhook`, `kaito-runtime` or `kaito-adapter` is one the
//! built binary's `--help` lists; every script a README names exists (and is executable when it
//! has a `#!` line); every chart value a README sets (`--set key=value`) or names
//! (`workloads.x`) is a key of `charts/kaito/values.yaml`. The binaries are the ones `cargo test
//! --workspace` (or `cargo build --workspace --bins`) built, or `KAITO_<NAME>_BIN`. (`kubectl kaito` lines are parsed by the plugin's own CLI in
//! `kubectl-kaito/tests/readme_commands.rs`.)

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use anyhow::{Context as _, Result};
use kaito_e2e::docs::{self, READMES};

fn readmes() -> Result<Vec<(String, String)>> {
    let root = docs::repo_root();
    READMES
        .iter()
        .filter(|f| root.join(f).is_file())
        .map(|f| {
            std::fs::read_to_string(root.join(f))
                .map(|t| (f.to_string(), t))
                .with_context(|| format!("reading {f}"))
        })
        .collect()
}

/// The help text of `bin` (of subcommand `sub`, when it has one of that name).
fn help(bin: &std::path::Path, sub: Option<&str>) -> Result<String> {
    if let Some(sub) = sub {
        let o = Command::new(bin).args([sub, "--help"]).output()?;
        if o.status.success() {
            return Ok(String::from_utf8_lossy(&o.stdout).into_owned());
        }
    }
    let o = Command::new(bin).arg("--help").output()?;
    anyhow::ensure!(o.status.success(), "{} --help failed", bin.display());
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Whether `text` lists `flag` (followed by a space, `=`, `,` or the line's end).
fn lists(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(i, _)| {
        let next = text[i + flag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Flags the READMEs give `program` that its `--help` does not list: `(place, flag)`.
fn unknown_flags(
    program: &str,
    bin: &std::path::Path,
    docs: &[(String, String)],
) -> Result<(usize, Vec<String>)> {
    let mut checked = 0;
    let mut bad = Vec::new();
    for (file, text) in docs {
        for line in docs::command_lines(file, text, &[program]) {
            let sub = line
                .words
                .get(1)
                .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .map(String::as_str);
            let help = help(bin, sub)?;
            for flag in line.long_flags() {
                checked += 1;
                if !lists(&help, &flag) {
                    bad.push(format!("{}: {flag} in `{}`", line.place, line.text()));
                }
            }
        }
    }
    Ok((checked, bad))
}

#[test]
fn every_flag_the_readmes_give_the_binaries_exists() -> Result<()> {
    let docs = readmes()?;
    let mut bad = Vec::new();
    for (program, env) in [
        ("kaito-controller", "KAITO_CONTROLLER_BIN"),
        ("kaito-webhook", "KAITO_WEBHOOK_BIN"),
        ("kaito-runtime", "KAITO_RUNTIME_BIN"),
        ("kaito-adapter", "KAITO_ADAPTER_BIN"),
    ] {
        let bin = kaito_e2e::workspace_bin(program, env)?;
        let (checked, mut b) = unknown_flags(program, &bin, &docs)?;
        assert!(
            checked > 0,
            "no {program} flag found in the READMEs: is the extraction broken?"
        );
        bad.append(&mut b);
    }
    assert!(
        bad.is_empty(),
        "flags the binaries do not have:\n{}",
        bad.join("\n")
    );
    Ok(())
}

#[test]
fn a_flag_that_does_not_exist_is_caught() -> Result<()> {
    let bin = kaito_e2e::workspace_bin("kaito-controller", "KAITO_CONTROLLER_BIN")?;
    let doc = "```sh\nkaito-controller --provisioner byo --no-such-flag x --check-config\n```\n";
    let (checked, bad) =
        unknown_flags("kaito-controller", &bin, &[("FAKE.md".into(), doc.into())])?;
    assert_eq!(checked, 3);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].starts_with("FAKE.md:2: --no-such-flag"), "{bad:?}");
    Ok(())
}

#[test]
fn every_script_the_readmes_name_exists_and_runs() -> Result<()> {
    let root = docs::repo_root();
    let mut checked = 0;
    let mut bad = Vec::new();
    for (file, text) in readmes()? {
        let dir = root
            .join(&file)
            .parent()
            .map(|d| d.to_path_buf())
            .unwrap_or(root.clone());
        for (n, line) in docs::shell_lines(&text) {
            let words = docs::shell_words(&line);
            for w in &words {
                let w = w.trim_end_matches([',', '.', ')', ':', ';']);
                let is_script = w.ends_with(".sh")
                    && !w.starts_with('/')
                    && !w.starts_with('$')
                    && w.contains('/')
                    && !w.contains('*');
                if !is_script {
                    continue;
                }
                checked += 1;
                // A path is the repository's, or (a tree drawn in a crate's README) its folder's.
                let rel = w.trim_start_matches("./");
                let Some(path) = [root.join(rel), dir.join(rel)]
                    .into_iter()
                    .find(|p| p.is_file())
                else {
                    bad.push(format!("{file}:{n}: {w} does not exist"));
                    continue;
                };
                // A script with a `#!` line is run as a command: it must be executable. One
                // without is a library other scripts source (tests/cluster/node.sh).
                let mode = std::fs::metadata(&path)?.permissions().mode();
                let shebang = std::fs::read_to_string(&path)?.starts_with("#!");
                if shebang && mode & 0o111 == 0 {
                    bad.push(format!("{file}:{n}: {w} is not executable"));
                }
            }
        }
    }
    assert!(checked > 5, "only {checked} script paths found");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    Ok(())
}

/// Last segments of dotted words that are domains or file names, not chart values.
const NOT_KEYS: &[&str] = &[
    "com", "io", "sh", "aws", "org", "net", "rs", "md", "yaml", "yml", "json", "toml", "txt",
];

/// Whether `values` has the dotted `key`.
fn has_key(values: &serde_yaml::Value, key: &str) -> bool {
    key.split('.').try_fold(values, |v, k| v.get(k)).is_some()
}

#[test]
fn every_chart_value_the_readmes_set_or_name_exists() -> Result<()> {
    let root = docs::repo_root();
    let values: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        root.join("charts/kaito/values.yaml"),
    )?)?;
    let top: Vec<String> = values
        .as_mapping()
        .context("values.yaml is a mapping")?
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    let mut set = 0;
    let mut bad = Vec::new();
    for (file, text) in readmes()? {
        let words = docs::words(&file, &text);
        for (i, (place, w)) in words.iter().enumerate() {
            let key = if w == "--set" || w == "--set-string" {
                let Some((_, next)) = words.get(i + 1) else {
                    continue;
                };
                set += 1;
                next.split('=').next().unwrap_or_default().to_string()
            } else if w.contains('.')
                && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
                && top.iter().any(|t| w.starts_with(&format!("{t}.")))
                // Not a domain or a file name (`karpenter.azure.com`, `azure.rs`).
                && !w.rsplit('.').next().is_some_and(|last| NOT_KEYS.contains(&last))
            {
                w.clone()
            } else {
                continue;
            };
            if !has_key(&values, &key) {
                bad.push(format!("{place}: {key} is not in charts/kaito/values.yaml"));
            }
        }
    }
    assert!(set > 5, "only {set} --set found");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    Ok(())
}
