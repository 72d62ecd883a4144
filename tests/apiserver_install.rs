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

/// The install rendered into `platform-agentic`: each flavour with its
/// namespace set in place (what `kustomize edit set namespace` does), and
/// an overlay over cert-manager that sets it with the copied replacements.
/// Nothing may still name `agentic-system`, and the apiserver accepts all.
fn every_flavour_renders_into_another_namespace(cp: &ControlPlane) {
    const NS: &str = "platform-agentic";
    let copy = root().join("target/kustomize-overlays/namespaced-copy");
    let _ = std::fs::remove_dir_all(&copy);
    copy_tree(&root().join("manifests"), &copy.join("manifests"));
    cp.kubectl_ok(&["create", "namespace", NS], None);
    let mut builds = Vec::new();
    for flavour in ["base", "cert-manager", "self-managed"] {
        let dir = copy.join("manifests").join(flavour);
        let file = dir.join("kustomization.yaml");
        let mut text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        text.push_str(&format!("namespace: {NS}\n"));
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        builds.push((flavour.to_owned(), dir));
    }
    let outer = copy.join("overlay");
    std::fs::create_dir_all(&outer).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        root().join("manifests/cert-manager/namespace-replacements.yaml"),
        outer.join("namespace-replacements.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        outer.join("kustomization.yaml"),
        format!(
            "resources:\n- ../../../../manifests/cert-manager\nnamespace: {NS}\nreplacements:\n- path: namespace-replacements.yaml\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    builds.push(("overlay over cert-manager".to_owned(), outer));
    for (what, dir) in builds {
        let yaml = cp.kubectl_ok(&["kustomize", dir.to_str().unwrap_or_default()], None);
        let stale: Vec<&str> = yaml
            .lines()
            .filter(|l| l.contains("agentic-system"))
            .collect();
        assert!(
            stale.is_empty(),
            "{what} in {NS} still names agentic-system: {stale:#?}"
        );
        let docs = documents(&yaml);
        let namespaces: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] == "Namespace")
            .map(|d| &d["metadata"]["name"])
            .collect();
        assert_eq!(namespaces, [&Value::from(NS)], "{what}");
        let expected: Vec<String> = docs.iter().map(described).collect();
        assert_eq!(dry_run(cp, &yaml), expected, "{what} in {NS}");
        say(&format!(
            "install: {what} rendered into {NS}: {} objects accepted, none names agentic-system",
            docs.len()
        ));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{e}")) {
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("{e}"));
        }
    }
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
    // The namespace the base's reconciler acts in (scope.yaml).
    cp.kubectl_ok(&["create", "namespace", "agentic-sessions"], None);
    let cm = root().join("tests/data/cert-manager-crds.yaml");
    cp.kubectl_ok(&["apply", "-f", cm.to_str().unwrap_or_default()], None);
    let prom = root().join("tests/data/prometheus-operator-crds.yaml");
    cp.kubectl_ok(&["apply", "-f", prom.to_str().unwrap_or_default()], None);
    for crd in [
        "issuers.cert-manager.io",
        "certificates.cert-manager.io",
        "servicemonitors.monitoring.coreos.com",
        "podmonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    ] {
        cp.wait_established(crd);
    }

    for flavour in ["base", "cert-manager", "self-managed"] {
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
    let yaml = kustomize_overlay(
        cp,
        "autoscaling",
        &["base"],
        &["autoscaling", "priority-class"],
    );
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
    for d in docs.iter().filter(|d| d["kind"] == "Deployment") {
        assert_eq!(
            d["spec"]["template"]["spec"]["priorityClassName"], "agentic-critical",
            "{}",
            d["metadata"]["name"]
        );
    }
    assert!(
        expected.contains(
            &"priorityclass.scheduling.k8s.io/agentic-critical serverside-applied (server dry run)"
                .to_owned()
        )
    );

    // The reconciler cluster-wide (opt-in): its ClusterRole in place of the
    // Role, no scope.
    let yaml = kustomize_overlay(cp, "cluster-wide", &["base"], &["cluster-wide-reconciler"]);
    let expected: Vec<String> = documents(&yaml).iter().map(described).collect();
    assert_eq!(
        dry_run(cp, &yaml),
        expected,
        "base + cluster-wide-reconciler"
    );
    assert!(expected.contains(
        &"clusterrole.rbac.authorization.k8s.io/agentic-reconciler serverside-applied (server dry run)"
            .to_owned()
    ));
    assert!(
        !expected
            .iter()
            .any(|l| l.starts_with("role.rbac.authorization.k8s.io/agentic-reconciler "))
    );

    // Without matchConditions, for clusters before 1.30.
    let yaml = kustomize_overlay(
        cp,
        "no-match-conditions",
        &["base"],
        &["no-match-conditions"],
    );
    let expected: Vec<String> = documents(&yaml).iter().map(described).collect();
    assert_eq!(dry_run(cp, &yaml), expected, "base + no-match-conditions");

    // Monitoring: ServiceMonitors, the PrometheusRule and the dashboard;
    // then PodMonitors in place of the ServiceMonitors.
    for (name, components, monitors) in [
        ("monitoring", &["monitoring"][..], "servicemonitor"),
        (
            "podmonitoring",
            &["monitoring", "monitoring-podmonitor"][..],
            "podmonitor",
        ),
    ] {
        let yaml = kustomize_overlay(cp, name, &["cert-manager"], components);
        let docs = documents(&yaml);
        let expected: Vec<String> = docs.iter().map(described).collect();
        assert_eq!(
            dry_run(cp, &yaml),
            expected,
            "cert-manager + {components:?}"
        );
        for want in [
            format!("{monitors}.monitoring.coreos.com/agentic-webhook"),
            format!("{monitors}.monitoring.coreos.com/agentic-reconciler"),
            "prometheusrule.monitoring.coreos.com/agentic-webhook".to_owned(),
            "configmap/agentic-webhook-dashboard".to_owned(),
        ] {
            assert!(
                expected.iter().any(|l| l.starts_with(&format!("{want} "))),
                "{want} missing from {expected:#?}"
            );
        }
        let other = if monitors == "podmonitor" {
            "servicemonitor"
        } else {
            "podmonitor"
        };
        assert!(
            !expected.iter().any(|l| l.starts_with(other)),
            "{expected:#?}"
        );
        say(&format!(
            "install: cert-manager + {components:?}: {} objects accepted",
            docs.len()
        ));
    }

    every_flavour_renders_into_another_namespace(cp);

    // What `manifests` renders is accepted the same way.
    let rendered = String::from_utf8_lossy(&render(&["--no-ca-bundle"])).to_string();
    assert_eq!(dry_run(cp, &rendered).len(), documents(&rendered).len());

    // For real: the CRD is accepted, its names too, and it is Established.
    cp.kubectl_ok(
        &["apply", "--server-side", "-f", "-"],
        Some(rendered.as_bytes()),
    );
    cp.wait_established(CRD);
    let crd: Value = serde_json::from_str(&cp.kubectl_ok(&["get", "crd", CRD, "-o", "json"], None))
        .expect("JSON");
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
