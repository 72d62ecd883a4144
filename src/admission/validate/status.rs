//! Status writes, V22–V23: legal phase transitions and well-formed conditions.

use std::collections::HashSet;

use crate::api::field::{BadValue, FieldError, FieldPath, Rule};
use crate::api::status::{ConditionStatus, Phase};

use super::view::StatusView;

/// V22: may a status write move `from` to `to`? The table is the
/// ambient-code platform operator's (`operator/internal/controller/`,
/// `internal/handlers/reconciler.go`, `sessions.go`) and this product's
/// reconciler's, which writes a subset of it.
pub fn transition_allowed(from: Option<&Phase>, to: Option<&Phase>) -> bool {
    use Phase::*;
    // v1alpha1's legacy `Error` behaves as `Failed`.
    let norm = |p: Option<&Phase>| match p {
        Some(Error) => Some(Failed),
        other => other.cloned(),
    };
    let (from, to) = (norm(from), norm(to));
    if from == to {
        return true;
    }
    match (from, to) {
        (None, Some(Pending)) => true,
        // Stopped: desired-phase=Stopped before a pod was made.
        (Some(Pending), Some(Creating | Stopping | Stopped | Failed)) => true,
        // Pending: the pod went missing (PodMissing); Stopped: stop asked and
        // the pod already gone; Completed: the runner exited 0 before the
        // Running write.
        (Some(Creating), Some(Running | Pending | Stopping | Stopped | Completed | Failed)) => true,
        // Pending: the pod went missing (ResetToPending), or a retry.
        (Some(Running), Some(Pending | Completed | Failed | Stopping)) => true,
        (Some(Stopping), Some(Stopped | Failed)) => true,
        (Some(Stopped | Completed | Failed), Some(Pending)) => true,
        _ => false,
    }
}

/// The targets V22 allows from `from` (for messages).
pub fn allowed_targets(from: Option<&Phase>) -> Vec<&'static str> {
    Phase::V1ALPHA2
        .iter()
        .copied()
        .filter(|to| from.map(Phase::as_str) != Some(to))
        .filter(|to| transition_allowed(from, Some(&Phase::parse(to))))
        .collect()
}

pub fn check_transition(old: &StatusView<'_>, new: &StatusView<'_>) -> Option<FieldError> {
    if let Some(Phase::Other(value)) = new.phase {
        return Some(FieldError::not_supported(
            Rule::V22,
            FieldPath::new("status.phase"),
            BadValue::str(value),
            Phase::V1ALPHA2,
        ));
    }
    if transition_allowed(old.phase, new.phase) {
        return None;
    }
    let path = FieldPath::new("status.phase");
    let from = old.phase.map_or("(none)", Phase::as_str);
    match new.phase {
        None => Some(FieldError::required(
            Rule::V22,
            path,
            format!("may not be removed once set (was {from})"),
        )),
        Some(to) => {
            let mut detail = format!("may not change from {from} to {to}");
            let targets = allowed_targets(old.phase);
            if !targets.is_empty() {
                detail.push_str("; allowed: ");
                detail.push_str(&targets.join(", "));
            }
            Some(FieldError::invalid(
                Rule::V22,
                path,
                BadValue::str(to.as_str()),
                detail,
            ))
        }
    }
}

