//! The reconciler's driver against a scripted API server: the requests it
//! makes, their bodies and order.

mod common;

use std::sync::{Arc, Mutex};

use agentic_webhook::api::resource::AgenticSession;
use agentic_webhook::lifecycle::controller::{Context, reconcile};
use agentic_webhook::lifecycle::notice::{NoticeBody, NoticeFuture, RunnerNotifier};
use agentic_webhook::lifecycle::plan::PlanConfig;
use agentic_webhook::lifecycle::world::RunnerConfig;
use agentic_webhook::server::metrics::Metrics;
use common::mockapi::{self, Log, lines, ok, status};
use jiff::Timestamp;
use serde_json::{Value, json};

const SESSIONS: &str = "/apis/vteam.ambient-code/v1alpha2/namespaces/team-a/agenticsessions";
const PODS: &str = "/api/v1/namespaces/team-a/pods";
const SERVICES: &str = "/api/v1/namespaces/team-a/services";

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
    fn notify(&self, namespace: &str, session: &str, body: NoticeBody) -> NoticeFuture {
        if let Ok(mut c) = self.calls.lock() {
            c.push((
                namespace.into(),
                body.path().into(),
                serde_json::to_value(&body).unwrap_or_default(),
            ));
        }
        let _ = session;
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
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("s1-runner-{attempt}"), "namespace": "team-a",
            "labels": {"vteam.ambient-code/session": "s1", "vteam.ambient-code/attempt": attempt.to_string()},
            "annotations": {"vteam.ambient-code/repos": "[{\"url\":\"https://github.com/acme/api.git\",\"branch\":\"main\"}]"},
            "ownerReferences": [{"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession", "name": "s1",
                                 "uid": "uid-s1", "controller": true}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "runner", "ready": ready, "restartCount": 0, "image": "r", "imageID": "", "state": container_state}]}})
}

fn service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "session-s1", "namespace": "team-a"}})
}

fn ctx(client: kube::Client, notifier: Arc<StubNotifier>) -> Arc<Context> {
    Context::new(
        client,
        RunnerConfig {
            image: "runner:test".into(),
        },
        PlanConfig::default(),
        notifier,
        Metrics::new(),
    )
    .with_clock(clock)
}

async fn reconcile_json(
    obj: Value,
    script: Vec<(u16, Value)>,
    notifier: Arc<StubNotifier>,
) -> (Log, Result<(), String>) {
    let (client, log) = mockapi::client(script);
    let s: AgenticSession = serde_json::from_value(obj).unwrap_or_else(|e| panic!("{e}"));
    let res = reconcile(Arc::new(s), ctx(client, notifier))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    (log, res)
}

fn list_pods() -> String {
    format!("GET {PODS}?&labelSelector=vteam.ambient-code%2Fsession%3Ds1")
}

fn status_apply() -> String {
    format!("PATCH {SESSIONS}/s1/status?&force=true&fieldManager=agentic-reconciler")
}

#[tokio::test]
async fn a_pending_session_gets_its_service_and_pod_with_owner_references() {
    let obj = session(json!({"phase": "Pending", "attempt": 1}), json!({}));
    let (log, res) = reconcile_json(
        obj.clone(),
        vec![
            ok(pod_list(vec![])),
            status(404, "NotFound"),
            ok(service()),
            ok(runner_pod(1, json!({}), false)),
            ok(obj),
        ],
        Arc::new(StubNotifier::default()),
    )
    .await;
    res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines(&log),
        vec![
            list_pods(),
            format!("GET {SERVICES}/session-s1"),
            format!("POST {SERVICES}?"),
            format!("POST {PODS}?"),
            status_apply(),
        ]
    );
    let rec = mockapi::recorded(&log);
    let owner = json!([{"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession", "name": "s1",
                        "uid": "uid-s1", "controller": true, "blockOwnerDeletion": true}]);
    let svc = rec[2].body.clone().unwrap_or_default();
    assert_eq!(svc["metadata"]["ownerReferences"], owner);
    assert_eq!(svc["spec"]["ports"][0]["port"], 8001);
    assert_eq!(
        svc["spec"]["selector"],
        json!({"vteam.ambient-code/session": "s1"})
    );
    let pod = rec[3].body.clone().unwrap_or_default();
    assert_eq!(pod["metadata"]["name"], "s1-runner-1");
    assert_eq!(pod["metadata"]["ownerReferences"], owner);
    assert_eq!(pod["spec"]["containers"][0]["image"], "runner:test");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    let apply = rec[4].body.clone().unwrap_or_default();
    assert_eq!(
        apply["metadata"]["resourceVersion"], "41",
        "the read resourceVersion is the precondition"
    );
    assert_eq!(apply["status"]["phase"], "Creating");
    assert_eq!(apply["status"]["attempt"], 1);
    assert_eq!(apply["kind"], "AgenticSession");
}

