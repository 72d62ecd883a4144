//! A stand-in for the ambient-code runner's HTTP API (platform 0b59fe7,
//! `components/runners/ambient-runner/ambient_runner/`): `app.py`'s token
//! check and `endpoints/{health,workflow,repos}.py`, with the state those
//! endpoints keep (the workflow variables, the cloned repos, REPOS_JSON),
//! answering as they answer. Every runner pod's IP is 127.0.0.1 here, so
//! one server plays them all under `/{namespace}/{session}/{attempt}`
//! (`--runner-url-template http://ADDR/{namespace}/{session}/{attempt}`).
//! Each runner's environment is read from its pod as the kubelet would
//! (the token from the Secret its AGUI_TOKEN names) the first time it is
//! contacted: a runner is contacted only while it is the current one, so
//! that reads the Secret it started with. Anything the real runner would
//! reject is answered as it would, and recorded in `rejected`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use serde_json::{Value, json};
use tokio::time::Instant;

/// One request a runner received.
#[derive(Clone, Debug)]
pub struct Notice {
    pub namespace: String,
    pub session: String,
    pub attempt: String,
    /// `/workflow`, `/repos/add`, `/repos/remove`.
    pub path: String,
    pub body: Value,
    pub at: Instant,
    /// Answered 2xx.
    pub ok: bool,
    /// `X-Ambient-Session-Token`.
    pub token: String,
}

/// What one runner holds, as its endpoints keep it.
#[derive(Clone, Debug, Default)]
pub struct Runner {
    /// AGUI_TOKEN from its Secret.
    pub token: String,
    /// ACTIVE_WORKFLOW_GIT_URL / _BRANCH / _PATH, REPOS_JSON, ...
    pub env: BTreeMap<String, String>,
    /// `/workspace/repos/<name>` → (url, branch checked out).
    pub repos: BTreeMap<String, (String, String)>,
}

impl Runner {
    /// The workflow as the runner has it: (gitUrl, branch, path).
    pub fn workflow(&self) -> (String, String, String) {
        let get = |k: &str| self.env.get(k).cloned().unwrap_or_default();
        let branch = Some(get("ACTIVE_WORKFLOW_BRANCH"))
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| "main".into());
        (
            get("ACTIVE_WORKFLOW_GIT_URL"),
            branch,
            get("ACTIVE_WORKFLOW_PATH"),
        )
    }
}

type Key = (String, String, String);

#[derive(Clone)]
pub struct StandIn {
    client: kube::Client,
    runners: Arc<Mutex<BTreeMap<Key, Runner>>>,
    seen: Arc<Mutex<Vec<Notice>>>,
    /// What the real runner would have refused (a 4xx/5xx it would send
    /// for a well-behaved client's mistake): should stay empty.
    rejected: Arc<Mutex<Vec<String>>>,
    /// Answer as a runner whose context is not initialized yet (503).
    pub busy: Arc<AtomicBool>,
}

/// `body.get(k, default)` for a string field.
fn field(body: &Value, k: &str, default: &str) -> String {
    body.get(k)
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_owned()
}

impl Runner {
    /// REPOS_JSON as a list (what the runner's endpoints rewrite).
    fn listed(&self) -> Vec<Value> {
        self.env
            .get("REPOS_JSON")
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default()
    }

    fn set_listed(&mut self, listed: Vec<Value>) {
        self.env
            .insert("REPOS_JSON".into(), Value::Array(listed).to_string());
    }
}

/// `url.split("/")[-1].removesuffix(".git")`, as the runner names a repo.
fn repo_name(url: &str) -> String {
    let last = url.rsplit('/').next().unwrap_or(url);
    last.strip_suffix(".git").unwrap_or(last).to_owned()
}

fn boxed(status: StatusCode, d: &str) -> Box<Response> {
    Box::new(detail(status, d))
}

fn detail(status: StatusCode, detail: &str) -> Response {
    (status, axum::Json(json!({"detail": detail}))).into_response()
}

