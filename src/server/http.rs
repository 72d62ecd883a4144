//! The HTTPS routes: `POST /mutate`, `/validate`, `/convert`.
//!
//! Each handler is decode → core → encode. Around them, outermost first:
//! metrics, panic catcher (500, counted), the request deadline from the
//! apiserver's `?timeout=`, and admission control (content type, and a
//! bounded wait for a concurrency slot and body memory: overload is shed
//! with 429 rather than queued past the deadline).

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};

use crate::admission::AdmissionService;
use crate::admission::review::{self as admission_review, Verdict};
use crate::conversion::ConversionService;
use crate::conversion::review::{self as conversion_review, Outcome};
use crate::duration;

use super::metrics::{AdmissionLabels, DirectionLabels, Metrics, RuleLabel, WebhookCodeLabels};

pub const MUTATE: &str = "/mutate";
pub const VALIDATE: &str = "/validate";
pub const CONVERT: &str = "/convert";

/// Limits of the HTTPS endpoints.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub admission_body: usize,
    pub conversion_body: usize,
    /// Reviews handled at once.
    pub max_concurrent: usize,
    /// Request bodies held in memory at once, in bytes.
    pub max_body_bytes_in_flight: usize,
    /// Used when the request carries no `?timeout=`.
    pub default_timeout: Duration,
    /// Upper bound on any `?timeout=`.
    pub max_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            admission_body: 8 << 20,
            conversion_body: 64 << 20,
            max_concurrent: 256,
            max_body_bytes_in_flight: 256 << 20,
            default_timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(30),
        }
    }
}

pub struct App {
    pub admission: Arc<dyn AdmissionService>,
    pub conversion: Arc<dyn ConversionService>,
    pub metrics: Arc<Metrics>,
    pub limits: HttpLimits,
    slots: Arc<Semaphore>,
    /// KiB of request body in memory.
    body_budget: Arc<Semaphore>,
}

impl App {
    pub fn new(
        admission: Arc<dyn AdmissionService>,
        conversion: Arc<dyn ConversionService>,
        metrics: Arc<Metrics>,
        limits: HttpLimits,
    ) -> Arc<Self> {
        Arc::new(App {
            admission,
            conversion,
            metrics,
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            body_budget: Arc::new(Semaphore::new(
                (limits.max_body_bytes_in_flight / 1024).max(1),
            )),
            limits,
        })
    }
}

/// When a request must be answered by.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Instant);

pub fn router(app: Arc<App>) -> Router {
    let admission_limit = DefaultBodyLimit::max(app.limits.admission_body);
    Router::new()
        .route(MUTATE, post(mutate).layer(admission_limit))
        .route(VALIDATE, post(validate).layer(admission_limit))
        .route(
            CONVERT,
            post(convert).layer(DefaultBodyLimit::max(app.limits.conversion_body)),
        )
        .layer(middleware::from_fn_with_state(app.clone(), admit))
        .layer(middleware::from_fn_with_state(app.clone(), deadline))
        // Inside `observe`, so a panic still ends as a counted 500 and the
        // in-flight gauge goes back down.
        .layer(CatchPanicLayer::custom(PanicResponder(app.metrics.clone())))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

fn plain(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn json(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Clone)]
struct PanicResponder(Arc<Metrics>);

impl ResponseForPanic for PanicResponder {
    type ResponseBody = Body;

    fn response_for_panic(&mut self, err: Box<dyn Any + Send + 'static>) -> Response {
        let what = err
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| err.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        self.0.panics.inc();
        tracing::error!(panic = %what, "handler panicked; answered 500");
        plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: handler panicked",
        )
    }
}

fn webhook_label(path: &str) -> &'static str {
    match path {
        MUTATE => MUTATE,
        VALIDATE => VALIDATE,
        CONVERT => CONVERT,
        _ => "other",
    }
}

/// controller-runtime's request metrics: latency, count by code, in flight.
async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let webhook = webhook_label(req.uri().path());
    let label = app.metrics.webhook(webhook);
    let in_flight = app.metrics.webhook_in_flight.get_or_create(&label).clone();
    in_flight.inc();
    let started = Instant::now();
    let resp = next.run(req).await;
    in_flight.dec();
    app.metrics
        .webhook_latency
        .get_or_create(&label)
        .observe(started.elapsed().as_secs_f64());
    app.metrics
        .webhook_requests
        .get_or_create(&WebhookCodeLabels {
            webhook: webhook.to_owned(),
            code: resp.status().as_u16().to_string(),
        })
        .inc();
    resp
}

