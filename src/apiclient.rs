//! The Kubernetes API client every subcommand uses.
//!
//! kube's default client has no response timeout (so exec and watches are
//! not cut), which means an apiserver or proxy that accepts a request and
//! never answers parks the caller forever: a reconcile worker, the
//! watcher's initial LIST, a migrate page. We bound the time to the
//! response *headers*, like client-go's `rest.Config.Timeout` for
//! non-watch calls; a watch gets its headers at once and then streams, so
//! it is untouched (kube-runtime's idle timeout guards a silent watch).

use std::sync::Arc;
use std::time::Duration;

use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::timeout::TimeoutLayer;

/// The layer that fails a request whose response has not started within
/// `timeout` (`kube::Error::Service` wrapping tower's `Elapsed`).
pub fn deadline(timeout: Duration) -> TimeoutLayer {
    TimeoutLayer::new(timeout)
}

/// A client from `config` with the response deadline.
pub fn from_config(config: Config, timeout: Duration) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&deadline(timeout))
        .build())
}

/// Which cluster to talk to: a kubeconfig file and context, or (both
/// unset) what kubectl would use: `$KUBECONFIG`, `~/.kube/config`, else
/// the pod's service account.
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub kubeconfig: Option<std::path::PathBuf>,
    pub context: Option<String>,
}

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Infer(#[from] kube::config::InferConfigError),
    #[error(transparent)]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error(transparent)]
    Client(#[from] kube::Error),
}

/// The client configuration for `target`.
pub async fn load_config(target: &Target) -> Result<Config, ConnectError> {
    if target.kubeconfig.is_none() && target.context.is_none() {
        return Ok(Config::infer().await?);
    }
    let kubeconfig = match &target.kubeconfig {
        Some(path) => kube::config::Kubeconfig::read_from(path)?,
        None => kube::config::Kubeconfig::read()?,
    };
    let options = kube::config::KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    Ok(Config::from_custom_kubeconfig(kubeconfig, &options).await?)
}

/// The client for `target`, with the response deadline.
pub async fn infer(target: &Target, timeout: Duration) -> Result<Client, ConnectError> {
    Ok(from_config(load_config(target).await?, timeout)?)
}

/// True when `e` is an answer from the API whose Status passes `check`
/// (e.g. `Status::is_already_exists`).
pub fn is_api_status(e: &kube::Error, check: fn(&kube::core::Status) -> bool) -> bool {
    matches!(e, kube::Error::Api(s) if check(s))
}

/// True when `e` is the deadline firing rather than an API answer.
pub fn is_timeout(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Service(inner) if inner.is::<tower::timeout::error::Elapsed>())
}

/// What one API request was, for counting: `(verb, resource)` the way the
/// apiserver's `apiserver_request_total` names them (`get`, `list`,
/// `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`;
/// `pods`, `agenticsessions/status`, ...).
pub fn classify(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _ns, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    let (resource, named) = match rest {
        [] => (String::new(), false),
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    };
    let resource = if resource.is_empty() {
        "unknown".to_owned()
    } else {
        resource
    };
    (verb, resource)
}

/// Called once per finished request: `(verb, resource, code)`, code being
/// the HTTP status or `error` when no response came.
pub type RequestSink = Arc<dyn Fn(&str, &str, &str) + Send + Sync>;

/// A layer that reports every request the client makes to a sink.
#[derive(Clone)]
pub struct CountLayer {
    sink: RequestSink,
}

impl CountLayer {
    pub fn new(sink: RequestSink) -> Self {
        CountLayer { sink }
    }
}

impl<S> tower::Layer<S> for CountLayer {
    type Service = Count<S>;

    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            sink: self.sink.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Count<S> {
    inner: S,
    sink: RequestSink,
}

impl<S, B, R> tower::Service<http::Request<B>> for Count<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (verb, resource) = classify(req.method(), req.uri());
        let sink = self.sink.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let code = match &result {
                Ok(resp) => resp.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            sink(verb, &resource, &code);
            result
        })
    }
}

/// How a controller's client behaves: every request counted and bounded in
/// time, and held to a request rate if one is given.
pub struct ControllerClient {
    pub timeout: Duration,
    /// Requests a second and burst; `None`: no client-side limit (the
    /// apiserver's API Priority and Fairness decides).
    pub limit: Option<(f64, u32)>,
    pub sink: RequestSink,
}

/// A client from `config` with the response deadline, the rate limit if any
/// (the wait for a token is not part of the deadline), reporting each request.
pub fn controller_client(config: Config, opts: &ControllerClient) -> Result<Client, kube::Error> {
    let limit = opts
        .limit
        .map(|(qps, burst)| RateLimitLayer::new(qps, burst));
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&deadline(opts.timeout))
        .with_layer(&tower::util::option_layer(limit))
        .with_layer(&CountLayer::new(opts.sink.clone()))
        .build())
}

/// [`infer`] for a controller.
pub async fn infer_controller(
    target: &Target,
    opts: &ControllerClient,
) -> Result<Client, ConnectError> {
    Ok(controller_client(load_config(target).await?, opts)?)
}

