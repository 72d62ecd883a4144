//! The install YAML, offline: every kustomize overlay renders, every object
//! is a valid k8s-openapi type, and the properties the product depends on hold.

use std::collections::BTreeSet;
use std::process::Command;

use agentic_webhook::cli::check_args;
use agentic_webhook::cli::manifests::{DEFAULT_IMAGE, Render, render};
use agentic_webhook::lifecycle::template;
use agentic_webhook::lifecycle::world::RunnerConfig;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
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
        ("", "pods", "*", &["list", "watch", "create", "delete"]),
        ("", "services", "*", &["get", "list", "watch", "create"]),
        ("networking.k8s.io", "networkpolicies", "*", &["create"]),
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
    // Exactly what the controller calls (see lifecycle::controller).
    let cr: ClusterRole = find(docs, "ClusterRole", "agentic-reconciler");
    assert_eq!(flatten(&cr.rules.unwrap_or_default()), reconciler_rules());
    let lease: Role = find(docs, "Role", "agentic-reconciler-lease");
    assert_eq!(
        flatten(&lease.rules.unwrap_or_default()),
        rules(&[(
            "coordination.k8s.io",
            "leases",
            "*",
            &["get", "create", "patch"]
        )])
    );
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
    let base = RunnerConfig::with_image("runner:1");
    if let Err(e) = template::load(text, &base, true) {
        panic!("the shipped runner pod template: {e}");
    }
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
fn the_namespaced_overlay_grants_the_reconciler_nothing_cluster_wide() {
    let docs = kustomize("namespaced");
    check_types(&docs);
    check_webhook_configurations(&docs);
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(
            !docs
                .iter()
                .any(|d| d["kind"] == kind && d["metadata"]["name"] == "agentic-reconciler"),
            "{kind} left in"
        );
    }
    let mut bound = bindings_of(&docs, "agentic-reconciler");
    bound.sort();
    assert_eq!(bound, ["agentic-reconciler", "agentic-reconciler-lease"]);
    let role: Role = find(&docs, "Role", "agentic-reconciler");
    assert_eq!(role.metadata.namespace.as_deref(), Some("team-sessions"));
    assert_eq!(flatten(&role.rules.unwrap_or_default()), reconciler_rules());
    let binding: RoleBinding = find(&docs, "RoleBinding", "agentic-reconciler");
    assert_eq!(binding.metadata.namespace.as_deref(), Some("team-sessions"));
    // The reconciler watches exactly that namespace.
    let d: Deployment = find(&docs, "Deployment", "agentic-reconciler");
    let env = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.env)
        .unwrap_or_default();
    let watch = env
        .iter()
        .find(|e| e.name == "AGENTIC_WATCH_NAMESPACE")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.config_map_key_ref.as_ref())
        .map(|r| (r.name.clone(), r.key.clone()));
    assert_eq!(
        watch,
        Some((
            "agentic-reconciler-scope".to_owned(),
            "namespace".to_owned()
        ))
    );
    let scope = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "agentic-reconciler-scope")
        .unwrap_or_else(|| panic!("no scope ConfigMap"));
    assert_eq!(scope["data"]["namespace"], "team-sessions");
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
