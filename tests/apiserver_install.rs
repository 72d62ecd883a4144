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

/// An overlay of `flavours` with `components` (kustomize takes only
/// relative paths, so it is written under the repository's target/).
fn kustomize_overlay(
    cp: &ControlPlane,
    name: &str,
    flavours: &[&str],
    components: &[&str],
) -> String {
    let dir = root().join("target/kustomize-overlays").join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut text = String::from("resources:\n");
    for f in flavours {
        text.push_str(&format!("- ../../../manifests/{f}\n"));
    }
    text.push_str("components:\n");
    for c in components {
        text.push_str(&format!("- ../../../manifests/components/{c}\n"));
    }
    std::fs::write(dir.join("kustomization.yaml"), text).unwrap_or_else(|e| panic!("{e}"));
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
    // The autoscaling component on the base flavour: the HPA is accepted,
    // and the Deployment leaves the replica count to it.
    let yaml = kustomize_overlay(cp, "autoscaling", &["base"], &["autoscaling"]);
    let docs = documents(&yaml);
    let expected: Vec<String> = docs.iter().map(described).collect();
    assert_eq!(dry_run(cp, &yaml), expected, "base + autoscaling");
    assert!(expected.contains(
        &"horizontalpodautoscaler.autoscaling/agentic-webhook serverside-applied (server dry run)"
            .to_owned()
    ));
    let webhook = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "agentic-webhook")
        .unwrap_or_else(|| panic!("no webhook Deployment"));
    assert!(webhook["spec"].get("replicas").is_none(), "{webhook}");

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
