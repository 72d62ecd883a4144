//! Telling a running runner about spec changes in its own API, as the
//! runner contract describes it (the ambient-code runner: `POST /workflow`
//! `{gitUrl, branch, path}`, `POST /repos/add` `{url, branch, name}` for each
//! new repo or changed branch, `POST /repos/remove` `{name}` for each repo
//! gone), to `<runner>` from a URL template (default
//! `http://{podIP}:{port}`: the runner pod the reconciler made and
//! verified, never a name a tenant's Service could redirect), with the
//! attempt's token in the contract's header (`X-Ambient-Session-Token`);
//! behind a trait so tests can inject failures. Errors are returned, never
//! swallowed: the planner records them as `UpdateFailed` and retries with
//! backoff. What a runner answers is never copied anywhere: only the HTTP
//! status is reported.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::api::common::repo_name;
use crate::api::status::{ReconciledRepo, ReconciledWorkflow};

use super::contract::Notices;
use super::plan::service_name;

#[derive(Clone, Debug, PartialEq)]
pub enum NoticeBody {
    /// The workflow the runner should have (none: unload it).
    Workflow(Option<ReconciledWorkflow>),
    /// From the repos the runner has to the ones it should have.
    Repos {
        from: Vec<ReconciledRepo>,
        to: Vec<ReconciledRepo>,
    },
}

impl NoticeBody {
    pub fn what(&self) -> &'static str {
        match self {
            NoticeBody::Workflow(_) => "workflow",
            NoticeBody::Repos { .. } => "repos",
        }
    }
}

fn branch_or<'a>(b: Option<&'a str>, default: &'a str) -> &'a str {
    b.filter(|b| !b.trim().is_empty()).unwrap_or(default)
}

/// The runner's calls for one notice, in order: `(path, JSON body)`. For
/// repos: an add for each new URL or changed branch, then a remove for each
/// URL gone (the runner's add and remove are idempotent, so a retry after a
/// partial failure is safe).
pub fn calls(n: &Notices, body: &NoticeBody) -> Vec<(String, Value)> {
    let default = n.default_branch.as_str();
    match body {
        NoticeBody::Workflow(w) => {
            let w = w.clone().unwrap_or_default();
            let fields = [
                ("gitUrl", w.git_url.as_deref().unwrap_or_default()),
                ("branch", branch_or(w.branch.as_deref(), default)),
                ("path", w.path.as_deref().unwrap_or_default()),
            ];
            vec![(n.workflow.path.clone(), n.workflow.body_with(&fields))]
        }
        NoticeBody::Repos { from, to } => {
            let url = |r: &ReconciledRepo| r.url.clone().unwrap_or_default();
            // One clone per URL: the last entry wins, as in the operator.
            let mut wanted: Vec<&ReconciledRepo> = Vec::new();
            for r in to {
                wanted.retain(|w| url(w) != url(r));
                wanted.push(r);
            }
            let mut out = Vec::new();
            for r in &wanted {
                let u = url(r);
                let branch = branch_or(r.branch.as_deref(), default);
                let same = from
                    .iter()
                    .any(|f| url(f) == u && branch_or(f.branch.as_deref(), default) == branch);
                if !same {
                    let fields = [
                        ("url", u.as_str()),
                        ("branch", branch),
                        ("name", repo_name(&u)),
                    ];
                    out.push((n.repo_add.path.clone(), n.repo_add.body_with(&fields)));
                }
            }
            for f in from {
                let u = url(f);
                if !wanted.iter().any(|w| url(w) == u) {
                    let fields = [("name", repo_name(&u))];
                    out.push((n.repo_remove.path.clone(), n.repo_remove.body_with(&fields)));
                }
            }
            out
        }
    }
}

pub type NoticeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The one runner a notice is for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunnerRef<'a> {
    pub namespace: &'a str,
    pub session: &'a str,
    pub attempt: i64,
    /// The verified runner pod's IP.
    pub pod_ip: Option<&'a str>,
    /// The attempt's token (see `mark::Marker::token`).
    pub token: &'a str,
    /// The runner's port and API (the contract's).
    pub port: i32,
    pub api: &'a Notices,
}

pub trait RunnerNotifier: Send + Sync + 'static {
    fn notify(&self, runner: RunnerRef<'_>, body: NoticeBody) -> NoticeFuture;
}

pub const DEFAULT_RUNNER_URL_TEMPLATE: &str = "http://{podIP}:{port}";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Session,
    Service,
    Namespace,
    Port,
    Attempt,
    PodIp,
}

/// Where a session's runner answers: a URL with placeholders `{podIP}`,
/// `{session}`, `{service}` (`session-<name>`), `{namespace}`, `{port}`
/// (8001) and `{attempt}`, checked once at start: the host is `{podIP}`, an
/// IP literal, or a name under `.svc` (whole labels from the placeholders,
/// which hold DNS labels only), so no session name can move it off-cluster.
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
                "podIP" => Piece::PodIp,
                other => {
                    return Err(format!(
                        "{text:?}: unknown placeholder {{{other}}} (known: {{podIP}}, {{session}}, \
                         {{service}}, {{namespace}}, {{port}}, {{attempt}})"
                    ));
                }
            });
            rest = after;
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        let template = RunnerUrlTemplate { pieces };
        template.check_host(text)?;
        Ok(template)
    }
}

