//! Admission through a real kube-apiserver v1.35: the apiserver calls the
//! real binary over TLS, and the tests assert what its clients get back
//! (stored objects, `Status` errors, kubectl's warnings and messages).

mod common;

use std::time::Duration;

use common::envtest::{ControlPlane, Principal, Who, eventually};
use common::installed::{GROUP, installed, sessions_in};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const VALIDATING: &str = "validate.agenticsessions.vteam.ambient-code";

fn sessions(client: &kube::Client, ns: &str, version: &str) -> Api<DynamicObject> {
    sessions_in(client, ns, version)
}

fn object(version: &str, ns: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/{version}"), "kind": "AgenticSession",
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn as_json(o: &DynamicObject) -> Value {
    serde_json::to_value(o).expect("serializes")
}

/// The apiserver's `Status` for a refused write.
fn refused<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected the apiserver to refuse the write, got {other:?}"),
    }
}

fn causes(s: &kube::core::Status) -> Vec<(String, String)> {
    s.details
        .iter()
        .flat_map(|d| d.causes.iter())
        .map(|c| (c.field.clone(), c.reason.clone()))
        .collect()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Let every authenticated user write sessions in `ns` (RBAC: the
/// apiserver authorizes before any webhook is called).
async fn open_to_users(cp: &ControlPlane, ns: &str) {
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "sessions", "namespace": ns},
        "rules": [{"apiGroups": [GROUP], "resources": ["agenticsessions", "agenticsessions/status"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "sessions", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "sessions"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}],
    });
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [role, binding]});
    cp.kubectl_ok(&["apply", "-f", "-"], Some(list.to_string().as_bytes()));
}

