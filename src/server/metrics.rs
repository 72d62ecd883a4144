//! Prometheus metrics. The `controller_runtime_webhook_*` series use the
//! names and labels of controller-runtime's webhook metrics, so existing
//! webhook dashboards work unchanged; `agentic_webhook_*` are this product's.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
pub struct ResultLabel {
    pub result: String,
}

impl ResultLabel {
    /// `success` or `failure`.
    pub fn of(ok: bool) -> Self {
        ResultLabel {
            result: if ok { "success" } else { "failure" }.to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    pub verb: String,
    pub resource: String,
    pub code: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s: the core answers in microseconds; the tail is the transport.
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ])
}

fn reconcile_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// Every series the binary exports.
pub struct Metrics {
    registry: Registry,
    pub webhook_latency: Family<WebhookLabel, Histogram>,
    pub webhook_requests: Family<WebhookCodeLabels, Counter>,
    pub webhook_in_flight: Family<WebhookLabel, Gauge>,
    pub admission: Family<AdmissionLabels, Counter>,
    pub denials: Family<RuleLabel, Counter>,
    pub conversions: Family<DirectionLabels, Counter>,
    pub conversion_failures: Counter,
    pub panics: Counter,
    pub shed: Counter,
    pub cert_expiry: Gauge,
    pub cert_reloads: Family<ResultLabel, Counter>,
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_errors: Counter,
    pub watch_errors: Counter,
    pub reconcile_duration: Histogram,
    pub sessions: Family<PhaseLabel, Gauge>,
    pub notice_entries: Gauge,
    pub event_errors: Counter,
    pub api_requests: Family<ApiRequestLabels, Counter>,
    pub template_reloads: Family<ResultLabel, Counter>,
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

/// Which process the metrics are for: each exports only its own series
/// (and both the process collector's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Webhook,
    Reconciler,
}

