//! The reconciler is not a confused deputy: each attack of a tenant who may
//! write sessions, Pods, Services, NetworkPolicies and Secrets in their own
//! namespace, run against a real kube-apiserver v1.35 with the product
//! installed (webhooks, the admission policies of manifests/base/
//! runner-policies.yaml) and the reconciler as its ServiceAccount.
//! docs/security.md maps each attack to its control and to its test here.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use common::Proc;
use common::envtest::{ControlPlane, Principal, Who, eventually};
use common::installed::{GROUP, Installed, installed, reconciler_at, sessions_in};
use common::lifecycle::{condition, kubelet, phase_is, running, terminated, wait_session};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";

fn alice() -> Who {
    Who::user(ALICE, &["system:authenticated", "team-a-devs"])
}

/// What a tenant may do in their namespace: sessions, and the ordinary
/// objects the attacks use.
fn tenant_rbac(cp: &ControlPlane, ns: &str) {
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "tenant", "namespace": ns},
        "rules": [
            {"apiGroups": [GROUP], "resources": ["agenticsessions"],
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"apiGroups": [""], "resources": ["pods", "services", "secrets"],
             "verbs": ["get", "list", "create", "update", "patch", "delete"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
             "verbs": ["get", "list", "create", "update", "patch", "delete"]}],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "tenant", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ALICE}],
    });
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [role, binding]});
    cp.kubectl_ok(&["apply", "-f", "-"], Some(list.to_string().as_bytes()));
}

