//! The reconciler's driver against a scripted API server, for what a real
//! kube-apiserver cannot be made to show on demand: stale lists, 500s,
//! hung calls, closed watches, 410 Gone, lost status writes. Everything
//! else runs against the real apiserver (tests/apiserver_reconcile.rs).

mod common;

use std::sync::{Arc, Mutex};

use agentic_webhook::api::resource::AgenticSession;
use agentic_webhook::apiclient;
use agentic_webhook::lifecycle::cache::CacheWriters;
use agentic_webhook::lifecycle::contract;
use agentic_webhook::lifecycle::controller::{
    Context, Error, error_policy, reconcile, run_controller,
};
use agentic_webhook::lifecycle::mark::{MARK, Marker};
use agentic_webhook::lifecycle::metrics::Metrics;
use agentic_webhook::lifecycle::notice::{NoticeBody, NoticeFuture, RunnerNotifier, RunnerRef};
use agentic_webhook::lifecycle::plan::PlanConfig;
use agentic_webhook::lifecycle::world::RunnerConfig;
use agentic_webhook::telemetry::Registry;
use common::mockapi::{
    self, Log, Recorded, Reply, event, lines, ok, quiet, stall, status, status_body, watch,
};
use jiff::Timestamp;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

const SESSIONS: &str = "/apis/vteam.ambient-code/v1alpha2/namespaces/team-a/agenticsessions";
const PODS: &str = "/api/v1/namespaces/team-a/pods";
const SERVICES: &str = "/api/v1/namespaces/team-a/services";
const SECRETS: &str = "/api/v1/namespaces/team-a/secrets";

/// The reconciler's key in these tests.
fn marker() -> Marker {
    Marker::new(&[9; 32])
}

/// What the token Secret's create answers.
fn secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "ambient-runner-token-s1", "namespace": "team-a"}})
}

fn clock() -> Timestamp {
    "2026-11-23T06:00:00Z"
        .parse()
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

#[derive(Default)]
struct StubNotifier {
    fail: bool,
    calls: Mutex<Vec<(String, String, Value)>>,
}

impl RunnerNotifier for StubNotifier {
    fn notify(&self, runner: RunnerRef<'_>, body: NoticeBody) -> NoticeFuture {
        if let Ok(mut c) = self.calls.lock() {
            let calls = agentic_webhook::lifecycle::notice::calls(runner.api, &body);
            c.push((
                runner.namespace.into(),
                body.what().into(),
                serde_json::to_value(calls).expect("serializes"),
            ));
        }
        let fail = self.fail;
        Box::pin(async move {
            if fail {
                Err("dial tcp: lookup session-s1.team-a.svc: no such host".into())
            } else {
                Ok(())
            }
        })
    }
}

fn session(status: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
        "metadata": {"name": "s1", "namespace": "team-a", "uid": "uid-s1", "generation": 2,
                     "resourceVersion": "41", "annotations": annotations},
        "spec": {"initialPrompt": "go", "interactive": true, "mainRepo": "api",
                 "repos": [{"url": "https://github.com/acme/api.git", "branch": "main"}],
                 "activeWorkflow": {"gitUrl": "https://github.com/acme/wf.git", "branch": "main", "path": "flows"}},
        "status": status,
    })
}

fn pod_list(pods: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "50"}, "items": pods})
}

fn runner_pod(attempt: i64, container_state: Value, ready: bool) -> Value {
    let name = format!("s1-runner-{attempt}");
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a",
            "uid": format!("uid-s1-runner-{attempt}"),
            "labels": {"vteam.ambient-code/session": "s1", "vteam.ambient-code/attempt": attempt.to_string()},
            "annotations": {"vteam.ambient-code/repos": "[{\"url\":\"https://github.com/acme/api.git\",\"branch\":\"main\"}]",
                            MARK: marker().pod_mark("team-a", &name, "uid-s1", attempt)},
            "ownerReferences": [{"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession", "name": "s1",
                                 "uid": "uid-s1", "controller": true}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "runner", "ready": ready, "restartCount": 0, "image": "r", "imageID": "", "state": container_state}]}})
}

fn service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "session-s1", "namespace": "team-a",
                        "annotations": {MARK: marker().service_mark("team-a", "session-s1", "uid-s1")}},
           "spec": {"selector": {"vteam.ambient-code/session": "s1"}}})
}

