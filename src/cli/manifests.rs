//! `agentic-webhook manifests`: the install YAML (the `manifests/base`
//! kustomization, embedded at build time) with the CA bundle filled in;
//! with `--url`, webhooks and conversion point at a server outside the cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};

use super::input::to_yaml_stream;

/// The base, in the order `kubectl kustomize manifests/base` lists it.
const BASE: &[(&str, &str)] = &[
    (
        "namespace.yaml",
        include_str!("../../manifests/base/namespace.yaml"),
    ),
    ("crd.yaml", include_str!("../../manifests/crd.yaml")),
    ("rbac.yaml", include_str!("../../manifests/base/rbac.yaml")),
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
];

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
}

#[derive(Debug, Clone)]
pub struct Render {
    pub ca_pem: Option<String>,
    pub url: Option<String>,
    pub image: String,
    /// Keep the webhook configurations' matchConditions (Kubernetes 1.30+).
    pub match_conditions: bool,
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
    let mut out = Vec::new();
    for (file, text) in BASE {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(text).with_context(|| format!("embedded {file}"))?;
        for mut doc in docs.into_iter().filter(|d| !d.is_null()) {
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
    })?;
    print!("{}", to_yaml_stream(&docs)?);
    Ok(ExitCode::SUCCESS)
}