impl Default for RunnerUrlTemplate {
    fn default() -> Self {
        DEFAULT_RUNNER_URL_TEMPLATE
            .parse()
            .unwrap_or(RunnerUrlTemplate { pieces: Vec::new() })
    }
}

/// What a placeholder may stand for in a host: the rendered text of each
/// sample, to check the template's host shape once, at start.
fn sample(p: &Piece) -> &'static str {
    match p {
        Piece::Text(_) => "",
        Piece::Session | Piece::Service | Piece::Namespace => "label",
        Piece::Port => "8001",
        Piece::Attempt => "1",
        Piece::PodIp => "10.0.0.1",
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl RunnerUrlTemplate {
    /// The host is the pod's IP, an IP literal, or a cluster Service name.
    /// Checked on the template rendered with sample values: placeholders
    /// hold DNS labels at render time, so the shape cannot change later.
    fn check_host(&self, text: &str) -> Result<(), String> {
        let rendered: String = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.as_str(),
                other => sample(other),
            })
            .collect();
        let after = rendered.strip_prefix("http://").unwrap_or(&rendered);
        let host = &after[..after.find([':', '/', '?']).unwrap_or(after.len())];
        let bad = |why: &str| Err(format!("{text:?}: {why}"));
        if self.pieces.contains(&Piece::PodIp) {
            return if host == sample(&Piece::PodIp) {
                Ok(())
            } else {
                bad("{podIP} must be the whole host")
            };
        }
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Ok(());
        }
        let name = host.trim_end_matches('.');
        let in_cluster = name.ends_with(".svc") || name.contains(".svc.");
        if in_cluster && name.split('.').all(is_dns_label) {
            return Ok(());
        }
        bad(
            "the host must be {podIP}, an IP address, or a cluster Service name (…{namespace}.svc or …svc.<cluster-domain>)",
        )
    }

    /// The runner's base URL (no trailing slash), or why there is none: a
    /// pod without an IP yet, or a name that is not a DNS label (the
    /// webhook refuses those, V24; this holds without it).
    pub fn render(&self, runner: RunnerRef<'_>) -> Result<String, String> {
        for (what, value) in [("session", runner.session), ("namespace", runner.namespace)] {
            if !is_dns_label(value) {
                return Err(format!("the {what} name {value:?} is not a DNS label"));
            }
        }
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Session => out.push_str(runner.session),
                Piece::Service => out.push_str(&service_name(runner.session)),
                Piece::Namespace => out.push_str(runner.namespace),
                Piece::Port => out.push_str(&runner.port.to_string()),
                Piece::Attempt => out.push_str(&runner.attempt.to_string()),
                Piece::PodIp => {
                    let ip = runner
                        .pod_ip
                        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
                        .ok_or("the runner pod has no IP yet")?;
                    if ip.contains(':') {
                        out.push('[');
                        out.push_str(ip);
                        out.push(']');
                    } else {
                        out.push_str(ip);
                    }
                }
            }
        }
        let trimmed = out.trim_end_matches('/').len();
        out.truncate(trimmed);
        Ok(out)
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

    pub fn url(&self, runner: RunnerRef<'_>, path: &str) -> Result<String, String> {
        Ok(format!("{}{path}", self.template.render(runner)?))
    }
}

