//! Storage through a real kube-apiserver v1.35 and etcd: sessions written
//! under an old v1alpha1-only CRD, then the product installed (v1alpha2
//! storage, conversion webhook), then `agentic-webhook migrate`. What is
//! stored is read from etcd itself, not from what the apiserver serves.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::BIN;
use common::envtest::{ControlPlane, Who, say};
use common::installed::{CRD, render, start_server, wait_until_serving};
use serde_json::{Value, json};

const PREFIX: &str = "/registry/vteam.ambient-code/agenticsessions/";

/// The CRD as it was before v1alpha2: v1alpha1 served and stored, no
/// conversion (its schema declares the legacy fields, as ours does).
fn old_crd() -> Value {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/crd.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut crd: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let v1 = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "v1alpha1"))
        .cloned()
        .unwrap_or_else(|| panic!("no v1alpha1 in the CRD"));
    let mut v1 = v1;
    if let Some(o) = v1.as_object_mut() {
        o.remove("deprecated");
        o.remove("deprecationWarning");
        o.insert("storage".into(), json!(true));
    }
    crd["spec"]["versions"] = json!([v1]);
    if let Some(spec) = crd["spec"].as_object_mut() {
        spec.remove("conversion");
    }
    crd
}

fn apply(cp: &ControlPlane, doc: &[u8]) {
    cp.kubectl_ok(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(doc),
    );
}

fn stored(cp: &ControlPlane, ns: &str) -> BTreeMap<String, Value> {
    cp.etcd_prefix(&format!("{PREFIX}{ns}/"))
        .into_iter()
        .map(|(k, v)| (k.rsplit('/').next().unwrap_or_default().to_owned(), v))
        .collect()
}

