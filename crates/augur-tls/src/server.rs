//! Server-side TLS whose certificate, key and client CA can be swapped while serving.
//!
//! Each reload builds a complete new [`ServerConfig`] and swaps the `Arc` atomically.
//! Connections already established keep the session they negotiated; every handshake
//! that starts after the swap uses the new material. A failed reload leaves the
//! previous configuration in place.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::material::{load_certified_key, load_roots, provider};
use crate::TlsError;

/// How often [`ReloadingServerTls::spawn_reloader`] checks the files for changes.
pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The ALPN protocol gRPC runs on.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// Where the server's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key: PathBuf,
    /// PEM CA bundle. When set, clients must present a certificate signed by it (mTLS);
    /// when absent, clients are not asked for a certificate.
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }
}

/// Server TLS whose certificate, key and client CA can be reloaded; connections already
/// open keep their session, new handshakes use the new material.
///
/// Cheap to clone: clones share the material and the counters.
#[derive(Clone)]
pub struct ReloadingServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: ServerTlsFiles,
    config: RwLock<Arc<ServerConfig>>,
    handshake_failures: AtomicU64,
    reloads: AtomicU64,
}

impl std::fmt::Debug for ReloadingServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingServerTls")
            .field("files", &self.inner.files)
            .field("handshake_failures", &self.handshake_failures())
            .field("reloads", &self.reloads())
            .finish_non_exhaustive()
    }
}

impl ReloadingServerTls {
    /// Loads and validates the files. Errors name the file and what is wrong with it.
    pub fn load(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let config = build_server_config(&files)?;
        Ok(Self {
            inner: Arc::new(Inner {
                files,
                config: RwLock::new(config),
                handshake_failures: AtomicU64::new(0),
                reloads: AtomicU64::new(0),
            }),
        })
    }

    /// Re-reads the files and, if they are valid, uses them for every later handshake.
    /// On error the previous material stays in use and the error names the bad file.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build_server_config(&self.inner.files)?;
        *self
            .inner
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        self.inner.reloads.fetch_add(1, Ordering::Relaxed);
        info!(cert = %self.inner.files.cert.display(), "tls material reloaded");
        Ok(())
    }

    /// The configuration new handshakes use right now (for callers that drive
    /// `tokio_rustls::TlsAcceptor` themselves).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner
            .config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The files this was loaded from.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.inner.files
    }

    /// Whether clients must present a certificate signed by `client_ca` (mTLS).
    pub fn requires_client_cert(&self) -> bool {
        self.inner.files.client_ca.is_some()
    }

    /// Handshakes that failed or timed out on streams from [`Self::incoming`], since load.
    pub fn handshake_failures(&self) -> u64 {
        self.inner.handshake_failures.load(Ordering::Relaxed)
    }

    /// Successful reloads since load.
    pub fn reloads(&self) -> u64 {
        self.inner.reloads.load(Ordering::Relaxed)
    }

    pub(crate) fn record_handshake_failure(&self) {
        self.inner
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads on SIGHUP and whenever any file's modification time or length changes
    /// (checked every [`RELOAD_POLL_INTERVAL`]), until `shutdown` is cancelled.
    ///
    /// A failed reload is logged (warn) and the old material kept; the same broken files
    /// are not retried until they change again or SIGHUP arrives. Must be called inside a
    /// Tokio runtime. Installing the SIGHUP handler replaces the default action
    /// (terminate) for the whole process.
    pub fn spawn_reloader(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move { tls.reload_loop(shutdown).await })
    }

    async fn reload_loop(self, shutdown: CancellationToken) {
        use tokio::signal::unix::{signal, SignalKind};

        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(error) => {
                warn!(%error, "cannot listen for SIGHUP, tls reload only on file change");
                None
            }
        };
        let mut last_seen = self.stamps();
        let mut poll = tokio::time::interval(RELOAD_POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                () = shutdown.cancelled() => return,
                Some(()) = recv_hangup(&mut hangup) => "sighup",
                _ = poll.tick() => {
                    if self.stamps() == last_seen {
                        continue;
                    }
                    "file change"
                }
            };
            // Stamps taken before reading: a write that lands during the reload is seen
            // as a change on the next tick and reloaded again.
            last_seen = self.stamps();
            let tls = self.clone();
            match tokio::task::spawn_blocking(move || tls.reload()).await {
                Ok(Ok(())) => info!(trigger, "tls reload done"),
                Ok(Err(error)) => {
                    warn!(trigger, %error, "tls reload failed, keeping previous material")
                }
                Err(error) => warn!(trigger, %error, "tls reload task failed"),
            }
        }
    }

    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.inner
            .files
            .paths()
            .map(|path| {
                let metadata = std::fs::metadata(path).ok()?;
                Some((metadata.modified().ok()?, metadata.len()))
            })
            .collect()
    }
}

async fn recv_hangup(hangup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangup {
        Some(hangup) => hangup.recv().await,
        None => std::future::pending().await,
    }
}

fn build_server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certified = load_certified_key(&files.cert, &files.key)?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = load_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|error| TlsError::InvalidCa {
                    path: ca.clone(),
                    reason: error.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}
