//! Importers of recorded runs: Augur's own JSONL (`augur runs export`) and
//! Standard Workload Format traces (Parallel Workloads Archive).
//!
//! Both take a reader and return records or an error naming the line; neither
//! panics on hostile input (every number is checked for range, every field
//! count for length). [`maybe_gunzip`] transparently decompresses gzip input.
//!
//! SWF mapping (18 whitespace-separated fields, `-1` = unknown, `;` comments):
//!
//! | SWF field | run record |
//! |---|---|
//! | job number | `job_id = "swf-<n>"` |
//! | submit time (+ `UnixStartTime` header) | `submitted_at_ms` |
//! | wait time | `queue_wait_ms` (unknown → 0) |
//! | run time | `runtime_ms` (unknown → the job is skipped and counted; under the 1 s resolution → 1 s) |
//! | requested processors (else allocated) | `requested_cpu_millis` (1000 per processor): a feature, not a slot demand |
//! | requested time | `requested_time_s` |
//! | requested memory (KB) | `requested_memory_bytes` |
//! | status | `outcome` (1 succeeded, 0 failed, 5 cancelled) |
//! | user | `user = "u<id>"` |
//! | group, queue, partition | labels `group`, `queue`, `partition` |
//! | application | the job class, `name = "app<id>"` |
//!
//! The job finishes at submit + wait + run time: that is when its runtime may
//! enter the history of a causal replay. Every imported job asks for one slot.

use std::io::{BufRead, BufReader, Read};

use augur_core::run::RUN_RECORD_VERSION;
use augur_core::RunRecord;

/// Resolution of SWF run times, seconds.
const SWF_RESOLUTION_S: f64 = 1.0;

/// Why a trace could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("reading line {line}: {message}")]
    Io { line: usize, message: String },
}

/// An imported SWF trace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SwfTrace {
    pub records: Vec<RunRecord>,
    /// Jobs left out because their run time is unknown.
    pub skipped: usize,
    /// `UnixStartTime` from the header (0 if absent).
    pub unix_start_time: i64,
}

/// Largest time value accepted, in seconds (about 3000 years): keeps every
/// millisecond computation far from overflow.
const MAX_SECONDS: f64 = 1e11;

/// Wraps `reader` in a gzip decoder if its first bytes are the gzip magic.
pub fn maybe_gunzip<'a, R: BufRead + 'a>(mut reader: R) -> std::io::Result<Box<dyn BufRead + 'a>> {
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            reader,
        ))))
    } else {
        Ok(Box::new(reader))
    }
}

/// Longest line accepted (a run record with many labels and hints is a few
/// KiB): a file without newlines — or a gzip bomb — is refused after this
/// much, not read into memory whole.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The lines of `reader`, numbered from 1, each at most [`MAX_LINE_BYTES`]
/// (`\n` or `\r\n` endings); stops after the first error.
fn lines<R: BufRead>(mut reader: R) -> impl Iterator<Item = (usize, Result<String, ImportError>)> {
    let mut number = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        number += 1;
        let mut buf = Vec::new();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf);
        let result = match read {
            Ok(0) => return None,
            Ok(_) if buf.len() > MAX_LINE_BYTES && !buf.ends_with(b"\n") => {
                Err(ImportError::Line {
                    line: number,
                    reason: format!("is longer than {MAX_LINE_BYTES} bytes"),
                })
            }
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                String::from_utf8(buf).map_err(|_| ImportError::Line {
                    line: number,
                    reason: "is not UTF-8".into(),
                })
            }
            Err(e) => Err(ImportError::Io {
                line: number,
                message: e.to_string(),
            }),
        };
        failed = result.is_err();
        Some((number, result))
    })
}