impl RunnerNotifier for HttpNotifier {
    fn notify(&self, runner: RunnerRef<'_>, body: NoticeBody) -> NoticeFuture {
        let base = self.template.render(runner);
        let calls = calls(runner.api, &body);
        let header = runner.api.header.clone();
        let token = runner.token.to_owned();
        let client = self.client.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let base = base?;
            for (path, payload) in calls {
                let url = format!("{base}{path}");
                let payload = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
                let req = http::Request::post(&url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(header.as_str(), token.as_str())
                    .body(Full::new(Bytes::from(payload)))
                    .map_err(|e| e.to_string())?;
                let resp = tokio::time::timeout(timeout, client.request(req))
                    .await
                    .map_err(|_| format!("POST {url}: no answer within {timeout:?}"))?
                    .map_err(|e| format!("POST {url}: {e}"))?;
                let status = resp.status();
                // The body is drained, never read into a message: what a
                // runner (or whatever answers) says must not reach the
                // session's status or Events.
                let _ = resp.into_body().collect().await;
                if !status.is_success() {
                    return Err(format!("POST {url}: the runner answered {status}"));
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;
    use serde_json::json;

    fn api() -> &'static Notices {
        &crate::lifecycle::contract::AMBIENT.notices
    }

    static S1: std::sync::LazyLock<RunnerRef<'static>> = std::sync::LazyLock::new(|| RunnerRef {
        namespace: "team-a",
        session: "s1",
        attempt: 2,
        pod_ip: Some("10.244.1.7"),
        token: "t0k3n",
        port: 8001,
        api: api(),
    });

    fn repo(url: &str, branch: &str) -> ReconciledRepo {
        ReconciledRepo {
            url: Some(url.into()),
            branch: Some(branch.into()),
            ..ReconciledRepo::default()
        }
    }

    #[test]
    fn repo_changes_become_the_runners_add_and_remove_calls() {
        let from = vec![
            repo("https://h/o/a.git", "main"),
            repo("https://h/o/b", "main"),
        ];
        let to = vec![
            repo("https://h/o/a.git", "dev"),
            repo("https://h/o/c", ""),
            repo("https://h/o/c", "v2"),
        ];
        let got = calls(
            api(),
            &NoticeBody::Repos {
                from: from.clone(),
                to,
            },
        );
        assert_eq!(
            got,
            vec![
                (
                    "/repos/add".to_owned(),
                    json!({"url": "https://h/o/a.git", "branch": "dev", "name": "a"})
                ),
                (
                    "/repos/add".to_owned(),
                    json!({"url": "https://h/o/c", "branch": "v2", "name": "c"})
                ),
                ("/repos/remove".to_owned(), json!({"name": "b"})),
            ]
        );
        // Nothing changed: nothing to say. A blank branch is the default one.
        let same = vec![repo("https://h/o/a.git", ""), repo("https://h/o/b", "main")];
        assert!(calls(api(), &NoticeBody::Repos { from, to: same }).is_empty());
        // No workflow: the runner's way to unload one is an empty gitUrl.
        assert_eq!(
            calls(api(), &NoticeBody::Workflow(None)),
            vec![(
                "/workflow".to_owned(),
                json!({"gitUrl": "", "branch": "main", "path": ""})
            )]
        );
    }

    fn template(t: &str) -> RunnerUrlTemplate {
        t.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn notices_go_to_the_verified_runner_pod_by_default() {
        let n = HttpNotifier::new(Duration::from_secs(1), RunnerUrlTemplate::default());
        assert_eq!(
            n.url(*S1, "/workflow").as_deref(),
            Ok("http://10.244.1.7:8001/workflow")
        );
        let v6 = RunnerRef {
            pod_ip: Some("fd00:10::7"),
            ..*S1
        };
        assert_eq!(n.url(v6, "/x").as_deref(), Ok("http://[fd00:10::7]:8001/x"));
        // No IP yet, or something that is not one: nowhere to send it.
        for ip in [None, Some("evil.example.com"), Some("")] {
            let r = RunnerRef { pod_ip: ip, ..*S1 };
            assert!(n.url(r, "/workflow").is_err(), "{ip:?}");
        }
    }

    #[test]
    fn the_runner_address_is_a_template_whose_host_stays_in_the_cluster() {
        assert_eq!(
            template("http://127.0.0.1:9000/{namespace}/{session}/{attempt}/")
                .render(*S1)
                .as_deref(),
            Ok("http://127.0.0.1:9000/team-a/s1/2")
        );
        assert_eq!(
            template("http://{service}.{namespace}.svc.cluster.example:{port}")
                .render(*S1)
                .as_deref(),
            Ok("http://session-s1.team-a.svc.cluster.example:8001")
        );
        // A name that is not a DNS label is never rendered into a host.
        let dotted = RunnerRef {
            session: "s1.evil.example.com",
            ..*S1
        };
        assert!(
            template("http://{session}.{namespace}.svc:{port}")
                .render(dotted)
                .is_err()
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
            (
                "http://{service}.{namespace}:{port}",
                "cluster Service name",
            ),
            (
                "http://{session}.example.com:{port}",
                "cluster Service name",
            ),
            (
                "http://runner-{podIP}:{port}",
                "{podIP} must be the whole host",
            ),
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
                post(|headers: axum::http::HeaderMap, body: String| async move {
                    if headers
                        .get("x-ambient-session-token")
                        .is_none_or(|t| t != "t0k3n")
                    {
                        StatusCode::UNAUTHORIZED
                    } else if body.contains("gitUrl") {
                        StatusCode::OK
                    } else {
                        StatusCode::BAD_REQUEST
                    }
                }),
            )
            .route(
                "/repos/remove",
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
        assert_eq!(n.notify(*S1, NoticeBody::Workflow(wf)).await, Ok(()));
        let gone = NoticeBody::Repos {
            from: vec![repo("https://h/o/a", "main")],
            to: vec![],
        };
        let err = n.notify(*S1, gone).await;
        // The status only: what the runner said is never repeated.
        assert!(
            matches!(&err, Err(e) if e.contains("503") && !e.contains("runner busy")),
            "{err:?}"
        );
        let wrong = RunnerRef {
            token: "other",
            ..*S1
        };
        let err = n.notify(wrong, NoticeBody::Workflow(None)).await;
        assert!(matches!(&err, Err(e) if e.contains("401")), "{err:?}");
        let gone = HttpNotifier::new(Duration::from_millis(300), template("http://127.0.0.1:9"));
        assert!(gone.notify(*S1, NoticeBody::Workflow(None)).await.is_err());
    }
}
