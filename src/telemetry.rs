//! Logging: tracing, as JSON lines when stdout is not a terminal (or when
//! asked), human-readable otherwise. `RUST_LOG` overrides the configured level.
//! Metrics: the Prometheus recorder behind `/metrics`, kept in shape.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    } else {
        builder.try_init()
    };
}

/// How often the histogram samples recorded since the last time are folded
/// into their summaries.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The recorder behind `/metrics`, with its upkeep running on the current
/// runtime. `build_recorder` (unlike the exporter's own HTTP listener)
/// leaves the upkeep to its owner: without it every request's duration stays
/// queued until the next scrape, and a service that nobody scrapes grows by
/// about 16 bytes per request, without bound (`bench/run`, the R7
/// "sustained" row).
pub fn metrics_recorder() -> Arc<PrometheusRecorder> {
    let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
    let handle = recorder.handle();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(METRICS_UPKEEP);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            handle.run_upkeep();
        }
    });
    recorder
}
