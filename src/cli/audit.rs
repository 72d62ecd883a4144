//! `agentic-webhook audit`: every stored session judged by today's rules,
//! offline from the cluster's point of view (it reads, never writes), like
//! Gatekeeper's audit. Before enforcing a stricter setting (say
//! `--allowed-git-host`), audit with it to see what it would refuse, or
//! roll it out with `--warn-only` first.
//!
//! Each session is judged as its own CREATE (spec shape, annotations, the
//! desired phase) and, when it has a status, as a status write onto
//! itself (conditions); both as a controller principal, so fields the
//! operator owns are not reported as forbidden.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use kube::api::{ApiResource, DynamicObject, ListParams};
use serde_json::Value;

use crate::admission::Policy;
use crate::api::{GROUP, KIND, PLURAL};
use crate::duration;

use super::check::{self, Case, Decision, Operation, Outcome};
use super::input::Document;
use super::review::{self, Format, Record};
use super::{KubeArgs, PolicyArgs};

/// The principal audit judges as (added to the controller principals).
const AUDITOR: &str = "agentic-webhook:audit";

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Only this namespace [default: all].
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Output format (as `review`).
    #[arg(short, long, value_enum, default_value = "text")]
    output: Format,
    /// Bound on each API request's response headers.
    #[arg(long, default_value = "30s", value_parser = duration::flag)]
    api_timeout: Duration,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// Both judgements of one stored session, merged.
fn judge(policy: &Policy, object: &Value) -> Result<Outcome, check::CaseError> {
    let create = check::check(
        policy,
        &Case {
            object: object.clone(),
            old: None,
            operation: Some(Operation::Create),
            subresource: None,
            user: AUDITOR.to_owned(),
            groups: Vec::new(),
        },
    )?;
    if object.get("status").is_none_or(Value::is_null) {
        return Ok(create);
    }
    let status = check::check(
        policy,
        &Case {
            object: object.clone(),
            old: Some(object.clone()),
            operation: Some(Operation::Update),
            subresource: Some("status".to_owned()),
            user: AUDITOR.to_owned(),
            groups: Vec::new(),
        },
    )?;
    let mut merged = create;
    merged.warnings.extend(status.warnings);
    match (&mut merged.denial, status.denial) {
        (Some(a), Some(b)) => {
            a.rules.extend(b.rules);
            a.rules.sort();
            a.rules.dedup();
            a.causes.extend(b.causes);
            a.message = format!("{}; {}", a.message, b.message);
        }
        (None, Some(b)) => merged.denial = Some(b),
        _ => {}
    }
    if merged.denial.is_some() {
        merged.decision = Decision::Denied;
    }
    Ok(merged)
}

pub fn run(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let mut policy_args = args.policy.clone();
    policy_args.controller_users.push(AUDITOR.to_owned());
    let policy = Policy::new(policy_args.config());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let objects = runtime.block_on(async {
        let client = crate::apiclient::infer(&args.kube.target(), args.api_timeout)
            .await
            .context("connecting to the cluster")?;
        let ar = ApiResource {
            group: GROUP.to_owned(),
            version: "v1alpha2".to_owned(),
            api_version: format!("{GROUP}/v1alpha2"),
            kind: KIND.to_owned(),
            plural: PLURAL.to_owned(),
        };
        let api: kube::Api<DynamicObject> = match &args.namespace {
            Some(ns) => kube::Api::namespaced_with(client, ns, &ar),
            None => kube::Api::all_with(client, &ar),
        };
        let mut out = Vec::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = api.list(&params).await.context("listing sessions")?;
            for o in &page.items {
                out.push(serde_json::to_value(o).context("encoding a session")?);
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        anyhow::Ok(out)
    })?;
    let records: Vec<Record> = objects
        .into_iter()
        .map(|mut object| {
            // Listed items carry no apiVersion/kind of their own in some
            // clients; the list's are theirs.
            object["apiVersion"] = Value::from(format!("{GROUP}/v1alpha2"));
            object["kind"] = Value::from(KIND);
            let doc = Document {
                origin: check::identity(&object),
                file: check::identity(&object),
                document: 1,
                item: None,
                object,
            };
            match judge(&policy, &doc.object) {
                Ok(outcome) => Record::judged(&doc, outcome),
                Err(e) => Record::error(&doc, &e),
            }
        })
        .collect();
    review::report(args.output, &records)
}