#[tokio::test]
async fn legacy_writes_are_stored_normalized_and_the_client_sees_the_warnings() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let client = cp.client().await;
    let ns = cp.namespace(&client, "legacy").await;
    let legacy = json!({
        "apiVersion": "vteam.ambient-code/v1alpha1", "kind": "AgenticSession",
        "metadata": {"name": "legacy-1", "namespace": ns},
        "spec": {
            "prompt": "Refactor the auth module",
            "repos": [{"input": {"url": "https://github.com/acme/api.git", "branch": "main"},
                       "output": {"url": "https://github.com/me/api.git", "branch": "fix-auth"}}],
            "mainRepoIndex": 0, "interactive": false, "timeout": 600,
            "llmSettings": {"model": "claude-sonnet-4-6", "temperature": 0.7, "maxTokens": 4000},
        },
    });
    let out = cp.kubectl(
        &Who::admin(),
        &["create", "-f", "-"],
        Some(legacy.to_string().as_bytes()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with("Warning: "))
        .map(String::from)
        .collect();
    assert_eq!(
        warnings,
        [
            "Warning: vteam.ambient-code/v1alpha1 AgenticSession is deprecated; use vteam.ambient-code/v1alpha2",
            "Warning: spec.prompt is deprecated: moved to spec.initialPrompt",
            "Warning: spec.repos[0].input is deprecated: moved to spec.repos[0].url and .branch",
        ]
    );

    // Read back in the storage version: normalized, defaulted, renamed.
    let v2 = sessions(&client, &ns, "v1alpha2")
        .get("legacy-1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        as_json(&v2)["spec"],
        json!({
            "initialPrompt": "Refactor the auth module",
            "repos": [{"url": "https://github.com/acme/api.git", "branch": "main", "autoPush": false,
                       "output": {"url": "https://github.com/me/api.git", "branch": "fix-auth"}}],
            "mainRepo": "api", "interactive": false, "timeoutSeconds": 600,
            "llmSettings": {"model": "claude-sonnet-4-6", "temperature": 0.7, "maxTokens": 4000},
        })
    );
    // What etcd holds is v1alpha2, with no stash (nothing was lost).
    let key = format!("/registry/vteam.ambient-code/agenticsessions/{ns}/legacy-1");
    let stored = cp.etcd_prefix(&key);
    let stored = stored
        .get(&key)
        .unwrap_or_else(|| panic!("{key} not in etcd: {stored:?}"));
    assert_eq!(stored["apiVersion"], "vteam.ambient-code/v1alpha2");
    assert_eq!(stored["spec"], as_json(&v2)["spec"]);
    assert_eq!(stored["metadata"].get("annotations"), None);

    // And through v1alpha1 the legacy fields read back in their v1alpha1 names.
    let v1 = sessions(&client, &ns, "v1alpha1")
        .get("legacy-1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = &as_json(&v1)["spec"];
    assert_eq!(spec["initialPrompt"], "Refactor the auth module");
    assert_eq!(spec["mainRepoIndex"], 0);
    assert_eq!(spec["timeout"], 600);
    assert_eq!(spec.get("prompt"), None);

    // A modern write that already says everything gets no warning and no change.
    let modern = object(
        "v1alpha2",
        &ns,
        "modern-1",
        json!({"initialPrompt": "p", "repos": [{"url": "https://github.com/acme/api.git", "branch": "dev"}],
               "mainRepo": "api"}),
    );
    let out = cp.kubectl(
        &Who::admin(),
        &["create", "-f", "-"],
        Some(
            serde_json::to_string(&modern)
                .expect("serializes")
                .as_bytes(),
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Warning"), "{}", stderr(&out));
}

#[tokio::test]
async fn bad_specs_are_refused_with_field_paths_as_clients_get_them() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let client = cp.client().await;
    let ns = cp.namespace(&client, "bad").await;
    let bad = object(
        "v1alpha2",
        &ns,
        "bad-1",
        json!({
            "initialPrompt": "Read the node's files",
            "repos": [{"url": "file:///etc"},
                      {"url": "https://github.com/acme/api.git", "branch": "fix..it"}],
            "llmSettings": {"temperature": 3},
        }),
    );
    let api = sessions(&client, &ns, "v1alpha2");
    let status = refused(api.create(&PostParams::default(), &bad).await);
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert_eq!(
        status.message,
        format!(
            "admission webhook \"{VALIDATING}\" denied the request: [\
             spec.repos[0].url: Invalid value: \"file:///etc\": scheme must be https, http, ssh or git@host:path; \
             spec.repos[1].branch: Invalid value: \"fix..it\": must not contain \"..\" (git check-ref-format --branch); \
             spec.llmSettings.temperature: Invalid value: 3: must be between 0 and 2, inclusive]"
        )
    );
    assert_eq!(
        causes(&status),
        [
            (
                "spec.repos[0].url".to_owned(),
                "FieldValueInvalid".to_owned()
            ),
            ("spec.repos[1].branch".into(), "FieldValueInvalid".into()),
            (
                "spec.llmSettings.temperature".into(),
                "FieldValueInvalid".into()
            ),
        ]
    );
    // Nothing was stored.
    assert!(
        api.get_opt("bad-1")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );

    // kubectl renders the same refusal like built-in validation.
    let out = cp.kubectl(
        &Who::admin(),
        &["create", "-f", "-"],
        Some(serde_json::to_string(&bad).expect("serializes").as_bytes()),
    );
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim_end(),
        "The AgenticSession \"bad-1\" is invalid: \n\
         * spec.repos[0].url: Invalid value: \"file:///etc\": scheme must be https, http, ssh or git@host:path\n\
         * spec.repos[1].branch: Invalid value: \"fix..it\": must not contain \"..\" (git check-ref-format --branch)\n\
         * spec.llmSettings.temperature: Invalid value: 3: must be between 0 and 2, inclusive"
    );

    // Through v1alpha1 the paths name v1alpha1 fields.
    let legacy = object(
        "v1alpha1",
        &ns,
        "bad-2",
        json!({"prompt": "p", "repos": [{"url": "https://github.com/a/b.git"}], "mainRepoIndex": 3}),
    );
    let status = refused(
        sessions(&client, &ns, "v1alpha1")
            .create(&PostParams::default(), &legacy)
            .await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(
        causes(&status),
        [(
            "spec.mainRepoIndex".to_owned(),
            "FieldValueInvalid".to_owned()
        )]
    );
}

#[tokio::test]
async fn server_side_dry_run_is_judged_like_a_real_write_and_stores_nothing() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let client = cp.client().await;
    let ns = cp.namespace(&client, "dry").await;
    let api = sessions(&client, &ns, "v1alpha1");
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let legacy = object(
        "v1alpha1",
        &ns,
        "dry-1",
        json!({"prompt": "p", "repos": [{"input": {"url": "https://github.com/a/b.git"}}]}),
    );
    let answer = api
        .create(&dry, &legacy)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        as_json(&answer)["spec"]["repos"],
        json!([{"url": "https://github.com/a/b.git", "branch": "main", "autoPush": false}])
    );
    assert_eq!(as_json(&answer)["spec"]["initialPrompt"], "p");
    assert!(
        api.get_opt("dry-1")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );

    let bad = object(
        "v1alpha1",
        &ns,
        "dry-2",
        json!({"repos": [{"url": "https://user:tok@github.com/a/b.git"}]}),
    );
    let status = refused(api.create(&dry, &bad).await);
    assert_eq!(status.code, 422);
    assert_eq!(
        causes(&status),
        [(
            "spec.repos[0].url".to_owned(),
            "FieldValueInvalid".to_owned()
        )]
    );
}

