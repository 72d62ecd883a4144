use super::*;
use serde_json::json;

fn session(v: Value) -> AgenticSession {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
}

fn problems(text: &str) -> Vec<String> {
    match load(text) {
        Err(TemplateError::Invalid(ps)) => ps.iter().map(Problem::to_string).collect(),
        other => panic!("expected field errors, got {other:?}"),
    }
}

const MINIMAL: &str = r#"
apiVersion: agentic.vteam.ambient-code/v1
kind: RunnerContract
name: test
sessionVersion: v1alpha2
runner: {container: runner, port: {name: http, number: 8001}, health: /health}
tokenSecret: {name: "tok-{name}", noticeKey: t}
notices:
  header: X-Token
  defaultBranch: main
  workflow: {path: /workflow, body: {u: "{gitUrl}"}}
  repoAdd: {path: /add, body: {u: "{url}"}}
  repoRemove: {path: /remove, body: {n: "{name}"}}
"#;

#[test]
fn the_shipped_contract_loads_and_is_the_ambient_runners() {
    let c = shipped().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.name, "ambient-runner@0b59fe7");
    assert_eq!(c.container, "ambient-code-runner");
    assert_eq!((c.port_name.as_str(), c.port), ("agui", 8001));
    assert_eq!(c.notices.header, "X-Ambient-Session-Token");
    assert_eq!(*AMBIENT, c);
    let reserved = c.reserved();
    for n in [
        "AGENTIC_SESSION_NAME",
        "REPOS_JSON",
        "AGUI_TOKEN",
        "BOT_TOKEN",
        "SESSION_NAME",
    ] {
        assert!(reserved.contains(n), "{n}");
    }
    // Read from the session's own variables, so the session may set it.
    assert!(!reserved.contains("PARENT_SESSION_ID"));
    // The webhook (V10, a layer below) keeps its own copy: the same names.
    let v10: BTreeSet<String> = crate::api::runner_env::RECONCILER
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    assert_eq!(
        v10, reserved,
        "api::runner_env::RECONCILER must list the shipped contract's names"
    );
}

#[test]
fn a_contract_is_read_strictly_with_field_paths() {
    assert!(load(MINIMAL).is_ok(), "{:?}", load(MINIMAL));
    let unknown = MINIMAL.replace("health: /health}", "health: /health, probe: x}");
    assert_eq!(
        problems(&unknown),
        ["runner.probe: unknown field `probe`, expected one of `container`, `port`, `health`"]
    );
    let bad = MINIMAL.replace(
        "notices:",
        r#"env:
- containers: [runner]
  vars:
  - {name: A, from: spec.x, format: "%q"}
  - {name: B, from: nowhere.x}
  - {name: C, secretKey: serviceAccountKey}
  - {name: "1D", value: x, from: spec.y}
  - {name: E, from: "spec[", when: sometimes}
  - {name: A, value: again}
notices:"#,
    );
    assert_eq!(
        problems(&bad),
        [
            r#"env[0].vars[0].format: Unsupported value: "%q": supported values: "%s", "%d", "%.Nf", "json""#,
            r#"env[0].vars[1].from[0]: Invalid value: "nowhere.x": a source is metadata.…, spec.…, status.…, runner.port or attempt"#,
            "env[0].vars[2].secretKey: Forbidden: tokenSecret.serviceAccountKey is not set",
            r#"env[0].vars[3].name: Invalid value: "1D": not an environment variable name"#,
            "env[0].vars[3]: Invalid value: exactly one of from, value, secretKey",
            r#"env[0].vars[4].from[0]: Invalid value: "spec[": not a field path (a.b, a[key with dots])"#,
            r#"env[0].vars[4].when: Unsupported value: "sometimes": supported values: "always", "set""#,
            r#"env[0]: Duplicate value: "A" for container "runner""#,
        ]
    );
    let names = MINIMAL
        .replace("tok-{name}", "Tok_{session}")
        .replace("number: 8001", "number: 0")
        .replace("kind: RunnerContract", "kind: Runner");
    assert_eq!(
        problems(&names),
        [
            r#"kind: Unsupported value: "Runner": supported values: "RunnerContract""#,
            "runner.port.number: Invalid value: 0: must be between 1 and 65535",
            r#"tokenSecret.name: Invalid value: "Tok_{session}": the only placeholder is {name}"#,
        ]
    );
    // In a ConfigMap, paths say where.
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\ndata:\n  runner-contract.yaml: |\n{}",
        names
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        problems(&cm)[0],
        r#"data[runner-contract.yaml].kind: Unsupported value: "Runner": supported values: "RunnerContract""#
    );
}

