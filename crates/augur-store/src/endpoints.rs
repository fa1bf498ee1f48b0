//! The etcd client's endpoints, kept to the members that answer.
//!
//! etcd-client sends every request through one tonic balanced channel over all
//! its endpoints (tower's power-of-two-choices). There a connection whose connect
//! fails *at once* (the member's name no longer resolves, as a stopped
//! container's under Docker's DNS, or its port refuses) counts as ready: it
//! keeps the connect error and hands it to the next request routed to it, then
//! fails the same way again. So while one member of three is down, about one
//! request in three fails at once however healthy the other two are.
//!
//! Here the client's channel holds only the members known to answer. Each
//! endpoint is watched through the gRPC health service every etcd member serves
//! on its client port (`grpc.health.v1.Health/Watch`, over the client's own TLS
//! settings): a member whose watch cannot be opened, ends and cannot be opened
//! again, or reports anything but `SERVING`, leaves the channel, and comes
//! back once its watch answers again. When no member is known to answer, every
//! endpoint is in the channel, so requests fail with etcd's own error (and the
//! callers' breakers and retries see it) rather than wait for a member.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::Duration;

use etcd_client::{BalancedChannelBuilder, Channel as EtcdChannel};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tracing::{debug, info, warn, Instrument};

/// How long opening a member's health watch may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a new client waits for a first member to answer before it lets
/// requests go to every endpoint. Each first probe ends within
/// [`PROBE_TIMEOUT`]; this only bounds the wait if one does not.
const FIRST_ANSWER_GRACE: Duration = Duration::from_millis(3_500);
/// Pause before probing a down member again, doubled per failure up to
/// [`RETRY_MAX`], so a name that takes long to fail does not pile up lookups.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// HTTP/2 pings on the probe's connection: they notice a frozen member. Not
/// more often than etcd's `--grpc-keepalive-min-time` (5 s by default) allows.
const PROBE_PING_INTERVAL: Duration = Duration::from_secs(10);
const PROBE_PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Capacity of the endpoint change queues (as etcd-client's own).
const CHANGES_CAPACITY: usize = 64;

/// A balanced channel for [`etcd_client::Client::connect_with_balanced_channel`]
/// whose endpoints are health-tracked as the module describes. Made by
/// [`HealthTrackedChannel::spawn`], which starts the tracking task: the task
/// ends when the last client made with the channel is dropped.
pub(crate) struct HealthTrackedChannel {
    channel: Channel,
    changes: mpsc::Sender<Change<Uri, Endpoint>>,
}

impl HealthTrackedChannel {
    pub(crate) fn spawn() -> Self {
        let (channel, balance) = Channel::balance_channel::<Uri>(CHANGES_CAPACITY);
        let (changes, requested) = mpsc::channel(CHANGES_CAPACITY);
        // Fate: ends when every client handle (holding `changes`) or the
        // balanced channel is gone; the probes end with it.
        tokio::spawn(track(requested, balance).instrument(tracing::info_span!("etcd_endpoints")));
        HealthTrackedChannel { channel, changes }
    }
}

impl BalancedChannelBuilder for HealthTrackedChannel {
    type Error = tonic::transport::Error;

    fn balanced_channel(
        self,
        _buffer_size: usize,
    ) -> Result<(EtcdChannel, mpsc::Sender<Change<Uri, Endpoint>>), Self::Error> {
        Ok((EtcdChannel::Tonic(self.channel), self.changes))
    }
}

/// What is known of one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// Not probed yet.
    Unknown,
    /// Its health watch says `SERVING`.
    Up,
    /// Unreachable, or not serving.
    Down,
}

/// The endpoints requests may go to: the members known to be up; when none is,
/// every endpoint, so that requests fail with etcd's own error instead of
/// waiting for a member. `None` while that cannot be decided yet: no member
/// is up, some have not answered a first probe, and the client is still in its
/// first moments (`settled` false).
pub(crate) fn balance_set<K: Clone + Eq + Hash>(
    members: impl IntoIterator<Item = (K, Health)>,
    settled: bool,
) -> Option<HashSet<K>> {
    let members: Vec<(K, Health)> = members.into_iter().collect();
    let up: HashSet<K> = members
        .iter()
        .filter(|(_, health)| *health == Health::Up)
        .map(|(key, _)| key.clone())
        .collect();
    if !up.is_empty() {
        return Some(up);
    }
    if !settled && members.iter().any(|(_, h)| *h == Health::Unknown) {
        return None;
    }
    Some(members.into_iter().map(|(key, _)| key).collect())
}

/// One endpoint the client asked for.
struct Member {
    endpoint: Endpoint,
    health: Health,
    /// Tells reports of this endpoint's probe from those of an earlier one
    /// under the same URI (an endpoint inserted again).
    probe_id: u64,
    _probe: DropGuard,
}

/// A probe's finding.
struct Report {
    uri: Uri,
    probe_id: u64,
    health: Health,
    reason: String,
}

