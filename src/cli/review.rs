//! `agentic-webhook review`: mutate then validate a session offline, through
//! the same AdmissionReview decoding and rules as the webhook, so the text
//! printed is the text `kubectl apply` would show.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::ValueEnum;
use serde_json::{Value, json};

use crate::admission::review::{self, Verdict};
use crate::admission::{AdmissionService, Policy};
use crate::api::{GROUP, KIND, PLURAL};

use super::PolicyArgs;
use super::input::read_one;

use super::review_names::{MUTATING as MUTATING_WEBHOOK, VALIDATING as VALIDATING_WEBHOOK};

#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "UPPERCASE")]
enum Op {
    Create,
    Update,
}

#[derive(clap::Args, Debug)]
pub struct ReviewArgs {
    /// The session (YAML or JSON); `-` is stdin.
    file: PathBuf,
    /// The stored object, for an UPDATE.
    #[arg(long)]
    old: Option<PathBuf>,
    /// Default: UPDATE with --old, else CREATE.
    #[arg(long, value_enum)]
    operation: Option<Op>,
    /// Review a write to a subresource (only `status` exists).
    #[arg(long, value_parser = ["status"])]
    subresource: Option<String>,
    /// The requesting user.
    #[arg(long, default_value = "review-user")]
    user: String,
    /// The requesting user's groups; repeatable.
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    #[command(flatten)]
    policy: PolicyArgs,
}

fn request_json(
    args: &ReviewArgs,
    object: &Value,
    old: Option<&Value>,
    op: Op,
) -> anyhow::Result<Vec<u8>> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let version = api_version
        .strip_prefix(GROUP)
        .and_then(|v| v.strip_prefix('/'))
        .with_context(|| {
            format!("apiVersion {api_version:?} is not {GROUP}/v1alpha1 or v1alpha2")
        })?;
    let meta = object.get("metadata");
    let field = |k: &str| meta.and_then(|m| m.get(k)).cloned().unwrap_or(Value::Null);
    let mut request = json!({
        "uid": "offline-review",
        "kind": {"group": GROUP, "version": version, "kind": KIND},
        "resource": {"group": GROUP, "version": version, "resource": PLURAL},
        "requestKind": {"group": GROUP, "version": version, "kind": KIND},
        "requestResource": {"group": GROUP, "version": version, "resource": PLURAL},
        "name": field("name"),
        "namespace": field("namespace"),
        "operation": match op { Op::Create => "CREATE", Op::Update => "UPDATE" },
        "userInfo": {"username": args.user, "groups": args.groups},
        "object": object,
        "oldObject": old,
        "dryRun": true,
    });
    if let (Some(sub), Value::Object(r)) = (&args.subresource, &mut request) {
        r.insert("subResource".into(), json!(sub));
        r.insert("requestSubResource".into(), json!(sub));
    }
    Ok(serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    }))?)
}

fn print_warnings(v: &Verdict) {
    for w in &v.warnings {
        println!("Warning: {w}");
    }
}

pub fn run(args: &ReviewArgs) -> anyhow::Result<ExitCode> {
    let mut object = read_one(&args.file)?;
    let old = args.old.as_deref().map(read_one).transpose()?;
    let op = args.operation.unwrap_or(if old.is_some() {
        Op::Update
    } else {
        Op::Create
    });
    let policy = Policy::new(args.policy.config());

    // Mutating stage (the main resource only, as the webhook configuration says).
    if args.subresource.is_none() {
        let body = request_json(args, &object, old.as_ref(), op)?;
        let (_, req) = review::decode(&body).map_err(|e| anyhow::anyhow!("{e}"))?;
        let verdict = policy.mutate(&req);
        print_warnings(&verdict);
        match &verdict.patch {
            Some(patch) => {
                let ops: json_patch::Patch =
                    serde_json::from_slice(patch).context("reading our own patch")?;
                println!("{MUTATING_WEBHOOK}: patched ({} operations):", ops.0.len());
                println!("{}", serde_json::to_string_pretty(&ops)?);
                json_patch::patch(&mut object, &ops).context("applying the patch")?;
            }
            None => println!("{MUTATING_WEBHOOK}: no changes"),
        }
    }

    // Validating stage sees the mutated object.
    let body = request_json(args, &object, old.as_ref(), op)?;
    let (_, req) = review::decode(&body).map_err(|e| anyhow::anyhow!("{e}"))?;
    let verdict = policy.validate(&req);
    print_warnings(&verdict);
    match &verdict.deny {
        None => {
            println!("{VALIDATING_WEBHOOK}: allowed");
            Ok(ExitCode::SUCCESS)
        }
        Some(deny) => {
            println!(
                "Error from server ({}): admission webhook \"{VALIDATING_WEBHOOK}\" denied the request: {}",
                deny.reason, deny.message
            );
            let rules: Vec<&str> = verdict.denied_rules.iter().map(|r| r.as_str()).collect();
            println!("  code {}; rules {}", deny.code, rules.join(", "));
            for c in &deny.details.causes {
                println!("  - {} ({}): {}", c.field, c.reason, c.message);
            }
            Ok(ExitCode::from(1))
        }
    }
}
