//! Admission: the `/mutate` and `/validate` core.
//!
//! Pure functions over typed data. The server (and the offline `review`
//! command) decode an `AdmissionReview`, call [`AdmissionService`], and
//! encode the [`Verdict`].

pub mod git;
pub mod mutate;
pub mod review;
#[cfg(test)]
mod testkit;
pub(crate) mod validate;

use serde::Deserialize;
use serde_json::Value;

use crate::api::{GROUP, KIND, Version};

use git::HostPattern;
use review::{AdmissionRequest, Operation, UserInfo, Verdict};

/// Configurable limits of the spec-shape rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// V5
    pub max_repos: usize,
    /// V7
    pub max_prompt_bytes: usize,
    /// V26: restarts after RetriesExhausted a tenant may ask for.
    pub max_restarts: i64,
    /// V3; empty allows any host.
    pub allowed_git_hosts: Vec<HostPattern>,
    /// V3: networks no literal address may be in (private ranges are
    /// allowed by default: on-premises git servers live there).
    pub denied_cidrs: Vec<ipnet::IpNet>,
    /// V3: names under it are the cluster's own Services.
    pub cluster_domain: String,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_repos: 20,
            max_prompt_bytes: 100 * 1024,
            max_restarts: 3,
            allowed_git_hosts: Vec::new(),
            denied_cidrs: Vec::new(),
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// The ambient-code platform's namespace in its own manifests.
pub const PLATFORM_NAMESPACE: &str = "ambient-code";

/// Who is who to the rules V17–V20 (see [`validate::principals::Role`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Principals {
    /// Controller principals: this product's reconciler, and whoever
    /// `--controller-user` / `--controller-group` name. Every right.
    pub users: Vec<String>,
    pub groups: Vec<String>,
    /// Where the platform's operator (`agentic-operator`) and backend
    /// (`backend-api`) service accounts live (`--platform-namespace`);
    /// `None` when the webhook does not run beside the platform.
    pub platform_namespace: Option<String>,
}

impl Default for Principals {
    /// No controllers; the platform in its default namespace.
    fn default() -> Self {
        Principals {
            users: Vec::new(),
            groups: Vec::new(),
            platform_namespace: Some(PLATFORM_NAMESPACE.to_owned()),
        }
    }
}

impl Principals {
    pub fn is_controller(&self, user: &UserInfo) -> bool {
        self.users.contains(&user.username) || user.groups.iter().any(|g| self.groups.contains(g))
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub limits: Limits,
    pub principals: Principals,
    /// Rules whose denials become warnings (a stricter rule rolled out in
    /// audit mode first, like Gatekeeper's `warn` enforcement).
    pub warn_only: Vec<crate::api::field::Rule>,
}

/// The seam between the HTTP edge and the rules.
pub trait AdmissionService: Send + Sync + 'static {
    fn mutate(&self, req: &AdmissionRequest<'_>) -> Verdict;
    fn validate(&self, req: &AdmissionRequest<'_>) -> Verdict;
}

/// The rules of SPEC sections 3 and 4.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub config: Config,
}

impl Policy {
    pub fn new(config: Config) -> Self {
        Policy { config }
    }
}

/// Is this request about our resource at all? The webhook configurations
/// only route AgenticSessions here; anything else passes untouched rather
/// than failing closed on unrelated objects.
pub fn is_session(req: &AdmissionRequest<'_>) -> bool {
    req.kind.group == GROUP && req.kind.kind == KIND
}

#[derive(Deserialize)]
struct SpecOnly {
    #[serde(default)]
    metadata: Option<MetaAnnotations>,
    #[serde(default)]
    spec: Option<Value>,
}

#[derive(Deserialize)]
struct MetaAnnotations {
    #[serde(default)]
    annotations: Option<Value>,
}

impl AdmissionService for Policy {
    fn mutate(&self, req: &AdmissionRequest<'_>) -> Verdict {
        if !is_session(req)
            || req.sub_resource.is_some()
            || !matches!(req.operation, Operation::Create | Operation::Update)
        {
            return Verdict::allow();
        }
        let Some(version) = Version::from_version(&req.kind.version) else {
            return Verdict::allow();
        };
        // A non-object `object` is left for schema validation to reject
        // (serde would read a JSON array as a struct, field by position).
        let object = req
            .object
            .filter(|raw| crate::api::decode::is_json_object(raw.get()))
            .and_then(|raw| serde_json::from_str::<SpecOnly>(raw.get()).ok());
        let (annotations, spec) = match object {
            Some(o) => (o.metadata.and_then(|m| m.annotations), o.spec),
            None => (None, None),
        };
        let mut m = mutate::mutate_spec(version, spec.as_ref());
        // M6: a runner's CREATE in its own namespace is marked with its
        // session, so that runner may later stop what it created (V20).
        if req.operation == Operation::Create
            && let Some((ns, session)) = validate::principals::runner_scope(&req.user_info.username)
            && ns == req.namespace()
        {
            mutate::mark_created_by_runner(annotations.as_ref(), session, &mut m);
        }
        // M7: a person's session without a user context acts for that person.
        if req.operation == Operation::Create
            && validate::principals::Role::of(&self.config.principals, &req.user_info)
                == validate::principals::Role::Tenant
            && let Some(Value::Object(spec)) = &spec
            && !spec.contains_key("userContext")
        {
            mutate::fill_user_context(&req.user_info, &mut m);
        }
        Verdict {
            patch: m.patch_json(),
            warnings: m.warnings,
            ..Verdict::allow()
        }
    }