/// The components whose series a registry exports.
#[derive(Clone, Copy, Debug)]
struct Parts(&'static [Component]);

impl Parts {
    fn has(self, c: Component) -> bool {
        self.0.contains(&c)
    }
}

impl Metrics {
    /// Every series (tests, and code that serves both parts).
    pub fn new() -> Arc<Self> {
        Self::with(Parts(&[Component::Webhook, Component::Reconciler]))
    }

    /// The series of one process.
    pub fn for_component(c: Component) -> Arc<Self> {
        Self::with(Parts(match c {
            Component::Webhook => &[Component::Webhook],
            Component::Reconciler => &[Component::Reconciler],
        }))
    }

    fn with(parts: Parts) -> Arc<Self> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(super::process::ProcessCollector));
        let webhook_latency = Family::<WebhookLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let webhook_requests = Family::<WebhookCodeLabels, Counter>::default();
        let webhook_in_flight = Family::<WebhookLabel, Gauge>::default();
        let admission = Family::<AdmissionLabels, Counter>::default();
        let denials = Family::<RuleLabel, Counter>::default();
        let conversions = Family::<DirectionLabels, Counter>::default();
        let conversion_failures = Counter::default();
        let panics = Counter::default();
        let shed = Counter::default();
        let cert_expiry = Gauge::default();
        let cert_reloads = Family::<ResultLabel, Counter>::default();
        let reconciles = Family::<ResultLabel, Counter>::default();
        let reconcile_errors = Counter::default();
        let watch_errors = Counter::default();
        let reconcile_duration = reconcile_histogram();
        let sessions = Family::<PhaseLabel, Gauge>::default();
        let notice_entries = Gauge::default();
        let event_errors = Counter::default();
        let api_requests = Family::<ApiRequestLabels, Counter>::default();
        let template_reloads = Family::<ResultLabel, Counter>::default();
        let limits = Family::<LimitLabel, Gauge>::default();
        let connections = Family::<ProtocolLabel, Counter>::default();
        let connections_open = Gauge::default();
        let connections_retired = Family::<RetireLabel, Counter>::default();
        let connections_forced = Counter::default();

        if parts.has(Component::Webhook) {
            registry.register(
                "controller_runtime_webhook_latency_seconds",
                "Histogram of the latency of processing admission requests",
                webhook_latency.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "controller_runtime_webhook_requests",
                "Total number of admission requests by HTTP status code",
                webhook_requests.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "controller_runtime_webhook_requests_in_flight",
                "Current number of admission requests being served",
                webhook_in_flight.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_admission_requests",
                "Admission reviews by webhook, operation and result",
                admission.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_denials",
                "Denied admission reviews by rule id",
                denials.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_conversions",
                "Objects converted, by direction",
                conversions.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_conversion_failures",
                "ConversionReviews answered with result Failure",
                conversion_failures.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_panics",
                "Handler panics caught and answered with 500",
                panics.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_shed_requests",
                "Requests refused with 429 because the server was at its concurrency limit",
                shed.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_certificate_expiry_timestamp_seconds",
                "Expiry (notAfter) of the serving certificate, unix seconds",
                cert_expiry.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_certificate_reloads",
                "Serving certificate reload attempts by result",
                cert_reloads.clone(),
            );
        }
        if parts.has(Component::Reconciler) {
            registry.register(
                "agentic_webhook_reconciles",
                "Reconciliations by result",
                reconciles.clone(),
            );
        }
        if parts.has(Component::Reconciler) {
            registry.register(
                "agentic_webhook_reconcile_errors",
                "Reconciliations that failed and were requeued with backoff",
                reconcile_errors.clone(),
            );
        }
        if parts.has(Component::Reconciler) {
            registry.register(
                "agentic_webhook_watch_errors",
                "List or watch failures of the reconciler's informers, each retried with backoff",
                watch_errors.clone(),
            );
        }
        if parts.has(Component::Reconciler) {
            registry.register(
                "agentic_webhook_reconcile_duration_seconds",
                "Time spent in one reconciliation",
                reconcile_duration.clone(),
            );
        }
        if parts.has(Component::Reconciler) {
            registry.register(
                "agentic_webhook_sessions",
                "Sessions seen by the reconciler, by phase",
                sessions.clone(),
            );
        }
        if parts.has(Component::Reconciler) {
            registry.register(
                "agentic_webhook_runner_notice_entries",
                "Runners whose notices the reconciler remembers (at most one per session with a live runner)",
                notice_entries.clone(),
            );
        }
        if parts.has(Component::Reconciler) {
            registry.register(
                "agentic_webhook_event_errors",
                "Kubernetes Events the reconciler could not record (they are logged instead)",
                event_errors.clone(),
            );
        }
        if parts.has(Component::Reconciler) {
            registry.register(
                "agentic_reconciler_api_requests",
                "Kubernetes API requests the reconciler made, by verb, resource and HTTP code (error: no answer)",
                api_requests.clone(),
            );
        }
        if parts.has(Component::Reconciler) {
            registry.register(
                "agentic_reconciler_runner_template_reloads",
                "Runner pod template reloads by result (on failure the last good template stays)",
                template_reloads.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_limit",
                "The server's limits as started (memory_bytes 0: no memory limit known)",
                limits.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_connections",
                "TLS connections established, by negotiated protocol",
                connections.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_connections_open",
                "TLS connections open now",
                connections_open.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_connections_retired",
                "Connections the server asked the client to leave (HTTP/2 GOAWAY, HTTP/1.1 Connection: close), by reason",
                connections_retired.clone(),
            );
        }
        if parts.has(Component::Webhook) {
            registry.register(
                "agentic_webhook_connections_forced_closed",
                "Retired connections still busy when --max-connection-age-grace ran out, closed under their requests",
                connections_forced.clone(),
            );
        }

        // Known label values exported from the start, at 0, so rates and
        // dashboards see a series before the first event.
        for protocol in ["http/1.1", "h2"] {
            let _ = connections.get_or_create(&ProtocolLabel {
                protocol: protocol.to_owned(),
            });
        }
        for reason in ["age", "shutdown"] {
            let _ = connections_retired.get_or_create(&RetireLabel {
                reason: reason.to_owned(),
            });
        }

        Arc::new(Metrics {
            registry,
            webhook_latency,
            webhook_requests,
            webhook_in_flight,
            admission,
            denials,
            conversions,
            conversion_failures,
            panics,
            shed,
            cert_expiry,
            cert_reloads,
            reconciles,
            reconcile_errors,
            watch_errors,
            reconcile_duration,
            sessions,
            notice_entries,
            event_errors,
            api_requests,
            template_reloads,
            limits,
            connections,
            connections_open,
            connections_retired,
            connections_forced,
        })
    }

    /// OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn webhook(&self, path: &str) -> WebhookLabel {
        WebhookLabel {
            webhook: path.to_owned(),
        }
    }

    pub fn cert_reload(&self, ok: bool) {
        self.cert_reloads.get_or_create(&ResultLabel::of(ok)).inc();
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

    pub fn template_reload(&self, ok: bool) {
        self.template_reloads
            .get_or_create(&ResultLabel::of(ok))
            .inc();
    }
}

/// A gauge raised for as long as the guard lives (a request in flight, an
/// open connection), lowered however its holder ends: return, error,
/// cancellation, panic.
pub struct Raised(Gauge);

impl Raised {
    pub fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Raised(gauge)
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.dec();
    }
}
