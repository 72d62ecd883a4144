//! `migrate` against a scripted API server, for races and failures a real
//! apiserver cannot be made to show on demand (conflicts, objects deleted
//! mid-run, failed rewrites). The whole migration against a real
//! kube-apiserver and etcd is tests/apiserver_storage.rs.

mod common;

use agentic_webhook::cli::migrate::{Options, migrate};
use common::mockapi::{self, lines, ok, status};
use serde_json::{Value, json};

const LIST: &str = "/apis/vteam.ambient-code/v1alpha2/agenticsessions";

fn session(ns: &str, name: &str, rv: &str, spec: Value) -> Value {
    json!({"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
           "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "uid": format!("uid-{name}")},
           "spec": spec})
}

fn list(items: Vec<Value>, cont: Option<&str>) -> Value {
    let mut meta = json!({"resourceVersion": "100"});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSessionList", "metadata": meta, "items": items})
}

fn put(ns: &str, name: &str, dry: bool) -> String {
    let q = if dry {
        "dryRun=All&fieldManager=agentic-webhook-migrate"
    } else {
        "fieldManager=agentic-webhook-migrate"
    };
    format!("PUT /apis/vteam.ambient-code/v1alpha2/namespaces/{ns}/agenticsessions/{name}?&{q}")
}

fn modern() -> Value {
    json!({"initialPrompt": "p", "repos": [{"url": "https://h/o/api", "branch": "main"}], "mainRepo": "api"})
}

#[tokio::test]
async fn pages_rewrites_retries_conflicts_skips_deleted_then_sets_stored_versions() {
    let a = session("team-a", "a", "1", modern());
    // Stored before the version bump: legacy shapes under the v1alpha2 label.
    let b = session(
        "team-a",
        "b",
        "2",
        json!({"prompt": "old", "timeout": 60,
        "repos": [{"input": {"url": "https://h/o/web.git", "branch": "dev"}}], "mainRepoIndex": 0}),
    );
    let b_fresh = session("team-a", "b", "3", b["spec"].clone());
    let c = session("team-b", "c", "4", modern());
    let (client, log) = mockapi::client(vec![
        ok(list(vec![a.clone(), b.clone()], Some("c1"))),
        ok(a.clone()),
        status(409, "Conflict"),
        ok(b_fresh.clone()),
        ok(b_fresh.clone()),
        ok(list(vec![c.clone()], None)),
        status(404, "NotFound"),
        ok(
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                  "metadata": {"name": "agenticsessions.vteam.ambient-code"}, "spec": {"group": "vteam.ambient-code",
                  "names": {"kind": "AgenticSession", "plural": "agenticsessions"}, "scope": "Namespaced", "versions": []}}),
        ),
    ]);
    let mut out = Vec::new();
    let summary = migrate(
        client,
        &Options {
            dry_run: false,
            page_size: 2,
        },
        &mut out,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        lines(&log),
        vec![
            format!("GET {LIST}?&limit=2"),
            put("team-a", "a", false),
            put("team-a", "b", false),
            "GET /apis/vteam.ambient-code/v1alpha2/namespaces/team-a/agenticsessions/b".to_owned(),
            put("team-a", "b", false),
            format!("GET {LIST}?&limit=2&continue=c1"),
            put("team-b", "c", false),
            "PATCH /apis/apiextensions.k8s.io/v1/customresourcedefinitions/agenticsessions.vteam.ambient-code/status?".to_owned(),
        ]
    );
    let rec = mockapi::recorded(&log);
    // The retried write carries the fresh resourceVersion and the normalized spec.
    let retried = rec[4].body.clone().unwrap_or_default();
    assert_eq!(retried["metadata"]["resourceVersion"], "3");
    assert_eq!(
        retried["spec"],
        json!({"initialPrompt": "old", "timeoutSeconds": 60, "mainRepo": "web",
               "repos": [{"url": "https://h/o/web.git", "branch": "dev"}]})
    );
    // An object already canonical is written back unchanged (re-encoding it).
    assert_eq!(rec[1].body.clone().unwrap_or_default()["spec"], modern());
    assert_eq!(
        rec[7].body,
        Some(json!({"status": {"storedVersions": ["v1alpha2"]}}))
    );
    assert_eq!(
        (
            summary.seen,
            summary.rewritten,
            summary.normalized,
            summary.deleted_meanwhile,
            summary.stored_versions_updated
        ),
        (3, 2, 1, 1, true)
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("page 1: 2 rewritten, 0 deleted meanwhile, 0 failed"),
        "{text}"
    );
    assert!(text.contains("3 sessions: 2 rewritten (1 normalized), 1 deleted meanwhile, 0 failed; storedVersions set to [v1alpha2]"), "{text}");
}

#[tokio::test]
async fn a_failed_rewrite_leaves_stored_versions_alone() {
    let a = session("team-a", "a", "1", modern());
    let (client, log) =
        mockapi::client(vec![ok(list(vec![a], None)), status(500, "InternalError")]);
    let mut out = Vec::new();
    let summary = migrate(
        client,
        &Options {
            dry_run: false,
            page_size: 50,
        },
        &mut out,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        lines(&log),
        vec![format!("GET {LIST}?&limit=50"), put("team-a", "a", false)]
    );
    assert!(!summary.stored_versions_updated);
    assert_eq!(summary.failed.len(), 1);
    assert!(String::from_utf8_lossy(&out).contains("rerun after fixing the failures"));
}
