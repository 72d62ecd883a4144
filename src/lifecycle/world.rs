//! Between kube objects and the planner: build the runner Pod and Service a
//! session owns, and read an observed Pod back into a [`PodView`]. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Pod,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext, Service,
    ServiceAccount, ServiceAccountTokenProjection, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::KIND;
use crate::api::annotations::RUNNER_SA;
use crate::api::resource::AgenticSession;
use crate::api::v1alpha2::{API_VERSION, Repo};

use super::contract::{self, Contract, Rendered, TokenFile};
use super::mark::{MARK, Marker};
use super::plan::{PodPhase, PodView, RunnerState, pod_name, service_name};

pub const LABEL_SESSION: &str = "vteam.ambient-code/session";
pub const LABEL_ATTEMPT: &str = "vteam.ambient-code/attempt";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "agentic-webhook";
pub const ANNOTATION_REPOS: &str = "vteam.ambient-code/repos";
pub const ANNOTATION_GENERATION: &str = "vteam.ambient-code/generation";
/// Which container `kubectl logs/exec` picks when none is named; the
/// reconciler names the runner here, and reads it back ([`pod_view`]).
pub const ANNOTATION_DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
const LABEL_NAME: &str = "app.kubernetes.io/name";

/// Labels on the runner pod that only the reconciler sets.
pub const OWNED_LABELS: &[&str] = &[LABEL_NAME, LABEL_MANAGED_BY, LABEL_SESSION, LABEL_ATTEMPT];

/// How runner pods are made: the platform team's template (checked by
/// [`super::template::load`]) and runner contract ([`super::contract`]),
/// the image and the resources for a runner container that names none.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub image: String,
    pub template: PodTemplateSpec,
    pub contract: Arc<Contract>,
    /// CPU request of the runner container when the template sets none.
    pub cpu: Option<Quantity>,
    /// Memory request and limit of the runner container when the template sets neither.
    pub memory: Option<Quantity>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            image: String::new(),
            template: PodTemplateSpec::default(),
            contract: Arc::new(contract::AMBIENT.clone()),
            cpu: None,
            memory: None,
        }
    }
}

impl RunnerConfig {
    /// No template, no default resources, the shipped contract: a bare
    /// runner pod from `image`.
    pub fn with_image(image: impl Into<String>) -> Self {
        RunnerConfig {
            image: image.into(),
            ..RunnerConfig::default()
        }
    }
}

fn owner(session: &AgenticSession) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        name: session.metadata.name.clone().unwrap_or_default(),
        uid: session.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn labels(session: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "agentic-runner".to_owned(),
        ),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_SESSION.to_owned(), session.to_owned()),
    ])
}

fn env_var(name: &str, rendered: Rendered) -> EnvVar {
    match rendered {
        Rendered::Value(v) => EnvVar {
            name: name.to_owned(),
            value: Some(v),
            value_from: None,
        },
        Rendered::Secret { name: secret, key } => EnvVar {
            name: name.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret,
                    key,
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        },
    }
}

/// One container's environment: the template's, then what the contract
/// gives this container from the session, then (where the contract says
/// so) the session's own variables. A session variable never replaces
/// one already set, nor sets a name the contract reserves or one that
/// steers processes (V10 refuses both; this holds without it).
fn container_env(
    template: &[EnvVar],
    given: Vec<(String, Rendered)>,
    session_vars: Option<&BTreeMap<String, String>>,
    reserved: &BTreeSet<String>,
) -> Vec<EnvVar> {
    let mut all = template.to_vec();
    for (name, rendered) in given {
        if !all.iter().any(|e| e.name == name) {
            all.push(env_var(&name, rendered));
        }
    }
    for (k, v) in session_vars.into_iter().flatten() {
        let taken = all.iter().any(|e| &e.name == k);
        if !taken && !reserved.contains(k) && crate::api::runner_env::refused(k).is_none() {
            all.push(env_var(k, Rendered::Value(v.clone())));
        }
    }
    all
}

