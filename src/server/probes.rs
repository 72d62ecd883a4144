//! Plain-HTTP probe endpoints: `/healthz` (the process is alive), `/readyz`
//! (it should receive traffic) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::metrics::Metrics;
use super::tls::CertStore;

/// What readiness depends on.
#[derive(Debug)]
pub struct Health {
    /// `None` for processes that serve no TLS (the reconciler).
    certs: Option<Arc<CertStore>>,
    shutting_down: AtomicBool,
    /// Cleared by the certificate manager until its CA is in every caBundle.
    bundles_ready: AtomicBool,
}

impl Health {
    pub fn new(certs: Arc<CertStore>) -> Arc<Self> {
        Arc::new(Health {
            certs: Some(certs),
            shutting_down: AtomicBool::new(false),
            bundles_ready: AtomicBool::new(true),
        })
    }

    /// Readiness without a serving certificate (ready until shutdown).
    pub fn without_tls() -> Arc<Self> {
        Arc::new(Health {
            certs: None,
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
        } else if self.certs.as_ref().is_some_and(|c| !c.is_loaded()) {
            Err("no serving certificate loaded")
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
    metrics: Arc<Metrics>,
}

pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
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