/// The apiserver appends `?timeout=5s`; nothing it sent is worth answering
/// after that. A client too slow to send its body gets 408.
async fn deadline(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let timeout = req
        .uri()
        .query()
        .and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "timeout")
                .and_then(|(_, v)| duration::parse(v).ok())
        })
        .unwrap_or(app.limits.default_timeout)
        .min(app.limits.max_timeout);
    let at = Instant::now() + timeout;
    req.extensions_mut().insert(Deadline(at));
    match tokio::time::timeout_at(at.into(), next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => plain(
            StatusCode::REQUEST_TIMEOUT,
            format!("request not completed within its timeout ({timeout:?})"),
        ),
    }
}

fn json_content_type(v: Option<&HeaderValue>) -> bool {
    match v.and_then(|v| v.to_str().ok()) {
        None => true,
        Some(ct) => ct
            .split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json")),
    }
}

/// Content type first (cheap), then a concurrency slot and body memory,
/// waiting at most half the time left (never past the deadline).
async fn admit(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if !json_content_type(req.headers().get(header::CONTENT_TYPE)) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let route_limit = if req.uri().path() == CONVERT {
        app.limits.conversion_body
    } else {
        app.limits.admission_body
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > route_limit) {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the {route_limit}-byte limit"),
        );
    }
    let kib = declared.unwrap_or(route_limit).div_ceil(1024).max(1);
    let kib = u32::try_from(kib).unwrap_or(u32::MAX);
    let deadline = req
        .extensions()
        .get::<Deadline>()
        .map_or_else(Instant::now, |d| d.0);
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .checked_div(2)
        .unwrap_or_default();
    let permits = tokio::time::timeout(wait, async {
        let slot = app.slots.clone().acquire_owned().await.ok()?;
        let body = app.body_budget.clone().acquire_many_owned(kib).await.ok()?;
        Some::<(OwnedSemaphorePermit, OwnedSemaphorePermit)>((slot, body))
    })
    .await;
    match permits {
        Ok(Some(_held)) => next.run(req).await,
        _ => {
            app.metrics.shed.inc();
            let mut resp = plain(
                StatusCode::TOO_MANY_REQUESTS,
                "server is at its concurrency limit; retry",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    Mutate,
    Validate,
}

async fn mutate(State(app): State<Arc<App>>, body: Bytes) -> Response {
    admission(&app, Endpoint::Mutate, &body)
}

async fn validate(State(app): State<Arc<App>>, body: Bytes) -> Response {
    admission(&app, Endpoint::Validate, &body)
}

fn admission(app: &App, endpoint: Endpoint, body: &[u8]) -> Response {
    let started = Instant::now();
    let path = match endpoint {
        Endpoint::Mutate => MUTATE,
        Endpoint::Validate => VALIDATE,
    };
    let (version, req) = match admission_review::decode(body) {
        Ok(ok) => ok,
        Err(e) => {
            tracing::debug!(path, status = 400, error = %e, "bad admission review");
            return plain(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let verdict = match endpoint {
        Endpoint::Mutate => app.admission.mutate(&req),
        Endpoint::Validate => app.admission.validate(&req),
    };
    record_admission(app, path, &req, &verdict);
    let out = admission_review::encode(version, &req.uid, &verdict);
    tracing::debug!(
        uid = %req.uid,
        path,
        status = 200,
        allowed = verdict.allowed(),
        duration_us = started.elapsed().as_micros() as u64,
        "admission review"
    );
    json(out)
}

fn record_admission(
    app: &App,
    path: &str,
    req: &admission_review::AdmissionRequest<'_>,
    v: &Verdict,
) {
    let result = if !v.allowed() {
        "denied"
    } else if v.patch.is_some() {
        "patched"
    } else {
        "allowed"
    };
    app.metrics
        .admission
        .get_or_create(&AdmissionLabels {
            webhook: path.to_owned(),
            operation: req.operation.as_str().to_owned(),
            result: result.to_owned(),
        })
        .inc();
    if let Some(deny) = &v.deny {
        for rule in &v.denied_rules {
            app.metrics
                .denials
                .get_or_create(&RuleLabel {
                    rule: rule.as_str().to_owned(),
                })
                .inc();
        }
        let rules: Vec<&str> = v.denied_rules.iter().map(|r| r.as_str()).collect();
        // Never the prompt text or env values: rule ids and paths only.
        let fields: Vec<&str> = deny
            .details
            .causes
            .iter()
            .map(|c| c.field.as_str())
            .collect();
        tracing::info!(
            uid = %req.uid,
            operation = req.operation.as_str(),
            subresource = req.sub_resource.as_deref().unwrap_or(""),
            object = %format_args!("{}/{}", req.namespace(), req.name()),
            user = %req.user_info.username,
            dry_run = req.dry_run.unwrap_or(false),
            rules = %rules.join(","),
            fields = %fields.join(","),
            code = deny.code,
            "denied"
        );
    }
}

async fn convert(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let started = Instant::now();
    let (version, req) = match conversion_review::decode(&body) {
        Ok(ok) => ok,
        Err(e) => {
            tracing::debug!(path = CONVERT, status = 400, error = %e, "bad conversion review");
            return plain(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let (outcome, counts) = app.conversion.convert(&req);
    for (direction, n) in [
        ("to_v1alpha1", counts.to_v1alpha1),
        ("to_v1alpha2", counts.to_v1alpha2),
        ("unchanged", counts.unchanged),
    ] {
        if n > 0 {
            app.metrics
                .conversions
                .get_or_create(&DirectionLabels {
                    direction: direction.to_owned(),
                })
                .inc_by(n);
        }
    }
    if let Outcome::Failure(msg) = &outcome {
        app.metrics.conversion_failures.inc();
        tracing::warn!(uid = %req.uid, desired = %req.desired_api_version, error = %msg, "conversion failed");
    }
    let out = conversion_review::encode(version, &req.uid, &outcome);
    tracing::debug!(
        uid = %req.uid,
        path = CONVERT,
        status = 200,
        objects = req.objects.len(),
        duration_us = started.elapsed().as_micros() as u64,
        "conversion review"
    );
    json(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::AdmissionRequest;
    use crate::conversion::Converter;
    use tower::ServiceExt as _;

    struct Panicky;

    impl AdmissionService for Panicky {
        fn mutate(&self, _: &AdmissionRequest<'_>) -> Verdict {
            panic!("rule bug")
        }
        fn validate(&self, _: &AdmissionRequest<'_>) -> Verdict {
            Verdict::allow()
        }
    }

    const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"vteam.ambient-code","version":"v1alpha2","kind":"AgenticSession"},"operation":"CREATE","object":{}}}"#;

    fn post(path: &str) -> Request {
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(REVIEW))
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_counted_and_survived() {
        let metrics = Metrics::new();
        let app = App::new(
            Arc::new(Panicky),
            Arc::new(Converter),
            metrics.clone(),
            HttpLimits::default(),
        );
        let router = router(app);
        let resp = router
            .clone()
            .oneshot(post(MUTATE))
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(metrics.panics.get(), 1);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"controller_runtime_webhook_requests_total{webhook="/mutate",code="500"} 1"#
            ),
            "{text}"
        );
        // The in-flight gauge was not left raised by the unwinding request.
        let resp = router
            .oneshot(post(VALIDATE))
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn overload_is_shed_with_429_before_the_deadline() {
        let metrics = Metrics::new();
        let limits = HttpLimits {
            max_concurrent: 1,
            ..HttpLimits::default()
        };
        let app = App::new(
            Arc::new(crate::admission::Policy::default()),
            Arc::new(Converter),
            metrics.clone(),
            limits,
        );
        // Hold the only slot, as a long request would.
        let held = app.slots.clone().acquire_owned().await;
        let router = router(app);
        let started = Instant::now();
        let req = Request::post("/validate?timeout=400ms")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(REVIEW))
            .unwrap_or_default();
        let resp = router.oneshot(req).await.unwrap_or_else(|e| match e {});
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            resp.headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(b"1".as_slice())
        );
        // Waited about half the 400 ms budget, not the whole timeout.
        assert!(started.elapsed() < Duration::from_millis(400));
        assert_eq!(metrics.shed.get(), 1);
        drop(held);
    }
}
