//! The worker stream's edge: protobuf messages from workers decoded into the
//! core's domain inputs, and the core's messages encoded for the wire. Nothing
//! past this module sees a `pb` type of the worker protocol.

use augur_core::{JobId, WorkerId, WorkerInfo};
use augur_proto::v1 as pb;
use augur_proto::v1::coordinator_message::Kind as Out;
use augur_proto::v1::worker_message::Kind as In;

use super::state::{AttemptKey, FromWorker, ToWorker};
use crate::convert::{attempt_result, report_from_pb, spec_to_pb};

/// A worker message the edge could not turn into a domain input.
#[derive(Debug)]
pub(crate) enum Undecodable {
    /// Nothing to do with it (a hello after the first message, an empty
    /// message, a start of an attempt it cannot name).
    Ignore(&'static str),
    /// A result naming no attempt the leader could know: acknowledge it as
    /// named so the worker drops it instead of re-sending it forever.
    AckAndDrop {
        attempt: pb::AttemptRef,
        reason: String,
    },
}

fn key(attempt: &pb::AttemptRef) -> Result<AttemptKey, String> {
    let job = attempt
        .job_id
        .parse::<JobId>()
        .map_err(|e| format!("job id {:?}: {e}", attempt.job_id))?;
    Ok(AttemptKey {
        job,
        attempt: attempt.attempt,
    })
}

/// The attempts a hello or heartbeat lists (ids that do not parse are skipped:
/// no job of this cluster has them).
pub(crate) fn attempt_keys(refs: &[pb::AttemptRef]) -> Vec<AttemptKey> {
    refs.iter().filter_map(|a| key(a).ok()).collect()
}

/// Most slots a worker may offer.
pub(crate) const MAX_WORKER_SLOTS: u32 = 4096;

/// The registration a worker's hello asks for: checked here, since the
/// leader writes it. Every worker carries `node=<its id>`, so a job can be
/// pinned to one worker with `--constraint node=ID`.
pub(crate) fn announced(worker: &WorkerId, hello: &pb::Hello) -> Result<WorkerInfo, String> {
    if hello.slots == 0 || hello.slots > MAX_WORKER_SLOTS {
        return Err(format!(
            "hello.slots must be 1..={MAX_WORKER_SLOTS}, got {}",
            hello.slots
        ));
    }
    let mut labels: std::collections::BTreeMap<String, String> =
        hello.labels.clone().into_iter().collect();
    labels.insert("node".to_string(), worker.to_string());
    augur_core::spec::check_worker_labels("hello.labels", &labels).map_err(|e| e.to_string())?;
    let short = |field: &str, text: &str| {
        if text.len() > 64 || text.chars().any(char::is_control) {
            Err(format!("{field} must be at most 64 printable characters"))
        } else {
            Ok(text.to_string())
        }
    };
    Ok(WorkerInfo {
        id: worker.clone(),
        slots: hello.slots,
        labels,
        version: short("hello.version", &hello.version)?,
        executor: short("hello.executor", &hello.executor)?,
        registered_at_ms: 0,
        lease_id: 0,
        draining: hello.draining,
        capacity: hello.capacity.map(|c| augur_core::Capacity {
            cpu_millis: c.cpu_millis,
            memory_bytes: c.memory_bytes,
        }),
    })
}

/// Decodes one message from a worker's stream.
pub(crate) fn decode(msg: In, max_output_tail: usize) -> Result<FromWorker, Undecodable> {
    match msg {
        In::Started(started) => {
            let attempt = started
                .attempt
                .as_ref()
                .ok_or(Undecodable::Ignore("started without an attempt"))?;
            let attempt = key(attempt).map_err(|_| Undecodable::Ignore("started: bad job id"))?;
            Ok(FromWorker::Started {
                attempt,
                at_ms: started.started_at_ms,
            })
        }
        In::Finished(finished) => {
            let Some(raw) = finished.attempt.clone() else {
                return Err(Undecodable::Ignore("finished without an attempt"));
            };
            let attempt = key(&raw).map_err(|reason| Undecodable::AckAndDrop {
                attempt: raw.clone(),
                reason,
            })?;
            let report = report_from_pb(&finished, max_output_tail)
                .map(Box::new)
                .ok_or_else(|| format!("no known outcome (outcome field {})", finished.outcome));
            Ok(FromWorker::Finished {
                attempt,
                report,
                outcome: attempt_result(&finished),
            })
        }
        In::Heartbeat(beat) => Ok(FromWorker::Heartbeat {
            running: attempt_keys(&beat.running),
        }),
        In::Hello(_) => Err(Undecodable::Ignore("hello after the first message")),
        In::Draining(_) => Ok(FromWorker::Draining),
        In::Goodbye(_) => Ok(FromWorker::Goodbye),
    }
}

fn attempt_ref(key: AttemptKey, epoch: i64) -> pb::AttemptRef {
    pb::AttemptRef {
        job_id: key.job.to_string(),
        attempt: key.attempt,
        epoch,
    }
}

/// Encodes a message for a worker. `trace_context` goes with an assignment
/// (the `job.dispatch` span's carrier).
pub(crate) fn encode(
    msg: &ToWorker,
    node_id: &str,
    epoch: i64,
    trace_context: std::collections::HashMap<String, String>,
) -> pb::CoordinatorMessage {
    let kind = match msg {
        ToWorker::Welcome { lease_id } => Out::Welcome(pb::Welcome {
            leader: node_id.to_string(),
            epoch,
            lease_id: *lease_id,
        }),
        ToWorker::Registered(lease_id) => Out::Registered(pb::Registered {
            lease_id: *lease_id,
        }),
        ToWorker::Assign { record } => Out::Assign(pb::Assign {
            attempt: Some(pb::AttemptRef {
                job_id: record.id.to_string(),
                attempt: record.attempt,
                epoch,
            }),
            spec: Some(spec_to_pb(&record.spec)),
            trace_context,
        }),
        ToWorker::Ack(key) => Out::Ack(pb::Ack {
            attempt: Some(attempt_ref(*key, epoch)),
        }),
        ToWorker::Cancel(key) => Out::Cancel(pb::Cancel {
            attempt: Some(attempt_ref(*key, epoch)),
        }),
        ToWorker::Drain => Out::Drain(pb::Drain {}),
    };
    pb::CoordinatorMessage { kind: Some(kind) }
}

/// The acknowledgement of a result the edge refused to decode.
pub(crate) fn raw_ack(attempt: pb::AttemptRef) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage {
        kind: Some(Out::Ack(pb::Ack {
            attempt: Some(attempt),
        })),
    }
}
