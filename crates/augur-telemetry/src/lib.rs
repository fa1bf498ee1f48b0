//! Telemetry plumbing shared by coordinators and workers: the Prometheus metrics
//! (`metrics`), their HTTP endpoint with content negotiation (`http`,
//! `exposition`; API connections in `connections`), OpenTelemetry setup (`otel`) and job trace context (`context`). No business logic: callers decide what to record.

pub mod connections;
pub mod context;
pub mod exposition;
pub mod http;
pub mod metrics;
pub mod otel;

pub use metrics::{exemplar, CoordinatorMetrics, Metrics, TraceExemplar, WorkerMetrics};
pub use opentelemetry::trace::SpanKind;
pub use opentelemetry::KeyValue;