impl StandIn {
    /// Serve on 127.0.0.1; returns the stand-in and the URL template.
    pub async fn start(client: kube::Client) -> (StandIn, String) {
        let s = StandIn {
            client,
            runners: Arc::default(),
            seen: Arc::default(),
            rejected: Arc::default(),
            busy: Arc::default(),
        };
        let app = Router::new()
            .route("/{ns}/{session}/{attempt}/health", get(health))
            .route("/{ns}/{session}/{attempt}/workflow", post(workflow))
            .route("/{ns}/{session}/{attempt}/repos/add", post(repos_add))
            .route("/{ns}/{session}/{attempt}/repos/remove", post(repos_remove))
            .fallback(|| async { detail(StatusCode::NOT_FOUND, "Not Found") })
            .with_state(s.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (
            s,
            format!("http://{addr}/{{namespace}}/{{session}}/{{attempt}}"),
        )
    }

    /// Every request to `session`'s runners, in order.
    pub fn of(&self, session: &str) -> Vec<Notice> {
        self.seen
            .lock()
            .map(|s| s.iter().filter(|n| n.session == session).cloned().collect())
            .unwrap_or_default()
    }

    pub fn rejected(&self) -> Vec<String> {
        self.rejected.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The runner of `attempt`, as it is now.
    pub fn runner(&self, ns: &str, session: &str, attempt: i64) -> Option<Runner> {
        let key = (ns.to_owned(), session.to_owned(), attempt.to_string());
        self.runners.lock().ok()?.get(&key).cloned()
    }

    fn reject(&self, why: String) {
        if let Ok(mut r) = self.rejected.lock() {
            r.push(why);
        }
    }

    /// The runner's environment from its pod, as the kubelet resolves it.
    async fn boot(&self, key: &Key) -> Result<Runner, String> {
        if let Some(r) = self.runners.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(r);
        }
        let (ns, session, attempt) = key;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pod = pods
            .get(&format!("{session}-runner-{attempt}"))
            .await
            .map_err(|e| e.to_string())?;
        let container = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
            .cloned()
            .unwrap_or_default();
        let spec = pod.spec.unwrap_or_default();
        let runner = spec
            .containers
            .iter()
            .find(|c| c.name == container)
            .ok_or(format!("no runner container {container:?}"))?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let mut env = BTreeMap::new();
        for e in runner.env.iter().flatten() {
            let value = match e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                Some(r) => {
                    let s = secrets.get(&r.name).await.map_err(|e| e.to_string())?;
                    let bytes = s
                        .data
                        .and_then(|d| d.get(&r.key).cloned())
                        .ok_or(format!("Secret {} has no {}", r.name, r.key))?;
                    String::from_utf8_lossy(&bytes.0).into_owned()
                }
                None => e.value.clone().unwrap_or_default(),
            };
            env.insert(e.name.clone(), value);
        }
        // init-hydrate cloned REPOS_JSON's repos into /workspace/repos.
        let listed: Vec<Value> = env
            .get("REPOS_JSON")
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let repos = listed
            .iter()
            .filter_map(|r| {
                let url = r["url"].as_str()?.to_owned();
                let branch = r["branch"].as_str().unwrap_or_default().to_owned();
                Some((repo_name(&url), (url, branch)))
            })
            .collect();
        let r = Runner {
            token: env.get("AGUI_TOKEN").cloned().unwrap_or_default(),
            env,
            repos,
        };
        if let Ok(mut m) = self.runners.lock() {
            m.insert(key.clone(), r.clone());
        }
        Ok(r)
    }

    /// What every endpoint but /health does first: the runner exists, its
    /// context is up, the token matches (app.py `_require_session_token`),
    /// the body is a JSON object (`await request.json()`).
    async fn enter(
        &self,
        key: &Key,
        path: &str,
        headers: &HeaderMap,
        body: &str,
    ) -> Result<Value, Box<Response>> {
        let token = headers
            .get("x-ambient-session-token")
            .and_then(|t| t.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        let busy = self.busy.load(Ordering::Relaxed);
        let runner = self.boot(key).await;
        let ok_token = runner
            .as_ref()
            .is_ok_and(|r| r.token.is_empty() || r.token == token);
        let well_formed = parsed.as_ref().is_some_and(Value::is_object);
        let ok = runner.is_ok() && ok_token && well_formed && !busy;
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(Notice {
                namespace: key.0.clone(),
                session: key.1.clone(),
                attempt: key.2.clone(),
                path: path.to_owned(),
                body: parsed.clone().unwrap_or(Value::String(body.to_owned())),
                at: Instant::now(),
                ok,
                token,
            });
        }
        if let Err(e) = runner {
            self.reject(format!("{key:?} {path}: no such runner: {e}"));
            return Err(Box::new(detail(StatusCode::BAD_GATEWAY, "no runner")));
        }
        if !ok_token {
            self.reject(format!("{key:?} {path}: wrong or missing token"));
            return Err(Box::new(detail(StatusCode::UNAUTHORIZED, "Unauthorized")));
        }
        if busy {
            return Err(boxed(
                StatusCode::SERVICE_UNAVAILABLE,
                "Context not initialized",
            ));
        }
        match parsed {
            Some(v @ Value::Object(_)) => Ok(v),
            _ => {
                self.reject(format!("{key:?} {path}: body is not a JSON object: {body}"));
                Err(boxed(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                ))
            }
        }
    }

