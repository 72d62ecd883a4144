//! The install YAML, offline: every kustomize overlay renders, every object
//! is a valid k8s-openapi type, and the properties the product depends on hold.

use std::collections::BTreeSet;
use std::process::Command;

use agentic_webhook::cli::check_args;
use agentic_webhook::cli::manifests::{DEFAULT_IMAGE, Render, render};
use agentic_webhook::lifecycle::template;
use agentic_webhook::lifecycle::world::RunnerConfig;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const RECONCILER_SA: &str = "system:serviceaccount:agentic-system:agentic-reconciler";

fn kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", &format!("{ROOT}/manifests/{dir}")])
        .output()
        .unwrap_or_else(|e| panic!("kubectl is needed for these tests: {e}"));
    assert!(
        out.status.success(),
        "{dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Every object deserializes into its typed form.
fn check_types(docs: &[Value]) {
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or("");
        let name = d["metadata"]["name"].as_str().unwrap_or("");
        let res = match kind {
            "Namespace" => serde_json::from_value::<Namespace>(d.clone()).map(|_| ()),
            "CustomResourceDefinition" => {
                serde_json::from_value::<CustomResourceDefinition>(d.clone()).map(|_| ())
            }
            "ServiceAccount" => serde_json::from_value::<ServiceAccount>(d.clone()).map(|_| ()),
            "ClusterRole" => serde_json::from_value::<ClusterRole>(d.clone()).map(|_| ()),
            "ClusterRoleBinding" => {
                serde_json::from_value::<ClusterRoleBinding>(d.clone()).map(|_| ())
            }
            "Role" => serde_json::from_value::<Role>(d.clone()).map(|_| ()),
            "RoleBinding" => serde_json::from_value::<RoleBinding>(d.clone()).map(|_| ()),
            "Service" => serde_json::from_value::<Service>(d.clone()).map(|_| ()),
            "ConfigMap" => serde_json::from_value::<ConfigMap>(d.clone()).map(|_| ()),
            "Deployment" => serde_json::from_value::<Deployment>(d.clone()).map(|_| ()),
            "PodDisruptionBudget" => {
                serde_json::from_value::<PodDisruptionBudget>(d.clone()).map(|_| ())
            }
            "MutatingWebhookConfiguration" => {
                serde_json::from_value::<MutatingWebhookConfiguration>(d.clone()).map(|_| ())
            }
            "ValidatingWebhookConfiguration" => {
                serde_json::from_value::<ValidatingWebhookConfiguration>(d.clone()).map(|_| ())
            }
            "ValidatingAdmissionPolicy" => {
                serde_json::from_value::<ValidatingAdmissionPolicy>(d.clone()).map(|_| ())
            }
            "ValidatingAdmissionPolicyBinding" => {
                serde_json::from_value::<ValidatingAdmissionPolicyBinding>(d.clone()).map(|_| ())
            }
            // cert-manager types have no k8s-openapi binding; check their shape.
            "Issuer" | "Certificate" => {
                assert_eq!(d["apiVersion"], "cert-manager.io/v1", "{name}");
                assert!(d["spec"].is_object(), "{name}");
                Ok(())
            }
            other => panic!("unexpected kind {other} ({name})"),
        };
        res.unwrap_or_else(|e| panic!("{kind} {name}: {e}"));
    }
}

fn find<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str, name: &str) -> T {
    let d = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    serde_json::from_value(d.clone()).unwrap_or_else(|e| panic!("{e}"))
}

/// The first container's arguments as the kubelet passes them: `$(VAR)`
/// expanded from the container's env (literal values, and the pod's
/// namespace through the downward API).
fn args(d: &Deployment) -> Vec<String> {
    let Some(c) = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
    else {
        return Vec::new();
    };
    let namespace = d.metadata.namespace.clone().unwrap_or_default();
    let vars: Vec<(String, String)> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => match from.field_ref.as_ref()?.field_path.as_str() {
                    "metadata.namespace" => namespace.clone(),
                    _ => return None,
                },
                _ => return None,
            };
            Some((format!("$({})", e.name), value))
        })
        .collect();
    c.args
        .iter()
        .flatten()
        .map(|a| {
            vars.iter()
                .fold(a.clone(), |a, (var, value)| a.replace(var, value))
        })
        .collect()
}