/// A runner on 127.0.0.1 (every pod's IP here): records each notice's path,
/// token and body; answers `answer`.
#[derive(Clone)]
struct Runner {
    seen: Arc<Mutex<Vec<(String, String)>>>,
    answer: Arc<Mutex<(u16, &'static str)>>,
}

impl Runner {
    async fn start() -> (Runner, u16) {
        let r = Runner {
            seen: Arc::default(),
            answer: Arc::new(Mutex::new((200, "ok"))),
        };
        let app = Router::new()
            .route(
                "/{*path}",
                post(
                    |State(r): State<Runner>,
                     axum::extract::Path(path): axum::extract::Path<String>,
                     headers: axum::http::HeaderMap| async move {
                        let token = headers
                            .get("x-ambient-session-token")
                            .and_then(|t| t.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        if let Ok(mut seen) = r.seen.lock() {
                            seen.push((format!("/{path}"), token));
                        }
                        let (code, body) = r.answer.lock().map(|a| *a).unwrap_or((200, "ok"));
                        (
                            axum::http::StatusCode::from_u16(code)
                                .unwrap_or(axum::http::StatusCode::OK),
                            body,
                        )
                    },
                ),
            )
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (r, port)
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The reconciler for `ns`, telling runners at their pod IP.
fn reconciler(env: &Installed, ns: &str, port: u16, extra: &[&str]) -> Proc {
    let template = format!("http://{{podIP}}:{port}");
    let mut args = vec![
        "--no-leader-election",
        "--namespace",
        ns,
        "--runner-url-template",
        &template,
    ];
    args.extend_from_slice(extra);
    reconciler_at(env, "127.0.0.1:0", &args)
}

fn session(ns: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1alpha2"), "kind": "AgenticSession",
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn create_as(
    cp: &ControlPlane,
    who: &Who,
    ns: &str,
    name: &str,
    spec: Value,
) -> Result<Value, kube::core::Status> {
    let client = cp.client_as(who).await;
    match sessions_in(&client, ns, "v1alpha2")
        .create(&PostParams::default(), &session(ns, name, spec))
        .await
    {
        Ok(o) => Ok(serde_json::to_value(o).expect("serializes")),
        Err(kube::Error::Api(s)) => Err(*s),
        Err(e) => panic!("{e}"),
    }
}

fn refused<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn wait_pod(client: &kube::Client, ns: &str, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(&format!("pod {ns}/{name}"), Duration::from_secs(30), || {
        let pods = pods.clone();
        async move {
            pods.get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not yet".to_owned())
        }
    })
    .await
}

fn workflow() -> Value {
    json!({"initialPrompt": "p", "activeWorkflow": {"gitUrl": "https://github.com/acme/wf.git", "path": "flows"}})
}

async fn event_notes(client: &kube::Client, ns: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    api.list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .into_iter()
        .map(|e| {
            format!(
                "{} {}",
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect()
}

/// Attack 1: point `session-<name>` elsewhere (ExternalName) and read the
/// answer back from the session's status. The tenant cannot make the
/// Service; one that exists anyway is never adopted; notices go to the
/// verified runner pod's IP with the runner's token, and what the runner
/// answers is never copied into status or Events.
#[tokio::test]
async fn notices_reach_only_the_verified_runner_with_its_token_and_nothing_is_echoed() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "sec-notice").await;
    tenant_rbac(cp, &ns);
    let redirect = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "session-s1", "namespace": ns},
        "spec": {"type": "ExternalName", "externalName": "session-victim.team-b.svc.cluster.local"}});
    let svc: Service = serde_json::from_value(redirect).unwrap_or_else(|e| panic!("{e}"));
    let as_alice = cp.client_as(&alice()).await;
    let status = refused(
        Api::<Service>::namespaced(as_alice.clone(), &ns)
            .create(&PostParams::default(), &svc)
            .await,
    );
    assert_eq!(status.code, 403, "{}", status.message);
    assert!(
        status.message.contains("only the agentic reconciler"),
        "{}",
        status.message
    );
    // One there already (made before the policy, by an administrator).
    Api::<Service>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let (runner, port) = Runner::start().await;
    *runner.answer.lock().unwrap_or_else(|e| e.into_inner()) =
        (500, "TOP-SECRET from whoever answers");
    let _reconciler = reconciler(env, &ns, port, &[]);
    create_as(cp, &alice(), &ns, "s1", workflow())
        .await
        .unwrap_or_else(|s| panic!("{}", s.message));
    wait_pod(&admin, &ns, "s1-runner-1").await;
    kubelet(&admin, &ns, "s1-runner-1", "Running", running(), true).await;
    let s = wait_session(&admin, &ns, "s1", "the workflow notice failed", |st| {
        condition(st, "WorkflowReconciled")["reason"] == "UpdateFailed"
    })
    .await;
    let message = condition(&s["status"], "WorkflowReconciled")["message"].to_string();
    assert!(message.contains("500"), "{message}");
    assert!(!message.contains("TOP-SECRET"), "{message}");
    // To the pod's IP, with the Secret's token for this attempt.
    let seen = runner.seen();
    assert!(!seen.is_empty());
    let secret = Api::<Secret>::namespaced(admin.clone(), &ns)
        .get("ambient-runner-token-s1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let token = secret
        .data
        .and_then(|d| {
            d.get("agui-token")
                .map(|b| String::from_utf8_lossy(&b.0).to_string())
        })
        .unwrap_or_default();
    assert!(
        seen.iter()
            .all(|(path, t)| path == "/workflow" && *t == token),
        "{seen:?}"
    );
    // The tenant's Service was neither used nor taken over.
    let found = Api::<Service>::namespaced(admin.clone(), &ns)
        .get("session-s1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        found.spec.and_then(|s| s.type_).as_deref(),
        Some("ExternalName")
    );
    let notes = eventually("the Events", Duration::from_secs(30), || {
        let admin = admin.clone();
        let ns = ns.clone();
        async move {
            let notes = event_notes(&admin, &ns).await;
            if notes.iter().any(|n| n.starts_with("ServiceNameTaken")) {
                Ok(notes)
            } else {
                Err(format!("{notes:?}"))
            }
        }
    })
    .await;
    assert!(!notes.iter().any(|n| n.contains("TOP-SECRET")), "{notes:?}");
    // The runner port accepts the reconciler and the platform's backend only.
    let ingress = Api::<NetworkPolicy>::namespaced(admin.clone(), &ns)
        .get("agentic-runner-ingress")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v = serde_json::to_value(ingress).expect("serializes");
    assert_eq!(
        v["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "agentic-system"
    );
}

/// Attack 2: set the reconciler's own variables (`REPOS_JSON`) or git's
/// (`GIT_CONFIG_*`: `protocol.ext.allow=always` and a repo `ext::sh -c …`).
#[tokio::test]
async fn session_variables_cannot_steer_the_runner_or_its_git() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "sec-env").await;
    tenant_rbac(cp, &ns);
    let status = create_as(
        cp,
        &alice(),
        &ns,
        "s2",
        json!({"initialPrompt": "p", "environmentVariables": {
            "REPOS_JSON": "[{\"url\": \"ext::sh -c id\"}]", "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "protocol.ext.allow", "GIT_CONFIG_VALUE_0": "always",
            "LD_PRELOAD": "/workspace/x.so"}}),
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(status.code, 422, "{}", status.message);
    let fields: Vec<String> = status
        .details
        .iter()
        .flat_map(|d| d.causes.iter().map(|c| c.field.clone()))
        .collect();
    assert_eq!(fields.len(), 5, "{fields:?}");
}

/// Attack 3: plant a pod the reconciler takes for the runner (labels and a
/// controller owner reference to the session's readable uid), squat the
/// runner's name, or take a real runner's labels off (out of its
/// NetworkPolicies). Refused by the admission policy; a squatter that
/// exists anyway is waited out, never adopted and no attempt is spent.
#[tokio::test]
async fn a_tenant_cannot_plant_squat_or_relabel_a_runner() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "sec-pods").await;
    tenant_rbac(cp, &ns);
    let (_runner, port) = Runner::start().await;
    let _reconciler = reconciler(env, &ns, port, &[]);
    let s3 = create_as(cp, &alice(), &ns, "s3", json!({"initialPrompt": "p"}))
        .await
        .unwrap_or_else(|s| panic!("{}", s.message));
    wait_pod(&admin, &ns, "s3-runner-1").await;
    let uid = s3["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let as_alice = cp.client_as(&alice()).await;
    let pods: Api<Pod> = Api::namespaced(as_alice.clone(), &ns);
    let pod = |name: &str, labelled: bool| -> Pod {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "runner", "image": "attacker"}]}});
        if labelled {
            p["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "agentic-webhook",
                "vteam.ambient-code/session": "s3", "vteam.ambient-code/attempt": "2"});
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "vteam.ambient-code/v1alpha2",
                "kind": "AgenticSession", "name": "s3", "uid": uid, "controller": true}]);
        }
        serde_json::from_value(p).unwrap_or_else(|e| panic!("{e}"))
    };
    for (what, p) in [
        ("a look-alike of attempt 2", pod("s3-runner-2", true)),
        ("a squatter on a runner's name", pod("s9-runner-1", false)),
        ("a pod with a runner's labels", pod("lookalike", true)),
    ] {
        let status = refused(pods.create(&PostParams::default(), &p).await);
        assert_eq!(status.code, 403, "{what}: {}", status.message);
        assert!(
            status.message.contains("only the agentic reconciler"),
            "{what}: {}",
            status.message
        );
    }
    let relabel = json!({"metadata": {"labels": {"app.kubernetes.io/name": null}}});
    let status = refused(
        pods.patch(
            "s3-runner-1",
            &PatchParams::default(),
            &Patch::Merge(&relabel),
        )
        .await,
    );
    assert_eq!(status.code, 403, "{}", status.message);

    // A squatter made anyway (here by an administrator, past the policy):
    // the session waits with NameTaken, spends no attempt, adopts nothing.
    Api::<Pod>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &pod("s4-runner-1", false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    create_as(cp, &alice(), &ns, "s4", json!({"initialPrompt": "p"}))
        .await
        .unwrap_or_else(|s| panic!("{}", s.message));
    let s = wait_session(&admin, &ns, "s4", "NameTaken", |st| {
        condition(st, "PodCreated")["reason"] == "NameTaken"
    })
    .await;
    assert_eq!(s["status"]["phase"], "Pending");
    assert_eq!(s["status"]["attempt"], 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = wait_session(&admin, &ns, "s4", "still waiting", phase_is("Pending")).await;
    assert_eq!(
        s["status"]["attempt"], 1,
        "no attempt spent on someone else's pod"
    );
    // Gone: the runner is made (and carries the reconciler's mark).
    Api::<Pod>::namespaced(admin.clone(), &ns)
        .delete("s4-runner-1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let made = eventually("the real runner", Duration::from_secs(60), || {
        let admin = admin.clone();
        let ns = ns.clone();
        async move {
            let p = Api::<Pod>::namespaced(admin, &ns)
                .get_opt("s4-runner-1")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("none")?;
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("vteam.ambient-code/runner-mark"))
                .map(|_| p.clone())
                .ok_or_else(|| "the squatter still".to_owned())
        }
    })
    .await;
    assert!(
        made.spec
            .is_some_and(|s| s.containers.iter().any(|c| c.name == "ambient-code-runner"))
    );
}

