//! `manifests/crd.yaml` is a valid structural CRD and agrees with the Rust
//! types field for field, in both versions.

use std::collections::BTreeMap;

use agentic_webhook::api::common::{ActiveWorkflow, GitRef, LlmSettings, McpServers, UserContext};
use agentic_webhook::api::status::{
    Condition, ConditionStatus, Phase, ReconciledRepo, ReconciledWorkflow, RepoState,
    StoppedReason, WorkflowState,
};
use agentic_webhook::api::{Meta, Session, v1alpha1 as v1, v1alpha2 as v2};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Map, Value, json};

fn crd_value() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/crd.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("crd.yaml: {e}"))
}

fn version_schema(crd: &Value, version: &str) -> Value {
    crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == version))
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .unwrap_or_else(|| panic!("no version {version}"))
}

#[test]
fn the_crd_is_a_valid_custom_resource_definition() {
    let crd: CustomResourceDefinition =
        serde_json::from_value(crd_value()).unwrap_or_else(|e| panic!("not a CRD: {e}"));
    let spec = &crd.spec;
    assert_eq!(spec.group, "vteam.ambient-code");
    assert_eq!(spec.scope, "Namespaced");
    assert_eq!(spec.names.kind, "AgenticSession");
    assert_eq!(spec.names.plural, "agenticsessions");
    assert_eq!(
        spec.names.short_names.as_deref(),
        Some(["as".to_owned()].as_slice())
    );
    let by_name: BTreeMap<&str, _> = spec.versions.iter().map(|v| (v.name.as_str(), v)).collect();
    let (a1, a2) = (by_name["v1alpha1"], by_name["v1alpha2"]);
    assert!(a1.served && !a1.storage && a1.deprecated == Some(true));
    // `review` prints it as the apiserver sends it.
    assert_eq!(
        a1.deprecation_warning.as_deref(),
        Some(v1::DEPRECATION_WARNING)
    );
    assert!(a2.served && a2.storage && a2.deprecated.is_none());
    for v in [a1, a2] {
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{} status subresource",
            v.name
        );
        let cols: Vec<(&str, &str)> = v
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            cols,
            [
                ("Phase", ".status.phase"),
                ("Age", ".metadata.creationTimestamp")
            ]
        );
    }
    let conv = spec
        .conversion
        .as_ref()
        .unwrap_or_else(|| panic!("no conversion"));
    assert_eq!(conv.strategy, "Webhook");
    let wh = conv
        .webhook
        .as_ref()
        .unwrap_or_else(|| panic!("no webhook"));
    assert_eq!(wh.conversion_review_versions, ["v1"]);
    let svc = wh
        .client_config
        .as_ref()
        .and_then(|c| c.service.as_ref())
        .unwrap_or_else(|| panic!("no service"));
    assert_eq!(
        (
            svc.name.as_str(),
            svc.namespace.as_str(),
            svc.path.as_deref()
        ),
        ("agentic-webhook", "agentic-system", Some("/convert"))
    );
}

/// The structural-schema rules the apiserver enforces, plus ours
/// (a description on every property).
fn check_structural(node: &Value, path: &str, errors: &mut Vec<String>) {
    let preserve = node["x-kubernetes-preserve-unknown-fields"] == true;
    let ty = node["type"].as_str();
    if ty.is_none() && !preserve && node["x-kubernetes-int-or-string"] != true {
        errors.push(format!("{path}: no type"));
    }
    for forbidden in [
        "$ref",
        "definitions",
        "dependencies",
        "patternProperties",
        "oneOf",
        "anyOf",
        "allOf",
        "not",
    ] {
        if node.get(forbidden).is_some() {
            errors.push(format!("{path}: {forbidden} is not allowed here"));
        }
    }
    if let Some(props) = node["properties"].as_object() {
        if ty != Some("object") {
            errors.push(format!("{path}: properties on a non-object"));
        }
        if node.get("additionalProperties").is_some() {
            errors.push(format!(
                "{path}: properties and additionalProperties together"
            ));
        }
        for (k, v) in props {
            let p = format!("{path}.{k}");
            if v["description"].as_str().is_none_or(str::is_empty) && k != "metadata" {
                errors.push(format!("{p}: no description"));
            }
            check_structural(v, &p, errors);
        }
    }
    if let Some(ap) = node.get("additionalProperties") {
        check_structural(ap, &format!("{path}[*]"), errors);
    }
    match (ty, node.get("items")) {
        (Some("array"), Some(items)) => check_structural(items, &format!("{path}[]"), errors),
        (Some("array"), None) => errors.push(format!("{path}: array without items")),
        (_, Some(_)) => errors.push(format!("{path}: items on a non-array")),
        _ => {}
    }
}