/// What the restricted profile asks of every container, where the template
/// is silent.
fn restrict(c: &mut Container) {
    let sc = c
        .security_context
        .get_or_insert_with(SecurityContext::default);
    let caps = sc.capabilities.get_or_insert_with(Capabilities::default);
    caps.drop.get_or_insert_with(|| vec!["ALL".into()]);
    // The apiserver refuses `false` beside privileged or CAP_SYS_ADMIN.
    let sys_admin = caps
        .add
        .iter()
        .flatten()
        .any(|c| c == "SYS_ADMIN" || c == "CAP_SYS_ADMIN");
    if sc.privileged != Some(true) && !sys_admin {
        sc.allow_privilege_escalation.get_or_insert(false);
    }
}

/// The runner's resources where the template names none, so it is never
/// BestEffort: CPU as a request (no throttling), memory as request and
/// limit (no overcommit of the node).
fn default_resources(c: &mut Container, cfg: &RunnerConfig) {
    for (name, q, limit) in [("cpu", &cfg.cpu, false), ("memory", &cfg.memory, true)] {
        let Some(q) = q else { continue };
        let r = c
            .resources
            .get_or_insert_with(ResourceRequirements::default);
        let named = |m: &Option<BTreeMap<String, Quantity>>| {
            m.as_ref().is_some_and(|m| m.contains_key(name))
        };
        if named(&r.requests) || named(&r.limits) {
            continue;
        }
        r.requests
            .get_or_insert_with(BTreeMap::new)
            .insert(name.to_owned(), q.clone());
        if limit {
            r.limits
                .get_or_insert_with(BTreeMap::new)
                .insert(name.to_owned(), q.clone());
        }
    }
}

/// The runner pod of `attempt`: the template, with what the reconciler owns
/// and what the contract asks filled in from the session's current spec.
pub fn runner_pod(session: &AgenticSession, attempt: i64, cfg: &RunnerConfig) -> Pod {
    let c = &cfg.contract;
    let name = session.metadata.name.clone().unwrap_or_default();
    let ns = session.metadata.namespace.clone().unwrap_or_default();
    let doc = c.doc(session, attempt);
    let repos = session.spec.repos.clone().unwrap_or_default();
    let repos_json = serde_json::to_string(&repos).unwrap_or_else(|_| "[]".into());
    let template = &cfg.template;
    let mut meta = template.metadata.clone().unwrap_or_default();
    let mut spec = template.spec.clone().unwrap_or_default();

    meta.name = Some(pod_name(&name, attempt));
    meta.namespace = Some(ns);
    meta.owner_references = Some(vec![owner(session)]);
    let pod_labels = meta.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in &c.pod_labels {
        pod_labels.insert(k.clone(), v.render(&name));
    }
    pod_labels.extend(labels(&name));
    pod_labels.insert(LABEL_ATTEMPT.to_owned(), attempt.to_string());
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(ANNOTATION_REPOS.to_owned(), repos_json);
    annotations.insert(
        ANNOTATION_GENERATION.to_owned(),
        session.metadata.generation.unwrap_or(0).to_string(),
    );
    annotations.insert(ANNOTATION_DEFAULT_CONTAINER.to_owned(), c.container.clone());

    spec.restart_policy = Some("Never".into());
    if let Some(sa) = &c.service_account {
        spec.service_account_name = Some(sa.name.render(&name));
        // Its token reaches the runner as a file (below), not the default mount.
        spec.automount_service_account_token.get_or_insert(false);
    } else if let Some(sa) = session
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RUNNER_SA))
    {
        spec.service_account_name = Some(sa.clone());
    }
    let pod_sc = spec
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    pod_sc.run_as_non_root.get_or_insert(true);
    pod_sc
        .seccomp_profile
        .get_or_insert_with(|| SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        });

    // The template's runner keeps its place; without one the runner is
    // appended, so the template's container indexes stay as written.
    let at = spec
        .containers
        .iter()
        .position(|x| x.name == c.container)
        .unwrap_or(spec.containers.len());
    if at == spec.containers.len() {
        spec.containers.push(Container {
            name: c.container.clone(),
            ..Container::default()
        });
    }
    let reserved = c.reserved();
    let session_vars = session.spec.environment_variables.as_ref();
    let fill = |x: &mut Container| {
        restrict(x);
        let gets_session = c.session_variables.iter().any(|n| n == &x.name);
        let had = x.env.is_some();
        x.env = Some(container_env(
            x.env.as_deref().unwrap_or_default(),
            c.env_for(&x.name, &doc, &name),
            session_vars.filter(|_| gets_session),
            &reserved,
        ))
        .filter(|e| had || !e.is_empty());
    };
    for (i, x) in spec.containers.iter_mut().enumerate() {
        fill(x);
        if i != at {
            continue;
        }
        if x.image.is_none() {
            x.image = Some(cfg.image.clone());
        }
        x.ports.get_or_insert_with(Vec::new).push(ContainerPort {
            name: Some(c.port_name.clone()),
            container_port: c.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        });
        x.readiness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some(c.health.clone()),
                port: IntOrString::Int(c.port),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        });
        default_resources(x, cfg);
    }
    for x in spec.init_containers.iter_mut().flatten() {
        fill(x);
    }
    if let Some(tf) = c
        .service_account
        .as_ref()
        .and_then(|sa| sa.token_file.as_ref())
    {
        token_file(&mut spec, tf);
    }
    Pod {
        metadata: meta,
        spec: Some(spec),
        status: None,
    }
}

