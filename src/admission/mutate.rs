//! Mutation M1–M7.
//!
//! The mutating webhook runs before schema validation, so fields may have the
//! wrong JSON type. Mutation therefore reads the raw `spec` as JSON and only
//! touches a field whose type it understands; anything else is left for the
//! schema to reject. The patch is built op by op against the request object
//! (never by diffing a re-serialized struct, which would `remove` every field
//! the struct does not know).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::Version;
use crate::api::common::repo_name;

use crate::api::field::warning;

pub use crate::api::common::DEFAULT_BRANCH;

/// One RFC 6902 operation. Paths are JSON pointers into the whole object.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    Add { path: String, value: Value },
    Replace { path: String, value: Value },
    Remove { path: String },
}

/// The outcome of mutating one object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mutation {
    pub ops: Vec<PatchOp>,
    pub warnings: Vec<String>,
}

impl Mutation {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The patch as JSON bytes, `None` when there is nothing to change.
    pub fn patch_json(&self) -> Option<Vec<u8>> {
        if self.ops.is_empty() {
            return None;
        }
        serde_json::to_vec(&self.ops).ok()
    }

    fn set(&mut self, parent: &Map<String, Value>, pointer: &str, key: &str, value: Value) {
        let path = format!("{pointer}/{key}");
        self.ops.push(if parent.contains_key(key) {
            PatchOp::Replace { path, value }
        } else {
            PatchOp::Add { path, value }
        });
    }

    fn remove(&mut self, pointer: &str, key: &str) {
        self.ops.push(PatchOp::Remove {
            path: format!("{pointer}/{key}"),
        });
    }

    fn warn(&mut self, text: &str) {
        self.warnings.push(warning(text));
    }
}

/// Mutate the `spec` of an object of `version`. `spec` is the raw JSON value
/// (any type); ops are rooted at the object (`/spec/...`).
pub fn mutate_spec(version: Version, spec: Option<&Value>) -> Mutation {
    let mut m = Mutation::default();
    let Some(Value::Object(spec)) = spec else {
        return m;
    };
    legacy_prompt(spec, &mut m);
    if let Some(Value::Array(repos)) = spec.get("repos") {
        for (i, repo) in repos.iter().enumerate() {
            if let Value::Object(repo) = repo {
                normalize_repo(i, repo, &mut m);
            }
        }
    }
    if let Some(Value::Object(wf)) = spec.get("activeWorkflow") {
        normalize_workflow(wf, &mut m);
    }
    if version == Version::V1Alpha2 {
        default_main_repo(spec, &mut m);
    }
    m
}

/// M6: `metadata.annotations[vteam.ambient-code/created-by-runner]` names
/// the runner session that created the object. `annotations` is the raw
/// value (any type: a non-map is left for the schema to reject).
pub fn mark_created_by_runner(annotations: Option<&Value>, session: &str, m: &mut Mutation) {
    use crate::api::annotations::CREATED_BY_RUNNER;
    let value = Value::String(session.to_owned());
    match annotations {
        None | Some(Value::Null) => m.ops.push(PatchOp::Add {
            path: "/metadata/annotations".into(),
            value: Value::Object(Map::from_iter([(CREATED_BY_RUNNER.to_owned(), value)])),
        }),
        Some(Value::Object(map)) => {
            if map.get(CREATED_BY_RUNNER) != Some(&value) {
                // RFC 6901: `/` in a key is `~1`.
                let path = format!(
                    "/metadata/annotations/{}",
                    CREATED_BY_RUNNER.replace('~', "~0").replace('/', "~1")
                );
                m.ops.push(if map.contains_key(CREATED_BY_RUNNER) {
                    PatchOp::Replace { path, value }
                } else {
                    PatchOp::Add { path, value }
                });
            }
        }
        Some(_) => {}
    }
}

