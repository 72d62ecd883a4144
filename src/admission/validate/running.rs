//! Changes while a session runs, V13–V16 (UPDATE of the main resource; the
//! phase is read from `oldObject.status`, which the client cannot forge).
//!
//! What may change is what the ambient-code platform's backend changes on
//! a session with a runner (`components/backend/handlers/sessions.go`):
//! display names any time, MCP servers for the next restart, repos, the
//! workflow and the model live on a Running session, and the prompt, other
//! model settings and the timeout once the runner is going away.

use crate::api::common::LlmSettings;
use crate::api::field::{FieldError, FieldPath, Rule};
use crate::api::status::Phase;

use super::view::Versioned;

/// When a spec field may change while a runner pod may exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edit {
    /// `displayName` (UpdateSessionDisplayName, and the backend's generated
    /// name while Creating) and `mcpServers` (saved for the next restart).
    Anytime,
    /// Applied by the runner as it runs: repos (AddRepo, RemoveRepo), the
    /// workflow (SelectWorkflow), the main repo, the model (SwitchModel).
    Live,
    /// Read at the next start: the prompt, the other model settings and the
    /// timeout; the backend's UpdateSession refuses them while Creating or
    /// Running, not while Stopping.
    NextStart,
    /// Everything else: fixed while a runner may exist.
    Frozen,
}

fn edit_of(field: &str, old: Option<&LlmSettings>, new: Option<&LlmSettings>) -> Edit {
    match field {
        "displayName" | "mcpServers" => Edit::Anytime,
        "repos" | "activeWorkflow" | "mainRepo" | "mainRepoIndex" => Edit::Live,
        "llmSettings" if model_only(old, new) => Edit::Live,
        "initialPrompt" | "prompt" | "timeout" | "timeoutSeconds" | "llmSettings" => {
            Edit::NextStart
        }
        _ => Edit::Frozen,
    }
}

/// Only `llmSettings.model` differs (the platform's live model switch).
fn model_only(old: Option<&LlmSettings>, new: Option<&LlmSettings>) -> bool {
    let (Some(old), Some(new)) = (old, new) else {
        return false;
    };
    old.model != new.model && old.temperature == new.temperature && old.max_tokens == new.max_tokens
}

pub fn check<S: Versioned>(old: &S, new: &S) -> Vec<FieldError> {
    let phase = old.status_view().phase.cloned();
    // V13: nothing runs, anything may change. V16 holds by construction:
    // only `spec` is compared, so label/annotation/finalizer edits pass.
    let Some(phase) = phase.filter(Phase::is_active) else {
        return Vec::new();
    };
    // An explicit `interactive: false` keeps batch semantics; absent is
    // interactive, as the platform (which removed the field) treats every session.
    let live_ok = phase == Phase::Running && old.is_interactive();
    let (old_llm, new_llm) = (old.spec_view().llm, new.spec_view().llm);
    let root = FieldPath::new("spec");
    let mut errs = Vec::new();
    for field in new.changed_spec_fields(old) {
        let refused = match edit_of(field, old_llm, new_llm) {
            Edit::Anytime => None,
            Edit::Live if live_ok => None,
            Edit::Live => Some((
                Rule::V15,
                format!("may change only while an interactive session is Running (phase: {phase})"),
            )),
            Edit::NextStart if phase == Phase::Stopping => None,
            Edit::NextStart | Edit::Frozen => Some((
                Rule::V14,
                format!("may not change while the session is active (phase: {phase})"),
            )),
        };
        if let Some((rule, detail)) = refused {
            errs.push(FieldError::forbidden(rule, root.child(field), detail));
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
    fn v14_the_prompt_is_frozen_while_a_runner_starts_or_runs() {
        for version in [V1Alpha1, V1Alpha2] {
            for phase in ["Creating", "Running"] {
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
    fn the_backends_update_session_fields_may_change_while_stopping() {
        // UpdateSession refuses only Running and Creating sessions.
        for version in [V1Alpha1, V1Alpha2] {
            let v = change(version, Some("Stopping"), true, |s| {
                s["initialPrompt"] = json!("next time");
                s["llmSettings"] = json!({"model": "m2", "temperature": 0.2, "maxTokens": 10});
                s["displayName"] = json!("late");
            });
            assert_allowed(&v);
        }
        let v = change(V1Alpha2, Some("Stopping"), true, |s| {
            s["environmentVariables"] = json!({"X": "1"})
        });
        assert_denied(
            &v,
            422,
            &[("spec.environmentVariables", FORBIDDEN)],
            &["V14"],
        );
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
    fn a_session_without_interactive_is_interactive_as_on_the_platform() {
        // The platform removed the field; every one of its sessions lacks it.
        for version in [V1Alpha1, V1Alpha2] {
            let mut spec = spec(version, true);
            if let Some(o) = spec.as_object_mut() {
                o.remove("interactive");
            }
            let old = in_phase(version, Some("Running"), spec);
            let mut new = old.clone();
            add_repo(&mut new["spec"]);
            new["spec"]["activeWorkflow"] = json!({"gitUrl": "https://h/a/wf", "branch": "main"});
            assert_allowed(&Case::update(version, old, new).validate());
        }
    }

    #[test]
    fn the_model_switches_live_but_other_model_settings_wait() {
        let with_llm = |version| {
            let mut s = spec(version, true);
            s["llmSettings"] = json!({"model": "m1", "temperature": 0.7, "maxTokens": 4000});
            s
        };
        for version in [V1Alpha1, V1Alpha2] {
            let old = in_phase(version, Some("Running"), with_llm(version));
            let mut new = old.clone();
            new["spec"]["llmSettings"]["model"] = json!("m2");
            assert_allowed(&Case::update(version, old.clone(), new.clone()).validate());
            new["spec"]["llmSettings"]["temperature"] = json!(0.1);
            let v = Case::update(version, old, new).validate();
            assert_denied(&v, 422, &[("spec.llmSettings", FORBIDDEN)], &["V14"]);
        }
        // Not while the runner starts: the backend's SwitchModel wants Running.
        let old = in_phase(V1Alpha2, Some("Creating"), with_llm(V1Alpha2));
        let mut new = old.clone();
        new["spec"]["llmSettings"]["model"] = json!("m2");
        let v = Case::update(V1Alpha2, old, new).validate();
        assert_denied(&v, 422, &[("spec.llmSettings", FORBIDDEN)], &["V15"]);
    }

    #[test]
    fn display_names_and_mcp_servers_may_change_in_any_phase() {
        for phase in ["Creating", "Running", "Stopping"] {
            for interactive in [true, false] {
                let v = change(V1Alpha2, Some(phase), interactive, |s| {
                    s["displayName"] = json!("Generated name");
                    s["mcpServers"] = json!({"custom": {"docs": {"type": "http", "url": "https://mcp.example.com"}}});
                });
                assert_allowed(&v);
            }
        }
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
    fn v15_adding_repo_while_creating_or_stopping_is_forbidden_even_when_interactive() {
        let v = change(V1Alpha2, Some("Creating"), true, add_repo);
        assert_eq!(
            message(&v),
            "spec.repos: Forbidden: may change only while an interactive session is Running (phase: Creating)"
        );
        let v = change(V1Alpha1, Some("Stopping"), true, |s| {
            s["activeWorkflow"] = json!({"gitUrl": "https://h/a/wf", "branch": "main"})
        });
        assert_denied(&v, 422, &[("spec.activeWorkflow", FORBIDDEN)], &["V15"]);
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
