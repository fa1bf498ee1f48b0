//! The API port's accept loop: connection hygiene in front of tonic.
//!
//! * **A cap on open connections** (`--max-connections`, by default derived
//!   from the open-files limit less headroom for etcd, peers, the metrics
//!   endpoint and files): a connection past it is accepted and closed at once,
//!   so it neither takes a file descriptor for long nor waits in the kernel's
//!   backlog, and the refusal is counted.
//! * **Deadlines for connections that send nothing**: the TLS handshake and the
//!   first request must both arrive within the handshake timeout of the accept
//!   (10 s); handshakes run concurrently, one task each, so half-open ones never
//!   hold up the others.
//! * **An idle timeout**: a connection on which no stream has been open for
//!   the idle timeout (5 min) is closed. A stream that stays open (a worker's
//!   `Attach`) keeps its connection however quiet it is; a dead peer is noticed
//!   by the server's HTTP/2 keep-alive pings instead.
//!
//! Everything is counted in `augur_api_connections_*` (`augur-telemetry`'s
//! `connections.rs`).

mod frames;
mod watched;

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_telemetry::connections::ConnectionMetrics;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn, Instrument};

pub use watched::Watched;

/// How the API port treats its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Most connections open at once; `None`: derived from the open-files
    /// limit at start ([`derived_max_connections`]).
    pub max_connections: Option<usize>,
    /// From accept to the first request, TLS handshake included.
    pub handshake_timeout: Duration,
    /// How long a connection may stay open with no stream open.
    pub idle_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            max_connections: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Fewest connections the cap allows, whatever the file limit.
const MIN_CONNECTIONS: usize = 16;
/// Files kept out of the cap: etcd clients and their health probes, peer
/// coordinators, the metrics endpoint, logs, the worker's data files in
/// `augur dev`. At least this many, or an eighth of the limit if more.
const MIN_HEADROOM: u64 = 64;
/// Pause after an accept error that is not about one connection (EMFILE), so
/// a lasting error does not spin the loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Connections handed to the server and not yet taken.
const READY_BUFFER: usize = 64;
/// Repeated warnings (refusals at the cap, failed handshakes) are logged at
/// most this often, with how many there were.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The connection cap for an open-files limit: the limit less a headroom of
/// an eighth of it (at least 64), and never below 16.
pub fn derived_max_connections(open_files: u64) -> usize {
    let headroom = (open_files / 8).max(MIN_HEADROOM);
    usize::try_from(open_files.saturating_sub(headroom))
        .unwrap_or(usize::MAX)
        .max(MIN_CONNECTIONS)
}

/// The open-files limit of this process: (soft, hard).
pub fn open_files_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft open-files limit to the hard limit (Linux caps an
/// unlimited hard limit at `fs.nr_open`, 2^20 by default) and logs both.
/// Returns the soft limit in force afterwards; a failure to raise it is
/// logged and the old limit kept.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let (soft, hard) = open_files_limit()?;
    let target = if hard == libc::RLIM_INFINITY {
        1 << 20
    } else {
        hard
    };
    if soft >= target {
        info!(soft, hard, "open-files limit");
        return Ok(soft);
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let error = io::Error::last_os_error();
        warn!(soft, hard, %error, "cannot raise the open-files limit; keeping it");
        return Ok(soft);
    }
    info!(
        soft = target,
        was = soft,
        hard,
        "open-files limit raised to the hard limit"
    );
    Ok(target)
}

/// Logs a repeated event at most every [`WARN_EVERY`], with its count.
#[derive(Default)]
struct Throttle(Mutex<Option<(Instant, u64)>>);

impl Throttle {
    /// `Some(n)`: log now, `n` events since the last line (this one included).
    fn tick(&self) -> Option<u64> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match &mut *state {
            Some((last, count)) if now.duration_since(*last) < WARN_EVERY => {
                *count += 1;
                None
            }
            _ => {
                let count = state.map_or(0, |(_, c)| c) + 1;
                *state = Some((now, 0));
                Some(count)
            }
        }
    }
}

/// Accepts connections on `listener` under `max_connections`, runs `upgrade`
/// (the TLS handshake, or nothing) on each in its own task within the
/// handshake timeout, and yields them watched ([`Watched`]). The stream ends
/// only when dropped, which closes the listener.
pub(crate) fn incoming<S, U, F>(
    listener: TcpListener,
    max_connections: usize,
    settings: &ConnectionSettings,
    metrics: Arc<ConnectionMetrics>,
    upgrade: U,
) -> impl Stream<Item = io::Result<Watched<S>>> + Send + 'static
where
    U: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ready, receiver) = mpsc::channel(READY_BUFFER);
    metrics
        .limit
        .set(i64::try_from(max_connections).unwrap_or(i64::MAX));
    let deadlines = watched::Deadlines {
        first_request: settings.handshake_timeout,
        idle: settings.idle_timeout,
    };
    let local = listener
        .local_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    tokio::spawn(
        accept_loop(
            listener,
            max_connections,
            deadlines,
            metrics,
            upgrade,
            ready,
        )
        .instrument(tracing::info_span!("api_accept", local = %local)),
    );
    ReceiverStream::new(receiver)
}

async fn accept_loop<S, U, F>(
    listener: TcpListener,
    max_connections: usize,
    deadlines: watched::Deadlines,
    metrics: Arc<ConnectionMetrics>,
    upgrade: U,
    ready: mpsc::Sender<io::Result<Watched<S>>>,
) where
    U: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    let at_cap = Throttle::default();
    let handshake_failures = Arc::new(Throttle::default());
    loop {
        let accepted = tokio::select! {
            () = ready.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                metrics.refuse("accept_error");
                warn!(%error, "accepting a connection failed");
                if !augur_tls::is_per_connection_error(&error) {
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            metrics.refuse("limit");
            if let Some(count) = at_cap.tick() {
                warn!(
                    %peer,
                    max_connections,
                    refused = count,
                    "connection cap reached; refusing new connections (--max-connections)"
                );
            }
            continue;
        };
        let accepted_at = Instant::now();
        let slot = watched::Slot::new(metrics.clone(), permit);
        if let Err(error) = tcp.set_nodelay(true) {
            debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let handshake = upgrade(tcp);
        let ready = ready.clone();
        let failures = handshake_failures.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(deadlines.first_request, handshake).await {
                Ok(Ok(stream)) => {
                    let stream = Watched::new(stream, slot, deadlines, accepted_at);
                    // The server may be gone; the connection is then closed.
                    let _ = ready.send(Ok(stream)).await;
                }
                Ok(Err(error)) => {
                    slot.close("handshake_failed");
                    if let Some(count) = failures.tick() {
                        warn!(%peer, %error, failures = count, "TLS handshake failed");
                    }
                }
                Err(_elapsed) => {
                    slot.close("handshake_timeout");
                    debug!(%peer, "TLS handshake timed out");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_headroom_below_the_file_limit() {
        assert_eq!(derived_max_connections(256), 192);
        assert_eq!(derived_max_connections(1024), 896);
        assert_eq!(derived_max_connections(20_000), 17_500);
        assert_eq!(derived_max_connections(10), MIN_CONNECTIONS);
        for limit in [100, 256, 1024, 65_536, 1 << 20] {
            let cap = derived_max_connections(limit) as u64;
            assert!(cap + MIN_HEADROOM <= limit, "{limit}: {cap}");
        }
    }

    #[test]
    fn repeated_warnings_are_throttled_and_counted() {
        let t = Throttle::default();
        assert_eq!(t.tick(), Some(1));
        assert_eq!(t.tick(), None);
        assert_eq!(t.tick(), None);
    }
}