fn check_webhook_deployment(docs: &[Value]) {
    let d: Deployment = find(docs, "Deployment", "agentic-webhook");
    let spec = d.spec.as_ref().unwrap_or_else(|| panic!("no spec"));
    assert!(spec.replicas.unwrap_or(1) >= 2, "at least two replicas");
    let pod = spec
        .template
        .spec
        .as_ref()
        .unwrap_or_else(|| panic!("no pod spec"));
    assert!(
        pod.topology_spread_constraints
            .as_ref()
            .is_some_and(|t| !t.is_empty())
    );
    let psc = pod
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("no pod securityContext"));
    assert_eq!(psc.run_as_non_root, Some(true));
    let c = &pod.containers[0];
    let sc = c
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("no securityContext"));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    let res = c
        .resources
        .as_ref()
        .unwrap_or_else(|| panic!("no resources"));
    assert!(res.requests.is_some() && res.limits.is_some());
    // The server sizes itself from the container's memory limit, and at the
    // shipped limit keeps the default body limits.
    let from = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "AGENTIC_MEMORY_LIMIT")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.resource_field_ref.as_ref())
        .unwrap_or_else(|| panic!("AGENTIC_MEMORY_LIMIT is not from the downward API"));
    assert_eq!(from.resource, "limits.memory");
    assert_eq!(from.container_name.as_deref(), Some(c.name.as_str()));
    let limit = res
        .limits
        .as_ref()
        .and_then(|l| l.get("memory"))
        .map(|q| agentic_webhook::quantity::value(&q.0).unwrap_or(0.0) as u64)
        .unwrap_or(0);
    let sized = agentic_webhook::server::budget::size(limit);
    let defaults = agentic_webhook::server::budget::UNLIMITED;
    assert_eq!(
        (sized.admission_body, sized.conversion_body),
        (defaults.admission_body, defaults.conversion_body),
        "the shipped limit keeps the default body limits"
    );
    // Ports and probe paths are the server's defaults (serve --addr :8443, --probe-addr :8080).
    let port = |name: &str| {
        c.ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    };
    assert_eq!(port("https"), Some(8443));
    assert_eq!(port("probes"), Some(8080));
    let a = args(&d);
    assert!(
        a.contains(&"--addr=0.0.0.0:8443".to_owned())
            && a.contains(&"--probe-addr=0.0.0.0:8080".to_owned())
    );
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| (h.path.clone().unwrap_or_default(), h.port.clone()))
    };
    assert_eq!(
        probe(&c.readiness_probe),
        Some(("/readyz".into(), IntOrString::String("probes".into())))
    );
    assert_eq!(
        probe(&c.liveness_probe),
        Some(("/healthz".into(), IntOrString::String("probes".into())))
    );
    // The reconciler's status writes pass V17.
    assert!(
        a.contains(&format!("--controller-user={RECONCILER_SA}")),
        "{a:?}"
    );
    check_args(&a).unwrap_or_else(|e| panic!("webhook args do not parse: {e}"));

    let pdb: PodDisruptionBudget = find(docs, "PodDisruptionBudget", "agentic-webhook");
    assert!(
        pdb.spec
            .as_ref()
            .and_then(|s| s.min_available.clone())
            .is_some()
    );
    let svc: Service = find(docs, "Service", "agentic-webhook");
    let p = &svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()[0];
    assert_eq!(
        (p.port, p.target_port.clone()),
        (443, Some(IntOrString::String("https".into())))
    );
}

fn check_webhook_configurations(docs: &[Value]) {
    let m: MutatingWebhookConfiguration =
        find(docs, "MutatingWebhookConfiguration", "agentic-webhook");
    let v: ValidatingWebhookConfiguration =
        find(docs, "ValidatingWebhookConfiguration", "agentic-webhook");
    let mw = &m.webhooks.unwrap_or_default()[0];
    let vw = &v.webhooks.unwrap_or_default()[0];
    assert_eq!(mw.name, agentic_webhook::cli::review_names::MUTATING);
    assert_eq!(vw.name, agentic_webhook::cli::review_names::VALIDATING);
    assert_eq!(mw.reinvocation_policy.as_deref(), Some("IfNeeded"));
    for (sfx, admission, timeout, policy, matching, cc, rules) in [
        (
            &mw.side_effects,
            &mw.admission_review_versions,
            mw.timeout_seconds,
            &mw.failure_policy,
            &mw.match_policy,
            &mw.client_config,
            mw.rules.clone().unwrap_or_default(),
        ),
        (
            &vw.side_effects,
            &vw.admission_review_versions,
            vw.timeout_seconds,
            &vw.failure_policy,
            &vw.match_policy,
            &vw.client_config,
            vw.rules.clone().unwrap_or_default(),
        ),
    ] {
        assert_eq!(sfx, "None");
        assert_eq!(admission, &vec!["v1".to_owned()]);
        assert_eq!(timeout, Some(5));
        assert_eq!(policy.as_deref(), Some("Fail"));
        assert_eq!(matching.as_deref(), Some("Equivalent"));
        let svc = cc.service.as_ref().unwrap_or_else(|| panic!("no service"));
        assert_eq!(
            (svc.name.as_str(), svc.namespace.as_str(), svc.port),
            ("agentic-webhook", "agentic-system", Some(443))
        );
        let r = &rules[0];
        assert_eq!(
            r.api_versions.clone().unwrap_or_default(),
            ["v1alpha1", "v1alpha2"]
        );
        assert_eq!(
            r.operations.clone().unwrap_or_default(),
            ["CREATE", "UPDATE"]
        );
    }
    assert_eq!(
        mw.client_config
            .service
            .as_ref()
            .and_then(|s| s.path.as_deref()),
        Some("/mutate")
    );
    assert_eq!(
        vw.client_config
            .service
            .as_ref()
            .and_then(|s| s.path.as_deref()),
        Some("/validate")
    );
    assert_eq!(
        mw.rules.clone().unwrap_or_default()[0]
            .resources
            .clone()
            .unwrap_or_default(),
        ["agenticsessions"]
    );
    assert_eq!(
        vw.rules.clone().unwrap_or_default()[0]
            .resources
            .clone()
            .unwrap_or_default(),
        ["agenticsessions", "agenticsessions/status"]
    );
    let crd: CustomResourceDefinition = find(
        docs,
        "CustomResourceDefinition",
        "agenticsessions.vteam.ambient-code",
    );
    let conv = crd
        .spec
        .conversion
        .and_then(|c| c.webhook)
        .and_then(|w| w.client_config)
        .and_then(|c| c.service);
    assert_eq!(conv.and_then(|s| s.path), Some("/convert".into()));
}

