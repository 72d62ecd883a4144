//! The golden test of the shipped runner contract: for sessions as the
//! ambient-code platform stores them (tests/data/runner-contract), what
//! `agentic-webhook render` prints with the shipped template equals what
//! the platform's operator builds for the same session. The expected values
//! are written by hand from the operator's code at platform commit 0b59fe7,
//! `components/operator/internal/handlers/sessions.go` (lines cited as
//! `sessions.go:N`); where this product deliberately differs, the test says
//! so and why.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn render(extra: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_agentic-webhook"))
        .args(["render", "-o", "json"])
        .arg(format!("{ROOT}/tests/data/runner-contract/sessions.yaml"))
        .arg("--runner-pod-template")
        .arg(format!("{ROOT}/manifests/base/runner-template.yaml"))
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(list["kind"], "List");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn find<'a>(items: &'a [Value], kind: &str, name: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["kind"] == kind && i["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    let spec = &pod["spec"];
    spec["containers"]
        .as_array()
        .into_iter()
        .chain(spec["initContainers"].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// A container's environment: name → value, or `secret:NAME/KEY`.
fn env(c: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_owned();
        let value = match &e["valueFrom"]["secretKeyRef"] {
            Value::Null => e["value"].as_str().unwrap_or_default().to_owned(),
            r => format!(
                "secret:{}/{}",
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default()
            ),
        };
        assert!(out.insert(name.clone(), value).is_none(), "{name} twice");
    }
    out
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What the operator always gives the runner container that does not come
/// from the session: sessions.go:1087-1096 (DEBUG, WORKSPACE_PATH,
/// ARTIFACTS_DIR), :1102 (GOOGLE_MCP_CREDENTIALS_DIR), :1154 (USE_AGUI),
/// :1156 (BACKEND_API_URL, backend namespace ambient-code), :1297-1298
/// (USE_VERTEX and CLAUDE_CODE_USE_VERTEX "0" without Vertex). In this
/// product they are the shipped template's. GOOGLE_OAUTH_CLIENT_ID/SECRET
/// (:1103-1104) are copied from the operator's own environment (empty
/// unless configured): a platform team adds them to the template.
fn runner_constants() -> BTreeMap<String, String> {
    map(&[
        ("DEBUG", "true"),
        ("WORKSPACE_PATH", "/workspace"),
        ("ARTIFACTS_DIR", "artifacts"),
        (
            "GOOGLE_MCP_CREDENTIALS_DIR",
            "/workspace/.google_workspace_mcp/credentials",
        ),
        ("USE_AGUI", "true"),
        (
            "BACKEND_API_URL",
            "http://backend-service.ambient-code.svc.cluster.local:8080/api",
        ),
        ("USE_VERTEX", "0"),
        ("CLAUDE_CODE_USE_VERTEX", "0"),
    ])
}

/// The runner container's session-derived variables every session gets:
/// sessions.go:1088-1091 (names), :1095 (AGUI_PORT), :1098-1101 (AGUI_TOKEN
/// from the token Secret's agui-token), :1150-1155 (INITIAL_PROMPT,
/// LLM_MODEL, LLM_TEMPERATURE `%.2f`, LLM_MAX_TOKENS `%d`, TIMEOUT `%d`).
fn runner_session(ns: &str, name: &str, rest: &[(&str, &str)]) -> BTreeMap<String, String> {
    let secret = format!("secret:ambient-runner-token-{name}/agui-token");
    let mut m = runner_constants();
    m.extend(map(&[
        ("AGENTIC_SESSION_NAME", name),
        ("AGENTIC_SESSION_NAMESPACE", ns),
        ("SESSION_ID", name),
        ("PROJECT_NAME", ns),
        ("AGUI_PORT", "8001"),
        ("AGUI_TOKEN", &secret),
    ]));
    m.extend(map(rest));
    m
}

/// init-hydrate: sessions.go:961-970 (SESSION_NAME, NAMESPACE,
/// BACKEND_API_URL, PROJECT_NAME; the S3 settings come from the template's
/// optional Secret here), :973-989 (REPOS_JSON, ACTIVE_WORKFLOW_*),
/// :994-1000 (BOT_TOKEN from the token Secret's k8s-token), :1004 (the
/// session's variables, never replacing these).
fn hydrate(ns: &str, name: &str, rest: &[(&str, &str)]) -> BTreeMap<String, String> {
    let bot = format!("secret:ambient-runner-token-{name}/k8s-token");
    let mut m = map(&[
        ("SESSION_NAME", name),
        ("NAMESPACE", ns),
        (
            "BACKEND_API_URL",
            "http://backend-service.ambient-code.svc.cluster.local:8080/api",
        ),
        ("PROJECT_NAME", ns),
        ("BOT_TOKEN", &bot),
    ]);
    m.extend(map(rest));
    m
}

/// state-sync: sessions.go:1416-1425 (SESSION_NAME, NAMESPACE,
/// SYNC_INTERVAL 60, MAX_SYNC_SIZE 1 GiB) and :1427-1428 (the session's
/// variables after them).
fn sync(ns: &str, name: &str, rest: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m = map(&[
        ("SESSION_NAME", name),
        ("NAMESPACE", ns),
        ("SYNC_INTERVAL", "60"),
        ("MAX_SYNC_SIZE", "1073741824"),
    ]);
    m.extend(map(rest));
    m
}

#[test]
fn the_runner_pod_environment_is_the_operators_for_each_session() {
    let items = render(&[]);

    // 1. minimal: CRD defaults only.
    let pod = find(&items, "Pod", "minimal-runner-1");
    assert_eq!(
        env(container(pod, "ambient-code-runner")),
        runner_session(
            "team-a",
            "minimal",
            &[
                ("INITIAL_PROMPT", "Say hello"),
                ("LLM_MODEL", "claude-sonnet-4-6"),
                ("LLM_TEMPERATURE", "0.70"),
                ("LLM_MAX_TOKENS", "4000"),
                ("TIMEOUT", "300"),
            ]
        )
    );
    assert_eq!(
        env(container(pod, "init-hydrate")),
        hydrate("team-a", "minimal", &[])
    );
    assert_eq!(
        env(container(pod, "state-sync")),
        sync("team-a", "minimal", &[])
    );

    // 2. full.
    let repos = r#"[{"autoPush":true,"branch":"feature/x","url":"https://github.com/acme/api.git"},{"branch":"main","url":"https://github.com/acme/web"}]"#;
    let workflow = [
        (
            "ACTIVE_WORKFLOW_GIT_URL",
            "https://github.com/acme/workflows.git",
        ),
        ("ACTIVE_WORKFLOW_BRANCH", "v2"),
        ("ACTIVE_WORKFLOW_PATH", "flows/bugfix"),
    ];
    let own = [
        ("RUNNER_TYPE", "claude-agent-sdk"),
        ("PARENT_SESSION_ID", "parent-7"),
        ("LOG_LEVEL", "debug"),
    ];
    let pod = find(&items, "Pod", "full-runner-1");
    let mut want = runner_session(
        "team-b",
        "full",
        &[
            // :1121-1126, Go's json.Marshal: sorted keys, `&` escaped.
            (
                "CUSTOM_MCP_SERVERS",
                r#"{"custom":{"tracker":{"type":"sse","url":"https://mcp.acme.example/sse?team=a\u0026b=1"}}}"#,
            ),
            // :1130-1146, trimmed.
            ("USER_ID", "alice"),
            ("USER_NAME", "Alice Liddell"),
            ("INITIAL_PROMPT", "Fix <the> flaky test & push"),
            ("LLM_MODEL", "claude-opus-4-1"),
            ("LLM_TEMPERATURE", "0.25"),
            ("LLM_MAX_TOKENS", "16000"),
            ("TIMEOUT", "1800"),
            // :490-502 and :1301-1304: the annotation, else the variable.
            ("PARENT_SESSION_ID", "parent-7"),
            // :1306-1317: the session started before.
            ("IS_RESUME", "true"),
            // :1321-1325, the stored repos as Go marshals them.
            ("REPOS_JSON", repos),
            // :1328-1343.
            ("MAIN_REPO_INDEX", "1"),
        ],
    );
    want.extend(map(&workflow)); // :1344-1355
    want.extend(map(&own)); // :1363, the session's own variables
    assert_eq!(env(container(pod, "ambient-code-runner")), want);
    let mut want = hydrate("team-b", "full", &[("REPOS_JSON", repos)]);
    want.extend(map(&workflow));
    want.extend(map(&own));
    assert_eq!(env(container(pod, "init-hydrate")), want);
    assert_eq!(
        env(container(pod, "state-sync")),
        sync("team-b", "full", &own)
    );

    // 3. scheduled: ran before, but force-execute-prompt (:1308-1312): no IS_RESUME.
    let pod = find(&items, "Pod", "scheduled-runner-1");
    let got = env(container(pod, "ambient-code-runner"));
    assert!(!got.contains_key("IS_RESUME"), "{got:?}");
    // Deliberate difference: a whole-number temperature stored as JSON 1 is
    // an int64 to the operator's unstructured.NestedFloat64, which then
    // fails and writes 0.00 (:1123, :1152). This product writes 1.00.
    assert_eq!(got.get("LLM_TEMPERATURE").map(String::as_str), Some("1.00"));
}

#[test]
fn the_runners_port_secrets_and_identity_are_the_operators() {
    let items = render(&[]);
    for (ns, name, user) in [
        ("team-a", "minimal", None),
        ("team-b", "full", Some(" alice ")),
    ] {
        let pod = find(&items, "Pod", &format!("{name}-runner-1"));
        let runner = container(pod, "ambient-code-runner");
        // :1040-1046 and :1049-1053: the AG-UI port and its readiness probe.
        assert_eq!(
            runner["ports"],
            json!([{"name": "agui", "containerPort": 8001, "protocol": "TCP"}])
        );
        assert_eq!(
            runner["readinessProbe"]["httpGet"],
            json!({"path": "/health", "port": 8001})
        );
        // :1599-1618: the Service the backend proxies to.
        let svc = find(&items, "Service", &format!("session-{name}"));
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"name": "agui", "port": 8001, "protocol": "TCP", "targetPort": 8001}])
        );
        // :1567-1573 and the backend's NetworkPolicy selector (:2746-2750).
        assert_eq!(pod["metadata"]["labels"]["agentic-session"], name);
        assert_eq!(pod["metadata"]["labels"]["app"], "ambient-code-runner");
        // :2663-2686: one Secret per session, both keys.
        let secret = find(&items, "Secret", &format!("ambient-runner-token-{name}"));
        let mut keys: Vec<&String> = secret["data"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        keys.sort();
        assert_eq!(keys, ["agui-token", "k8s-token"]);
        // :2546-2569: the session's service account, its user annotated.
        let sa = find(&items, "ServiceAccount", &format!("ambient-session-{name}"));
        assert_eq!(sa["metadata"]["namespace"], ns);
        assert_eq!(
            sa["metadata"]["annotations"]["ambient-code.io/created-by-user-id"],
            user.map_or(Value::Null, |u| json!(u))
        );
        // :2640-2655: bound in the session's namespace. Deliberate
        // difference: to a shipped ClusterRole with the operator's rules
        // (see the next test), not a Role per session, so the reconciler
        // needs `bind` on one ClusterRole instead of every right in it.
        let rb = find(&items, "RoleBinding", &format!("ambient-session-{name}-rb"));
        assert_eq!(
            rb["subjects"],
            json!([{"kind": "ServiceAccount", "name": format!("ambient-session-{name}"), "namespace": ns}])
        );
        assert_eq!(rb["roleRef"]["name"], "ambient-session-runner");
        // The service account's token. Deliberate difference: the operator
        // runs the pod as `default` (:914-922) and mounts the account's
        // token from the Secret (:1521-1545), re-minting it every 45
        // minutes; here the pod runs as the session's account without the
        // default mount and the kubelet refreshes the same file.
        assert_eq!(
            pod["spec"]["serviceAccountName"],
            format!("ambient-session-{name}")
        );
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
        let mount = runner["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == "runner-token")
            .cloned();
        assert_eq!(
            mount,
            Some(
                json!({"name": "runner-token", "mountPath": "/var/run/secrets/ambient", "readOnly": true})
            )
        );
        let volume = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "runner-token")
            .cloned();
        assert_eq!(
            volume.map(|v| v["projected"]["sources"][0]["serviceAccountToken"]["path"].clone()),
            Some(json!("bot-token"))
        );
    }
}

