//! The lease id the leader registered this worker under, kept in the data
//! directory: a worker restarted within its lease's TTL names it in its
//! hello and is taken back as the same registration, instead of being
//! refused until the old registration lapses.

use std::io::Write;
use std::path::{Path, PathBuf};

const FILE: &str = "registration";

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The lease id last saved, or 0 (none, or unreadable: a fresh start).
pub(super) fn load(data_dir: &Path) -> i64 {
    std::fs::read_to_string(path(data_dir))
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .filter(|id| *id > 0)
        .unwrap_or(0)
}

/// Saves a lease id (written to a temporary file, then renamed into place).
pub(super) fn save(data_dir: &Path, lease: i64) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    writeln!(file, "{lease}")?;
    drop(file);
    std::fs::rename(tmp, path(data_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_lease_is_loaded_and_garbage_is_a_fresh_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(load(dir.path()), 0);
        save(dir.path(), 0x7a3f).expect("saved");
        assert_eq!(load(dir.path()), 0x7a3f);
        for garbage in ["", "x", "-4", "9999999999999999999999"] {
            std::fs::write(path(dir.path()), garbage).expect("written");
            assert_eq!(load(dir.path()), 0, "{garbage:?}");
        }
    }
}
