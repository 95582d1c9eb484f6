//! Every `kubectl kaito` command line in the READMEs parses with the plugin's own CLI: a line
//! with only literal words through `Cli::try_parse_from` (what the binary does first), a line
//! with placeholders (`…`, `<size>`, `a|b`) by checking that each `--flag` it names belongs to
//! its subcommand. A README that names a flag or subcommand the plugin does not have fails here.

use clap::{CommandFactory as _, Parser as _};
use kaito_e2e::docs::{self, CommandLine, READMES};
use kubectl_kaito::cli::Cli;

/// The long flags `words` (after `kubectl kaito`) may use: its subcommand's and the global ones.
fn known_flags(words: &[String]) -> Vec<String> {
    let mut cmd = Cli::command();
    let mut flags: Vec<String> = Vec::new();
    let mut add = |c: &clap::Command| {
        flags.extend(
            c.get_arguments()
                .filter_map(|a| a.get_long())
                .map(|l| format!("--{l}")),
        );
        flags.push("--help".into());
    };
    add(&cmd);
    for w in words.iter().filter(|w| !w.starts_with('-')) {
        let Some(sub) = cmd.find_subcommand(w).cloned() else {
            break;
        };
        add(&sub);
        cmd = sub;
    }
    flags
}

/// Whether `words` are a subcommand path and nothing else (`logs`, `models describe`, or none:
/// the plugin itself).
fn names_a_command(words: &[String]) -> bool {
    let mut cmd = Cli::command();
    for w in words {
        let Some(sub) = cmd.find_subcommand(w).cloned() else {
            return false;
        };
        cmd = sub;
    }
    true
}

/// Why `line` does not parse, if it does not.
fn problem(line: &CommandLine) -> Option<String> {
    let args = &line.words[2..];
    if line.is_concrete() {
        let argv = std::iter::once("kubectl-kaito".to_string()).chain(args.iter().cloned());
        return match Cli::try_parse_from(argv) {
            Ok(_) => None,
            Err(e)
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) =>
            {
                None
            }
            // Prose that names a command (`kubectl kaito logs`) rather than running it.
            Err(e)
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::MissingRequiredArgument
                        | clap::error::ErrorKind::MissingSubcommand
                        | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                ) && names_a_command(args) =>
            {
                None
            }
            Err(e) => Some(format!("{}: `{}`: {:?}", line.place, line.text(), e.kind())),
        };
    }
    let known = known_flags(args);
    let unknown: Vec<String> = line
        .long_flags()
        .into_iter()
        .filter(|f| !known.contains(f))
        .collect();
    (!unknown.is_empty()).then(|| {
        format!(
            "{}: `{}`: no such flag {}",
            line.place,
            line.text(),
            unknown.join(", ")
        )
    })
}

fn lines_of(file: &str, text: &str) -> Vec<CommandLine> {
    docs::command_lines(file, text, &["kubectl", "kaito"])
}

#[test]
fn every_kubectl_kaito_line_in_the_readmes_parses() {
    let root = docs::repo_root();
    let mut lines = Vec::new();
    for f in READMES {
        if let Ok(text) = std::fs::read_to_string(root.join(f)) {
            lines.extend(lines_of(f, &text));
        }
    }
    let concrete = lines.iter().filter(|l| l.is_concrete()).count();
    assert!(
        concrete >= 10,
        "only {concrete} literal kubectl kaito lines found: is the extraction broken?"
    );
    let bad: Vec<String> = lines.iter().filter_map(problem).collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn a_flag_or_subcommand_that_does_not_exist_is_caught() {
    let doc = "```sh\nkubectl kaito get -A\nkubectl kaito get --no-such-flag\nkubectl kaito frobnicate w\n```\n\
               Then `kubectl kaito chat … --no-such-prompt x`; `kubectl kaito logs` names one.\n";
    let bad: Vec<String> = lines_of("FAKE.md", doc)
        .iter()
        .filter_map(problem)
        .collect();
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(
        bad[0].starts_with("FAKE.md:3: `kubectl kaito get --no-such-flag`"),
        "{bad:?}"
    );
    assert!(bad[1].starts_with("FAKE.md:4:"), "{bad:?}");
    assert!(bad[2].contains("no such flag --no-such-prompt"), "{bad:?}");
}