/// Attack 4: edit or delete the runners' NetworkPolicies, or add one that
/// allows everything. Edits and deletions are undone without a restart;
/// the tenant cannot make policies under the runners' names.
#[tokio::test]
async fn the_runner_network_policies_are_restored_and_reserved() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "sec-netpol").await;
    tenant_rbac(cp, &ns);
    let (_runner, port) = Runner::start().await;
    let _reconciler = reconciler(env, &ns, port, &["--runner-egress-deny", "10.96.0.0/12"]);
    create_as(cp, &alice(), &ns, "s5", json!({"initialPrompt": "p"}))
        .await
        .unwrap_or_else(|s| panic!("{}", s.message));
    wait_pod(&admin, &ns, "s5-runner-1").await;
    let policies: Api<NetworkPolicy> = Api::namespaced(admin.clone(), &ns);
    let desired = serde_json::to_value(
        policies
            .get("agentic-runner-egress")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .spec,
    )
    .expect("serializes");
    assert!(desired.to_string().contains("169.254.0.0/16"), "{desired}");
    let open = json!({"spec": {"egress": [{}]}});
    // The tenant cannot open it up.
    let as_alice = cp.client_as(&alice()).await;
    let status = refused(
        Api::<NetworkPolicy>::namespaced(as_alice.clone(), &ns)
            .patch(
                "agentic-runner-egress",
                &PatchParams::default(),
                &Patch::Merge(&open),
            )
            .await,
    );
    assert_eq!(status.code, 403, "{}", status.message);
    // Opened up anyway (by an administrator): restored.
    policies
        .patch(
            "agentic-runner-egress",
            &PatchParams::default(),
            &Patch::Merge(&open),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eventually(
        "the egress policy restored",
        Duration::from_secs(30),
        || {
            let policies = policies.clone();
            let desired = desired.clone();
            async move {
                let now = serde_json::to_value(
                    policies
                        .get("agentic-runner-egress")
                        .await
                        .map_err(|e| e.to_string())?
                        .spec,
                )
                .expect("serializes");
                if now == desired {
                    Ok(())
                } else {
                    Err(now.to_string())
                }
            }
        },
    )
    .await;
    // Deleted: made again.
    for name in ["agentic-runner-egress", "agentic-runner-ingress"] {
        policies
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        eventually(
            &format!("{name} made again"),
            Duration::from_secs(30),
            || {
                let policies = policies.clone();
                async move {
                    policies
                        .get_opt(name)
                        .await
                        .map_err(|e| e.to_string())?
                        .map(|_| ())
                        .ok_or_else(|| "gone".to_owned())
                }
            },
        )
        .await;
    }
    // The tenant cannot plant a policy under the runners' names.
    let allow_all: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "agentic-runner-allow-all", "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}))
    .unwrap_or_else(|e| panic!("{e}"));
    let status = refused(
        Api::<NetworkPolicy>::namespaced(as_alice, &ns)
            .create(&PostParams::default(), &allow_all)
            .await,
    );
    assert_eq!(status.code, 403, "{}", status.message);
}

