//! Telling a running runner about spec changes: `POST <runner>/workflow`
//! (and `/repos`), where `<runner>` comes from a URL template (default
//! `http://{service}.{namespace}.svc:{port}`), behind a trait so tests can
//! inject failures. Errors are returned, never swallowed: the planner
//! records them as `UpdateFailed` and retries with backoff.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::api::status::{ReconciledRepo, ReconciledWorkflow};

use super::plan::service_name;
use super::world::RUNNER_PORT;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum NoticeBody {
    Workflow(Option<ReconciledWorkflow>),
    Repos { repos: Vec<ReconciledRepo> },
}

impl NoticeBody {
    pub fn path(&self) -> &'static str {
        match self {
            NoticeBody::Workflow(_) => "/workflow",
            NoticeBody::Repos { .. } => "/repos",
        }
    }
}

pub type NoticeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The one runner a notice is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunnerRef<'a> {
    pub namespace: &'a str,
    pub session: &'a str,
    pub attempt: i64,
}

pub trait RunnerNotifier: Send + Sync + 'static {
    fn notify(&self, runner: RunnerRef<'_>, body: NoticeBody) -> NoticeFuture;
}

pub const DEFAULT_RUNNER_URL_TEMPLATE: &str = "http://{service}.{namespace}.svc:{port}";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Session,
    Service,
    Namespace,
    Port,
    Attempt,
}

/// Where a session's runner answers: a URL with placeholders `{session}`,
/// `{service}` (`session-<name>`), `{namespace}`, `{port}` (8001) and
/// `{attempt}`, checked once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerUrlTemplate {
    pieces: Vec<Piece>,
}

impl std::str::FromStr for RunnerUrlTemplate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if !text.starts_with("http://") {
            return Err(format!(
                "{text:?}: must start with http:// (runner notices are plain HTTP)"
            ));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            let (before, tail) = rest.split_at(open);
            if !before.is_empty() {
                pieces.push(Piece::Text(before.to_owned()));
            }
            let Some(inner) = tail.strip_prefix('{') else {
                return Err(format!("{text:?}: unbalanced '}}'"));
            };
            let Some((name, after)) = inner.split_once('}') else {
                return Err(format!("{text:?}: unclosed '{{'"));
            };
            pieces.push(match name {
                "session" => Piece::Session,
                "service" => Piece::Service,
                "namespace" => Piece::Namespace,
                "port" => Piece::Port,
                "attempt" => Piece::Attempt,
                other => {
                    return Err(format!(
                        "{text:?}: unknown placeholder {{{other}}} (known: {{session}}, \
                         {{service}}, {{namespace}}, {{port}}, {{attempt}})"
                    ));
                }
            });
            rest = after;
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(RunnerUrlTemplate { pieces })
    }
}

impl Default for RunnerUrlTemplate {
    fn default() -> Self {
        DEFAULT_RUNNER_URL_TEMPLATE
            .parse()
            .unwrap_or(RunnerUrlTemplate { pieces: Vec::new() })
    }
}

impl RunnerUrlTemplate {
    /// The runner's base URL (no trailing slash).
    pub fn render(&self, runner: RunnerRef<'_>) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Session => out.push_str(runner.session),
                Piece::Service => out.push_str(&service_name(runner.session)),
                Piece::Namespace => out.push_str(runner.namespace),
                Piece::Port => out.push_str(&RUNNER_PORT.to_string()),
                Piece::Attempt => out.push_str(&runner.attempt.to_string()),
            }
        }
        let trimmed = out.trim_end_matches('/').len();
        out.truncate(trimmed);
        out
    }
}

/// The real notifier: HTTP/1.1 to the runner, short timeout.
#[derive(Clone)]
pub struct HttpNotifier {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    template: RunnerUrlTemplate,
}

