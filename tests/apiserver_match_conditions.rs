//! The webhook configurations' matchConditions, evaluated by the real
//! kube-apiserver v1.35 (its own CEL): a call the apiserver skips must be one
//! whose answer was known. Each case is written (server-side dry run) and
//! the webhook's own request counter says whether the apiserver called it;
//! for every skipped call the webhook's rules, run here on the same request,
//! must have had nothing to say (mutation: no patch, no warning; validation:
//! allowed).
//!
//! `MATCH_CASES` sets the number of generated objects (default 160).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use agentic_webhook::admission::review::{Operation, RequestBuilder};
use agentic_webhook::admission::{AdmissionService, Config, Policy, Principals};
use common::envtest::{Principal, Who};
use common::installed::{GROUP, calls, installed, sessions_in, with_crd_defaults};
use kube::api::{DynamicObject, PostParams};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

/// The tests read the one installed server's request counters: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cases() -> usize {
    std::env::var("MATCH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160)
}

/// The rules as the installed server runs them.
fn policy() -> Policy {
    Policy::new(Config {
        principals: Principals {
            users: vec![Principal::Reconciler.username().to_owned()],
            groups: Vec::new(),
            ..Principals::default()
        },
        ..Config::default()
    })
}

fn padded(text: &'static str) -> BoxedStrategy<String> {
    let ws = prop_oneof![
        8 => Just(""),
        1 => Just(" "),
        1 => Just("\t"),
        1 => Just("\u{a0}"),
        1 => Just("\u{2003}"),
        1 => Just("\n"),
    ];
    (ws.clone(), ws)
        .prop_map(move |(a, b)| format!("{a}{text}{b}"))
        .boxed()
}

/// A string field: usually clean, sometimes padded, blank or mistyped.
fn text(choices: &'static [&'static str]) -> BoxedStrategy<Option<Value>> {
    let pick = proptest::sample::select(choices).prop_flat_map(padded);
    prop_oneof![
        2 => Just(None),
        8 => pick.prop_map(|s| Some(Value::String(s))),
        1 => Just(Some(json!(""))),
        1 => Just(Some(json!(7))),
    ]
    .boxed()
}

const URLS: &[&str] = &[
    "https://github.com/acme/api.git",
    "https://gitlab.com/acme/web",
    "git@github.com:acme/infra.git",
];
const BRANCHES: &[&str] = &["main", "develop", "fix/checkout-502"];

fn object_of(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect(),
    )
}

fn git_ref() -> BoxedStrategy<Value> {
    (text(URLS), text(BRANCHES))
        .prop_map(|(url, branch)| object_of(vec![("url", url), ("branch", branch)]))
        .boxed()
}

/// A repo; the legacy `input` exists only in v1alpha1's schema (the
/// apiserver prunes it from v1alpha2 objects before any webhook).
fn repo(version: &'static str) -> BoxedStrategy<Value> {
    let input = if version == "v1alpha1" {
        proptest::option::weighted(0.3, git_ref()).boxed()
    } else {
        Just(None).boxed()
    };
    (
        text(URLS),
        text(BRANCHES),
        input,
        proptest::option::weighted(0.2, git_ref()),
    )
        .prop_map(|(url, branch, input, output)| {
            object_of(vec![
                ("url", url),
                ("branch", branch),
                ("input", input),
                ("output", output),
            ])
        })
        .boxed()
}

fn workflow() -> BoxedStrategy<Value> {
    (
        text(&["https://github.com/acme/workflows.git"]),
        text(BRANCHES),
        text(&["workflows/bugfix"]),
    )
        .prop_map(|(url, branch, path)| {
            object_of(vec![("gitUrl", url), ("branch", branch), ("path", path)])
        })
        .boxed()
}