/// Attack 5: create a session that acts for someone else.
#[tokio::test]
async fn a_session_acts_for_the_user_who_created_it() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "sec-user").await;
    tenant_rbac(cp, &ns);
    let status = create_as(
        cp,
        &alice(),
        &ns,
        "as-bob",
        json!({"initialPrompt": "p", "userContext": {"userId": "bob", "groups": ["admins"]}}),
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(status.code, 403, "{}", status.message);
    let mine = create_as(cp, &alice(), &ns, "as-alice", json!({"initialPrompt": "p"}))
        .await
        .unwrap_or_else(|s| panic!("{}", s.message));
    assert_eq!(
        mine["spec"]["userContext"],
        json!({"userId": "alice-example.com", "displayName": ALICE, "groups": ["team-a-devs"]})
    );
    // The platform's scheduled-session trigger creates for the schedule's owner.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "trigger", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"kind": "ServiceAccount", "name": "ambient-session-trigger", "namespace": ns}]});
    cp.kubectl_ok(&["apply", "-f", "-"], Some(role.to_string().as_bytes()));
    let ns_group = format!("system:serviceaccounts:{ns}");
    let trigger = Who::user(
        &format!("system:serviceaccount:{ns}:ambient-session-trigger"),
        &["system:serviceaccounts", &ns_group, "system:authenticated"],
    );
    create_as(
        cp,
        &trigger,
        &ns,
        "nightly-1",
        json!({"initialPrompt": "p", "userContext": {"userId": "bob", "groups": ["admins"]}}),
    )
    .await
    .unwrap_or_else(|s| panic!("{}", s.message));
}

