//! The shipped runner contract end to end, on a real kube-apiserver v1.35
//! with the product installed: a session created the way the ambient-code
//! platform's backend creates it (v1alpha1, by the user) is run by this
//! reconciler with the shipped platform template and contract, in a
//! namespace that enforces the `restricted` Pod Security Standard. Its
//! runner pod carries what `render` prints for the stored session (which
//! tests/runner_contract.rs holds against the platform operator's code),
//! its service account's token works as that account, and the stand-in for
//! the ambient-code runner's HTTP API (tests/common/standin.rs) ends every
//! attempt holding the session's workflow and repos, having refused nothing.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::BIN;
use common::envtest::{Who, eventually, say};
use common::installed::{installed, reconciler_at, sessions_in};
use common::lifecycle::{condition, kubelet, running, terminated, wait_session};
use common::standin::{Runner, StandIn};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ALICE: &str = "alice@acme.example";
const NAME: &str = "session-4f1d2c";
const WEB: &str = "https://github.com/acme/web.git";
const API: &str = "https://github.com/acme/api.git";
const DOCS: &str = "https://github.com/acme/docs";
const WORKFLOWS: &str = "https://github.com/ambient-code/workflows.git";

fn alice() -> Who {
    Who::user(ALICE, &["system:authenticated", "acme-developers"])
}

/// The session as the backend's CreateSession stores it (user token).
fn backend_session(ns: &str) -> Value {
    json!({"apiVersion": "vteam.ambient-code/v1alpha1", "kind": "AgenticSession",
        "metadata": {"name": NAME, "namespace": ns},
        "spec": {
            "displayName": "Fix the login redirect loop",
            "llmSettings": {"model": "claude-sonnet-4-6", "temperature": 0.7, "maxTokens": 4000},
            "timeout": 300,
            "initialPrompt": "The login page redirects forever after SSO; find out why and fix it.",
            "environmentVariables": {"RUNNER_TYPE": "claude-agent-sdk", "RUNNER_STATE_DIR": ".claude"},
            "repos": [{"url": WEB, "autoPush": false}, {"url": API, "branch": "develop"}],
            "mcpServers": {"custom": {"docs": {"type": "http", "url": "https://mcp.example.com/docs"}}},
            "activeWorkflow": {"gitUrl": WORKFLOWS, "branch": "main", "path": "workflows/bugfix"},
            "userContext": {"userId": ALICE, "displayName": "Alice Example", "groups": []}},
        "status": {"phase": "Pending"}})
}

/// A fresh namespace that enforces `restricted`, where alice may edit
/// sessions (the platform's project edit role).
async fn namespace(env: &common::installed::Installed, client: &kube::Client) -> String {
    let ns = env.cp.namespace(client, "contract").await;
    let api: Api<Namespace> = Api::all(client.clone());
    let labels = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    api.patch(&ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap_or_else(|e| panic!("labelling {ns}: {e}"));
    let rbac = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "project-edit", "namespace": ns},
         "rules": [{"apiGroups": ["vteam.ambient-code"], "resources": ["agenticsessions"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "project-edit", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "project-edit"},
         "subjects": [{"kind": "User", "name": ALICE}]}]});
    env.cp
        .kubectl_ok(&["apply", "-f", "-"], Some(rbac.to_string().as_bytes()));
    ns
}