/// `(version, spec)`: clean sessions, legacy ones, and everything between,
/// with only the fields the version's schema has (the apiserver prunes the
/// rest before admission).
fn session() -> BoxedStrategy<(&'static str, Value)> {
    prop_oneof![Just("v1alpha1"), Just("v1alpha2")]
        .prop_flat_map(|version| {
            let prompt = if version == "v1alpha1" {
                proptest::option::weighted(0.3, Just("Fix the flaky test")).boxed()
            } else {
                Just(None).boxed()
            };
            (
                Just(version),
                prompt,
                proptest::option::weighted(0.8, Just("Fix the flaky test")),
                proptest::option::weighted(0.9, proptest::collection::vec(repo(version), 0..3)),
                proptest::option::weighted(0.3, workflow()),
                text(&["api", "web", "infra"]),
            )
        })
        .prop_map(|(version, prompt, initial, repos, wf, main)| {
            let mut fields = vec![
                ("prompt", prompt.map(Value::from)),
                ("initialPrompt", initial.map(Value::from)),
                ("repos", repos.map(Value::Array)),
                ("activeWorkflow", wf),
            ];
            if version == "v1alpha2" {
                fields.push(("mainRepo", main));
            }
            (version, object_of(fields))
        })
        .boxed()
}

/// Normalized sessions with at most one thing a writer might get wrong:
/// each trigger of the mutating webhook alone, in both versions.
fn one_offs() -> Vec<(&'static str, Value)> {
    type Edit = fn(&mut Value);
    let edits: Vec<(&'static str, Edit)> = vec![
        ("none", |_| {}),
        ("legacy prompt", |s| {
            s["prompt"] = json!("Fix the flaky test")
        }),
        ("legacy prompt, no initialPrompt", |s| {
            s["prompt"] = s["initialPrompt"].take();
        }),
        ("legacy input", |s| {
            s["repos"][0]["input"] = json!({"url": "https://github.com/acme/api.git"});
        }),
        ("no branch", |s| {
            s["repos"][0].as_object_mut().map(|r| r.remove("branch"));
        }),
        ("blank branch", |s| s["repos"][0]["branch"] = json!(" ")),
        ("padded url", |s| {
            s["repos"][0]["url"] = json!("https://github.com/acme/api.git\u{a0}")
        }),
        ("padded output", |s| {
            s["repos"][0]["output"] =
                json!({"url": " https://github.com/me/api.git", "branch": "fix"});
        }),
        ("clean output", |s| {
            s["repos"][0]["output"] =
                json!({"url": "https://github.com/me/api.git", "branch": "fix"});
        }),
        ("workflow without branch", |s| {
            s["activeWorkflow"]
                .as_object_mut()
                .map(|w| w.remove("branch"));
        }),
        ("workflow blank branch", |s| {
            s["activeWorkflow"]["branch"] = json!("")
        }),
        ("padded workflow path", |s| {
            s["activeWorkflow"]["path"] = json!("workflows/bugfix\n")
        }),
        ("workflow without url", |s| {
            s["activeWorkflow"] = json!({"path": "workflows/bugfix"});
        }),
        ("no mainRepo", |s| {
            s.as_object_mut().map(|o| o.remove("mainRepo"));
        }),
        ("blank mainRepo", |s| s["mainRepo"] = json!("  ")),
        ("no repos", |s| {
            s.as_object_mut().map(|o| o.remove("repos"));
            s.as_object_mut().map(|o| o.remove("mainRepo"));
        }),
    ];
    let mut out = Vec::new();
    for version in ["v1alpha1", "v1alpha2"] {
        for (_, edit) in &edits {
            let mut spec = normalized();
            if version == "v1alpha1" {
                spec.as_object_mut().map(|o| o.remove("mainRepo"));
            }
            edit(&mut spec);
            if version == "v1alpha2" {
                // Legacy fields do not exist in v1alpha2's schema.
                spec.as_object_mut().map(|o| o.remove("prompt"));
                if let Some(r) = spec.pointer_mut("/repos/0").and_then(Value::as_object_mut) {
                    r.remove("input");
                }
            }
            out.push((version, spec));
        }
    }
    out
}

/// A repo list in the clean form every writer should send: never needs the
/// mutating webhook.
fn normalized() -> Value {
    json!({"initialPrompt": "Fix the flaky test", "mainRepo": "api",
           "repos": [{"url": "https://github.com/acme/api.git", "branch": "main"}],
           "activeWorkflow": {"gitUrl": "https://github.com/acme/workflows.git", "branch": "main",
                              "path": "workflows/bugfix"}})
}

fn generated<T: std::fmt::Debug>(strategy: impl Strategy<Value = T>, n: usize) -> Vec<T> {
    let mut runner = TestRunner::deterministic();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).expect("a case").current())
        .collect()
}

fn session_object(version: &str, ns: &str, name: &str, spec: &Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/{version}"), "kind": "AgenticSession",
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    }))
    .expect("an object")
}

