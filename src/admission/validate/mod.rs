//! Validation V1–V23: the `/validate` core. One file per rule family;
//! this module decodes the objects and decides which families apply.

pub(crate) mod principals;
pub(crate) mod ratchet;
pub(crate) mod running;
pub(crate) mod spec_shape;
pub(crate) mod status;
pub(crate) mod view;

use serde_json::value::RawValue;

use crate::admission::Config;
use crate::admission::review::{AdmissionRequest, Operation, Verdict};
use crate::api::field::{FieldError, FieldPath, Rule};
use crate::api::{SessionV1, SessionV2, Version};

use crate::api::status::{ConditionStatus, find_condition};
use principals::{Role, Write};

/// The reconciler's condition for "no attempt left" (`lifecycle::plan`).
const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
use view::Versioned;

/// Judge one request (dry-run requests are judged exactly like real ones).
pub fn validate(cfg: &Config, req: &AdmissionRequest<'_>) -> Verdict {
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return Verdict::allow();
    }
    match Version::from_version(&req.kind.version) {
        Some(Version::V1Alpha1) => validate_as::<SessionV1>(cfg, req),
        Some(Version::V1Alpha2) => validate_as::<SessionV2>(cfg, req),
        None => Verdict::deny(
            req.name(),
            &[FieldError::not_supported(
                Rule::Schema,
                FieldPath::new("apiVersion"),
                crate::api::field::BadValue::str(&req.kind.version),
                &["v1alpha1", "v1alpha2"],
            )],
            Vec::new(),
        ),
    }
}

fn decode_object<S: Versioned>(
    raw: Option<&RawValue>,
    root: &str,
) -> Result<Option<S>, FieldError> {
    raw.map(|raw| S::decode(raw.get(), root)).transpose()
}

fn validate_as<S: Versioned>(cfg: &Config, req: &AdmissionRequest<'_>) -> Verdict {
    let new = match decode_object::<S>(req.object, "") {
        Ok(Some(obj)) => obj,
        Ok(None) => {
            return Verdict::deny(
                req.name(),
                &[FieldError::required(
                    Rule::Schema,
                    FieldPath::new("object"),
                    "",
                )],
                Vec::new(),
            );
        }
        Err(e) => return Verdict::deny(req.name(), &[e], Vec::new()),
    };
    let old = match req.operation {
        Operation::Update => match decode_object::<S>(req.old_object, "oldObject") {
            Ok(old) => old,
            Err(e) => return Verdict::deny(req.name(), &[e], Vec::new()),
        },
        _ => None,
    };
    match req.sub_resource.as_deref() {
        None => validate_main(cfg, req, &new, old.as_ref()),
        Some("status") => validate_status(cfg, req, &new, old.as_ref()),
        // No other subresource exists on this CRD; nothing to judge.
        Some(_) => Verdict::allow(),
    }
}

fn validate_main<S: Versioned>(
    cfg: &Config,
    req: &AdmissionRequest<'_>,
    new: &S,
    old: Option<&S>,
) -> Verdict {
    let role = Role::of(&cfg.principals, &req.user_info);
    let (shape_errors, mut warnings) = spec_shape::check(&new.spec_view(), &cfg.limits);
    let mut errors = match old {
        Some(old) if !shape_errors.is_empty() => {
            let (old_errors, _) = spec_shape::check(&old.spec_view(), &cfg.limits);
            let (errors, ratcheted) = ratchet::ratchet(shape_errors, &old_errors);
            warnings.extend(ratcheted);
            errors
        }
        _ => shape_errors,
    };
    let new_annotations = new.meta().annotations.as_ref();
    let old_annotations = old.and_then(|o| o.meta().annotations.as_ref());
    match old {
        Some(old) => {
            errors.extend(running::check(old, new));
            errors.extend(principals::check_user_context(
                role,
                old.user_context(),
                new.user_context(),
            ));
            let st = old.status_view();
            let exhausted = find_condition(st.conditions, RETRIES_EXHAUSTED)
                .is_some_and(|c| c.status == ConditionStatus::True);
            errors.extend(principals::check_restart_budget(
                role,
                old_annotations,
                new_annotations,
                exhausted,
                st.restarts.unwrap_or(0),
                cfg.limits.max_restarts,
            ));
        }
        None => {
            errors.extend(principals::check_session_name(object_name(req, new)));
            errors.extend(principals::check_creator(
                role,
                &req.user_info,
                new.user_context(),
            ));
        }
    }
    errors.extend(principals::check_owned_annotations(
        role,
        old.is_none(),
        old_annotations,
        new_annotations,
    ));
    let write = match old {
        None => Write::Create,
        Some(old) => Write::Update {
            old: old_annotations,
            stop_only: new.changed_spec_fields(old).is_empty()
                && new.meta().labels == old.meta().labels
                && principals::is_stop_request(old_annotations, new_annotations),
        },
    };
    errors.extend(principals::check_runner_scope(
        role,
        &req.user_info,
        req.namespace(),
        object_name(req, new),
        write,
    ));
    errors.extend(principals::check_desired_phase(new_annotations));
    deny_or_allow(cfg, req, errors, warnings)
}

fn validate_status<S: Versioned>(
    cfg: &Config,
    req: &AdmissionRequest<'_>,
    new: &S,
    old: Option<&S>,
) -> Verdict {
    let user = &req.user_info;
    let role = Role::of(&cfg.principals, user);
    let mut errors: Vec<FieldError> = Vec::new();
    let activity_only = old.is_some_and(|old| new.status_eq_but_activity(old));
    errors.extend(principals::check_status_writer(role, user, activity_only));
    errors.extend(principals::check_runner_scope(
        role,
        user,
        req.namespace(),
        object_name(req, new),
        Write::Status,
    ));
    let new_status = new.status_view();
    if let Some(old) = old {
        errors.extend(status::check_transition(&old.status_view(), &new_status));
    }
    errors.extend(status::check_conditions(&new_status, new.meta().generation));
    deny_or_allow(cfg, req, errors, Vec::new())
}