/// A token bucket: `qps` requests a second on average, up to `burst` at
/// once (client-go's flowcontrol, which every Kubernetes controller has and
/// kube-rs does not). Pure: the caller says what time it is.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl TokenBucket {
    pub fn new(qps: f64, burst: u32, now: std::time::Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            qps: qps.max(0.001),
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Take a token now, or say how long until one is there (then call again).
    pub fn take(&mut self, now: std::time::Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.qps))
        }
    }
}

/// A layer that holds requests until the bucket has a token. The wait is
/// in `poll_ready`, so kube's buffer in front of it queues the callers.
#[derive(Clone)]
pub struct RateLimitLayer {
    qps: f64,
    burst: u32,
}

impl RateLimitLayer {
    pub fn new(qps: f64, burst: u32) -> Self {
        RateLimitLayer { qps, burst }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            bucket: TokenBucket::new(self.qps, self.burst, tokio::time::Instant::now().into_std()),
            wait: None,
            permitted: false,
        }
    }
}

pub struct Limited<S> {
    inner: S,
    bucket: TokenBucket,
    wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    permitted: bool,
}

impl<S, B> tower::Service<http::Request<B>> for Limited<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        use std::future::Future as _;
        while !self.permitted {
            if let Some(wait) = self.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return std::task::Poll::Pending;
                }
                self.wait = None;
            }
            match self.bucket.take(tokio::time::Instant::now().into_std()) {
                Ok(()) => self.permitted = true,
                Err(d) => self.wait = Some(Box::pin(tokio::time::sleep(d))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.permitted = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = std::time::Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        assert_eq!(
            (b.take(t0), b.take(t0), b.take(t0)),
            (Ok(()), Ok(()), Ok(()))
        );
        assert_eq!(b.take(t0), Err(Duration::from_millis(100)));
        let t1 = t0 + Duration::from_millis(50);
        assert_eq!(b.take(t1), Err(Duration::from_millis(50)));
        let t2 = t0 + Duration::from_millis(100);
        assert_eq!(b.take(t2), Ok(()));
        // Idle time refills up to the burst, not beyond.
        let t3 = t2 + Duration::from_secs(60);
        assert_eq!(
            (b.take(t3), b.take(t3), b.take(t3)),
            (Ok(()), Ok(()), Ok(()))
        );
        assert!(b.take(t3).is_err());
    }

    fn c(method: &str, uri: &str) -> (&'static str, String) {
        let m: http::Method = method.parse().unwrap_or(http::Method::OPTIONS);
        let u: http::Uri = uri.parse().unwrap_or_default();
        classify(&m, &u)
    }

    #[test]
    fn requests_are_named_like_the_apiservers_own_counters() {
        let cases = [
            (
                "GET",
                "/api/v1/namespaces/a/pods?labelSelector=x",
                "list",
                "pods",
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods?watch=true&resourceVersion=5",
                "watch",
                "pods",
            ),
            ("GET", "/api/v1/pods?&watch=true", "watch", "pods"),
            (
                "GET",
                "/api/v1/namespaces/a/services/session-s1",
                "get",
                "services",
            ),
            ("POST", "/api/v1/namespaces/a/pods?", "create", "pods"),
            (
                "DELETE",
                "/api/v1/namespaces/a/pods/s1-runner-1",
                "delete",
                "pods",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/a/pods",
                "deletecollection",
                "pods",
            ),
            (
                "PATCH",
                "/apis/vteam.ambient-code/v1alpha2/namespaces/a/agenticsessions/s1/status?force=true",
                "patch",
                "agenticsessions/status",
            ),
            (
                "PUT",
                "/apis/vteam.ambient-code/v1alpha2/namespaces/a/agenticsessions/s1",
                "update",
                "agenticsessions",
            ),
            (
                "GET",
                "/apis/vteam.ambient-code/v1alpha2/agenticsessions?limit=100",
                "list",
                "agenticsessions",
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/a/events",
                "create",
                "events",
            ),
            (
                "PATCH",
                "/apis/coordination.k8s.io/v1/namespaces/s/leases/l",
                "patch",
                "leases",
            ),
            ("GET", "/api/v1/namespaces/a", "get", "namespaces"),
            ("GET", "/api/v1/namespaces", "list", "namespaces"),
            ("GET", "/version", "list", "unknown"),
        ];
        for (method, uri, verb, resource) in cases {
            assert_eq!(
                c(method, uri),
                (verb, resource.to_owned()),
                "{method} {uri}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_wait_for_their_token() {
        use tower::{Layer as _, Service as _, ServiceExt as _};
        let inner = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        });
        let mut svc = RateLimitLayer::new(10.0, 2).layer(inner);
        let started = tokio::time::Instant::now();
        for _ in 0..5 {
            let ready = svc.ready().await.unwrap_or_else(|e| match e {});
            let _ = ready.call(http::Request::new(())).await;
        }
        // Two at once (the burst), then one every 100 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }
}