#[tokio::test]
async fn mutation_is_skipped_exactly_when_it_would_change_nothing() {
    let _one_at_a_time = SERIAL.lock().await;
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = env.cp.namespace(&client, "match-mutate").await;
    let policy = policy();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };

    // A normalized object: the apiserver does not call /mutate at all.
    let before = calls(env, "/mutate");
    let validated = calls(env, "/validate");
    sessions_in(&client, &ns, "v1alpha2")
        .create(
            &PostParams::default(),
            &session_object("v1alpha2", &ns, "clean", &normalized()),
        )
        .await
        .expect("created");
    assert_eq!(
        calls(env, "/mutate"),
        before,
        "a normalized create was sent to /mutate"
    );
    assert_eq!(
        calls(env, "/validate"),
        validated + 1.0,
        "every create is validated"
    );
    // A legacy one is.
    let legacy =
        json!({"prompt": "p", "repos": [{"input": {"url": "https://github.com/acme/api.git"}}]});
    sessions_in(&client, &ns, "v1alpha1")
        .create(&dry, &session_object("v1alpha1", &ns, "legacy", &legacy))
        .await
        .expect("created");
    assert!(
        calls(env, "/mutate") > before,
        "a legacy create was not sent to /mutate"
    );

    // A person's create without a user context is (M7 fills it in); with
    // their own, it is not. Administrators (above) are not filled in.
    let grant = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "sessions", "namespace": ns},
         "rules": [{"apiGroups": [GROUP], "resources": ["agenticsessions"], "verbs": ["create"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "carol", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "sessions"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "carol"}]}]});
    env.cp
        .kubectl_ok(&["apply", "-f", "-"], Some(grant.to_string().as_bytes()));
    let carol = env
        .cp
        .client_as(&Who::user("carol", &["system:authenticated", "team-c"]))
        .await;
    let before = calls(env, "/mutate");
    let made = sessions_in(&carol, &ns, "v1alpha2")
        .create(
            &dry,
            &session_object("v1alpha2", &ns, "carols", &normalized()),
        )
        .await
        .expect("created");
    assert_eq!(calls(env, "/mutate"), before + 1.0, "M7 needs /mutate");
    assert_eq!(
        serde_json::to_value(&made).expect("serializes")["spec"]["userContext"],
        json!({"userId": "carol", "displayName": "carol", "groups": ["team-c"]})
    );
    let mut own = normalized();
    own["userContext"] = json!({"userId": "carol", "groups": ["team-c"]});
    sessions_in(&carol, &ns, "v1alpha2")
        .create(&dry, &session_object("v1alpha2", &ns, "carols", &own))
        .await
        .expect("created");
    assert_eq!(
        calls(env, "/mutate"),
        before + 1.0,
        "a create with the user's own context was sent to /mutate"
    );

    // Wrong types where the expressions look: the schema refuses them after
    // admission (422), never the expression (an evaluation error with
    // failurePolicy Fail would refuse the write as 403 Forbidden).
    for (i, spec) in [
        json!({"repos": "https://github.com/acme/api.git"}),
        json!({"repos": [7, "x", null]}),
        json!({"repos": [{"url": 7, "branch": ["main"], "output": "o"}]}),
        json!({"activeWorkflow": "bugfix"}),
        json!({"activeWorkflow": {"gitUrl": 7, "branch": {}, "path": 1}}),
        json!({"mainRepo": 3, "repos": [{"url": "https://github.com/acme/api.git", "branch": "main"}]}),
        json!({"initialPrompt": ["p"]}),
    ]
    .iter()
    .enumerate()
    {
        for version in ["v1alpha1", "v1alpha2"] {
            let created = sessions_in(&client, &ns, version)
                .create(&dry, &session_object(version, &ns, &format!("typed-{i}"), spec))
                .await;
            // (v1alpha1 has no mainRepo: pruned, and the write goes through.)
            match created {
                Ok(_) => {}
                Err(kube::Error::Api(s)) => {
                    assert_eq!(s.code, 422, "{spec} as {version}: {}", s.message)
                }
                Err(e) => panic!("{spec} as {version}: {e}"),
            }
        }
    }

    let (mut skipped, mut called, mut needless, mut refusals) = (0, 0, 0, 0);
    let all = one_offs().into_iter().chain(generated(session(), cases()));
    for (i, (version, spec)) in all.enumerate() {
        let name = format!("case-{i}");
        let before = calls(env, "/mutate");
        let result = sessions_in(&client, &ns, version)
            .create(&dry, &session_object(version, &ns, &name, &spec))
            .await;
        let was_called = calls(env, "/mutate") > before;
        // What the apiserver held when it decided: the object as sent (the
        // generator sends no field the version's schema prunes) with the
        // schema's defaults. Not the answer: a v1alpha1 answer has been
        // through conversion and back.
        let refused = result.is_err();
        let seen = with_crd_defaults(
            version,
            &serde_json::to_value(session_object(version, &ns, &name, &spec)).expect("serializes"),
        );
        // As the apiserver sent it: from the admin the client is.
        let body = RequestBuilder::new(Operation::Create, version)
            .user("admin", &["system:masters", "system:authenticated"])
            .object(Some(seen.clone()))
            .to_vec();
        let review = agentic_webhook::admission::review::decode(&body).expect("decodes");
        let verdict = policy.mutate(review.request());
        let needed = verdict.patch.is_some() || !verdict.warnings.is_empty();
        refusals += usize::from(refused);
        if was_called {
            called += 1;
            needless += usize::from(!needed);
        } else {
            skipped += 1;
            assert!(
                !needed,
                "the apiserver skipped /mutate for an object the webhook would change: {seen}\npatch {:?}, warnings {:?}",
                verdict.patch.as_deref().map(String::from_utf8_lossy),
                verdict.warnings
            );
        }
    }
    common::envtest::say(&format!(
        "matchConditions /mutate: {skipped} skipped, {called} called ({needless} of them for nothing); \
         {refusals} of the writes refused after admission"
    ));
    assert!(
        skipped > 0 && called > 0,
        "skipped {skipped}, called {called}"
    );
}

