//! The lifecycle suites' shared moves: the kubelet's part (there is none),
//! waiting on a session's status, reading its conditions.
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::envtest::eventually;
use super::installed::sessions_in;

fn sessions(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    sessions_in(client, ns, "v1alpha2")
}

fn as_json<T: serde::Serialize>(o: &T) -> Value {
    serde_json::to_value(o).expect("serializes")
}

pub fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// Wait until the session's status satisfies `pred`; returns the object.
pub async fn wait_session(
    client: &kube::Client,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let api = sessions(client, ns);
    let pred = &pred;
    eventually(
        &format!("{ns}/{name}: {what}"),
        Duration::from_secs(30),
        || {
            let api = api.clone();
            async move {
                let o = as_json(&api.get(name).await.map_err(|e| e.to_string())?);
                if pred(&o["status"]) {
                    Ok(o)
                } else {
                    Err(o["status"].to_string())
                }
            }
        },
    )
    .await
}

pub fn phase_is(phase: &'static str) -> impl Fn(&Value) -> bool {
    move |s| s["phase"] == phase
}

/// The kubelet's part: write the runner container's state into pod status.
/// Every pod's IP is 127.0.0.1, where the tests' stand-in runners listen.
pub async fn kubelet(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    phase: &str,
    runner: Value,
    ready: bool,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // The runner is the container the reconciler named in the pod.
    let name = pods
        .get(pod)
        .await
        .ok()
        .and_then(|p| p.metadata.annotations)
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container").cloned())
        .unwrap_or_else(|| "runner".to_owned());
    let body = json!({"status": {
        "phase": phase,
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        "containerStatuses": [{
            "name": name, "image": "runner", "imageID": "", "ready": ready,
            "restartCount": 0, "state": runner,
        }],
    }});
    pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .unwrap_or_else(|e| panic!("kubelet write to {pod}: {e}"));
}

pub fn running() -> Value {
    json!({"running": {"startedAt": "2026-11-28T10:00:00Z"}})
}

pub fn terminated(code: i32, reason: &str) -> Value {
    json!({"terminated": {"exitCode": code, "reason": reason,
                          "startedAt": "2026-11-28T10:00:00Z", "finishedAt": "2026-11-28T10:05:00Z"}})
}
