//! Conversion properties over generated objects:
//! v1→v2→v1 and v2→v1→v2 are identities on canonical objects, legacy forms
//! normalize as SPEC says, metadata changes only in annotations, and
//! conversion never panics on arbitrary JSON.

use std::collections::BTreeMap;

use agentic_webhook::api::Version;
use agentic_webhook::api::common::{ActiveWorkflow, GitRef, LlmSettings, McpServers, UserContext};
use agentic_webhook::api::status::{
    Condition, ConditionStatus, Phase, ReconciledRepo, ReconciledWorkflow, RepoState,
    StoppedReason, WorkflowState,
};
use agentic_webhook::api::{v1alpha1 as v1, v1alpha2 as v2};
use agentic_webhook::conversion::convert_object;
use proptest::option::of;
use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};

const STASH: &str = "vteam.ambient-code/conversion-data";

fn s() -> BoxedStrategy<String> {
    prop_oneof![Just(String::new()), "[a-z]{1,6}", "\\PC{0,10}"].boxed()
}

fn url() -> BoxedStrategy<String> {
    prop_oneof![
        Just("https://github.com/acme/api.git".to_owned()),
        Just("https://github.com/acme/web".to_owned()),
        Just("git@github.com:other/api.git".to_owned()),
        "https://h/[a-c]{1,2}/[a-c]{1,2}",
        "\\PC{0,8}",
    ]
    .boxed()
}

fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (-1e6f64..1e6).prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,8}".prop_map(Value::String),
    ]
    .boxed()
}

