//! Realistic request bodies for benchmarks and the load generator: ~4 KB
//! sessions (three repos, a workflow, conditions, and `managedFields` as the
//! apiserver sends them) wrapped in AdmissionReview / ConversionReview
//! envelopes shaped like the captures in `tests/fixtures/`.
//!
//! Pure data builders; nothing here is on a request path.

use serde_json::{Value, json};

use crate::admission::review::{Operation, RequestBuilder};
use crate::api::GROUP;
use crate::conversion;

/// The reconciler's principal, as the install passes it to `--controller-user`.
pub const CONTROLLER_USER: &str = "system:serviceaccount:agentic-system:agentic-reconciler";

const PROMPT: &str = "Investigate the intermittent 502s on the checkout service. \
Start from the ingress logs of the last 24 hours, correlate them with the deploys \
of the api and web repositories, and write down the most likely cause. Then add \
a regression test that reproduces the failure, fix it in the smallest change \
possible, and open a pull request against develop with a description that links \
the incident ticket. Do not touch the payment provider client; its owners are \
reviewing a separate change. Keep the commit history clean: one commit for the \
test, one for the fix.";

fn managed_fields() -> Value {
    json!([
        {"apiVersion": "vteam.ambient-code/v1alpha2", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:annotations": {"f:ambient-code.io/desired-phase": {}},
                                     "f:labels": {"f:ambient-code.io/project": {}, "f:app.kubernetes.io/name": {}}},
                      "f:spec": {"f:activeWorkflow": {".": {}, "f:branch": {}, "f:gitUrl": {}, "f:path": {}},
                                 "f:environmentVariables": {".": {}, "f:LOG_LEVEL": {}, "f:TICKET": {}},
                                 "f:initialPrompt": {}, "f:interactive": {}, "f:mainRepo": {}, "f:repos": {},
                                 "f:timeoutSeconds": {}, "f:llmSettings": {".": {}, "f:model": {}, "f:temperature": {}}}},
         "manager": "kubectl", "operation": "Apply", "time": "2026-11-23T06:08:03Z"},
        {"apiVersion": "vteam.ambient-code/v1alpha2", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:spec": {"f:initialPrompt": {}}},
         "manager": "kubectl-patch", "operation": "Update", "time": "2026-11-23T06:08:15Z"},
        {"apiVersion": "vteam.ambient-code/v1alpha2", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:status": {".": {}, "f:attempt": {}, "f:conditions": {}, "f:observedGeneration": {},
                                   "f:phase": {}, "f:startTime": {}, "f:reconciledRepos": {}}},
         "manager": "agentic-reconciler", "operation": "Apply", "subresource": "status",
         "time": "2026-11-23T06:08:23Z"}
    ])
}

fn metadata(i: usize, api_version: &str) -> Value {
    json!({
        "annotations": {"ambient-code.io/desired-phase": "Running"},
        "creationTimestamp": "2026-11-23T06:08:03Z",
        "generation": 2,
        "labels": {"ambient-code.io/project": "team-a", "app.kubernetes.io/name": "agentic-session"},
        "managedFields": managed_fields(),
        "name": format!("session-{i}"),
        "namespace": "team-a",
        "resourceVersion": format!("{}", 1000 + i),
        "uid": format!("3e4e154c-67bc-4be9-be53-{i:012}"),
        "apiVersionHint": api_version,
    })
}

fn running_status() -> Value {
    json!({
        "phase": "Running",
        "attempt": 1,
        "observedGeneration": 2,
        "startTime": "2026-11-23T06:00:00Z",
        "reconciledRepos": [
            {"name": "api", "url": "https://github.com/acme/api.git", "branch": "main", "status": "Cloned"},
            {"name": "web", "url": "https://github.com/acme/web.git", "branch": "develop", "status": "Cloned"},
            {"name": "infra", "url": "https://gitlab.com/acme/infra.git", "branch": "main", "status": "Cloned"}
        ],
        "conditions": [
            {"type": "PodCreated", "status": "True", "reason": "PodCreated", "message": "runner pod created",
             "lastTransitionTime": "2026-11-23T06:00:01Z", "observedGeneration": 2},
            {"type": "RunnerStarted", "status": "True", "reason": "ContainerRunning", "message": "runner container is running",
             "lastTransitionTime": "2026-11-23T06:00:05Z", "observedGeneration": 2},
            {"type": "ReposReconciled", "status": "True", "reason": "Reconciled", "message": "3 repos cloned",
             "lastTransitionTime": "2026-11-23T06:00:09Z", "observedGeneration": 2},
            {"type": "WorkflowReconciled", "status": "True", "reason": "Reconciled", "message": "workflow bugfix applied",
             "lastTransitionTime": "2026-11-23T06:00:10Z", "observedGeneration": 2},
            {"type": "Ready", "status": "True", "reason": "Running", "message": "session is running",
             "lastTransitionTime": "2026-11-23T06:00:10Z", "observedGeneration": 2}
        ]
    })
}

