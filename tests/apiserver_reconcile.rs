//! The reconciler binary against a real kube-apiserver v1.35 with the
//! webhook installed: its status writes pass through V17/V22 for real, its
//! RBAC is the shipped ClusterRole, and the test plays the kubelet by
//! writing pod status (there is no kubelet). Runners are the stand-in for
//! the ambient-code runner's HTTP API (tests/common/standin.rs) on 127.0.0.1,
//! reached through `--runner-url-template`; the reconciler runs the shipped
//! runner contract.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::Proc;
use common::envtest::{Principal, SYSTEM_NS, Who, eventually, free_port, say};
use common::installed::{Installed, create_session, installed, reconciler_at, sessions_in};
use common::lifecycle::{condition, kubelet, phase_is, running, terminated, wait_session};
use common::standin::StandIn;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::time::Instant;

const WORKFLOW: &str = "https://github.com/acme/workflows.git";

fn sessions(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    sessions_in(client, ns, "v1alpha2")
}

fn as_json<T: serde::Serialize>(o: &T) -> Value {
    serde_json::to_value(o).expect("serializes")
}

/// `agentic-webhook reconcile` as the reconciler's service account.
fn reconciler(env: &Installed, args: &[&str]) -> Proc {
    reconciler_at(env, "127.0.0.1:0", args)
}

