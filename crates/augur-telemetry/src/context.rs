//! Trace context of jobs: W3C `traceparent`/`tracestate` carried in gRPC
//! metadata, stored with each job in etcd (so a new leader continues the same
//! trace), sent to workers with each assignment and given to the job process as
//! `TRACEPARENT`/`TRACESTATE`. Job phases are recorded as spans with explicit
//! start and end times, so no span stays open while a job waits.

use std::collections::BTreeMap;
use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// W3C trace-context fields (`traceparent`, optionally `tracestate`).
pub type Carrier = BTreeMap<String, String>;

struct MapInjector<'a>(&'a mut Carrier);
impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct MapExtractor<'a>(&'a Carrier);
impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);
impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The context a carrier describes (empty if it describes none).
pub fn extract(carrier: &Carrier) -> Context {
    TraceContextPropagator::new().extract(&MapExtractor(carrier))
}

/// The caller's context from gRPC metadata.
pub fn extract_metadata(metadata: &tonic::metadata::MetadataMap) -> Context {
    TraceContextPropagator::new().extract(&MetadataExtractor(metadata))
}

/// Writes `cx` into gRPC metadata (for outgoing calls).
pub fn inject_metadata(cx: &Context, metadata: &mut tonic::metadata::MetadataMap) {
    let mut carrier = Carrier::new();
    TraceContextPropagator::new().inject_context(cx, &mut MapInjector(&mut carrier));
    for (k, v) in carrier {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
            tonic::metadata::MetadataValue::try_from(v.as_str()),
        ) {
            metadata.insert(key, value);
        }
    }
}

/// The carrier of a context.
pub fn inject(cx: &Context) -> Carrier {
    let mut carrier = Carrier::new();
    TraceContextPropagator::new().inject_context(cx, &mut MapInjector(&mut carrier));
    carrier
}

/// The trace id (32 hex digits) a carrier names, if valid.
pub fn trace_id(carrier: &Carrier) -> Option<String> {
    let cx = extract(carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// `(trace_id, span_id)` of a carrier, for log lines.
pub fn ids(carrier: &Carrier) -> (String, String) {
    let cx = extract(carrier);
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        (sc.trace_id().to_string(), sc.span_id().to_string())
    } else {
        (String::new(), String::new())
    }
}

/// A phase span in progress: started now (or at a given time) under a parent.
pub struct PhaseSpan {
    span: opentelemetry::global::BoxedSpan,
}

impl PhaseSpan {
    /// Starts `name` as a child of `parent`.
    pub fn start(
        name: &'static str,
        parent: &Context,
        kind: SpanKind,
        start: Option<SystemTime>,
        attributes: Vec<KeyValue>,
    ) -> Self {
        let tracer = opentelemetry::global::tracer("augur");
        let mut builder = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes);
        if let Some(t) = start {
            builder = builder.with_start_time(t);
        }
        PhaseSpan {
            span: builder.start_with_context(&tracer, parent),
        }
    }

    /// Starts `name` under the context a carrier describes.
    pub fn start_under(
        name: &'static str,
        parent: &Carrier,
        kind: SpanKind,
        start: Option<SystemTime>,
        attributes: Vec<KeyValue>,
    ) -> Self {
        Self::start(name, &extract(parent), kind, start, attributes)
    }

    /// This span's carrier: children anywhere can join it.
    pub fn carrier(&self) -> Carrier {
        let cx = Context::new().with_remote_span_context(self.span.span_context().clone());
        inject(&cx)
    }

    pub fn trace_id(&self) -> String {
        self.span.span_context().trace_id().to_string()
    }

    pub fn set(&mut self, attributes: Vec<KeyValue>) {
        self.span.set_attributes(attributes);
    }

    /// Marks the span failed with an `error.type`.
    pub fn fail(&mut self, error_type: &str, description: String) {
        self.span
            .set_attribute(KeyValue::new("error.type", error_type.to_string()));
        self.span.set_status(Status::error(description));
    }

    pub fn end(mut self) {
        self.span.end();
    }

    pub fn end_at(mut self, at: SystemTime) {
        self.span.end_with_timestamp(at);
    }
}

/// Records a finished phase span between two instants; returns its carrier.
pub fn record(
    name: &'static str,
    parent: &Carrier,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
) -> Carrier {
    let span = PhaseSpan::start_under(name, parent, SpanKind::Internal, Some(start), attributes);
    let carrier = span.carrier();
    span.end_at(end);
    carrier
}

/// Unix milliseconds as a `SystemTime`.
pub fn at_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}