    fn update(&self, key: &Key, f: impl FnOnce(&mut Runner)) {
        if let Ok(mut m) = self.runners.lock()
            && let Some(r) = m.get_mut(key)
        {
            f(r);
        }
    }

    /// `(body.get(k) or default).strip()`: a non-string is a 500 there.
    fn text(
        &self,
        key: &Key,
        body: &Value,
        k: &str,
        default: &str,
    ) -> Result<String, Box<Response>> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(default.to_owned()),
            Some(Value::String(s)) if s.is_empty() => Ok(default.to_owned()),
            Some(Value::String(s)) => Ok(s.trim().to_owned()),
            Some(other) => {
                self.reject(format!("{key:?}: {k} is not a string: {other}"));
                Err(boxed(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                ))
            }
        }
    }
}

fn key(p: (String, String, String)) -> Key {
    p
}

async fn health(State(s): State<StandIn>, Path(p): Path<(String, String, String)>) -> Response {
    let session = s.boot(&key(p.clone())).await.ok().map(|_| p.1);
    axum::Json(json!({"status": "healthy", "session_id": session})).into_response()
}

/// endpoints/workflow.py `change_workflow`.
async fn workflow(
    State(s): State<StandIn>,
    Path(p): Path<(String, String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let k = key(p);
    let body = match s.enter(&k, "/workflow", &headers, &body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let fields = (|| {
        let git_url = s.text(&k, &body, "gitUrl", "")?;
        let branch = Some(s.text(&k, &body, "branch", "main")?)
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "main".into());
        let path = s.text(&k, &body, "path", "")?;
        Ok::<_, Box<Response>>((git_url, branch, path))
    })();
    let (git_url, branch, path) = match fields {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let current = s
        .runner(&k.0, &k.1, k.2.parse().unwrap_or(0))
        .map(|r| r.workflow())
        .unwrap_or_default();
    let message = if current == (git_url.clone(), branch.clone(), path.clone()) {
        "Workflow already active"
    } else {
        s.update(&k, |r| {
            r.env
                .insert("ACTIVE_WORKFLOW_GIT_URL".into(), git_url.clone());
            r.env
                .insert("ACTIVE_WORKFLOW_BRANCH".into(), branch.clone());
            r.env.insert("ACTIVE_WORKFLOW_PATH".into(), path.clone());
        });
        "Workflow updated"
    };
    axum::Json(json!({"message": message, "gitUrl": git_url, "branch": branch, "path": path}))
        .into_response()
}

/// endpoints/repos.py `add_repo` (the clone always succeeds here).
async fn repos_add(
    State(s): State<StandIn>,
    Path(p): Path<(String, String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let k = key(p);
    let body = match s.enter(&k, "/repos/add", &headers, &body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let url = field(&body, "url", "");
    let branch = field(&body, "branch", "main");
    let mut name = field(&body, "name", "");
    if url.is_empty() {
        s.reject(format!("{k:?}: /repos/add without a url"));
        return detail(StatusCode::BAD_REQUEST, "Repository URL is required");
    }
    if name.is_empty() {
        name = repo_name(&url);
    }
    let mut newly = false;
    s.update(&k, |r| {
        newly = !r.repos.contains_key(&name);
        r.repos.insert(name.clone(), (url.clone(), branch.clone()));
        if newly {
            let mut listed = r.listed();
            listed.push(json!({"name": name, "input": {"url": url, "branch": branch}}));
            r.set_listed(listed);
        }
    });
    axum::Json(json!({"message": "Repository added", "name": name,
                      "path": format!("/workspace/repos/{name}"), "newly_cloned": newly}))
    .into_response()
}

/// endpoints/repos.py `remove_repo`.
async fn repos_remove(
    State(s): State<StandIn>,
    Path(p): Path<(String, String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let k = key(p);
    let body = match s.enter(&k, "/repos/remove", &headers, &body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let name = field(&body, "name", "");
    s.update(&k, |r| {
        r.repos.remove(&name);
        let kept: Vec<Value> = r
            .listed()
            .into_iter()
            .filter(|x| x.get("name").and_then(Value::as_str) != Some(name.as_str()))
            .collect();
        r.set_listed(kept);
    });
    axum::Json(json!({"message": "Repository removed"})).into_response()
}