/// The reconciler's series and the registry that exports them.
struct Observed {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

impl Observed {
    fn render(&self) -> String {
        self.registry.render()
    }
}

fn observed() -> Observed {
    let registry = Registry::new();
    Observed {
        metrics: Metrics::register(&registry),
        registry,
    }
}

/// The named alternative contract (no service account): these tests are
/// about the driver's faults, not the ambient runner's identity.
fn minimal_runner() -> RunnerConfig {
    let text = include_str!("../examples/runner-contracts/minimal.yaml");
    RunnerConfig {
        contract: Arc::new(contract::load(text).unwrap_or_else(|e| panic!("{e}"))),
        ..RunnerConfig::with_image("runner:test")
    }
}

fn ctx(client: kube::Client, notifier: Arc<StubNotifier>) -> Arc<Context> {
    ctx_with_metrics(client, notifier, observed().metrics)
}

fn ctx_with_metrics(
    client: kube::Client,
    notifier: Arc<StubNotifier>,
    metrics: Arc<Metrics>,
) -> Arc<Context> {
    Context::new(
        client,
        minimal_runner(),
        PlanConfig::default(),
        notifier,
        metrics,
        marker(),
    )
    .with_clock(clock)
}

/// The context's pod and service caches, filled as a completed list.
fn seed(ctx: &Context, pods: Vec<Value>, services: Vec<Value>) -> CacheWriters {
    let mut w = ctx
        .take_cache_writers()
        .unwrap_or_else(|| panic!("caches taken"));
    let parse = |v: Value| serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
    w.seed(
        pods.into_iter().map(parse).collect(),
        services
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}")))
            .collect(),
    );
    w
}

async fn reconcile_json(
    obj: Value,
    script: Vec<mockapi::Reply>,
    notifier: Arc<StubNotifier>,
) -> (Log, Result<(), String>) {
    let (client, log) = mockapi::client(script);
    let s: AgenticSession = serde_json::from_value(obj).unwrap_or_else(|e| panic!("{e}"));
    let ctx = ctx(client, notifier);
    let _writers = seed(&ctx, vec![], vec![service()]);
    let res = reconcile(Arc::new(s), ctx)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    (log, res)
}

/// The Event recorded once the status is written.
fn events_post() -> String {
    "POST /apis/events.k8s.io/v1/namespaces/team-a/events?".to_owned()
}

fn status_apply() -> String {
    format!("PATCH {SESSIONS}/s1/status?&force=true&fieldManager=agentic-reconciler")
}

/// The cache has not seen the pod yet; the create says it exists, and the
/// pod found under the name carries the reconciler's mark.
#[tokio::test]
async fn a_pod_that_already_exists_is_adopted_not_duplicated() {
    let obj = session(json!({"phase": "Pending", "attempt": 1}), json!({}));
    let pending = json!({"waiting": {"reason": "ContainerCreating"}});
    let (log, res) = reconcile_json(
        obj.clone(),
        vec![
            ok(secret()),
            status(409, "AlreadyExists"),
            ok(runner_pod(1, pending, false)),
            ok(obj),
        ],
        Arc::new(StubNotifier::default()),
    )
    .await;
    res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines(&log),
        vec![
            format!("POST {SECRETS}?"),
            format!("POST {PODS}?"),
            format!("GET {PODS}/s1-runner-1"),
            status_apply(),
            events_post()
        ]
    );
}

/// The same, but the pod under the name is not the reconciler's: the
/// session waits with NameTaken, no attempt is spent, nothing is adopted.
#[tokio::test]
async fn a_pod_squatting_the_runners_name_is_not_adopted() {
    let obj = session(json!({"phase": "Pending", "attempt": 1}), json!({}));
    let mut squatter = runner_pod(1, json!({"running": {}}), true);
    squatter["metadata"]["annotations"] = json!({});
    let (log, res) = reconcile_json(
        obj.clone(),
        vec![
            ok(secret()),
            status(409, "AlreadyExists"),
            ok(squatter),
            ok(obj),
        ],
        Arc::new(StubNotifier::default()),
    )
    .await;
    res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines(&log),
        vec![
            format!("POST {SECRETS}?"),
            format!("POST {PODS}?"),
            format!("GET {PODS}/s1-runner-1"),
            status_apply(),
            events_post()
        ]
    );
    let rec = mockapi::recorded(&log);
    let st = rec
        .iter()
        .find(|r| r.line() == status_apply())
        .and_then(|r| r.body.clone())
        .unwrap_or_default();
    assert_eq!(st["status"]["phase"], "Pending", "{st}");
    assert_eq!(st["status"]["attempt"], 1);
    let created = st["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodCreated")
        .cloned()
        .unwrap_or_default();
    assert_eq!(created["reason"], "NameTaken", "{st}");
}

