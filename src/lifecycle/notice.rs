//! Telling a running runner about spec changes: `POST
//! http://session-<name>.<ns>.svc:8001/workflow` (and `/repos`), behind a
//! trait so tests can inject failures. Errors are returned, never swallowed:
//! the planner records them as `UpdateFailed` and retries with backoff.

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

pub trait RunnerNotifier: Send + Sync + 'static {
    fn notify(&self, namespace: &str, session: &str, body: NoticeBody) -> NoticeFuture;
}

/// The real notifier: HTTP/1.1 to the session's Service, short timeout.
#[derive(Clone)]
pub struct HttpNotifier {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    /// Send every notice to this base URL instead of the session Service
    /// (local development and tests).
    base_override: Option<String>,
}

impl HttpNotifier {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        HttpNotifier {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
            base_override: None,
        }
    }

    pub fn with_base_url(mut self, base: impl Into<String>) -> Self {
        self.base_override = Some(base.into());
        self
    }

    pub fn url(&self, namespace: &str, session: &str, path: &str) -> String {
        match &self.base_override {
            Some(base) => format!("{}{path}", base.trim_end_matches('/')),
            None => format!(
                "http://{}.{namespace}.svc:{RUNNER_PORT}{path}",
                service_name(session)
            ),
        }
    }
}

impl RunnerNotifier for HttpNotifier {
    fn notify(&self, namespace: &str, session: &str, body: NoticeBody) -> NoticeFuture {
        let url = self.url(namespace, session, body.path());
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

    #[test]
    fn notices_go_to_the_session_service() {
        let n = HttpNotifier::new(Duration::from_secs(1));
        assert_eq!(
            n.url("team-a", "s1", "/workflow"),
            "http://session-s1.team-a.svc:8001/workflow"
        );
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
        let n = HttpNotifier::new(Duration::from_secs(2)).with_base_url(format!("http://{addr}"));
        let wf = Some(ReconciledWorkflow {
            git_url: Some("https://h/o/wf".into()),
            branch: Some("main".into()),
            path: None,
        });
        assert_eq!(n.notify("ns", "s1", NoticeBody::Workflow(wf)).await, Ok(()));
        let err = n
            .notify("ns", "s1", NoticeBody::Repos { repos: vec![] })
            .await;
        assert!(
            matches!(&err, Err(e) if e.contains("503") && e.contains("runner busy")),
            "{err:?}"
        );
        let gone =
            HttpNotifier::new(Duration::from_millis(300)).with_base_url("http://127.0.0.1:9");
        assert!(
            gone.notify("ns", "s1", NoticeBody::Workflow(None))
                .await
                .is_err()
        );
    }
}