fn with_meta(mut obj: Value) -> Value {
    // `apiVersionHint` only carries the version into `metadata()`; drop it.
    if let Some(m) = obj.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        m.remove("apiVersionHint");
    }
    obj
}

/// A modern v1alpha2 session, Running with a full status when `running`.
pub fn session_v1alpha2(i: usize, running: bool) -> Value {
    let mut obj = json!({
        "apiVersion": format!("{GROUP}/v1alpha2"),
        "kind": "AgenticSession",
        "metadata": metadata(i, "v1alpha2"),
        "spec": {
            "initialPrompt": PROMPT,
            "interactive": false,
            "timeoutSeconds": 3600,
            "displayName": "Checkout 502 investigation",
            "llmSettings": {"model": "claude-sonnet-4-5", "temperature": 0.2, "maxTokens": 8000},
            "environmentVariables": {"LOG_LEVEL": "debug", "TICKET": "INC-4211"},
            "mainRepo": "api",
            "repos": [
                {"url": "https://github.com/acme/api.git", "branch": "main", "autoPush": true},
                {"url": "https://github.com/acme/web.git", "branch": "develop", "autoPush": false},
                {"url": "https://gitlab.com/acme/infra.git", "branch": "main"}
            ],
            "activeWorkflow": {"gitUrl": "https://github.com/acme/workflows.git", "branch": "main", "path": "workflows/bugfix"}
        }
    });
    if running && let Some(o) = obj.as_object_mut() {
        o.insert("status".into(), running_status());
    }
    with_meta(obj)
}

/// A v1alpha1 session in the legacy shapes: `prompt`, `repos[].input/output`,
/// `mainRepoIndex`.
pub fn session_v1alpha1_legacy(i: usize) -> Value {
    with_meta(json!({
        "apiVersion": format!("{GROUP}/v1alpha1"),
        "kind": "AgenticSession",
        "metadata": metadata(i, "v1alpha1"),
        "spec": {
            "prompt": PROMPT,
            "interactive": false,
            "timeout": 3600,
            "displayName": "Checkout 502 investigation",
            "llmSettings": {"model": "claude-sonnet-4-5", "temperature": 0.2, "maxTokens": 8000},
            "environmentVariables": {"LOG_LEVEL": "debug", "TICKET": "INC-4211"},
            "mainRepoIndex": 0,
            "repos": [
                {"input": {"url": "https://github.com/acme/api.git", "branch": "main"},
                 "output": {"url": "https://github.com/acme/api.git", "branch": "fix/checkout-502"}},
                {"input": {"url": "https://github.com/acme/web.git", "branch": "develop"}},
                {"input": {"url": "https://gitlab.com/acme/infra.git"}}
            ],
            "activeWorkflow": {"gitUrl": "https://github.com/acme/workflows.git", "branch": "main", "path": "workflows/bugfix"}
        }
    }))
}

/// As the apiserver sends it: kind and resource twice, options, the user's uid.
fn admission_body(
    uid: String,
    version: &str,
    operation: Operation,
    user: (&str, &[&str]),
    object: Value,
    old: Option<Value>,
) -> RequestBuilder {
    RequestBuilder::new(operation, version)
        .uid(uid)
        .user(user.0, user.1)
        .user_uid("user-uid")
        .object(Some(object))
        .old_object(old)
        .field_manager("kubectl")
}

const ALICE: (&str, &[&str]) = ("alice@acme.dev", &["team-a", "system:authenticated"]);