#[test]
fn both_schemas_are_structural_and_described() {
    let crd = crd_value();
    for version in ["v1alpha1", "v1alpha2"] {
        let mut errors = Vec::new();
        check_structural(&version_schema(&crd, version), version, &mut errors);
        assert!(errors.is_empty(), "{errors:#?}");
    }
}

fn git_ref() -> GitRef {
    GitRef {
        url: Some("https://h/o/r".into()),
        branch: Some("main".into()),
    }
}

fn common() -> (
    UserContext,
    LlmSettings,
    McpServers,
    ActiveWorkflow,
    BTreeMap<String, String>,
) {
    let mut custom = Map::new();
    custom.insert(
        "srv".into(),
        json!({"command": "x", "anything": {"goes": [1]}}),
    );
    (
        UserContext {
            user_id: Some("u".into()),
            display_name: Some("U".into()),
            groups: Some(vec!["g".into()]),
        },
        LlmSettings {
            model: Some("m".into()),
            temperature: Some(serde_json::Number::from_f64(0.5).unwrap_or_else(|| 0.into())),
            max_tokens: Some(10),
        },
        McpServers {
            custom: Some(custom),
            disabled: Some(vec!["d".into()]),
        },
        ActiveWorkflow {
            git_url: Some("https://h/o/wf".into()),
            branch: Some("main".into()),
            path: Some("p".into()),
        },
        BTreeMap::from([("K".to_owned(), "v".to_owned())]),
    )
}

fn condition() -> Condition {
    Condition {
        type_: "Ready".into(),
        status: ConditionStatus::True,
        reason: Some("Ok".into()),
        message: Some("m".into()),
        last_transition_time: Some("2026-11-23T06:00:00Z".into()),
        observed_generation: Some(1),
    }
}

/// Every field set, by exhaustive struct literals: a field added to a type
/// fails to compile here until the test (and so the schema) covers it.
fn maximal_v2() -> Value {
    let (user_context, llm, mcp, wf, env) = common();
    let obj = Session {
        api_version: Some(v2::API_VERSION.into()),
        kind: Some("AgenticSession".into()),
        metadata: Meta::default(),
        spec: Some(v2::SessionSpec {
            initial_prompt: Some("p".into()),
            repos: Some(vec![v2::Repo {
                url: "https://h/o/r".into(),
                branch: Some("main".into()),
                auto_push: Some(true),
                output: Some(git_ref()),
            }]),
            main_repo: Some("r".into()),
            interactive: Some(true),
            display_name: Some("d".into()),
            user_context: Some(user_context),
            llm_settings: Some(llm),
            timeout_seconds: Some(1),
            inactivity_timeout_seconds: Some(1),
            stop_on_run_finished: Some(true),
            auto_push_on_complete: Some(true),
            environment_variables: Some(env),
            mcp_servers: Some(mcp),
            active_workflow: Some(wf),
        }),
        status: Some(v2::SessionStatus {
            phase: Some(Phase::Running),
            observed_generation: Some(1),
            start_time: Some("2026-11-23T06:00:00Z".into()),
            completion_time: Some("2026-11-23T06:00:00Z".into()),
            reconciled_repos: Some(vec![ReconciledRepo {
                name: Some("r".into()),
                url: Some("https://h/o/r".into()),
                branch: Some("main".into()),
                branches: Some(vec!["main".into(), "dev".into()]),
                current_active_branch: Some("dev".into()),
                default_branch: Some("main".into()),
                status: Some(RepoState::Ready),
                cloned_at: Some("2026-11-23T06:00:00Z".into()),
            }]),
            reconciled_workflow: Some(ReconciledWorkflow {
                git_url: Some("https://h/o/wf".into()),
                branch: Some("main".into()),
                path: Some("p".into()),
                status: Some(WorkflowState::Active),
                applied_at: Some("2026-11-23T06:00:00Z".into()),
            }),
            last_activity_time: Some("2026-11-23T06:00:00Z".into()),
            stopped_reason: Some(StoppedReason::User),
            sdk_session_id: Some("s".into()),
            sdk_restart_count: Some(0),
            attempt: Some(1),
            restarts: Some(0),
            conditions: Some(vec![condition()]),
        }),
    };
    serde_json::to_value(obj).expect("serializes")
}

