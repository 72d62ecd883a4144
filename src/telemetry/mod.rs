//! What every process exports and serves: one Prometheus registry each
//! component registers its own series into ([`Registry`]), the process
//! collector, and the plain-HTTP probe endpoints.

pub(crate) mod probes;
pub(crate) mod process;

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry as Inner};

/// The process's registry: components register at start, scrapes render.
#[derive(Debug)]
pub struct Registry(Mutex<Inner>);

impl Registry {
    /// A registry exporting the process collector's series.
    pub fn new() -> Arc<Self> {
        let mut inner = Inner::default();
        inner.register_collector(Box::new(process::ProcessCollector));
        Arc::new(Registry(Mutex::new(inner)))
    }

    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if encode(&mut out, &inner).is_err() {
            out.clear();
        }
        out
    }
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

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn components_register_into_one_registry_beside_the_process_series() {
        let registry = Registry::new();
        let a = Counter::<u64>::default();
        registry.register("a_things", "Things", a.clone());
        let g = Gauge::<i64>::default();
        registry.register("b_open", "Open", g.clone());
        a.inc();
        {
            let _held = Raised::new(g.clone());
            assert!(registry.render().contains("b_open 1\n"));
        }
        let text = registry.render();
        assert!(text.contains("a_things_total 1\n"), "{text}");
        assert!(text.contains("b_open 0\n"), "{text}");
        if cfg!(target_os = "linux") {
            assert!(text.contains("process_resident_memory_bytes "), "{text}");
        }
    }
}