#[tokio::test]
async fn desired_stopped_deletes_the_pod_writes_status_then_clears_the_annotation() {
    let obj = session(
        json!({"phase": "Running", "attempt": 1, "startTime": "2026-11-23T05:00:00Z"}),
        json!({"ambient-code.io/desired-phase": "Stopped"}),
    );
    let pod = runner_pod(1, json!({"running": {}}), true);
    let (log, res) = reconcile_json(
        obj.clone(),
        vec![
            ok(pod_list(vec![pod.clone()])),
            ok(service()),
            ok(pod),
            ok(obj.clone()),
            ok(obj),
        ],
        Arc::new(StubNotifier::default()),
    )
    .await;
    res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines(&log),
        vec![
            list_pods(),
            format!("GET {SERVICES}/session-s1"),
            format!("DELETE {PODS}/s1-runner-1?"),
            status_apply(),
            format!("PATCH {SESSIONS}/s1?"),
        ]
    );
    let rec = mockapi::recorded(&log);
    assert_eq!(
        rec[3].body.clone().unwrap_or_default()["status"]["phase"],
        "Stopping"
    );
    assert_eq!(
        rec[3].body.clone().unwrap_or_default()["status"]["stoppedReason"],
        "user"
    );
    assert_eq!(
        rec[4].body,
        Some(json!([
            {"op": "test", "path": "/metadata/annotations/ambient-code.io~1desired-phase", "value": "Stopped"},
            {"op": "remove", "path": "/metadata/annotations/ambient-code.io~1desired-phase"}
        ]))
    );
}

#[tokio::test]
async fn a_conflicting_status_write_is_retried_on_a_fresh_read() {
    let obj = session(json!({"phase": "Pending", "attempt": 1}), json!({}));
    let mut fresh = obj.clone();
    fresh["metadata"]["resourceVersion"] = json!("42");
    let pod = runner_pod(
        1,
        json!({"waiting": {"reason": "ContainerCreating"}}),
        false,
    );
    let (log, res) = reconcile_json(
        obj.clone(),
        vec![
            ok(pod_list(vec![pod.clone()])),
            ok(service()),
            status(409, "Conflict"),
            ok(fresh.clone()),
            ok(pod_list(vec![pod])),
            ok(service()),
            ok(fresh),
        ],
        Arc::new(StubNotifier::default()),
    )
    .await;
    res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines(&log),
        vec![
            list_pods(),
            format!("GET {SERVICES}/session-s1"),
            status_apply(),
            format!("GET {SESSIONS}/s1"),
            list_pods(),
            format!("GET {SERVICES}/session-s1"),
            status_apply(),
        ]
    );
    let rec = mockapi::recorded(&log);
    assert_eq!(
        rec[2].body.clone().unwrap_or_default()["metadata"]["resourceVersion"],
        "41"
    );
    assert_eq!(
        rec[6].body.clone().unwrap_or_default()["metadata"]["resourceVersion"],
        "42"
    );
    assert_eq!(
        rec[6].body.clone().unwrap_or_default()["status"]["phase"],
        "Creating"
    );
}

