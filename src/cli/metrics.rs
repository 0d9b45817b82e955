//! `--metrics ADDR`: Prometheus metrics of the running transfer, encoded by `prometheus-client`.
//!
//! ```text
//! GET /metrics   text format 0.0.4, read from the run's live counters at each scrape:
//!   pump_items_read_total, pump_items_written_total, pump_items_skipped_total,
//!   pump_items_failed_total, pump_items_filtered_total, pump_bytes_read_total,
//!   pump_bytes_written_total, pump_retries_total, pump_batches_total,
//!   pump_messages_total{op="mutation|deletion|expiration",outcome="received|written|skipped|failed"},
//!   pump_items_expected, pump_elapsed_seconds,
//!   pump_vbucket_high_seqno{vbucket}, pump_vbucket_confirmed_seqno{vbucket}, pump_vbucket_lag{vbucket}
//! ```

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use pump::{Op, Stats};
use tokio_util::sync::CancellationToken;

use super::Failure;

/// Reads the run's counters at each scrape.
#[derive(Debug)]
struct RunCollector(Arc<Stats>);

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for RunCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        counter(
            &mut e,
            "pump_items_read",
            "Items the source sent that passed the filters",
            s.items_read,
        )?;
        counter(
            &mut e,
            "pump_items_written",
            "Items the sink confirmed",
            s.items_written,
        )?;
        counter(
            &mut e,
            "pump_items_skipped",
            "Items the destination declined harmlessly",
            s.skipped,
        )?;
        counter(
            &mut e,
            "pump_items_failed",
            "Items that could not be written",
            s.failed,
        )?;
        counter(
            &mut e,
            "pump_items_filtered",
            "Items the filters left out",
            s.filtered,
        )?;
        counter(
            &mut e,
            "pump_bytes_read",
            "Key, value and metadata bytes sent by the source",
            s.bytes_read,
        )?;
        counter(
            &mut e,
            "pump_bytes_written",
            "Key, value and metadata bytes written",
            s.bytes_written,
        )?;
        counter(
            &mut e,
            "pump_retries",
            "Retries of temporary failures and reconnects",
            s.retries,
        )?;
        counter(&mut e, "pump_batches", "Batches confirmed", s.batches)?;
        {
            let mut m = e.encode_descriptor(
                "pump_messages",
                "Messages per op and outcome",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for op in Op::ALL {
                let c = s.ops[op.index()];
                let name = match op {
                    Op::Mutation | Op::Control(_) => "mutation",
                    Op::Deletion => "deletion",
                    Op::Expiration => "expiration",
                };
                for (outcome, v) in [
                    ("received", c.received),
                    ("written", c.written),
                    ("skipped", c.skipped),
                    ("failed", c.failed),
                ] {
                    let labels = [("op", name), ("outcome", outcome)];
                    ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        gauge(
            &mut e,
            "pump_items_expected",
            "Items the source expects to send (0: unknown)",
            s.expected as f64,
        )?;
        gauge(
            &mut e,
            "pump_elapsed_seconds",
            "Seconds since the transfer started",
            self.0.elapsed().as_secs_f64(),
        )?;
        let vbs = self.0.vbuckets();
        for (name, help, pick) in [
            (
                "pump_vbucket_high_seqno",
                "The seqno a vbucket's stream runs to",
                (|p: &pump::VbProgress| p.high) as fn(&pump::VbProgress) -> u64,
            ),
            (
                "pump_vbucket_confirmed_seqno",
                "The highest seqno of a vbucket the sink confirmed",
                |p: &pump::VbProgress| p.confirmed,
            ),
            (
                "pump_vbucket_lag",
                "Seqnos of a vbucket still to confirm",
                |p: &pump::VbProgress| p.lag(),
            ),
        ] {
            if vbs.is_empty() {
                break;
            }
            let mut m = e.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (vb, p) in &vbs {
                let labels = [("vbucket", vb.to_string())];
                ConstGauge::new(pick(p) as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The metrics server of a run.
pub struct MetricsServer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Stops serving.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Binds `addr` (a port in use is named) and serves `/metrics` until stopped.
pub async fn serve(addr: &str, stats: Arc<Stats>) -> Result<MetricsServer, Failure> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Usage(format!("--metrics {addr}: cannot listen: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::Failed(format!("--metrics {addr}: {e}")))?;
    eprintln!("metrics on http://{bound}/metrics");
    let mut registry = Registry::default();
    registry.register_collector(Box::new(RunCollector(stats)));
    let registry = Arc::new(registry);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                match prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
                    Ok(()) => (
                        [(
                            header::CONTENT_TYPE,
                            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                        )],
                        text,
                    )
                        .into_response(),
                    Err(e) => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        format!("encoding failed: {e}"),
                    )
                        .into_response(),
                }
            }
        }),
    );
    let stop = CancellationToken::new();
    let until = stop.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { until.cancelled().await })
            .await;
    });
    Ok(MetricsServer { stop, task })
}