fn maximal_v1() -> Value {
    let (user_context, llm, mcp, wf, env) = common();
    let mut usage = Map::new();
    usage.insert("input_tokens".into(), json!(5));
    let obj = Session {
        api_version: Some(v1::API_VERSION.into()),
        kind: Some("AgenticSession".into()),
        metadata: Meta::default(),
        spec: Some(v1::SessionSpec {
            prompt: Some("p".into()),
            initial_prompt: Some("p".into()),
            repos: Some(vec![v1::Repo {
                url: Some("https://h/o/r".into()),
                branch: Some("main".into()),
                auto_push: Some(true),
                input: Some(git_ref()),
                output: Some(git_ref()),
            }]),
            main_repo_index: Some(0),
            interactive: Some(true),
            display_name: Some("d".into()),
            user_context: Some(user_context),
            llm_settings: Some(llm),
            timeout: Some(1),
            inactivity_timeout: Some(1),
            stop_on_run_finished: Some(true),
            auto_push_on_complete: Some(true),
            environment_variables: Some(env),
            mcp_servers: Some(mcp),
            active_workflow: Some(wf),
            bot_account: Some(v1::BotAccount {
                name: Some("b".into()),
            }),
            resource_overrides: Some(v1::ResourceOverrides {
                cpu: Some("1".into()),
                memory: Some("1Gi".into()),
                storage_class: Some("s".into()),
                priority_class: Some("p".into()),
            }),
        }),
        status: Some(v1::SessionStatus {
            phase: Some(Phase::Error),
            observed_generation: Some(1),
            start_time: Some("2026-11-23T06:00:00Z".into()),
            completion_time: Some("2026-11-23T06:00:00Z".into()),
            reconciled_repos: Some(vec![ReconciledRepo {
                name: Some("r".into()),
                url: Some("u".into()),
                branch: Some("b".into()),
                branches: Some(vec!["b".into()]),
                current_active_branch: Some("b".into()),
                default_branch: Some("main".into()),
                status: Some(RepoState::Cloning),
                cloned_at: Some("2026-11-23T06:00:00Z".into()),
            }]),
            reconciled_workflow: Some(ReconciledWorkflow {
                git_url: Some("u".into()),
                branch: Some("b".into()),
                path: Some("p".into()),
                status: Some(WorkflowState::Failed),
                applied_at: Some("2026-11-23T06:00:00Z".into()),
            }),
            last_activity_time: Some("2026-11-23T06:00:00Z".into()),
            stopped_reason: Some(StoppedReason::Inactivity),
            sdk_session_id: Some("s".into()),
            sdk_restart_count: Some(0),
            attempt: Some(1),
            restarts: Some(0),
            conditions: Some(vec![condition()]),
            message: Some("m".into()),
            is_error: Some(true),
            job_name: Some("j".into()),
            state_dir: Some("/s".into()),
            subtype: Some("t".into()),
            num_turns: Some(3),
            session_id: Some("s".into()),
            total_cost_usd: Some(serde_json::Number::from_f64(0.25).unwrap_or_else(|| 0.into())),
            usage: Some(usage),
            result: Some("r".into()),
            has_workspace_changes: Some(true),
            repos: Some(vec![Map::from_iter([("name".to_owned(), json!("r"))])]),
        }),
    };
    serde_json::to_value(obj).expect("serializes")
}

