//! Ratcheting: on UPDATE, a spec-shape violation (V1–V11) whose value is
//! unchanged from `oldObject` is reported as a warning, so objects stored
//! before a rule existed can still get label, finalizer and status updates.

use std::collections::HashSet;

use crate::api::field::{FieldError, Rule, warning};

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::admission::testkit::*;
    use crate::api::Version::V1Alpha2;

    fn stored() -> serde_json::Value {
        // Stored before V1 existed: a local path.
        session(
            V1Alpha2,
            json!({"repos": [{"url": "/srv/git/api", "branch": "main"}]}),
        )
    }

    #[test]
    fn an_unchanged_invalid_value_is_a_warning_on_update() {
        let old = stored();
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"archived": "true"});
        let v = Case::update(V1Alpha2, old, new).validate();
        assert_allowed(&v);
        assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
        assert!(
            v.warnings[0].starts_with("existing invalid value kept, please fix: spec.repos[0].url")
        );
        assert!(v.warnings[0].chars().count() <= 120);
    }

    #[test]
    fn a_changed_or_new_invalid_value_is_still_an_error() {
        let old = stored();
        let mut changed = old.clone();
        changed["spec"]["repos"][0]["url"] = json!("/srv/git/other");
        let v = Case::update(V1Alpha2, old.clone(), changed).validate();
        assert_denied(
            &v,
            422,
            &[("spec.repos[0].url", "FieldValueInvalid")],
            &["V1"],
        );

        let mut added = old.clone();
        added["spec"]["timeoutSeconds"] = json!(0);
        let v = Case::update(V1Alpha2, old, added).validate();
        assert_denied(
            &v,
            422,
            &[("spec.timeoutSeconds", "FieldValueInvalid")],
            &["V9"],
        );
        assert_eq!(v.warnings.len(), 1, "the unchanged url still warns");
    }

    #[test]
    fn create_never_ratchets() {
        let v = Case::create(V1Alpha2, stored()).validate();
        assert_denied(
            &v,
            422,
            &[("spec.repos[0].url", "FieldValueInvalid")],
            &["V1"],
        );
    }
}
