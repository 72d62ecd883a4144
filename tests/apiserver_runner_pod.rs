//! The runner pod template against a real kube-apiserver v1.35: the pod the
//! reconciler makes from a platform team's template is admitted by a
//! namespace enforcing the `restricted` Pod Security Standard and carries
//! the template's sidecar, volume, resources and tolerations; the template
//! is reloaded when its file changes and a bad one is refused; the
//! namespace gets the runners' egress NetworkPolicy; and the reconciler's
//! own restricted check agrees with the apiserver's.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use agentic_webhook::api::resource::AgenticSession;
use agentic_webhook::lifecycle::template;
use agentic_webhook::lifecycle::world::{RunnerConfig, runner_pod};
use common::envtest::{ControlPlane, eventually, free_port, say};
use common::installed::{create_session, installed, reconciler_at};
use common::{BIN, http_get};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A fresh namespace that enforces `restricted` (latest).
async fn restricted_namespace(cp: &ControlPlane, client: &kube::Client, prefix: &str) -> String {
    let ns = cp.namespace(client, prefix).await;
    let api: Api<Namespace> = Api::all(client.clone());
    let labels = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    api.patch(&ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap_or_else(|e| panic!("labelling {ns}: {e}"));
    ns
}

async fn wait_pod(client: &kube::Client, ns: &str, name: &str) -> Value {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(&format!("pod {ns}/{name}"), Duration::from_secs(30), || {
        let pods = pods.clone();
        async move {
            match pods.get_opt(name).await {
                Ok(Some(p)) => Ok(serde_json::to_value(p).expect("serializes")),
                Ok(None) => Err("not created".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

/// `agentic_reconciler_runner_template_reloads_total{result}` once it is `want`.
async fn wait_reloads(probes: SocketAddr, result: &str, want: u32) {
    let line =
        format!("agentic_reconciler_runner_template_reloads_total{{result=\"{result}\"}} {want}");
    eventually(&line, Duration::from_secs(30), || {
        let line = line.clone();
        async move {
            let body = http_get(probes, "/metrics").1;
            if body.lines().any(|l| l == line) {
                Ok(())
            } else {
                Err(body
                    .lines()
                    .filter(|l| l.contains("template_reloads"))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_platform_template_shapes_the_runner_pod_under_the_restricted_profile() {
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = restricted_namespace(env.cp, &client, "template").await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("pod-template.yaml");
    let shipped = std::fs::read_to_string(format!("{ROOT}/tests/data/runner-pod-template.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&file, &shipped).unwrap_or_else(|e| panic!("{e}"));
    let probes = format!("127.0.0.1:{}", free_port());
    let reconciler = reconciler_at(
        env,
        &probes,
        &[
            "--no-leader-election",
            "--namespace",
            &ns,
            "--runner-image",
            "runner:7",
            "--runner-pod-template",
            &file.display().to_string(),
            // The template's container `runner` is the runner (the shipped
            // contract's is ambient-code-runner: tests/apiserver_runner_contract.rs).
            "--runner-contract",
            &format!("{ROOT}/examples/runner-contracts/minimal.yaml"),
            "--require-restricted",
            "--runner-egress-deny",
            "10.96.0.0/12",
        ],
    );
    let probes: SocketAddr = probes.parse().unwrap_or_else(|e| panic!("{e}"));

    create_session(
        &client,
        &ns,
        "s1",
        json!({"initialPrompt": "p", "environmentVariables": {"LOG_LEVEL": "debug"}}),
    )
    .await;
    let pod = wait_pod(&client, &ns, "s1-runner-1").await;
    let spec = &pod["spec"];
    assert_eq!(pod["metadata"]["labels"]["team"], "agents");
    assert_eq!(spec["restartPolicy"], "Never");
    // (The apiserver's DefaultTolerationSeconds adds its two after ours.)
    assert_eq!(
        spec["tolerations"][0],
        json!({"key": "dedicated", "operator": "Equal", "value": "agents", "effect": "NoSchedule"})
    );
    assert_eq!(spec["nodeSelector"], json!({"pool": "agents"}));
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "quay"}]));
    assert_eq!(spec["volumes"][0]["name"], "workspace");
    assert_eq!(spec["volumes"][0]["emptyDir"]["sizeLimit"], "10Gi");
    let runner = container(&pod, "runner");
    assert_eq!(runner["image"], "runner:7");
    assert_eq!(
        runner["resources"],
        json!({"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"memory": "6Gi"}})
    );
    assert_eq!(runner["volumeMounts"][0]["mountPath"], "/workspace");
    assert!(
        runner["env"]
            .as_array()
            .is_some_and(|e| e.contains(&json!({"name": "LOG_LEVEL", "value": "debug"})))
    );
    let sidecar = container(&pod, "state-sync");
    assert_eq!(sidecar["image"], "sync:1");
    assert_eq!(sidecar["resources"]["limits"]["memory"], "128Mi");
    // Admitted under `restricted` because the template's silences were filled.
    assert_eq!(
        sidecar["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);

    // The namespace got the runners' egress policy (created as the
    // reconciler's ServiceAccount, with the shipped RBAC).
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    let policy = serde_json::to_value(
        policies
            .get("agentic-runner-egress")
            .await
            .unwrap_or_else(|e| panic!("no runner egress NetworkPolicy: {e}")),
    )
    .expect("serializes");
    assert_eq!(
        policy["spec"]["egress"][1]["to"][0]["ipBlock"],
        json!({"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "100.100.100.200/32",
               "168.63.129.16/32", "192.0.0.192/32", "10.96.0.0/12"]})
    );
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        pod["metadata"]["labels"]["app.kubernetes.io/name"]
    );

    // A new template is picked up without a restart: new pods use it.
    std::fs::write(&file, shipped.replace("image: sync:1", "image: sync:2"))
        .unwrap_or_else(|e| panic!("{e}"));
    wait_reloads(probes, "success", 1).await;
    create_session(&client, &ns, "s2", json!({"initialPrompt": "p"})).await;
    let pod = wait_pod(&client, &ns, "s2-runner-1").await;
    assert_eq!(container(&pod, "state-sync")["image"], "sync:2");

    // A bad one is refused, named, counted; the last good one stays.
    std::fs::write(
        &file,
        shipped.replace("spec:\n", "spec:\n  restartPolicy: Always\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_reloads(probes, "failure", 1).await;
    assert!(
        reconciler
            .wait_log(
                |l| l["message"]
                    == "runner pod template reload failed; keeping the last good template and contract"
                    && l["error"].as_str().is_some_and(
                        |e| e.contains("spec.restartPolicy: Unsupported value: \"Always\"")
                    ),
                Duration::from_secs(10),
            )
            .is_some(),
        "{:?}",
        reconciler.logs()
    );
    create_session(&client, &ns, "s3", json!({"initialPrompt": "p"})).await;
    let pod = wait_pod(&client, &ns, "s3-runner-1").await;
    assert_eq!(container(&pod, "state-sync")["image"], "sync:2");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    say("runner pod template: applied, reloaded, bad reload refused under enforce=restricted");
}

fn sample_session(ns: &str, name: &str) -> AgenticSession {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": "7c1f6a52-0000-4000-8000-000000000001", "generation": 1},
        "spec": {"initialPrompt": "p"}
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// For templates the profile admits and templates it refuses for each kind
/// of reason, the reconciler's check and the apiserver's PodSecurity
/// admission reach the same verdict.
#[tokio::test]
async fn the_restricted_check_agrees_with_the_apiservers_pod_security_admission() {
    let Some(env) = installed() else { return };
    let client = env.cp.client().await;
    let ns = restricted_namespace(env.cp, &client, "pss").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let shipped = std::fs::read_to_string(format!("{ROOT}/manifests/base/runner-template.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let test_data = std::fs::read_to_string(format!("{ROOT}/tests/data/runner-pod-template.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let side = |sc: &str| {
        format!("spec:\n  containers:\n  - name: side\n    image: s\n    securityContext: {sc}\n")
    };
    let cases: Vec<(&str, String)> = vec![
        ("shipped example", shipped),
        ("test template", test_data),
        ("no template", "{}".into()),
        ("NET_BIND_SERVICE", side("{capabilities: {add: [NET_BIND_SERVICE]}}")),
        ("localhost seccomp", side("{seccompProfile: {type: Localhost, localhostProfile: p.json}}")),
        ("host network", "spec: {hostNetwork: true}".into()),
        ("host PID", "spec: {hostPID: true}".into()),
        ("privileged sidecar", side("{privileged: true}")),
        ("escalation", side("{allowPrivilegeEscalation: true}")),
        ("capability", side("{capabilities: {add: [NET_RAW]}}")),
        ("root user", side("{runAsUser: 0}")),
        ("root allowed", side("{runAsNonRoot: false}")),
        ("unconfined seccomp", side("{seccompProfile: {type: Unconfined}}")),
        ("unconfined apparmor", side("{appArmorProfile: {type: Unconfined}}")),
        ("selinux user", side("{seLinuxOptions: {user: root}}")),
        (
            "proc mount",
            "spec:\n  hostUsers: false\n  containers:\n  - {name: side, image: s, securityContext: {procMount: Unmasked}}\n".into(),
        ),
        ("host path", "spec:\n  volumes: [{name: h, hostPath: {path: /tmp}}]\n".into()),
        ("host port", "spec:\n  containers:\n  - {name: side, image: s, ports: [{containerPort: 80, hostPort: 80}]}\n".into()),
        ("unsafe sysctl", "spec: {securityContext: {sysctls: [{name: kernel.msgmax, value: '65536'}]}}".into()),
    ];
    // The shipped ConfigMap brings its own contract; the others are read
    // with the minimal one (its runner is the container `runner`).
    let minimal = std::fs::read_to_string(format!("{ROOT}/examples/runner-contracts/minimal.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let base = RunnerConfig {
        contract: std::sync::Arc::new(
            agentic_webhook::lifecycle::contract::load(&minimal).unwrap_or_else(|e| panic!("{e}")),
        ),
        ..RunnerConfig::with_image("runner:1")
    };
    for (i, (what, text)) in cases.iter().enumerate() {
        let cfg = template::load_pair(Some(text), None, &base, false)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let ours = template::check_restricted(&cfg);
        let pod = runner_pod(&sample_session(&ns, &format!("pss-{i}")), 1, &cfg);
        let theirs = pods
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &pod,
            )
            .await;
        match (&ours, &theirs) {
            (Ok(()), Ok(_)) => {}
            (Err(_), Err(kube::Error::Api(s)))
                if s.code == 403 && s.message.contains("violates PodSecurity") => {}
            // Privileged containers are refused before PodSecurity runs
            // (kube-apiserver without --allow-privileged).
            (Err(_), Err(kube::Error::Api(s)))
                if s.code == 422 && s.message.contains("disallowed by cluster policy") => {}
            _ => panic!(
                "{what}: we say {:?}, the apiserver says {:?}",
                ours.as_ref().map_err(ToString::to_string),
                theirs
                    .as_ref()
                    .map(|_| "admitted")
                    .map_err(ToString::to_string)
            ),
        }
    }
    say(&format!(
        "restricted profile: {} templates, same verdict as PodSecurity admission",
        cases.len()
    ));
}

/// `reconcile --runner-pod-template FILE` with no reachable apiserver: its
/// exit code and stderr.
fn reconcile_with(file: &std::path::Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args([
            "reconcile",
            "--no-leader-election",
            "--probe-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .arg("--runner-pod-template")
        .arg(file)
        .env("KUBECONFIG", file.with_extension("missing"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A bad template stops the reconciler before it talks to any apiserver,
/// naming the file and the field.
#[test]
fn a_bad_template_at_start_is_refused_with_the_field() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("t.yaml");
    std::fs::write(
        &file,
        "spec:\n  containers:\n  - name: ambient-code-runner\n    env: [{name: REPOS_JSON, value: x}]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (code, stderr) = reconcile_with(&file, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "runner pod template and contract ({}): spec.containers[0].env[0].name: Forbidden: \"REPOS_JSON\" is set by the reconciler (the runner contract)",
            file.display()
        )),
        "{stderr}"
    );
    // A bad runner contract stops it the same way, naming its field.
    std::fs::write(&file, "{}").unwrap_or_else(|e| panic!("{e}"));
    let contract = dir.path().join("contract.yaml");
    let minimal = std::fs::read_to_string(format!("{ROOT}/examples/runner-contracts/minimal.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&contract, minimal.replace("format: json", "format: yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, stderr) = reconcile_with(
        &file,
        &["--runner-contract", &contract.display().to_string()],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(r#"env[0].vars[4].format: Unsupported value: "yaml""#),
        "{stderr}"
    );
    std::fs::write(&file, "spec:\n  hostNetwork: true\n").unwrap_or_else(|e| panic!("{e}"));
    let (_, stderr) = reconcile_with(&file, &["--require-restricted"]);
    assert!(
        stderr.contains(
            "breaks the restricted Pod Security Standard: spec.hostNetwork: must be false"
        ),
        "{stderr}"
    );
}
