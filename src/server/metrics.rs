//! Prometheus metrics. The `controller_runtime_webhook_*` series use the
//! names and labels of controller-runtime's webhook metrics, so existing
//! webhook dashboards work unchanged; `agentic_webhook_*` are this product's.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::telemetry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    pub webhook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookCodeLabels {
    pub webhook: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: String,
    pub operation: String,
    /// allowed | denied | patched
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
    /// `deny`, or `warn` for a warn-only rule (`--warn-only`).
    pub enforcement: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// to_v1alpha1 | to_v1alpha2 | unchanged
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    /// `http/1.1` or `h2`, as negotiated by ALPN.
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetireLabel {
    /// `age` (--max-connection-age) or `shutdown` (SIGTERM).
    pub reason: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s: the core answers in microseconds; the tail is the transport.
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ])
}

/// The webhook server's series.
pub struct Metrics {
    pub webhook_latency: Family<WebhookLabel, Histogram>,
    pub webhook_requests: Family<WebhookCodeLabels, Counter>,
    pub webhook_in_flight: Family<WebhookLabel, Gauge>,
    pub admission: Family<AdmissionLabels, Counter>,
    pub denials: Family<RuleLabel, Counter>,
    pub conversions: Family<DirectionLabels, Counter>,
    pub conversion_failures: Counter,
    pub panics: Counter,
    pub shed: Counter,
    pub limits: Family<LimitLabel, Gauge>,
    pub connections: Family<ProtocolLabel, Counter>,
    pub connections_open: Gauge,
    pub connections_retired: Family<RetireLabel, Counter>,
    pub connections_forced: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: String,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Arc<Self> {
        let m = Metrics {
            webhook_latency: Family::<WebhookLabel, Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            ),
            webhook_requests: Family::default(),
            webhook_in_flight: Family::default(),
            admission: Family::default(),
            denials: Family::default(),
            conversions: Family::default(),
            conversion_failures: Counter::default(),
            panics: Counter::default(),
            shed: Counter::default(),
            limits: Family::default(),
            connections: Family::default(),
            connections_open: Gauge::default(),
            connections_retired: Family::default(),
            connections_forced: Counter::default(),
        };
        registry.register(
            "controller_runtime_webhook_latency_seconds",
            "Histogram of the latency of processing admission requests",
            m.webhook_latency.clone(),
        );
        registry.register(
            "controller_runtime_webhook_requests",
            "Total number of admission requests by HTTP status code",
            m.webhook_requests.clone(),
        );
        registry.register(
            "controller_runtime_webhook_requests_in_flight",
            "Current number of admission requests being served",
            m.webhook_in_flight.clone(),
        );
        registry.register(
            "agentic_webhook_admission_requests",
            "Admission reviews by webhook, operation and result",
            m.admission.clone(),
        );
        registry.register(
            "agentic_webhook_denials",
            "Denied admission reviews by rule id",
            m.denials.clone(),
        );
        registry.register(
            "agentic_webhook_conversions",
            "Objects converted, by direction",
            m.conversions.clone(),
        );
        registry.register(
            "agentic_webhook_conversion_failures",
            "ConversionReviews answered with result Failure",
            m.conversion_failures.clone(),
        );
        registry.register(
            "agentic_webhook_panics",
            "Handler panics caught and answered with 500",
            m.panics.clone(),
        );
        registry.register(
            "agentic_webhook_shed_requests",
            "Requests refused with 429 because the server was at its concurrency limit",
            m.shed.clone(),
        );
        registry.register(
            "agentic_webhook_limit",
            "The server's limits as started (memory_bytes 0: no memory limit known)",
            m.limits.clone(),
        );
        registry.register(
            "agentic_webhook_connections",
            "TLS connections established, by negotiated protocol",
            m.connections.clone(),
        );
        registry.register(
            "agentic_webhook_connections_open",
            "TLS connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "agentic_webhook_connections_retired",
            "Connections the server asked the client to leave (HTTP/2 GOAWAY, HTTP/1.1 Connection: close), by reason",
            m.connections_retired.clone(),
        );
        registry.register(
            "agentic_webhook_connections_forced_closed",
            "Retired connections still busy when --max-connection-age-grace ran out, closed under their requests",
            m.connections_forced.clone(),
        );

        // Known label values exported from the start, at 0, so rates and
        // dashboards see a series before the first event.
        for protocol in ["http/1.1", "h2"] {
            let _ = m.connections.get_or_create(&ProtocolLabel {
                protocol: protocol.to_owned(),
            });
        }
        for reason in ["age", "shutdown"] {
            let _ = m.connections_retired.get_or_create(&RetireLabel {
                reason: reason.to_owned(),
            });
        }
        Arc::new(m)
    }

    pub fn webhook(&self, path: &str) -> WebhookLabel {
        WebhookLabel {
            webhook: path.to_owned(),
        }
    }

    /// Export the limits the server runs with.
    pub fn limits(&self, memory: Option<u64>, l: &crate::server::budget::Sized) {
        for (name, v) in [
            ("memory_bytes", memory.unwrap_or(0)),
            ("request_memory_bytes", l.request_memory as u64),
            ("admission_body_bytes", l.admission_body as u64),
            ("conversion_body_bytes", l.conversion_body as u64),
            ("concurrent_reviews", l.max_concurrent as u64),
            ("connections", l.max_connections as u64),
        ] {
            self.limits
                .get_or_create(&LimitLabel {
                    limit: name.to_owned(),
                })
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }
}
