use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::lifecycle::world::{LABEL_SESSION, pod_attempt};

/// A small runner contract, so these tests read as the template's.
pub(crate) const TEST_CONTRACT: &str = r#"
apiVersion: agentic.vteam.ambient-code/v1
kind: RunnerContract
name: test-runner
sessionVersion: v1alpha2
runner: {container: runner, port: {name: http, number: 8001}, health: /health}
tokenSecret: {name: "ambient-runner-token-{name}", noticeKey: agui-token}
sessionVariables: [runner]
env:
- containers: [runner]
  vars:
  - {name: SESSION_NAME, from: metadata.name}
  - {name: ATTEMPT, from: attempt}
  - {name: INITIAL_PROMPT, from: spec.initialPrompt}
  - {name: REPOS, from: spec.repos, format: json}
  - {name: LLM_MODEL, from: spec.llmSettings.model, when: set}
  - {name: AGUI_TOKEN, secretKey: noticeKey}
notices:
  header: X-Ambient-Session-Token
  defaultBranch: main
  workflow: {path: /workflow, body: {gitUrl: "{gitUrl}", branch: "{branch}", path: "{path}"}}
  repoAdd: {path: /repos/add, body: {url: "{url}", branch: "{branch}", name: "{name}"}}
  repoRemove: {path: /repos/remove, body: {name: "{name}"}}
"#;

fn base() -> RunnerConfig {
    RunnerConfig {
        image: "runner:1".into(),
        template: PodTemplateSpec::default(),
        contract: std::sync::Arc::new(
            crate::lifecycle::contract::load(TEST_CONTRACT).unwrap_or_else(|e| panic!("{e}")),
        ),
        cpu: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
            "1".into(),
        )),
        memory: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
            "4Gi".into(),
        )),
    }
}

fn session(extra: Value) -> AgenticSession {
    let mut v = json!({
        "metadata": {"name": "s1", "namespace": "team-a", "uid": "u-1", "generation": 2},
        "spec": {"initialPrompt": "go", "environmentVariables": {"LOG_LEVEL": "debug", "HTTP_PROXY": "user"}}
    });
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
        for (k, e) in extra {
            if let (Some(Value::Object(into)), Value::Object(e)) = (obj.get_mut(&k), e) {
                into.extend(e);
            }
        }
    }
    serde_json::from_value(v).expect("the expected shape")
}

fn pod_json(text: &str, s: &AgenticSession) -> Value {
    let cfg = load(text, &base(), false).unwrap_or_else(|e| panic!("{e}"));
    serde_json::to_value(runner_pod(s, 3, &cfg)).expect("serializes")
}

fn err(text: &str) -> String {
    match load(text, &base(), false) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const PLATFORM: &str = r#"
metadata:
  labels: {team: agents}
  annotations: {cost-centre: "42"}
spec:
  serviceAccountName: runner-default
  priorityClassName: agentic-runners
  imagePullSecrets: [{name: quay}]
  nodeSelector: {pool: agents}
  tolerations: [{key: agents, operator: Exists, effect: NoSchedule}]
  securityContext: {fsGroup: 1000, runAsUser: 1000}
  volumes:
  - {name: workspace, emptyDir: {sizeLimit: 10Gi}}
  - {name: creds, secret: {secretName: runner-creds}}
  initContainers:
  - name: fetch
    image: fetch:2
  containers:
  - name: state-sync
    image: sync:3
    envFrom: [{secretRef: {name: s3, optional: true}}]
    volumeMounts: [{name: workspace, mountPath: /workspace}]
    resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 256Mi}}
  - name: runner
    env: [{name: HTTP_PROXY, value: "http://proxy:3128"}]
    volumeMounts: [{name: workspace, mountPath: /workspace}, {name: creds, mountPath: /creds, readOnly: true}]
    resources: {requests: {cpu: 2, memory: 8Gi}, limits: {memory: 8Gi}}
"#;

