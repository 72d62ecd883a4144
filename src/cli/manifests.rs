//! `agentic-webhook manifests`: the install YAML (the `manifests/base`
//! kustomization, embedded at build time) with the CA bundle filled in;
//! with `--url`, webhooks and conversion point at a server outside the cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};

use super::input::to_yaml_stream;

/// The base's files (sorted as kustomize sorts, see [`kustomize_order`]).
const BASE: &[(&str, &str)] = &[
    (
        "namespace.yaml",
        include_str!("../../manifests/base/namespace.yaml"),
    ),
    ("crd.yaml", include_str!("../../manifests/crd.yaml")),
    ("rbac.yaml", include_str!("../../manifests/base/rbac.yaml")),
    (
        "scope.yaml",
        include_str!("../../manifests/base/scope.yaml"),
    ),
    (
        "webhook.yaml",
        include_str!("../../manifests/base/webhook.yaml"),
    ),
    (
        "reconciler.yaml",
        include_str!("../../manifests/base/reconciler.yaml"),
    ),
    (
        "runner-template.yaml",
        include_str!("../../manifests/base/runner-template.yaml"),
    ),
    (
        "webhook-configurations.yaml",
        include_str!("../../manifests/base/webhook-configurations.yaml"),
    ),
    (
        "runner-policies.yaml",
        include_str!("../../manifests/base/runner-policies.yaml"),
    ),
];

/// components/cluster-wide-reconciler's ClusterRole and binding.
const CLUSTER_WIDE_RBAC: &str =
    include_str!("../../manifests/components/cluster-wide-reconciler/rbac.yaml");

/// The namespace scope.yaml names: what the reconciler watches by default.
const SCOPE: &str = "agentic-reconciler-scope";
const WATCH_ENV: &str = "AGENTIC_WATCH_NAMESPACE";

