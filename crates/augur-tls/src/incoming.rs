//! Accepting TLS connections for `tonic::transport::Server::serve_with_incoming*`.
//!
//! One task accepts TCP connections; each handshake runs in its own task with a timeout,
//! so a slow or hostile client never holds up the others. Only completed TLS streams are
//! yielded. The yielded type is `tokio_rustls::server::TlsStream<TcpStream>`, for which
//! tonic implements `Connected`: that is what makes `Request::remote_addr()` and
//! `Request::peer_certs()` (and so [`crate::peer_name`]) work.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn, Instrument};

use crate::ReloadingServerTls;

/// How long a client may take to complete the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in flight (plus completed streams not yet taken by the server) beyond which
/// accepting pauses; the kernel backlog holds further connections meanwhile.
const MAX_PENDING_HANDSHAKES: usize = 512;

/// Completed streams buffered for the consumer.
const READY_BUFFER: usize = 64;

/// Pause after an accept error that is not about a single connection (e.g. EMFILE), so a
/// persistent error does not spin the loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

impl ReloadingServerTls {
    /// Accepts TCP connections on `listener` (TCP_NODELAY on) and yields completed TLS
    /// streams, with [`DEFAULT_HANDSHAKE_TIMEOUT`]. See [`Self::incoming_with_timeout`].
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + Send + 'static {
        self.incoming_with_timeout(listener, DEFAULT_HANDSHAKE_TIMEOUT)
    }

    /// Like [`Self::incoming`] with a chosen handshake timeout.
    ///
    /// Handshakes run concurrently, each in its own task; each uses the configuration
    /// current when the TCP connection was accepted. Failed or timed-out handshakes are
    /// logged (warn, with the peer address and reason), counted in
    /// [`Self::handshake_failures`], and not yielded. Accept errors are logged and
    /// retried, never yielded, so the stream only ends when it is dropped — dropping it
    /// (as tonic does when it stops accepting) closes the listener. Must be called inside
    /// a Tokio runtime.
    pub fn incoming_with_timeout(
        &self,
        listener: TcpListener,
        handshake_timeout: Duration,
    ) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + Send + 'static {
        let (ready, receiver) = mpsc::channel(READY_BUFFER);
        let local_addr = listener
            .local_addr()
            .map_or_else(|_| "unknown".to_string(), |addr| addr.to_string());
        let span = tracing::info_span!("tls_accept", %local_addr);
        tokio::spawn(
            accept_loop(self.clone(), listener, handshake_timeout, ready).instrument(span),
        );
        ReceiverStream::new(receiver)
    }
}

type Ready = mpsc::Sender<io::Result<TlsStream<TcpStream>>>;

/// Runs until the consumer drops the stream.
async fn accept_loop(
    tls: ReloadingServerTls,
    listener: TcpListener,
    handshake_timeout: Duration,
    ready: Ready,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = ready.closed() => return,
            permit = pending.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => return,
            },
        };
        let accepted = tokio::select! {
            () = ready.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accepting tcp connection failed");
                if !is_per_connection_error(&error) {
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
                continue;
            }
        };
        if let Err(error) = tcp.set_nodelay(true) {
            debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let acceptor = TlsAcceptor::from(tls.server_config());
        tokio::spawn(
            handshake(
                tls.clone(),
                acceptor,
                tcp,
                peer,
                handshake_timeout,
                ready.clone(),
                permit,
            )
            .instrument(tracing::debug_span!("tls_handshake", %peer)),
        );
    }
}

async fn handshake(
    tls: ReloadingServerTls,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    ready: Ready,
    _permit: OwnedSemaphorePermit,
) {
    let reason = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            // The consumer may be gone; the connection is then simply closed.
            let _ = ready.send(Ok(stream)).await;
            return;
        }
        Ok(Err(error)) => error.to_string(),
        Err(_elapsed) => format!("handshake timed out after {timeout:?}"),
    };
    tls.record_handshake_failure();
    warn!(%peer, %reason, "tls handshake failed");
}

/// Errors that concern only the connection being accepted; the listener itself
/// is fine (any accept loop should go on at once after these, and pause after
/// others such as EMFILE).
pub fn is_per_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}