/// Walk a session's status through phases as the reconciler would (each
/// write is a legal V22 transition, made by the controller principal).
async fn set_phase(cp: &ControlPlane, ns: &str, name: &str, phases: &[&str]) {
    let client = cp.client_as(&Who::Token(Principal::Reconciler)).await;
    let api = sessions(&client, ns, "v1alpha2");
    for phase in phases {
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase, "attempt": 1}})),
        )
        .await
        .unwrap_or_else(|e| panic!("status {phase}: {e}"));
    }
}

#[tokio::test]
async fn a_running_session_refuses_spec_edits_and_allows_metadata() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let client = cp.client().await;
    let ns = cp.namespace(&client, "running").await;
    let api = sessions(&client, &ns, "v1alpha2");
    for (name, interactive) in [("batch", false), ("chat", true)] {
        let o = object(
            "v1alpha2",
            &ns,
            name,
            json!({"initialPrompt": "Fix the flaky login test", "interactive": interactive,
                   "repos": [{"url": "https://github.com/acme/api.git", "branch": "main"}]}),
        );
        api.create(&PostParams::default(), &o)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        set_phase(cp, &ns, name, &["Pending", "Creating", "Running"]).await;
    }
    let merge = |v: Value| Patch::Merge(v);
    let pp = PatchParams::default();

    // The prompt is fixed while running, interactive or not.
    let status = refused(
        api.patch(
            "chat",
            &pp,
            &merge(json!({"spec": {"initialPrompt": "Something else"}})),
        )
        .await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(
        causes(&status),
        [(
            "spec.initialPrompt".to_owned(),
            "FieldValueForbidden".to_owned()
        )]
    );

    // Repos may change only in an interactive session.
    let repos = json!({"spec": {"repos": [
        {"url": "https://github.com/acme/api.git", "branch": "main"},
        {"url": "https://github.com/acme/docs.git", "branch": "main"}]}});
    let status = refused(api.patch("batch", &pp, &merge(repos.clone())).await);
    assert_eq!(
        status.message,
        format!(
            "admission webhook \"{VALIDATING}\" denied the request: spec.repos: Forbidden: \
             may change only while an interactive session is Running (phase: Running)"
        )
    );
    let chat = api
        .patch("chat", &pp, &merge(repos))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        as_json(&chat)["spec"]["repos"][1]["url"],
        "https://github.com/acme/docs.git"
    );

    // Labels and annotations are never blocked by the running-session rules.
    let labelled = api
        .patch(
            "batch",
            &pp,
            &merge(json!({"metadata": {"labels": {"team": "auth"}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(as_json(&labelled)["metadata"]["labels"]["team"], "auth");
}

#[tokio::test]
async fn only_controllers_write_status_and_operator_annotations() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "principals").await;
    open_to_users(cp, &ns).await;
    let o = object("v1alpha2", &ns, "s1", json!({"initialPrompt": "p"}));
    sessions(&admin, &ns, "v1alpha2")
        .create(&PostParams::default(), &o)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pending = Patch::Merge(json!({"status": {"phase": "Pending"}}));
    let pp = PatchParams::default();

    // Even cluster-admins are not controller principals: V17 says 403.
    for who in [Who::admin(), Who::Token(Principal::Alice)] {
        let client = cp.client_as(&who).await;
        let status = refused(
            sessions(&client, &ns, "v1alpha2")
                .patch_status("s1", &pp, &pending)
                .await,
        );
        assert_eq!(status.code, 403, "{who:?}: {status:?}");
        assert_eq!(status.reason, "Forbidden");
        assert_eq!(
            causes(&status),
            [("status".to_owned(), "FieldValueForbidden".to_owned())]
        );
    }
    // The reconciler's service account may, with a legal transition...
    let reconciler = cp.client_as(&Who::Token(Principal::Reconciler)).await;
    let rapi = sessions(&reconciler, &ns, "v1alpha2");
    rapi.patch_status("s1", &pp, &pending)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // ...but not an illegal one (V22: Pending cannot jump to Completed).
    let status = refused(
        rapi.patch_status(
            "s1",
            &pp,
            &Patch::Merge(json!({"status": {"phase": "Completed"}})),
        )
        .await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(
        causes(&status),
        [("status.phase".to_owned(), "FieldValueInvalid".to_owned())]
    );

    // Operator-owned annotations: users may not set them (V18).
    let alice = cp.client_as(&Who::Token(Principal::Alice)).await;
    let status = refused(
        sessions(&alice, &ns, "v1alpha2")
            .patch(
                "s1",
                &pp,
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"ambient-code.io/attempt": "7"}}}),
                ),
            )
            .await,
    );
    assert_eq!(status.code, 403);
    assert_eq!(
        causes(&status),
        [(
            "metadata.annotations[ambient-code.io/attempt]".to_owned(),
            "FieldValueForbidden".to_owned()
        )]
    );

    // A runner's service account may write only its own session (V20).
    let other_runner = cp
        .client_as(&Who::user(
            &format!("system:serviceaccount:{ns}:ambient-session-s2"),
            &["system:serviceaccounts", "system:authenticated"],
        ))
        .await;
    let status = refused(
        sessions(&other_runner, &ns, "v1alpha2")
            .patch(
                "s1",
                &pp,
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
    );
    assert_eq!(status.code, 403);
    assert_eq!(
        causes(&status),
        [("metadata.name".to_owned(), "FieldValueForbidden".to_owned())]
    );
    let own_runner = cp
        .client_as(&Who::user(
            &format!("system:serviceaccount:{ns}:ambient-session-s1"),
            &["system:serviceaccounts", "system:authenticated"],
        ))
        .await;
    sessions(&own_runner, &ns, "v1alpha2")
        .patch(
            "s1",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("own runner: {e}"));
}

