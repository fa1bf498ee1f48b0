//! The docs say what is true: the CLI reference is current, every `augur`
//! command line in README.md and docs/ uses flags that exist, and every
//! relative link points at a file.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::reference::{flags, markdown};
use crate::Cli;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn cli_reference_is_current() {
    let path = root().join("docs/cli.md");
    let rendered = markdown(&Cli::command());
    if std::env::var_os("UPDATE_CLI_DOCS").is_some() {
        std::fs::write(&path, &rendered).expect("write docs/cli.md");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "docs/cli.md is stale: run `UPDATE_CLI_DOCS=1 cargo test -p augur-cli cli_reference` and commit it"
    );
}

/// `--flag`s in the `augur ...` command lines of a text (up to the end of
/// the code span or line, or a shell separator).
fn augur_flags(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("augur ") {
            let before = rest[..at].chars().last();
            let after = &rest[at + "augur ".len()..];
            let end = after
                .find(['`', '|', ';', '&', ')', '#'])
                .unwrap_or(after.len());
            if before.is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '/')) {
                for word in after[..end].split_whitespace() {
                    // What follows `--` is the job's own command line.
                    if word == "--" {
                        break;
                    }
                    if let Some(flag) = word.strip_prefix("--") {
                        let flag: String = flag
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                            .collect();
                        if !flag.is_empty() {
                            found.push((n + 1, flag));
                        }
                    }
                }
            }
            rest = &after[end.min(after.len())..];
        }
    }
    found
}

/// Relative link targets (`](path)`, anchors dropped).
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split('#').next().unwrap_or("").trim();
            let external = target.contains("://") || target.starts_with("mailto:");
            if !target.is_empty() && !external {
                found.push((n + 1, target.to_string()));
            }
            rest = &after[end.min(after.len())..];
        }
    }
    found
}

#[test]
fn docs_name_only_flags_and_files_that_exist() {
    let known = flags(&Cli::command());
    let mut wrong = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let name = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .display()
            .to_string();
        for (line, flag) in augur_flags(&text) {
            if !known.contains(&flag) {
                wrong.push(format!("{name}:{line}: augur has no flag --{flag}"));
            }
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        for (line, target) in links(&text) {
            if !dir.join(&target).exists() {
                wrong.push(format!(
                    "{name}:{line}: link to {target}, which does not exist"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the docs are wrong:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checkers_find_what_they_should() {
    let text = "run `augur submit --wait --bogus -- sh -c 'x --not-a-flag'` and [a](docs/x.md#y) [b](https://e.org)\nnotaugur --skip";
    let flags: Vec<String> = augur_flags(text).into_iter().map(|(_, f)| f).collect();
    assert_eq!(flags, ["wait", "bogus"]);
    let links: Vec<String> = links(text).into_iter().map(|(_, l)| l).collect();
    assert_eq!(links, ["docs/x.md"]);
}
