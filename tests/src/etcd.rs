//! Looking at etcd directly with `etcdctl`, to check what Augur did (or did not)
//! write, independently of Augur's own API.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::process::run_with_timeout;

/// How long one `etcdctl` call may take.
const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);

impl Cluster {
    /// Runs `etcdctl --endpoints <url> <args>` (API v3).
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new(self.etcdctl_bin())
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", self.etcd_url()])
                .args(args),
            ETCDCTL_TIMEOUT,
        )
    }

    fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// etcd's current revision: it moves on every write, so an unchanged revision
    /// proves nothing was written.
    pub fn etcd_revision(&self) -> i64 {
        let text = self.etcdctl_ok(&["endpoint", "status", "-w", "json"]);
        let status: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("etcdctl endpoint status printed non-JSON ({e}): {text}"));
        status[0]["Status"]["header"]["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no revision in etcdctl endpoint status: {text}"))
    }

    /// Every key under `prefix`, sorted.
    pub fn etcd_keys(&self, prefix: &str) -> Vec<String> {
        let text = self.etcdctl_ok(&["get", prefix, "--prefix", "--keys-only"]);
        let mut keys: Vec<String> = text
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }

    /// Keys that exist now and were written after `revision`, with the revision of
    /// their last write (deletions do not show). For diagnosing unexpected writes.
    pub fn etcd_keys_modified_since(&self, revision: i64) -> Vec<(String, i64)> {
        // `-w fields` prints keys as Go-quoted text, one `"Key" : ...` line each,
        // followed by its revisions, so no base64 decoding is needed.
        let text = self.etcdctl_ok(&["get", "/", "--prefix", "--keys-only", "-w", "fields"]);
        let mut modified = Vec::new();
        let mut key = None;
        for line in text.lines() {
            if let Some(k) = line.strip_prefix("\"Key\" : ") {
                key = Some(k.to_string());
            } else if let Some(rev) = line.strip_prefix("\"ModRevision\" : ") {
                let rev: i64 = rev.trim().parse().unwrap_or(i64::MAX);
                if let Some(k) = key.take() {
                    if rev > revision {
                        modified.push((k, rev));
                    }
                }
            }
        }
        modified
    }

    /// The value stored at `key`, if any.
    pub fn etcd_value(&self, key: &str) -> Option<String> {
        let text = self.etcdctl_ok(&["get", key, "--print-value-only"]);
        let value = text.strip_suffix('\n').unwrap_or(&text);
        (!text.is_empty()).then(|| value.to_string())
    }
}
