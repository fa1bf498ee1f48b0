//! One accepted API connection as the server sees it: it holds a slot under
//! the connection cap until dropped, and ends itself (a read error, which
//! makes the HTTP/2 server drop it) when no request arrived within the
//! handshake timeout of its accept, or when no stream has been open for the
//! idle timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use augur_telemetry::connections::ConnectionMetrics;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

use super::frames::{Side, Streams};

/// A connection's place under the cap; frees it, counts the close and lowers
/// the open gauge when dropped.
pub(crate) struct Slot {
    metrics: Arc<ConnectionMetrics>,
    reason: &'static str,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    pub(crate) fn new(metrics: Arc<ConnectionMetrics>, permit: OwnedSemaphorePermit) -> Self {
        metrics.accepted.inc();
        metrics.open.inc();
        Slot {
            metrics,
            reason: "ended",
            _permit: permit,
        }
    }

    /// Ends the connection for `reason` (one of `CLOSE_REASONS`).
    pub(crate) fn close(mut self, reason: &'static str) {
        self.reason = reason;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.open.dec();
        self.metrics.close(self.reason);
    }
}

/// The deadlines a connection lives under.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    /// From accept to the first request (TLS handshake included).
    pub first_request: Duration,
    /// With no stream open.
    pub idle: Duration,
}

/// An accepted connection (TCP or TLS) under watch.
pub struct Watched<S> {
    inner: S,
    streams: Streams,
    slot: Option<Slot>,
    deadlines: Deadlines,
    accepted: Instant,
    /// When the last open stream closed (or the first request arrived).
    quiet_since: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, slot: Slot, deadlines: Deadlines, accepted: Instant) -> Self {
        Watched {
            inner,
            streams: Streams::default(),
            slot: Some(slot),
            deadlines,
            accepted,
            quiet_since: accepted,
            timer: Box::pin(tokio::time::sleep_until(accepted + deadlines.first_request)),
        }
    }

    fn observe(&mut self, side: Side, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let was_busy = self.streams.busy();
        let had_requested = self.streams.requested();
        self.streams.feed(side, bytes);
        // HTTP/1.1 (the console) has no streams to see: a connection is idle
        // from its last byte either way (a live page's events keep it busy).
        if self.streams.http1()
            || (was_busy && !self.streams.busy())
            || (!had_requested && self.streams.requested())
        {
            self.quiet_since = Instant::now();
        }
    }

    /// The reason to end this connection now, if its deadline passed; else
    /// arms the timer (polled with `cx`) for the next check.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        loop {
            let now = Instant::now();
            let (deadline, reason) = if !self.streams.requested() {
                (self.accepted + self.deadlines.first_request, "no_request")
            } else if self.streams.busy() {
                // Look again later: the stream may close meanwhile.
                let later = self.timer.deadline();
                (
                    if later > now {
                        later
                    } else {
                        now + self.deadlines.idle
                    },
                    "",
                )
            } else {
                (self.quiet_since + self.deadlines.idle, "idle")
            };
            if deadline <= now && !reason.is_empty() {
                return Some(reason);
            }
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return None;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.observe(Side::Client, &buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.expired(cx) {
                Some(reason) => {
                    if let Some(slot) = this.slot.take() {
                        tracing::debug!(reason, "closing an API connection");
                        slot.close(reason);
                    }
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connection closed: {reason}"),
                    )))
                }
                None => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.observe(Side::Server, &buf[..n.min(buf.len())]);
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// tonic reads the peer address (and, over TLS, the client certificates) of
/// the connection underneath.
impl<S: Connected> Connected for Watched<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