fn scoped(ns: &str, template: &str, max_attempts: &str) -> Vec<String> {
    vec![
        "--no-leader-election".into(),
        "--namespace".into(),
        ns.into(),
        "--runner-url-template".into(),
        template.into(),
        "--max-attempts".into(),
        max_attempts.into(),
    ]
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn with_workflow() -> Value {
    json!({"initialPrompt": "Fix the flaky login test",
           "repos": [{"url": "https://github.com/acme/api.git"}],
           "activeWorkflow": {"gitUrl": WORKFLOW, "path": "flows/fix"}})
}

/// Wait until every one of `names` is Creating; on timeout, say why with
/// the reconciler's logs.
async fn all_creating(client: &kube::Client, ns: &str, names: &[&str], reconciler: &mut Proc) {
    let api = sessions(client, ns);
    let end = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let o = as_json(&api.get(name).await.unwrap_or_else(|e| panic!("{e}")));
            if o["status"]["phase"] == "Creating" {
                break;
            }
            if Instant::now() > end {
                let logs: Vec<String> = reconciler.logs().iter().map(Value::to_string).collect();
                panic!(
                    "{ns}/{name} not Creating: {}; reconciler exited: {:?}; its logs:\n{}",
                    o["status"],
                    reconciler.try_wait(),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn pod_names(client: &kube::Client, ns: &str, session: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut names: Vec<String> = pods
        .list(&ListParams::default().labels(&format!("vteam.ambient-code/session={session}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

async fn wait_pods(client: &kube::Client, ns: &str, session: &str, want: &[&str]) {
    eventually(
        &format!("pods of {ns}/{session} to be {want:?}"),
        Duration::from_secs(30),
        || async move {
            let names = pod_names(client, ns, session).await;
            if names == want {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        },
    )
    .await
}

/// The Events recorded for a session: reason -> (type, count, note).
async fn events_of(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> BTreeMap<String, (String, i32, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = BTreeMap::new();
    for e in list.items {
        let regarding = e.regarding.as_ref();
        if regarding.and_then(|r| r.name.as_deref()) != Some(name)
            || regarding.and_then(|r| r.kind.as_deref()) != Some("AgenticSession")
        {
            continue;
        }
        assert_eq!(
            e.reporting_controller.as_deref(),
            Some("agentic-reconciler")
        );
        let count = e.series.as_ref().map_or(1, |s| s.count);
        let entry = out.entry(e.reason.clone().unwrap_or_default()).or_insert((
            e.type_.clone().unwrap_or_default(),
            0,
            e.note.clone().unwrap_or_default(),
        ));
        entry.1 += count;
    }
    out
}

/// Wait until the session's Events have exactly these reasons with these counts.
async fn wait_events(
    client: &kube::Client,
    ns: &str,
    name: &str,
    want: &[(&str, &str, i32)],
) -> BTreeMap<String, (String, i32, String)> {
    eventually(
        &format!("events of {ns}/{name}"),
        Duration::from_secs(30),
        || async move {
            let got = events_of(client, ns, name).await;
            let summary: Vec<(String, String, i32)> = got
                .iter()
                .map(|(r, (t, c, _))| (r.clone(), t.clone(), *c))
                .collect();
            let mut expected: Vec<(String, String, i32)> = want
                .iter()
                .map(|(r, t, c)| ((*r).to_owned(), (*t).to_owned(), *c))
                .collect();
            expected.sort();
            if summary == expected {
                Ok(got)
            } else {
                Err(format!("{summary:?}"))
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_session_runs_to_completion_and_its_runner_is_told_the_workflow_once_started() {
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = env.cp.namespace(&client, "lifecycle").await;
    let (runners, template) = StandIn::start(client.clone()).await;
    let _reconciler = reconciler(env, &refs(&scoped(&ns, &template, "3")));
    let created = create_session(&client, &ns, "s1", with_workflow()).await;
    let uid = created["metadata"]["uid"].clone();

    let s = wait_session(&client, &ns, "s1", "Creating", phase_is("Creating")).await;
    assert_eq!(condition(&s["status"], "PodCreated")["status"], "True");
    assert_eq!(s["status"]["attempt"], 1);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = as_json(
        &pods
            .get("s1-runner-1")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let owner = json!([{"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
                        "name": "s1", "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
    assert_eq!(pod["metadata"]["ownerReferences"], owner);
    assert_eq!(pod["metadata"]["labels"]["vteam.ambient-code/attempt"], "1");
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let svc = as_json(
        &services
            .get("session-s1")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(svc["metadata"]["ownerReferences"], owner);
    assert_eq!(svc["spec"]["ports"][0]["port"], 8001);

    // Scheduled, image pulling: still Creating, and nobody is told anything.
    kubelet(
        &client,
        &ns,
        "s1-runner-1",
        "Pending",
        json!({"waiting": {"reason": "ContainerCreating"}}),
        false,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = wait_session(&client, &ns, "s1", "still Creating", phase_is("Creating")).await;
    assert_eq!(
        condition(&s["status"], "WorkflowReconciled")["reason"],
        Value::Null,
        "no workflow condition before the runner ran: {}",
        s["status"]
    );
    assert!(runners.of("s1").is_empty(), "{:?}", runners.of("s1"));

    // Running and ready: Running, then told the workflow, then reconciled.
    let started = Instant::now();
    kubelet(&client, &ns, "s1-runner-1", "Running", running(), true).await;
    let s = wait_session(&client, &ns, "s1", "Running and Ready", |st| {
        st["phase"] == "Running" && condition(st, "Ready")["status"] == "True"
    })
    .await;
    let st = &s["status"];
    assert_eq!(condition(st, "RunnerStarted")["status"], "True");
    assert_eq!(condition(st, "WorkflowReconciled")["status"], "True");
    assert_eq!(
        st["reconciledWorkflow"],
        json!({"gitUrl": WORKFLOW, "branch": "main", "path": "flows/fix"})
    );
    assert_eq!(st["observedGeneration"], s["metadata"]["generation"]);
    let told = runners.of("s1");
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (
            told[0].namespace.as_str(),
            told[0].attempt.as_str(),
            told[0].path.as_str()
        ),
        (ns.as_str(), "1", "/workflow")
    );
    assert_eq!(
        told[0].body,
        json!({"gitUrl": WORKFLOW, "branch": "main", "path": "flows/fix"})
    );
    assert!(told[0].at > started, "told before the runner started");

    // The runner exits 0: Completed, and the pod is removed.
    kubelet(
        &client,
        &ns,
        "s1-runner-1",
        "Succeeded",
        terminated(0, "Completed"),
        false,
    )
    .await;
    let s = wait_session(&client, &ns, "s1", "Completed", phase_is("Completed")).await;
    assert!(s["status"]["completionTime"].is_string());
    assert_eq!(condition(&s["status"], "Ready")["reason"], "Completed");
    wait_pods(&client, &ns, "s1", &[]).await;
    assert_eq!(runners.of("s1").len(), 1, "told again after completion");
}

#[tokio::test]
async fn an_oom_killed_runner_is_retried_told_again_and_stops_at_the_cap() {
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = env.cp.namespace(&client, "retry").await;
    let (runners, template) = StandIn::start(client.clone()).await;
    let _reconciler = reconciler(env, &refs(&scoped(&ns, &template, "2")));
    create_session(&client, &ns, "s2", with_workflow()).await;

    wait_pods(&client, &ns, "s2", &["s2-runner-1"]).await;
    kubelet(&client, &ns, "s2-runner-1", "Running", running(), true).await;
    wait_session(&client, &ns, "s2", "attempt 1 Ready", |st| {
        condition(st, "Ready")["status"] == "True"
    })
    .await;

    // OOM-killed while the pod is still Running (a sidecar would keep it so).
    kubelet(
        &client,
        &ns,
        "s2-runner-1",
        "Running",
        terminated(137, "OOMKilled"),
        false,
    )
    .await;
    let s = wait_session(&client, &ns, "s2", "attempt 2", |st| st["attempt"] == 2).await;
    let ready = condition(&s["status"], "Ready");
    assert_eq!(ready["reason"], "OOMKilled", "{}", s["status"]);
    assert_eq!(
        ready["message"],
        "retrying after: runner container exited with code 137 (OOMKilled)"
    );
    assert_eq!(s["status"]["reconciledWorkflow"], Value::Null);
    wait_pods(&client, &ns, "s2", &["s2-runner-2"]).await;
    assert_eq!(
        runners.of("s2").iter().filter(|n| n.attempt == "2").count(),
        0,
        "the second runner was told before it started"
    );

    // The new runner starts: it is told the workflow before Ready again.
    kubelet(&client, &ns, "s2-runner-2", "Running", running(), true).await;
    let s = wait_session(&client, &ns, "s2", "attempt 2 Ready", |st| {
        st["attempt"] == 2 && condition(st, "Ready")["status"] == "True"
    })
    .await;
    assert_eq!(
        condition(&s["status"], "WorkflowReconciled")["status"],
        "True"
    );
    let attempts: Vec<String> = runners.of("s2").iter().map(|n| n.attempt.clone()).collect();
    assert_eq!(attempts, ["1", "2"], "each attempt's runner told once");
    // Each notice carried the token its runner was started with (the
    // Secret its AGUI_TOKEN comes from), a new one for each attempt.
    let tokens: Vec<String> = runners.of("s2").iter().map(|n| n.token.clone()).collect();
    assert!(tokens.iter().all(|t| t.len() == 64), "{tokens:?}");
    assert_ne!(tokens[0], tokens[1]);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let secret = secrets
        .get("ambient-runner-token-s2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stored = secret
        .data
        .and_then(|d| {
            d.get("agui-token")
                .map(|b| String::from_utf8_lossy(&b.0).to_string())
        })
        .unwrap_or_default();
    assert_eq!(
        stored, tokens[1],
        "the runner of attempt 2 checks what it was told with"
    );

    // OOM again at the cap: Failed, RetriesExhausted, nothing re-created.
    kubelet(
        &client,
        &ns,
        "s2-runner-2",
        "Running",
        terminated(137, "OOMKilled"),
        false,
    )
    .await;
    let s = wait_session(&client, &ns, "s2", "Failed", phase_is("Failed")).await;
    let exhausted = condition(&s["status"], "RetriesExhausted");
    assert_eq!(exhausted["status"], "True");
    assert_eq!(exhausted["reason"], "OOMKilled");
    wait_pods(&client, &ns, "s2", &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pod_names(&client, &ns, "s2").await, Vec::<String>::new());
    let s = wait_session(&client, &ns, "s2", "still Failed", phase_is("Failed")).await;
    assert_eq!(s["status"]["attempt"], 2);

    // The story, as `kubectl describe` tells it: repeats folded into series.
    let events = wait_events(
        &client,
        &ns,
        "s2",
        &[
            ("PodCreated", "Normal", 2),
            ("RunnerStarted", "Normal", 2),
            ("WorkflowApplied", "Normal", 2),
            ("AttemptFailed", "Warning", 2),
            ("Retrying", "Normal", 1),
            ("RetriesExhausted", "Warning", 1),
        ],
    )
    .await;
    assert_eq!(
        events["AttemptFailed"].2,
        "attempt 1 of 2 failed (OOMKilled): runner container exited with code 137 (OOMKilled)"
    );
    assert_eq!(
        events["Retrying"].2,
        "starting attempt 2 of 2 on a new runner pod"
    );
    let out = env.cp.kubectl(
        &Who::admin(),
        &["describe", "agenticsession", "-n", &ns, "s2"],
        None,
    );
    let described = String::from_utf8_lossy(&out.stdout).to_string();
    let section = described.split("Events:").nth(1).unwrap_or_default();
    for reason in [
        "PodCreated",
        "RunnerStarted",
        "WorkflowApplied",
        "AttemptFailed",
        "Retrying",
        "RetriesExhausted",
    ] {
        assert!(
            section.contains(reason),
            "kubectl describe lacks {reason}:\n{described}"
        );
    }
    assert!(section.contains("agentic-reconciler"), "{described}");
}

#[tokio::test]
async fn desired_phase_stopped_stops_a_running_session_and_is_cleared() {
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = env.cp.namespace(&client, "stop").await;
    let (_runners, template) = StandIn::start(client.clone()).await;
    let _reconciler = reconciler(env, &refs(&scoped(&ns, &template, "3")));
    create_session(
        &client,
        &ns,
        "s3",
        json!({"initialPrompt": "p", "interactive": true}),
    )
    .await;
    wait_pods(&client, &ns, "s3", &["s3-runner-1"]).await;
    kubelet(&client, &ns, "s3-runner-1", "Running", running(), true).await;
    wait_session(&client, &ns, "s3", "Running", phase_is("Running")).await;

    sessions(&client, &ns)
        .patch(
            "s3",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"ambient-code.io/desired-phase": "Stopped"}}}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let s = wait_session(&client, &ns, "s3", "Stopped", phase_is("Stopped")).await;
    assert_eq!(s["status"]["stoppedReason"], "user");
    assert_eq!(condition(&s["status"], "Ready")["reason"], "Stopped");
    wait_pods(&client, &ns, "s3", &[]).await;
    wait_events(
        &client,
        &ns,
        "s3",
        &[
            ("PodCreated", "Normal", 1),
            ("RunnerStarted", "Normal", 1),
            ("Stopped", "Normal", 1),
        ],
    )
    .await;
    let s = eventually("the annotation cleared", Duration::from_secs(30), || {
        let api = sessions(&client, &ns);
        async move {
            let o = as_json(&api.get("s3").await.map_err(|e| e.to_string())?);
            match o["metadata"]["annotations"].get("ambient-code.io/desired-phase") {
                None => Ok(o),
                Some(v) => Err(v.to_string()),
            }
        }
    })
    .await;
    assert_eq!(s["status"]["phase"], "Stopped");
}

#[tokio::test]
async fn status_writes_keep_what_a_concurrent_writer_wrote() {
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = env.cp.namespace(&client, "conflict").await;
    let (_runners, template) = StandIn::start(client.clone()).await;

    // Another controller (same principal, its own field manager) writes the
    // runner-owned status fields as fast as it can, before and while the
    // reconciler moves the session along.
    create_session(&client, &ns, "s4", json!({"initialPrompt": "p"})).await;
    let writer_client = env.cp.client_as(&Who::Token(Principal::Reconciler)).await;
    let writer_api = sessions(&writer_client, &ns);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let patch =
                    json!({"status": {"sdkSessionId": format!("sdk-{n}"), "sdkRestartCount": n}});
                if let Err(e) = writer_api
                    .patch_status("s4", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    panic!("writer {n}: {e}");
                }
            }
            n
        }
    });
    let reconciler = reconciler(env, &refs(&scoped(&ns, &template, "3")));
    wait_pods(&client, &ns, "s4", &["s4-runner-1"]).await;
    kubelet(&client, &ns, "s4-runner-1", "Running", running(), true).await;
    wait_session(&client, &ns, "s4", "Running and Ready", |st| {
        st["phase"] == "Running" && condition(st, "Ready")["status"] == "True"
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = writer.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(last > 5, "the writer barely ran ({last} writes)");
    // One more transition after the writer's last word: the reconciler's
    // apply must neither undo nor take over what the writer wrote.
    kubelet(
        &client,
        &ns,
        "s4-runner-1",
        "Succeeded",
        terminated(0, "Completed"),
        false,
    )
    .await;
    let s = wait_session(&client, &ns, "s4", "Completed", phase_is("Completed")).await;
    let st = &s["status"];
    assert_eq!(st["sdkRestartCount"], last);
    assert_eq!(st["sdkSessionId"], format!("sdk-{last}"));
    assert_eq!(condition(st, "RunnerStarted")["status"], "True");
    let owned_by = |manager: &str| -> String {
        s["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["manager"] == manager && m["subresource"] == "status")
            .map(|m| m["fieldsV1"].to_string())
            .collect()
    };
    let reconciler_fields = owned_by("agentic-reconciler");
    assert!(reconciler_fields.contains("f:phase"), "{reconciler_fields}");
    for runner_field in ["f:sdkSessionId", "f:sdkRestartCount"] {
        assert!(
            !reconciler_fields.contains(runner_field),
            "the reconciler took {runner_field}: {reconciler_fields}"
        );
    }
    let failed = reconciler
        .logs()
        .iter()
        .filter(|l| l["message"] == "reconcile failed")
        .count();
    say(&format!(
        "concurrent writer: {last} status writes; failed reconciles meanwhile: {failed}"
    ));
}

#[tokio::test]
async fn a_failed_workflow_notice_is_update_failed_and_retried_until_the_runner_answers() {
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = env.cp.namespace(&client, "notice").await;
    let (runners, template) = StandIn::start(client.clone()).await;
    runners
        .busy
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let _reconciler = reconciler(env, &refs(&scoped(&ns, &template, "3")));
    create_session(&client, &ns, "s7", with_workflow()).await;
    wait_pods(&client, &ns, "s7", &["s7-runner-1"]).await;
    kubelet(&client, &ns, "s7-runner-1", "Running", running(), true).await;

    // The runner refuses: recorded, not observed, and tried again (backoff).
    let s = wait_session(&client, &ns, "s7", "UpdateFailed, twice tried", |st| {
        condition(st, "WorkflowReconciled")["reason"] == "UpdateFailed"
    })
    .await;
    let wf = condition(&s["status"], "WorkflowReconciled");
    assert_eq!(wf["status"], "False");
    // The HTTP status, never what the runner said (it could be anything
    // a tenant's server wants read back from the session's status).
    assert!(
        wf["message"]
            .as_str()
            .is_some_and(|m| m.contains("503") && !m.contains("runner busy")),
        "{wf}"
    );
    assert_eq!(condition(&s["status"], "Ready")["status"], "False");
    assert_ne!(
        s["status"]["observedGeneration"],
        s["metadata"]["generation"]
    );
    assert_eq!(s["status"]["reconciledWorkflow"], Value::Null);
    eventually("a retried notice", Duration::from_secs(30), || {
        let n = runners.of("s7").len();
        async move {
            if n >= 2 {
                Ok(())
            } else {
                Err(format!("{n} notices"))
            }
        }
    })
    .await;

    // The runner recovers: the next retry lands and the session is Ready.
    runners
        .busy
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let s = wait_session(&client, &ns, "s7", "Ready", |st| {
        condition(st, "Ready")["status"] == "True"
    })
    .await;
    assert_eq!(
        s["status"]["observedGeneration"],
        s["metadata"]["generation"]
    );
    let told = runners.of("s7");
    assert!(told.iter().take(told.len() - 1).all(|n| !n.ok), "{told:?}");
    assert!(
        told.last().is_some_and(|n| n.ok && n.attempt == "1"),
        "{told:?}"
    );
    say(&format!(
        "failed notice: {} tries until the runner answered",
        told.len()
    ));
    let failures = i32::try_from(told.len() - 1).unwrap_or(0);
    let events = wait_events(
        &client,
        &ns,
        "s7",
        &[
            ("PodCreated", "Normal", 1),
            ("RunnerStarted", "Normal", 1),
            ("WorkflowNoticeFailed", "Warning", failures),
            ("WorkflowApplied", "Normal", 1),
        ],
    )
    .await;
    assert!(
        events["WorkflowNoticeFailed"].2.contains("503"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_controller_restart_neither_loses_nor_repeats_a_notice() {
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = env.cp.namespace(&client, "restart").await;
    let (runners, template) = StandIn::start(client.clone()).await;
    let args = scoped(&ns, &template, "3");
    runners
        .busy
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let first = reconciler(env, &refs(&args));
    create_session(&client, &ns, "s8", with_workflow()).await;
    wait_pods(&client, &ns, "s8", &["s8-runner-1"]).await;
    kubelet(&client, &ns, "s8-runner-1", "Running", running(), true).await;
    wait_session(&client, &ns, "s8", "UpdateFailed", |st| {
        condition(st, "WorkflowReconciled")["reason"] == "UpdateFailed"
    })
    .await;

    // Restart before the runner took the workflow: the new process tells it.
    first.signal("KILL");
    drop(first);
    let before = runners.of("s8").len();
    assert!(before >= 1 && runners.of("s8").iter().all(|n| !n.ok));
    runners
        .busy
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let second = reconciler(env, &refs(&args));
    let s = wait_session(&client, &ns, "s8", "Ready after the restart", |st| {
        condition(st, "Ready")["status"] == "True"
    })
    .await;
    assert_eq!(s["status"]["reconciledWorkflow"]["gitUrl"], WORKFLOW);
    let told = runners.of("s8");
    assert_eq!(told.iter().filter(|n| n.ok).count(), 1, "{told:?}");

    // Restart after it: the status says this runner has it; nothing is re-sent.
    second.signal("KILL");
    drop(second);
    let probes = format!("127.0.0.1:{}", free_port());
    let _third = reconciler_at(env, &probes, &refs(&args));
    let addr: std::net::SocketAddr = probes.parse().unwrap_or_else(|e| panic!("{e}"));
    eventually(
        "the third process to reconcile s8",
        Duration::from_secs(30),
        || async move {
            if std::net::TcpStream::connect(addr).is_err() {
                return Err("not listening yet".to_owned());
            }
            let (_, text) = common::http_get(addr, "/metrics");
            match common::metric(
                &text,
                "agentic_webhook_reconciles_total{result=\"success\"}",
            ) {
                Some(n) if n >= 1.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        runners.of("s8").len(),
        told.len(),
        "re-sent after a restart"
    );
    say(&format!(
        "controller restarts: {} failed notices before, 1 delivered after, 0 repeated",
        before
    ));
}

/// `agentic_reconciler_api_requests_total`, summed by (verb, resource).
fn api_requests(metrics: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("agentic_reconciler_api_requests_total{"))
    {
        let label = |k: &str| {
            line.split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry((label("verb"), label("resource"))).or_insert(0.0) += value;
    }
    out
}

#[tokio::test]
async fn reaching_creating_costs_writes_only_no_reads() {
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = env.cp.namespace(&client, "cost").await;
    let (_runners, template) = StandIn::start(client.clone()).await;
    let probes = format!("127.0.0.1:{}", free_port());
    let mut reconciler = reconciler_at(env, &probes, &refs(&scoped(&ns, &template, "3")));
    let names = ["c1", "c2", "c3"];
    for name in names {
        create_session(&client, &ns, name, json!({"initialPrompt": "p"})).await;
    }
    all_creating(&client, &ns, &names, &mut reconciler).await;
    let addr: std::net::SocketAddr = probes.parse().unwrap_or_else(|e| panic!("{e}"));
    // The PodCreated Events follow the last status write.
    let counts = eventually(
        "three events counted",
        Duration::from_secs(30),
        || async move {
            let counts = api_requests(&common::http_get(addr, "/metrics").1);
            match counts.get(&("create".to_owned(), "events".to_owned())) {
                Some(n) if *n >= 3.0 => Ok(counts),
                _ => Err(format!("{counts:?}")),
            }
        },
    )
    .await;
    let count = |verb: &str, resource: &str| {
        counts
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0.0)
    };
    // Per session: Pending and Creating applied, Service, Pod, one Event.
    assert_eq!(count("patch", "agenticsessions/status"), 6.0, "{counts:?}");
    assert_eq!(count("create", "pods"), 3.0, "{counts:?}");
    assert_eq!(count("create", "services"), 3.0, "{counts:?}");
    assert_eq!(count("create", "events"), 3.0, "{counts:?}");
    // Each runner's token Secret, made before its pod, and its identity
    // (the shipped contract's service account, binding and account token).
    assert_eq!(count("create", "secrets"), 3.0, "{counts:?}");
    assert_eq!(count("create", "serviceaccounts"), 3.0, "{counts:?}");
    assert_eq!(count("create", "rolebindings"), 3.0, "{counts:?}");
    assert_eq!(count("create", "serviceaccounts/token"), 3.0, "{counts:?}");
    // (The one Secret get is the reconciler's key, at start.)
    for resource in ["serviceaccounts", "rolebindings"] {
        assert_eq!(count("get", resource), 0.0, "{resource}: {counts:?}");
    }
    // The egress and ingress NetworkPolicies applied once for the
    // namespace, not once per session.
    assert_eq!(count("patch", "networkpolicies"), 2.0, "{counts:?}");
    // Reads come from the watch caches: one list per cache at start, no gets.
    for resource in ["pods", "services", "agenticsessions"] {
        assert_eq!(count("list", resource), 1.0, "{resource}: {counts:?}");
        assert_eq!(count("get", resource), 0.0, "{resource}: {counts:?}");
    }
}

#[tokio::test]
async fn only_the_lease_holder_acts_and_a_standby_takes_over_without_duplicates() {
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = env.cp.namespace(&client, "leader").await;
    let (runners, template) = StandIn::start(client.clone()).await;
    let lease = format!("lease-{ns}");
    let args = |id: &str| {
        vec![
            "--namespace".to_owned(),
            ns.clone(),
            "--runner-url-template".into(),
            template.clone(),
            "--lease-name".into(),
            lease.clone(),
            "--lease-namespace".into(),
            SYSTEM_NS.into(),
            "--lease-duration".into(),
            "4s".into(),
            "--identity".into(),
            id.into(),
        ]
    };
    let leading = |l: &Value| l["message"] == "leading: reconciling";
    let a = reconciler(env, &refs(&args("replica-a")));
    assert!(
        a.wait_log(leading, Duration::from_secs(30)).is_some(),
        "replica-a never led: {:?}",
        a.logs()
    );
    let mut b = reconciler(env, &refs(&args("replica-b")));
    assert!(
        b.wait_log(
            |l| l["message"] == "waiting for leadership",
            Duration::from_secs(30)
        )
        .is_some(),
        "{:?}",
        b.logs()
    );

    create_session(&client, &ns, "s5", with_workflow()).await;
    wait_pods(&client, &ns, "s5", &["s5-runner-1"]).await;
    wait_session(&client, &ns, "s5", "Creating", phase_is("Creating")).await;
    let acted = |p: &Proc| {
        p.logs()
            .iter()
            .filter(|l| l["message"] == "status written" || l["message"] == "runner pod created")
            .count()
    };
    assert!(acted(&a) > 0);
    assert_eq!(acted(&b), 0, "the standby acted: {:?}", b.logs());
    assert!(
        !b.logs().iter().any(leading),
        "two leaders at once: {:?}",
        b.logs()
    );
    assert!(b.try_wait().is_none());

    // The leader dies without releasing the Lease; the standby takes over
    // once it expires, and picks up where the leader left off.
    let killed = Instant::now();
    a.signal("KILL");
    drop(a);
    let took = eventually("replica-b to lead", Duration::from_secs(30), || {
        let b = &b;
        async move {
            b.logs()
                .iter()
                .any(leading)
                .then(|| killed.elapsed())
                .ok_or_else(|| "not yet".to_owned())
        }
    })
    .await;
    say(&format!(
        "leader election: standby took over {:.1}s after the leader was killed (lease 4s)",
        took.as_secs_f64()
    ));
    kubelet(&client, &ns, "s5-runner-1", "Running", running(), true).await;
    wait_session(&client, &ns, "s5", "Ready under the new leader", |st| {
        condition(st, "Ready")["status"] == "True"
    })
    .await;
    assert_eq!(pod_names(&client, &ns, "s5").await, ["s5-runner-1"]);
    assert_eq!(runners.of("s5").len(), 1, "{:?}", runners.of("s5"));
    create_session(&client, &ns, "s6", json!({"initialPrompt": "p"})).await;
    wait_pods(&client, &ns, "s6", &["s6-runner-1"]).await;

    // The Lease names the survivor.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), SYSTEM_NS);
    let l = as_json(&leases.get(&lease).await.unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(l["spec"]["holderIdentity"], "replica-b");
    let _ = sessions(&client, &ns)
        .delete("s6", &DeleteParams::default())
        .await;
}

/// Sessions that exist when the reconciler starts come in its first list,
/// and their reconciles all start before its pod and service caches are
/// filled. Each must be reconciled, not only the one whose wait happened to
/// be woken (kube-runtime's store readiness wakes only its last waiter).
#[tokio::test]
async fn sessions_that_exist_before_the_reconciler_starts_are_all_reconciled() {
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = env.cp.namespace(&client, "pre").await;
    let (_runners, template) = StandIn::start(client.clone()).await;
    let names: Vec<String> = (1..=8).map(|i| format!("pre-{i}")).collect();
    for name in &names {
        create_session(&client, &ns, name, json!({"initialPrompt": "p"})).await;
    }
    let mut reconciler = reconciler(env, &refs(&scoped(&ns, &template, "3")));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    all_creating(&client, &ns, &names, &mut reconciler).await;
}
