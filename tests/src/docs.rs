//! What the docs name, read out of their Markdown, for the checks that keep them true
//! (`tests/tests/docs_commands.rs`, `kubectl-kaito/tests/readme_commands.rs`): command lines
//! from fenced code blocks and inline code spans, their `--flags`, and the paths they name.

/// The READMEs a user reads: the guide and each crate's.
pub const READMES: &[&str] = &[
    "README.md",
    "adapter/README.md",
    "api/README.md",
    "controller/README.md",
    "kubectl-kaito/README.md",
    "presets/README.md",
    "runtime/README.md",
    "tests/README.md",
    "webhook/README.md",
];

pub use crate::repo_root;

/// One command line a doc names: where, and its words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    /// `README.md:42`.
    pub place: String,
    /// The words, quotes removed.
    pub words: Vec<String>,
}

impl CommandLine {
    /// The line as the doc wrote it (words joined by spaces).
    pub fn text(&self) -> String {
        self.words.join(" ")
    }

    /// Whether every word is literal: no placeholder (`...`, `…`, `<x>`, `[x]`, `a|b`, `$VAR`).
    pub fn is_concrete(&self) -> bool {
        !self.words.iter().any(|w| {
            w.contains("...")
                || w.contains('…')
                || w.contains('<')
                || w.contains('[')
                || w.contains('|')
                || w.contains('$')
                || w.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        })
    }

    /// The long flags named on the line (`--name` of `--name`, `--name=v`, `[--name`).
    pub fn long_flags(&self) -> Vec<String> {
        self.words
            .iter()
            .map(|w| w.trim_start_matches('['))
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| {
                let w = w.split('=').next().unwrap_or(w);
                w.trim_end_matches([']', ',', '.', ')', ';', '`'])
                    .to_string()
            })
            .collect()
    }
}

/// Splits a shell line into words: whitespace separates, `"..."` and `'...'` group, an
/// unquoted `#` after whitespace starts a comment.
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None if c == '#' && !in_word => break,
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The shell lines of `markdown`: the lines of its fenced code blocks (a `$ ` prompt dropped,
/// `\` continuations joined) and its inline code spans, each with its line number.
pub fn shell_lines(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in markdown.lines().enumerate() {
        let n = i + 1;
        let t = raw.trim_start();
        if t.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            let line = t.strip_prefix("$ ").unwrap_or(t);
            let (start, mut text) = pending.take().unwrap_or((n, String::new()));
            if let Some(head) = line.trim_end().strip_suffix('\\') {
                text.push_str(head);
                text.push(' ');
                pending = Some((start, text));
            } else {
                text.push_str(line);
                out.push((start, text));
            }
            continue;
        }
        for (k, span) in raw.split('`').enumerate() {
            if k % 2 == 1 {
                out.push((n, span.to_string()));
            }
        }
    }
    out
}

/// Every command line of `markdown` (named `file`) that starts with the words `program`
/// (e.g. `["kubectl", "kaito"]`), also after `sudo`, `KEY=value` prefixes and `&&`/`|`/`;`.
pub fn command_lines(file: &str, markdown: &str, program: &[&str]) -> Vec<CommandLine> {
    let mut out = Vec::new();
    for (n, line) in shell_lines(markdown) {
        let words = shell_words(&line);
        let mut start = 0;
        while start < words.len() {
            let end = words[start..]
                .iter()
                .position(|w| matches!(w.as_str(), "&&" | "||" | "|" | ";"))
                .map_or(words.len(), |p| start + p);
            let mut cmd = &words[start..end];
            while let Some(first) = cmd.first() {
                if first == "sudo" || (first.contains('=') && !first.starts_with('-')) {
                    cmd = &cmd[1..];
                } else {
                    break;
                }
            }
            if cmd.len() >= program.len() && cmd.iter().zip(program).all(|(a, b)| a == b) {
                out.push(CommandLine {
                    place: format!("{file}:{n}"),
                    words: cmd.to_vec(),
                });
            }
            start = end + 1;
        }
    }
    out
}

/// The words of `markdown`'s shell lines, with where they stand (for paths and `--set`s).
pub fn words(file: &str, markdown: &str) -> Vec<(String, String)> {
    shell_lines(markdown)
        .into_iter()
        .flat_map(|(n, line)| {
            shell_words(&line)
                .into_iter()
                .map(move |w| (format!("{file}:{n}"), w))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_from_blocks_and_spans_with_continuations_joined() {
        let md = "Run `kubectl kaito get -A` or:\n\n```sh\n$ kubectl kaito create workspace w \\\n  --preset p   # a comment\nFOO=1 kaito-controller --check-config && kubectl get pods\n```\n";
        let kk = command_lines("R.md", md, &["kubectl", "kaito"]);
        assert_eq!(kk.len(), 2, "{kk:?}");
        assert_eq!(kk[0].text(), "kubectl kaito get -A");
        assert_eq!(kk[0].place, "R.md:1");
        assert_eq!(
            kk[1].words,
            [
                "kubectl",
                "kaito",
                "create",
                "workspace",
                "w",
                "--preset",
                "p"
            ]
        );
        assert_eq!(kk[1].place, "R.md:4");
        let c = command_lines("R.md", md, &["kaito-controller"]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].long_flags(), ["--check-config"]);
    }

    #[test]
    fn quotes_group_and_placeholders_are_not_concrete() {
        assert_eq!(
            shell_words(r#"kubectl kaito chat w --prompt "What is 2 + 2?""#),
            [
                "kubectl",
                "kaito",
                "chat",
                "w",
                "--prompt",
                "What is 2 + 2?"
            ]
        );
        let l = |s: &str| CommandLine {
            place: String::new(),
            words: shell_words(s),
        };
        assert!(l("kubectl kaito get -A").is_concrete());
        assert!(!l("kubectl kaito chat … --prompt x").is_concrete());
        assert!(!l("kaito-controller --provisioner karpenter|byo").is_concrete());
        assert_eq!(
            l("x [--cloud azure|aws] --max-bytes=3").long_flags(),
            ["--cloud", "--max-bytes"]
        );
    }
}