#[test]
fn the_template_is_kept_and_the_runner_filled_in() {
    let pod = pod_json(PLATFORM, &session(json!({})));
    let spec = &pod["spec"];
    assert_eq!(pod["metadata"]["name"], "s1-runner-3");
    assert_eq!(pod["metadata"]["namespace"], "team-a");
    assert_eq!(pod["metadata"]["labels"]["team"], "agents");
    assert_eq!(pod["metadata"]["labels"][LABEL_SESSION], "s1");
    assert_eq!(pod["metadata"]["annotations"]["cost-centre"], "42");
    assert_eq!(
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "runner"
    );
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["serviceAccountName"], "runner-default");
    assert_eq!(spec["priorityClassName"], "agentic-runners");
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "quay"}]));
    assert_eq!(spec["nodeSelector"], json!({"pool": "agents"}));
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}])
    );
    assert_eq!(
        spec["securityContext"],
        json!({"fsGroup": 1000, "runAsUser": 1000, "runAsNonRoot": true,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(spec["volumes"][0]["emptyDir"]["sizeLimit"], "10Gi");
    let sidecar = &spec["containers"][0];
    assert_eq!(sidecar["name"], "state-sync");
    assert_eq!(sidecar["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(
        sidecar["securityContext"],
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
    );
    assert_eq!(
        spec["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    let runner = &spec["containers"][1];
    assert_eq!(runner["name"], "runner");
    assert_eq!(runner["image"], "runner:1");
    // The template's resources win over the flags (YAML numbers read as quantities).
    assert_eq!(
        runner["resources"],
        json!({"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}})
    );
    assert_eq!(runner["volumeMounts"][1]["mountPath"], "/creds");
    assert_eq!(
        runner["ports"],
        json!([{"name": "http", "containerPort": 8001, "protocol": "TCP"}])
    );
    assert_eq!(runner["readinessProbe"]["httpGet"]["path"], "/health");
    let env: Vec<(String, String)> = runner["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    // The template's variables first; the session may not replace them.
    assert_eq!(
        env.first(),
        Some(&("HTTP_PROXY".into(), "http://proxy:3128".into()))
    );
    assert_eq!(env.iter().filter(|(n, _)| n == "HTTP_PROXY").count(), 1);
    assert!(env.contains(&("LOG_LEVEL".into(), "debug".into())));
    assert!(env.contains(&("ATTEMPT".into(), "3".into())));
}

#[test]
fn without_a_template_the_runner_is_restricted_and_never_best_effort() {
    let cfg = base();
    let pod = serde_json::to_value(runner_pod(&session(json!({})), 1, &cfg)).expect("serializes");
    let runner = &pod["spec"]["containers"][0];
    assert_eq!(pod["spec"]["containers"].as_array().map(Vec::len), Some(1));
    assert_eq!(runner["image"], "runner:1");
    assert_eq!(
        runner["resources"],
        json!({"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "4Gi"}})
    );
    assert_eq!(check_restricted(&cfg), Ok(()));
    // No flags, no template: no resources at all rather than an empty object.
    let bare = runner_pod(
        &session(json!({})),
        1,
        &RunnerConfig {
            image: "r".into(),
            cpu: None,
            memory: None,
            ..base()
        },
    );
    let bare = serde_json::to_value(bare).expect("serializes");
    assert_eq!(bare["spec"]["containers"][0].get("resources"), None);
}

#[test]
fn the_session_runner_sa_annotation_wins_over_the_template() {
    let s = session(
        json!({"metadata": {"annotations": {"ambient-code.io/runner-sa": "ambient-session-s1"}}}),
    );
    assert_eq!(
        pod_json(PLATFORM, &s)["spec"]["serviceAccountName"],
        "ambient-session-s1"
    );
}

#[test]
fn a_template_image_and_partial_resources_win_over_the_flags() {
    let pod = pod_json(
        "spec:\n  containers:\n  - name: runner\n    image: mine:2\n    resources: {limits: {memory: 16Gi}}\n",
        &session(json!({})),
    );
    let runner = &pod["spec"]["containers"][0];
    assert_eq!(runner["image"], "mine:2");
    assert_eq!(
        runner["resources"],
        json!({"requests": {"cpu": "1"}, "limits": {"memory": "16Gi"}})
    );
}

#[test]
fn a_pod_a_pod_template_and_a_config_map_are_read_as_templates() {
    let pod = r#"{"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "example", "namespace": "x", "uid": "1", "labels": {"team": "a"}},
                  "spec": {"priorityClassName": "p", "containers": []}, "status": {"phase": "Running"}}"#;
    assert_eq!(
        pod_json(pod, &session(json!({})))["spec"]["priorityClassName"],
        "p"
    );
    let template = "apiVersion: v1\nkind: PodTemplate\nmetadata: {name: t}\ntemplate:\n  spec: {priorityClassName: q}\n";
    assert_eq!(
        pod_json(template, &session(json!({})))["spec"]["priorityClassName"],
        "q"
    );
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                    "data": {"README": "x", "pod-template.yaml": "spec: {priorityClassName: r}\n"}});
    assert_eq!(
        pod_json(&cm.to_string(), &session(json!({})))["spec"]["priorityClassName"],
        "r"
    );
    let two = json!({"kind": "ConfigMap", "data": {"a": "{}", "b": "{}"}});
    assert_eq!(
        err(&two.to_string()),
        "ConfigMap: found keys [a, b]: keep one, or name it pod-template.yaml"
    );
    assert!(
        err("kind: Deployment\n").starts_with("kind \"Deployment\": expected a PodTemplateSpec")
    );
    assert_eq!(
        err("spec: {}\n---\nspec: {}\n"),
        "expected one object, found 2 documents"
    );
    assert!(
        err("spec: [").starts_with("invalid YAML"),
        "{}",
        err("spec: [")
    );
}

#[test]
fn a_field_the_pod_does_not_have_is_refused_by_path() {
    assert_eq!(
        err(
            "spec:\n  tolerationz: []\n  containers:\n  - {name: a, image: b, imagePullPolcy: Always}\n"
        ),
        "spec.containers[0].imagePullPolcy: unknown field; spec.tolerationz: unknown field"
    );
    assert_eq!(
        err("spec:\n  containers:\n  - name: a\n    ports: [{containerPort: http}]\n"),
        "spec.containers[0].ports[0].containerPort: invalid type: string \"http\", expected i32"
    );
    let cm = json!({"kind": "ConfigMap", "data": {"t": "spec: {hostNetwerk: true}"}});
    assert_eq!(
        err(&cm.to_string()),
        "data[t].spec.hostNetwerk: unknown field"
    );
}

#[test]
fn fields_the_reconciler_owns_are_refused_by_path() {
    for (template, want) in [
        (
            "spec: {restartPolicy: Always}",
            "spec.restartPolicy: Unsupported value: \"Always\": supported values: \"Never\" \
             (the reconciler retries a failed runner as a new attempt)",
        ),
        (
            "metadata: {name: x}",
            "metadata.name: Forbidden: set by the reconciler",
        ),
        (
            "metadata: {labels: {vteam.ambient-code/session: x}}",
            "metadata.labels[vteam.ambient-code/session]: Forbidden: set by the reconciler",
        ),
        (
            "metadata: {annotations: {vteam.ambient-code/repos: x}}",
            "metadata.annotations[vteam.ambient-code/repos]: Forbidden: set by the reconciler",
        ),
        (
            "spec:\n  containers:\n  - name: runner\n    env: [{name: A, value: b}, {name: INITIAL_PROMPT, value: x}]",
            "spec.containers[0].env[1].name: Forbidden: \"INITIAL_PROMPT\" is set by the reconciler (the runner contract)",
        ),
        (
            "spec:\n  containers:\n  - name: runner\n    readinessProbe: {exec: {command: [x]}}",
            "spec.containers[0].readinessProbe: Forbidden: set by the reconciler",
        ),
        (
            "spec:\n  containers:\n  - name: side\n    ports: [{containerPort: 8001}]",
            "spec.containers[0].ports[0]: Forbidden: port 8001 named \"http\" is the runner's, set by the reconciler",
        ),
        (
            "spec:\n  initContainers:\n  - name: runner",
            "spec.initContainers[0].name: Forbidden: the runner is the container named \"runner\" in spec.containers",
        ),
        (
            "spec:\n  containers:\n  - name: a\n  - name: a",
            "spec.containers[1].name: Duplicate value: \"a\"",
        ),
    ] {
        assert_eq!(err(template), want, "{template}");
    }
    let pt = "kind: PodTemplate\ntemplate: {spec: {restartPolicy: OnFailure}}";
    assert!(err(pt).starts_with("template.spec.restartPolicy: Unsupported value: \"OnFailure\""));
}

#[test]
fn the_restricted_profile_is_checked_on_the_pod_the_template_makes() {
    let restricted = |t: &str| match load(t, &base(), true) {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.to_string(),
    };
    assert_eq!(restricted(PLATFORM), "ok");
    for (template, want) in [
        (
            "spec: {hostNetwork: true}",
            "spec.hostNetwork: must be false: host namespaces",
        ),
        (
            "spec:\n  containers:\n  - {name: s, image: s, securityContext: {privileged: true}}",
            "spec.containers[0].securityContext.allowPrivilegeEscalation: must be false; \
             spec.containers[0].securityContext.privileged: must be false",
        ),
        (
            "spec:\n  volumes: [{name: h, hostPath: {path: /}}]",
            "spec.volumes[0].hostPath: volume type \"hostPath\" is not allowed: use one of configMap, \
             csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected, secret",
        ),
        (
            "spec: {securityContext: {runAsNonRoot: false}}",
            "spec.securityContext.runAsNonRoot: must not be false; \
             spec.containers[0].securityContext.runAsNonRoot: must be true (here or in spec.securityContext)",
        ),
        (
            "spec:\n  containers:\n  - {name: runner, securityContext: {runAsUser: 0}}",
            "spec.containers[0].securityContext.runAsUser: must not be 0",
        ),
        (
            "spec:\n  containers:\n  - {name: runner, securityContext: {capabilities: {add: [NET_ADMIN]}}}",
            "spec.containers[0].securityContext.capabilities.add[0]: capability \"NET_ADMIN\" is \
             not allowed: only NET_BIND_SERVICE",
        ),
        (
            "spec:\n  containers:\n  - {name: runner, ports: [{containerPort: 80, hostPort: 80}]}",
            "spec.containers[0].ports[0].hostPort: must not be set: host ports",
        ),
        (
            "spec: {securityContext: {seccompProfile: {type: Unconfined}}}",
            "spec.securityContext.seccompProfile.type: \"Unconfined\" is not allowed: use RuntimeDefault or Localhost",
        ),
        (
            "spec: {securityContext: {sysctls: [{name: kernel.msgmax, value: '1'}]}}",
            "spec.securityContext.sysctls[0].name: sysctl \"kernel.msgmax\" is not allowed",
        ),
    ] {
        let got = restricted(template);
        let want =
            format!("the runner pod it makes breaks the restricted Pod Security Standard: {want}");
        assert_eq!(got, want, "{template}");
    }
}

// A template a platform team might write: never touching an owned field.
fn arb_template() -> impl Strategy<Value = Value> {
    let name = "[a-z]{1,6}";
    let env = prop::collection::vec(("[A-Z]{2,6}_X", "[a-z0-9]{0,6}"), 0..3).prop_map(|v| {
        let mut seen = std::collections::BTreeSet::new();
        v.into_iter()
            .filter(|(n, _)| seen.insert(n.clone()))
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect::<Vec<_>>()
    });
    let resources = prop::option::of((1u32..4000, 1u32..64)).prop_map(|r| match r {
        Some((cpu, mem)) => json!({"requests": {"cpu": format!("{cpu}m")}, "limits": {"memory": format!("{mem}Gi")}}),
        None => Value::Null,
    });
    let sidecar = (name, "[a-z]{1,8}:[0-9]", env.clone(), resources.clone()).prop_map(
        |(n, image, env, res)| {
            let mut c = json!({"name": format!("side-{n}"), "image": image, "env": env,
                               "volumeMounts": [{"name": "work", "mountPath": "/w"}]});
            if !res.is_null() {
                c["resources"] = res;
            }
            c
        },
    );
    let runner = prop::option::of((
        prop::option::of("[a-z]{1,8}:[0-9]"),
        env,
        resources,
        any::<bool>(),
    ));
    (
        prop::collection::vec(sidecar, 0..3),
        runner,
        prop::collection::btree_map("[a-z]{1,5}", "[a-z0-9]{0,5}", 0..3),
        prop::option::of("[a-z]{1,8}"),
        prop::option::of(1000i64..2000),
        any::<bool>(),
        prop::collection::vec("[a-z]{1,5}", 0..3),
    )
        .prop_map(
            |(sidecars, runner, labels, sa, fs_group, tolerate, node_keys)| {
                let mut containers: Vec<Value> = Vec::new();
                let mut seen = std::collections::BTreeSet::new();
                for s in sidecars {
                    if seen.insert(s["name"].to_string()) {
                        containers.push(s);
                    }
                }
                if let Some((image, env, res, first)) = runner {
                    let mut r = json!({"name": "runner", "env": env,
                                       "volumeMounts": [{"name": "work", "mountPath": "/workspace"}]});
                    if let Some(i) = image {
                        r["image"] = json!(i);
                    }
                    if !res.is_null() {
                        r["resources"] = res;
                    }
                    if first {
                        containers.insert(0, r);
                    } else {
                        containers.push(r);
                    }
                }
                let mut spec = json!({
                    "containers": containers,
                    "volumes": [{"name": "work", "emptyDir": {}}],
                    "nodeSelector": node_keys.iter().map(|k| (k.clone(), json!("yes"))).collect::<serde_json::Map<_, _>>(),
                });
                if let Some(sa) = sa {
                    spec["serviceAccountName"] = json!(sa);
                }
                if let Some(g) = fs_group {
                    spec["securityContext"] = json!({"fsGroup": g});
                }
                if tolerate {
                    spec["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
                }
                json!({"metadata": {"labels": labels}, "spec": spec})
            },
        )
}

/// `want` is contained in `got`: objects by key, arrays as a prefix.
fn contained(want: &Value, got: &Value, path: &str) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().try_for_each(|(k, v)| match g.get(k) {
            Some(gv) => contained(v, gv, &format!("{path}.{k}")),
            None => Err(format!("{path}.{k} lost")),
        }),
        (Value::Array(w), Value::Array(g)) if w.len() <= g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .try_for_each(|(i, (v, gv))| contained(v, gv, &format!("{path}[{i}]"))),
        _ if want == got => Ok(()),
        _ => Err(format!("{path}: {want} became {got}")),
    }
}

proptest! {
    #[test]
    fn every_template_field_survives_and_every_owned_field_is_the_reconcilers(
        template in arb_template(),
        attempt in 1i64..5,
        sa in prop::option::of("[a-z]{1,8}"),
    ) {
        let text = serde_json::to_string(&template).expect("serializes");
        let cfg = load(&text, &base(), false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut s = session(json!({}));
        if let Some(sa) = &sa {
            s.metadata.annotations = Some([(crate::api::annotations::RUNNER_SA.to_owned(), sa.clone())].into());
        }
        let pod = runner_pod(&s, attempt, &cfg);
        let got = serde_json::to_value(&pod).expect("serializes");
        let mut kept = template.clone();
        if sa.is_some() && let Some(spec) = kept["spec"].as_object_mut() {
            spec.remove("serviceAccountName");
        }
        contained(&kept, &got, "").map_err(TestCaseError::fail)?;

        prop_assert_eq!(&got["metadata"]["name"], &json!(format!("s1-runner-{attempt}")));
        prop_assert_eq!(&got["metadata"]["namespace"], "team-a");
        prop_assert_eq!(got["metadata"]["ownerReferences"][0]["uid"].as_str(), Some("u-1"));
        prop_assert_eq!(pod_attempt(&pod), Some(attempt));
        prop_assert_eq!(&got["metadata"]["labels"][LABEL_SESSION], "s1");
        prop_assert_eq!(&got["spec"]["restartPolicy"], "Never");
        if let Some(sa) = &sa {
            prop_assert_eq!(got["spec"]["serviceAccountName"].as_str(), Some(sa.as_str()));
        }
        let runners: Vec<&Value> = got["spec"]["containers"].as_array().into_iter().flatten()
            .filter(|c| c["name"] == "runner").collect();
        prop_assert_eq!(runners.len(), 1);
        let runner = runners[0];
        let template_runner = template["spec"]["containers"].as_array().into_iter().flatten()
            .find(|c| c["name"] == "runner");
        let image = template_runner.and_then(|r| r.get("image")).cloned().unwrap_or(json!("runner:1"));
        prop_assert_eq!(&runner["image"], &image);
        prop_assert_eq!(&runner["readinessProbe"]["httpGet"]["port"], 8001);
        prop_assert!(runner["ports"].as_array().into_iter().flatten().any(|p| p["containerPort"] == 8001));
        // The reconciler's variables follow the template's, all of them.
        let bare = runner_pod(&s, attempt, &RunnerConfig { template: Default::default(), ..base() });
        let ours = serde_json::to_value(&bare).expect("serializes")["spec"]["containers"][0]["env"].clone();
        let env = runner["env"].as_array().cloned().unwrap_or_default();
        let template_env = template_runner.and_then(|r| r["env"].as_array()).map_or(0, Vec::len);
        for var in ours.as_array().into_iter().flatten() {
            let name = &var["name"];
            let from_template = env[..template_env].iter().any(|e| &e["name"] == name);
            prop_assert!(from_template || env[template_env..].contains(var), "{var} missing");
        }
        // Never BestEffort: the runner has a CPU and a memory figure.
        for r in ["cpu", "memory"] {
            prop_assert!(runner["resources"]["requests"].get(r).is_some() || runner["resources"]["limits"].get(r).is_some());
        }
        prop_assert_eq!(check_restricted(&cfg), Ok(()));
    }
}

#[test]
fn every_variable_the_runner_gets_from_the_reconciler_is_reserved() {
    let s = session(json!({"spec": {
        "llmSettings": {"model": "m", "temperature": 0.5, "maxTokens": 10},
        "timeout": 60, "inactivityTimeout": 60, "stopOnRunFinished": true, "autoPushOnComplete": true,
        "mcpServers": {}, "environmentVariables": {}
    }}));
    let mut s = s;
    s.spec.environment_variables = None;
    s.spec.timeout_seconds = Some(60);
    s.spec.inactivity_timeout_seconds = Some(60);
    s.spec.stop_on_run_finished = Some(true);
    s.spec.auto_push_on_complete = Some(true);
    let pod = runner_pod(&s, 1, &RunnerConfig::with_image("r"));
    let names: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|p| p.containers.iter())
        .flat_map(|c| c.env.iter().flatten())
        .map(|e| e.name.clone())
        .collect();
    assert!(names.len() >= 11, "{names:?}");
    for n in names {
        assert!(
            crate::api::runner_env::is_reserved(&n),
            "{n} is not reserved for V10"
        );
    }
}

#[test]
fn what_the_shipped_contract_sets_the_template_may_not() {
    let ambient = RunnerConfig::with_image("r");
    let refused = |text: &str| match load(text, &ambient, false) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    };
    for (template, want) in [
        (
            "spec: {serviceAccountName: mine}",
            "spec.serviceAccountName: Forbidden: set by the reconciler (the runner contract's service account)",
        ),
        (
            "spec:\n  volumes: [{name: runner-token, emptyDir: {}}]",
            "spec.volumes[0].name: Duplicate value: \"runner-token\" is the runner contract's token volume",
        ),
        (
            "spec:\n  containers:\n  - name: ambient-code-runner\n    env: [{name: AGENTIC_SESSION_NAME, value: x}]",
            "spec.containers[0].env[0].name: Forbidden: \"AGENTIC_SESSION_NAME\" is set by the reconciler (the runner contract)",
        ),
        (
            "spec:\n  containers:\n  - name: state-sync\n    env: [{name: SESSION_NAME, value: x}]",
            "spec.containers[0].env[0].name: Forbidden: \"SESSION_NAME\" is set by the reconciler (the runner contract)",
        ),
        (
            "spec:\n  containers:\n  - name: side\n    ports: [{containerPort: 8001}]",
            "spec.containers[0].ports[0]: Forbidden: port 8001 named \"agui\" is the runner's, set by the reconciler",
        ),
        (
            "metadata: {labels: {agentic-session: x}}",
            "metadata.labels[agentic-session]: Forbidden: set by the reconciler",
        ),
    ] {
        assert_eq!(refused(template), want, "{template}");
    }
    // A sidecar may set what the contract gives only other containers.
    let ok = "spec:\n  containers:\n  - name: side\n    image: s\n    env: [{name: AGENTIC_SESSION_NAME, value: x}]";
    assert!(load(ok, &ambient, false).is_ok());
}
