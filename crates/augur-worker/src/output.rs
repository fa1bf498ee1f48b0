//! The worker's local archive of attempt output: the full tails (up to the
//! executor's `tail_bytes` each) of every attempt, kept for a retention period
//! so an operator can read more than the short tail the coordinator stores.
//!
//! Layout: `{dir}/{job_id}/{attempt}.stdout` and `.stderr`. Retention works on
//! whole job directories by modification time, which every save refreshes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::{debug, warn};

/// Why an output operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The id would not make a safe file name (empty, `/`, `..`, ...).
    #[error("job id {0:?} cannot be used as a file name")]
    InvalidJobId(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `job_id` is safe as one path component: 1..=128 characters of
/// `[A-Za-z0-9._-]`, not starting with a dot. Job ids are ULIDs, which always
/// pass; the check only stops a malformed id from escaping the directory.
pub(crate) fn is_safe_job_id(job_id: &str) -> bool {
    !job_id.is_empty()
        && job_id.len() <= 128
        && !job_id.starts_with('.')
        && job_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// One attempt's archived output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Output tails of recent attempts on the worker's disk.
#[derive(Clone, Debug)]
pub struct OutputStore {
    dir: PathBuf,
}

impl OutputStore {
    /// Opens (creating it if needed) the archive in `dir`.
    pub fn open(dir: &Path) -> Result<Self, OutputError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        Ok(OutputStore {
            dir: dir.to_path_buf(),
        })
    }

    /// The archive's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Paths of an attempt's stdout and stderr files.
    pub fn paths(&self, job_id: &str, attempt: u32) -> Result<(PathBuf, PathBuf), OutputError> {
        let job_dir = self.job_dir(job_id)?;
        Ok((
            job_dir.join(format!("{attempt}.stdout")),
            job_dir.join(format!("{attempt}.stderr")),
        ))
    }

    /// Stores an attempt's output, replacing an earlier save of the same attempt.
    /// Each file is written under a temporary name and renamed, so a reader sees
    /// either the old or the new content. Not fsynced: losing recent output on a
    /// power cut is acceptable for an archive. Blocking; call from
    /// `spawn_blocking` in async code.
    pub fn save(
        &self,
        job_id: &str,
        attempt: u32,
        stdout: &[u8],
        stderr: &[u8],
    ) -> Result<(), OutputError> {
        let job_dir = self.job_dir(job_id)?;
        fs::create_dir_all(&job_dir).map_err(io_error(&job_dir))?;
        let (stdout_path, stderr_path) = self.paths(job_id, attempt)?;
        write_replacing(&stdout_path, stdout)?;
        write_replacing(&stderr_path, stderr)?;
        Ok(())
    }

    /// Reads an attempt's output back; `None` if it was never saved or is purged.
    pub fn load(&self, job_id: &str, attempt: u32) -> Result<Option<SavedOutput>, OutputError> {
        let (stdout_path, stderr_path) = self.paths(job_id, attempt)?;
        let read = |path: &Path| match fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(path)(e)),
        };
        match (read(&stdout_path)?, read(&stderr_path)?) {
            (Some(stdout), Some(stderr)) => Ok(Some(SavedOutput { stdout, stderr })),
            _ => Ok(None),
        }
    }

    /// Removes the job directories not modified for longer than `age` and
    /// returns how many it removed. A directory that cannot be inspected or
    /// removed is logged and skipped, so one bad entry does not stop retention.
    pub fn purge_older_than(&self, age: Duration) -> Result<usize, OutputError> {
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    warn!(dir = %self.dir.display(), error = %e, "cannot list output archive");
                    continue;
                }
            };
            let path = entry.path();
            let modified = match entry.metadata().and_then(|m| {
                if m.is_dir() {
                    m.modified().map(Some)
                } else {
                    Ok(None)
                }
            }) {
                Ok(Some(modified)) => modified,
                Ok(None) => continue,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot inspect output directory");
                    continue;
                }
            };
            // A modification time in the future (clock step) counts as fresh.
            let Ok(elapsed) = now.duration_since(modified) else {
                continue;
            };
            if elapsed <= age {
                continue;
            }
            match fs::remove_dir_all(&path) {
                Ok(()) => {
                    debug!(path = %path.display(), "purged job output");
                    removed += 1;
                }
                Err(e) => warn!(path = %path.display(), error = %e, "cannot purge job output"),
            }
        }
        Ok(removed)
    }

    fn job_dir(&self, job_id: &str) -> Result<PathBuf, OutputError> {
        if !is_safe_job_id(job_id) {
            return Err(OutputError::InvalidJobId(job_id.to_string()));
        }
        Ok(self.dir.join(job_id))
    }
}

fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let mut tmp_name = path.as_os_str().to_os_string();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    fs::write(&tmp, bytes).map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_an_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutputStore::open(&dir.path().join("output")).unwrap();
        store.save("01JOB", 2, b"out", b"err").unwrap();
        assert_eq!(
            fs::read(dir.path().join("output/01JOB/2.stdout")).unwrap(),
            b"out"
        );
        assert_eq!(
            fs::read(dir.path().join("output/01JOB/2.stderr")).unwrap(),
            b"err"
        );
        assert_eq!(
            store.load("01JOB", 2).unwrap(),
            Some(SavedOutput {
                stdout: b"out".to_vec(),
                stderr: b"err".to_vec()
            })
        );
        assert_eq!(store.load("01JOB", 3).unwrap(), None);
        // A second save of the same attempt replaces it.
        store.save("01JOB", 2, b"new", b"").unwrap();
        assert_eq!(
            store.load("01JOB", 2).unwrap(),
            Some(SavedOutput {
                stdout: b"new".to_vec(),
                stderr: Vec::new()
            })
        );
    }

    #[test]
    fn refuses_ids_that_would_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutputStore::open(dir.path()).unwrap();
        for bad in ["", "..", "../x", "a/b", ".hidden"] {
            assert!(
                matches!(
                    store.save(bad, 1, b"", b""),
                    Err(OutputError::InvalidJobId(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn purges_only_old_job_directories() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutputStore::open(dir.path()).unwrap();
        store.save("OLD", 1, b"a", b"b").unwrap();
        store.save("NEW", 1, b"a", b"b").unwrap();
        let old = fs::File::open(dir.path().join("OLD")).unwrap();
        old.set_modified(SystemTime::now() - Duration::from_secs(3 * 3600))
            .unwrap();
        fs::write(dir.path().join("stray-file"), b"not a job").unwrap();

        assert_eq!(
            store.purge_older_than(Duration::from_secs(3600)).unwrap(),
            1
        );
        assert!(!dir.path().join("OLD").exists());
        assert!(dir.path().join("NEW/1.stdout").exists());
        assert!(dir.path().join("stray-file").exists());
        assert_eq!(
            store.purge_older_than(Duration::from_secs(3600)).unwrap(),
            0
        );
    }
}