/// Every field the types write is declared, with a compatible type.
fn value_is_declared(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let ty = schema["type"].as_str();
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    match value {
        Value::Object(map) => {
            if ty != Some("object") {
                errors.push(format!("{path}: object, schema says {ty:?}"));
                return;
            }
            if path.ends_with(".metadata") {
                return;
            }
            for (k, v) in map {
                let p = format!("{path}.{k}");
                if let Some(s) = schema["properties"].get(k) {
                    value_is_declared(s, v, &p, errors);
                } else if let Some(s) = schema.get("additionalProperties") {
                    value_is_declared(s, v, &p, errors);
                } else if !preserve {
                    errors.push(format!("{p}: written by the types, not in the schema"));
                }
            }
        }
        Value::Array(items) => {
            if ty != Some("array") {
                errors.push(format!("{path}: array, schema says {ty:?}"));
            }
            for (i, item) in items.iter().enumerate() {
                value_is_declared(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::String(s) => {
            if ty != Some("string") {
                errors.push(format!("{path}: string, schema says {ty:?}"));
            }
            if let Some(allowed) = schema["enum"].as_array()
                && !allowed.iter().any(|a| a == s)
            {
                errors.push(format!("{path}: {s:?} not in enum"));
            }
        }
        Value::Number(n) => {
            let ok = match ty {
                Some("integer") => n.is_i64() || n.is_u64(),
                Some("number") => true,
                _ => false,
            };
            if !ok {
                errors.push(format!("{path}: number {n}, schema says {ty:?}"));
            }
        }
        Value::Bool(_) => {
            if ty != Some("boolean") {
                errors.push(format!("{path}: boolean, schema says {ty:?}"));
            }
        }
        Value::Null => errors.push(format!("{path}: null")),
    }
}

/// Every field the schema declares is written by the types.
fn schema_is_covered(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(props) = schema["properties"].as_object() {
        for (k, s) in props {
            let p = format!("{path}.{k}");
            match value.get(k) {
                Some(v) => schema_is_covered(s, v, &p, errors),
                None if ["apiVersion", "kind", "metadata"].contains(&k.as_str()) => {}
                None => errors.push(format!("{p}: in the schema, not in the types")),
            }
        }
    }
    if let (Some(items), Some(first)) = (
        schema.get("items"),
        value.as_array().and_then(|a| a.first()),
    ) {
        schema_is_covered(items, first, &format!("{path}[]"), errors);
    }
}

#[test]
fn schema_and_types_agree_field_for_field() {
    let crd = crd_value();
    for (version, instance) in [("v1alpha1", maximal_v1()), ("v1alpha2", maximal_v2())] {
        let schema = version_schema(&crd, version);
        let mut errors = Vec::new();
        value_is_declared(&schema, &instance, version, &mut errors);
        schema_is_covered(&schema, &instance, version, &mut errors);
        assert!(errors.is_empty(), "{version}: {errors:#?}");
    }
}

#[test]
fn legacy_fields_are_declared_in_v1alpha1_and_described_as_deprecated() {
    let crd = crd_value();
    let spec = &version_schema(&crd, "v1alpha1")["properties"]["spec"]["properties"];
    for field in [
        "prompt",
        "mainRepoIndex",
        "timeout",
        "inactivityTimeout",
        "botAccount",
        "resourceOverrides",
    ] {
        let d = spec[field]["description"].as_str().unwrap_or("");
        assert!(d.contains("Deprecated"), "{field}: {d}");
    }
    let input = &spec["repos"]["items"]["properties"]["input"];
    assert!(
        input["description"]
            .as_str()
            .unwrap_or("")
            .contains("Deprecated")
    );
    let v2 = &version_schema(&crd, "v1alpha2")["properties"]["spec"]["properties"];
    for field in [
        "prompt",
        "mainRepoIndex",
        "timeout",
        "botAccount",
        "resourceOverrides",
    ] {
        assert!(v2.get(field).is_none(), "v1alpha2 declares {field}");
    }
}

/// The ambient-code platform's CRD (../shared/platform/, beside the repo):
/// `None` outside CI when it is not there.
fn platform_crd(file: &str) -> Option<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/platform")
        .join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("CI=true: {}: {e}", path.display())
        }
        Err(e) => {
            eprintln!("SKIPPED platform CRD comparison: {}: {e}", path.display());
            None
        }
    }
}

