//! The CLI reference (`docs/cli.md`), generated from the clap definitions so
//! it cannot drift: a test renders it and compares it with the committed
//! file (`UPDATE_CLI_DOCS=1 cargo test -p augur-cli cli_reference` rewrites
//! it), and another checks that every `--flag` the docs name exists and every
//! relative link in them points at a file.

use clap::Command;

/// Markdown for `command` and every subcommand, depth first.
pub fn markdown(command: &Command) -> String {
    let mut out = String::from(
        "# CLI reference\n\nGenerated from the `augur` binary's own definitions \
         (`UPDATE_CLI_DOCS=1 cargo test -p augur-cli cli_reference` rewrites it; \
         a test fails when it is stale). Every command also answers `--help`.\n",
    );
    section(command, "augur", &mut out);
    out
}

fn section(command: &Command, path: &str, out: &mut String) {
    if command.is_hide_set() {
        return;
    }
    out.push_str(&format!("\n## `{path}`\n\n"));
    if let Some(about) = command.get_long_about().or(command.get_about()) {
        out.push_str(&format!("{}\n\n", about.to_string().trim()));
    }
    let args: Vec<_> = command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "version")
        .collect();
    if !args.is_empty() {
        out.push_str("| flag | what it does |\n|---|---|\n");
        for a in args {
            let name = match (a.get_long(), a.get_short()) {
                (Some(l), Some(s)) => format!("`-{s}`, `--{l}`"),
                (Some(l), None) => format!("`--{l}`"),
                (None, Some(s)) => format!("`-{s}`"),
                (None, None) => format!("`{}` (positional)", a.get_id().as_str().to_uppercase()),
            };
            let mut help = a
                .get_help()
                .map(|h| h.to_string())
                .unwrap_or_default()
                .replace('\n', " ")
                .replace('|', "\\|");
            let defaults: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            if !defaults.is_empty() {
                help.push_str(&format!(" (default: `{}`)", defaults.join(",")));
            }
            if let Some(env) = a.get_env() {
                help.push_str(&format!(" [env `{}`]", env.to_string_lossy()));
            }
            out.push_str(&format!("| {name} | {} |\n", help.trim()));
        }
    }
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        section(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

/// Every long flag any command defines.
pub fn flags(command: &Command) -> std::collections::BTreeSet<String> {
    let mut set: std::collections::BTreeSet<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    for sub in command.get_subcommands() {
        set.extend(flags(sub));
    }
    set.insert("help".into());
    set.insert("version".into());
    set
}