/// M7: `spec.userContext` from the creating user: the id as the platform's
/// backend spells it, the name, and the user's own groups (not the
/// `system:` ones every client has).
pub fn fill_user_context(user: &super::review::UserInfo, m: &mut Mutation) {
    let groups: Vec<Value> = user
        .groups
        .iter()
        .filter(|g| !g.starts_with("system:"))
        .map(|g| Value::String(g.clone()))
        .collect();
    let mut ctx = Map::new();
    ctx.insert(
        "userId".into(),
        Value::String(super::validate::principals::platform_user_id(
            &user.username,
        )),
    );
    ctx.insert("displayName".into(), Value::String(user.username.clone()));
    ctx.insert("groups".into(), Value::Array(groups));
    m.ops.push(PatchOp::Add {
        path: "/spec/userContext".into(),
        value: Value::Object(ctx),
    });
}

/// M1: `prompt` becomes `initialPrompt`, as conversion does. When both are
/// set and differ, nothing is deleted: `initialPrompt` wins and `prompt`
/// stays (conversion stashes it).
fn legacy_prompt(spec: &Map<String, Value>, m: &mut Mutation) {
    let Some(Value::String(prompt)) = spec.get("prompt") else {
        return;
    };
    match spec.get("initialPrompt") {
        None => {
            m.set(
                spec,
                "/spec",
                "initialPrompt",
                Value::String(prompt.clone()),
            );
            m.remove("/spec", "prompt");
            m.warn("spec.prompt is deprecated: moved to spec.initialPrompt");
        }
        Some(Value::String(initial)) if initial.is_empty() => {
            m.set(
                spec,
                "/spec",
                "initialPrompt",
                Value::String(prompt.clone()),
            );
            m.remove("/spec", "prompt");
            m.warn("spec.prompt is deprecated: moved to spec.initialPrompt");
        }
        Some(Value::String(initial)) if initial == prompt => {
            m.remove("/spec", "prompt");
            m.warn("spec.prompt is deprecated: removed, spec.initialPrompt has the same text");
        }
        Some(Value::String(_)) => {
            m.warn("spec.prompt is deprecated and ignored: spec.initialPrompt is set");
        }
        Some(_) => {}
    }
}

/// A string field, trimmed (M4). `None` when absent or not a string.
fn trimmed<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<(&'a str, &'a str)> {
    match obj.get(key) {
        Some(Value::String(s)) => Some((s.as_str(), s.trim())),
        _ => None,
    }
}

/// M4 on one string field: replace it with its trimmed text when that differs.
fn trim_field(obj: &Map<String, Value>, pointer: &str, key: &str, m: &mut Mutation) {
    if let Some((raw, t)) = trimmed(obj, key)
        && raw != t
    {
        m.set(obj, pointer, key, Value::String(t.to_owned()));
    }
}

/// M3 (+M4) on a `branch` field: absent becomes `main` (the CRD's default).
/// An explicit `""` stays: the platform clones the repository's default
/// branch for it (`master` for some), which `main` would break.
fn default_branch(obj: &Map<String, Value>, pointer: &str, m: &mut Mutation) {
    match obj.get("branch") {
        None => m.set(obj, pointer, "branch", Value::String(DEFAULT_BRANCH.into())),
        Some(Value::String(_)) => trim_field(obj, pointer, "branch", m),
        Some(_) => {}
    }
}

fn trim_git_ref(parent: &Map<String, Value>, pointer: &str, key: &str, m: &mut Mutation) {
    if let Some(Value::Object(r)) = parent.get(key) {
        let p = format!("{pointer}/{key}");
        trim_field(r, &p, "url", m);
        trim_field(r, &p, "branch", m);
    }
}

fn normalize_repo(i: usize, repo: &Map<String, Value>, m: &mut Mutation) {
    let pointer = format!("/spec/repos/{i}");
    trim_git_ref(repo, &pointer, "output", m);
    match repo.get("input") {
        None => {
            trim_field(repo, &pointer, "url", m);
            default_branch(repo, &pointer, m);
        }
        Some(Value::Object(input)) => legacy_repo(i, repo, input, &pointer, m),
        Some(_) => {}
    }
}

