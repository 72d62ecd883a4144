//! `agentic-webhook render`: what the reconciler would create for sessions
//! as stored, offline (the runner pod of the attempt, its Service, token
//! Secret, service account, role binding, and the namespace's runner
//! NetworkPolicies), as `kubectl create --dry-run=client -o yaml|json`
//! prints objects: review a template or contract change in CI.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;

use crate::api::Version;
use crate::api::resource::AgenticSession;
use crate::conversion::normalize_object;
use crate::lifecycle::render::{self, Policies};
use crate::lifecycle::world::IngressSources;

use super::input::{read_documents, to_yaml_stream};
use super::runner::RunnerArgs;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Yaml,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// Session files (YAML or JSON, v1alpha1 or v1alpha2; several documents
    /// and Lists allowed); `-` is stdin.
    #[arg(required = true, value_name = "SESSION_FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    runner: RunnerArgs,
    /// The attempt whose pod to render (default: the one the reconciler
    /// makes next: a pending session's, a running one's retry, a finished
    /// one's restart at 1).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    attempt: Option<i64>,
    /// YAML documents, or one JSON `List`.
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    output: Output,
    /// As `reconcile --runner-egress-deny` (the egress policy's denied networks).
    #[arg(long = "runner-egress-deny", value_name = "CIDR", value_parser = clap::value_parser!(ipnet::IpNet))]
    runner_egress_deny: Vec<ipnet::IpNet>,
    /// As `reconcile --runner-ingress-from-namespace` (default: the install's, ambient-code).
    #[arg(
        long = "runner-ingress-from-namespace",
        value_name = "NAMESPACE",
        default_values_t = ["ambient-code".to_owned()]
    )]
    runner_ingress_from: Vec<String>,
    /// The reconciler's namespace (its pods may reach runners).
    #[arg(long, default_value = "agentic-system")]
    reconciler_namespace: String,
}

pub fn run(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.runner.load()?;
    let policies = Policies {
        egress_denied: Some(args.runner_egress_deny.clone()),
        ingress: Some(IngressSources {
            reconciler_namespace: args.reconciler_namespace.clone(),
            also: args.runner_ingress_from.clone(),
        }),
    };
    let mut out = Vec::new();
    let mut namespaces = BTreeSet::new();
    for file in &args.files {
        for doc in read_documents(file)? {
            let v2 = normalize_object(&doc.object.to_string(), Version::V1Alpha2)
                .with_context(|| format!("{}: not an AgenticSession", doc.origin))?;
            let session: AgenticSession = serde_json::from_slice(&v2)
                .with_context(|| format!("{}: not an AgenticSession", doc.origin))?;
            let ns = session.metadata.namespace.clone().unwrap_or_default();
            if session
                .metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .is_empty()
                || ns.is_empty()
            {
                anyhow::bail!(
                    "{}: a session needs metadata.name and metadata.namespace",
                    doc.origin
                );
            }
            if namespaces.insert(ns.clone()) {
                out.extend(render::policies(&ns, &policies, &cfg));
            }
            let attempt = args
                .attempt
                .unwrap_or_else(|| render::next_attempt(session.status.as_ref()));
            out.extend(render::session(&session, attempt, &cfg));
        }
    }
    match args.output {
        Output::Yaml => print!("{}", to_yaml_stream(&out)?),
        Output::Json => {
            let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": out});
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