fn json_any() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("\\PC{0,6}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

fn json_map() -> BoxedStrategy<Map<String, Value>> {
    proptest::collection::btree_map("\\PC{0,6}", json_any(), 0..3)
        .prop_map(|m| m.into_iter().collect())
        .boxed()
}

fn number() -> BoxedStrategy<Number> {
    prop_oneof![
        any::<i32>().prop_map(Number::from),
        (0f64..2.0).prop_map(|f| Number::from_f64(f).unwrap_or_else(|| Number::from(0))),
    ]
    .boxed()
}

fn git_ref() -> BoxedStrategy<GitRef> {
    (of(url()), of(s()))
        .prop_map(|(url, branch)| GitRef { url, branch })
        .boxed()
}

fn string_list() -> BoxedStrategy<Vec<String>> {
    proptest::collection::vec(s(), 0..3).boxed()
}

type Common = (
    Option<UserContext>,
    Option<LlmSettings>,
    Option<McpServers>,
    Option<ActiveWorkflow>,
    Option<BTreeMap<String, String>>,
);

fn common() -> BoxedStrategy<Common> {
    (
        of(
            (of(s()), of(s()), of(string_list())).prop_map(|(user_id, display_name, groups)| {
                UserContext {
                    user_id,
                    display_name,
                    groups,
                }
            }),
        ),
        of((of(s()), of(number()), of(any::<i64>())).prop_map(
            |(model, temperature, max_tokens)| LlmSettings {
                model,
                temperature,
                max_tokens,
            },
        )),
        of((
            of(proptest::collection::btree_map(
                s(),
                json_map().prop_map(Value::Object),
                0..2,
            )),
            of(string_list()),
        )
            .prop_map(|(custom, disabled)| McpServers {
                custom: custom.map(|m| m.into_iter().collect()),
                disabled,
            })),
        of(
            (of(url()), of(s()), of(s())).prop_map(|(git_url, branch, path)| ActiveWorkflow {
                git_url,
                branch,
                path,
            }),
        ),
        of(proptest::collection::btree_map("[A-Z_]{1,5}", s(), 0..3)),
    )
        .boxed()
}

fn condition() -> BoxedStrategy<Condition> {
    (
        "[A-Z][a-z]{0,6}",
        prop_oneof![
            Just(ConditionStatus::True),
            Just(ConditionStatus::False),
            Just(ConditionStatus::Unknown)
        ],
        of(s()),
        of(s()),
        of(Just("2026-11-23T06:00:00Z".to_owned())),
        of(0i64..5),
    )
        .prop_map(
            |(type_, status, reason, message, last_transition_time, observed_generation)| {
                Condition {
                    type_,
                    status,
                    reason,
                    message,
                    last_transition_time,
                    observed_generation,
                }
            },
        )
        .boxed()
}

fn phase(with_error: bool) -> BoxedStrategy<Phase> {
    let mut names: Vec<&'static str> = Phase::V1ALPHA2.to_vec();
    if with_error {
        names.push("Error");
    }
    proptest::sample::select(names)
        .prop_map(Phase::parse)
        .boxed()
}

/// The platform's clone states, and anything else (kept verbatim).
fn state() -> BoxedStrategy<String> {
    prop_oneof![
        Just("Cloning".to_owned()),
        Just("Ready".to_owned()),
        Just("Active".to_owned()),
        Just("Failed".to_owned()),
        s()
    ]
    .boxed()
}

fn reconciled_repo() -> BoxedStrategy<ReconciledRepo> {
    (
        (of(s()), of(url()), of(s())),
        (of(string_list()), of(s()), of(s()), of(state()), of(s())),
    )
        .prop_map(
            |((name, url, branch), (branches, current, default, status, cloned_at))| {
                ReconciledRepo {
                    name,
                    url,
                    branch,
                    branches,
                    current_active_branch: current,
                    default_branch: default,
                    status: status.map(|s| RepoState::parse(&s)),
                    cloned_at,
                }
            },
        )
        .boxed()
}

fn reconciled_workflow() -> BoxedStrategy<ReconciledWorkflow> {
    (of(url()), of(s()), of(s()), of(state()), of(s()))
        .prop_map(
            |(git_url, branch, path, status, applied_at)| ReconciledWorkflow {
                git_url,
                branch,
                path,
                status: status.map(|s| WorkflowState::parse(&s)),
                applied_at,
            },
        )
        .boxed()
}

type Shared = (
    Option<Phase>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<Vec<ReconciledRepo>>,
    Option<ReconciledWorkflow>,
    Option<String>,
    Option<StoppedReason>,
    Option<String>,
    Option<i64>,
    (Option<i64>, Option<i64>),
    Option<Vec<Condition>>,
);

fn shared_status(with_error: bool) -> BoxedStrategy<Shared> {
    (
        of(phase(with_error)),
        of(0i64..9),
        of(s()),
        of(s()),
        of(proptest::collection::vec(reconciled_repo(), 0..2)),
        of(reconciled_workflow()),
        of(s()),
        of(prop_oneof![
            Just(StoppedReason::User),
            Just(StoppedReason::Inactivity)
        ]),
        of(s()),
        of(0i64..3),
        (of(1i64..4), of(0i64..4)),
        of(proptest::collection::vec(condition(), 0..3)),
    )
        .boxed()
}

fn status_v2() -> BoxedStrategy<v2::SessionStatus> {
    shared_status(false)
        .prop_map(
            |(phase, og, st, ct, rr, rw, la, sr, sid, src, (attempt, restarts), conditions)| {
                v2::SessionStatus {
                    phase,
                    observed_generation: og,
                    start_time: st,
                    completion_time: ct,
                    reconciled_repos: rr,
                    reconciled_workflow: rw,
                    last_activity_time: la,
                    stopped_reason: sr,
                    sdk_session_id: sid,
                    sdk_restart_count: src,
                    attempt,
                    restarts,
                    conditions,
                }
            },
        )
        .boxed()
}

fn status_v1() -> BoxedStrategy<v1::SessionStatus> {
    let legacy = (
        of(s()),
        of(any::<bool>()),
        of(s()),
        of(s()),
        of(s()),
        of(any::<i64>()),
        of(s()),
        of(number()),
        of(json_map()),
        of(s()),
        of(any::<bool>()),
        of(proptest::collection::vec(json_map(), 0..2)),
    );
    (shared_status(true), legacy)
        .prop_map(
            |(
                (phase, og, st, ct, rr, rw, la, sr, sid, src, (attempt, restarts), conditions),
                (
                    message,
                    is_error,
                    job_name,
                    state_dir,
                    subtype,
                    num_turns,
                    session_id,
                    cost,
                    usage,
                    result,
                    changes,
                    repos,
                ),
            )| v1::SessionStatus {
                phase,
                observed_generation: og,
                start_time: st,
                completion_time: ct,
                reconciled_repos: rr,
                reconciled_workflow: rw,
                last_activity_time: la,
                stopped_reason: sr,
                sdk_session_id: sid,
                sdk_restart_count: src,
                attempt,
                restarts,
                conditions,
                message,
                is_error,
                job_name,
                state_dir,
                subtype,
                num_turns,
                session_id,
                total_cost_usd: cost,
                usage,
                result,
                has_workspace_changes: changes,
                repos,
            },
        )
        .boxed()
}

fn repo_v2() -> BoxedStrategy<v2::Repo> {
    (url(), of(s()), of(any::<bool>()), of(git_ref()))
        .prop_map(|(url, branch, auto_push, output)| v2::Repo {
            url,
            branch,
            auto_push,
            output,
        })
        .boxed()
}

fn spec_v2() -> BoxedStrategy<v2::SessionSpec> {
    (
        of(s()),
        of(proptest::collection::vec(repo_v2(), 0..4)),
        of(prop_oneof![
            Just("api".to_owned()),
            Just("web".to_owned()),
            s()
        ]),
        of(any::<bool>()),
        of(s()),
        common(),
        (
            of(any::<i64>()),
            of(any::<i64>()),
            of(any::<bool>()),
            of(any::<bool>()),
        ),
    )
        .prop_map(
            |(initial_prompt, repos, main_repo, interactive, display_name, c, t)| v2::SessionSpec {
                initial_prompt,
                repos,
                main_repo,
                interactive,
                display_name,
                user_context: c.0,
                llm_settings: c.1,
                timeout_seconds: t.0,
                inactivity_timeout_seconds: t.1,
                stop_on_run_finished: t.2,
                auto_push_on_complete: t.3,
                environment_variables: c.4,
                mcp_servers: c.2,
                active_workflow: c.3,
            },
        )
        .boxed()
}

/// Canonical v1alpha1 repos are flat; a stray `input` beside a url is kept too.
fn repo_v1() -> BoxedStrategy<v1::Repo> {
    (
        url(),
        of(s()),
        of(any::<bool>()),
        of(git_ref()),
        of(git_ref()),
    )
        .prop_map(|(url, branch, auto_push, input, output)| v1::Repo {
            url: Some(url),
            branch,
            auto_push,
            input,
            output,
        })
        .boxed()
}

fn spec_v1() -> BoxedStrategy<v1::SessionSpec> {
    (
        (of("[a-z]{1,6}"), of(s())),
        of(proptest::collection::vec(repo_v1(), 0..4)),
        of(-2i64..6),
        of(any::<bool>()),
        of(s()),
        common(),
        (
            of(any::<i64>()),
            of(any::<i64>()),
            of(any::<bool>()),
            of(any::<bool>()),
        ),
        (
            of(of(s()).prop_map(|name| v1::BotAccount { name })),
            of((of(s()), of(s()), of(s()), of(s())).prop_map(
                |(cpu, memory, storage_class, priority_class)| v1::ResourceOverrides {
                    cpu,
                    memory,
                    storage_class,
                    priority_class,
                },
            )),
        ),
    )
        .prop_map(
            |((initial, prompt), repos, idx, interactive, display_name, c, t, (bot, ro))| {
                // Canonical: a legacy `prompt` only beside a different, non-empty initialPrompt.
                let prompt = match (&initial, prompt) {
                    (Some(i), Some(p)) if *i != p => Some(p),
                    _ => None,
                };
                v1::SessionSpec {
                    prompt,
                    initial_prompt: initial,
                    repos,
                    main_repo_index: idx,
                    interactive,
                    display_name,
                    user_context: c.0,
                    llm_settings: c.1,
                    timeout: t.0,
                    inactivity_timeout: t.1,
                    stop_on_run_finished: t.2,
                    auto_push_on_complete: t.3,
                    environment_variables: c.4,
                    mcp_servers: c.2,
                    active_workflow: c.3,
                    bot_account: bot,
                    resource_overrides: ro,
                }
            },
        )
        .boxed()
}

fn metadata() -> BoxedStrategy<Option<Value>> {
    of((
        "[a-z]{1,8}",
        of(proptest::collection::btree_map("[a-z./]{1,10}", s(), 1..3)),
        of(proptest::collection::btree_map("[a-z]{1,6}", s(), 1..3)),
        any::<bool>(),
    )
        .prop_map(|(name, annotations, labels, managed)| {
            let mut m = json!({"name": name, "namespace": "team-a", "uid": "u-1", "generation": 3});
            if let Some(a) = annotations {
                m["annotations"] = json!(a);
            }
            if let Some(l) = labels {
                m["labels"] = json!(l);
            }
            if managed {
                m["managedFields"] = json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "vteam.ambient-code/v1alpha2",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:repos": {}}}}]);
            }
            m
        }))
    .boxed()
}

fn object(
    api_version: &str,
    metadata: Option<Value>,
    spec: Option<Value>,
    status: Option<Value>,
) -> Value {
    let mut o = json!({"apiVersion": api_version, "kind": "AgenticSession"});
    if let Some(m) = metadata {
        o["metadata"] = m;
    }
    if let Some(s) = spec {
        o["spec"] = s;
    }
    if let Some(s) = status {
        o["status"] = s;
    }
    o
}

fn convert(v: &Value, to: Version) -> Result<Value, TestCaseError> {
    let out =
        convert_object(&v.to_string(), to).map_err(|e| TestCaseError::fail(format!("{e}: {v}")))?;
    serde_json::from_slice(&out).map_err(|e| TestCaseError::fail(e.to_string()))
}

fn without_annotations(m: &Value) -> Value {
    let mut m = if m.is_null() { json!({}) } else { m.clone() };
    if let Some(o) = m.as_object_mut() {
        o.remove("annotations");
    }
    m
}

/// `PROPTEST_CASES` raises the count for a soak.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), ..ProptestConfig::default() })]

    #[test]
    fn v1_to_v2_to_v1_is_the_identity(meta in metadata(), spec in of(spec_v1()), status in of(status_v1())) {
        let spec = spec.map(|s| serde_json::to_value(s).expect("serializes"));
        let status = status.map(|s| serde_json::to_value(s).expect("serializes"));
        let original = object(v1::API_VERSION, meta, spec, status);
        let hub = convert(&original, Version::V1Alpha2)?;
        prop_assert_eq!(&hub["apiVersion"], v2::API_VERSION);
        prop_assert_eq!(without_annotations(&hub["metadata"]), without_annotations(&original["metadata"]));
        // The hub is valid v1alpha2: it decodes as the typed v2 spec.
        if let Some(spec) = hub.get("spec") {
            prop_assert!(serde_json::from_value::<v2::SessionSpec>(spec.clone()).is_ok(), "{spec}");
        }
        let back = convert(&hub, Version::V1Alpha1)?;
        prop_assert_eq!(back, original);
    }

    #[test]
    fn v2_to_v1_to_v2_is_the_identity(meta in metadata(), spec in of(spec_v2()), status in of(status_v2())) {
        let spec = spec.map(|s| serde_json::to_value(s).expect("serializes"));
        let status = status.map(|s| serde_json::to_value(s).expect("serializes"));
        let original = object(v2::API_VERSION, meta, spec, status);
        let down = convert(&original, Version::V1Alpha1)?;
        prop_assert_eq!(&down["apiVersion"], v1::API_VERSION);
        prop_assert_eq!(without_annotations(&down["metadata"]), without_annotations(&original["metadata"]));
        let back = convert(&down, Version::V1Alpha2)?;
        prop_assert_eq!(back, original);
    }

    #[test]
    fn legacy_forms_normalize_as_spec_says(
        prompt in "[a-z]{1,8}",
        input_url in url(),
        input_branch in of(s()),
        output in of(git_ref()),
        defaulted in any::<bool>(),
    ) {
        let mut repo = json!({"input": serde_json::to_value(GitRef { url: Some(input_url.clone()), branch: input_branch.clone() })
            .expect("serializes")});
        if let Some(o) = output {
            repo["output"] = serde_json::to_value(o).expect("serializes");
        }
        // What the served schema's defaults add to a legacy item before
        // anything of ours sees it.
        if defaulted {
            repo["branch"] = json!("main");
            repo["autoPush"] = json!(false);
        }
        let legacy = json!({"apiVersion": v1::API_VERSION, "kind": "AgenticSession", "metadata": {"name": "x"},
            "spec": {"prompt": prompt, "mainRepoIndex": 0, "repos": [repo]}});
        let hub = convert(&legacy, Version::V1Alpha2)?;
        let spec = &hub["spec"];
        prop_assert_eq!(&spec["initialPrompt"], &json!(prompt));
        prop_assert!(spec.get("prompt").is_none());
        prop_assert_eq!(&spec["repos"][0]["url"], &json!(input_url));
        let want_branch = match (&input_branch, defaulted) {
            (Some(b), _) => Some(json!(b)),
            (None, true) => Some(json!("main")),
            (None, false) => None,
        };
        prop_assert_eq!(spec["repos"][0].get("branch"), want_branch.as_ref());
        // The default is not a value to keep beside input's: no stash for it.
        prop_assert!(hub["metadata"].get("annotations").is_none(), "{}", hub);
        prop_assert_eq!(spec["repos"][0].get("output"), legacy["spec"]["repos"][0].get("output"));
        prop_assert!(spec["repos"][0].get("input").is_none());
        prop_assert_eq!(
            spec["mainRepo"].as_str(),
            Some(agentic_webhook::api::common::repo_name(&input_url))
        );
    }

    #[test]
    fn conversion_never_panics_on_arbitrary_json(v in json_any(), to_v2 in any::<bool>(), label in 0u8..3) {
        let mut v = v;
        if let Some(o) = v.as_object_mut() {
            let api = [v1::API_VERSION, v2::API_VERSION, "v1"][label as usize];
            o.insert("apiVersion".into(), json!(api));
        }
        let to = if to_v2 { Version::V1Alpha2 } else { Version::V1Alpha1 };
        let _ = convert_object(&v.to_string(), to);
    }

    #[test]
    fn conversion_never_panics_on_arbitrary_specs(spec in json_any(), status in json_any(), to_v2 in any::<bool>()) {
        for api in [v1::API_VERSION, v2::API_VERSION] {
            let o = json!({"apiVersion": api, "kind": "AgenticSession",
                "metadata": {"annotations": {STASH: spec.to_string()}}, "spec": spec, "status": status});
            let to = if to_v2 { Version::V1Alpha2 } else { Version::V1Alpha1 };
            let _ = convert_object(&o.to_string(), to);
        }
    }
}

#[test]
fn the_stash_is_written_only_when_needed() {
    let plain = json!({"apiVersion": v1::API_VERSION, "kind": "AgenticSession", "metadata": {"name": "a"},
        "spec": {"initialPrompt": "p", "mainRepoIndex": 0, "repos": [{"url": "https://h/o/api"}]}});
    let hub = convert_object(&plain.to_string(), Version::V1Alpha2).expect("converts");
    let hub: Value = serde_json::from_slice(&hub).expect("JSON");
    assert!(hub["metadata"].get("annotations").is_none(), "{hub}");
    assert_eq!(hub["spec"]["mainRepo"], "api");
}