/// One way to change a stored session, and who does it.
#[derive(Clone, Debug)]
enum Change {
    Nothing,
    Label,
    Finalizer,
    Annotation(&'static str),
    DisplayName,
    Prompt,
}

#[derive(Clone, Copy, Debug)]
enum Writer {
    Alice,
    OwnRunner,
    OtherRunner,
    Controller,
}

fn writer_identity(w: Writer, ns: &str, session: &str) -> (String, Vec<String>) {
    // system:masters so RBAC lets every writer through to the webhooks.
    let masters = vec![
        "system:masters".to_owned(),
        "system:authenticated".to_owned(),
    ];
    match w {
        Writer::Alice => ("alice".into(), masters),
        Writer::OwnRunner => (
            format!("system:serviceaccount:{ns}:ambient-session-{session}"),
            masters,
        ),
        Writer::OtherRunner => (
            format!("system:serviceaccount:{ns}:ambient-session-other"),
            masters,
        ),
        Writer::Controller => (Principal::Reconciler.username().to_owned(), masters),
    }
}

/// The controller principal, with RBAC out of the way.
fn controller_who() -> Who {
    Who::user(
        Principal::Reconciler.username(),
        &["system:masters", "system:authenticated"],
    )
}

#[tokio::test]
async fn validation_is_skipped_only_for_updates_no_rule_judges() {
    let _one_at_a_time = SERIAL.lock().await;
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = env.cp.namespace(&client, "match-validate").await;
    let policy = policy();

    // Stored sessions: a clean one, a Running interactive one, one with an
    // operator-owned annotation.
    let api = sessions_in(&client, &ns, "v1alpha2");
    let mut specs = BTreeMap::new();
    specs.insert("plain", normalized());
    let mut interactive = normalized();
    interactive["interactive"] = json!(true);
    specs.insert("running", interactive);
    specs.insert("owned", normalized());
    for (name, spec) in &specs {
        let mut o = session_object("v1alpha2", &ns, name, spec);
        if *name == "owned" {
            o.metadata.annotations = Some(
                [(
                    "ambient-code.io/runner-sa".to_owned(),
                    "ambient-session-owned".to_owned(),
                )]
                .into(),
            );
        }
        let as_controller = env.cp.client_as(&controller_who()).await;
        let created = match *name {
            "owned" => {
                sessions_in(&as_controller, &ns, "v1alpha2")
                    .create(&PostParams::default(), &o)
                    .await
            }
            _ => api.create(&PostParams::default(), &o).await,
        };
        created.unwrap_or_else(|e| panic!("creating {name}: {e}"));
    }
    let controller = env.cp.client_as(&controller_who()).await;
    for phase in ["Pending", "Creating", "Running"] {
        let status = json!({"status": {"phase": phase, "attempt": 1, "observedGeneration": 1}});
        sessions_in(&controller, &ns, "v1alpha2")
            .patch_status(
                "running",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&status),
            )
            .await
            .unwrap_or_else(|e| panic!("status {phase} written by the controller: {e}"));
    }