/// The session service account's token as a file the kubelet refreshes
/// (a projected volume), mounted where the contract says.
fn token_file(spec: &mut PodSpec, tf: &TokenFile) {
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: tf.volume.clone(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: tf.path.clone(),
                    expiration_seconds: Some(tf.expiration_seconds),
                    audience: None,
                }),
                ..VolumeProjection::default()
            }]),
            default_mode: None,
        }),
        ..Volume::default()
    });
    let mounts = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
        .filter(|x| tf.containers.contains(&x.name));
    for x in mounts {
        x.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: tf.volume.clone(),
                mount_path: tf.mount_path.clone(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
    }
}

/// Sign `pod` as the reconciler's own runner pod of `attempt` (see
/// [`super::mark`]); the cache takes nothing else for a runner.
pub fn mark_pod(pod: &mut Pod, session_uid: &str, attempt: i64, marker: &Marker) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            MARK.to_owned(),
            marker.pod_mark(&ns, &name, session_uid, attempt),
        );
}

/// Sign the session's Service.
pub fn mark_service(svc: &mut Service, session_uid: &str, marker: &Marker) {
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    svc.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            MARK.to_owned(),
            marker.service_mark(&ns, &name, session_uid),
        );
}

fn mark_of(meta: &ObjectMeta) -> &str {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(MARK))
        .map_or("", String::as_str)
}

/// Is `pod` the reconciler's runner pod of `attempt` for the session `uid`?
pub fn pod_is_ours(pod: &Pod, session_uid: &str, attempt: i64, marker: &Marker) -> bool {
    let meta = &pod.metadata;
    marker.pod_ok(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        session_uid,
        attempt,
        mark_of(meta),
    )
}

/// Is `svc` the reconciler's Service for the session `uid`, selecting its
/// runners and nothing else?
pub fn service_is_ours(svc: &Service, session: &str, session_uid: &str, marker: &Marker) -> bool {
    let meta = &svc.metadata;
    let spec = svc.spec.as_ref();
    let selects_runner = spec.and_then(|s| s.selector.as_ref())
        == Some(&BTreeMap::from([(
            LABEL_SESSION.to_owned(),
            session.to_owned(),
        )]));
    let plain = spec.is_some_and(|s| {
        s.type_.as_deref().is_none_or(|t| t == "ClusterIP") && s.external_name.is_none()
    });
    selects_runner
        && plain
        && marker.service_ok(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            session_uid,
            mark_of(meta),
        )
}

/// Metadata of an object the session owns: `name` in its namespace, with
/// the session's labels and controller reference.
fn session_owned(session: &AgenticSession, name: String) -> ObjectMeta {
    let session_name = session.metadata.name.clone().unwrap_or_default();
    ObjectMeta {
        name: Some(name),
        namespace: session.metadata.namespace.clone(),
        labels: Some(labels(&session_name)),
        owner_references: Some(vec![owner(session)]),
        ..ObjectMeta::default()
    }
}

