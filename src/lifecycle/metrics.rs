//! The reconciler's series.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::telemetry::{Registry, ResultLabel};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    pub verb: String,
    pub resource: String,
    pub code: String,
}

fn reconcile_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

#[derive(Debug)]
pub struct Metrics {
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_errors: Counter,
    pub watch_errors: Counter,
    pub reconcile_duration: Histogram,
    pub sessions: Family<PhaseLabel, Gauge>,
    pub notice_entries: Gauge,
    pub event_errors: Counter,
    pub api_requests: Family<ApiRequestLabels, Counter>,
    pub template_reloads: Family<ResultLabel, Counter>,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Arc<Self> {
        let m = Metrics {
            reconciles: Family::default(),
            reconcile_errors: Counter::default(),
            watch_errors: Counter::default(),
            reconcile_duration: reconcile_histogram(),
            sessions: Family::default(),
            notice_entries: Gauge::default(),
            event_errors: Counter::default(),
            api_requests: Family::default(),
            template_reloads: Family::default(),
        };
        registry.register(
            "agentic_webhook_reconciles",
            "Reconciliations by result",
            m.reconciles.clone(),
        );
        registry.register(
            "agentic_webhook_reconcile_errors",
            "Reconciliations that failed and were requeued with backoff",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "agentic_webhook_watch_errors",
            "List or watch failures of the reconciler's informers, each retried with backoff",
            m.watch_errors.clone(),
        );
        registry.register(
            "agentic_webhook_reconcile_duration_seconds",
            "Time spent in one reconciliation",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "agentic_webhook_sessions",
            "Sessions seen by the reconciler, by phase",
            m.sessions.clone(),
        );
        registry.register(
            "agentic_webhook_runner_notice_entries",
            "Runners whose notices the reconciler remembers (at most one per session with a live runner)",
            m.notice_entries.clone(),
        );
        registry.register(
            "agentic_webhook_event_errors",
            "Kubernetes Events the reconciler could not record (they are logged instead)",
            m.event_errors.clone(),
        );
        registry.register(
            "agentic_reconciler_api_requests",
            "Kubernetes API requests the reconciler made, by verb, resource and HTTP code (error: no answer)",
            m.api_requests.clone(),
        );
        registry.register(
            "agentic_reconciler_runner_template_reloads",
            "Runner pod template reloads by result (on failure the last good template stays)",
            m.template_reloads.clone(),
        );
        Arc::new(m)
    }

    pub fn template_reload(&self, ok: bool) {
        self.template_reloads
            .get_or_create(&ResultLabel::of(ok))
            .inc();
    }
}