async fn get_json<K>(api: &Api<K>, name: &str) -> Value
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let o = eventually(name, Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            match api.get_opt(name).await {
                Ok(Some(o)) => Ok(o),
                Ok(None) => Err("not there".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    serde_json::to_value(o).expect("serializes")
}

/// The session as stored (v1alpha1, as the platform reads it).
async fn stored_session(client: &kube::Client, ns: &str) -> Value {
    let o = sessions_in(client, ns, "v1alpha1")
        .get(NAME)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::to_value(o).expect("serializes")
}

/// A client presenting `token`, as the runner presents its BOT_TOKEN.
async fn bearer_client(env: &common::installed::Installed, token: &str) -> kube::Client {
    let admin = env.cp.kubeconfig(&Who::admin());
    let text = std::fs::read_to_string(&admin).unwrap_or_else(|e| panic!("{e}"));
    let mut kc: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    for u in kc["users"].as_array_mut().into_iter().flatten() {
        u["user"] = json!({"token": token});
    }
    let kc: kube::config::Kubeconfig = serde_json::from_value(kc).unwrap_or_else(|e| panic!("{e}"));
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    kube::Client::try_from(config).unwrap_or_else(|e| panic!("{e}"))
}

/// What `render` prints for a stored session: the objects by kind.
fn render(stored: &Value, attempt: i64) -> BTreeMap<String, Value> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("session.json");
    std::fs::write(&file, stored.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(BIN)
        .args(["render", "-o", "json", "--attempt", &attempt.to_string()])
        .arg(&file)
        .arg("--runner-pod-template")
        .arg(format!("{ROOT}/manifests/base/runner-template.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| (i["kind"].as_str().unwrap_or_default().to_owned(), i.clone()))
        .collect()
}

/// The parts of a pod the runner contract decides, per container (less
/// what the apiserver defaults: the probe's scheme, a volume's mode).
fn contract_view(pod: &Value) -> Value {
    let mut volumes = pod["spec"]["volumes"].clone();
    for v in volumes.as_array_mut().into_iter().flatten() {
        if let Some(p) = v.get_mut("projected").and_then(Value::as_object_mut) {
            p.remove("defaultMode");
        }
    }
    let containers = |key: &str| -> Vec<Value> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                json!({"name": c["name"], "env": c["env"], "ports": c["ports"],
                       "volumeMounts": c["volumeMounts"],
                       "readiness": [c["readinessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["port"]]})
            })
            .collect()
    };
    json!({
        "labels": pod["metadata"]["labels"],
        "serviceAccountName": pod["spec"]["serviceAccountName"],
        "automountServiceAccountToken": pod["spec"]["automountServiceAccountToken"],
        "volumes": volumes,
        "initContainers": containers("initContainers"),
        "containers": containers("containers"),
    })
}

/// The runner's repos as (name, url, branch).
fn repos(r: &Runner) -> Vec<(String, String, String)> {
    r.repos
        .iter()
        .map(|(n, (u, b))| (n.clone(), u.clone(), b.clone()))
        .collect()
}

async fn runner_of(standin: &StandIn, ns: &str, attempt: i64) -> Runner {
    eventually(
        &format!("runner {attempt} contacted"),
        Duration::from_secs(30),
        || {
            let r = standin.runner(ns, NAME, attempt);
            async move { r.ok_or_else(|| "not contacted yet".to_owned()) }
        },
    )
    .await
}

#[tokio::test]
async fn a_backend_session_runs_the_ambient_runner_on_every_attempt() {
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = namespace(env, &client).await;
    let (standin, url) = StandIn::start(client.clone()).await;
    let template = format!("{ROOT}/manifests/base/runner-template.yaml");
    let _reconciler = reconciler_at(
        env,
        "127.0.0.1:0",
        &[
            "--no-leader-election",
            "--namespace",
            &ns,
            "--runner-pod-template",
            &template,
            "--require-restricted",
            "--runner-url-template",
            &url,
            "--max-attempts",
            "3",
        ],
    );
    let as_alice = env.cp.client_as(&alice()).await;
    let v1: Api<DynamicObject> = sessions_in(&as_alice, &ns, "v1alpha1");
    let body: DynamicObject =
        serde_json::from_value(backend_session(&ns)).unwrap_or_else(|e| panic!("{e}"));
    v1.create(&PostParams::default(), &body)
        .await
        .unwrap_or_else(|e| panic!("alice creating {NAME}: {e}"));

    // Attempt 1: its pod (admitted under `restricted`) is what `render`
    // prints for the stored session.
    wait_session(&client, &ns, NAME, "Creating", |s| s["phase"] == "Creating").await;
    let stored = stored_session(&client, &ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod1 = get_json(&pods, &format!("{NAME}-runner-1")).await;
    let rendered = render(&stored, 1);
    assert_eq!(contract_view(&pod1), contract_view(&rendered["Pod"]));
    say(&format!(
        "runner pod 1: {} containers, {} runner variables, as render prints",
        pod1["spec"]["containers"].as_array().map_or(0, Vec::len),
        pod1["spec"]["containers"][0]["env"]
            .as_array()
            .map_or(0, Vec::len)
    ));

    // Its identity: the session's account, bound to the runner role, and a
    // token in the Secret that works as that account (the runner's BOT_TOKEN).
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let sa = get_json(&accounts, &format!("ambient-session-{NAME}")).await;
    assert_eq!(sa["metadata"]["ownerReferences"][0]["name"], NAME);
    assert_eq!(
        sa["metadata"]["annotations"]["ambient-code.io/created-by-user-id"],
        ALICE
    );
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    let rb = get_json(&bindings, &format!("ambient-session-{NAME}-rb")).await;
    assert_eq!(rb["roleRef"], rendered["RoleBinding"]["roleRef"]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = secrets
        .get(&format!("ambient-runner-token-{NAME}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let data = secret.data.unwrap_or_default();
    let bot = data
        .get("k8s-token")
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default();
    let as_runner = bearer_client(env, &bot).await;
    let mine = sessions_in(&as_runner, &ns, "v1alpha1").get(NAME).await;
    assert!(
        mine.is_ok(),
        "the runner's token reads its session: {mine:?}"
    );
    let pods_as_runner: Api<Pod> = Api::namespaced(as_runner.clone(), &ns);
    let denied = pods_as_runner.list(&Default::default()).await;
    assert!(denied.is_err(), "the runner's token lists no pods");

    // Running: told the workflow, which it already had from its pod; repos
    // as hydrated from REPOS_JSON.
    kubelet(
        &client,
        &ns,
        &format!("{NAME}-runner-1"),
        "Running",
        running(),
        true,
    )
    .await;
    wait_session(&client, &ns, NAME, "Running, workflow applied", |s| {
        s["phase"] == "Running" && condition(s, "WorkflowReconciled")["status"] == "True"
    })
    .await;
    let r1 = runner_of(&standin, &ns, 1).await;
    assert_eq!(
        r1.workflow(),
        (WORKFLOWS.into(), "main".into(), "workflows/bugfix".into())
    );
    assert_eq!(
        repos(&r1),
        vec![
            ("api".into(), API.into(), "develop".into()),
            ("web".into(), WEB.into(), "main".into()),
        ]
    );

    // The user edits the running session as the backend's handlers do:
    // another workflow, a repo added, one removed, a branch changed.
    let edit = json!({"spec": {
        "activeWorkflow": {"gitUrl": WORKFLOWS, "branch": "v2", "path": "workflows/triage"},
        "repos": [{"url": API, "branch": "release"}, {"url": DOCS, "branch": "main"}]}});
    v1.patch(NAME, &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap_or_else(|e| panic!("alice editing {NAME}: {e}"));
    wait_session(&client, &ns, NAME, "edits applied", |s| {
        condition(s, "WorkflowReconciled")["status"] == "True"
            && condition(s, "ReposReconciled")["status"] == "True"
            && s["reconciledWorkflow"]["branch"] == "v2"
            && s["reconciledRepos"]
                .as_array()
                .is_some_and(|r| r.len() == 2 && r[1]["url"] == DOCS)
    })
    .await;
    let r1 = runner_of(&standin, &ns, 1).await;
    let want_repos = vec![
        ("api".to_owned(), API.to_owned(), "release".to_owned()),
        ("docs".to_owned(), DOCS.to_owned(), "main".to_owned()),
    ];
    assert_eq!(
        r1.workflow(),
        (WORKFLOWS.into(), "v2".into(), "workflows/triage".into())
    );
    assert_eq!(repos(&r1), want_repos);
    let calls: Vec<(String, Value)> = standin
        .of(NAME)
        .iter()
        .filter(|n| n.attempt == "1")
        .map(|n| (n.path.clone(), n.body.clone()))
        .collect();
    assert!(
        calls.contains(&(
            "/repos/add".into(),
            json!({"url": API, "branch": "release", "name": "api"})
        )) && calls.contains(&(
            "/repos/add".into(),
            json!({"url": DOCS, "branch": "main", "name": "docs"})
        )) && calls.contains(&("/repos/remove".into(), json!({"name": "web"})))
            && calls.contains(&(
                "/workflow".into(),
                json!({"gitUrl": WORKFLOWS, "branch": "v2", "path": "workflows/triage"})
            )),
        "{calls:#?}"
    );

    // The runner is OOM-killed: attempt 2 starts from the session as it is
    // now, and is told its workflow again once it runs.
    kubelet(
        &client,
        &ns,
        &format!("{NAME}-runner-1"),
        "Running",
        terminated(137, "OOMKilled"),
        false,
    )
    .await;
    let pod2 = get_json(&pods, &format!("{NAME}-runner-2")).await;
    let stored = stored_session(&client, &ns).await;
    assert_eq!(
        contract_view(&pod2),
        contract_view(&render(&stored, 2)["Pod"])
    );
    // Attempt 1's runner ran, so attempt 2's resumes instead of re-sending
    // the prompt (the runner skips INITIAL_PROMPT when IS_RESUME is true).
    let var = |pod: &Value, n: &str| {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == n)
            .map(|e| e["value"].clone())
    };
    assert_eq!(var(&pod1, "IS_RESUME"), None);
    assert_eq!(var(&pod2, "IS_RESUME"), Some(json!("true")));
    kubelet(
        &client,
        &ns,
        &format!("{NAME}-runner-2"),
        "Running",
        running(),
        true,
    )
    .await;
    wait_session(
        &client,
        &ns,
        NAME,
        "attempt 2 running, workflow applied",
        |s| {
            s["attempt"] == 2
                && s["phase"] == "Running"
                && condition(s, "WorkflowReconciled")["status"] == "True"
        },
    )
    .await;
    let r2 = runner_of(&standin, &ns, 2).await;
    assert_eq!(
        r2.workflow(),
        (WORKFLOWS.into(), "v2".into(), "workflows/triage".into())
    );
    assert_eq!(repos(&r2), want_repos);
    let to_2: Vec<String> = standin
        .of(NAME)
        .iter()
        .filter(|n| n.attempt == "2")
        .map(|n| n.path.clone())
        .collect();
    assert_eq!(to_2, ["/workflow"], "attempt 2 is told its workflow, once");
    assert_ne!(r1.token, r2.token, "each attempt has its own token");
    assert!(
        standin.of(NAME).iter().all(|n| n.ok),
        "{:#?}",
        standin.of(NAME)
    );
    assert_eq!(standin.rejected(), Vec::<String>::new());
    say(&format!(
        "stand-in runner: {} requests over 2 attempts, none refused",
        standin.of(NAME).len()
    ));
}