/// Reads a JSONL file of [`RunRecord`]s (one JSON object a line; blank lines
/// skipped).
pub fn parse_jsonl<R: BufRead>(reader: R) -> Result<Vec<RunRecord>, ImportError> {
    let mut records = Vec::new();
    for (number, line) in lines(reader) {
        let line = line?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let record: RunRecord = serde_json::from_str(text).map_err(|e| ImportError::Line {
            line: number,
            reason: format!("not a run record: {e}"),
        })?;
        if record.v != RUN_RECORD_VERSION {
            return Err(ImportError::Line {
                line: number,
                reason: format!(
                    "run record version {} is not supported (expected {RUN_RECORD_VERSION})",
                    record.v
                ),
            });
        }
        if record.finished_at_ms < record.submitted_at_ms {
            return Err(ImportError::Line {
                line: number,
                reason: "finished_at_ms is before submitted_at_ms".into(),
            });
        }
        records.push(record);
    }
    Ok(records)
}

/// Reads a Standard Workload Format trace.
pub fn parse_swf<R: BufRead>(reader: R) -> Result<SwfTrace, ImportError> {
    let mut trace = SwfTrace::default();
    for (number, line) in lines(reader) {
        let line = line?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if let Some(comment) = text.strip_prefix(';') {
            if let Some(value) = comment.trim().strip_prefix("UnixStartTime:") {
                let start = value.trim().parse::<i64>().map_err(|_| ImportError::Line {
                    line: number,
                    reason: format!("UnixStartTime {:?} is not an integer", value.trim()),
                })?;
                if !(0..=MAX_SECONDS as i64).contains(&start) {
                    return Err(ImportError::Line {
                        line: number,
                        reason: format!("UnixStartTime {start} is out of range"),
                    });
                }
                trace.unix_start_time = start;
            }
            continue;
        }
        match swf_record(text, trace.unix_start_time).map_err(|reason| ImportError::Line {
            line: number,
            reason,
        })? {
            Some(record) => trace.records.push(record),
            None => trace.skipped += 1,
        }
    }
    Ok(trace)
}

/// One SWF job line; `Ok(None)` when the run time is unknown.
fn swf_record(text: &str, unix_start: i64) -> Result<Option<RunRecord>, String> {
    let mut fields = [0f64; 18];
    let mut count = 0;
    for (i, token) in text.split_whitespace().enumerate() {
        if i >= fields.len() {
            return Err(format!(
                "has more than 18 fields (found {})",
                text.split_whitespace().count()
            ));
        }
        let value: f64 = token
            .parse()
            .map_err(|_| format!("field {} ({token:?}) is not a number", i + 1))?;
        if !value.is_finite() || value.abs() > MAX_SECONDS {
            return Err(format!("field {} ({token:?}) is out of range", i + 1));
        }
        fields[i] = value;
        count += 1;
    }
    if count != fields.len() {
        return Err(format!("has {count} fields, SWF needs 18"));
    }
    let known = |v: f64| (v >= 0.0).then_some(v);
    let id = |v: f64| known(v).map(|v| v as i64);
    let job = id(fields[0]).ok_or("job number is unknown")?;
    let submit = known(fields[1]).ok_or("submit time is unknown")?;
    let Some(run) = known(fields[3]) else {
        return Ok(None);
    };
    let wait = known(fields[2]).unwrap_or(0.0);
    let processors = known(fields[7])
        .filter(|p| *p >= 1.0)
        .or(known(fields[4]).filter(|p| *p >= 1.0))
        .unwrap_or(0.0);
    let requested_time = known(fields[8]).filter(|t| *t > 0.0);
    let memory_kb = known(fields[9]).unwrap_or(0.0);
    let outcome = match id(fields[10]) {
        Some(1) => "succeeded".to_string(),
        Some(0) => "failed".to_string(),
        Some(5) => "cancelled".to_string(),
        Some(n) => format!("status_{n}"),
        None => "unknown".to_string(),
    };
    let mut labels = std::collections::BTreeMap::new();
    for (key, field) in [("group", 12), ("queue", 14), ("partition", 15)] {
        if let Some(v) = id(fields[field]) {
            labels.insert(key.to_string(), v.to_string());
        }
    }
    let submitted_at_ms = unix_start * 1000 + (submit * 1000.0) as i64;
    let queue_wait_ms = (wait * 1000.0) as u64;
    // SWF records whole seconds: a 0 means "under a second", read as 1 s.
    let runtime_ms = (run.max(SWF_RESOLUTION_S) * 1000.0) as u64;
    Ok(Some(RunRecord {
        v: RUN_RECORD_VERSION,
        job_id: format!("swf-{job}"),
        name: id(fields[13])
            .map(|a| format!("app{a}"))
            .unwrap_or_default(),
        command: String::new(),
        user: id(fields[11]).map(|u| format!("u{u}")).unwrap_or_default(),
        labels,
        priority: 0,
        requested_slots: 1,
        requested_cpu_millis: (processors * 1000.0) as u64,
        requested_memory_bytes: (memory_kb * 1024.0) as u64,
        hints: Default::default(),
        requested_time_s: requested_time,
        submitted_at_ms,
        worker_id: String::new(),
        worker_speed: 1.0,
        queue_wait_ms,
        runtime_ms,
        outcome,
        attempt: 1,
        finished_at_ms: submitted_at_ms + queue_wait_ms as i64 + runtime_ms as i64,
        // SWF's memory field is the average per processor, not a peak.
        peak_memory_bytes: 0,
        cgroup_cpu_us: 0,
    }))
}