#[test]
fn variables_render_in_the_operators_formats() {
    let c = AMBIENT.clone();
    let s = session(json!({
        "apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
        "metadata": {"name": "s1", "namespace": "team-a", "uid": "u1",
                     "annotations": {"vteam.ambient-code/parent-session-id": " p0 "}},
        "spec": {"initialPrompt": "go", "llmSettings": {"model": "m", "temperature": 1, "maxTokens": 4000},
                 "timeoutSeconds": 300,
                 "repos": [{"url": "https://h/o/a?x=1&y=<2>", "branch": "dev"}],
                 "userContext": {"userId": "  alice ", "displayName": "Alice"},
                 "environmentVariables": {"PARENT_SESSION_ID": "ignored"}},
        "status": {"startTime": "2026-01-01T00:00:00Z"}
    }));
    let doc = c.doc(&s, 2);
    let env: BTreeMap<String, Rendered> = c
        .env_for("ambient-code-runner", &doc, "s1")
        .into_iter()
        .collect();
    let v = |n: &str| match env.get(n) {
        Some(Rendered::Value(v)) => v.clone(),
        other => panic!("{n}: {other:?}"),
    };
    assert_eq!(v("LLM_TEMPERATURE"), "1.00");
    assert_eq!(v("LLM_MAX_TOKENS"), "4000");
    assert_eq!(v("TIMEOUT"), "300");
    assert_eq!(v("AGUI_PORT"), "8001");
    assert_eq!(v("USER_ID"), "alice");
    assert_eq!(
        v("PARENT_SESSION_ID"),
        "p0",
        "the annotation first, trimmed"
    );
    assert_eq!(v("IS_RESUME"), "true");
    assert_eq!(
        v("REPOS_JSON"),
        r#"[{"branch":"dev","url":"https://h/o/a?x=1\u0026y=\u003c2\u003e"}]"#
    );
    assert_eq!(
        env.get("AGUI_TOKEN"),
        Some(&Rendered::Secret {
            name: "ambient-runner-token-s1".into(),
            key: "agui-token".into()
        })
    );
    // Unset and blank values are left out where the operator leaves them out.
    for absent in [
        "CUSTOM_MCP_SERVERS",
        "MAIN_REPO_NAME",
        "ACTIVE_WORKFLOW_GIT_URL",
    ] {
        assert!(!env.contains_key(absent), "{absent}");
    }
    // The trigger's force-execute-prompt: run the prompt, not a resume.
    let mut forced = s.clone();
    forced
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert("ambient-code.io/force-execute-prompt".into(), "true".into());
    let env = c.env_for("ambient-code-runner", &c.doc(&forced, 2), "s1");
    assert!(!env.iter().any(|(n, _)| n == "IS_RESUME"));
}

#[test]
fn go_json_matches_gos_marshal() {
    assert_eq!(
        go_json(&json!({"b": 1.0, "a": ["<&>", 0.5], "c": "\u{2028}"})),
        r#"{"a":["\u003c\u0026\u003e",0.5],"b":1,"c":"\u2028"}"#
    );
    assert_eq!(Format::Fixed(2).write(Some(&json!(0.125))), "0.12");
    assert_eq!(Format::Fixed(2).write(None), "0.00");
    assert_eq!(Format::Integer.write(None), "0");
}

#[test]
fn notice_bodies_fill_their_placeholders() {
    let call = Call {
        path: "/x".into(),
        body: json!({"gitUrl": "{gitUrl}", "keep": "{other}", "n": 1, "in": ["{gitUrl}"]}),
    };
    assert_eq!(
        call.body_with(&[("gitUrl", "https://h/w")]),
        json!({"gitUrl": "https://h/w", "keep": "{other}", "n": 1, "in": ["https://h/w"]})
    );
}