/// The Secret holding the runner's tokens for this attempt, owned by the
/// session: the notice token, and the session service account's token
/// when the contract has one.
pub fn runner_token_secret(
    session: &AgenticSession,
    contract: &Contract,
    notice_token: &str,
    service_account_token: Option<&str>,
) -> Secret {
    let name = session.metadata.name.clone().unwrap_or_default();
    let mut data = BTreeMap::from([(
        contract.notice_key.clone(),
        ByteString(notice_token.as_bytes().to_vec()),
    )]);
    if let (Some(key), Some(token)) = (&contract.service_account_key, service_account_token) {
        data.insert(key.clone(), ByteString(token.as_bytes().to_vec()));
    }
    Secret {
        metadata: session_owned(session, contract.token_secret.render(&name)),
        data: Some(data),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// The session's service account, as the contract names it.
pub fn runner_service_account(
    session: &AgenticSession,
    contract: &Contract,
) -> Option<ServiceAccount> {
    let sa = contract.service_account.as_ref()?;
    let name = session.metadata.name.clone().unwrap_or_default();
    let doc = contract.doc(session, 0);
    let mut meta = session_owned(session, sa.name.render(&name));
    let annotations: BTreeMap<String, String> = sa
        .annotations
        .iter()
        .map(|(k, p)| (k.clone(), doc.text(p)))
        .filter(|(_, v)| !v.trim().is_empty())
        .collect();
    meta.annotations = Some(annotations).filter(|a| !a.is_empty());
    Some(ServiceAccount {
        metadata: meta,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })
}

/// The binding of the session's service account to the contract's
/// ClusterRole, in the session's namespace.
pub fn runner_role_binding(session: &AgenticSession, contract: &Contract) -> Option<RoleBinding> {
    let sa = contract.service_account.as_ref()?;
    let name = session.metadata.name.clone().unwrap_or_default();
    Some(RoleBinding {
        metadata: session_owned(session, sa.role_binding.render(&name)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: sa.cluster_role.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: sa.name.render(&name),
            namespace: session.metadata.namespace.clone(),
            api_group: None,
        }]),
    })
}

/// The NetworkPolicy every namespace with runners gets.
pub const EGRESS_POLICY: &str = "agentic-runner-egress";
/// Who may open the runner's port: this policy's.
pub const INGRESS_POLICY: &str = "agentic-runner-ingress";

/// Who may reach a runner's port: the reconciler's pods, and the pods of
/// the namespaces in `also` (the platform's backend, which proxies the
/// runner's AG-UI stream).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngressSources {
    /// The reconciler's namespace; its pods are labelled
    /// `app.kubernetes.io/name: agentic-reconciler`.
    pub reconciler_namespace: String,
    pub also: Vec<String>,
}

/// What selects runner pods (their NetworkPolicies, the AdminNetworkPolicy component).
pub fn runner_selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([
            (LABEL_NAME.to_owned(), "agentic-runner".to_owned()),
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        ])),
        ..LabelSelector::default()
    }
}

fn namespace_selector(ns: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            ns.to_owned(),
        )])),
        ..LabelSelector::default()
    }
}

/// A runner NetworkPolicy's name, namespace and managed-by label.
fn policy_meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(BTreeMap::from([(
            LABEL_MANAGED_BY.to_owned(),
            MANAGED_BY.to_owned(),
        )])),
        ..ObjectMeta::default()
    }
}

/// Runners' ingress: the runner port only, from the reconciler (and the
/// namespaces `from.also` names); nothing else may connect.
pub fn runner_ingress_policy(namespace: &str, from: &IngressSources, port: i32) -> NetworkPolicy {
    let mut peers = vec![NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector(&from.reconciler_namespace)),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                LABEL_NAME.to_owned(),
                "agentic-reconciler".to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }];
    peers.extend(from.also.iter().map(|ns| NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector(ns)),
        ..NetworkPolicyPeer::default()
    }));
    NetworkPolicy {
        metadata: policy_meta(INGRESS_POLICY, namespace),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(runner_selector()),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(peers),
                ports: Some(vec![NetworkPolicyPort {
                    protocol: Some("TCP".to_owned()),
                    port: Some(IntOrString::Int(port)),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            egress: None,
        }),
    }
}