    let changes = [
        Change::Nothing,
        Change::Label,
        Change::Finalizer,
        Change::Annotation("ambient-code.io/desired-phase"),
        Change::Annotation("ambient-code.io/runner-sa"),
        Change::Annotation("example.com/note"),
        Change::DisplayName,
        Change::Prompt,
    ];
    let writers = [
        Writer::Alice,
        Writer::OwnRunner,
        Writer::OtherRunner,
        Writer::Controller,
    ];
    let (mut skipped, mut called) = (0, 0);
    let mut skipped_label_by_alice = false;
    for name in specs.keys() {
        for change in &changes {
            for writer in writers {
                let (user, groups) = writer_identity(writer, &ns, name);
                let who = Who::user(
                    &user,
                    &groups.iter().map(String::as_str).collect::<Vec<_>>(),
                );
                let as_writer = env.cp.client_as(&who).await;
                let stored = api.get(name).await.expect("stored");
                let old = serde_json::to_value(&stored).expect("serializes");
                let mut new = old.clone();
                match change {
                    Change::Nothing => {}
                    Change::Label => new["metadata"]["labels"] = json!({"team": "a"}),
                    Change::Finalizer => {
                        new["metadata"]["finalizers"] = json!(["example.com/hold"])
                    }
                    Change::Annotation(key) => {
                        new["metadata"]["annotations"][*key] = json!("Stopped");
                    }
                    Change::DisplayName => new["spec"]["displayName"] = json!("renamed"),
                    Change::Prompt => new["spec"]["initialPrompt"] = json!("Something else"),
                }
                let sent: DynamicObject = serde_json::from_value(new.clone()).expect("an object");
                let before = calls(env, "/validate");
                let result = sessions_in(&as_writer, &ns, "v1alpha2")
                    .replace(
                        name,
                        &PostParams {
                            dry_run: true,
                            ..PostParams::default()
                        },
                        &sent,
                    )
                    .await;
                let was_called = calls(env, "/validate") > before;
                let body = RequestBuilder::new(Operation::Update, "v1alpha2")
                    .user(&user, &groups)
                    .object(Some(new.clone()))
                    .old_object(Some(old.clone()))
                    .to_vec();
                let review = agentic_webhook::admission::review::decode(&body).expect("decodes");
                let verdict = policy.validate(review.request());
                let case = format!("{change:?} of {name} by {writer:?}");
                if was_called {
                    called += 1;
                } else {
                    skipped += 1;
                    assert!(
                        verdict.allowed(),
                        "{case}: the apiserver skipped /validate for a write the rules deny: {:?}",
                        verdict.deny.map(|d| d.message)
                    );
                    assert!(result.is_ok(), "{case}: {result:?}");
                    skipped_label_by_alice |=
                        matches!((change, writer), (Change::Label, Writer::Alice));
                }
                // Runners are judged on every write (V20).
                if matches!(writer, Writer::OwnRunner | Writer::OtherRunner) {
                    assert!(was_called, "{case}: a runner's write skipped /validate");
                }
                // Status and spec changes always run the rules.
                if matches!(
                    change,
                    Change::DisplayName | Change::Prompt | Change::Annotation(_)
                ) {
                    assert!(was_called, "{case}: skipped /validate");
                }
            }
        }
    }
    common::envtest::say(&format!(
        "matchConditions /validate: {skipped} of {} updates skipped",
        skipped + called
    ));
    assert!(
        skipped_label_by_alice,
        "a label-only update by a user still called /validate"
    );

    // Status writes always reach the webhook (V17).
    let before = calls(env, "/validate");
    let denied = sessions_in(&client, &ns, "v1alpha2")
        .patch_status(
            "plain",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({"status": {"phase": "Running"}})),
        )
        .await;
    assert!(
        denied.is_err(),
        "an admin status write passed V17: {denied:?}"
    );
    assert!(calls(env, "/validate") > before);
    tokio::time::sleep(Duration::from_millis(1)).await;
}
