//! Changes while a session runs, V13–V16 (UPDATE of the main resource; the
//! phase is read from `oldObject.status`, which the client cannot forge).

use crate::admission::field::{FieldError, FieldPath, Rule};
use crate::api::status::Phase;

use super::view::Versioned;

pub fn check<S: Versioned>(old: &S, new: &S) -> Vec<FieldError> {
    let phase = old.status_view().phase.cloned();
    // V13: nothing runs, anything may change. V16 holds by construction:
    // only `spec` is compared, so label/annotation/finalizer edits pass.
    let Some(phase) = phase.filter(Phase::is_active) else {
        return Vec::new();
    };
    let changed = new.changed_spec_fields(old);
    let runtime_ok = phase == Phase::Running && old.is_interactive();
    let root = FieldPath::new("spec");
    let mut errs = Vec::new();
    for field in changed {
        if !S::RUNTIME_FIELDS.contains(&field) {
            // V14
            errs.push(FieldError::forbidden(
                Rule::V14,
                root.child(field),
                format!("may not change while the session is active (phase: {phase})"),
            ));
        } else if !runtime_ok {
            // V15
            errs.push(FieldError::forbidden(
                Rule::V15,
                root.child(field),
                format!("may change only while an interactive session is Running (phase: {phase})"),
            ));
        }
    }
    errs
}
