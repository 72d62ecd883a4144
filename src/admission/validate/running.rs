//! Changes while a session runs, V13–V16 (UPDATE of the main resource; the
//! phase is read from `oldObject.status`, which the client cannot forge).

use crate::api::field::{FieldError, FieldPath, Rule};
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::admission::testkit::*;
    use crate::api::Version::{self, V1Alpha1, V1Alpha2};

    const FORBIDDEN: &str = "FieldValueForbidden";

    fn spec(version: Version, interactive: bool) -> Value {
        match version {
            V1Alpha1 => {
                json!({"initialPrompt": "p", "interactive": interactive, "mainRepoIndex": 0,
                               "repos": [{"url": "https://h/a/api", "branch": "main"}]})
            }
            V1Alpha2 => json!({"initialPrompt": "p", "interactive": interactive, "mainRepo": "api",
                               "repos": [{"url": "https://h/a/api", "branch": "main"}]}),
        }
    }

    fn in_phase(version: Version, phase: Option<&str>, spec: Value) -> Value {
        let obj = session(version, spec);
        match phase {
            Some(p) => with_status(obj, json!({"phase": p})),
            None => obj,
        }
    }

    fn change(
        version: Version,
        phase: Option<&str>,
        interactive: bool,
        edit: impl Fn(&mut Value),
    ) -> crate::admission::review::Verdict {
        let old = in_phase(version, phase, spec(version, interactive));
        let mut new = old.clone();
        edit(&mut new["spec"]);
        Case::update(version, old, new).validate()
    }

    fn add_repo(s: &mut Value) {
        if let Some(repos) = s["repos"].as_array_mut() {
            repos.push(json!({"url": "https://h/a/docs", "branch": "main"}));
        }
    }

    #[test]
    fn v13_any_change_is_allowed_when_nothing_runs() {
        for version in [V1Alpha1, V1Alpha2] {
            for phase in [
                None,
                Some("Pending"),
                Some("Stopped"),
                Some("Completed"),
                Some("Failed"),
            ] {
                let v = change(version, phase, false, |s| {
                    s["initialPrompt"] = json!("new");
                    s["interactive"] = json!(true);
                    add_repo(s);
                });
                assert_allowed(&v);
            }
        }
        assert_allowed(&change(V1Alpha1, Some("Error"), false, |s| {
            s["initialPrompt"] = json!("x")
        }));
    }

    #[test]
    fn v14_the_prompt_is_frozen_while_running() {
        for version in [V1Alpha1, V1Alpha2] {
            for phase in ["Creating", "Running", "Stopping"] {
                let v = change(version, Some(phase), true, |s| {
                    s["initialPrompt"] = json!("new")
                });
                assert_denied(&v, 422, &[("spec.initialPrompt", FORBIDDEN)], &["V14"]);
                assert!(message(&v).contains(&format!("(phase: {phase})")));
            }
        }
        let v = change(V1Alpha2, Some("Running"), true, |s| {
            s["timeoutSeconds"] = json!(5)
        });
        assert_denied(&v, 422, &[("spec.timeoutSeconds", FORBIDDEN)], &["V14"]);
        let v = change(V1Alpha1, Some("Running"), true, |s| s["timeout"] = json!(5));
        assert_denied(&v, 422, &[("spec.timeout", FORBIDDEN)], &["V14"]);
    }

    #[test]
    fn v15_adding_repo_to_running_interactive_session_is_allowed() {
        for version in [V1Alpha1, V1Alpha2] {
            let v = change(version, Some("Running"), true, |s| {
                add_repo(s);
                s["displayName"] = json!("renamed");
                s["activeWorkflow"] = json!({"gitUrl": "https://h/a/wf", "branch": "main"});
            });
            assert_allowed(&v);
        }
        assert_allowed(&change(V1Alpha2, Some("Running"), true, |s| {
            s["mainRepo"] = json!("api")
        }));
    }

    #[test]
    fn v15_adding_repo_to_running_non_interactive_session_is_forbidden() {
        let v = change(V1Alpha2, Some("Running"), false, add_repo);
        assert_denied(&v, 422, &[("spec.repos", FORBIDDEN)], &["V15"]);
        assert_eq!(
            message(&v),
            "spec.repos: Forbidden: may change only while an interactive session is Running (phase: Running)"
        );
    }

    #[test]
    fn v15_adding_repo_while_creating_is_forbidden_even_when_interactive() {
        let v = change(V1Alpha2, Some("Creating"), true, add_repo);
        assert_eq!(
            message(&v),
            "spec.repos: Forbidden: may change only while an interactive session is Running (phase: Creating)"
        );
        let v = change(V1Alpha1, Some("Stopping"), true, |s| {
            s["displayName"] = json!("late")
        });
        assert_denied(&v, 422, &[("spec.displayName", FORBIDDEN)], &["V15"]);
    }

    #[test]
    fn v16_metadata_only_updates_pass_while_running() {
        let old = in_phase(V1Alpha2, Some("Running"), spec(V1Alpha2, false));
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"team": "a"});
        new["metadata"]["finalizers"] = json!(["ambient-code.io/cleanup"]);
        new["metadata"]["annotations"] = json!({"note": "hi"});
        assert_allowed(&Case::update(V1Alpha2, old, new).validate());
    }

    #[test]
    fn the_phase_comes_from_the_old_object_not_the_new_one() {
        let old = in_phase(V1Alpha2, Some("Running"), spec(V1Alpha2, false));
        let mut new = old.clone();
        new["status"] = json!({"phase": "Stopped"});
        new["spec"]["initialPrompt"] = json!("sneaky");
        let v = Case::update(V1Alpha2, old, new).validate();
        assert_denied(&v, 422, &[("spec.initialPrompt", FORBIDDEN)], &["V14"]);
    }
}
