//! Validation V1–V23: the `/validate` core. One file per rule family;
//! this module decodes the objects and decides which families apply.

pub mod principals;
pub mod ratchet;
pub mod running;
pub mod spec_shape;
pub mod status;
pub mod view;

use serde_json::value::RawValue;

use crate::admission::Config;
use crate::admission::decode::{DecodeError, decode_typed};
use crate::admission::field::{DenyStatus, FieldError, FieldPath, Rule};
use crate::admission::review::{AdmissionRequest, Operation, Verdict};
use crate::api::{SessionV1, SessionV2, Version};

use view::Versioned;

/// Judge one request (dry-run requests are judged exactly like real ones).
pub fn validate(cfg: &Config, req: &AdmissionRequest<'_>) -> Verdict {
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return Verdict::allow();
    }
    match Version::from_version(&req.kind.version) {
        Some(Version::V1Alpha1) => validate_as::<SessionV1>(cfg, req),
        Some(Version::V1Alpha2) => validate_as::<SessionV2>(cfg, req),
        None => deny(
            req,
            vec![FieldError::not_supported(
                Rule::Schema,
                FieldPath::new("apiVersion"),
                crate::admission::field::BadValue::str(&req.kind.version),
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
    match raw {
        None => Ok(None),
        Some(raw) => decode_typed::<S>(raw.get())
            .map(Some)
            .map_err(|e: DecodeError| e.into_field_error(root)),
    }
}

fn validate_as<S: Versioned>(cfg: &Config, req: &AdmissionRequest<'_>) -> Verdict {
    let new = match decode_object::<S>(req.object, "") {
        Ok(Some(obj)) => obj,
        Ok(None) => {
            return deny(
                req,
                vec![FieldError::required(
                    Rule::Schema,
                    FieldPath::new("object"),
                    "",
                )],
                Vec::new(),
            );
        }
        Err(e) => return deny(req, vec![e], Vec::new()),
    };
    let old = match req.operation {
        Operation::Update => match decode_object::<S>(req.old_object, "oldObject") {
            Ok(old) => old,
            Err(e) => return deny(req, vec![e], Vec::new()),
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
    let user = &req.user_info;
    let p = &cfg.principals;
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
    if let Some(old) = old {
        errors.extend(running::check(old, new));
        errors.extend(principals::check_user_context(
            p,
            user,
            old.user_context(),
            new.user_context(),
        ));
    }
    errors.extend(principals::check_owned_annotations(
        p,
        user,
        old.and_then(|o| o.meta().annotations.as_ref()),
        new.meta().annotations.as_ref(),
    ));
    errors.extend(principals::check_runner_scope(
        user,
        req.namespace(),
        object_name(req, new),
    ));
    errors.extend(principals::check_desired_phase(
        new.meta().annotations.as_ref(),
    ));
    deny_or_allow(req, errors, warnings)
}

fn validate_status<S: Versioned>(
    cfg: &Config,
    req: &AdmissionRequest<'_>,
    new: &S,
    old: Option<&S>,
) -> Verdict {
    let user = &req.user_info;
    let mut errors: Vec<FieldError> = Vec::new();
    errors.extend(principals::check_status_writer(&cfg.principals, user));
    errors.extend(principals::check_runner_scope(
        user,
        req.namespace(),
        object_name(req, new),
    ));
    let new_status = new.status_view();
    if let Some(old) = old {
        errors.extend(status::check_transition(&old.status_view(), &new_status));
    }
    errors.extend(status::check_conditions(&new_status, new.meta().generation));
    deny_or_allow(req, errors, Vec::new())
}

fn object_name<'a, S: Versioned>(req: &'a AdmissionRequest<'_>, obj: &'a S) -> &'a str {
    match req.name() {
        "" => obj.meta().name.as_deref().unwrap_or(""),
        name => name,
    }
}

fn deny_or_allow(
    req: &AdmissionRequest<'_>,
    errors: Vec<FieldError>,
    warnings: Vec<String>,
) -> Verdict {
    if errors.is_empty() {
        Verdict {
            warnings,
            ..Verdict::allow()
        }
    } else {
        deny(req, errors, warnings)
    }
}

fn deny(req: &AdmissionRequest<'_>, errors: Vec<FieldError>, warnings: Vec<String>) -> Verdict {
    let status = DenyStatus::from_errors(req.name(), &errors);
    // Count what the answer reports: authorization errors win (403) alone.
    let authz = errors.iter().any(|e| e.rule.is_authorization());
    let mut rules: Vec<Rule> = errors
        .iter()
        .map(|e| e.rule)
        .filter(|r| !authz || r.is_authorization())
        .collect();
    rules.sort();
    rules.dedup();
    Verdict {
        deny: Some(status),
        patch: None,
        warnings,
        denied_rules: rules,
    }
}