/// Reads all of `reader` (gzip or plain) as SWF.
pub fn read_swf<R: Read>(reader: R) -> Result<SwfTrace, ImportError> {
    let reader = maybe_gunzip(BufReader::new(reader)).map_err(|e| ImportError::Io {
        line: 0,
        message: e.to_string(),
    })?;
    parse_swf(reader)
}

/// Reads all of `reader` (gzip or plain) as JSONL run records.
pub fn read_jsonl<R: Read>(reader: R) -> Result<Vec<RunRecord>, ImportError> {
    let reader = maybe_gunzip(BufReader::new(reader)).map_err(|e| ImportError::Io {
        line: 0,
        message: e.to_string(),
    })?;
    parse_jsonl(reader)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SAMPLE: &str = "; Version: 2.2\n; UnixStartTime: 1000\n;\n\
        1 0 10 100 4 -1 -1 4 600 -1 1 3 2 7 1 -1 -1 -1\n\
        2 5 -1 -1 1 -1 -1 -1 -1 -1 1 3 2 -1 -1 -1 -1 -1\n\
        \n\
        3 60 0 2.5 1 -1 -1 -1 -1 -1 0 4 -1 -1 -1 -1 -1 -1\n";

    #[test]
    fn swf_fields_map_to_features() {
        let trace = parse_swf(SAMPLE.as_bytes()).expect("parses");
        assert_eq!(trace.unix_start_time, 1000);
        assert_eq!(trace.skipped, 1);
        assert_eq!(trace.records.len(), 2);
        let first = &trace.records[0];
        assert_eq!(first.job_id, "swf-1");
        assert_eq!(first.user, "u3");
        assert_eq!(first.name, "app7");
        assert_eq!(first.labels.get("group").map(String::as_str), Some("2"));
        assert_eq!(first.labels.get("queue").map(String::as_str), Some("1"));
        assert_eq!(first.requested_cpu_millis, 4000);
        assert_eq!(first.requested_time_s, Some(600.0));
        assert_eq!(first.submitted_at_ms, 1_000_000);
        assert_eq!(first.finished_at_ms, 1_000_000 + 110_000);
        let third = &trace.records[1];
        assert_eq!(third.runtime_ms, 2500);
        assert_eq!(third.outcome, "failed");
        assert_eq!(third.name, "");
        assert_eq!(third.requested_time_s, None);
    }

    #[test]
    fn overlong_lines_are_refused_without_reading_them_whole() {
        // A gzip bomb: 64 MiB of spaces without a newline, about 64 KiB packed.
        let mut packed = Vec::new();
        {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(&mut packed, flate2::Compression::best());
            let block = vec![b' '; 1 << 20];
            for _ in 0..64 {
                gz.write_all(&block).expect("compresses");
            }
            gz.finish().expect("compresses");
        }
        let reader = maybe_gunzip(packed.as_slice()).expect("gzip");
        let err = parse_swf(reader).expect_err("one 64 MiB line");
        assert_eq!(
            err,
            ImportError::Line {
                line: 1,
                reason: format!("is longer than {MAX_LINE_BYTES} bytes")
            }
        );
        let long = format!("{}\n", "x".repeat(MAX_LINE_BYTES + 1));
        assert!(matches!(
            parse_jsonl(long.as_bytes()),
            Err(ImportError::Line { line: 1, .. })
        ));
        // A line of exactly the limit, CRLF endings and invalid UTF-8.
        let exact = format!("{}\r\n", " ".repeat(MAX_LINE_BYTES - 1));
        assert_eq!(parse_jsonl(exact.as_bytes()), Ok(Vec::new()));
        assert!(matches!(
            parse_jsonl(&b"\n\xff\xfe\n"[..]),
            Err(ImportError::Line { line: 2, .. })
        ));
    }

    #[test]
    fn swf_errors_name_the_line() {
        let err = parse_swf("; c\n1 0 0 1 1 -1 -1 1 1 -1 1 1 1 1 1 1 -1\n".as_bytes())
            .expect_err("17 fields");
        assert_eq!(
            err,
            ImportError::Line {
                line: 2,
                reason: "has 17 fields, SWF needs 18".into()
            }
        );
        let err = parse_swf("1 0 0 x 1 -1 -1 1 1 -1 1 1 1 1 1 1 -1 -1\n".as_bytes())
            .expect_err("not a number");
        assert!(err.to_string().starts_with("line 1: field 4"), "{err}");
        let err = parse_swf("1 0 0 1e300 1 -1 -1 1 1 -1 1 1 1 1 1 1 -1 -1\n".as_bytes())
            .expect_err("huge");
        assert!(err.to_string().contains("out of range"), "{err}");
        let err = parse_swf("; UnixStartTime: -5\n".as_bytes()).expect_err("negative start");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn jsonl_round_trips_and_checks_versions() {
        let trace = parse_swf(SAMPLE.as_bytes()).expect("parses");
        let text: String = trace
            .records
            .iter()
            .map(|r| serde_json::to_string(r).expect("serialises") + "\n")
            .collect();
        assert_eq!(parse_jsonl(text.as_bytes()).expect("parses"), trace.records);
        let bad = text.replacen("\"v\":1", "\"v\":2", 1);
        assert!(matches!(
            parse_jsonl(bad.as_bytes()),
            Err(ImportError::Line { line: 1, .. })
        ));
        assert!(matches!(
            parse_jsonl("\n{\"v\":1}\n".as_bytes()),
            Err(ImportError::Line { line: 2, .. })
        ));
    }

    #[test]
    fn gzip_is_detected() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(SAMPLE.as_bytes()).expect("compresses");
        let gz = encoder.finish().expect("compresses");
        assert_eq!(read_swf(&gz[..]).expect("parses").records.len(), 2);
        assert_eq!(
            read_swf(SAMPLE.as_bytes()).expect("parses").records.len(),
            2
        );
        // Truncated gzip: an error, not a panic.
        assert!(read_swf(&gz[..gz.len() / 2]).is_err());
    }

    proptest! {
        /// Hostile input never panics: arbitrary bytes give records or an error.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = read_swf(&bytes[..]);
            let _ = read_jsonl(&bytes[..]);
        }

        /// Lines of numeric-looking tokens (including extreme ones) never panic.
        #[test]
        fn arbitrary_numeric_lines_never_panic(
            tokens in proptest::collection::vec(
                prop_oneof![
                    Just("-1".to_string()), Just("1e308".to_string()), Just("NaN".to_string()),
                    Just("-inf".to_string()), Just("99999999999".to_string()),
                    any::<i64>().prop_map(|v| v.to_string()), any::<f64>().prop_map(|v| v.to_string()),
                ],
                0..22,
            )
        ) {
            let line = tokens.join(" ");
            let _ = parse_swf(line.as_bytes());
        }
    }
}