/// Attack 6: restart a session whose retries ran out, again and again.
#[tokio::test]
async fn restarts_after_the_retries_ran_out_are_budgeted() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "sec-restart").await;
    tenant_rbac(cp, &ns);
    let (_runner, port) = Runner::start().await;
    let _reconciler = reconciler(env, &ns, port, &["--max-attempts", "1"]);
    create_as(cp, &alice(), &ns, "s6", json!({"initialPrompt": "p"}))
        .await
        .unwrap_or_else(|s| panic!("{}", s.message));
    let as_alice = cp.client_as(&alice()).await;
    let api = sessions_in(&as_alice, &ns, "v1alpha2");
    let restart =
        json!({"metadata": {"annotations": {"ambient-code.io/desired-phase": "Running"}}});
    for round in 0..=3 {
        wait_pod(&admin, &ns, "s6-runner-1").await;
        kubelet(
            &admin,
            &ns,
            "s6-runner-1",
            "Running",
            terminated(137, "OOMKilled"),
            false,
        )
        .await;
        let s = wait_session(&admin, &ns, "s6", "retries exhausted", |st| {
            st["phase"] == "Failed" && condition(st, "RetriesExhausted")["status"] == "True"
        })
        .await;
        assert_eq!(
            s["status"]["restarts"].as_i64().unwrap_or(0),
            round,
            "{}",
            s["status"]
        );
        // The pod of the failed run goes before a restart can reuse its name.
        eventually("the failed pod gone", Duration::from_secs(30), || {
            let admin = admin.clone();
            let ns = ns.clone();
            async move {
                let pods: Api<Pod> = Api::namespaced(admin, &ns);
                match pods
                    .get_opt("s6-runner-1")
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some(p) if p.metadata.deletion_timestamp.is_some() => {
                        let _ = pods
                            .delete("s6-runner-1", &DeleteParams::default().grace_period(0))
                            .await;
                        Err("deleting".to_owned())
                    }
                    Some(_) => Err("there".to_owned()),
                    None => Ok(()),
                }
            }
        })
        .await;
        let res = api
            .patch("s6", &PatchParams::default(), &Patch::Merge(&restart))
            .await;
        if round < 3 {
            res.unwrap_or_else(|e| panic!("restart {round}: {e}"));
        } else {
            let status = refused(res);
            assert_eq!(status.code, 403, "{}", status.message);
            assert!(
                status.message.contains("restarted 3 times"),
                "{}",
                status.message
            );
        }
    }
    // A controller principal still may.
    let reconciler_client = cp.client_as(&Who::Token(Principal::Reconciler)).await;
    sessions_in(&reconciler_client, &ns, "v1alpha2")
        .patch("s6", &PatchParams::default(), &Patch::Merge(&restart))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Attacks 7 and 9: a name that cannot make a runner's objects (or would
