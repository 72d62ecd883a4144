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
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};

use crate::admission::AdmissionService;
use crate::admission::review::{self as admission_review, Verdict};
use crate::conversion::ConversionService;
use crate::conversion::review::{self as conversion_review, Outcome};
use crate::duration;

use super::metrics::{AdmissionLabels, DirectionLabels, Metrics, RuleLabel, WebhookCodeLabels};
use super::{budget, early, hold};
use crate::telemetry::Raised;

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
    /// Memory for requests at once (bodies and their decoding, as
    /// [`budget`] estimates it), in bytes.
    pub max_body_bytes_in_flight: usize,
    /// Used when the request carries no `?timeout=`.
    pub default_timeout: Duration,
    /// Upper bound on any `?timeout=`.
    pub max_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            admission_body: budget::UNLIMITED.admission_body,
            conversion_body: budget::UNLIMITED.conversion_body,
            max_concurrent: budget::UNLIMITED.max_concurrent,
            max_body_bytes_in_flight: budget::UNLIMITED.request_memory,
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
    /// KiB of request memory.
    body_budget: Arc<Semaphore>,
    body_budget_kib: usize,
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
            body_budget: Arc::new(Semaphore::new(kib(limits.max_body_bytes_in_flight) as usize)),
            body_budget_kib: kib(limits.max_body_bytes_in_flight) as usize,
            limits,
        })
    }
}

/// When a request must be answered by.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Instant);

/// KiB of request memory the request already holds (from admission control).
#[derive(Clone, Copy, Debug)]
struct Charged(u32);

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(MUTATE, post(mutate))
        .route(VALIDATE, post(validate))
        .route(CONVERT, post(convert))
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
    // Held by a guard: a request whose client goes away mid-body is dropped
    // at this `.await`, and must not leave the gauge raised.
    let _in_flight = Raised::new(app.metrics.webhook_in_flight.get_or_create(&label).clone());
    let started = Instant::now();
    let resp = next.run(req).await;
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
/// waiting at most half the time left (never past the deadline). Refusals
/// come before the body is read; the body is then drained ([`early`]).
async fn admit(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let asked = Asked::of(&req);
    let until = asked.deadline;
    let cap = asked.route_limit(&app.limits).saturating_mul(2);
    match admission_control(&app, asked).await {
        Ok(held) => {
            req.extensions_mut()
                .insert(Charged(held.1.num_permits() as u32));
            hold::until_sent(next.run(req).await, held)
        }
        Err(refusal) => early::before_body(refusal, req.into_body(), cap, until),
    }
}

/// What admission control needs of a request (not the request: its body
/// is not `Sync`, so it cannot be borrowed across an `.await`).
struct Asked {
    json: bool,
    convert: bool,
    declared: Option<usize>,
    deadline: Instant,
}

impl Asked {
    fn route_limit(&self, limits: &HttpLimits) -> usize {
        if self.convert {
            limits.conversion_body
        } else {
            limits.admission_body
        }
    }

    fn of(req: &Request) -> Self {
        Asked {
            json: json_content_type(req.headers().get(header::CONTENT_TYPE)),
            convert: req.uri().path() == CONVERT,
            declared: req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok()),
            deadline: req
                .extensions()
                .get::<Deadline>()
                .map_or_else(Instant::now, |d| d.0),
        }
    }
}

async fn admission_control(
    app: &App,
    asked: Asked,
) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Response> {
    if !asked.json {
        return Err(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    let route_limit = asked.route_limit(&app.limits);
    let declared = asked.declared;
    if declared.is_some_and(|n| n > route_limit) {
        return Err(too_large(route_limit));
    }
    // Charged what decoding will likely cost, so that a request rarely
    // needs more once read (holding some while waiting for more would let
    // requests starve each other).
    let kib = kib(budget::upfront_cost(
        declared.unwrap_or(route_limit),
        asked.convert,
    ))
    .min(u32::try_from(app.body_budget_kib).unwrap_or(u32::MAX));
    let wait = asked
        .deadline
        .saturating_duration_since(Instant::now())
        .checked_div(2)
        .unwrap_or_default();
    let permits = tokio::time::timeout(wait, async {
        let slot = app.slots.clone().acquire_owned().await.ok()?;
        let body = app.body_budget.clone().acquire_many_owned(kib).await.ok()?;
        Some((slot, body))
    })
    .await;
    match permits {
        Ok(Some(held)) => Ok(held),
        _ => Err(shed(app)),
    }
}

fn shed(app: &App) -> Response {
    app.metrics.shed.inc();
    let mut resp = plain(
        StatusCode::TOO_MANY_REQUESTS,
        "server is at its concurrency limit; retry",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// What a read body will cost to decode beyond what the request holds
/// already: taken now, or refused (413 if it can never fit, 429 if not
/// now; never waited for while holding memory).
fn reserve(
    app: &App,
    cost: usize,
    charged: Charged,
) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
    let need = kib(cost);
    if need as usize > app.body_budget_kib {
        return Err(Refusal::NeverFits { cost });
    }
    let extra = need.saturating_sub(charged.0);
    if extra == 0 {
        return Ok(None);
    }
    app.body_budget
        .clone()
        .try_acquire_many_owned(extra)
        .map(Some)
        .map_err(|_| Refusal::NotNow)
}

/// Why a read body is not decoded.
enum Refusal {
    NeverFits { cost: usize },
    NotNow,
}

impl Refusal {
    fn answer(self, app: &App) -> Response {
        match self {
            Refusal::NeverFits { cost } => plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "decoding this review would take about {} MiB, more than the {} MiB this server may use for requests",
                    cost >> 20,
                    app.body_budget_kib >> 10
                ),
            ),
            Refusal::NotNow => shed(app),
        }
    }
}

/// The memory admission control charged a request.
fn charged(req: &Request) -> Charged {
    req.extensions()
        .get::<Charged>()
        .copied()
        .unwrap_or(Charged(0))
}

#[derive(Clone, Copy)]
enum Endpoint {
    Mutate,
    Validate,
}

fn too_large(limit: usize) -> Response {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than the {limit}-byte limit"),
    )
}