    fn validate(&self, req: &AdmissionRequest<'_>) -> Verdict {
        if !is_session(req) {
            return Verdict::allow();
        }
        validate::validate(&self.config, req)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::testkit::*;
    use crate::api::Version::{V1Alpha1, V1Alpha2};

    #[test]
    fn mutate_patches_creates_and_updates_of_the_main_resource() {
        let obj = session(
            V1Alpha2,
            json!({"repos": [{"url": "https://h/o/api"}], "userContext": {"userId": "alice"}}),
        );
        let v = Case::create(V1Alpha2, obj.clone()).mutate();
        let patch: serde_json::Value =
            serde_json::from_slice(&v.patch.unwrap_or_default()).expect("JSON");
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/spec/repos/0/branch", "value": "main"},
                   {"op": "add", "path": "/spec/mainRepo", "value": "api"}])
        );
        assert!(
            Case::update(V1Alpha2, obj.clone(), obj.clone())
                .mutate()
                .patch
                .is_some()
        );
    }

    #[test]
    fn mutate_leaves_status_writes_deletes_and_v1alpha1_main_repo_alone() {
        let obj = session(V1Alpha2, json!({"repos": [{"url": "https://h/o/api"}]}));
        assert_eq!(
            Case::update(V1Alpha2, obj.clone(), obj.clone())
                .status()
                .mutate()
                .patch,
            None
        );
        assert_eq!(Case::delete(V1Alpha2, obj).mutate().patch, None);
        let v1 = session(
            V1Alpha1,
            json!({"repos": [{"url": "https://h/o/api", "branch": "main"}], "userContext": {}}),
        );
        assert_eq!(Case::create(V1Alpha1, v1).mutate().patch, None);
    }

    #[test]
    fn m7_a_persons_session_without_a_user_context_acts_for_that_person() {
        let obj = session(V1Alpha1, json!({"initialPrompt": "p"}));
        let v = Case::create(V1Alpha1, obj.clone())
            .by("kube:admin")
            .groups(&["system:authenticated", "acme-devs"])
            .mutate();
        let patch: serde_json::Value =
            serde_json::from_slice(&v.patch.unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/spec/userContext",
                    "value": {"userId": "kube-admin", "displayName": "kube:admin", "groups": ["acme-devs"]}}])
        );
        // Its output passes V25; a context already there is left alone;
        // those who create on someone's behalf get none.
        let mut filled = obj.clone();
        filled["spec"]["userContext"] = patch[0]["value"].clone();
        assert_allowed(
            &Case::create(V1Alpha1, filled.clone())
                .by("kube:admin")
                .groups(&["system:authenticated", "acme-devs"])
                .validate(),
        );
        assert_eq!(Case::create(V1Alpha1, filled).mutate().patch, None);
        for by in [
            "system:serviceaccount:team-a:ambient-session-trigger",
            "system:serviceaccount:team-a:ambient-key-ci-3f2a9b1c",
            "system:serviceaccount:ambient-code:backend-api",
            CONTROLLER,
        ] {
            assert_eq!(
                Case::create(V1Alpha1, obj.clone()).by(by).mutate().patch,
                None,
                "{by}"
            );
        }
    }

    #[test]
    fn m6_a_runners_create_in_its_namespace_is_marked_and_no_one_elses() {
        let obj = session(
            V1Alpha1,
            json!({"initialPrompt": "p", "userContext": {"userId": "alice"}}),
        );
        let runner = "system:serviceaccount:team-a:ambient-session-s1";
        let patch = |c: Case| -> serde_json::Value {
            serde_json::from_slice(&c.mutate().patch.unwrap_or_default()).unwrap_or_default()
        };
        assert_eq!(
            patch(Case::create(V1Alpha1, obj.clone()).by(runner)),
            json!([{"op": "add", "path": "/metadata/annotations",
                    "value": {"vteam.ambient-code/created-by-runner": "s1"}}])
        );
        for c in [
            Case::create(V1Alpha1, obj.clone())
                .by(runner)
                .named("team-b", "x"),
            Case::create(V1Alpha1, obj.clone())
                .by("system:serviceaccount:team-a:ambient-session-trigger"),
            Case::create(V1Alpha1, obj.clone()),
            Case::update(V1Alpha1, obj.clone(), obj.clone()).by(runner),
        ] {
            assert_eq!(c.mutate().patch, None, "{c:?}");
        }
    }

    #[test]
    fn an_object_that_is_not_a_json_object_gets_no_patch() {
        // serde reads `[{...}]` as a struct by position; found by tests/fuzz.rs.
        for odd in [
            json!([{"prompt": "main", "input": "x"}]),
            json!([{"repos": [{"url": "https://h/o/api"}]}]),
            json!("spec"),
        ] {
            let v = Case::create(V1Alpha2, odd.clone()).mutate();
            assert_eq!(v.patch, None, "{odd}");
            assert!(v.allowed());
        }
    }
}
