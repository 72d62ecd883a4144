//! `agentic-webhook migrate`: rewrite every stored AgenticSession in the
//! storage version (v1alpha2), normalizing legacy shapes on the way, then
//! drop v1alpha1 from the CRD's `status.storedVersions`.
//!
//! Safe to interrupt and run again: each rewrite is idempotent, and
//! `storedVersions` is changed only after a pass in which every object was
//! rewritten (or had been deleted meanwhile).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::json;

use crate::api::{GROUP, KIND, PLURAL, Version};
use crate::conversion::normalize_object;
use crate::duration;

pub const CRD_NAME: &str = "agenticsessions.vteam.ambient-code";
const CONFLICT_RETRIES: usize = 5;

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    kube: super::KubeArgs,
    /// Send every write as a server-side dry run and leave storedVersions alone.
    #[arg(long)]
    dry_run: bool,
    /// Objects per list page.
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    /// Act as this user (impersonation). Whoever migrates needs `list` and
    /// `update` on agenticsessions in every namespace and `patch` on the
    /// CRD's status: a cluster administrator, not the reconciler.
    #[arg(long = "as", value_name = "USER")]
    as_user: Option<String>,
    /// Groups for --as; repeatable.
    #[arg(long = "as-group", value_name = "GROUP")]
    as_groups: Vec<String>,
    /// Longest wait for the headers of one Kubernetes API response (watches
    /// stream after their headers and are not cut).
    #[arg(long, default_value = "30s", value_parser = duration::positive_flag)]
    api_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub dry_run: bool,
    pub page_size: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub seen: usize,
    pub rewritten: usize,
    pub normalized: usize,
    pub deleted_meanwhile: usize,
    pub failed: Vec<String>,
    pub stored_versions_updated: bool,
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, Version::V1Alpha2.as_str(), KIND),
        PLURAL,
    )
}

/// The object normalized into canonical v1alpha2.
fn normalized(obj: &DynamicObject) -> anyhow::Result<DynamicObject> {
    let json = serde_json::to_string(obj)?;
    let out = normalize_object(&json, Version::V1Alpha2).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(serde_json::from_slice(&out)?)
}

enum Outcome {
    Rewritten { normalized: bool },
    Deleted,
}

async fn rewrite_one(
    api: &Api<DynamicObject>,
    mut obj: DynamicObject,
    pp: &PostParams,
) -> anyhow::Result<Outcome> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    for _ in 0..CONFLICT_RETRIES {
        let target = normalized(&obj)?;
        let changed = serde_json::to_value(&target)? != serde_json::to_value(&obj)?;
        // Writing even an unchanged object re-encodes it in the storage
        // version; the resourceVersion in it is the precondition.
        match api.replace(&name, pp, &target).await {
            Ok(written) => {
                let status_changed = target.data.get("status") != obj.data.get("status");
                if status_changed && target.data.get("status").is_some() {
                    let mut with_status = target.clone();
                    with_status.metadata.resource_version =
                        written.metadata.resource_version.clone();
                    match api.replace_status(&name, pp, &with_status).await {
                        Ok(_) => {}
                        Err(e)
                            if crate::apiclient::is_api_status(
                                &e,
                                kube::core::Status::is_conflict,
                            ) =>
                        {
                            obj = api.get(&name).await?;
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                return Ok(Outcome::Rewritten {
                    normalized: changed,
                });
            }
            Err(e) if crate::apiclient::is_api_status(&e, kube::core::Status::is_not_found) => {
                return Ok(Outcome::Deleted);
            }
            Err(e) if crate::apiclient::is_api_status(&e, kube::core::Status::is_conflict) => {
                obj = match api.get(&name).await {
                    Ok(fresh) => fresh,
                    Err(e)
                        if crate::apiclient::is_api_status(
                            &e,
                            kube::core::Status::is_not_found,
                        ) =>
                    {
                        return Ok(Outcome::Deleted);
                    }
                    Err(e) => return Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("still conflicting after {CONFLICT_RETRIES} attempts")
}

/// Run a migration with `client`, reporting progress to `out`.
pub async fn migrate(
    client: Client,
    opts: &Options,
    out: &mut impl Write,
) -> anyhow::Result<Summary> {
    let ar = resource();
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let pp = PostParams {
        dry_run: opts.dry_run,
        field_manager: Some("agentic-webhook-migrate".into()),
    };
    let mut summary = Summary::default();
    let mut token: Option<String> = None;
    let mut page = 0;
    loop {
        page += 1;
        let mut lp = ListParams::default().limit(opts.page_size.max(1));
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let list = all.list(&lp).await.context("listing AgenticSessions")?;
        let (mut ok, mut gone, mut bad) = (0, 0, 0);
        for obj in list.items {
            summary.seen += 1;
            let ns = obj.metadata.namespace.clone().unwrap_or_default();
            let name = obj.metadata.name.clone().unwrap_or_default();
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            match rewrite_one(&api, obj, &pp).await {
                Ok(Outcome::Rewritten { normalized }) => {
                    ok += 1;
                    summary.rewritten += 1;
                    if normalized {
                        summary.normalized += 1;
                    }
                }
                Ok(Outcome::Deleted) => {
                    gone += 1;
                    summary.deleted_meanwhile += 1;
                }
                Err(e) => {
                    bad += 1;
                    summary.failed.push(format!("{ns}/{name}: {e:#}"));
                }
            }
        }
        writeln!(
            out,
            "page {page}: {ok} rewritten, {gone} deleted meanwhile, {bad} failed"
        )?;
        token = list.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }

    if summary.failed.is_empty() && !opts.dry_run {
        let crds: Api<CustomResourceDefinition> = Api::all(client);
        let patch = json!({"status": {"storedVersions": [Version::V1Alpha2.as_str()]}});
        crds.patch_status(CRD_NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("setting storedVersions")?;
        summary.stored_versions_updated = true;
    }
    writeln!(
        out,
        "{} sessions: {} rewritten ({} normalized), {} deleted meanwhile, {} failed; storedVersions {}",
        summary.seen,
        summary.rewritten,
        summary.normalized,
        summary.deleted_meanwhile,
        summary.failed.len(),
        if summary.stored_versions_updated {
            "set to [v1alpha2]"
        } else if opts.dry_run {
            "unchanged (dry run)"
        } else {
            "unchanged (rerun after fixing the failures)"
        }
    )?;
    for f in &summary.failed {
        writeln!(out, "  failed: {f}")?;
    }
    Ok(summary)
}

pub fn run(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut config = crate::apiclient::load_config(&args.kube.target())
            .await
            .context("loading the kube config")?;
        if let Some(user) = &args.as_user {
            config.auth_info.impersonate = Some(user.clone());
            if !args.as_groups.is_empty() {
                config.auth_info.impersonate_groups = Some(args.as_groups.clone());
            }
        }
        let client = crate::apiclient::from_config(config, args.api_timeout)
            .context("building the kube client")?;
        let opts = Options {
            dry_run: args.dry_run,
            page_size: args.page_size,
        };
        let summary = migrate(client, &opts, &mut std::io::stderr()).await?;
        Ok(if summary.failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}
