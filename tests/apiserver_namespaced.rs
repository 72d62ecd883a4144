//! The namespaced reconciler (the base install: a Role in the namespace
//! its agentic-reconciler-scope ConfigMap names, as `manifests
//! --watch-namespace` renders it) against a real kube-apiserver v1.35: with
//! only that Role (and its Lease Role) the reconciler runs sessions there,
//! records Events, and leaves every other namespace alone.

mod common;

use std::process::Command;
use std::time::Duration;

use common::envtest::{Principal, SYSTEM_NS, Who, eventually};
use common::installed::{CRD, GROUP, render, sessions_in, start_server, wait_until_serving};
use common::{BIN, Proc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const WATCHED: &str = "team-sessions";

fn sessions(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    sessions_in(client, ns, "v1alpha2")
}

fn can_i(cp: &common::envtest::ControlPlane, args: &[&str]) -> String {
    let user = format!("--as={}", Principal::Reconciler.username());
    let mut all = vec!["auth", "can-i", user.as_str()];
    all.extend_from_slice(args);
    let out = cp.kubectl(&Who::admin(), &all, None);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_namespaced_reconciler_needs_no_cluster_rights_and_stays_in_its_namespace() {
    let Some(cp) = common::envtest::control_plane() else {
        return;
    };
    let (server, ca) = start_server(cp, &[]);
    let url = format!("https://{}", server.https);
    cp.kubectl_ok(&["create", "namespace", WATCHED], None);
    cp.kubectl_ok(&["create", "namespace", "elsewhere"], None);
    let install = render(&[
        "--ca-file",
        ca.to_str().unwrap_or_default(),
        "--url",
        &url,
        "--watch-namespace",
        WATCHED,
    ]);
    cp.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&install));
    cp.wait_established(CRD);
    wait_until_serving(cp);

    // What the ServiceAccount may do, as the apiserver's authorizer says.
    assert_eq!(can_i(cp, &["list", "pods", "--all-namespaces"]), "no");
    assert_eq!(can_i(cp, &["create", "pods", "-n", "elsewhere"]), "no");
    assert_eq!(
        can_i(
            cp,
            &[
                "list",
                "agenticsessions.vteam.ambient-code",
                "--all-namespaces"
            ]
        ),
        "no"
    );
    assert_eq!(can_i(cp, &["create", "pods", "-n", WATCHED]), "yes");
    assert_eq!(
        can_i(cp, &["create", "events.events.k8s.io", "-n", WATCHED]),
        "yes"
    );

    // The reconciler as the Deployment runs it: namespace from the scope
    // ConfigMap (AGENTIC_WATCH_NAMESPACE), leader election on.
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--log-format",
        "json",
        "reconcile",
        "--probe-addr",
        "127.0.0.1:0",
    ])
    .args(["--lease-namespace", SYSTEM_NS, "--lease-duration", "4s"])
    .args(["--runner-url-template", "http://127.0.0.1:9/{session}"])
    .env("AGENTIC_WATCH_NAMESPACE", WATCHED)
    .env(
        "KUBECONFIG",
        cp.kubeconfig(&Who::Token(Principal::Reconciler)),
    )
    .env("RUST_LOG", "info,kube=warn");
    let reconciler = Proc::spawn(cmd, false);
    assert!(
        reconciler
            .wait_log(
                |l| l["message"] == "leading: reconciling",
                Duration::from_secs(30)
            )
            .is_some(),
        "{:?}",
        reconciler.logs()
    );

    let client = cp.client().await;
    for ns in [WATCHED, "elsewhere"] {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": format!("{GROUP}/v1alpha2"), "kind": "AgenticSession",
            "metadata": {"name": "s1", "namespace": ns}, "spec": {"initialPrompt": "p"},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        sessions(&client, ns)
            .create(&PostParams::default(), &o)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), WATCHED);
    eventually("the runner pod", Duration::from_secs(30), || {
        let pods = pods.clone();
        async move {
            pods.get_opt("s1-runner-1")
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .ok_or_else(|| "no pod".to_owned())
        }
    })
    .await;
    // The runner is the shipped contract's container.
    let kubelet = json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": "ambient-code-runner", "image": "runner", "imageID": "", "ready": true, "restartCount": 0,
        "state": {"running": {"startedAt": "2026-11-28T10:00:00Z"}}}]}});
    pods.patch_status(
        "s1-runner-1",
        &PatchParams::default(),
        &Patch::Merge(&kubelet),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let watched = sessions(&client, WATCHED);
    eventually("Running and Ready", Duration::from_secs(30), || {
        let watched = watched.clone();
        async move {
            let o = serde_json::to_value(watched.get("s1").await.map_err(|e| e.to_string())?)
                .expect("serializes");
            let ready = o["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if o["status"]["phase"] == "Running" && ready {
                Ok(())
            } else {
                Err(o["status"].to_string())
            }
        }
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), WATCHED);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "PodCreated"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "RunnerStarted"), "{reasons:?}");

    // The other namespace is not its business: no status, no pod.
    let other = serde_json::to_value(
        sessions(&client, "elsewhere")
            .get("s1")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .expect("serializes");
    assert_eq!(other.get("status"), None, "{other}");
    let other_pods: Api<Pod> = Api::namespaced(client.clone(), "elsewhere");
    assert!(
        other_pods
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .items
            .is_empty()
    );
    // Nothing was refused along the way.
    let denied: Vec<_> = reconciler
        .logs()
        .into_iter()
        .filter(|l| l.to_string().contains("forbidden"))
        .collect();
    assert!(denied.is_empty(), "{denied:?}");
}