#[tokio::test]
async fn conversion_serves_both_versions_of_every_object_in_a_list() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let client = cp.client().await;
    let ns = cp.namespace(&client, "lists").await;
    let v1 = sessions(&client, &ns, "v1alpha1");
    for i in 0..5 {
        let o = object(
            "v1alpha1",
            &ns,
            &format!("s{i}"),
            json!({"prompt": format!("p{i}"), "botAccount": {"name": "bot"},
                   "repos": [{"input": {"url": format!("https://github.com/a/r{i}.git")}}]}),
        );
        v1.create(&PostParams::default(), &o)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let v2 = sessions(&client, &ns, "v1alpha2");
    let listed = eventually("five sessions listed", Duration::from_secs(10), || {
        let v2 = v2.clone();
        async move {
            let l = v2
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            if l.items.len() == 5 {
                Ok(l)
            } else {
                Err(format!("{} items", l.items.len()))
            }
        }
    })
    .await;
    for (i, o) in listed.items.iter().enumerate() {
        let j = as_json(o);
        assert_eq!(j["apiVersion"], "vteam.ambient-code/v1alpha2");
        assert_eq!(j["spec"]["initialPrompt"], format!("p{i}"));
        assert_eq!(j["spec"].get("botAccount"), None);
        // The removed field travels in the stash and comes back through v1alpha1.
        assert!(
            j["metadata"]["annotations"]["vteam.ambient-code/conversion-data"]
                .as_str()
                .is_some_and(|s| s.contains("bot")),
            "{j}"
        );
    }
    let back = v1
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for o in &back.items {
        let j = as_json(o);
        assert_eq!(j["spec"]["botAccount"], json!({"name": "bot"}), "{j}");
        assert_eq!(j["metadata"].get("annotations"), None, "{j}");
    }
}