type Rules = BTreeSet<(String, String, String, String)>;

/// (apiGroup, resource, resourceName or *, verb)
fn flatten(rules: &[PolicyRule]) -> Rules {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in r.api_groups.clone().unwrap_or_default() {
            for res in r.resources.clone().unwrap_or_default() {
                let names = r.resource_names.clone().unwrap_or_else(|| vec!["*".into()]);
                for n in names {
                    for v in &r.verbs {
                        out.insert((g.clone(), res.clone(), n.clone(), v.clone()));
                    }
                }
            }
        }
    }
    out
}

fn rules(list: &[(&str, &str, &str, &[&str])]) -> Rules {
    let mut out = BTreeSet::new();
    for (g, r, n, verbs) in list {
        for v in *verbs {
            out.insert((
                (*g).to_owned(),
                (*r).to_owned(),
                (*n).to_owned(),
                (*v).to_owned(),
            ));
        }
    }
    out
}

/// What the reconciler calls, cluster-wide or in its one namespace.
fn reconciler_rules() -> Rules {
    rules(&[
        (
            "vteam.ambient-code",
            "agenticsessions",
            "*",
            &["get", "list", "watch", "patch"],
        ),
        (
            "vteam.ambient-code",
            "agenticsessions/status",
            "*",
            &["patch"],
        ),
        (
            "",
            "pods",
            "*",
            &["get", "list", "watch", "create", "delete"],
        ),
        ("", "services", "*", &["get", "list", "watch", "create"]),
        ("", "secrets", "*", &["create", "delete"]),
        // The runner contract's identity: account, token, binding.
        ("", "serviceaccounts", "*", &["get", "create"]),
        ("", "serviceaccounts/token", "*", &["create"]),
        (
            "rbac.authorization.k8s.io",
            "rolebindings",
            "*",
            &["get", "create"],
        ),
        (
            "rbac.authorization.k8s.io",
            "clusterroles",
            "ambient-session-runner",
            &["bind"],
        ),
        (
            "networking.k8s.io",
            "networkpolicies",
            "*",
            &["get", "list", "watch", "create", "patch"],
        ),
        ("events.k8s.io", "events", "*", &["create", "patch"]),
    ])
}

fn check_reconciler(docs: &[Value]) {
    let d: Deployment = find(docs, "Deployment", "agentic-reconciler");
    let pod = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("agentic-reconciler")
    );
    assert!(
        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) >= 2,
        "a standby replica"
    );
    check_args(&args(&d)).unwrap_or_else(|e| panic!("reconciler args do not parse: {e}"));
    check_runner_template(docs, &d);
    // Exactly what the controller calls (see lifecycle::controller), in
    // the watched namespace (base) or everywhere (cluster-wide component).
    let granted = match docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "agentic-reconciler")
    {
        Some(_) => find::<Role>(docs, "Role", "agentic-reconciler").rules,
        None => find::<ClusterRole>(docs, "ClusterRole", "agentic-reconciler").rules,
    };
    assert_eq!(flatten(&granted.unwrap_or_default()), reconciler_rules());
    let lease: Role = find(docs, "Role", "agentic-reconciler-lease");
    assert_eq!(
        flatten(&lease.rules.unwrap_or_default()),
        rules(&[
            (
                "coordination.k8s.io",
                "leases",
                "*",
                &["get", "create", "patch"]
            ),
            ("", "secrets", "agentic-reconciler-key", &["get"]),
            ("", "secrets", "*", &["create"]),
        ])
    );
}

/// The reconciler's Role, RoleBinding and watched namespace all name `ns`;
/// nothing grants it anything cluster-wide.
fn check_one_namespace(docs: &[Value], ns: &str) {
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(
            !docs
                .iter()
                .any(|d| d["kind"] == kind && d["metadata"]["name"] == "agentic-reconciler"),
            "{kind} left in"
        );
    }
    let mut bound = bindings_of(docs, "agentic-reconciler");
    bound.sort();
    assert_eq!(bound, ["agentic-reconciler", "agentic-reconciler-lease"]);
    assert_eq!(
        role_placement(docs),
        [ns, ns, "agentic-system"].map(String::from)
    );
    let d: Deployment = find(docs, "Deployment", "agentic-reconciler");
    assert_eq!(
        watch_env(&d),
        Some((
            "agentic-reconciler-scope".to_owned(),
            "namespace".to_owned()
        ))
    );
    let scope = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "agentic-reconciler-scope")
        .unwrap_or_else(|| panic!("no scope ConfigMap"));
    assert_eq!(scope["data"]["namespace"], ns);
}

