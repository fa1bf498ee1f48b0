//! OpenTelemetry setup. A tracer provider is always installed, so every job gets
//! real trace and span ids (they reach the job as `TRACEPARENT` and the metrics
//! as exemplars); spans are exported over OTLP/gRPC only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` are honoured.
//!
//! Export never blocks scheduling: finished spans go through a bounded queue to
//! a background exporter task, and spans that do not fit are dropped and counted
//! (`augur_trace_spans_dropped_total`).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::TraceMetrics;

/// Spans waiting for export at most.
const QUEUE: usize = 8192;
/// Spans per export call at most.
const BATCH: usize = 512;

/// Errors setting up tracing.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// Keeps the provider alive; `shutdown` flushes what is queued (bounded).
pub struct TracingGuard {
    provider: SdkTracerProvider,
    exporter_task: Option<(mpsc::Sender<SpanData>, JoinHandle<()>)>,
}

impl TracingGuard {
    /// Flushes queued spans for at most `timeout`, then stops exporting.
    pub async fn shutdown(self, timeout: Duration) {
        let TracingGuard {
            provider,
            exporter_task,
        } = self;
        let _ = provider.shutdown();
        if let Some((sender, task)) = exporter_task {
            drop(sender);
            let _ = tokio::time::timeout(timeout, task).await;
        }
    }
}

#[derive(Debug)]
struct BoundedProcessor {
    queue: mpsc::Sender<SpanData>,
    metrics: Arc<TraceMetrics>,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(span).is_err() {
            self.metrics.spans_dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<SpanData>,
    metrics: Arc<TraceMetrics>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
        let closed = matches!(first, Ok(None));
        if let Ok(Some(span)) = first {
            batch.push(span);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let sent = std::mem::take(&mut batch);
            match tokio::time::timeout(Duration::from_secs(10), exporter.export(sent)).await {
                Ok(Ok(())) => {
                    metrics.spans_exported.inc_by(n);
                }
                Ok(Err(e)) => {
                    metrics.spans_dropped.inc_by(n);
                    tracing::debug!(error = %e, spans = n, "span export failed");
                }
                Err(_) => {
                    metrics.spans_dropped.inc_by(n);
                    tracing::debug!(spans = n, "span export timed out");
                }
            }
        }
        if closed {
            let _ = exporter.shutdown();
            return;
        }
    }
}

/// Installs the global tracer provider and W3C trace-context propagator;
/// `endpoint` overrides `OTEL_EXPORTER_OTLP_ENDPOINT`. Must be called inside a
/// tokio runtime.
pub fn init(
    default_service_name: &str,
    endpoint: Option<&str>,
    metrics: Arc<TraceMetrics>,
) -> Result<TracingGuard, TracingError> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none_or(|v| v.is_empty()) {
        resource = resource.with_service_name(default_service_name.to_string());
    }
    let resource = resource.build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut exporter_task = None;
    let endpoint = match endpoint {
        Some(e) => e.to_string(),
        None => std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default(),
    };
    if !endpoint.trim().is_empty() {
        use opentelemetry_otlp::WithExportConfig;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TracingError::Exporter(e.to_string()))?;
        exporter.set_resource(&resource);
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(export_loop(exporter, rx, metrics.clone()));
        builder = builder.with_span_processor(BoundedProcessor {
            queue: tx.clone(),
            metrics,
        });
        exporter_task = Some((tx, task));
        tracing::info!(endpoint = %endpoint, "exporting traces over OTLP/gRPC");
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(TracingGuard {
        provider,
        exporter_task,
    })
}

impl From<TracingError> for OTelSdkError {
    fn from(e: TracingError) -> Self {
        OTelSdkError::InternalFailure(e.to_string())
    }
}
