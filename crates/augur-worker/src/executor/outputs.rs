//! Outputs of an attempt: small values the job writes as files into the
//! directory named by `$AUGUR_OUTPUTS` (a file `KEY` holds a string,
//! `KEY.json` a JSON value, `KEY.lines` a list), returned with the result.
//! Bounded: at most [`MAX_FILES`] files of [`MAX_FILE_BYTES`] each, names of
//! letters, digits, `_`, `-` and `.`, UTF-8 contents. Anything else refuses
//! all outputs of the attempt with a message saying why (the attempt's own
//! outcome is unchanged).

use std::collections::BTreeMap;
use std::path::Path;

pub use augur_core::job::MAX_OUTPUTS as MAX_FILES;
/// Largest output file.
pub const MAX_FILE_BYTES: u64 = augur_core::job::MAX_OUTPUT_BYTES as u64;

/// The outputs in `dir`, or why they are refused. A missing directory is no
/// outputs.
pub fn collect(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("cannot read $AUGUR_OUTPUTS: {e}")),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read $AUGUR_OUTPUTS: {e}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Not followed: a symlink could point anywhere on the worker.
        let meta = entry
            .path()
            .symlink_metadata()
            .map_err(|e| format!("output {name:?}: {e}"))?;
        files.push((name, meta.is_file(), meta.len()));
        if files.len() > MAX_FILES {
            return Err(format!("more than {MAX_FILES} files in $AUGUR_OUTPUTS"));
        }
    }
    let mut outputs = BTreeMap::new();
    for (name, regular, len) in files {
        check(&name, regular, len)?;
        let bytes = std::fs::read(dir.join(&name)).map_err(|e| format!("output {name:?}: {e}"))?;
        let text = String::from_utf8(bytes).map_err(|_| format!("output {name:?} is not UTF-8"))?;
        outputs.insert(name, text);
    }
    Ok(outputs)
}

/// Whether one directory entry may be an output.
fn check(name: &str, regular: bool, len: u64) -> Result<(), String> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !name_ok {
        return Err(format!(
            "output {name:?}: names are 1..=64 letters, digits, '_', '-', '.' (not starting with '.')"
        ));
    }
    if !regular {
        return Err(format!("output {name:?} is not a regular file"));
    }
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "output {name:?} has {len} bytes, the limit is {MAX_FILE_BYTES}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_become_outputs_and_a_missing_directory_is_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(collect(&dir.path().join("absent")).expect("ok").is_empty());
        std::fs::write(dir.path().join("count"), "3\n").expect("write");
        std::fs::write(dir.path().join("files.lines"), "a\nb\n").expect("write");
        let outputs = collect(dir.path()).expect("ok");
        assert_eq!(outputs["count"], "3\n");
        assert_eq!(outputs["files.lines"], "a\nb\n");
    }

    #[test]
    fn too_many_too_big_badly_named_or_odd_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("big"), vec![b'x'; 5000]).expect("write");
        assert!(collect(dir.path())
            .expect_err("too big")
            .contains("5000 bytes"));

        let dir = tempfile::tempdir().expect("temp dir");
        for i in 0..=MAX_FILES {
            std::fs::write(dir.path().join(format!("k{i}")), "v").expect("write");
        }
        assert!(collect(dir.path())
            .expect_err("too many")
            .contains("more than 16"));

        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a b"), "v").expect("write");
        assert!(collect(dir.path())
            .expect_err("bad name")
            .contains("names are"));

        let dir = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).expect("symlink");
        assert!(collect(dir.path())
            .expect_err("symlink")
            .contains("not a regular file"));

        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("bin"), [0xff, 0xfe]).expect("write");
        assert!(collect(dir.path())
            .expect_err("binary")
            .contains("not UTF-8"));
    }
}