/// Where runners may never connect, whatever a git host resolves to at
/// clone time: link-local (the metadata service at 169.254.169.254 and
/// the node's link-local services) and the other cloud metadata addresses.
pub const METADATA_CIDRS: &[&str] = &[
    "169.254.0.0/16",
    "100.100.100.200/32",
    "168.63.129.16/32",
    "192.0.0.192/32",
    "fe80::/10",
    "fd00:ec2::254/128",
];

/// Runners' egress: DNS anywhere, everything else except the metadata
/// addresses and `denied` (the cluster's pod and service networks, as the
/// platform configures them). The rule layer (V3) judges names; this judges
/// the addresses they resolve to.
pub fn runner_egress_policy(namespace: &str, denied: &[ipnet::IpNet]) -> NetworkPolicy {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let metadata = METADATA_CIDRS
        .iter()
        .filter_map(|c| c.parse::<ipnet::IpNet>().ok());
    for net in metadata.chain(denied.iter().copied()) {
        match net {
            ipnet::IpNet::V4(n) => v4.push(n.trunc().to_string()),
            ipnet::IpNet::V6(n) => v6.push(n.trunc().to_string()),
        }
    }
    let block = |cidr: &str, except: Vec<String>| NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: Some(except),
        }),
        ..NetworkPolicyPeer::default()
    };
    let dns = [("UDP", 53), ("TCP", 53)].map(|(protocol, port)| NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(port)),
        ..NetworkPolicyPort::default()
    });
    NetworkPolicy {
        metadata: policy_meta(EGRESS_POLICY, namespace),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(runner_selector()),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    ports: Some(dns.to_vec()),
                    to: None,
                },
                NetworkPolicyEgressRule {
                    ports: None,
                    to: Some(vec![block("0.0.0.0/0", v4), block("::/0", v6)]),
                },
            ]),
            ingress: None,
        }),
    }
}

