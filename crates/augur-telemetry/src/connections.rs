//! Connections to a coordinator's API port: accepted, open, refused at the
//! connection cap, and closed (and why), so a flood of idle or half-open
//! connections shows on a dashboard before it starves the process of files.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a connection was refused or closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Reasons of `augur_api_connections_refused_total`: at the connection cap
/// (`limit`), or the accept call itself failed (`accept_error`, e.g. out of
/// file descriptors).
pub const REFUSAL_REASONS: [&str; 2] = ["limit", "accept_error"];

/// Reasons of `augur_api_connections_closed_total`, as the coordinator saw
/// them: the TLS handshake did not finish in time (`handshake_timeout`) or
/// failed (`handshake_failed`), no request arrived in time (`no_request`),
/// no stream was open for the idle timeout (`idle`), or the connection ended
/// otherwise (`ended`: the peer closed it, keep-alive pings went
/// unanswered, or the server stopped).
pub const CLOSE_REASONS: [&str; 5] = [
    "handshake_timeout",
    "handshake_failed",
    "no_request",
    "idle",
    "ended",
];

/// Connection metrics of a coordinator's API listener.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    pub accepted: Counter,
    pub open: Gauge,
    pub limit: Gauge,
    pub refused: Family<ReasonLabel, Counter>,
    pub closed: Family<ReasonLabel, Counter>,
}

impl ConnectionMetrics {
    pub(crate) fn register(r: &mut Registry) -> Self {
        let m = ConnectionMetrics::default();
        r.register(
            "augur_api_connections_accepted",
            "TCP connections accepted on the API port (under the connection cap)",
            m.accepted.clone(),
        );
        r.register(
            "augur_api_connections_open",
            "Connections open on the API port, handshaking or established",
            m.open.clone(),
        );
        r.register(
            "augur_api_connections_limit",
            "The connection cap of the API port (--max-connections or derived from the open-files limit)",
            m.limit.clone(),
        );
        r.register(
            "augur_api_connections_refused",
            "Connections to the API port closed at once, by reason (limit: at the connection cap; accept_error: accepting failed)",
            m.refused.clone(),
        );
        r.register(
            "augur_api_connections_closed",
            "Accepted connections that ended, by reason (handshake_timeout, handshake_failed, no_request, idle, ended)",
            m.closed.clone(),
        );
        for reason in REFUSAL_REASONS {
            let _ = m.refused.get_or_create(&ReasonLabel { reason });
        }
        for reason in CLOSE_REASONS {
            let _ = m.closed.get_or_create(&ReasonLabel { reason });
        }
        m
    }

    /// Counts a refusal; `reason` is one of [`REFUSAL_REASONS`].
    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a close; `reason` is one of [`CLOSE_REASONS`].
    pub fn close(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabel { reason }).inc();
    }
}