/// v1alpha2 names of v1alpha1 fields that were renamed.
fn v1alpha2_name(path: &str, key: &str) -> String {
    match (path, key) {
        ("spec", "timeout") => "timeoutSeconds".into(),
        ("spec", "inactivityTimeout") => "inactivityTimeoutSeconds".into(),
        _ => key.into(),
    }
}

/// Every property of `platform` exists in `ours` with the same type, default,
/// preserve-unknown marker and format (where the platform sets one), and every value its enum allows is
/// allowed by ours. `rename` maps a property to its name in `ours`.
fn superset_of(
    platform: &Value,
    ours: &Value,
    path: &str,
    rename: &dyn Fn(&str, &str) -> String,
    errors: &mut Vec<String>,
) {
    for key in [
        "type",
        "format",
        "default",
        "x-kubernetes-preserve-unknown-fields",
    ] {
        // A format ours adds (int64) narrows nothing the platform stores.
        if key == "format" && platform.get(key).is_none() {
            continue;
        }
        if platform.get(key) != ours.get(key) {
            errors.push(format!(
                "{path}: {key} is {:?} in the platform's CRD, {:?} in ours",
                platform.get(key),
                ours.get(key)
            ));
        }
    }
    if let (Some(theirs), Some(mine)) = (platform["enum"].as_array(), ours["enum"].as_array()) {
        for v in theirs.iter().filter(|v| !mine.contains(v)) {
            errors.push(format!("{path}: enum value {v} is refused by ours"));
        }
    }
    if let Some(props) = platform["properties"].as_object() {
        for (k, theirs) in props {
            let name = rename(path, k);
            let p = format!("{path}.{name}");
            match ours["properties"].get(&name) {
                Some(mine) => superset_of(theirs, mine, &p, rename, errors),
                None => errors.push(format!("{p}: missing (the apiserver would prune it)")),
            }
        }
    }
    for sub in ["items", "additionalProperties"] {
        if let Some(theirs) = platform.get(sub) {
            match ours.get(sub) {
                Some(mine) => superset_of(theirs, mine, &format!("{path}.{sub}"), rename, errors),
                None => errors.push(format!("{path}.{sub}: missing")),
            }
        }
    }
}

#[test]
fn every_property_and_default_of_the_platform_crd_is_in_both_versions() {
    let Some(platform) = platform_crd("agenticsessions-crd.yaml") else {
        return;
    };
    let theirs = version_schema(&platform, "v1alpha1");
    let ours = crd_value();
    let same = |_: &str, k: &str| k.to_owned();
    for (version, rename) in [
        ("v1alpha1", &same as &dyn Fn(&str, &str) -> String),
        ("v1alpha2", &|p: &str, k: &str| {
            v1alpha2_name(p.trim_start_matches("v1alpha2."), k)
        }),
    ] {
        let mut errors = Vec::new();
        for part in ["spec", "status"] {
            superset_of(
                &theirs["properties"][part],
                &version_schema(&ours, version)["properties"][part],
                &format!("{version}.{part}"),
                rename,
                &mut errors,
            );
        }
        assert!(errors.is_empty(), "{version}: {errors:#?}");
    }
}
