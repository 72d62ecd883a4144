//! Plain-HTTP probe endpoints: `/healthz` (the process is alive), `/readyz`
//! (it should receive traffic) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Registry;

/// Something readiness waits for (a serving certificate).
pub trait Gate: Send + Sync + std::fmt::Debug {
    /// `Some(reason)` while not ready.
    fn not_ready(&self) -> Option<&'static str>;
}

/// What readiness depends on.
#[derive(Debug)]
pub struct Health {
    /// `None` for processes that serve no TLS (the reconciler).
    gate: Option<Arc<dyn Gate>>,
    shutting_down: AtomicBool,
    /// Cleared by the certificate manager until its CA is in every caBundle.
    bundles_ready: AtomicBool,
}

impl Health {
    pub fn new(gate: Arc<dyn Gate>) -> Arc<Self> {
        Arc::new(Health {
            gate: Some(gate),
            shutting_down: AtomicBool::new(false),
            bundles_ready: AtomicBool::new(true),
        })
    }

    /// Readiness without a serving certificate (ready until shutdown).
    pub fn without_tls() -> Arc<Self> {
        Arc::new(Health {
            gate: None,
            shutting_down: AtomicBool::new(false),
            bundles_ready: AtomicBool::new(true),
        })
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn set_bundles_ready(&self, ready: bool) {
        self.bundles_ready.store(ready, Ordering::SeqCst);
    }

    /// `Err(reason)` when not ready.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.shutting_down.load(Ordering::SeqCst) {
            Err("shutting down")
        } else if let Some(why) = self.gate.as_ref().and_then(|g| g.not_ready()) {
            Err(why)
        } else if !self.bundles_ready.load(Ordering::SeqCst) {
            Err("CA not yet in every caBundle")
        } else {
            Ok(())
        }
    }
}

#[derive(Clone)]
struct ProbeState {
    health: Arc<Health>,
    metrics: Arc<Registry>,
}

pub fn router(health: Arc<Health>, metrics: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ProbeState { health, metrics })
}

async fn readyz(State(s): State<ProbeState>) -> Response {
    match s.health.readiness() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics_text(State(s): State<ProbeState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}