/// `session-<name>`, the runner's port, in front of the session's runner pod.
pub fn runner_service(session: &AgenticSession, contract: &Contract) -> Service {
    let name = session.metadata.name.clone().unwrap_or_default();
    Service {
        metadata: session_owned(session, service_name(&name)),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(LABEL_SESSION.to_owned(), name)])),
            ports: Some(vec![ServicePort {
                name: Some(contract.port_name.clone()),
                port: contract.port,
                target_port: Some(IntOrString::Int(contract.port)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The attempt a runner pod belongs to.
pub fn pod_attempt(pod: &Pod) -> Option<i64> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_ATTEMPT))
        .and_then(|a| a.parse().ok())
}

/// What the planner sees of a pod: the runner container's own state.
pub fn pod_view(pod: &Pod) -> PodView {
    // The runner is the container the reconciler named when it made the pod.
    let runner_container = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_DEFAULT_CONTAINER))
        .map_or("runner", String::as_str);
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Pending") => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        _ => PodPhase::Unknown,
    };
    let runner = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == runner_container))
        .map(|c| match c.state.as_ref() {
            Some(state) => {
                if let Some(t) = &state.terminated {
                    RunnerState::Terminated {
                        exit_code: t.exit_code,
                        reason: t.reason.clone().unwrap_or_default(),
                    }
                } else if state.running.is_some() {
                    RunnerState::Running { ready: c.ready }
                } else if let Some(w) = &state.waiting {
                    RunnerState::Waiting {
                        reason: w.reason.clone().unwrap_or_default(),
                    }
                } else {
                    RunnerState::Unknown
                }
            }
            None => RunnerState::Unknown,
        })
        .unwrap_or(RunnerState::Unknown);
    let repos: Vec<Repo> = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REPOS))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    PodView {
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ip: status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty()),
        phase,
        reason: status.and_then(|s| s.reason.clone()),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        runner,
        repos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session() -> AgenticSession {
        serde_json::from_value(json!({
            "metadata": {"name": "s1", "namespace": "team-a", "uid": "u-1", "generation": 4,
                         "annotations": {"ambient-code.io/runner-sa": "ambient-session-s1"}},
            "spec": {"initialPrompt": "go", "repos": [{"url": "https://h/o/api", "branch": "main"}],
                     "environmentVariables": {"LOG_LEVEL": "debug"}, "llmSettings": {"temperature": 1}}
        }))
        .expect("the expected shape")
    }

    #[test]
    fn the_runner_pod_is_owned_named_by_attempt_and_built_from_the_spec() {
        let pod = runner_pod(&session(), 2, &RunnerConfig::with_image("runner:1"));
        let v = serde_json::to_value(&pod).expect("serializes");
        assert_eq!(v["metadata"]["name"], "s1-runner-2");
        assert_eq!(v["metadata"]["labels"][LABEL_ATTEMPT], "2");
        assert_eq!(
            v["metadata"]["ownerReferences"],
            json!([{"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession", "name": "s1",
                    "uid": "u-1", "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(v["spec"]["restartPolicy"], "Never");
        // The contract's service account, its token a file, no default mount.
        assert_eq!(v["spec"]["serviceAccountName"], "ambient-session-s1");
        assert_eq!(v["spec"]["automountServiceAccountToken"], false);
        assert_eq!(
            v["spec"]["volumes"],
            json!([{"name": "runner-token", "projected": {"sources": [{"serviceAccountToken":
                {"path": "bot-token", "expirationSeconds": 3600}}]}}])
        );
        assert_eq!(
            v["spec"]["containers"][0]["volumeMounts"],
            json!([{"name": "runner-token", "mountPath": "/var/run/secrets/ambient", "readOnly": true}])
        );
        let env: Vec<(String, String)> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.env.iter().flatten())
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        assert!(env.contains(&("INITIAL_PROMPT".into(), "go".into())));
        assert!(env.contains(&("LOG_LEVEL".into(), "debug".into())));
        assert!(env.contains(&("LLM_TEMPERATURE".into(), "1.00".into())));
        assert_eq!(pod_view(&pod).repos.len(), 1);
        assert_eq!(pod_attempt(&pod), Some(2));
    }

    #[test]
    fn runners_may_not_reach_metadata_or_the_denied_networks() {
        let denied: Vec<ipnet::IpNet> = ["10.96.0.0/12", "10.244.0.7/16", "fd00:10::/48"]
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let v = serde_json::to_value(runner_egress_policy("team-a", &denied)).expect("serializes");
        assert_eq!(v["metadata"]["name"], "agentic-runner-egress");
        assert_eq!(v["metadata"]["namespace"], "team-a");
        assert_eq!(
            v["spec"]["podSelector"]["matchLabels"],
            json!({"app.kubernetes.io/name": "agentic-runner", "app.kubernetes.io/managed-by": "agentic-webhook"})
        );
        assert_eq!(v["spec"]["policyTypes"], json!(["Egress"]));
        assert_eq!(
            v["spec"]["egress"][0],
            json!({"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]})
        );
        assert_eq!(
            v["spec"]["egress"][1]["to"],
            json!([
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "100.100.100.200/32",
                    "168.63.129.16/32", "192.0.0.192/32", "10.96.0.0/12", "10.244.0.0/16"]}},
                {"ipBlock": {"cidr": "::/0", "except": ["fe80::/10", "fd00:ec2::254/128", "fd00:10::/48"]}}
            ])
        );
        // The runner pod carries the labels the policy selects.
        let pod = serde_json::to_value(runner_pod(&session(), 1, &RunnerConfig::with_image("r")))
            .expect("serializes");
        for (k, want) in v["spec"]["podSelector"]["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            assert_eq!(&pod["metadata"]["labels"][k], want, "{k}");
        }
    }

    #[test]
    fn the_runner_gets_its_token_from_a_secret_and_only_marked_objects_are_ours() {
        let m = Marker::new(&[5; 32]);
        let s = session();
        let mut pod = runner_pod(&s, 2, &RunnerConfig::with_image("r"));
        let v = serde_json::to_value(&pod).expect("serializes");
        let env = v["spec"]["containers"][0]["env"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let token = env.iter().find(|e| e["name"] == "AGUI_TOKEN").cloned();
        assert_eq!(
            token,
            Some(json!({"name": "AGUI_TOKEN", "valueFrom": {"secretKeyRef":
                {"name": "ambient-runner-token-s1", "key": "agui-token"}}}))
        );
        assert!(!pod_is_ours(&pod, "u-1", 2, &m), "unmarked");
        mark_pod(&mut pod, "u-1", 2, &m);
        assert!(pod_is_ours(&pod, "u-1", 2, &m));
        assert!(!pod_is_ours(&pod, "u-2", 2, &m), "another session's");
        let secret = serde_json::to_value(runner_token_secret(
            &s,
            &contract::AMBIENT,
            &m.token("u-1", 2),
            Some("sa-tok"),
        ))
        .expect("serializes");
        assert_eq!(secret["metadata"]["name"], "ambient-runner-token-s1");
        assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert!(secret["data"]["agui-token"].is_string());
        assert_eq!(secret["data"]["k8s-token"], "c2EtdG9r");

        let mut svc = runner_service(&s, &contract::AMBIENT);
        mark_service(&mut svc, "u-1", &m);
        assert!(service_is_ours(&svc, "s1", "u-1", &m));
        // Marked, but pointed elsewhere: not ours to use.
        let mut moved = svc.clone();
        if let Some(spec) = moved.spec.as_mut() {
            spec.type_ = Some("ExternalName".into());
            spec.external_name = Some("session-victim.team-b.svc.cluster.local".into());
        }
        assert!(!service_is_ours(&moved, "s1", "u-1", &m));
        let mut reselected = svc.clone();
        if let Some(spec) = reselected.spec.as_mut() {
            spec.selector = Some(BTreeMap::from([("app".into(), "mine".into())]));
        }
        assert!(!service_is_ours(&reselected, "s1", "u-1", &m));
    }

    #[test]
    fn only_the_reconciler_and_the_named_namespaces_reach_the_runner_port() {
        let from = IngressSources {
            reconciler_namespace: "agentic-system".into(),
            also: vec!["ambient-code".into()],
        };
        let v =
            serde_json::to_value(runner_ingress_policy("team-a", &from, 8001)).expect("serializes");
        assert_eq!(v["metadata"]["name"], "agentic-runner-ingress");
        assert_eq!(v["spec"]["policyTypes"], json!(["Ingress"]));
        assert_eq!(
            v["spec"]["ingress"],
            json!([{"from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agentic-system"}},
                 "podSelector": {"matchLabels": {"app.kubernetes.io/name": "agentic-reconciler"}}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ambient-code"}}}],
                "ports": [{"protocol": "TCP", "port": 8001}]}])
        );
        assert_eq!(
            v["spec"]["podSelector"],
            serde_json::to_value(runner_egress_policy("team-a", &[])).expect("serializes")["spec"]
                ["podSelector"]
        );
    }

    #[test]
    fn a_reserved_or_process_variable_of_the_session_never_reaches_the_runner() {
        let mut s = session();
        s.spec.environment_variables = Some(BTreeMap::from([
            (
                "REPOS_JSON".to_owned(),
                "[{\"url\": \"ext::sh -c id\"}]".to_owned(),
            ),
            ("GIT_CONFIG_COUNT".to_owned(), "1".to_owned()),
            ("LD_PRELOAD".to_owned(), "/x.so".to_owned()),
            ("LOG_LEVEL".to_owned(), "debug".to_owned()),
        ]));
        let pod = runner_pod(&s, 1, &RunnerConfig::with_image("r"));
        let env: Vec<(String, Option<String>)> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.env.iter().flatten())
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        let repos: Vec<_> = env.iter().filter(|(n, _)| n == "REPOS_JSON").collect();
        assert_eq!(repos.len(), 1, "one REPOS_JSON, the reconciler's");
        assert!(!repos[0].1.as_deref().unwrap_or_default().contains("ext::"));
        assert!(
            !env.iter()
                .any(|(n, _)| n == "GIT_CONFIG_COUNT" || n == "LD_PRELOAD")
        );
        assert!(env.iter().any(|(n, _)| n == "LOG_LEVEL"));
    }

    #[test]
    fn the_runner_container_state_wins_over_the_pod_phase() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "s1-runner-1",
                         "annotations": {"kubectl.kubernetes.io/default-container": "runner"}},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "sidecar", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
                 "state": {"running": {}}},
                {"name": "runner", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                 "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        }))
        .expect("the expected shape");
        let view = pod_view(&pod);
        assert_eq!(view.phase, PodPhase::Running);
        assert_eq!(
            view.runner,
            RunnerState::Terminated {
                exit_code: 137,
                reason: "OOMKilled".into()
            }
        );
    }
}
