//! Spec shape, V1–V12: what a session may say, whatever its phase.

use std::collections::HashMap;

use crate::admission::Limits;
use crate::admission::git::{self, UrlProblem};
use crate::api::common::{GitRef, repo_name};
use crate::api::field::{BadValue, FieldError, FieldPath, Rule};
use crate::api::runner_env;

use super::view::{MainRepo, SpecView};

pub const MAX_TOKENS: i64 = 200_000;

/// Errors (V1–V11) and warnings (V12) for one spec.
pub fn check(spec: &SpecView<'_>, limits: &Limits) -> (Vec<FieldError>, Vec<String>) {
    let root = FieldPath::new("spec");
    let mut errs = Vec::new();
    check_repos(spec, limits, &root, &mut errs);
    check_workflow(spec, limits, &root, &mut errs);
    check_prompts(spec, limits, &root, &mut errs);
    check_llm(spec, &root, &mut errs);
    check_timeouts(spec, &root, &mut errs);
    check_env(spec, &root, &mut errs);
    check_mcp(spec, limits, &root, &mut errs);
    check_main_repo(spec, &root, &mut errs);
    let mut warnings: Vec<String> = spec
        .deprecated
        .iter()
        .map(|f| format!("spec.{f} is deprecated and ignored"))
        .collect();
    warnings.extend(credential_warnings(spec));
    (errs, warnings)
}

/// V1–V3 for one URL.
fn check_url(path: FieldPath, url: &str, limits: &Limits, errs: &mut Vec<FieldError>) {
    if url.is_empty() {
        errs.push(FieldError::required(Rule::V1, path, ""));
        return;
    }
    let problem = match git::parse(url) {
        Ok(parsed) => match git::check_host(parsed.host, limits) {
            Ok(()) => return,
            Err(p) => p,
        },
        Err(p) => p,
    };
    errs.push(url_error(path, url, &problem));
}

/// A URL's problem as the V1, V2 or V3 field error (the URL masked).
fn url_error(path: FieldPath, url: &str, problem: &UrlProblem) -> FieldError {
    let rule = match problem {
        UrlProblem::Credentials => Rule::V2,
        UrlProblem::ForbiddenHost(_) | UrlProblem::HostNotAllowed => Rule::V3,
        _ => Rule::V1,
    };
    FieldError::invalid(
        rule,
        path,
        BadValue::str(&git::redact(url)),
        problem.detail(),
    )
}

/// V1–V3 for an MCP server's URL: https or http, no credentials, none of
/// the hosts a git URL may not name (the git-host allow-list aside).
fn check_mcp(spec: &SpecView<'_>, limits: &Limits, root: &FieldPath, errs: &mut Vec<FieldError>) {
    let Some(custom) = spec.mcp.and_then(|m| m.custom.as_ref()) else {
        return;
    };
    let p = root.child("mcpServers").child("custom");
    for (name, cfg) in custom {
        let Some(url) = cfg.get("url").and_then(|u| u.as_str()) else {
            continue;
        };
        let problem = match git::parse_service_url(url) {
            Ok(parsed) => match git::check_service_host(parsed.host, limits) {
                Ok(()) => continue,
                Err(p) => p,
            },
            Err(p) => p,
        };
        errs.push(url_error(p.key(name).child("url"), url, &problem));
    }
}

/// V4 for one branch. An empty branch is the platform's way of asking for
/// the repository's default branch (its hydrate step clones that).
fn check_branch(path: FieldPath, branch: &str, errs: &mut Vec<FieldError>) {
    if branch.is_empty() {
        return;
    }
    if let Err(why) = git::check_branch(branch) {
        errs.push(FieldError::invalid(
            Rule::V4,
            path,
            BadValue::str(branch),
            format!("{why} (git check-ref-format --branch)"),
        ));
    }
}

fn check_git_ref(path: &FieldPath, r: &GitRef, limits: &Limits, errs: &mut Vec<FieldError>) {
    if let Some(url) = r.url.as_deref() {
        check_url(path.child("url"), url, limits, errs);
    }
    if let Some(branch) = r.branch.as_deref() {
        check_branch(path.child("branch"), branch, errs);
    }
}