/// `agentic-webhook audit` as an operator runs it before enforcing a
/// git-host allow-list: it lists what is stored, reports what the stricter
/// rule would refuse (read-only), and `--warn-only` turns that into
/// warnings.
#[tokio::test]
async fn audit_reports_stored_sessions_a_stricter_rule_would_refuse() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let client = cp.client().await;
    let ns = cp.namespace(&client, "audit").await;
    let api = sessions(&client, &ns, "v1alpha2");
    for (name, url) in [
        ("on-github", "https://github.com/acme/api.git"),
        ("on-gitlab", "https://gitlab.com/acme/api.git"),
    ] {
        api.create(
            &PostParams::default(),
            &object(
                "v1alpha2",
                &ns,
                name,
                json!({"initialPrompt": "p", "repos": [{"url": url}]}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let kubeconfig = cp.kubeconfig(&Who::admin());
    let audit = |extra: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .args([
                "audit",
                "--kubeconfig",
                kubeconfig.to_str().unwrap_or_default(),
                "-n",
                &ns,
                "-o",
                "json",
            ])
            .args(["--allowed-git-host", "gitlab.com"])
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        (
            out.status.code(),
            common::json(&out.stdout),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, report, err) = audit(&[]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(report["summary"]["objects"], 2, "{report}");
    let by_name = |name: &str| -> Value {
        report["results"]
            .as_array()
            .and_then(|r| {
                r.iter()
                    .find(|x| x["name"] == format!("{ns}/{name}"))
                    .cloned()
            })
            .unwrap_or_else(|| panic!("{name} not in {report}"))
    };
    assert_eq!(by_name("on-github")["decision"], "denied");
    assert_eq!(by_name("on-github")["rules"], json!(["V3"]));
    assert_eq!(
        by_name("on-github")["causes"][0]["field"],
        "spec.repos[0].url"
    );
    assert_eq!(by_name("on-gitlab")["decision"], "allowed");

    // Warn-only: reported as a warning, nothing denied.
    let (code, report, _) = audit(&["--warn-only", "V3"]);
    assert_eq!(code, Some(0), "{report}");
    let warned = by_name_in(&report, &format!("{ns}/on-github"));
    assert_eq!(warned["decision"], "allowed");
    assert!(
        warned["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w
                .as_str()
                .is_some_and(|w| w.starts_with("V3 (warn-only): spec.repos[0].url")))),
        "{warned}"
    );
    // Audit wrote nothing.
    let stored = api.get("on-github").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        as_json(&stored)["spec"]["repos"][0]["url"],
        "https://github.com/acme/api.git"
    );
}

fn by_name_in(report: &Value, name: &str) -> Value {
    report["results"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["name"] == name).cloned())
        .unwrap_or_else(|| panic!("{name} not in {report}"))
}

/// `review -o text` prints what kubectl prints for the same objects: the
/// apiserver's deprecation warning and the webhook's warnings, then the
/// refusal as kubectl renders it (`Invalid` with causes like built-in
/// validation; `Forbidden` as the message behind "error when <verb>").
#[tokio::test]
async fn review_prints_what_kubectl_prints_for_the_same_refusals() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let client = cp.client().await;
    let ns = cp.namespace(&client, "kubectl-text").await;
    let dir = cp.dir().join(format!("kubectl-text-{ns}"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = |name: &str, obj: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, obj.to_string()).unwrap_or_else(|e| panic!("{e}"));
        path.to_str().unwrap_or_default().to_owned()
    };
    let session = |version: &str, name: &str, spec: Value| {
        json!({"apiVersion": format!("{GROUP}/{version}"), "kind": "AgenticSession",
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
    };
    let review = |args: &[&str]| -> String {
        let out = std::process::Command::new(common::BIN)
            .arg("review")
            .args(args)
            .args([
                "--user",
                "admin",
                "--group",
                "system:masters",
                "--group",
                "system:authenticated",
            ])
            .output()
            .unwrap_or_else(|e| panic!("review: {e}"));
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        stderr(&out)
    };
    let kubectl = |args: &[&str]| -> String {
        let out = cp.kubectl(&Who::admin(), args, None);
        assert!(!out.status.success(), "kubectl {args:?} succeeded");
        stderr(&out)
    };

    // 422 with several causes, 422 with one (through v1alpha1, with the
    // deprecation and mutation warnings), 403 on create.
    let many = file(
        "many.json",
        &session(
            "v1alpha2",
            "bad-many",
            json!({"repos": [{"url": "file:///etc"}, {"url": "https://h/o/r", "branch": "a..b"}],
            "llmSettings": {"temperature": 3}}),
        ),
    );
    let one = file(
        "one.json",
        &session(
            "v1alpha1",
            "bad-one",
            json!({"prompt": "p", "repos": [{"input": {"url": "https://169.254.169.254/x"}}]}),
        ),
    );
    let mut forbidden = session("v1alpha2", "bad-owner", json!({"initialPrompt": "p"}));
    forbidden["metadata"]["annotations"] = json!({"ambient-code.io/runner-sa": "default"});
    let forbidden = file("forbidden.json", &forbidden);
    for f in [&many, &one, &forbidden] {
        let want = kubectl(&["create", "-f", f]);
        assert_eq!(review(&[f]), want, "{f}");
        // apply creates the same way.
        assert_eq!(kubectl(&["apply", "-f", f]), want, "{f}");
    }
    assert!(
        kubectl(&["create", "-f", &many])
            .starts_with("The AgenticSession \"bad-many\" is invalid: \n* ")
    );
    assert!(
        kubectl(&["create", "-f", &forbidden])
            .starts_with("Error from server (Forbidden): error when creating")
    );

    // Updates: kubectl replace of a stored object, refused with 403 and 422.
    let good = session(
        "v1alpha2",
        "good",
        json!({"initialPrompt": "p", "userContext": {"userId": "u1"},
        "repos": [{"url": "https://h/o/r"}]}),
    );
    cp.kubectl_ok(&["create", "-f", &file("good.json", &good)], None);
    let stored: Value = serde_json::from_str(&cp.kubectl_ok(
        &[
            "get",
            &format!("agenticsessions.v1alpha2.{GROUP}"),
            "-n",
            &ns,
            "good",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let old = file("stored.json", &stored);
    let mut changed = stored.clone();
    changed["spec"]["userContext"]["userId"] = json!("u2");
    let who_changed = file("who.json", &changed);
    let mut changed = stored.clone();
    changed["spec"]["repos"][0]["branch"] = json!("x..y");
    let branch_changed = file("branch.json", &changed);
    for f in [&who_changed, &branch_changed] {
        let want = kubectl(&["replace", "-f", f]);
        assert_eq!(review(&[f, "--old", &old]), want, "{f}");
    }
    assert!(
        kubectl(&["replace", "-f", &who_changed])
            .starts_with("Error from server (Forbidden): error when replacing")
    );
}
