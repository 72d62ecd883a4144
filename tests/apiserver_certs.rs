//! `serve --manage-certs` against a real kube-apiserver v1.35, as the
//! webhook's service account with the self-managed overlay's RBAC: the CA
//! Secret is created once, its certificate injected into both webhook
//! configurations and the CRD, and the apiserver then trusts what the
//! replicas serve.

mod common;

use std::path::Path;
use std::time::Duration;

use agentic_webhook::testkit::client::Alpn;
use base64::Engine as _;
use common::envtest::{ControlPlane, Principal, SYSTEM_NS, Who, eventually, free_port, say};
use common::installed::{CRD, render, wait_until_serving};
use common::{Server, http_get};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::Value;

const CA_SECRET: &str = "agentic-webhook-ca";

fn replica(cp: &ControlPlane, addr: &str) -> Server {
    let kubeconfig = cp.kubeconfig(&Who::Token(Principal::Webhook));
    let controller = format!("--controller-user={}", Principal::Reconciler.username());
    Server::start_at(
        addr,
        &[
            "--manage-certs",
            "--cert-namespace",
            SYSTEM_NS,
            "--cert-ip",
            "127.0.0.1",
            &controller,
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap_or_default())],
    )
}

async fn ready(server: &Server, name: &str) {
    let probes = server.probes;
    eventually(
        &format!("{name} ready"),
        Duration::from_secs(60),
        || async move {
            match http_get(probes, "/readyz") {
                (200, _) => Ok(()),
                (code, body) => Err(format!("{code} {body}")),
            }
        },
    )
    .await
}

fn bundles(cp: &ControlPlane) -> Vec<(String, String)> {
    let get = |kind: &str, path: &str| {
        let out = cp.kubectl_ok(&["get", kind, "-o", &format!("jsonpath={path}")], None);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(out.trim())
            .unwrap_or_default();
        (
            kind.to_owned(),
            String::from_utf8_lossy(&decoded).to_string(),
        )
    };
    vec![
        get(
            "mutatingwebhookconfiguration/agentic-webhook",
            "{.webhooks[0].clientConfig.caBundle}",
        ),
        get(
            "validatingwebhookconfiguration/agentic-webhook",
            "{.webhooks[0].clientConfig.caBundle}",
        ),
        get(
            &format!("crd/{CRD}"),
            "{.spec.conversion.webhook.clientConfig.caBundle}",
        ),
    ]
}

fn ca_of(secret: &Secret) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .map(|b| String::from_utf8_lossy(&b.0).to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn managed_certificates_are_created_once_injected_everywhere_and_shared_by_replicas() {
    let Some(cp) = common::envtest::control_plane() else {
        return;
    };
    // The install, pointing at a port the first replica will take; no
    // caBundle: the server brings its own.
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    cp.kubectl_ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&render(&["--url", &url, "--no-ca-bundle"])),
    );
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/self-managed/rbac.yaml");
    cp.kubectl_ok(&["apply", "-f", rbac.to_str().unwrap_or_default()], None);
    assert!(bundles(cp).iter().all(|(_, b)| b.is_empty()));

    // Two replicas start together and race to create the CA.
    let a = replica(cp, &format!("127.0.0.1:{port}"));
    let b = replica(cp, "127.0.0.1:0");
    ready(&a, "replica a").await;
    ready(&b, "replica b").await;

    let client = cp.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SYSTEM_NS);
    let secret = secrets
        .get(CA_SECRET)
        .await
        .unwrap_or_else(|e| panic!("CA Secret: {e}"));
    let ca = ca_of(&secret);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    for (what, bundle) in bundles(cp) {
        assert_eq!(bundle, ca, "{what} carries another CA");
    }
    // Both replicas serve a certificate that CA verifies (for 127.0.0.1).
    for server in [&a, &b] {
        let _ = common::connect(server.https, ca.as_bytes(), Alpn::Http1).await;
    }
    // And the apiserver, trusting only the injected bundle, calls replica a.
    wait_until_serving(cp);

    // A third replica later reuses the CA: the Secret is not touched.
    let c = replica(cp, "127.0.0.1:0");
    ready(&c, "replica c").await;
    let _ = common::connect(c.https, ca.as_bytes(), Alpn::Both).await;
    let again = secrets
        .get(CA_SECRET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.metadata.uid, secret.metadata.uid);
    assert_eq!(
        again.metadata.resource_version, secret.metadata.resource_version,
        "the CA Secret was rewritten"
    );
    let created: Vec<Value> = [&a, &b, &c]
        .iter()
        .flat_map(|s| s.logs())
        .filter(|l| l["message"] == "created the webhook CA")
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    say(&format!(
        "manage-certs: CA created once, shared by 3 replicas (Secret resourceVersion {})",
        again.metadata.resource_version.unwrap_or_default()
    ));
}
