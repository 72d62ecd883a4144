//! Ratcheting: on UPDATE, a spec-shape violation (V1–V12) whose value is
//! unchanged from `oldObject` is reported as a warning, so objects stored
//! before a rule existed can still get label, finalizer and status updates.

use std::collections::HashSet;

use crate::admission::field::{FieldError, Rule, warning};

/// Split `new_errors` into (errors, warnings) given the errors the old object had.
pub fn ratchet(
    new_errors: Vec<FieldError>,
    old_errors: &[FieldError],
) -> (Vec<FieldError>, Vec<String>) {
    if old_errors.is_empty() {
        return (new_errors, Vec::new());
    }
    let old: HashSet<(Rule, &str, String)> =
        old_errors.iter().map(FieldError::ratchet_key).collect();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for e in new_errors {
        if e.rule.ratchets() && old.contains(&e.ratchet_key()) {
            warnings.push(warning(&format!(
                "existing invalid value kept, please fix: {e}"
            )));
        } else {
            errors.push(e);
        }
    }
    (errors, warnings)
}