/// The channel's side: which endpoints exist, what is known of each, and which
/// the balanced channel holds.
struct Tracker {
    members: HashMap<Uri, Member>,
    /// The endpoints in the balanced channel.
    published: HashSet<Uri>,
    /// The balanced channel's endpoint changes.
    balance: mpsc::Sender<Change<Uri, Endpoint>>,
    reports: mpsc::Sender<Report>,
    next_probe_id: u64,
    /// Past the client's first moments: a set may be published without
    /// waiting for first answers.
    settled: bool,
}

/// The balanced channel is gone (every client with it was dropped).
struct ChannelClosed;

async fn track(
    mut requested: mpsc::Receiver<Change<Uri, Endpoint>>,
    balance: mpsc::Sender<Change<Uri, Endpoint>>,
) {
    let (reports_tx, mut reports) = mpsc::channel::<Report>(CHANGES_CAPACITY);
    let mut tracker = Tracker {
        members: HashMap::new(),
        published: HashSet::new(),
        balance: balance.clone(),
        reports: reports_tx,
        next_probe_id: 0,
        settled: false,
    };
    let grace = tokio::time::sleep(FIRST_ANSWER_GRACE);
    tokio::pin!(grace);
    loop {
        let applied = tokio::select! {
            change = requested.recv() => match change {
                // Every client handle is gone.
                None => return,
                Some(Change::Insert(uri, endpoint)) => tracker.insert(uri, endpoint).await,
                Some(Change::Remove(uri)) => {
                    tracker.members.remove(&uri);
                    Ok(())
                }
            },
            Some(report) = reports.recv() => {
                tracker.record(report);
                Ok(())
            }
            () = &mut grace, if !tracker.settled => {
                tracker.settled = true;
                Ok(())
            }
            () = balance.closed() => return,
        };
        if applied.is_err() || tracker.publish().await.is_err() {
            return;
        }
    }
}

impl Tracker {
    /// A new endpoint: its probe starts; requests go to it once it answers.
    async fn insert(&mut self, uri: Uri, endpoint: Endpoint) -> Result<(), ChannelClosed> {
        self.next_probe_id += 1;
        let stop = CancellationToken::new();
        let span = tracing::info_span!("etcd_endpoint_probe", endpoint = %uri);
        // Fate: ends when `stop` fires (this member is removed or replaced, or
        // the tracker ends) or the tracker stops listening.
        tokio::spawn(
            probe(
                uri.clone(),
                endpoint.clone(),
                self.next_probe_id,
                self.reports.clone(),
                stop.clone(),
            )
            .instrument(span),
        );
        // An endpoint inserted again replaces the old one in the channel too
        // (it may carry other settings).
        if self.published.contains(&uri) {
            self.send(Change::Insert(uri.clone(), endpoint.clone()))
                .await?;
        }
        let member = Member {
            endpoint,
            health: Health::Unknown,
            probe_id: self.next_probe_id,
            _probe: stop.drop_guard(),
        };
        self.members.insert(uri, member);
        Ok(())
    }

    /// A probe's finding about its member (ignored if the member has since
    /// been removed or replaced).
    fn record(&mut self, report: Report) {
        let Some(member) = self.members.get_mut(&report.uri) else {
            return;
        };
        if member.probe_id != report.probe_id || member.health == report.health {
            return;
        }
        log_transition(&report.uri, member.health, report.health, &report.reason);
        member.health = report.health;
    }

    /// Brings the balanced channel to [`balance_set`] of what is known now.
    async fn publish(&mut self) -> Result<(), ChannelClosed> {
        let health = self.members.iter().map(|(uri, m)| (uri.clone(), m.health));
        let Some(wanted) = balance_set(health, self.settled) else {
            return Ok(());
        };
        self.settled = true;
        // Insertions first, so the channel is never left without an endpoint.
        for uri in wanted.difference(&self.published) {
            if let Some(member) = self.members.get(uri) {
                let change = Change::Insert(uri.clone(), member.endpoint.clone());
                self.send(change).await?;
            }
        }
        for uri in self.published.difference(&wanted) {
            self.send(Change::Remove(uri.clone())).await?;
        }
        self.published = wanted;
        Ok(())
    }

    async fn send(&self, change: Change<Uri, Endpoint>) -> Result<(), ChannelClosed> {
        self.balance.send(change).await.map_err(|_| ChannelClosed)
    }
}

fn log_transition(uri: &Uri, from: Health, to: Health, reason: &str) {
    match (from, to) {
        (Health::Down, Health::Up) => {
            info!(endpoint = %uri, "etcd member answers again; requests may go to it")
        }
        (_, Health::Down) => warn!(
            endpoint = %uri,
            reason,
            "etcd member does not answer; requests go to the others while any answers"
        ),
        _ => debug!(endpoint = %uri, health = ?to, "etcd member probed"),
    }
}

/// How one health watch ended.
enum WatchEnd {
    /// It could not be opened: the member is down (or frozen).
    Failed(String),
    /// It was open and ended; opening it again tells whether the member is gone.
    Ended(String),
    /// The member answers gRPC but has no health watch: reachable, and all
    /// this probe can tell.
    Unsupported,
}

