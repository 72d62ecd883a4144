//! Spec shape, V1–V12: what a session may say, whatever its phase.

use std::collections::HashMap;

use crate::admission::Limits;
use crate::admission::field::{BadValue, FieldError, FieldPath, Rule};
use crate::admission::git::{self, UrlProblem};
use crate::api::common::{GitRef, repo_name};

use super::view::{MainRepo, SpecView};

/// Environment variables the runner sets itself (V10).
pub const RESERVED_ENV: &[&str] = &[
    "SESSION_NAME",
    "NAMESPACE",
    "S3_ENDPOINT",
    "S3_BUCKET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "SYNC_INTERVAL",
];

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
    check_main_repo(spec, &root, &mut errs);
    let warnings = spec
        .deprecated
        .iter()
        .map(|f| format!("spec.{f} is deprecated and ignored"))
        .collect();
    (errs, warnings)
}

/// V1–V3 for one URL.
fn check_url(path: FieldPath, url: &str, limits: &Limits, errs: &mut Vec<FieldError>) {
    if url.is_empty() {
        errs.push(FieldError::required(Rule::V1, path, ""));
        return;
    }
    let problem = match git::parse(url) {
        Ok(parsed) => match git::check_host(parsed.host, &limits.allowed_git_hosts) {
            Ok(()) => return,
            Err(p) => p,
        },
        Err(p) => p,
    };
    let rule = match problem {
        UrlProblem::Credentials => Rule::V2,
        UrlProblem::ForbiddenHost(_) | UrlProblem::HostNotAllowed => Rule::V3,
        _ => Rule::V1,
    };
    errs.push(FieldError::invalid(
        rule,
        path,
        BadValue::str(&git::redact(url)),
        problem.detail(),
    ));
}

/// V4 for one branch.
fn check_branch(path: FieldPath, branch: &str, errs: &mut Vec<FieldError>) {
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
        } else if RESERVED_ENV.contains(&key.as_str()) {
            errs.push(FieldError::forbidden(
                Rule::V10,
                p.key(key),
                "is reserved: the runner sets it",
            ));
        }
    }
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
