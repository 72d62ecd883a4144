//! The install against a real kube-apiserver v1.35: every object of every
//! kustomize flavour is accepted (server-side dry-run apply, strict field
//! validation), and the CRD becomes Established.

mod common;

use std::path::Path;

use common::envtest::{ControlPlane, say};
use common::installed::{CRD, render};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kustomize(cp: &ControlPlane, flavour: &str) -> String {
    let dir = root().join("manifests").join(flavour);
    cp.kubectl_ok(&["kustomize", dir.to_str().unwrap_or_default()], None)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// `kubectl apply --server-side --dry-run=server` and the objects it
/// reports, one line each, in order.
fn dry_run(cp: &ControlPlane, yaml: &str) -> Vec<String> {
    let out = cp.kubectl_ok(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            "-",
        ],
        Some(yaml.as_bytes()),
    );
    out.lines().map(String::from).collect()
}

fn described(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or_default().to_lowercase();
    let group = doc["apiVersion"]
        .as_str()
        .and_then(|v| v.rsplit_once('/'))
        .map(|(g, _)| format!(".{g}"))
        .unwrap_or_default();
    format!(
        "{kind}{group}/{} serverside-applied (server dry run)",
        doc["metadata"]["name"].as_str().unwrap_or_default()
    )
}

#[test]
fn every_flavour_is_accepted_by_the_apiserver_and_the_crd_is_established() {
    let Some(cp) = common::envtest::control_plane() else {
        return;
    };
    // Namespaced objects need their namespace to exist (a dry run creates
    // nothing), and the cert-manager flavour needs cert-manager's kinds.
    cp.kubectl_ok(&["create", "namespace", "agentic-system"], None);
    cp.kubectl_ok(&["create", "namespace", "team-sessions"], None);
    let cm = root().join("tests/data/cert-manager-crds.yaml");
    cp.kubectl_ok(&["apply", "-f", cm.to_str().unwrap_or_default()], None);
    for crd in ["issuers.cert-manager.io", "certificates.cert-manager.io"] {
        cp.wait_established(crd);
    }

    for flavour in ["base", "cert-manager", "self-managed", "namespaced"] {
        let yaml = kustomize(cp, flavour);
        let docs = documents(&yaml);
        let lines = dry_run(cp, &yaml);
        let expected: Vec<String> = docs.iter().map(described).collect();
        assert_eq!(lines, expected, "{flavour}");
        say(&format!(
            "install: {flavour}: {} objects accepted (server dry run)",
            docs.len()
        ));
    }
    // What `manifests` renders is accepted the same way.
    let rendered = String::from_utf8_lossy(&render(&[])).to_string();
    assert_eq!(dry_run(cp, &rendered).len(), documents(&rendered).len());

    // For real: the CRD is accepted, its names too, and it is Established.
    cp.kubectl_ok(
        &["apply", "--server-side", "-f", "-"],
        Some(rendered.as_bytes()),
    );
    cp.wait_established(CRD);
    let crd: Value = serde_json::from_str(&cp.kubectl_ok(&["get", "crd", CRD, "-o", "json"], None))
        .unwrap_or_default();
    let conditions = crd["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for type_ in ["NamesAccepted", "Established"] {
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == type_ && c["status"] == "True"),
            "{type_}: {conditions:?}"
        );
    }
    assert_eq!(
        crd["status"]["acceptedNames"]["shortNames"],
        serde_json::json!(["as"])
    );
    assert_eq!(
        crd["status"]["storedVersions"],
        serde_json::json!(["v1alpha2"])
    );
    // The printer columns the CRD declares are what kubectl shows.
    let table = cp.kubectl_ok(&["get", "as", "-A"], None);
    assert!(
        table.is_empty() || table.starts_with("NAMESPACE"),
        "{table}"
    );
}