/// move a templated host), and an MCP server at the metadata address.
#[tokio::test]
async fn names_and_mcp_urls_that_would_misdirect_the_runner_are_refused() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "sec-names").await;
    tenant_rbac(cp, &ns);
    let long = "a".repeat(56);
    for name in ["s1.evil.example.com", long.as_str()] {
        let status = create_as(cp, &alice(), &ns, name, json!({"initialPrompt": "p"}))
            .await
            .err()
            .unwrap_or_else(|| panic!("{name} accepted"));
        assert_eq!(status.code, 422, "{name}: {}", status.message);
        assert!(
            status.message.contains("metadata.name"),
            "{}",
            status.message
        );
    }
    let status = create_as(
        cp,
        &alice(),
        &ns,
        "mcp",
        json!({"initialPrompt": "p", "mcpServers": {"custom": {
            "meta": {"type": "sse", "url": "http://169.254.169.254/latest/meta-data"}}}}),
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(status.code, 422, "{}", status.message);
    assert!(
        status.message.contains("spec.mcpServers.custom[meta].url"),
        "{}",
        status.message
    );
}

/// Attack 10: a stolen reconciler token starts a pod with the node's
/// network, a host path, privilege or another service account, or makes
/// Services and Secrets of its choosing.
#[tokio::test]
async fn a_stolen_reconciler_token_makes_nothing_but_runners() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "sec-token").await;
    let stolen = cp.client_as(&Who::Token(Principal::Reconciler)).await;
    let runner_like = |spec: Value| -> Pod {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "x-runner-1", "namespace": ns,
                "labels": {"app.kubernetes.io/managed-by": "agentic-webhook"},
                "ownerReferences": [{"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
                    "name": "x", "uid": "00000000-0000-0000-0000-000000000000", "controller": true}]},
            "spec": spec}))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let pods: Api<Pod> = Api::namespaced(stolen.clone(), &ns);
    for (what, spec) in [
        (
            "host network",
            json!({"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}),
        ),
        (
            "host path",
            json!({"containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
        ),
        (
            "added capabilities",
            json!({"containers": [{"name": "c", "image": "i",
            "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}),
        ),
        (
            "another service account",
            json!({"serviceAccountName": "cluster-admin-sa",
            "containers": [{"name": "c", "image": "i"}]}),
        ),
    ] {
        let status = refused(
            pods.create(&PostParams::default(), &runner_like(spec))
                .await,
        );
        assert_eq!(status.code, 403, "{what}: {}", status.message);
        assert!(
            status.message.contains("creates runner pods only"),
            "{what}: {}",
            status.message
        );
    }
    // Privilege the apiserver refuses by itself here (no
    // --allow-privileged); the policy refuses it where that is allowed.
    let privileged = json!({"containers": [{"name": "c", "image": "i",
        "securityContext": {"privileged": true}}]});
    let status = refused(
        pods.create(&PostParams::default(), &runner_like(privileged))
            .await,
    );
    assert!(matches!(status.code, 403 | 422), "{}", status.message);
    let plain: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "miner", "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}))
    .unwrap_or_else(|e| panic!("{e}"));
    let status = refused(pods.create(&PostParams::default(), &plain).await);
    assert_eq!(status.code, 403, "an unowned pod: {}", status.message);
    let external: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "session-x", "namespace": ns},
        "spec": {"type": "ExternalName", "externalName": "evil.example.com"}}))
    .unwrap_or_else(|e| panic!("{e}"));
    let status = refused(
        Api::<Service>::namespaced(stolen.clone(), &ns)
            .create(&PostParams::default(), &external)
            .await,
    );
    assert_eq!(status.code, 403, "{}", status.message);
    let loot: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "loot", "namespace": ns}, "stringData": {"k": "v"}}))
    .unwrap_or_else(|e| panic!("{e}"));
    let status = refused(
        Api::<Secret>::namespaced(stolen, &ns)
            .create(&PostParams::default(), &loot)
            .await,
    );
    assert_eq!(status.code, 403, "{}", status.message);
}

