//! Starting a private etcd as a child process, for `augur dev` and `augur bench`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// A running etcd child; killed when dropped.
pub struct EtcdChild {
    child: Child,
    pub endpoint: String,
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Finds etcd: the given path, or `etcd` on PATH.
pub fn find_etcd(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--etcd-bin {} does not exist", p.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
    {
        let candidate = dir.join("etcd");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("etcd was not found on PATH. Install it with `sudo apt-get install etcd-server` (Debian/Ubuntu), or pass --etcd-bin PATH")
}

impl EtcdChild {
    /// Starts etcd on free loopback ports with its data in `data_dir`, logging to
    /// `data_dir/etcd.log`, and waits until it answers.
    pub async fn start(bin: &Path, data_dir: &Path, max_txn_ops: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(data_dir.join("etcd.log"))?;
        let child = Command::new(bin)
            .arg("--name=augur-dev")
            .arg(format!("--data-dir={}", data_dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=augur-dev={peer}"))
            .arg(format!("--max-txn-ops={max_txn_ops}"))
            .arg("--auto-compaction-mode=periodic")
            .arg("--auto-compaction-retention=1h")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: Ctrl-C in the terminal reaches only
            // `augur dev`, which stops workers and coordinator first and etcd
            // last (otherwise their shutdown would find etcd gone).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut etcd = EtcdChild { child, endpoint };
        etcd.wait_ready(data_dir).await?;
        Ok(etcd)
    }

    async fn wait_ready(&mut self, data_dir: &Path) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "etcd exited with {status}; see {}",
                    data_dir.join("etcd.log").display()
                );
            }
            if let Ok(mut c) =
                augur_store::connect(std::slice::from_ref(&self.endpoint), Duration::from_secs(1))
                    .await
            {
                if c.status().await.is_ok() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "etcd did not become ready in 30 s; see {}",
                    data_dir.join("etcd.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