fn is_camel_case(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

fn check_generation(path: FieldPath, g: i64, generation: Option<i64>, errs: &mut Vec<FieldError>) {
    let max = generation.unwrap_or(i64::MAX);
    if g < 0 || g > max {
        let detail = match generation {
            Some(m) => format!("must be between 0 and metadata.generation ({m})"),
            None => "must be greater than or equal to 0".to_owned(),
        };
        errs.push(FieldError::invalid(
            Rule::V23,
            path,
            BadValue::Int(g),
            detail,
        ));
    }
}

/// V23
pub fn check_conditions(status: &StatusView<'_>, generation: Option<i64>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(g) = status.observed_generation {
        check_generation(
            FieldPath::new("status.observedGeneration"),
            g,
            generation,
            &mut errs,
        );
    }
    let root = FieldPath::new("status.conditions");
    let mut seen = HashSet::new();
    for (i, c) in status.conditions.iter().enumerate() {
        let p = root.index(i);
        if c.type_.is_empty() {
            errs.push(FieldError::required(Rule::V23, p.child("type"), ""));
        } else if !is_camel_case(&c.type_) {
            errs.push(FieldError::invalid(
                Rule::V23,
                p.child("type"),
                BadValue::str(&c.type_),
                "must be CamelCase",
            ));
        } else if !seen.insert(c.type_.as_str()) {
            errs.push(FieldError::duplicate(
                Rule::V23,
                p.child("type"),
                BadValue::str(&c.type_),
                "",
            ));
        }
        if let ConditionStatus::Other(s) = &c.status {
            errs.push(FieldError::not_supported(
                Rule::V23,
                p.child("status"),
                BadValue::str(s),
                ConditionStatus::KNOWN,
            ));
        }
        match c.reason.as_deref() {
            None | Some("") => errs.push(FieldError::required(Rule::V23, p.child("reason"), "")),
            Some(r) if !is_camel_case(r) => errs.push(FieldError::invalid(
                Rule::V23,
                p.child("reason"),
                BadValue::str(r),
                "must be CamelCase",
            )),
            Some(_) => {}
        }
        match c.last_transition_time.as_deref() {
            None | Some("") => errs.push(FieldError::required(
                Rule::V23,
                p.child("lastTransitionTime"),
                "",
            )),
            Some(t) if t.parse::<jiff::Timestamp>().is_err() => errs.push(FieldError::invalid(
                Rule::V23,
                p.child("lastTransitionTime"),
                BadValue::str(t),
                "must be an RFC 3339 date-time",
            )),
            Some(_) => {}
        }
        if let Some(g) = c.observed_generation {
            check_generation(p.child("observedGeneration"), g, generation, &mut errs);
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::transition_allowed;
    use crate::admission::testkit::*;
    use crate::api::Version::{V1Alpha1, V1Alpha2};
    use crate::api::status::Phase;

    fn write(old: Value, new: Value) -> crate::admission::review::Verdict {
        let base = session(V1Alpha2, json!({"initialPrompt": "p"}));
        Case::update(
            V1Alpha2,
            with_status(base.clone(), old),
            with_status(base, new),
        )
        .status()
        .by(CONTROLLER)
        .validate()
    }

    fn cond(t: &str, status: &str, reason: &str, time: &str) -> Value {
        json!({"type": t, "status": status, "reason": reason, "lastTransitionTime": time})
    }

    #[test]
    fn v22_every_transition_matches_the_table() {
        use Phase::*;
        let all = [
            None,
            Some(Pending),
            Some(Creating),
            Some(Running),
            Some(Stopping),
            Some(Stopped),
            Some(Completed),
            Some(Failed),
        ];
        let allowed = |from: &Option<Phase>, to: &Option<Phase>| -> bool {
            from == to
                || matches!(
                    (from, to),
                    (None, Some(Pending))
                        | (Some(Pending), Some(Creating | Stopping | Stopped | Failed))
                        | (
                            Some(Creating),
                            Some(Running | Pending | Stopping | Stopped | Completed | Failed)
                        )
                        | (Some(Running), Some(Pending | Completed | Failed | Stopping))
                        | (Some(Stopping), Some(Stopped | Failed))
                        | (Some(Stopped | Completed | Failed), Some(Pending))
                )
        };
        for from in &all {
            for to in &all {
                assert_eq!(
                    transition_allowed(from.as_ref(), to.as_ref()),
                    allowed(from, to),
                    "{from:?} -> {to:?}"
                );
                let old = from
                    .as_ref()
                    .map_or(json!({}), |p| json!({"phase": p.as_str()}));
                let new = to
                    .as_ref()
                    .map_or(json!({}), |p| json!({"phase": p.as_str()}));
                let v = write(old, new);
                assert_eq!(
                    v.allowed(),
                    allowed(from, to),
                    "{from:?} -> {to:?}: {}",
                    message(&v)
                );
            }
        }
    }

    #[test]
    fn v22_the_platform_operators_transitions_pass() {
        // (from, to, where the operator writes it)
        for (from, to) in [
            ("Pending", "Stopped"),    // reconcilePending: desired-phase=Stopped
            ("Creating", "Stopped"),   // reconcileCreating: pod gone, stop asked
            ("Creating", "Completed"), // UpdateSessionFromPodStatus: PodSucceeded
            ("Running", "Pending"),    // ResetToPending: pod missing, no attempt field
            ("Creating", "Pending"),   // PodMissing
            ("Completed", "Pending"),  // desired-phase=Running
        ] {
            assert_allowed(&write(json!({"phase": from}), json!({"phase": to})));
        }
    }

    #[test]
    fn v22_messages_list_the_allowed_targets_and_unknown_phases() {
        let v = write(json!({"phase": "Pending"}), json!({"phase": "Completed"}));
        assert_eq!(
            message(&v),
            r#"status.phase: Invalid value: "Completed": may not change from Pending to Completed; allowed: Creating, Stopping, Stopped, Failed"#
        );
        let v = write(json!({"phase": "Pending"}), json!({"phase": "Exploded"}));
        assert_denied(
            &v,
            422,
            &[("status.phase", "FieldValueNotSupported")],
            &["V22"],
        );
        let v = write(json!({"phase": "Running"}), json!({}));
        assert_denied(&v, 422, &[("status.phase", "FieldValueRequired")], &["V22"]);
    }

    #[test]
    fn v22_legacy_error_phase_counts_as_failed_in_v1alpha1() {
        let base = session(V1Alpha1, json!({}));
        let v = Case::update(
            V1Alpha1,
            with_status(base.clone(), json!({"phase": "Running"})),
            with_status(base.clone(), json!({"phase": "Error"})),
        )
        .status()
        .by(CONTROLLER)
        .validate();
        assert_allowed(&v);
        let v = Case::update(
            V1Alpha1,
            with_status(base.clone(), json!({"phase": "Error"})),
            with_status(base, json!({"phase": "Pending"})),
        )
        .status()
        .by(CONTROLLER)
        .validate();
        assert_allowed(&v);
    }

    #[test]
    fn v23_well_formed_conditions_pass() {
        let t = "2026-11-23T06:00:05Z";
        assert_allowed(&write(
            json!({"phase": "Pending"}),
            json!({"phase": "Creating", "observedGeneration": 1, "conditions": [
                cond("PodCreated", "True", "PodCreated", t),
                cond("Ready", "Unknown", "Waiting", "2026-11-23T06:00:05.123+01:00")]}),
        ));
    }

    #[test]
    fn v23_conditions_are_checked_field_by_field() {
        let t = "2026-11-23T06:00:05Z";
        let v = write(
            json!({"phase": "Pending"}),
            json!({"phase": "Pending", "observedGeneration": 5, "conditions": [
                cond("", "True", "Ok", t),
                cond("pod-created", "True", "Ok", t),
                cond("Ready", "Maybe", "not camel", t),
                cond("Ready", "True", "Ok", "yesterday"),
                {"type": "Synced", "status": "False", "observedGeneration": -1}
            ]}),
        );
        assert_denied(
            &v,
            422,
            &[
                ("status.observedGeneration", "FieldValueInvalid"),
                ("status.conditions[0].type", "FieldValueRequired"),
                ("status.conditions[1].type", "FieldValueInvalid"),
                ("status.conditions[2].status", "FieldValueNotSupported"),
                ("status.conditions[2].reason", "FieldValueInvalid"),
                ("status.conditions[3].type", "FieldValueDuplicate"),
                (
                    "status.conditions[3].lastTransitionTime",
                    "FieldValueInvalid",
                ),
                ("status.conditions[4].reason", "FieldValueRequired"),
                (
                    "status.conditions[4].lastTransitionTime",
                    "FieldValueRequired",
                ),
                (
                    "status.conditions[4].observedGeneration",
                    "FieldValueInvalid",
                ),
            ],
            &["V23"],
        );
        assert!(message(&v).contains("status.observedGeneration: Invalid value: 5: must be between 0 and metadata.generation (1)"));
    }
}