fn object_name<'a, S: Versioned>(req: &'a AdmissionRequest<'_>, obj: &'a S) -> &'a str {
    match req.name() {
        "" => obj.meta().name.as_deref().unwrap_or(""),
        name => name,
    }
}

fn deny_or_allow(
    cfg: &Config,
    req: &AdmissionRequest<'_>,
    errors: Vec<FieldError>,
    mut warnings: Vec<String>,
) -> Verdict {
    // Warn-only rules: said, counted, not enforced.
    let (warned, errors): (Vec<FieldError>, Vec<FieldError>) = errors
        .into_iter()
        .partition(|e| e.rule != Rule::Schema && cfg.warn_only.contains(&e.rule));
    let mut warned_rules: Vec<Rule> = warned.iter().map(|e| e.rule).collect();
    warned_rules.sort();
    warned_rules.dedup();
    warnings.extend(
        warned
            .iter()
            .map(|e| crate::api::field::warning(&format!("{} (warn-only): {e}", e.rule))),
    );
    let mut verdict = if errors.is_empty() {
        Verdict {
            warnings,
            ..Verdict::allow()
        }
    } else {
        Verdict::deny(req.name(), &errors, warnings)
    };
    verdict.warned_rules = warned_rules;
    verdict
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::admission::testkit::*;
    use crate::api::Version::{V1Alpha1, V1Alpha2};

    fn invalid() -> serde_json::Value {
        session(V1Alpha2, json!({"repos": [{"url": "file:///etc"}]}))
    }

    #[test]
    fn delete_and_connect_are_always_allowed() {
        assert_allowed(
            &Case::delete(V1Alpha2, invalid())
                .by("system:serviceaccount:x:ambient-session-other")
                .validate(),
        );
    }

    #[test]
    fn dry_run_is_judged_like_a_real_write() {
        let case = Case::create(V1Alpha2, invalid());
        let real = case.validate();
        let body = case.body().replace(r#""dryRun":false"#, r#""dryRun":true"#);
        let review =
            crate::admission::review::decode(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let req = review.request();
        assert_eq!(req.dry_run, Some(true));
        let dry = crate::admission::AdmissionService::validate(
            &crate::admission::Policy::new(config()),
            req,
        );
        assert_eq!(real, dry);
    }

    #[test]
    fn a_wrongly_typed_field_is_a_clear_denial_not_an_error() {
        let v = Case::create(V1Alpha1, session(V1Alpha1, json!({"timeout": "600"}))).validate();
        assert_denied(
            &v,
            422,
            &[("spec.timeout", "FieldValueInvalid")],
            &["schema"],
        );
        assert_eq!(
            message(&v),
            r#"spec.timeout: Invalid value: "600": must be of type integer"#
        );
    }

    #[test]
    fn unknown_versions_are_refused_and_other_kinds_pass() {
        let mut case = Case::create(V1Alpha2, invalid()).body();
        case = case.replace(r#""version":"v1alpha2""#, r#""version":"v9""#);
        let review =
            crate::admission::review::decode(case.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let req = review.request();
        let v = crate::admission::AdmissionService::validate(
            &crate::admission::Policy::new(config()),
            req,
        );
        assert_denied(
            &v,
            422,
            &[("apiVersion", "FieldValueNotSupported")],
            &["schema"],
        );
        let other = Case::create(V1Alpha2, invalid())
            .body()
            .replace("AgenticSession", "ConfigMap");
        let review =
            crate::admission::review::decode(other.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let req = review.request();
        assert_allowed(&crate::admission::AdmissionService::validate(
            &crate::admission::Policy::new(config()),
            req,
        ));
    }

    /// legacy-1 as the capture apiserver stored it: v1alpha1 shapes under the
    /// v1alpha2 label (09-delete-legacy.validate.json).
    fn mislabelled_legacy() -> serde_json::Value {
        json!({"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
            "metadata": {"name": "s1", "namespace": "team-a", "generation": 1},
            "spec": {"interactive": false, "mainRepoIndex": 0, "prompt": "Refactor the auth module",
                     "repos": [{"input": {"branch": "main", "url": "https://github.com/acme/api.git"},
                                "output": {"branch": "fix-auth", "url": "https://github.com/me/api.git"}}],
                     "timeout": 600}})
    }

    #[test]
    fn label_updates_of_legacy_objects_stored_as_v1alpha2_are_allowed() {
        let old = mislabelled_legacy();
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"archived": "true"});
        assert_allowed(&Case::update(V1Alpha2, old, new).validate());
    }

    #[test]
    fn status_updates_of_legacy_objects_stored_as_v1alpha2_are_allowed() {
        let old = with_status(
            mislabelled_legacy(),
            json!({"phase": "Running", "result": "ok"}),
        );
        let new = with_status(
            mislabelled_legacy(),
            json!({"phase": "Completed", "result": "ok"}),
        );
        assert_allowed(
            &Case::update(V1Alpha2, old, new)
                .status()
                .by(CONTROLLER)
                .validate(),
        );
    }

    #[test]
    fn a_v1alpha2_repo_without_any_url_is_required() {
        let v = Case::create(
            V1Alpha2,
            session(V1Alpha2, json!({"repos": [{"branch": "main"}]})),
        )
        .validate();
        assert_denied(
            &v,
            422,
            &[("spec.repos[0].url", "FieldValueRequired")],
            &["schema"],
        );
    }
}