/// The namespaces of the reconciler's Role, its RoleBinding, and the
/// ServiceAccount the binding names.
fn role_placement(docs: &[Value]) -> [String; 3] {
    let role: Role = find(docs, "Role", "agentic-reconciler");
    let binding: RoleBinding = find(docs, "RoleBinding", "agentic-reconciler");
    let subject = binding
        .subjects
        .unwrap_or_default()
        .first()
        .and_then(|s| s.namespace.clone());
    [role.metadata.namespace, binding.metadata.namespace, subject].map(Option::unwrap_or_default)
}

/// Where AGENTIC_WATCH_NAMESPACE comes from: (ConfigMap, key).
fn watch_env(d: &Deployment) -> Option<(String, String)> {
    let env = d
        .spec
        .clone()
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.env)
        .unwrap_or_default();
    env.iter()
        .find(|e| e.name == "AGENTIC_WATCH_NAMESPACE")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.config_map_key_ref.as_ref())
        .map(|r| (r.name.clone(), r.key.clone()))
}

/// `kubectl kustomize` of an overlay written under target/ over the base.
fn overlay(name: &str, kustomization: &str) -> Vec<Value> {
    let dir = std::path::Path::new(ROOT).join(format!("target/kustomize-overlays/{name}"));
    std::fs::create_dir_all(&dir).expect("overlay dir");
    // As docs/operations.md says: an overlay that sets `namespace:` copies
    // the base's namespace-replacements.yaml beside it.
    std::fs::copy(
        format!("{ROOT}/manifests/base/namespace-replacements.yaml"),
        dir.join("namespace-replacements.yaml"),
    )
    .expect("replacements copied");
    std::fs::write(dir.join("kustomization.yaml"), kustomization).expect("overlay written");
    kustomize(&format!("../target/kustomize-overlays/{name}"))
}

/// The same documents, in the same order; on a difference, the first one.
fn assert_same(left: &[Value], right: &[Value], what: &str) {
    let id = |d: &Value| format!("{} {}", d["kind"], d["metadata"]["name"]);
    let l: Vec<String> = left.iter().map(id).collect();
    let r: Vec<String> = right.iter().map(id).collect();
    assert_eq!(l, r, "{what}: objects");
    if let Some((a, b)) = left.iter().zip(right).find(|(a, b)| a != b) {
        panic!(
            "{what}: {} differs\n{}\n---\n{}",
            id(a),
            serde_json::to_string_pretty(a).unwrap_or_default(),
            serde_json::to_string_pretty(b).unwrap_or_default()
        );
    }
}

/// The CLI's render with the base's defaults and these scope flags.
fn cli(watch_namespace: Option<&str>, cluster_wide: bool) -> Vec<Value> {
    render(&Render {
        ca_pem: None,
        url: None,
        image: DEFAULT_IMAGE.into(),
        match_conditions: true,
        watch_namespace: watch_namespace.map(str::to_owned),
        cluster_wide,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The shipped runner pod template is mounted where the flag says, loads,
/// and makes a pod the restricted profile admits.
fn check_runner_template(docs: &[Value], d: &Deployment) {
    let args = args(d);
    assert!(args.iter().any(|a| a == "--require-restricted"), "{args:?}");
    let path = args
        .iter()
        .find_map(|a| a.strip_prefix("--runner-pod-template="))
        .unwrap_or_else(|| panic!("no --runner-pod-template in {args:?}"));
    let (dir, key) = path.rsplit_once('/').unwrap_or(("", path));
    let pod = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let mount = pod
        .containers
        .first()
        .and_then(|c| c.volume_mounts.as_ref())
        .and_then(|m| m.iter().find(|m| m.mount_path == dir))
        .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.config_map.as_ref())
        .unwrap_or_else(|| panic!("{} is not a ConfigMap volume", mount.name));
    let cm: ConfigMap = find(docs, "ConfigMap", &volume.name);
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("ConfigMap {} has no key {key}", volume.name));
    // The contract beside it, where its flag says.
    let contract_path = args
        .iter()
        .find_map(|a| a.strip_prefix("--runner-contract="))
        .unwrap_or_else(|| panic!("no --runner-contract in {args:?}"));
    let (contract_dir, contract_key) = contract_path.rsplit_once('/').unwrap_or(("", path));
    assert_eq!(
        contract_dir, dir,
        "the contract is mounted beside the template"
    );
    let contract_text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(contract_key))
        .unwrap_or_else(|| panic!("ConfigMap {} has no key {contract_key}", volume.name));
    let base = RunnerConfig::with_image("runner:1");
    let cfg = template::load_pair(Some(text), Some(contract_text), &base, true)
        .unwrap_or_else(|e| panic!("the shipped runner pod template and contract: {e}"));
    assert_eq!(cfg.contract.name, "ambient-runner@0b59fe7");
    // The whole ConfigMap is accepted too (`--runner-pod-template cm.yaml`).
    let whole = serde_json::to_string(&cm).expect("serializes");
    if let Err(e) = template::load(&whole, &base, true) {
        panic!("the shipped runner pod template as a ConfigMap: {e}");
    }
}