#[tokio::test]
async fn api_errors_requeue_with_growing_backoff_and_are_counted() {
    use agentic_webhook::lifecycle::controller::export_phases;
    let (client, _log) = mockapi::client(vec![]);
    let metrics = observed();
    let ctx = ctx_with_metrics(
        client,
        Arc::new(StubNotifier::default()),
        metrics.metrics.clone(),
    );
    let _writers = seed(&ctx, vec![], vec![]);
    let s: Arc<AgenticSession> = Arc::new(
        serde_json::from_value(session(json!({"phase": "Pending"}), json!({})))
            .expect("the expected shape"),
    );
    let mut delays = Vec::new();
    for _ in 0..3 {
        let err = reconcile(s.clone(), ctx.clone())
            .await
            .err()
            .unwrap_or_else(|| panic!("500s must fail"));
        delays.push(error_policy(s.clone(), &err, ctx.clone()));
    }
    assert_eq!(
        delays,
        vec![
            Action::requeue(Duration::from_secs(1)),
            Action::requeue(Duration::from_secs(2)),
            Action::requeue(Duration::from_secs(4))
        ]
    );
    export_phases(&metrics.metrics, &[s.clone(), s]);
    let text = metrics.render();
    assert!(
        text.contains(r#"agentic_webhook_reconciles_total{result="error"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("agentic_webhook_reconcile_errors_total 3"),
        "{text}"
    );
    assert!(
        text.contains(r#"agentic_webhook_sessions{phase="Pending"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"agentic_webhook_sessions{phase="Running"} 0"#),
        "{text}"
    );
    assert!(
        text.contains("agentic_webhook_reconcile_duration_seconds_count 3"),
        "{text}"
    );
}

fn parse(obj: Value) -> Arc<AgenticSession> {
    Arc::new(serde_json::from_value(obj).unwrap_or_else(|e| panic!("{e}")))
}

#[tokio::test(start_paused = true)]
async fn a_stalled_api_call_times_out_is_retried_with_backoff_and_creates_no_second_pod() {
    let obj = session(json!({"phase": "Pending", "attempt": 1}), json!({}));
    // The apiserver created the pod, but its answer never came back.
    let created = runner_pod(
        1,
        json!({"waiting": {"reason": "ContainerCreating"}}),
        false,
    );
    let (client, log) = mockapi::client_with_deadline(
        vec![ok(secret()), stall(), ok(obj.clone())],
        Duration::from_secs(30),
    );
    let ctx = ctx(client, Arc::new(StubNotifier::default()));
    let mut writers = seed(&ctx, vec![], vec![service()]);
    let s = parse(obj);

    let started = Instant::now();
    let err = reconcile(s.clone(), ctx.clone())
        .await
        .err()
        .unwrap_or_else(|| panic!("a stalled create must fail the reconcile"));
    let waited = started.elapsed();
    assert!(
        matches!(&err, Error::Kube(e) if apiclient::is_timeout(e)),
        "{err}"
    );
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "gave up after the 30s deadline, not before or long after: {waited:?}"
    );
    assert_eq!(
        error_policy(s.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );

    // The watch delivers the pod the stalled call created.
    writers.apply_pod(serde_json::from_value(created).unwrap_or_else(|e| panic!("{e}")));
    reconcile(s, ctx).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines(&log),
        vec![
            format!("POST {SECRETS}?"),
            format!("POST {PODS}?"),
            status_apply(),
            events_post()
        ],
        "the retry sees the pod the stalled call created and does not create another"
    );
    let rec = mockapi::recorded(&log);
    let st = rec
        .iter()
        .rfind(|r| r.line() == status_apply())
        .and_then(|r| r.body.clone())
        .unwrap_or_default();
    assert_eq!(st["status"]["phase"], "Creating", "the status is not lost");
    assert_eq!(st["status"]["attempt"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_reconcile_that_outlives_its_deadline_is_abandoned_and_requeued() {
    let obj = session(json!({"phase": "Pending", "attempt": 1}), json!({}));
    // No response deadline on this client: the whole-reconcile bound must act.
    let (client, log) = mockapi::client(vec![stall()]);
    let metrics = observed();
    let ctx = ctx_with_metrics(
        client,
        Arc::new(StubNotifier::default()),
        metrics.metrics.clone(),
    )
    .with_reconcile_timeout(Duration::from_secs(10));
    let _writers = seed(&ctx, vec![], vec![service()]);
    let s = parse(obj);
    let err = reconcile(s.clone(), ctx.clone())
        .await
        .err()
        .unwrap_or_else(|| panic!("a hung reconcile must fail"));
    assert_eq!(err.to_string(), "reconcile did not finish within 10s");
    assert_eq!(
        error_policy(s, &err, ctx),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(lines(&log), vec![format!("POST {SECRETS}?")]);
    assert!(
        metrics
            .render()
            .contains(r#"agentic_webhook_reconciles_total{result="error"} 1"#)
    );
}

/// A new session: its first reconcile writes status Pending (which this
/// scripted API refuses, so nothing else follows).
fn named(name: &str, resource_version: &str) -> Value {
    let mut s = session(Value::Null, json!({}));
    s["metadata"]["name"] = json!(name);
    s["metadata"]["uid"] = json!(format!("uid-{name}"));
    s["metadata"]["resourceVersion"] = json!(resource_version);
    s
}

fn session_list(items: Vec<Value>, resource_version: &str) -> Value {
    json!({"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSessionList",
           "metadata": {"resourceVersion": resource_version}, "items": items})
}

/// Session list/watch traffic scripted per call; owned pods and services
/// are quiet; a reconcile's reads find nothing to do.
fn cluster() -> impl FnMut(&Recorded) -> Reply + Send + 'static {
    let (mut lists, mut watches) = (0, 0);
    move |r: &Recorded| {
        let path = r.uri.split('?').next().unwrap_or_default();
        match (r.method.as_str(), path) {
            ("GET", SESSIONS) if r.is_watch() => {
                watches += 1;
                match watches {
                    // The connection closes after one change.
                    1 => watch(vec![event("MODIFIED", named("s1", "11"))]),
                    // The resume point fell out of the watch cache.
                    2 => watch(vec![event("ERROR", status_body(410, "Expired"))]),
                    _ => quiet(vec![]),
                }
            }
            ("GET", SESSIONS) => {
                lists += 1;
                match lists {
                    1 => stall(),
                    2 => status(500, "InternalError"),
                    3 => ok(session_list(vec![named("s1", "10")], "10")),
                    _ => ok(session_list(
                        vec![named("s1", "11"), named("s2", "19")],
                        "20",
                    )),
                }
            }
            ("GET", PODS | SERVICES) if r.is_watch() => quiet(vec![]),
            ("GET", PODS) => ok(pod_list(vec![])),
            ("GET", SERVICES) => ok(
                json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "50"}, "items": []}),
            ),
            ("GET", p) if p.starts_with(SERVICES) => ok(service()),
            _ => status(405, "MethodNotAllowed"),
        }
    }
}

fn reconciled(log: &Log, name: &str) -> usize {
    let write = format!("PATCH {SESSIONS}/{name}/status");
    lines(log).iter().filter(|l| l.starts_with(&write)).count()
}

#[tokio::test(start_paused = true)]
async fn the_controller_outlasts_a_hung_list_api_errors_a_closed_watch_and_410_gone() {
    let (client, log) = mockapi::routed(cluster(), Duration::from_secs(30));
    let metrics = observed();
    let ctx = ctx_with_metrics(
        client,
        Arc::new(StubNotifier::default()),
        metrics.metrics.clone(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let controller = tokio::spawn(run_controller(ctx, Some("team-a".into()), {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));

    // s2 only exists in the list made after the 410.
    let waited = tokio::time::timeout(Duration::from_secs(600), async {
        while reconciled(&log, "s2") == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let rec = mockapi::recorded(&log);
    let all: Vec<String> = rec.iter().map(Recorded::line).collect();
    assert!(waited.is_ok(), "s2 was never reconciled: {all:#?}");
    assert!(
        !controller.is_finished(),
        "the controller must not exit on watch errors"
    );

    let sessions: Vec<&Recorded> = rec
        .iter()
        .filter(|r| r.method == "GET" && r.uri.starts_with(&format!("{SESSIONS}?")))
        .collect();
    let list_at: Vec<Instant> = sessions
        .iter()
        .filter(|r| !r.is_watch())
        .map(|r| r.at)
        .collect();
    let watches: Vec<&&Recorded> = sessions.iter().filter(|r| r.is_watch()).collect();
    assert_eq!(list_at.len(), 4, "{all:#?}");
    assert_eq!(watches.len(), 3, "{all:#?}");
    let gap = |a: Instant, b: Instant| b.duration_since(a);
    assert!(
        gap(list_at[0], list_at[1]) >= Duration::from_millis(30_800),
        "the hung list is cut at the 30s deadline, then backed off: {:?}",
        gap(list_at[0], list_at[1])
    );
    assert!(
        gap(list_at[1], list_at[2]) >= Duration::from_millis(1_600),
        "the second error in a row waits longer: {:?}",
        gap(list_at[1], list_at[2])
    );
    assert!(
        watches[0].uri.contains("resourceVersion=10"),
        "{}",
        watches[0].uri
    );
    assert!(
        watches[1].uri.contains("resourceVersion=11"),
        "a closed watch resumes from the last event seen, without a re-list: {}",
        watches[1].uri
    );
    assert!(watches[1].at < list_at[3]);
    assert!(
        gap(watches[1].at, list_at[3]) >= Duration::from_millis(800),
        "410 Gone re-lists after a backoff: {:?}",
        gap(watches[1].at, list_at[3])
    );
    assert!(
        watches[2].uri.contains("resourceVersion=20"),
        "{}",
        watches[2].uri
    );
    assert!(reconciled(&log, "s1") >= 1);
    let text = metrics.render();
    assert!(
        text.contains("agentic_webhook_watch_errors_total 3"),
        "hung list, 500 and 410 are each counted: {text}"
    );
    assert!(
        !all.iter()
            .any(|l| l.starts_with("POST") || l.starts_with("DELETE")),
        "sessions whose status cannot be written get no pods: {all:#?}"
    );

    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(60), controller).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "the controller stops when asked"
    );
}

/// Every status write is refused: what the runner was told lives only in
/// the controller's memory.
fn refusing_status_writes() -> impl FnMut(&Recorded) -> Reply + Send + 'static {
    |_: &Recorded| status(500, "InternalError")
}

fn running_pod(uid: &str) -> Value {
    let mut pod = runner_pod(1, json!({"running": {}}), true);
    pod["metadata"]["uid"] = json!(uid);
    pod
}

#[tokio::test]
async fn notices_are_remembered_per_runner_pod_and_forgotten_with_the_session() {
    // Running, told nothing yet (the status records no workflow).
    let obj = parse(session(
        json!({"phase": "Running", "attempt": 1, "startTime": "2026-11-23T05:59:00Z",
               "reconciledRepos": [{"name": "api", "url": "https://github.com/acme/api.git", "branch": "main"}],
               "conditions": [{"type": "RunnerStarted", "status": "True", "reason": "RunnerStarted",
                               "lastTransitionTime": "2026-11-23T05:59:00Z", "observedGeneration": 1}]}),
        json!({}),
    ));
    let (client, _log) = mockapi::routed(refusing_status_writes(), Duration::from_secs(5));
    let notifier = Arc::new(StubNotifier::default());
    let metrics = observed();
    let ctx = ctx_with_metrics(client, notifier.clone(), metrics.metrics.clone());
    let mut writers = seed(&ctx, vec![running_pod("pod-a")], vec![service()]);
    let told = || notifier.calls.lock().map(|c| c.len()).unwrap_or(0);

    assert!(reconcile(obj.clone(), ctx.clone()).await.is_err());
    assert_eq!(told(), 1);
    assert_eq!(ctx.notice_entries(), 1);
    // The same runner, the status write lost again: not told again.
    assert!(reconcile(obj.clone(), ctx.clone()).await.is_err());
    assert_eq!(told(), 1);
    // Another pod under the same name (a restart): told again, one entry.
    writers
        .apply_pod(serde_json::from_value(running_pod("pod-b")).unwrap_or_else(|e| panic!("{e}")));
    assert!(reconcile(obj.clone(), ctx.clone()).await.is_err());
    assert_eq!(told(), 2);
    assert_eq!(ctx.notice_entries(), 1);
    let gauge = |m: &Observed| common::metric(&m.render(), "agentic_webhook_runner_notice_entries");
    assert_eq!(gauge(&metrics), Some(1.0));
    // The session is gone from the cache: its entry goes too.
    ctx.retain_sessions(std::slice::from_ref(&obj));
    assert_eq!(ctx.notice_entries(), 1);
    ctx.retain_sessions(&[]);
    assert_eq!(ctx.notice_entries(), 0);
    assert_eq!(gauge(&metrics), Some(0.0));
}

/// The shipped (ambient-code) contract: before its pod, the runner gets
/// the session's service account, its binding to the runner ClusterRole and
/// a fresh token of it in the token Secret, in that order, all owned by the
/// session.
#[tokio::test]
async fn the_ambient_runner_gets_its_account_binding_and_token_before_its_pod() {
    let obj = session(json!({"phase": "Pending", "attempt": 1}), json!({}));
    let pending = json!({"waiting": {"reason": "ContainerCreating"}});
    let mut pod = runner_pod(1, pending, false);
    pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] =
        json!("ambient-code-runner");
    let (client, log) = mockapi::client(vec![
        ok(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                  "metadata": {"name": "ambient-session-s1", "namespace": "team-a"}})),
        ok(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                  "metadata": {"name": "ambient-session-s1-rb", "namespace": "team-a"},
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                              "name": "ambient-session-runner"}}),
        ),
        ok(
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"audiences": []},
                  "status": {"token": "minted", "expirationTimestamp": "2026-11-23T07:00:00Z"}}),
        ),
        ok(secret()),
        ok(pod),
        ok(obj.clone()),
    ]);
    let ctx = Context::new(
        client,
        RunnerConfig::with_image("runner:test"),
        PlanConfig::default(),
        Arc::new(StubNotifier::default()),
        observed().metrics,
        marker(),
    )
    .with_clock(clock);
    let _writers = seed(&ctx, vec![], vec![service()]);
    reconcile(parse(obj), ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines(&log),
        vec![
            "POST /api/v1/namespaces/team-a/serviceaccounts?".to_owned(),
            "POST /apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings?".to_owned(),
            "POST /api/v1/namespaces/team-a/serviceaccounts/ambient-session-s1/token?".to_owned(),
            format!("POST {SECRETS}?"),
            format!("POST {PODS}?"),
            status_apply(),
            events_post()
        ]
    );
    let rec = mockapi::recorded(&log);
    let body = |i: usize| rec.get(i).and_then(|r| r.body.clone()).unwrap_or_default();
    let owner = json!([{"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
        "name": "s1", "uid": "uid-s1", "controller": true, "blockOwnerDeletion": true}]);
    assert_eq!(body(0)["metadata"]["ownerReferences"], owner);
    assert_eq!(body(0)["automountServiceAccountToken"], false);
    assert_eq!(
        body(1)["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ambient-session-runner"})
    );
    assert_eq!(
        body(1)["subjects"],
        json!([{"kind": "ServiceAccount", "name": "ambient-session-s1", "namespace": "team-a"}])
    );
    assert_eq!(body(1)["metadata"]["ownerReferences"], owner);
    // base64("minted"): the account's token, beside the notice token.
    assert_eq!(body(3)["data"]["k8s-token"], "bWludGVk");
    assert!(body(3)["data"]["agui-token"].is_string());
    assert_eq!(body(4)["spec"]["serviceAccountName"], "ambient-session-s1");
    assert_eq!(
        body(4)["spec"]["containers"][0]["name"],
        "ambient-code-runner"
    );
}

/// A service account of that name the session does not own: no token is
/// minted for it, no pod runs as it.
#[tokio::test]
async fn a_service_account_the_session_does_not_own_is_never_used() {
    let obj = session(json!({"phase": "Pending", "attempt": 1}), json!({}));
    let (client, log) = mockapi::client(vec![
        status(409, "AlreadyExists"),
        ok(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                  "metadata": {"name": "ambient-session-s1", "namespace": "team-a"}})),
    ]);
    let ctx = Context::new(
        client,
        RunnerConfig::with_image("runner:test"),
        PlanConfig::default(),
        Arc::new(StubNotifier::default()),
        observed().metrics,
        marker(),
    )
    .with_clock(clock);
    let _writers = seed(&ctx, vec![], vec![service()]);
    let err = reconcile(parse(obj), ctx)
        .await
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("ServiceAccount ambient-session-s1: taken by an object the session does not own")
    );
    assert_eq!(
        lines(&log),
        vec![
            "POST /api/v1/namespaces/team-a/serviceaccounts?".to_owned(),
            "GET /api/v1/namespaces/team-a/serviceaccounts/ambient-session-s1".to_owned(),
        ]
    );
}
