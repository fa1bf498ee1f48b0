//! Server-side TLS whose certificate, key and client CA can be swapped while serving.
//!
//! Each reload builds a complete new [`ServerConfig`] and swaps the `Arc` atomically.
//! Connections already established keep the session they negotiated; every handshake
//! that starts after the swap uses the new material. A failed reload leaves the
//! previous configuration in place.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

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

/// Modification time and length of each file, `None` where unreadable.
type Stamps = Vec<Option<(SystemTime, u64)>>;

struct Inner {
    files: ServerTlsFiles,
    config: RwLock<Arc<ServerConfig>>,
    /// The files' stamps taken just before the material in use was read.
    loaded_stamps: Mutex<Stamps>,
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
        let stamps = stamps(&files);
        let config = build_server_config(&files)?;
        Ok(Self {
            inner: Arc::new(Inner {
                files,
                config: RwLock::new(config),
                loaded_stamps: Mutex::new(stamps),
                handshake_failures: AtomicU64::new(0),
                reloads: AtomicU64::new(0),
            }),
        })
    }

    /// Re-reads the files and, if they are valid, uses them for every later handshake.
    /// On error the previous material stays in use and the error names the bad file.
    pub fn reload(&self) -> Result<(), TlsError> {
        // Stamps taken before reading: a write that lands during the reload shows up as a
        // change afterwards and is reloaded again.
        let stamps = stamps(&self.inner.files);
        let config = build_server_config(&self.inner.files)?;
        *self
            .inner
            .config
            .write()
            .unwrap_or_else(PoisonError::into_inner) = config;
        *self
            .inner
            .loaded_stamps
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = stamps;
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
            .unwrap_or_else(PoisonError::into_inner)
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
    /// (checked every [`RELOAD_POLL_INTERVAL`]), until `shutdown` is cancelled; the task
    /// then ends.
    ///
    /// A failed reload is logged (warn) and the old material kept; the same broken files
    /// are not retried until they change again or SIGHUP arrives. Must be called inside a
    /// Tokio runtime. Installing the SIGHUP handler replaces the default action
    /// (terminate) for the whole process.
    pub fn spawn_reloader(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        self.spawn_reloader_with_interval(shutdown, RELOAD_POLL_INTERVAL)
    }

    /// Like [`Self::spawn_reloader`] with another poll interval.
    ///
    /// The SIGHUP handler is installed before this returns, so a SIGHUP sent afterwards
    /// reloads rather than terminates the process.
    pub fn spawn_reloader_with_interval(
        &self,
        shutdown: CancellationToken,
        poll_interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        use tokio::signal::unix::{signal, SignalKind};

        let hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(error) => {
                warn!(%error, "cannot listen for SIGHUP, tls reload only on file change");
                None
            }
        };
        let tls = self.clone();
        // Compared against what was loaded, so a change made before the task first runs
        // (or between load and this call) is not mistaken for the baseline.
        let last_attempt = self
            .inner
            .loaded_stamps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let span = tracing::info_span!("tls_reloader", cert = %self.inner.files.cert.display());
        tokio::spawn(
            tls.reload_loop(shutdown, hangup, poll_interval, last_attempt)
                .instrument(span),
        )
    }

    async fn reload_loop(
        self,
        shutdown: CancellationToken,
        mut hangup: Option<tokio::signal::unix::Signal>,
        poll_interval: Duration,
        mut last_attempt: Stamps,
    ) {
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                () = shutdown.cancelled() => return,
                Some(()) = recv_hangup(&mut hangup) => {
                    last_attempt = stamps(&self.inner.files);
                    "sighup"
                }
                _ = poll.tick() => {
                    let current = stamps(&self.inner.files);
                    if current == last_attempt {
                        continue;
                    }
                    // Remembered even if the reload fails, so broken files are retried
                    // when they change again rather than on every tick.
                    last_attempt = current;
                    "file change"
                }
            };
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
}

fn stamps(files: &ServerTlsFiles) -> Stamps {
    files
        .paths()
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
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