/// Where kustomize's legacy order puts a document: by kind (kinds it does
/// not list go between the two lists, by name), then namespace, then name.
fn kustomize_order(doc: &Value) -> (usize, String, String, String) {
    const FIRST: &[&str] = &[
        "Namespace",
        "ResourceQuota",
        "StorageClass",
        "CustomResourceDefinition",
        "ServiceAccount",
        "PodSecurityPolicy",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "Endpoints",
        "Service",
        "LimitRange",
        "PriorityClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Deployment",
        "StatefulSet",
        "CronJob",
        "PodDisruptionBudget",
    ];
    const LAST: &[&str] = &[
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    let kind = doc["kind"].as_str().unwrap_or_default();
    let rank = match (
        FIRST.iter().position(|k| *k == kind),
        LAST.iter().position(|k| *k == kind),
    ) {
        (Some(i), _) => i,
        (None, Some(i)) => FIRST.len() + 1 + i,
        (None, None) => FIRST.len(),
    };
    let unlisted = if rank == FIRST.len() { kind } else { "" };
    (
        rank,
        unlisted.to_owned(),
        doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

pub const DEFAULT_IMAGE: &str = concat!(
    "ghcr.io/ambient-code/agentic-webhook:",
    env!("CARGO_PKG_VERSION")
);

#[derive(clap::Args, Debug)]
pub struct ManifestsArgs {
    /// PEM CA that signed the serving certificate (e.g. certs/ca.crt): fills every caBundle.
    #[arg(long, required_unless_present = "no_ca_bundle")]
    ca_file: Option<PathBuf>,
    /// Leave every caBundle empty, for installs where something else fills
    /// them (cert-manager's cainjector, `serve --manage-certs`). Without a
    /// bundle the apiserver cannot verify the webhook.
    #[arg(long, conflicts_with = "ca_file")]
    no_ca_bundle: bool,
    /// Point the webhooks and the CRD conversion at https://HOST:PORT instead
    /// of the in-cluster Service (the webhook Deployment is then left out).
    #[arg(long, value_name = "https://HOST:PORT")]
    url: Option<String>,
    /// Image for the webhook and reconciler containers.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// Leave out the webhook configurations' matchConditions (for
    /// Kubernetes before 1.28, or 1.28–1.29 with the feature gate off): the
    /// apiserver then calls both webhooks on every write.
    #[arg(long)]
    no_match_conditions: bool,
    /// The one namespace the reconciler watches and makes runners in
    /// [default: the base's agentic-reconciler-scope, agentic-sessions].
    #[arg(long, value_name = "NAMESPACE", conflicts_with = "cluster_wide")]
    watch_namespace: Option<String>,
    /// The reconciler acts in every namespace (the
    /// components/cluster-wide-reconciler component).
    #[arg(long)]
    cluster_wide: bool,
}

#[derive(Debug, Clone)]
pub struct Render {
    pub ca_pem: Option<String>,
    pub url: Option<String>,
    pub image: String,
    /// Keep the webhook configurations' matchConditions (Kubernetes 1.30+).
    pub match_conditions: bool,
    /// The reconciler's one namespace (None: the base's).
    pub watch_namespace: Option<String>,
    pub cluster_wide: bool,
}

fn is_webhook_server(doc: &Value) -> bool {
    let kind = doc["kind"].as_str().unwrap_or("");
    let name = doc["metadata"]["name"].as_str().unwrap_or("");
    name == "agentic-webhook"
        && matches!(
            kind,
            "Deployment" | "Service" | "PodDisruptionBudget" | "ServiceAccount"
        )
}

fn client_config(
    base_url: Option<&str>,
    path: &str,
    bundle: Option<&str>,
    current: &Value,
) -> Value {
    let mut cc = match base_url {
        Some(u) => json!({"url": format!("{}{path}", u.trim_end_matches('/'))}),
        None => current.clone(),
    };
    if let (Some(b), Some(o)) = (bundle, cc.as_object_mut()) {
        o.insert("caBundle".into(), json!(b));
    }
    cc
}

/// What the base's replacements and the cluster-wide component do: the
/// reconciler's Role and RoleBinding go to the watched namespace, or give
/// way to the ClusterRole (and the scope to nothing).
fn scope(docs: &mut Vec<Value>, opts: &Render) -> anyhow::Result<()> {
    let named =
        |d: &Value, kind: &str, name: &str| d["kind"] == kind && d["metadata"]["name"] == name;
    if opts.cluster_wide {
        docs.retain(|d| {
            !named(d, "Role", "agentic-reconciler")
                && !named(d, "RoleBinding", "agentic-reconciler")
                && !named(d, "ConfigMap", SCOPE)
        });
        for d in docs
            .iter_mut()
            .filter(|d| named(d, "Deployment", "agentic-reconciler"))
        {
            if let Some(env) = d["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut()
            {
                env.retain(|e| e["name"] != WATCH_ENV);
            }
        }
        let rbac: Vec<Value> =
            serde_saphyr::from_multiple(CLUSTER_WIDE_RBAC).context("embedded cluster-wide rbac")?;
        docs.extend(rbac.into_iter().filter(|d| !d.is_null()));
        return Ok(());
    }
    if let Some(ns) = &opts.watch_namespace {
        for d in docs.iter_mut().filter(|d| named(d, "ConfigMap", SCOPE)) {
            d["data"]["namespace"] = json!(ns);
        }
    }
    let watched = docs
        .iter()
        .find(|d| named(d, "ConfigMap", SCOPE))
        .and_then(|d| d["data"]["namespace"].as_str())
        .map(str::to_owned)
        .context("the base has no agentic-reconciler-scope ConfigMap")?;
    for d in docs.iter_mut().filter(|d| {
        named(d, "Role", "agentic-reconciler") || named(d, "RoleBinding", "agentic-reconciler")
    }) {
        d["metadata"]["namespace"] = json!(watched);
    }
    Ok(())
}

/// Render the install documents.
pub fn render(opts: &Render) -> anyhow::Result<Vec<Value>> {
    if let Some(u) = &opts.url
        && !u.starts_with("https://")
    {
        anyhow::bail!(
            "--url must be https://HOST:PORT (the apiserver calls webhooks over TLS only)"
        );
    }
    let bundle = opts
        .ca_pem
        .as_ref()
        .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem));
    let mut docs: Vec<Value> = Vec::new();
    for (file, text) in BASE {
        let parsed: Vec<Value> =
            serde_saphyr::from_multiple(text).with_context(|| format!("embedded {file}"))?;
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    scope(&mut docs, opts)?;
    docs.sort_by_key(kustomize_order);
    let mut out = Vec::new();
    for mut doc in docs {
        if opts.url.is_some() && is_webhook_server(&doc) {
            continue;
        }
        match doc["kind"].as_str().unwrap_or("") {
            "Deployment" => {
                if let Some(containers) =
                    doc["spec"]["template"]["spec"]["containers"].as_array_mut()
                {
                    for c in containers
                        .iter_mut()
                        .filter(|c| c["image"] == "agentic-webhook")
                    {
                        c["image"] = json!(opts.image);
                    }
                }
            }
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
                let path = if doc["kind"] == "MutatingWebhookConfiguration" {
                    "/mutate"
                } else {
                    "/validate"
                };
                if let Some(hooks) = doc["webhooks"].as_array_mut() {
                    for h in hooks {
                        if !opts.match_conditions
                            && let Some(o) = h.as_object_mut()
                        {
                            o.remove("matchConditions");
                        }
                        h["clientConfig"] = client_config(
                            opts.url.as_deref(),
                            path,
                            bundle.as_deref(),
                            &h["clientConfig"],
                        );
                    }
                }
            }
            "CustomResourceDefinition" => {
                let wh = &mut doc["spec"]["conversion"]["webhook"];
                wh["clientConfig"] = client_config(
                    opts.url.as_deref(),
                    "/convert",
                    bundle.as_deref(),
                    &wh["clientConfig"],
                );
            }
            _ => {}
        }
        out.push(doc);
    }
    Ok(out)
}

pub fn run(args: &ManifestsArgs) -> anyhow::Result<ExitCode> {
    let ca_pem = match &args.ca_file {
        Some(p) => {
            let pem =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            // The caBundle is what the apiserver trusts: a leaf there would
            // verify only until that certificate is renewed.
            crate::certs::check_ca_bundle(&pem)
                .with_context(|| format!("--ca-file {}", p.display()))?;
            Some(pem)
        }
        None => None,
    };
    let docs = render(&Render {
        ca_pem,
        url: args.url.clone(),
        image: args.image.clone(),
        match_conditions: !args.no_match_conditions,
        watch_namespace: args.watch_namespace.clone(),
        cluster_wide: args.cluster_wide,
    })?;
    print!("{}", to_yaml_stream(&docs)?);
    Ok(ExitCode::SUCCESS)
}
