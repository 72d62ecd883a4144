//! `agentic-webhook verify SUITE.yaml...`: expected outcomes, recorded and
//! checked, in the spirit of `gator verify`. A suite lists cases; each
//! names a session (a file, relative to the suite, or inline), optionally
//! the stored object, the operation, subresource, user and groups, or a
//! raw AdmissionReview; and what must come of it:
//!
//! ```yaml
//! kind: Suite
//! policy: {controllerUsers: [system:serviceaccount:agentic-system:agentic-reconciler]}
//! cases:
//! - name: a legacy session is normalized
//!   object: sessions/legacy-v1alpha1.yaml
//!   expect: {decision: allowed, patched: true,
//!            warnings: ["spec.prompt is deprecated: moved to spec.initialPrompt"]}
//! - name: file URLs are refused
//!   object: {apiVersion: vteam.ambient-code/v1alpha2, kind: AgenticSession, ...}
//!   expect: {decision: denied, code: 422, rules: [V1]}
//! ```
//!
//! `rules` is the exact set of rule ids that denied; `warnings` must each
//! appear. Prints PASS/FAIL per case; exit 1 on any mismatch, 2 when a
//! suite cannot be read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::Value;

use crate::admission::Policy;

use super::PolicyArgs;
use super::check::{self, Case, Decision, Operation, Outcome};
use super::input::{read_documents, read_text};

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Suite files.
    #[arg(required = true)]
    suites: Vec<PathBuf>,
    /// Rule settings; a suite's own `policy:` adds to them.
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    #[serde(default, rename = "apiVersion")]
    _api_version: Option<String>,
    kind: String,
    #[serde(default)]
    policy: SuitePolicy,
    cases: Vec<TestCase>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SuitePolicy {
    #[serde(default)]
    controller_users: Vec<String>,
    #[serde(default)]
    controller_groups: Vec<String>,
    #[serde(default)]
    allowed_git_hosts: Vec<String>,
    max_repos: Option<usize>,
    max_prompt_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TestCase {
    name: String,
    /// A file (relative to the suite) or the object itself.
    object: Option<Value>,
    old: Option<Value>,
    /// A file holding a raw AdmissionReview, judged as sent.
    review: Option<String>,
    operation: Option<String>,
    subresource: Option<String>,
    #[serde(default = "default_user")]
    user: String,
    #[serde(default)]
    groups: Vec<String>,
    expect: Expect,
}

fn default_user() -> String {
    "review-user".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: Decision,
    rules: Option<Vec<String>>,
    #[serde(default)]
    warnings: Vec<String>,
    code: Option<u16>,
    patched: Option<bool>,
}

/// A file path (relative to the suite) or an inline object.
fn load_object(base: &Path, v: &Value) -> anyhow::Result<Value> {
    match v {
        Value::String(file) => {
            let path = base.join(file);
            let mut docs = read_documents(&path)?;
            anyhow::ensure!(
                docs.len() == 1,
                "{}: expected one object, found {}",
                path.display(),
                docs.len()
            );
            Ok(docs.remove(0).object)
        }
        Value::Object(_) => Ok(v.clone()),
        other => anyhow::bail!("expected a file name or an object, found {other}"),
    }
}

fn judge(policy: &Policy, base: &Path, case: &TestCase) -> anyhow::Result<Outcome> {
    if let Some(file) = &case.review {
        let path = base.join(file);
        let body = read_text(&path)?;
        return Ok(check::check_review(policy, body.as_bytes())?);
    }
    let object = load_object(
        base,
        case.object
            .as_ref()
            .context("a case needs `object` or `review`")?,
    )?;
    let old = case
        .old
        .as_ref()
        .map(|o| load_object(base, o))
        .transpose()?;
    let operation = match case.operation.as_deref() {
        None => None,
        Some("CREATE") => Some(Operation::Create),
        Some("UPDATE") => Some(Operation::Update),
        Some(other) => anyhow::bail!("operation {other:?}: CREATE or UPDATE"),
    };
    Ok(check::check(
        policy,
        &Case {
            object,
            old,
            operation,
            subresource: case.subresource.clone(),
            user: case.user.clone(),
            groups: case.groups.clone(),
        },
    )?)
}

/// What differs from the expectation; empty when it passed.
fn mismatches(expect: &Expect, got: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    if expect.decision != got.decision {
        let why = got
            .denial
            .as_ref()
            .map(|d| format!(": {}", d.message))
            .unwrap_or_default();
        out.push(format!(
            "expected {:?}, got {:?}{why}",
            expect.decision, got.decision
        ));
    }
    if let Some(rules) = &expect.rules {
        let want: BTreeSet<&str> = rules.iter().map(String::as_str).collect();
        let have: BTreeSet<&str> = got
            .denial
            .iter()
            .flat_map(|d| d.rules.iter().map(String::as_str))
            .collect();
        if want != have {
            out.push(format!("expected rules {want:?}, got {have:?}"));
        }
    }
    if let Some(code) = expect.code {
        let have = got.denial.as_ref().map(|d| d.code);
        if have != Some(code) {
            out.push(format!("expected code {code}, got {have:?}"));
        }
    }
    for w in &expect.warnings {
        if !got.warnings.iter().any(|g| g == w) {
            out.push(format!("expected warning {w:?}, got {:?}", got.warnings));
        }
    }
    if let Some(patched) = expect.patched
        && patched != got.patch.is_some()
    {
        out.push(format!(
            "expected {}a patch, got {}",
            if patched { "" } else { "no " },
            got.patch
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_else(|| "none".into())
        ));
    }
    out
}

pub fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in &args.suites {
        let text = read_text(path)?;
        let suite: Suite = serde_saphyr::from_str(&text)
            .with_context(|| format!("{}: not a suite", path.display()))?;
        anyhow::ensure!(
            suite.kind == "Suite",
            "{}: kind {:?}, expected Suite",
            path.display(),
            suite.kind
        );
        let mut policy_args = args.policy.clone();
        policy_args
            .controller_users
            .extend(suite.policy.controller_users.iter().cloned());
        policy_args
            .controller_groups
            .extend(suite.policy.controller_groups.iter().cloned());
        policy_args
            .allowed_git_hosts
            .extend(suite.policy.allowed_git_hosts.iter().cloned());
        if let Some(n) = suite.policy.max_repos {
            policy_args.max_repos = n;
        }
        if let Some(n) = suite.policy.max_prompt_bytes {
            policy_args.max_prompt_bytes = n;
        }
        let policy = Policy::new(policy_args.config());
        let base = path.parent().unwrap_or(Path::new("."));
        for case in &suite.cases {
            let problems = match judge(&policy, base, case) {
                Ok(got) => mismatches(&case.expect, &got),
                Err(e) => vec![format!("cannot judge: {e:#}")],
            };
            if problems.is_empty() {
                passed += 1;
                println!("PASS {}: {}", path.display(), case.name);
            } else {
                failed += 1;
                println!("FAIL {}: {}", path.display(), case.name);
                for p in problems {
                    println!("  {p}");
                }
            }
        }
    }
    println!(
        "{} cases: {passed} passed, {failed} failed",
        passed + failed
    );
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