#[tokio::test]
async fn a_failed_workflow_notice_is_written_as_update_failed_and_not_as_observed() {
    let obj = session(
        json!({"phase": "Running", "attempt": 1, "startTime": "2026-11-23T05:59:00Z", "observedGeneration": 1,
               "reconciledRepos": [{"name": "api", "url": "https://github.com/acme/api.git", "branch": "main"}],
               "conditions": [{"type": "RunnerStarted", "status": "True", "reason": "RunnerStarted",
                               "lastTransitionTime": "2026-11-23T05:59:00Z", "observedGeneration": 1}]}),
        json!({}),
    );
    let pod = runner_pod(1, json!({"running": {}}), true);
    let notifier = Arc::new(StubNotifier {
        fail: true,
        ..StubNotifier::default()
    });
    let (log, res) = reconcile_json(
        obj.clone(),
        vec![
            ok(pod_list(vec![pod.clone()])),
            ok(service()),
            ok(pod_list(vec![pod])),
            ok(service()),
            ok(obj),
        ],
        notifier.clone(),
    )
    .await;
    res.unwrap_or_else(|e| panic!("{e}"));
    let calls = notifier.calls.lock().map(|c| c.clone()).unwrap_or_default();
    assert_eq!(
        calls,
        vec![(
            "team-a".to_owned(),
            "/workflow".to_owned(),
            json!({"gitUrl": "https://github.com/acme/wf.git", "branch": "main", "path": "flows"})
        )]
    );
    assert_eq!(lines(&log).last(), Some(&status_apply()));
    let rec = mockapi::recorded(&log);
    let st = rec.last().and_then(|r| r.body.clone()).unwrap_or_default()["status"].clone();
    let wf = st["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "WorkflowReconciled"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(wf["status"], "False");
    assert_eq!(wf["reason"], "UpdateFailed");
    assert!(
        wf["message"]
            .as_str()
            .unwrap_or("")
            .contains("no such host")
    );
    assert_eq!(
        st["observedGeneration"], 1,
        "generation 2 is not observed until the workflow is applied"
    );
    assert!(st.get("reconciledWorkflow").is_none());
}

#[tokio::test]
async fn a_pod_that_already_exists_is_adopted_not_duplicated() {
    let obj = session(json!({"phase": "Pending", "attempt": 1}), json!({}));
    let (log, res) = reconcile_json(
        obj.clone(),
        vec![
            ok(pod_list(vec![])),
            ok(service()),
            status(409, "AlreadyExists"),
            ok(obj),
        ],
        Arc::new(StubNotifier::default()),
    )
    .await;
    res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines(&log),
        vec![
            list_pods(),
            format!("GET {SERVICES}/session-s1"),
            format!("POST {PODS}?"),
            status_apply()
        ]
    );
}

#[tokio::test]
async fn api_errors_requeue_with_growing_backoff_and_are_counted() {
    use agentic_webhook::lifecycle::controller::{error_policy, export_phases};
    use kube::runtime::controller::Action;
    let (client, _log) = mockapi::client(vec![]);
    let metrics = Metrics::new();
    let ctx = Context::new(
        client,
        RunnerConfig { image: "r".into() },
        PlanConfig::default(),
        Arc::new(StubNotifier::default()),
        metrics.clone(),
    );
    let s: Arc<AgenticSession> = Arc::new(
        serde_json::from_value(session(json!({"phase": "Pending"}), json!({}))).unwrap_or_default(),
    );
    let mut delays = Vec::new();
    for _ in 0..3 {
        let err = reconcile(s.clone(), ctx.clone())
            .await
            .err()
            .unwrap_or_else(|| panic!("500s must fail"));
        delays.push(error_policy(s.clone(), &err, ctx.clone()));
    }
    use std::time::Duration;
    assert_eq!(
        delays,
        vec![
            Action::requeue(Duration::from_secs(1)),
            Action::requeue(Duration::from_secs(2)),
            Action::requeue(Duration::from_secs(4))
        ]
    );
    export_phases(&metrics, &[s.clone(), s]);
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