fn stored_versions(cp: &ControlPlane) -> Value {
    let out = cp.kubectl_ok(
        &["get", "crd", CRD, "-o", "jsonpath={.status.storedVersions}"],
        None,
    );
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

fn get(cp: &ControlPlane, ns: &str, version: &str, name: &str) -> Value {
    let out = cp.kubectl_ok(
        &[
            "get",
            &format!("agenticsessions.{version}.vteam.ambient-code"),
            "-n",
            ns,
            name,
            "-o",
            "json",
        ],
        None,
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `agentic-webhook migrate` as docs/operations.md says to run it: with a
/// cluster administrator's credentials (it rewrites every session and
/// patches the CRD's status).
fn migrate(cp: &ControlPlane, extra: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("migrate")
        .args(extra)
        .env("KUBECONFIG", cp.kubeconfig(&Who::admin()))
        .output()
        .unwrap_or_else(|e| panic!("migrate: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn sessions_stored_as_v1alpha1_are_served_as_v1alpha2_and_migrated_in_etcd() {
    let Some(cp) = common::envtest::control_plane() else {
        return;
    };
    let client = cp.client().await;
    let ns = cp.namespace(&client, "storage").await;

    // 1. The old world: v1alpha1 only, legacy shapes stored as written.
    apply(cp, old_crd().to_string().as_bytes());
    cp.wait_established(CRD);
    let session = |name: &str, spec: Value| {
        json!({"apiVersion": "vteam.ambient-code/v1alpha1", "kind": "AgenticSession",
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
    };
    let mut items = vec![
        session(
            "legacy",
            json!({"prompt": "Refactor auth", "timeout": 600, "mainRepoIndex": 1,
                   "repos": [{"input": {"url": "https://github.com/acme/api.git", "branch": "dev"}},
                             {"input": {"url": "https://github.com/acme/docs.git"},
                              "output": {"url": "https://github.com/me/docs.git", "branch": "wip"}}]}),
        ),
        session(
            "removed-features",
            json!({"initialPrompt": "p", "botAccount": {"name": "bot-1"},
                   "resourceOverrides": {"cpu": "2", "memory": "4Gi"}}),
        ),
        session(
            "both-prompts",
            json!({"prompt": "old words", "initialPrompt": "new words"}),
        ),
    ];
    for i in 0..4 {
        items.push(session(
            &format!("plain-{i}"),
            json!({"initialPrompt": format!("p{i}")}),
        ));
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    cp.kubectl_ok(&["create", "-f", "-"], Some(list.to_string().as_bytes()));
    // The old operator wrote a legacy status too.
    cp.kubectl_ok(
        &[
            "patch",
            "agenticsessions.v1alpha1.vteam.ambient-code",
            "-n",
            &ns,
            "legacy",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status": {"phase": "Error", "message": "runner crashed", "is_error": true}}"#,
        ],
        None,
    );
    let before = stored(cp, &ns);
    assert_eq!(before.len(), 7, "{:?}", before.keys());
    for (name, obj) in &before {
        assert_eq!(obj["apiVersion"], "vteam.ambient-code/v1alpha1", "{name}");
    }
    assert_eq!(before["legacy"]["spec"]["prompt"], "Refactor auth");

    // 2. Install: v1alpha2 becomes the storage version, v1alpha1 is converted.
    let (_server, ca) = start_server(cp, &[]);
    let url = format!("https://{}", _server.https);
    apply(
        cp,
        &render(&["--ca-file", ca.to_str().unwrap_or_default(), "--url", &url]),
    );
    wait_until_serving(cp);
    assert_eq!(stored_versions(cp), json!(["v1alpha1", "v1alpha2"]));
    let legacy = get(cp, &ns, "v1alpha2", "legacy");
    // The old CRD's defaults (the platform's) were applied as the legacy
    // items were written: a flat `branch: main` beside `input.branch: dev`
    // is that default, not a value (no stash for it).
    let expected_legacy = json!({
        "initialPrompt": "Refactor auth", "timeoutSeconds": 600, "mainRepo": "docs",
        "repos": [{"url": "https://github.com/acme/api.git", "branch": "dev", "autoPush": false},
                  {"url": "https://github.com/acme/docs.git", "branch": "main", "autoPush": false,
                   "output": {"url": "https://github.com/me/docs.git", "branch": "wip"}}],
    });
    assert_eq!(legacy["spec"], expected_legacy);
    assert_eq!(legacy["status"]["phase"], "Failed");
    assert_eq!(
        get(cp, &ns, "v1alpha2", "both-prompts")["spec"]["initialPrompt"],
        "new words"
    );
    // Served converted, still stored as written.
    assert_eq!(
        stored(cp, &ns)["legacy"]["apiVersion"],
        "vteam.ambient-code/v1alpha1"
    );

    // 3. A dry run changes nothing, in etcd or in the CRD.
    let (ok, report) = migrate(cp, &["--dry-run", "--page-size", "3"]);
    assert!(ok, "{report}");
    assert!(
        report.contains("storedVersions unchanged (dry run)"),
        "{report}"
    );
    assert_eq!(stored(cp, &ns), before);
    assert_eq!(stored_versions(cp), json!(["v1alpha1", "v1alpha2"]));

    // 4. The migration: every object rewritten in v1alpha2, then storedVersions.
    let (ok, report) = migrate(cp, &["--page-size", "3"]);
    say(&format!("migrate: {}", report.trim().replace('\n', " | ")));
    assert!(ok, "{report}");
    assert!(
        report.contains("storedVersions set to [v1alpha2]"),
        "{report}"
    );
    assert_eq!(stored_versions(cp), json!(["v1alpha2"]));
    let after = stored(cp, &ns);
    assert_eq!(after.len(), 7);
    for (name, obj) in &after {
        assert_eq!(obj["apiVersion"], "vteam.ambient-code/v1alpha2", "{name}");
        assert_eq!(obj["spec"].get("prompt"), None, "{name}");
    }
    assert_eq!(after["legacy"]["spec"], expected_legacy);
    assert_eq!(after["legacy"]["status"]["phase"], "Failed");
    assert_eq!(after["legacy"]["status"].get("is_error"), None);
    // What v1alpha2 has no field for is kept in the stash, in etcd...
    let stash =
        after["removed-features"]["metadata"]["annotations"]["vteam.ambient-code/conversion-data"]
            .as_str()
            .unwrap_or_else(|| panic!("no stash: {}", after["removed-features"]));
    assert!(stash.contains("bot-1") && stash.contains("4Gi"), "{stash}");
    assert!(
        after["both-prompts"]["metadata"]["annotations"]["vteam.ambient-code/conversion-data"]
            .as_str()
            .is_some_and(|s| s.contains("old words"))
    );
    // ...and comes back through v1alpha1 as it was written.
    let v1 = get(cp, &ns, "v1alpha1", "removed-features");
    assert_eq!(v1["spec"]["botAccount"], json!({"name": "bot-1"}));
    assert_eq!(
        v1["spec"]["resourceOverrides"],
        json!({"cpu": "2", "memory": "4Gi"})
    );
    assert_eq!(v1["metadata"].get("annotations"), None);
    let v1 = get(cp, &ns, "v1alpha1", "both-prompts");
    assert_eq!(
        (&v1["spec"]["prompt"], &v1["spec"]["initialPrompt"]),
        (&json!("old words"), &json!("new words"))
    );

    // 5. Run again: idempotent, nothing left to change.
    let (ok, report) = migrate(cp, &[]);
    assert!(ok, "{report}");
    assert!(
        report.contains("7 sessions: 7 rewritten (0 normalized)"),
        "{report}"
    );
}