/// `kubectl apply` of a legacy v1alpha1 session: mutation rewrites it.
pub fn create_legacy(i: usize) -> Vec<u8> {
    admission_body(
        format!("create-{i}"),
        "v1alpha1",
        Operation::Create,
        ALICE,
        session_v1alpha1_legacy(i),
        None,
    )
    .to_vec()
}

/// A user changes the repos of a Running session: V9 denies it.
pub fn update_running_denied(i: usize) -> Vec<u8> {
    let old = session_v1alpha2(i, true);
    let mut new = old.clone();
    if let Some(repos) = new.pointer_mut("/spec/repos").and_then(Value::as_array_mut) {
        repos.push(json!({"url": "https://github.com/acme/docs.git", "branch": "main"}));
    }
    if let Some(g) = new.pointer_mut("/metadata/generation") {
        *g = json!(3);
    }
    admission_body(
        format!("update-{i}"),
        "v1alpha2",
        Operation::Update,
        ALICE,
        new,
        Some(old),
    )
    .to_vec()
}

/// The reconciler writes a condition through the status subresource.
pub fn status_update(i: usize) -> Vec<u8> {
    let old = session_v1alpha2(i, true);
    let mut new = old.clone();
    if let Some(c) = new.pointer_mut("/status/conditions/3") {
        *c = json!({"type": "WorkflowReconciled", "status": "False", "reason": "UpdateFailed",
                    "message": "POST /workflow: connection refused", "lastTransitionTime": "2026-11-23T06:10:00Z",
                    "observedGeneration": 2});
    }
    admission_body(
        format!("status-{i}"),
        "v1alpha2",
        Operation::Update,
        (
            CONTROLLER_USER,
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:agentic-system",
                "system:authenticated",
            ],
        ),
        new,
        Some(old),
    )
    .sub_resource(Some("status"))
    .to_vec()
}

/// A list or watch through v1alpha1: `n` stored v1alpha2 objects to convert.
pub fn conversion_review(n: usize) -> Vec<u8> {
    let objects: Vec<Value> = (0..n).map(|i| session_v1alpha2(i, i % 2 == 0)).collect();
    conversion::review::request_body(
        &format!("convert-{n}"),
        &format!("{GROUP}/v1alpha1"),
        &objects,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{AdmissionService, Config, Policy, Principals, review};
    use crate::conversion::{ConversionService, Converter, review as creview};

    fn policy() -> Policy {
        Policy::new(Config {
            principals: Principals {
                users: vec![CONTROLLER_USER.into()],
                groups: vec![],
                ..Principals::default()
            },
            ..Config::default()
        })
    }

    #[test]
    fn sessions_are_the_advertised_size() {
        let len = serde_json::to_vec(&session_v1alpha2(1, true))
            .map(|v| v.len())
            .unwrap_or(0);
        assert!(
            (3500..=5500).contains(&len),
            "running session is {len} bytes"
        );
    }

    #[test]
    fn each_workload_request_gets_the_intended_answer() {
        let p = policy();
        let body = create_legacy(1);
        let review = review::decode(&body).unwrap_or_else(|e| panic!("create decodes: {e}"));
        let req = review.request();
        let m = p.mutate(req);
        assert!(m.patch.is_some(), "legacy create is patched");
        assert!(p.validate(req).allowed(), "legacy create is allowed");

        let body = update_running_denied(1);
        let review = review::decode(&body).unwrap_or_else(|e| panic!("update decodes: {e}"));
        let req = review.request();
        let v = p.validate(req);
        assert!(!v.allowed(), "repo change while Running is denied");

        let body = status_update(1);
        let review = review::decode(&body).unwrap_or_else(|e| panic!("status decodes: {e}"));
        let req = review.request();
        assert!(
            p.validate(req).allowed(),
            "controller status write is allowed"
        );

        let body = conversion_review(3);
        let review = creview::decode(&body).unwrap_or_else(|e| panic!("conversion decodes: {e}"));
        let req = review.request();
        let (outcome, counts) = Converter.convert(req);
        assert!(
            matches!(outcome, creview::Outcome::Success(ref objs) if objs.len() == 3),
            "conversion succeeds"
        );
        assert_eq!(counts.to_v1alpha1, 3);
    }
}