/// M2: `{input: {url, branch}, output}` becomes `{url, branch, output}`.
/// Only an `input` holding nothing but string `url`/`branch` is rewritten, so
/// no field is ever dropped.
fn legacy_repo(
    i: usize,
    repo: &Map<String, Value>,
    input: &Map<String, Value>,
    pointer: &str,
    m: &mut Mutation,
) {
    let only_known =
        input.keys().all(|k| k == "url" || k == "branch") && input.values().all(Value::is_string);
    let in_url = trimmed(input, "url").map(|(_, t)| t);
    let in_branch = trimmed(input, "branch")
        .map(|(_, t)| t)
        .filter(|b| !b.is_empty());
    let Some(in_url) = in_url.filter(|_| only_known) else {
        trim_git_ref(repo, pointer, "input", m);
        return;
    };
    match repo.get("url") {
        None => {
            // The flat branch, if any: `Some(None)` when absent or blank.
            let flat_branch = match repo.get("branch") {
                None => Some(None),
                Some(Value::String(b)) if b.trim().is_empty() => Some(None),
                Some(Value::String(b)) => Some(Some(b.trim())),
                Some(_) => None,
            };
            let target = match flat_branch {
                Some(Some(fb)) if in_branch.is_none_or(|ib| ib == fb) => fb,
                // The served schema defaults `branch` to main on every repo
                // item, legacy ones included: that says nothing against
                // what `input.branch` asks for.
                Some(Some(DEFAULT_BRANCH)) => in_branch.unwrap_or(DEFAULT_BRANCH),
                Some(None) => in_branch.unwrap_or(DEFAULT_BRANCH),
                // Conflicting or mistyped branch: keep both for validation to report.
                _ => {
                    trim_git_ref(repo, pointer, "input", m);
                    return;
                }
            };
            m.set(repo, pointer, "url", Value::String(in_url.to_owned()));
            if repo.get("branch").and_then(Value::as_str) != Some(target) {
                m.set(repo, pointer, "branch", Value::String(target.to_owned()));
            }
            m.remove(pointer, "input");
            m.warn(&format!(
                "spec.repos[{i}].input is deprecated: moved to spec.repos[{i}].url and .branch"
            ));
        }
        Some(Value::String(url)) if url.trim() == in_url => {
            let flat_branch = match repo.get("branch") {
                None => Some(DEFAULT_BRANCH),
                Some(Value::String(b)) => Some(b.trim()),
                Some(_) => None,
            };
            if flat_branch.is_some_and(|fb| in_branch.is_none_or(|ib| ib == fb)) {
                trim_field(repo, pointer, "url", m);
                default_branch(repo, pointer, m);
                m.remove(pointer, "input");
                m.warn(&format!(
                    "spec.repos[{i}].input is deprecated: removed, it repeats spec.repos[{i}].url"
                ));
            } else if let (Some(DEFAULT_BRANCH), Some(ib)) = (flat_branch, in_branch) {
                // As above: a defaulted `main` yields to input.branch.
                trim_field(repo, pointer, "url", m);
                m.set(repo, pointer, "branch", Value::String(ib.to_owned()));
                m.remove(pointer, "input");
                m.warn(&format!(
                    "spec.repos[{i}].input is deprecated: removed, it repeats spec.repos[{i}].url"
                ));
            } else {
                trim_git_ref(repo, pointer, "input", m);
            }
        }
        // Both forms with different URLs: validation reports it.
        Some(_) => trim_git_ref(repo, pointer, "input", m),
    }
}

/// M3/M4 for `activeWorkflow`: trim, and default the branch once a gitUrl is set.
fn normalize_workflow(wf: &Map<String, Value>, m: &mut Mutation) {
    let pointer = "/spec/activeWorkflow";
    trim_field(wf, pointer, "gitUrl", m);
    trim_field(wf, pointer, "path", m);
    let has_url = trimmed(wf, "gitUrl").is_some_and(|(_, t)| !t.is_empty());
    if has_url {
        default_branch(wf, pointer, m);
    } else {
        trim_field(wf, pointer, "branch", m);
    }
}

