//! The serving certificate's series (webhook process).

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::telemetry::{Registry, ResultLabel};

#[derive(Debug)]
pub struct Metrics {
    pub expiry: Gauge,
    pub reloads: Family<ResultLabel, Counter>,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Arc<Self> {
        let m = Metrics {
            expiry: Gauge::default(),
            reloads: Family::default(),
        };
        registry.register(
            "agentic_webhook_certificate_expiry_timestamp_seconds",
            "Expiry (notAfter) of the serving certificate, unix seconds",
            m.expiry.clone(),
        );
        registry.register(
            "agentic_webhook_certificate_reloads",
            "Serving certificate reload attempts by result",
            m.reloads.clone(),
        );
        Arc::new(m)
    }

    pub fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabel::of(ok)).inc();
    }
}