/// The ClusterRole the sessions' accounts are bound to has exactly the
/// rules of the operator's per-session Role (sessions.go:2594-2625).
#[test]
fn the_runner_cluster_role_has_the_operators_rules() {
    let text = std::fs::read_to_string(format!("{ROOT}/manifests/base/rbac.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{e}"));
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "ambient-session-runner")
        .unwrap_or_else(|| panic!("no ClusterRole ambient-session-runner"));
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["vteam.ambient-code"], "resources": ["agenticsessions"],
             "verbs": ["get", "list", "watch", "create", "update", "patch"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews"],
             "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
            {"apiGroups": ["mlflow.kubeflow.org"], "resources": ["experiments"],
             "verbs": ["get", "list", "update"]}
        ])
    );
}

/// The pod the shipped template makes passes the restricted profile, and
/// YAML output is the same objects.
#[test]
fn the_platform_template_is_restricted_and_yaml_says_the_same() {
    let json_items = render(&["--require-restricted"]);
    let out = Command::new(env!("CARGO_BIN_EXE_agentic-webhook"))
        .arg("render")
        .arg(format!("{ROOT}/tests/data/runner-contract/sessions.yaml"))
        .arg("--runner-pod-template")
        .arg(format!("{ROOT}/manifests/base/runner-template.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let yaml: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(yaml, json_items);
    // Per namespace the two policies, per session five objects.
    let kinds: Vec<&str> = json_items
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "NetworkPolicy").count(), 4);
    assert_eq!(kinds.iter().filter(|k| **k == "Pod").count(), 3);
}

/// A contract that does not load stops `render` with the field at fault.
#[test]
fn a_bad_contract_is_refused_with_its_field() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("contract.yaml");
    let text = std::fs::read_to_string(format!("{ROOT}/examples/runner-contracts/minimal.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("from: attempt", "from: spec..x");
    std::fs::write(&bad, text).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_agentic-webhook"))
        .arg("render")
        .arg(format!("{ROOT}/tests/data/runner-contract/sessions.yaml"))
        .arg("--runner-contract")
        .arg(&bad)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"env[0].vars[2].from[0]: Invalid value: "spec..x": not a field path"#),
        "{err}"
    );
}
