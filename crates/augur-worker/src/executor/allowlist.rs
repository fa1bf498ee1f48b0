//! `--allow-command`: which programs a worker agrees to start.
//!
//! A pattern is a glob with `*` (any run of characters) and `?` (one
//! character); there are no brackets and no escapes. What a pattern is matched
//! against depends on whether it contains a `/`:
//!
//! * **A name pattern** (no `/`, e.g. `python3*`) matches a job whose command is
//!   a bare name (no `/`) equal to it. With an allowlist configured, a bare name
//!   is looked up on the *worker's* PATH, not on a PATH the job sets itself, so
//!   a job cannot point an allowed name at a program of its own.
//! * **A path pattern** (with a `/`, e.g. `/usr/bin/*` or `/opt/tools/run-*`)
//!   matches the program that would be executed: the command itself if it
//!   contains a `/`, otherwise where the name was found on the worker's PATH.
//!   Here `*` and `?` never match a `/`, and a path with a `..` component never
//!   matches, so `/usr/bin/*` covers exactly the files directly in `/usr/bin`.
//!
//! The allowlist governs `argv[0]` only: allowing an interpreter (`sh`,
//! `python3`) allows whatever it is told to run.

use std::path::{Component, Path};

use super::PolicyError;

/// The worker's `--allow-command` patterns. Empty means "every command".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandAllowlist {
    patterns: Vec<String>,
}

impl CommandAllowlist {
    /// Checks the patterns once, at start-up.
    pub fn new(patterns: Vec<String>) -> Result<Self, PolicyError> {
        for pattern in &patterns {
            if pattern.trim().is_empty() || pattern.contains('\0') {
                return Err(PolicyError::BadPattern {
                    pattern: pattern.clone(),
                    reason: "must be a non-empty glob without NUL bytes",
                });
            }
            if pattern.contains('/') && !pattern.starts_with('/') {
                return Err(PolicyError::BadPattern {
                    pattern: pattern.clone(),
                    reason: "a pattern with a '/' must be an absolute path (a bare name has none)",
                });
            }
        }
        Ok(CommandAllowlist { patterns })
    }

    /// Whether no pattern was configured (every command is allowed).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The configured patterns, in order.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether a job whose command is `command` (as given in its spec) may run,
    /// `resolved` being the program it would execute (None if not found).
    pub fn allows(&self, command: &str, resolved: Option<&Path>) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        self.patterns.iter().any(|pattern| {
            if pattern.contains('/') {
                resolved.is_some_and(|path| path_matches(pattern, path))
            } else {
                !command.contains('/') && glob_match(pattern, command, false)
            }
        })
    }
}

fn path_matches(pattern: &str, path: &Path) -> bool {
    if path.components().any(|c| c == Component::ParentDir) {
        return false;
    }
    match path.to_str() {
        Some(text) => glob_match(pattern, text, true),
        // A path that is not UTF-8 cannot equal any pattern given on a command line.
        None => false,
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters
/// and `?` exactly one; with `slash_is_special`, neither matches a `/`.
///
/// Iterative with one backtracking point (the last `*`), so it takes
/// O(pattern × text) time at worst and never recurses.
pub fn glob_match(pattern: &str, text: &str, slash_is_special: bool) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    // Position of the last `*` seen and the text position it currently covers up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some('?') if !(slash_is_special && text[t] == '/') => {
                p += 1;
                t += 1;
            }
            Some(&c) if c != '*' && c != '?' && c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character, unless it is a `/`
                // that a path pattern's `*` may not cross.
                Some((star_p, star_t)) if !(slash_is_special && text[star_t] == '/') => {
                    star = Some((star_p, star_t + 1));
                    p = star_p + 1;
                    t = star_t + 1;
                }
                _ => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_basics() {
        assert!(glob_match("sh", "sh", false));
        assert!(!glob_match("sh", "bash", false));
        assert!(!glob_match("sh", "shx", false));
        assert!(glob_match("*", "", false));
        assert!(glob_match("*", "anything", false));
        assert!(glob_match("py*", "python3", false));
        assert!(glob_match("*3", "python3", false));
        assert!(glob_match("p?thon?", "python3", false));
        assert!(!glob_match("p?thon?", "python", false));
        assert!(glob_match("a*b*c", "aXXbYYc", false));
        assert!(glob_match("a*b*c", "abbbc", false));
        assert!(!glob_match("a*b*c", "aXXbYY", false));
        assert!(glob_match("**", "x", false));
        assert!(!glob_match("", "x", false));
        assert!(glob_match("", "", false));
        assert!(glob_match("é?", "éü", false));
    }

    #[test]
    fn path_globs_do_not_cross_slashes() {
        assert!(glob_match("/usr/bin/*", "/usr/bin/id", true));
        assert!(!glob_match("/usr/bin/*", "/usr/bin/x/id", true));
        assert!(!glob_match("/usr/bin/?", "/usr/bin//", true));
        assert!(glob_match("/usr/*/id", "/usr/bin/id", true));
        assert!(!glob_match("/usr/*/id", "/usr/local/bin/id", true));
        // Without slash handling `*` crosses directories.
        assert!(glob_match("/usr/*", "/usr/local/bin/id", false));
    }

    #[test]
    fn glob_of_many_stars_stays_fast_enough_to_finish() {
        // A pathological pattern for naive recursive matchers; this one is polynomial.
        let pattern = "*a".repeat(30) + "b";
        let text = "a".repeat(200);
        assert!(!glob_match(&pattern, &text, false));
    }

    fn list(patterns: &[&str]) -> CommandAllowlist {
        CommandAllowlist::new(patterns.iter().map(|p| p.to_string()).collect()).unwrap()
    }

    #[test]
    fn empty_allowlist_allows_everything() {
        let all = CommandAllowlist::default();
        assert!(all.is_empty());
        assert!(all.allows("/tmp/anything", None));
    }

    #[test]
    fn name_patterns_match_bare_names_only() {
        let names = list(&["sh", "id"]);
        assert!(names.allows("sh", Some(Path::new("/usr/bin/sh"))));
        assert!(names.allows("id", None));
        assert!(!names.allows("bash", Some(Path::new("/usr/bin/bash"))));
        // A path ending in an allowed name is not that name.
        assert!(!names.allows("/tmp/evil/sh", Some(Path::new("/tmp/evil/sh"))));
        assert!(!names.allows("./sh", Some(Path::new("./sh"))));
    }

    #[test]
    fn path_patterns_match_the_resolved_program() {
        let paths = list(&["/usr/bin/*"]);
        assert!(paths.allows("id", Some(Path::new("/usr/bin/id"))));
        assert!(paths.allows("/usr/bin/id", Some(Path::new("/usr/bin/id"))));
        assert!(!paths.allows("id", None));
        assert!(!paths.allows("/bin/id", Some(Path::new("/bin/id"))));
        assert!(!paths.allows(
            "/usr/bin/../../tmp/x",
            Some(Path::new("/usr/bin/../../tmp/x"))
        ));
        assert!(!paths.allows("/usr/bin/x/y", Some(Path::new("/usr/bin/x/y"))));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "  ", "bin/sh", "a\0b"] {
            let err = CommandAllowlist::new(vec![bad.to_string()]).expect_err(bad);
            assert!(err.to_string().contains("--allow-command"), "{err}");
        }
    }
}