/// Watches one endpoint's health until `stop` fires or the tracker is gone.
async fn probe(
    uri: Uri,
    endpoint: Endpoint,
    probe_id: u64,
    reports: mpsc::Sender<Report>,
    stop: CancellationToken,
) {
    let endpoint = endpoint
        .http2_keep_alive_interval(PROBE_PING_INTERVAL)
        .keep_alive_timeout(PROBE_PING_TIMEOUT)
        .keep_alive_while_idle(true);
    let mut client = HealthClient::new(endpoint.connect_lazy());
    let report = |health: Health, reason: String| {
        let report = Report {
            uri: uri.clone(),
            probe_id,
            health,
            reason,
        };
        let reports = reports.clone();
        async move { reports.send(report).await.is_ok() }
    };
    let mut retry = RETRY_MIN;
    loop {
        let opened = Instant::now();
        let end = tokio::select! {
            () = stop.cancelled() => return,
            end = watch_health(&mut client, &report) => end,
        };
        let Some(end) = end else { return };
        let (health, reason, pause) = match end {
            // A watch that lived a while and ended (the member restarted, or
            // the connection was replaced): open it again at once; if the
            // member is gone that fails, and says so.
            WatchEnd::Ended(reason) if opened.elapsed() >= RETRY_MIN => {
                debug!(%reason, "etcd health watch ended; opening it again");
                retry = RETRY_MIN;
                continue;
            }
            WatchEnd::Ended(reason) | WatchEnd::Failed(reason) => {
                let pause = retry;
                retry = (retry * 2).min(RETRY_MAX);
                (Health::Down, reason, pause)
            }
            WatchEnd::Unsupported => {
                retry = RETRY_MIN;
                (Health::Up, "no health watch".to_string(), RETRY_MAX)
            }
        };
        if !report(health, reason).await {
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Opens the health watch and reports each status it sends. `None` when the
/// tracker is gone.
async fn watch_health<F, Fut>(client: &mut HealthClient<Channel>, report: &F) -> Option<WatchEnd>
where
    F: Fn(Health, String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut stream = match tokio::time::timeout(PROBE_TIMEOUT, client.watch(request)).await {
        Err(_) => {
            return Some(WatchEnd::Failed(format!(
                "no answer within {PROBE_TIMEOUT:?}"
            )))
        }
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
            return Some(WatchEnd::Unsupported)
        }
        Ok(Err(status)) => return Some(WatchEnd::Failed(describe(&status))),
        Ok(Ok(response)) => response.into_inner(),
    };
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                let (health, reason) = if message.status == ServingStatus::Serving as i32 {
                    (Health::Up, "serving".to_string())
                } else {
                    let status = ServingStatus::try_from(message.status)
                        .map(|s| s.as_str_name().to_string())
                        .unwrap_or_else(|_| format!("status {}", message.status));
                    (Health::Down, status)
                };
                if !report(health, reason).await {
                    return None;
                }
            }
            Ok(None) => return Some(WatchEnd::Ended("stream closed".into())),
            Err(status) => return Some(WatchEnd::Ended(describe(&status))),
        }
    }
}

/// A status with its chain of sources: a connect error's cause (a failed
/// name lookup, a refused connection) is only in the sources, whose texts
/// often repeat each other ("tcp connect error" three times), so each text
/// is said once.
fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        let said = error.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &[&'static str]) -> Option<HashSet<&'static str>> {
        Some(keys.iter().copied().collect())
    }

    #[test]
    fn only_members_that_answer_take_requests() {
        let members = [("a", Health::Up), ("b", Health::Down), ("c", Health::Up)];
        assert_eq!(balance_set(members, true), set(&["a", "c"]));
        // Still probing the third: the two that answer already take requests.
        let members = [
            ("a", Health::Up),
            ("b", Health::Down),
            ("c", Health::Unknown),
        ];
        assert_eq!(balance_set(members, false), set(&["a"]));
    }

    #[test]
    fn when_none_answers_every_endpoint_takes_requests() {
        // Requests then fail with etcd's own error rather than wait.
        let members = [("a", Health::Down), ("b", Health::Down)];
        assert_eq!(balance_set(members, false), set(&["a", "b"]));
        let members = [("a", Health::Down), ("b", Health::Unknown)];
        assert_eq!(balance_set(members, true), set(&["a", "b"]));
    }

    #[test]
    fn a_status_says_each_cause_once() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = tonic::Status::from_error(Box::new(refused));
        let text = describe(&status);
        assert_eq!(text.matches("refused").count(), 1, "{text}");
    }

    #[test]
    fn a_new_client_waits_for_first_answers() {
        let members = [("a", Health::Down), ("b", Health::Unknown)];
        assert_eq!(balance_set(members, false), None);
        let members = [("a", Health::Unknown)];
        assert_eq!(balance_set(members, false), None);
    }
}