/// M5 (v1alpha2): `mainRepo` defaults to the first repo's name.
fn default_main_repo(spec: &Map<String, Value>, m: &mut Mutation) {
    let unset = match spec.get("mainRepo") {
        None => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    };
    if !unset {
        return;
    }
    let Some(Value::Array(repos)) = spec.get("repos") else {
        return;
    };
    let first_url = match repos.first() {
        Some(Value::Object(r)) => match (r.get("url"), r.get("input")) {
            (Some(Value::String(u)), _) => Some(u.as_str()),
            (None, Some(Value::Object(input))) => match input.get("url") {
                Some(Value::String(u)) => Some(u.as_str()),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    let Some(name) = first_url.map(repo_name).filter(|n| !n.is_empty()) else {
        return;
    };
    m.set(spec, "/spec", "mainRepo", Value::String(name.to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(object: &Value, m: &Mutation) -> Value {
        let mut out = object.clone();
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::to_value(&m.ops).expect("serializes"))
                .unwrap_or_else(|e| panic!("patch does not parse: {e}"));
        json_patch::patch(&mut out, &patch).unwrap_or_else(|e| panic!("patch fails: {e}"));
        out
    }

    fn run(version: Version, object: Value) -> (Value, Mutation) {
        let m = mutate_spec(version, object.get("spec"));
        let out = apply(&object, &m);
        let again = mutate_spec(version, out.get("spec"));
        assert!(again.is_empty(), "not idempotent: {:?}", again.ops);
        (out, m)
    }

    #[test]
    fn legacy_v1alpha1_session_is_normalized_with_a_minimal_patch() {
        let obj = json!({"spec": {
            "prompt": "Refactor the auth module",
            "repos": [{"input": {"url": "https://github.com/acme/api.git", "branch": "main"},
                       "output": {"url": "https://github.com/me/api.git", "branch": "fix-auth"}}],
            "mainRepoIndex": 0
        }});
        let (out, m) = run(Version::V1Alpha1, obj);
        assert_eq!(
            serde_json::to_value(&m.ops).expect("serializes"),
            json!([
                {"op": "add", "path": "/spec/initialPrompt", "value": "Refactor the auth module"},
                {"op": "remove", "path": "/spec/prompt"},
                {"op": "add", "path": "/spec/repos/0/url", "value": "https://github.com/acme/api.git"},
                {"op": "add", "path": "/spec/repos/0/branch", "value": "main"},
                {"op": "remove", "path": "/spec/repos/0/input"},
            ])
        );
        assert_eq!(out["spec"]["repos"][0]["output"]["branch"], "fix-auth");
        assert_eq!(
            m.warnings,
            vec![
                "spec.prompt is deprecated: moved to spec.initialPrompt".to_owned(),
                "spec.repos[0].input is deprecated: moved to spec.repos[0].url and .branch"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn both_prompts_differing_keeps_both_and_warns() {
        let (out, m) = run(
            Version::V1Alpha1,
            json!({"spec": {"prompt": "old", "initialPrompt": "new"}}),
        );
        assert!(m.ops.is_empty());
        assert_eq!(out["spec"]["prompt"], "old");
        assert_eq!(m.warnings.len(), 1);
    }

    #[test]
    fn equal_prompts_drop_the_legacy_copy() {
        let (out, _) = run(
            Version::V1Alpha1,
            json!({"spec": {"prompt": "same", "initialPrompt": "same"}}),
        );
        assert_eq!(out, json!({"spec": {"initialPrompt": "same"}}));
    }

    #[test]
    fn empty_initial_prompt_is_replaced_not_added() {
        let (out, m) = run(
            Version::V1Alpha1,
            json!({"spec": {"prompt": "p", "initialPrompt": ""}}),
        );
        assert!(
            matches!(&m.ops[0], PatchOp::Replace { path, .. } if path == "/spec/initialPrompt")
        );
        assert_eq!(out, json!({"spec": {"initialPrompt": "p"}}));
    }

    #[test]
    fn branches_default_to_main_and_whitespace_is_trimmed() {
        let (out, _) = run(
            Version::V1Alpha2,
            json!({"spec": {
                "repos": [{"url": "  https://github.com/a/api.git\n"},
                          {"url": "git@github.com:a/web.git", "branch": " dev ",
                           "output": {"url": " https://github.com/me/web.git ", "branch": "  "}}],
                "activeWorkflow": {"gitUrl": " https://github.com/a/wf.git", "path": " flows/x "}
            }}),
        );
        assert_eq!(
            out,
            json!({"spec": {
                "repos": [{"url": "https://github.com/a/api.git", "branch": "main"},
                          {"url": "git@github.com:a/web.git", "branch": "dev",
                           "output": {"url": "https://github.com/me/web.git", "branch": ""}}],
                "activeWorkflow": {"gitUrl": "https://github.com/a/wf.git", "path": "flows/x", "branch": "main"},
                "mainRepo": "api"
            }})
        );
    }

    #[test]
    fn an_explicit_empty_branch_asks_for_the_default_branch_and_stays() {
        // The platform's scheduled-session form writes `branch: ""`; its
        // hydrate step then clones the repository's default branch.
        for v in Version::ALL {
            let (out, _) = run(
                v,
                json!({"spec": {
                    "repos": [{"url": "https://h/o/api", "branch": ""},
                              {"url": "https://h/o/web", "branch": "   "}],
                    "activeWorkflow": {"gitUrl": "https://h/o/wf", "branch": ""}
                }}),
            );
            assert_eq!(out["spec"]["repos"][0]["branch"], "", "{v}");
            assert_eq!(out["spec"]["repos"][1]["branch"], "", "{v}");
            assert_eq!(out["spec"]["activeWorkflow"]["branch"], "", "{v}");
        }
    }

    #[test]
    fn the_schemas_default_main_on_a_legacy_repo_yields_to_input_branch() {
        // The served schema defaults `branch` (and `autoPush`) on every repo
        // item before mutation runs, legacy ones included.
        let (out, m) = run(
            Version::V1Alpha1,
            json!({"spec": {"repos": [{"branch": "main", "autoPush": false,
                "input": {"url": "https://h/o/api.git", "branch": "dev"}}]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"repos": [{"url": "https://h/o/api.git", "branch": "dev", "autoPush": false}]}})
        );
        assert_eq!(m.warnings.len(), 1);
        // The same beside a flat url that repeats input's.
        let (out, _) = run(
            Version::V1Alpha1,
            json!({"spec": {"repos": [{"url": "https://h/o/api.git", "branch": "main",
                "input": {"url": "https://h/o/api.git", "branch": "dev"}}]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"repos": [{"url": "https://h/o/api.git", "branch": "dev"}]}})
        );
    }

    #[test]
    fn a_runners_creation_is_marked_with_its_session() {
        let mut m = Mutation::default();
        mark_created_by_runner(None, "s1", &mut m);
        assert_eq!(
            serde_json::to_value(&m.ops).expect("serializes"),
            json!([{"op": "add", "path": "/metadata/annotations",
                    "value": {"vteam.ambient-code/created-by-runner": "s1"}}])
        );
        let mut m = Mutation::default();
        mark_created_by_runner(Some(&json!({"a": "b"})), "s1", &mut m);
        let out = apply(&json!({"metadata": {"annotations": {"a": "b"}}}), &m);
        assert_eq!(
            out,
            json!({"metadata": {"annotations": {"a": "b", "vteam.ambient-code/created-by-runner": "s1"}}})
        );
        // A forged mark is replaced; the right one, or a mistyped map, left alone.
        let mut m = Mutation::default();
        let forged = json!({"vteam.ambient-code/created-by-runner": "other"});
        mark_created_by_runner(Some(&forged), "s1", &mut m);
        let out = apply(&json!({"metadata": {"annotations": forged}}), &m);
        assert_eq!(
            out["metadata"]["annotations"]["vteam.ambient-code/created-by-runner"],
            "s1"
        );
        for kept in [
            json!({"vteam.ambient-code/created-by-runner": "s1"}),
            json!("x"),
        ] {
            let mut m = Mutation::default();
            mark_created_by_runner(Some(&kept), "s1", &mut m);
            assert!(m.is_empty(), "{kept}");
        }
    }

    #[test]
    fn main_repo_defaults_only_in_v1alpha2_and_only_when_unset() {
        let spec = json!({"spec": {"repos": [{"url": "https://h/o/api.git", "branch": "main"}]}});
        let (v1, _) = run(Version::V1Alpha1, spec.clone());
        assert!(v1["spec"].get("mainRepo").is_none());
        let (v2, _) = run(Version::V1Alpha2, spec);
        assert_eq!(v2["spec"]["mainRepo"], "api");
        let (kept, m) = run(
            Version::V1Alpha2,
            json!({"spec": {"mainRepo": "web", "repos": [{"url": "https://h/o/api.git", "branch": "main"}]}}),
        );
        assert!(m.is_empty());
        assert_eq!(kept["spec"]["mainRepo"], "web");
    }

    #[test]
    fn workflow_without_git_url_gets_no_branch() {
        let (out, m) = run(
            Version::V1Alpha2,
            json!({"spec": {"activeWorkflow": {"path": "x"}}}),
        );
        assert!(m.is_empty());
        assert_eq!(out, json!({"spec": {"activeWorkflow": {"path": "x"}}}));
    }

    #[test]
    fn wrong_types_are_left_for_schema_validation() {
        let obj = json!({"spec": {
            "prompt": 42, "initialPrompt": ["x"],
            "repos": [7, {"url": 3, "branch": false}, {"input": "str"}, {"input": {"url": 1}}],
            "activeWorkflow": "wf", "mainRepo": 5, "timeout": "600"
        }});
        for v in Version::ALL {
            let (out, m) = run(v, obj.clone());
            assert!(m.is_empty(), "{v}: {:?}", m.ops);
            assert_eq!(out, obj);
        }
        for spec in [json!(null), json!("x"), json!([1]), json!(3)] {
            assert!(mutate_spec(Version::V1Alpha2, Some(&spec)).is_empty());
        }
        assert!(mutate_spec(Version::V1Alpha2, None).is_empty());
    }

    #[test]
    fn legacy_input_with_unknown_fields_is_not_rewritten() {
        let (out, m) = run(
            Version::V1Alpha1,
            json!({"spec": {"repos": [{"input": {"url": " https://h/o/r ", "depth": 1}}]}}),
        );
        assert!(m.warnings.is_empty());
        assert_eq!(out["spec"]["repos"][0]["input"]["depth"], 1);
        assert_eq!(out["spec"]["repos"][0]["input"]["url"], "https://h/o/r");
    }

    #[test]
    fn repeated_legacy_input_is_dropped_only_when_it_agrees() {
        let (out, _) = run(
            Version::V1Alpha1,
            json!({"spec": {"repos": [{"url": "https://h/o/r", "input": {"url": "https://h/o/r", "branch": "main"}}]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"repos": [{"url": "https://h/o/r", "branch": "main"}]}})
        );
        let conflicting = json!({"spec": {"repos": [{"url": "https://h/o/r", "branch": "dev",
            "input": {"url": "https://h/o/r", "branch": "main"}}]}});
        let (out, m) = run(Version::V1Alpha1, conflicting.clone());
        assert!(m.is_empty());
        assert_eq!(out, conflicting);
        let conflicting_flat_branch = json!({"spec": {"repos": [{"branch": "dev",
            "input": {"url": "https://h/o/r", "branch": "main"}}]}});
        let (out, m) = run(Version::V1Alpha1, conflicting_flat_branch.clone());
        assert!(m.is_empty(), "{:?}", m.ops);
        assert_eq!(out, conflicting_flat_branch);
    }
}