/// The policies stop look-alikes, not the platform: its backend keeps a
/// per-session OAuth Secret owned by the session
/// (`backend/handlers/oauth.go`, created and updated as `backend-api`), and
/// a tenant's ordinary objects are untouched.
#[tokio::test]
async fn the_platforms_own_objects_pass_the_runner_policies() {
    let Some(env) = installed() else { return };
    let cp = env.cp;
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "sec-platform").await;
    tenant_rbac(cp, &ns);
    const BACKEND: &str = "system:serviceaccount:ambient-code:backend-api";
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "backend", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"kind": "ServiceAccount", "name": "backend-api", "namespace": "ambient-code"}],
    });
    cp.kubectl_ok(&["apply", "-f", "-"], Some(binding.to_string().as_bytes()));
    let s = create_as(cp, &alice(), &ns, "oauth", json!({"initialPrompt": "p"}))
        .await
        .unwrap_or_else(|s| panic!("{}", s.message));
    let uid = s["metadata"]["uid"].as_str().unwrap_or_default();
    let secret = |token: &str| -> Secret {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "oauth-google-credentials", "namespace": ns,
                "labels": {"app": "ambient-code", "ambient-code.io/session": "oauth",
                    "ambient-code.io/oauth": "true"},
                "ownerReferences": [{"apiVersion": "vteam.ambient-code/v1alpha1",
                    "kind": "AgenticSession", "name": "oauth", "uid": uid, "controller": true}]},
            "stringData": {"access_token": token}}))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let backend = cp
        .client_as(&Who::user(
            BACKEND,
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:ambient-code",
                "system:authenticated",
            ],
        ))
        .await;
    let secrets: Api<Secret> = Api::namespaced(backend, &ns);
    secrets
        .create(&PostParams::default(), &secret("t1"))
        .await
        .unwrap_or_else(|e| panic!("the backend's OAuth Secret: {e}"));
    secrets
        .replace("oauth-google-credentials", &PostParams::default(), &{
            let mut s = secret("t2");
            s.metadata.resource_version = secrets
                .get("oauth-google-credentials")
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .metadata
                .resource_version;
            s
        })
        .await
        .unwrap_or_else(|e| panic!("the backend's OAuth Secret update: {e}"));
    // A tenant's ordinary pod and Service.
    let as_alice = cp.client_as(&alice()).await;
    let pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dev", "namespace": ns, "labels": {"app.kubernetes.io/name": "dev"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}))
    .unwrap_or_else(|e| panic!("{e}"));
    Api::<Pod>::namespaced(as_alice.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("a tenant's own pod: {e}"));
    let svc: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "dev", "namespace": ns},
        "spec": {"selector": {"app.kubernetes.io/name": "dev"}, "ports": [{"port": 80}]}}))
    .unwrap_or_else(|e| panic!("{e}"));
    Api::<Service>::namespaced(as_alice, &ns)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap_or_else(|e| panic!("a tenant's own Service: {e}"));
}