fn bindings_of(docs: &[Value], sa: &str) -> Vec<String> {
    docs.iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
        .filter(|d| {
            d["subjects"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["name"] == sa))
        })
        .map(|d| d["roleRef"]["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn the_base_renders_and_holds_every_property() {
    let docs = kustomize("base");
    check_types(&docs);
    check_webhook_deployment(&docs);
    check_webhook_configurations(&docs);
    check_reconciler(&docs);
    // The webhook serves from a mounted Secret and calls no API.
    assert!(bindings_of(&docs, "agentic-webhook").is_empty());
    let sa: ServiceAccount = find(&docs, "ServiceAccount", "agentic-webhook");
    assert_eq!(sa.automount_service_account_token, Some(false));
}

#[test]
fn the_base_reconciler_acts_in_one_namespace_and_the_cli_renders_what_kustomize_does() {
    let base = kustomize("base");
    check_one_namespace(&base, "agentic-sessions");
    assert_same(
        &cli(None, false),
        &base,
        "manifests vs kubectl kustomize base",
    );

    // Another namespace: one value in an overlay, or one flag.
    let moved = overlay(
        "team-sessions",
        "resources:\n- ../../../manifests/base\nreplacements:\n- path: namespace-replacements.yaml\npatches:\n- patch: |-\n    apiVersion: v1\n    kind: ConfigMap\n    metadata:\n      name: agentic-reconciler-scope\n      namespace: agentic-system\n    data:\n      namespace: team-sessions\n",
    );
    check_types(&moved);
    check_reconciler(&moved);
    check_one_namespace(&moved, "team-sessions");
    assert_same(
        &cli(Some("team-sessions"), false),
        &moved,
        "--watch-namespace",
    );
}

#[test]
fn the_cluster_wide_component_grants_the_same_verbs_everywhere() {
    let docs = overlay(
        "cluster-wide",
        "resources:\n- ../../../manifests/base\ncomponents:\n- ../../../manifests/components/cluster-wide-reconciler\n",
    );
    check_types(&docs);
    check_reconciler(&docs);
    for (kind, name) in [
        ("Role", "agentic-reconciler"),
        ("RoleBinding", "agentic-reconciler"),
        ("ConfigMap", "agentic-reconciler-scope"),
    ] {
        assert!(
            !docs
                .iter()
                .any(|d| d["kind"] == kind && d["metadata"]["name"] == name),
            "{kind} {name} left in"
        );
    }
    let mut bound = bindings_of(&docs, "agentic-reconciler");
    bound.sort();
    assert_eq!(bound, ["agentic-reconciler", "agentic-reconciler-lease"]);
    let d: Deployment = find(&docs, "Deployment", "agentic-reconciler");
    assert_eq!(watch_env(&d), None, "watches every namespace");
    // The admission policies still bound what it creates.
    assert!(docs.iter().any(|d| d["kind"] == "ValidatingAdmissionPolicy"
        && d["metadata"]["name"] == "agentic-reconciler-creates"));
    assert_same(&cli(None, true), &docs, "--cluster-wide vs the overlay");
}

#[test]
fn the_admission_policies_follow_the_install_namespace() {
    let docs = overlay(
        "elsewhere",
        "namespace: platform-webhooks\nresources:\n- ../../../manifests/base\nreplacements:\n- path: namespace-replacements.yaml\n",
    );
    check_types(&docs);
    let vars = |name: &str| -> Vec<String> {
        docs.iter()
            .find(|d| d["kind"] == "ValidatingAdmissionPolicy" && d["metadata"]["name"] == name)
            .and_then(|d| d["spec"]["variables"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|v| v["name"] == "reconciler" || v["name"] == "home")
            .map(|v| v["expression"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(
        vars("agentic-runner-objects"),
        ["'system:serviceaccount:platform-webhooks:agentic-reconciler'"]
    );
    assert_eq!(
        vars("agentic-reconciler-creates"),
        [
            "'system:serviceaccount:platform-webhooks:agentic-reconciler'",
            "'platform-webhooks'"
        ]
    );
    // The reconciler still acts in the watched namespace, as itself.
    assert_eq!(
        role_placement(&docs),
        ["agentic-sessions", "agentic-sessions", "platform-webhooks"].map(String::from)
    );
}

#[test]
fn every_flavour_lists_the_same_namespace_replacements() {
    let read = |f: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(format!("{ROOT}/manifests/{f}"))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    let base = read("base/namespace-replacements.yaml");
    assert_eq!(read("self-managed/namespace-replacements.yaml"), base);
    let cert_manager = read("cert-manager/namespace-replacements.yaml");
    assert!(
        cert_manager.ends_with(&base),
        "cert-manager/namespace-replacements.yaml ends with the base's entries"
    );
}

#[test]
fn the_cert_manager_overlay_injects_and_mounts_the_issued_certificate() {
    let docs = kustomize("cert-manager");
    check_types(&docs);
    check_webhook_deployment(&docs);
    check_webhook_configurations(&docs);
    for (kind, name) in [
        ("MutatingWebhookConfiguration", "agentic-webhook"),
        ("ValidatingWebhookConfiguration", "agentic-webhook"),
        (
            "CustomResourceDefinition",
            "agenticsessions.vteam.ambient-code",
        ),
    ] {
        let d = docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            d["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "agentic-system/agentic-webhook-serving",
            "{kind}"
        );
    }
    let cert = docs
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["metadata"]["name"] == "agentic-webhook-serving")
        .cloned()
        .unwrap_or_default();
    let dep: Deployment = find(&docs, "Deployment", "agentic-webhook");
    let secret = dep
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.volumes)
        .and_then(|v| v.into_iter().find(|v| v.name == "tls"))
        .and_then(|v| v.secret)
        .and_then(|s| s.secret_name);
    assert_eq!(cert["spec"]["secretName"].as_str(), secret.as_deref());
    assert!(
        cert["spec"]["dnsNames"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n == "agentic-webhook.agentic-system.svc"))
    );
}

#[test]
fn the_self_managed_overlay_grants_exactly_what_manage_certs_calls() {
    let docs = kustomize("self-managed");
    check_types(&docs);
    check_webhook_deployment(&docs);
    check_webhook_configurations(&docs);
    let dep: Deployment = find(&docs, "Deployment", "agentic-webhook");
    let a = args(&dep);
    assert!(a.contains(&"--manage-certs".to_owned()));
    assert!(!a.iter().any(|x| x.starts_with("--tls-cert")));
    let pod = dep.spec.and_then(|s| s.template.spec).unwrap_or_default();
    assert!(
        pod.volumes.is_none(),
        "no mounted Secret: the certificate lives in memory"
    );
    assert_eq!(pod.automount_service_account_token, Some(true));
    let role: Role = find(&docs, "Role", "agentic-webhook-certs");
    assert_eq!(
        flatten(&role.rules.unwrap_or_default()),
        rules(&[
            ("", "secrets", "*", &["create"]),
            ("", "secrets", "agentic-webhook-ca", &["get", "update"]),
        ])
    );
    let cr: ClusterRole = find(&docs, "ClusterRole", "agentic-webhook-ca-injector");
    assert_eq!(
        flatten(&cr.rules.unwrap_or_default()),
        rules(&[
            (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                "agentic-webhook",
                &["get", "patch"]
            ),
            (
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                "agentic-webhook",
                &["get", "patch"]
            ),
            (
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "agenticsessions.vteam.ambient-code",
                &["get", "patch"]
            ),
        ])
    );
    let mut bound = bindings_of(&docs, "agentic-webhook");
    bound.sort();
    assert_eq!(
        bound,
        ["agentic-webhook-ca-injector", "agentic-webhook-certs"]
    );
}

#[test]
fn the_base_crd_is_the_canonical_crd() {
    let canonical =
        std::fs::read_to_string(format!("{ROOT}/manifests/crd.yaml")).expect("readable");
    let copy =
        std::fs::read_to_string(format!("{ROOT}/manifests/base/crd.yaml")).expect("readable");
    assert!(
        canonical == copy,
        "kustomize cannot load files outside a kustomization; copy manifests/crd.yaml to manifests/base/crd.yaml"
    );
}

#[test]
fn the_manifests_command_renders_the_base_with_the_ca_bundle() {
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let docs = render(&Render {
        ca_pem: Some(ca.into()),
        url: None,
        image: DEFAULT_IMAGE.into(),
        match_conditions: true,
        watch_namespace: None,
        cluster_wide: false,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // Same objects as kustomize renders, in the same order.
    let ids = |docs: &[Value]| -> Vec<(String, String)> {
        docs.iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap_or("").to_owned(),
                    d["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let kustomized = kustomize("base");
    assert_eq!(ids(&docs), ids(&kustomized));
    // The kustomization's image is the one the binary defaults to.
    let image = |docs: &[Value]| -> Vec<String> {
        docs.iter()
            .filter(|d| d["kind"] == "Deployment")
            .map(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(image(&docs), image(&kustomized));
    check_types(&docs);
    check_webhook_deployment(&docs);
    check_webhook_configurations(&docs);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
    let bundles: Vec<&Value> = docs
        .iter()
        .flat_map(|d| match d["kind"].as_str() {
            Some("MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration") => {
                d["webhooks"]
                    .as_array()
                    .map(|w| w.iter().map(|w| &w["clientConfig"]["caBundle"]).collect())
                    .unwrap_or_default()
            }
            Some("CustomResourceDefinition") => {
                vec![&d["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"]]
            }
            _ => vec![],
        })
        .collect();
    assert_eq!(bundles.len(), 3);
    assert!(bundles.iter().all(|b| **b == Value::String(b64.clone())));
}

#[test]
fn the_manifests_command_can_point_at_a_server_outside_the_cluster() {
    let docs = render(&Render {
        ca_pem: None,
        url: Some("https://192.168.1.10:8443".into()),
        image: "x".into(),
        match_conditions: true,
        watch_namespace: None,
        cluster_wide: false,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let m = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        m["webhooks"][0]["clientConfig"],
        serde_json::json!({"url": "https://192.168.1.10:8443/mutate"})
    );
    let crd = docs
        .iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        crd["spec"]["conversion"]["webhook"]["clientConfig"]["url"],
        "https://192.168.1.10:8443/convert"
    );
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "agentic-webhook")
    );
    assert!(
        docs.iter()
            .any(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "agentic-reconciler")
    );
    check_types(&docs);
    assert!(
        render(&Render {
            ca_pem: None,
            url: Some("http://x:1".into()),
            image: "x".into(),
            match_conditions: true,
            watch_namespace: None,
            cluster_wide: false,
        })
        .is_err()
    );
}

#[test]
fn the_image_runs_as_the_user_the_manifests_require_and_links_statically() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile"))
        .unwrap_or_else(|e| panic!("Dockerfile: {e}"));
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "multi-stage build");
    assert!(dockerfile.contains("+crt-static"), "static binary");
    assert!(dockerfile.contains("--locked"), "built from Cargo.lock");
    let last_from = dockerfile
        .lines()
        .rfind(|l| l.starts_with("FROM "))
        .unwrap_or_default();
    assert!(
        last_from.contains("distroless/static"),
        "final stage carries no libc or shell: {last_from}"
    );
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .unwrap_or_else(|| panic!("no USER"));
    assert_eq!(user, "USER 65532:65532");

    for (dir, name) in [("base", "agentic-webhook"), ("base", "agentic-reconciler")] {
        let docs = kustomize(dir);
        let d: Deployment = find(&docs, "Deployment", name);
        let psc = d
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.security_context)
            .unwrap_or_else(|| panic!("{name}: no pod securityContext"));
        assert_eq!(psc.run_as_user, Some(65532), "{name}");
        assert_eq!(psc.run_as_non_root, Some(true), "{name}");
    }
    let ports: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .collect();
    assert_eq!(
        ports,
        ["8443 8080 8081"],
        "serve, its probes, reconciler probes"
    );
}

/// The webhook configurations of `docs`, by kind.
fn webhook_configurations(docs: &[Value]) -> Vec<(String, Value)> {
    docs.iter()
        .filter(|d| {
            d["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("WebhookConfiguration"))
        })
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or("").to_owned(),
                d["webhooks"][0].clone(),
            )
        })
        .collect()
}

#[test]
fn match_conditions_ship_in_the_base_and_come_off_for_older_clusters() {
    let base = kustomize("base");
    let with: Vec<_> = webhook_configurations(&base);
    assert_eq!(with.len(), 2);
    for (kind, hook) in &with {
        let conditions = hook["matchConditions"].as_array().expect("matchConditions");
        assert_eq!(conditions.len(), 1, "{kind}");
        assert!(
            conditions[0]["expression"]
                .as_str()
                .is_some_and(|e| e.len() > 100),
            "{kind}"
        );
    }

    // The component, in an overlay over the base.
    let dir = std::path::Path::new(ROOT).join("target/kustomize-overlays/no-match-conditions");
    std::fs::create_dir_all(&dir).expect("overlay dir");
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources:\n- ../../../manifests/base\ncomponents:\n- ../../../manifests/components/no-match-conditions\n",
    )
    .expect("overlay written");
    let out = Command::new("kubectl")
        .args(["kustomize", dir.to_str().expect("UTF-8 path")])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let without: Vec<Value> =
        serde_saphyr::from_multiple::<Value>(&String::from_utf8_lossy(&out.stdout))
            .expect("YAML")
            .into_iter()
            .filter(|d| !d.is_null())
            .collect();
    let rendered = render(&Render {
        ca_pem: None,
        url: None,
        image: DEFAULT_IMAGE.into(),
        match_conditions: false,
        watch_namespace: None,
        cluster_wide: false,
    })
    .expect("renders");
    for docs in [&without, &rendered] {
        let hooks = webhook_configurations(docs);
        assert_eq!(hooks.len(), 2);
        for ((kind, hook), (_, original)) in hooks.iter().zip(&with) {
            assert!(hook.get("matchConditions").is_none(), "{kind}: {hook}");
            // Nothing else changes.
            let mut stripped = original.clone();
            stripped
                .as_object_mut()
                .map(|o| o.remove("matchConditions"));
            let mut h = hook.clone();
            h.as_object_mut().map(|o| o.remove("clientConfig"));
            stripped.as_object_mut().map(|o| o.remove("clientConfig"));
            assert_eq!(h, stripped, "{kind}");
        }
    }
}

/// policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy, the fields the
/// component uses, strictly (k8s-openapi has no binding for it): a typo or
/// a field of another version fails here rather than on the cluster.
mod anp {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct AdminNetworkPolicy {
        pub api_version: String,
        pub kind: String,
        pub metadata: serde_json::Value,
        pub spec: Spec,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Spec {
        pub priority: i32,
        pub subject: Peer,
        #[serde(default)]
        pub ingress: Vec<Rule>,
        #[serde(default)]
        pub egress: Vec<Rule>,
    }
    /// Exactly one field set (the API's minProperties/maxProperties 1).
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Peer {
        pub namespaces: Option<Selector>,
        pub pods: Option<Pods>,
        pub networks: Option<Vec<String>>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Pods {
        pub namespace_selector: Selector,
        pub pod_selector: Selector,
    }
    #[derive(Deserialize, Default, PartialEq, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Selector {
        #[serde(default)]
        pub match_labels: BTreeMap<String, String>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rule {
        pub name: String,
        pub action: String,
        #[serde(default)]
        pub from: Vec<Peer>,
        #[serde(default)]
        pub to: Vec<Peer>,
        #[serde(default)]
        pub ports: Vec<Port>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Port {
        pub port_number: PortNumber,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PortNumber {
        pub port: i32,
        pub protocol: String,
    }

    impl Peer {
        pub fn fields_set(&self) -> usize {
            usize::from(self.namespaces.is_some())
                + usize::from(self.pods.is_some())
                + usize::from(self.networks.is_some())
        }
    }
}

#[test]
fn the_admin_network_policy_component_holds_the_runner_port_and_metadata_whatever_tenants_allow() {
    use agentic_webhook::lifecycle::world::{METADATA_CIDRS, runner_selector};
    let docs = overlay(
        "admin-network-policy",
        "namespace: platform-webhooks\nresources:\n- ../../../manifests/base\ncomponents:\n- ../../../manifests/components/admin-network-policy\nreplacements:\n- path: namespace-replacements.yaml\n",
    );
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "AdminNetworkPolicy")
        .collect();
    assert_eq!(found.len(), 1);
    let p: anp::AdminNetworkPolicy = serde_json::from_value(found[0].clone())
        .unwrap_or_else(|e| panic!("AdminNetworkPolicy: {e}"));
    assert_eq!(p.api_version, "policy.networking.k8s.io/v1alpha1");
    assert_eq!(p.kind, "AdminNetworkPolicy");
    // Cluster-scoped; kustomize, not knowing the kind, gives it the
    // overlay's `namespace:`, which kubectl drops for cluster-scoped kinds.
    assert_eq!(p.metadata["name"], "agentic-runners");
    assert!((0..=1000).contains(&p.spec.priority));
    // The subject is every runner pod, as the reconciler's policies select them.
    assert_eq!(p.spec.subject.fields_set(), 1);
    let pods = p.spec.subject.pods.as_ref().expect("pods subject");
    assert_eq!(pods.namespace_selector, anp::Selector::default());
    let selector = runner_selector().match_labels.unwrap_or_default();
    assert_eq!(pods.pod_selector.match_labels, selector);
    for rule in p.spec.ingress.iter().chain(&p.spec.egress) {
        assert!(["Allow", "Deny", "Pass"].contains(&rule.action.as_str()));
        assert!(rule.name.len() <= 100);
        assert!(
            rule.from
                .iter()
                .chain(&rule.to)
                .all(|peer| peer.fields_set() == 1),
            "{}: exactly one field per peer",
            rule.name
        );
    }
    // Ingress on the runner port: the reconciler (in the install's
    // namespace, which followed `namespace:`), the platform, then nobody.
    let actions: Vec<(&str, &str)> = p
        .spec
        .ingress
        .iter()
        .map(|r| (r.name.as_str(), r.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("reconciler-to-runner", "Allow"),
            ("platform-to-runner", "Allow"),
            ("nobody-else-to-runner", "Deny")
        ]
    );
    for r in &p.spec.ingress {
        let ports: Vec<(i32, &str)> = r
            .ports
            .iter()
            .map(|p| (p.port_number.port, p.port_number.protocol.as_str()))
            .collect();
        assert_eq!(
            ports,
            [(agentic_webhook::lifecycle::contract::AMBIENT.port, "TCP")],
            "{}",
            r.name
        );
    }
    let reconciler = p.spec.ingress[0].from[0].pods.as_ref().expect("pods peer");
    assert_eq!(
        reconciler.namespace_selector.match_labels["kubernetes.io/metadata.name"],
        "platform-webhooks"
    );
    assert_eq!(
        reconciler.pod_selector.match_labels["app.kubernetes.io/name"],
        "agentic-reconciler"
    );
    assert_eq!(
        p.spec.ingress[2].from[0].namespaces,
        Some(anp::Selector::default()),
        "denied from every namespace"
    );
    // Egress to the metadata addresses: denied, the reconciler's own list.
    assert_eq!(p.spec.egress.len(), 1);
    assert_eq!(p.spec.egress[0].action, "Deny");
    assert_eq!(
        p.spec.egress[0].to[0].networks.as_deref(),
        Some(
            METADATA_CIDRS
                .iter()
                .map(|c| (*c).to_owned())
                .collect::<Vec<_>>()
                .as_slice()
        )
    );
}