/// The whole body in one buffer sized from Content-Length, at most `limit`
/// bytes. (Collecting frames and then joining them, as `Bytes` extraction
/// does, holds a large body twice.)
async fn read_body(req: Request, limit: usize) -> Result<Vec<u8>, Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut buf = Vec::with_capacity(declared.min(limit));
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            plain(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > limit {
                return Err(too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

async fn mutate(State(app): State<Arc<App>>, req: Request) -> Response {
    admission_route(&app, Endpoint::Mutate, req).await
}

async fn validate(State(app): State<Arc<App>>, req: Request) -> Response {
    admission_route(&app, Endpoint::Validate, req).await
}

async fn admission_route(app: &App, endpoint: Endpoint, req: Request) -> Response {
    let charged = charged(&req);
    let body = match read_body(req, app.limits.admission_body).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    match reserve(app, budget::admission_cost(&body), charged) {
        Ok(held) => hold::until_sent(admission(app, endpoint, &body), held),
        Err(refusal) => refusal.answer(app),
    }
}

fn admission(app: &App, endpoint: Endpoint, body: &[u8]) -> Response {
    let started = Instant::now();
    let path = match endpoint {
        Endpoint::Mutate => MUTATE,
        Endpoint::Validate => VALIDATE,
    };
    let review = match admission_review::decode(body) {
        Ok(review) => review,
        Err(e) => {
            tracing::debug!(path, status = 400, error = %e, "bad admission review");
            return plain(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let req = review.request();
    let verdict = match endpoint {
        Endpoint::Mutate => app.admission.mutate(req),
        Endpoint::Validate => app.admission.validate(req),
    };
    record_admission(app, path, req, &verdict);
    let out = review.answer_ref(&verdict).to_vec();
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
    for rule in &v.warned_rules {
        app.metrics
            .denials
            .get_or_create(&RuleLabel {
                rule: rule.as_str().to_owned(),
                enforcement: "warn".to_owned(),
            })
            .inc();
    }
    if let Some(deny) = &v.deny {
        for rule in &v.denied_rules {
            app.metrics
                .denials
                .get_or_create(&RuleLabel {
                    rule: rule.as_str().to_owned(),
                    enforcement: "deny".to_owned(),
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

async fn convert(State(app): State<Arc<App>>, req: Request) -> Response {
    let charged = charged(&req);
    let body = match read_body(req, app.limits.conversion_body).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let started = Instant::now();
    let review = match conversion_review::decode(&body) {
        Ok(review) => review,
        Err(e) => {
            tracing::debug!(path = CONVERT, status = 400, error = %e, "bad conversion review");
            return plain(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let req = review.request();
    let cost = budget::conversion_cost(body.len(), &req.objects);
    let held = match reserve(&app, cost, charged) {
        Ok(held) => held,
        Err(refusal) => return refusal.answer(&app),
    };
    let (outcome, counts) = app.conversion.convert(req);
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
    tracing::debug!(
        uid = %req.uid,
        path = CONVERT,
        status = 200,
        objects = req.objects.len(),
        duration_us = started.elapsed().as_micros() as u64,
        "conversion review"
    );
    let parts = review.answer(outcome).into_parts();
    let length = parts.iter().map(Vec::len).sum::<usize>();
    let chunks = parts.map(|p| Ok::<_, std::convert::Infallible>(Bytes::from(p)));
    let resp = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(length)),
        ],
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response();
    hold::until_sent(resp, held)
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
        let registry = crate::telemetry::Registry::new();
        let metrics = Metrics::register(&registry);
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
        let text = registry.render();
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
        let metrics = Metrics::register(&crate::telemetry::Registry::new());
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