fn check_repos(spec: &SpecView<'_>, limits: &Limits, root: &FieldPath, errs: &mut Vec<FieldError>) {
    let repos_path = root.child("repos");
    if spec.repos.len() > limits.max_repos {
        errs.push(FieldError::too_many(
            Rule::V5,
            repos_path.clone(),
            spec.repos.len(),
            limits.max_repos,
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(spec.repos.len());
    for (i, repo) in spec.repos.iter().enumerate() {
        let p = repos_path.index(i);
        if repo.both_forms {
            errs.push(FieldError::forbidden(
                Rule::V1,
                p.child("input"),
                "set either url (flat form) or input (legacy form), not both",
            ));
        }
        match repo.url {
            Some((name, url)) => {
                check_url(p.child(name), url, limits, errs);
                let repo = repo_name(url);
                if let Some(first) = seen.insert(repo, i) {
                    errs.push(FieldError::duplicate(
                        Rule::V5,
                        p.child(name),
                        BadValue::str(repo),
                        format!("repo name already used by spec.repos[{first}]"),
                    ));
                }
            }
            None => errs.push(FieldError::required(Rule::V1, p.child("url"), "")),
        }
        if let Some((name, branch)) = repo.branch {
            check_branch(p.child(name), branch, errs);
        }
        if let Some(out) = repo.output {
            check_git_ref(&p.child("output"), out, limits, errs);
        }
    }
}

/// V6: the workflow path stays inside the workflow repository.
fn check_workflow(
    spec: &SpecView<'_>,
    limits: &Limits,
    root: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    let Some(wf) = spec.workflow else {
        return;
    };
    let p = root.child("activeWorkflow");
    match wf.git_url.as_deref() {
        Some(url) => check_url(p.child("gitUrl"), url, limits, errs),
        None => errs.push(FieldError::required(
            Rule::V6,
            p.child("gitUrl"),
            "an active workflow needs a git URL",
        )),
    }
    if let Some(branch) = wf.branch.as_deref() {
        check_branch(p.child("branch"), branch, errs);
    }
    if let Some(path) = wf.path.as_deref() {
        let why = if path.starts_with('/') || path.starts_with('\\') {
            Some("must be a relative path")
        } else if path.split(['/', '\\']).any(|seg| seg == "..") {
            Some("must not contain \"..\" segments")
        } else if path.chars().any(char::is_control) {
            Some("must not contain control characters")
        } else {
            None
        };
        if let Some(why) = why {
            errs.push(FieldError::invalid(
                Rule::V6,
                p.child("path"),
                BadValue::str(path),
                why,
            ));
        }
    }
}

/// V7: prompt size. The text itself never appears in the error.
fn check_prompts(
    spec: &SpecView<'_>,
    limits: &Limits,
    root: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    for (name, text) in &spec.prompts {
        if text.len() > limits.max_prompt_bytes {
            errs.push(FieldError::too_long(
                Rule::V7,
                root.child(name),
                limits.max_prompt_bytes,
            ));
        }
    }
}

/// V8
fn check_llm(spec: &SpecView<'_>, root: &FieldPath, errs: &mut Vec<FieldError>) {
    let Some(llm) = spec.llm else {
        return;
    };
    let p = root.child("llmSettings");
    if let Some(t) = &llm.temperature {
        let ok = t.as_f64().is_some_and(|x| (0.0..=2.0).contains(&x));
        if !ok {
            errs.push(FieldError::invalid(
                Rule::V8,
                p.child("temperature"),
                BadValue::Float(t.to_string()),
                "must be between 0 and 2, inclusive",
            ));
        }
    }
    if let Some(n) = llm.max_tokens
        && !(1..=MAX_TOKENS).contains(&n)
    {
        errs.push(FieldError::invalid(
            Rule::V8,
            p.child("maxTokens"),
            BadValue::Int(n),
            format!("must be between 1 and {MAX_TOKENS}, inclusive"),
        ));
    }
    if let Some(model) = llm.model.as_deref()
        && model.trim().is_empty()
    {
        errs.push(FieldError::required(
            Rule::V8,
            p.child("model"),
            "must not be blank",
        ));
    }
}

/// V9
fn check_timeouts(spec: &SpecView<'_>, root: &FieldPath, errs: &mut Vec<FieldError>) {
    if let Some((name, t)) = spec.timeout
        && t <= 0
    {
        errs.push(FieldError::invalid(
            Rule::V9,
            root.child(name),
            BadValue::Int(t),
            "must be greater than 0",
        ));
    }
    if let Some((name, t)) = spec.inactivity_timeout
        && t < 0
    {
        errs.push(FieldError::invalid(
            Rule::V9,
            root.child(name),
            BadValue::Int(t),
            "must be greater than or equal to 0",
        ));
    }
}

fn is_c_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// V10: keys only; values are never read into messages or logs.
fn check_env(spec: &SpecView<'_>, root: &FieldPath, errs: &mut Vec<FieldError>) {
    let Some(env) = spec.env else {
        return;
    };
    let p = root.child("environmentVariables");
    for key in env.keys() {
        if !is_c_identifier(key) {
            errs.push(FieldError::invalid(
                Rule::V10,
                p.key(key),
                BadValue::str(key),
                "must be a C identifier ([A-Za-z_][A-Za-z0-9_]*)",
            ));
        } else if let Some(why) = runner_env::refused(key) {
            errs.push(FieldError::forbidden(Rule::V10, p.key(key), why));
        }
    }
}

/// V10's warning: a credential in the spec is allowed (the platform passes
/// such variables to the runner) but readable by everyone who can read the
/// session.
fn credential_warnings(spec: &SpecView<'_>) -> Vec<String> {
    spec.env
        .into_iter()
        .flat_map(|env| env.keys())
        .filter(|k| runner_env::looks_like_credential(k))
        .map(|k| {
            crate::api::field::warning(&format!(
                "spec.environmentVariables[{k}] looks like a credential: keep it in a Secret, not the spec"
            ))
        })
        .collect()
}

/// V11
fn check_main_repo(spec: &SpecView<'_>, root: &FieldPath, errs: &mut Vec<FieldError>) {
    match spec.main_repo {
        MainRepo::Unset => {}
        MainRepo::Index(i) => {
            let len = spec.repos.len();
            let ok = usize::try_from(i).is_ok_and(|u| u < len);
            if !ok {
                let detail = if len == 0 {
                    "must be unset when spec.repos is empty".to_owned()
                } else {
                    format!("must index spec.repos (0 to {})", len - 1)
                };
                errs.push(FieldError::invalid(
                    Rule::V11,
                    root.child("mainRepoIndex"),
                    BadValue::Int(i),
                    detail,
                ));
            }
        }
        MainRepo::Name(name) => {
            let names: Vec<&str> = spec
                .repos
                .iter()
                .filter_map(|r| r.url.map(|(_, u)| repo_name(u)))
                .collect();
            if !names.contains(&name) {
                errs.push(FieldError::not_supported(
                    Rule::V11,
                    root.child("mainRepo"),
                    BadValue::str(name),
                    &names,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::admission::git::HostPattern;
    use crate::admission::testkit::*;
    use crate::admission::{Config, Limits};
    use crate::api::Version::{V1Alpha1, V1Alpha2};
    use crate::api::field::Rule;

    const INVALID: &str = "FieldValueInvalid";

    fn v2(spec: serde_json::Value) -> crate::admission::review::Verdict {
        Case::create(V1Alpha2, session(V1Alpha2, spec)).validate()
    }

    fn v1(spec: serde_json::Value) -> crate::admission::review::Verdict {
        Case::create(V1Alpha1, session(V1Alpha1, spec)).validate()
    }

    #[test]
    fn a_well_formed_session_is_allowed_in_both_versions() {
        assert_allowed(&v2(json!({
            "initialPrompt": "go", "interactive": true, "mainRepo": "api",
            "repos": [{"url": "https://github.com/acme/api.git", "branch": "main",
                       "output": {"url": "git@github.com:me/api.git", "branch": "fix/login"}},
                      {"url": "ssh://git@github.com/acme/web.git", "branch": "develop"}],
            "activeWorkflow": {"gitUrl": "https://github.com/acme/wf.git", "branch": "main", "path": "flows/bugfix"},
            "llmSettings": {"model": "claude", "temperature": 0, "maxTokens": 200000},
            "timeoutSeconds": 1, "inactivityTimeoutSeconds": 0,
            "environmentVariables": {"LOG_LEVEL": "debug", "_X1": "y"}
        })));
        assert_allowed(&v1(json!({
            "initialPrompt": "go", "mainRepoIndex": 1, "timeout": 60, "inactivityTimeout": 0,
            "repos": [{"url": "https://github.com/acme/api.git"},
                      {"input": {"url": "https://github.com/acme/web.git", "branch": "main"}}]
        })));
    }

    #[test]
    fn v1_file_url_is_refused_with_the_apiserver_message() {
        let v = v2(json!({"repos": [{"url": "https://github.com/a/b"}, {"url": "file:///etc"}]}));
        assert_denied(&v, 422, &[("spec.repos[1].url", INVALID)], &["V1"]);
        assert_eq!(
            message(&v),
            r#"spec.repos[1].url: Invalid value: "file:///etc": scheme must be https, http, ssh or git@host:path"#
        );
    }

    #[test]
    fn v1_legacy_input_url_is_checked_under_its_own_name() {
        let v = v1(json!({"repos": [{"input": {"url": "/srv/repo"}}]}));
        assert_denied(&v, 422, &[("spec.repos[0].input.url", INVALID)], &["V1"]);
    }

    #[test]
    fn v1_option_looking_urls_and_outputs_are_refused() {
        let v = v2(json!({"repos": [{"url": "--upload-pack=touch /tmp/x"},
                                    {"url": "https://h/a/b", "output": {"url": "ext::sh -c id"}}]}));
        assert_denied(
            &v,
            422,
            &[
                ("spec.repos[0].url", INVALID),
                ("spec.repos[1].output.url", INVALID),
            ],
            &["V1"],
        );
    }

    #[test]
    fn v1_repo_in_both_forms_is_refused_in_v1alpha1() {
        let v = v1(json!({"repos": [{"url": "https://h/a/b", "input": {"url": "https://h/a/c"}}]}));
        assert_denied(
            &v,
            422,
            &[("spec.repos[0].input", "FieldValueForbidden")],
            &["V1"],
        );
    }

    #[test]
    fn v1_repo_without_any_url_is_required() {
        let v = v1(json!({"repos": [{"branch": "main"}]}));
        assert_denied(
            &v,
            422,
            &[("spec.repos[0].url", "FieldValueRequired")],
            &["V1"],
        );
        let v = v2(json!({"repos": [{"url": ""}]}));
        assert_denied(
            &v,
            422,
            &[("spec.repos[0].url", "FieldValueRequired")],
            &["V1"],
        );
    }

    #[test]
    fn v2_credentials_are_refused_and_never_echoed() {
        let v = v2(json!({"repos": [{"url": "https://bot:ghp_TOKEN@github.com/a/b.git"}]}));
        assert_denied(&v, 422, &[("spec.repos[0].url", INVALID)], &["V2"]);
        assert!(!message(&v).contains("ghp_TOKEN"), "{}", message(&v));
        assert!(message(&v).contains("https://***@github.com/a/b.git"));
    }

    #[test]
    fn v3_node_local_hosts_are_refused() {
        for url in [
            "http://127.0.0.1/a/b",
            "https://localhost/a/b",
            "http://169.254.169.254/latest",
            "https://[::1]/a",
            "http://0.0.0.0/a",
            "git@127.1:a/b",
            "http://2130706433/a",
        ] {
            let v = v2(json!({"repos": [{"url": url}]}));
            assert_denied(&v, 422, &[("spec.repos[0].url", INVALID)], &["V3"]);
        }
    }

    #[test]
    fn v3_allow_list_limits_hosts_when_configured() {
        let cfg = Config {
            limits: Limits {
                allowed_git_hosts: vec![HostPattern::new("github.com")],
                ..Limits::default()
            },
            ..config()
        };
        let ok = Case::create(
            V1Alpha2,
            session(
                V1Alpha2,
                json!({"repos": [{"url": "https://github.com/a/b"}]}),
            ),
        )
        .with_config(cfg.clone())
        .validate();
        assert_allowed(&ok);
        let bad = Case::create(
            V1Alpha2,
            session(
                V1Alpha2,
                json!({"activeWorkflow": {"gitUrl": "https://gitlab.com/a/wf"}}),
            ),
        )
        .with_config(cfg)
        .validate();
        assert_denied(
            &bad,
            422,
            &[("spec.activeWorkflow.gitUrl", INVALID)],
            &["V3"],
        );
    }

    #[test]
    fn v4_bad_branches_are_refused_everywhere_a_branch_appears() {
        let v = v2(json!({
            "repos": [{"url": "https://h/a/b", "branch": "a..b",
                       "output": {"url": "https://h/me/b", "branch": "-f"}}],
            "activeWorkflow": {"gitUrl": "https://h/a/wf", "branch": "x.lock"}
        }));
        assert_denied(
            &v,
            422,
            &[
                ("spec.repos[0].branch", INVALID),
                ("spec.repos[0].output.branch", INVALID),
                ("spec.activeWorkflow.branch", INVALID),
            ],
            &["V4"],
        );
        let legacy =
            v1(json!({"repos": [{"input": {"url": "https://h/a/b", "branch": "has space"}}]}));
        assert_denied(
            &legacy,
            422,
            &[("spec.repos[0].input.branch", INVALID)],
            &["V4"],
        );
    }

    #[test]
    fn v5_repo_names_are_unique() {
        let v = v2(json!({"repos": [{"url": "https://github.com/a/api.git"},
                                    {"url": "git@gitlab.com:b/api.git"}]}));
        assert_denied(
            &v,
            422,
            &[("spec.repos[1].url", "FieldValueDuplicate")],
            &["V5"],
        );
        assert!(message(&v).contains(r#"Duplicate value: "api""#));
    }

    #[test]
    fn v5_too_many_repos_is_refused_at_the_configured_limit() {
        let repos: Vec<_> = (0..3)
            .map(|i| json!({"url": format!("https://h/o/r{i}")}))
            .collect();
        let cfg = Config {
            limits: Limits {
                max_repos: 2,
                ..Limits::default()
            },
            ..config()
        };
        let v = Case::create(V1Alpha2, session(V1Alpha2, json!({"repos": repos})))
            .with_config(cfg)
            .validate();
        assert_denied(&v, 422, &[("spec.repos", "FieldValueTooMany")], &["V5"]);
        assert_eq!(
            message(&v),
            "spec.repos: Too many: 3: must have at most 2 items"
        );
        let twenty: Vec<_> = (0..20)
            .map(|i| json!({"url": format!("https://h/o/r{i}")}))
            .collect();
        assert_allowed(&v2(json!({"repos": twenty})));
    }

    #[test]
    fn v6_workflow_path_stays_relative_and_needs_a_git_url() {
        for path in ["/etc", "a/../../b", "..", "\\\\server\\share"] {
            let v = v2(json!({"activeWorkflow": {"gitUrl": "https://h/a/wf", "path": path}}));
            assert_denied(&v, 422, &[("spec.activeWorkflow.path", INVALID)], &["V6"]);
        }
        let v = v2(json!({"activeWorkflow": {"path": "flows"}}));
        assert_denied(
            &v,
            422,
            &[("spec.activeWorkflow.gitUrl", "FieldValueRequired")],
            &["V6"],
        );
        let v = v1(json!({"activeWorkflow": {"gitUrl": "file:///wf"}}));
        assert_denied(&v, 422, &[("spec.activeWorkflow.gitUrl", INVALID)], &["V1"]);
    }

    #[test]
    fn v7_prompts_are_bounded_and_never_echoed() {
        let cfg = Config {
            limits: Limits {
                max_prompt_bytes: 10,
                ..Limits::default()
            },
            ..config()
        };
        let v = Case::create(
            V1Alpha1,
            session(
                V1Alpha1,
                json!({"prompt": "SECRET-PROMPT-TEXT", "initialPrompt": "0123456789"}),
            ),
        )
        .with_config(cfg)
        .validate();
        assert_denied(&v, 422, &[("spec.prompt", "FieldValueTooLong")], &["V7"]);
        assert_eq!(
            message(&v),
            "spec.prompt: Too long: may not be more than 10 bytes"
        );
        let big = "x".repeat(100 * 1024 + 1);
        let v = v2(json!({"initialPrompt": big}));
        assert_denied(
            &v,
            422,
            &[("spec.initialPrompt", "FieldValueTooLong")],
            &["V7"],
        );
        assert_allowed(&v2(json!({"initialPrompt": "x".repeat(100 * 1024)})));
    }

    #[test]
    fn v8_llm_settings_are_in_range() {
        let v = v2(json!({"llmSettings": {"temperature": 2.5, "maxTokens": 0, "model": "  "}}));
        assert_denied(
            &v,
            422,
            &[
                ("spec.llmSettings.temperature", INVALID),
                ("spec.llmSettings.maxTokens", INVALID),
                ("spec.llmSettings.model", "FieldValueRequired"),
            ],
            &["V8"],
        );
        let v = v1(json!({"llmSettings": {"temperature": -0.1, "maxTokens": 200001}}));
        assert_denied(
            &v,
            422,
            &[
                ("spec.llmSettings.temperature", INVALID),
                ("spec.llmSettings.maxTokens", INVALID),
            ],
            &["V8"],
        );
        assert_allowed(&v2(
            json!({"llmSettings": {"temperature": 2, "maxTokens": 1}}),
        ));
    }

    #[test]
    fn v9_timeouts_use_each_versions_field_names() {
        let v = v1(json!({"timeout": 0, "inactivityTimeout": -1}));
        assert_denied(
            &v,
            422,
            &[
                ("spec.timeout", INVALID),
                ("spec.inactivityTimeout", INVALID),
            ],
            &["V9"],
        );
        let v = v2(json!({"timeoutSeconds": -5, "inactivityTimeoutSeconds": -1}));
        assert_denied(
            &v,
            422,
            &[
                ("spec.timeoutSeconds", INVALID),
                ("spec.inactivityTimeoutSeconds", INVALID),
            ],
            &["V9"],
        );
    }

    #[test]
    fn v10_env_keys_are_identifiers_and_not_reserved() {
        let v = v2(
            json!({"environmentVariables": {"9LIVES": "a", "A-B": "b", "S3_BUCKET": "top-secret-value"}}),
        );
        assert_denied(
            &v,
            422,
            &[
                ("spec.environmentVariables[9LIVES]", INVALID),
                ("spec.environmentVariables[A-B]", INVALID),
                (
                    "spec.environmentVariables[S3_BUCKET]",
                    "FieldValueForbidden",
                ),
            ],
            &["V10"],
        );
        assert!(!message(&v).contains("top-secret-value"));
    }

    #[test]
    fn v10_the_platforms_own_variables_and_user_credentials_pass_with_a_warning() {
        // backend/handlers/sessions.go (CreateSession) writes these itself;
        // the operator passes AWS_* to the runner container.
        let v = v1(json!({"environmentVariables": {
            "RUNNER_TYPE": "claude-agent-sdk", "RUNNER_STATE_DIR": ".claude",
            "PARENT_SESSION_ID": "session-1", "SDK_OPTIONS": "{}", "JIRA_READ_ONLY_MODE": "false",
            "AWS_ACCESS_KEY_ID": "AKIA-not-shown", "AWS_SECRET_ACCESS_KEY": "not-shown"}}));
        assert_allowed(&v);
        assert_eq!(
            v.warnings,
            [
                "spec.environmentVariables[AWS_ACCESS_KEY_ID] looks like a credential: keep it in a Secret, not the spec",
                "spec.environmentVariables[AWS_SECRET_ACCESS_KEY] looks like a credential: keep it in a Secret, not the spec",
            ]
        );
        // What the reconciler itself sets stays reserved.
        let v = v2(json!({"environmentVariables": {"REPOS": "[]", "INITIAL_PROMPT": "x"}}));
        assert_eq!(v.denied_rules, [Rule::V10]);
    }

    #[test]
    fn v10_process_and_git_control_stays_the_platform_teams() {
        // GIT_CONFIG_* would let a session set protocol.ext.allow=always and
        // turn a repo URL into a command, past V1.
        let v = v2(json!({"environmentVariables": {
            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "protocol.ext.allow",
            "GIT_CONFIG_VALUE_0": "always", "LD_PRELOAD": "/workspace/x.so", "https_proxy": "http://evil:3128"}}));
        assert_eq!(v.denied_rules, [Rule::V10]);
        assert_eq!(causes(&v).len(), 5);
        assert!(
            message(&v).contains("spec.environmentVariables[LD_PRELOAD]: Forbidden: controls the runner's processes or git"),
            "{}",
            message(&v)
        );
    }

    #[test]
    fn mcp_server_urls_are_held_to_the_git_url_rules() {
        let v = v1(json!({"mcpServers": {"custom": {
            "ok": {"type": "http", "url": "https://mcp.example.com"},
            "stdio": {"command": "npx", "args": ["-y", "server"]},
            "meta": {"type": "sse", "url": "http://169.254.169.254/latest"},
            "token": {"type": "http", "url": "https://user:tok@mcp.example.com/x"},
            "local": {"type": "http", "url": "file:///etc/passwd"},
            "cluster": {"type": "http", "url": "http://backend-service.ambient-code.svc:8080/api"}}}}));
        assert_denied(
            &v,
            422,
            &[
                ("spec.mcpServers.custom[cluster].url", INVALID),
                ("spec.mcpServers.custom[local].url", INVALID),
                ("spec.mcpServers.custom[meta].url", INVALID),
                ("spec.mcpServers.custom[token].url", INVALID),
            ],
            &["V1", "V2", "V3"],
        );
        assert!(!message(&v).contains("tok@"), "{}", message(&v));
        // The git-host allow-list names git servers, not MCP servers.
        let limits = Limits {
            allowed_git_hosts: vec![HostPattern::new("github.com")],
            ..Limits::default()
        };
        let v = Case::create(
            V1Alpha2,
            session(
                V1Alpha2,
                json!({"mcpServers": {"custom": {
            "ok": {"url": "https://mcp.example.com/sse"}}}}),
            ),
        )
        .with_config(Config { limits, ..config() })
        .validate();
        assert_allowed(&v);
    }

    #[test]
    fn v4_an_empty_branch_is_the_default_branch() {
        let v = v2(json!({
            "repos": [{"url": "https://h/a/b", "branch": "", "output": {"url": "https://h/me/b", "branch": ""}}],
            "activeWorkflow": {"gitUrl": "https://h/a/wf", "branch": ""}
        }));
        assert_allowed(&v);
    }

    #[test]
    fn v11_main_repo_must_point_at_a_repo() {
        let v = v1(json!({"mainRepoIndex": 2, "repos": [{"url": "https://h/a/b"}]}));
        assert_denied(&v, 422, &[("spec.mainRepoIndex", INVALID)], &["V11"]);
        let v = v1(json!({"mainRepoIndex": -1, "repos": [{"url": "https://h/a/b"}]}));
        assert_denied(&v, 422, &[("spec.mainRepoIndex", INVALID)], &["V11"]);
        let v = v2(json!({"mainRepo": "web", "repos": [{"url": "https://h/a/api"}]}));
        assert_denied(
            &v,
            422,
            &[("spec.mainRepo", "FieldValueNotSupported")],
            &["V11"],
        );
        assert_eq!(
            message(&v),
            r#"spec.mainRepo: Unsupported value: "web": supported values: "api""#
        );
    }

    #[test]
    fn v12_removed_features_only_warn() {
        let v = v1(json!({"botAccount": {"name": "bot"}, "resourceOverrides": {"cpu": "2"}}));
        assert_allowed(&v);
        assert_eq!(
            v.warnings,
            vec![
                "spec.botAccount is deprecated and ignored".to_owned(),
                "spec.resourceOverrides is deprecated and ignored".to_owned()
            ]
        );
    }

    #[test]
    fn several_errors_are_joined_in_one_message() {
        let v = v2(json!({"timeoutSeconds": 0, "repos": [{"url": "file:///x"}]}));
        assert_eq!(
            message(&v),
            r#"[spec.repos[0].url: Invalid value: "file:///x": scheme must be https, http, ssh or git@host:path; spec.timeoutSeconds: Invalid value: 0: must be greater than 0]"#
        );
    }
}