impl HttpNotifier {
    pub fn new(timeout: Duration, template: RunnerUrlTemplate) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        HttpNotifier {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
            template,
        }
    }

    pub fn url(&self, runner: RunnerRef<'_>, path: &str) -> String {
        format!("{}{path}", self.template.render(runner))
    }
}

impl RunnerNotifier for HttpNotifier {
    fn notify(&self, runner: RunnerRef<'_>, body: NoticeBody) -> NoticeFuture {
        let url = self.url(runner, body.path());
        let client = self.client.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let payload = match &body {
                NoticeBody::Workflow(w) => serde_json::to_vec(w),
                NoticeBody::Repos { .. } => serde_json::to_vec(&body),
            }
            .map_err(|e| e.to_string())?;
            let req = http::Request::post(&url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(payload)))
                .map_err(|e| e.to_string())?;
            let resp = tokio::time::timeout(timeout, client.request(req))
                .await
                .map_err(|_| format!("POST {url}: no answer within {timeout:?}"))?
                .map_err(|e| format!("POST {url}: {e}"))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            Err(format!(
                "POST {url}: {status}: {}",
                text.chars().take(200).collect::<String>()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;

    const S1: RunnerRef<'static> = RunnerRef {
        namespace: "team-a",
        session: "s1",
        attempt: 2,
    };

    fn template(t: &str) -> RunnerUrlTemplate {
        t.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn notices_go_to_the_session_service_by_default() {
        let n = HttpNotifier::new(Duration::from_secs(1), RunnerUrlTemplate::default());
        assert_eq!(
            n.url(S1, "/workflow"),
            "http://session-s1.team-a.svc:8001/workflow"
        );
    }

    #[test]
    fn the_runner_address_is_a_template() {
        assert_eq!(
            template("http://127.0.0.1:9000/{namespace}/{session}/{attempt}/").render(S1),
            "http://127.0.0.1:9000/team-a/s1/2"
        );
        assert_eq!(
            template("http://{service}.{namespace}.svc.cluster.example:{port}").render(S1),
            "http://session-s1.team-a.svc.cluster.example:8001"
        );
        for (bad, why) in [
            (
                "{service}.{namespace}.svc:{port}",
                "must start with http://",
            ),
            ("https://{service}:{port}", "must start with http://"),
            ("http://{service}.{ns}:{port}", "unknown placeholder {ns}"),
            (
                "http://{service:{port}",
                "unknown placeholder {service:{port}",
            ),
            ("http://{service", "unclosed '{'"),
            ("http://service}", "unbalanced '}'"),
        ] {
            match bad.parse::<RunnerUrlTemplate>() {
                Err(e) => assert!(e.contains(why), "{bad}: {e}"),
                Ok(t) => panic!("{bad} accepted: {t:?}"),
            }
        }
    }

    #[tokio::test]
    async fn answers_and_failures_are_reported_not_swallowed() {
        let app = Router::new()
            .route(
                "/workflow",
                post(|body: String| async move {
                    if body.contains("gitUrl") {
                        StatusCode::OK
                    } else {
                        StatusCode::BAD_REQUEST
                    }
                }),
            )
            .route(
                "/repos",
                post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "runner busy") }),
            );
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let n = HttpNotifier::new(Duration::from_secs(2), template(&format!("http://{addr}")));
        let wf = Some(ReconciledWorkflow {
            git_url: Some("https://h/o/wf".into()),
            branch: Some("main".into()),
            path: None,
            ..ReconciledWorkflow::default()
        });
        assert_eq!(n.notify(S1, NoticeBody::Workflow(wf)).await, Ok(()));
        let err = n.notify(S1, NoticeBody::Repos { repos: vec![] }).await;
        assert!(
            matches!(&err, Err(e) if e.contains("503") && e.contains("runner busy")),
            "{err:?}"
        );
        let gone = HttpNotifier::new(Duration::from_millis(300), template("http://127.0.0.1:9"));
        assert!(gone.notify(S1, NoticeBody::Workflow(None)).await.is_err());
    }
}
